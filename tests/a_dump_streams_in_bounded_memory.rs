//! Issue 27, finding 3: a dump needed ~3.7 times the buffer on the thread
//! that wrote it (every segment copied, then decoded into 16-byte events,
//! then written), inside the panic hook, on SIGUSR1 and in `dump()`: in a
//! memory-limited container a task panic became an OOM kill. Now a dump
//! holds the sealed segments in place (up to half the buffer; the rest is
//! copied) and writes each lane as it decodes it, a record at a time.
//!
//! Measured with a counting allocator: the peak of live heap bytes while
//! `dump()` runs, over what was live before it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_blackbox::Blackbox;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` with the caller's arguments; the
// counters are only arithmetic on the sizes the caller passed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks are live while the bytes move.
        let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BUFFER: usize = 16 << 20;

#[test]
fn a_dump_of_a_full_buffer_needs_at_most_half_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, guard) = Blackbox::builder()
        .dir(dir.path())
        .buffer_memory(BUFFER)
        .build()
        .expect("build");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    // Fill the whole buffer (it wraps), then keep the runtime busy while
    // the dump runs, as a service would be.
    rt.block_on(async {
        loop {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    tokio::spawn(async {
                        for _ in 0..200 {
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            if blackbox.stats().events_overwritten > 0 {
                break;
            }
        }
    });
    let busy = rt.spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
    std::thread::sleep(Duration::from_millis(50));

    let path = dir.path().join("full.bbx");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    blackbox.dump(&path).expect("dump");
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    busy.abort();
    drop(rt);

    let file_bytes = std::fs::metadata(&path).expect("dump file").len();
    let dump = tokio_blackbox::dump::read_file(&path).expect("reads back");
    let events: usize = dump.window.lanes.iter().map(|l| l.events.len()).sum();
    eprintln!(
        "a dump of a full {} MiB buffer: {events} events, a {} MiB file; peak heap while dumping {:.1} MiB",
        BUFFER >> 20,
        file_bytes >> 20,
        peak as f64 / (1 << 20) as f64
    );
    assert!(events > 1_000_000, "{events} events: the buffer was full");
    assert!(
        peak <= BUFFER / 2 + (2 << 20),
        "dumping took {:.1} MiB of heap for a {} MiB buffer",
        peak as f64 / (1 << 20) as f64,
        BUFFER >> 20
    );
    drop(guard);
}
