//! The hot path allocates nothing: the same workload of polls on a runtime
//! with the recorder's hooks makes no more allocations than on one without,
//! once each thread has recorded its first event (which registers the thread).
//! Checked with a counting global allocator over every thread of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while 4 tasks poll `yield_now` `polls` times each.
fn allocations(rt: &tokio::runtime::Runtime, polls: u32) -> u64 {
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..polls {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let before = ALLOCS.load(Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        ALLOCS.load(Ordering::Relaxed) - before
    })
}

#[test]
fn recording_polls_allocates_nothing() {
    let plain = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_secs(3600))
        .dir(std::env::temp_dir().join("blackbox-alloc-test"))
        .build()
        .unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(b.worker_threads(2).enable_all());
    let recorded = b.build().unwrap();
    // Warm up both: threads, Tokio's own buffers, and each thread's first event.
    allocations(&plain, 1_000);
    allocations(&recorded, 1_000);
    let base = allocations(&plain, 50_000);
    let with = allocations(&recorded, 50_000);
    let stats = blackbox.stats();
    eprintln!("allocations: plain {base}, recorded {with}");
    // 400,000 events, well past a segment switch per thread (4 KiB each).
    assert!(stats.events_recorded > 400_000, "{stats:?}");
    assert!(
        with <= base + 16,
        "recording added {} allocations over {} events",
        with.saturating_sub(base),
        stats.events_recorded
    );
}
