//! The export pipeline with an exporter that never answers (no timeout of
//! its own): the queue holds windows as their spans and is bounded, full is
//! refused and counted,
//! flush returns within its timeout, and shutting the pipeline down abandons
//! what is left within its deadline, counting every abandoned window.

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_blackbox::export::otlp::Budget;
use tokio_blackbox::export::testing::window;
use tokio_blackbox::export::{QUEUE_CAPACITY, QUEUE_MAX_BYTES};
use tokio_blackbox::{Blackbox, OtlpSink, Sink, Window};

/// Counts the bytes of live heap blocks.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` with the caller's arguments; the
// counter is only arithmetic on the sizes the caller passed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests of this binary one at a time: the byte-bound test reads the
/// process's live heap, which the others' recorders move while they run
/// (it failed with "36 queued windows hold 95 MiB" when they overlapped).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An exporter whose export never completes.
#[derive(Debug)]
struct Stuck;

impl SpanExporter for Stuck {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Events in a window, as bytes of memory (16 bytes each).
fn event_bytes(w: &Window) -> usize {
    w.lanes.iter().map(|l| l.events.len() * 16).sum()
}

/// Resident memory of this process now (VmRSS), bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Runs `f` on a thread; `None` if it did not return within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn the_queue_holds_spans_not_windows_and_is_bounded_by_bytes() {
    let _serial = serial();
    let big = window(1000, 128, 1); // about 4 MiB of events
    // A raised budget, 2,000 spans (about 1.4 MiB of them): the default's
    // windows (200 spans) are small enough that the job bound comes first.
    let budget = Budget::new(2_000);
    let size = event_bytes(&big);
    assert!(size > 3 << 20, "{size}");
    let one = {
        let before = LIVE.load(Ordering::Relaxed);
        let spans = tokio_blackbox::export::otlp::window_spans(&big, budget).0;
        let one = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        drop(spans);
        one
    };
    let mut sink = OtlpSink::with_exporter_and_budget(Stuck, budget).expect("sink");
    let before = LIVE.load(Ordering::Relaxed);
    let (mut accepted, mut refused) = (0usize, 0usize);
    for _ in 0..QUEUE_CAPACITY + 8 {
        match sink.write(&big) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(e.to_string().contains("full"), "{e}");
                refused += 1;
            }
        }
    }
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "windows of {} KiB of events, {} KiB of spans: {accepted} accepted, {refused} refused; {} MiB held (limit {} MiB)",
        size / 1024,
        one / 1024,
        held >> 20,
        QUEUE_MAX_BYTES >> 20
    );
    assert!(refused >= 8, "only {refused} refused");
    // A queued window is its at most 2,000 spans, not its events.
    assert!(one < size / 2, "a window's spans take {one} bytes");
    // The byte bound counts what the spans really hold: the one in flight
    // plus what fits, and what the exporter was handed (one copy, cloned
    // for a retry).
    assert!(
        held <= QUEUE_MAX_BYTES + 3 * one,
        "{accepted} queued windows hold {} MiB",
        held >> 20
    );
    assert!(
        accepted < QUEUE_CAPACITY,
        "the byte bound, not the job bound, refused: {accepted} accepted"
    );
    drop(sink);
}

#[test]
fn flush_with_a_stuck_exporter_and_a_full_queue_returns_in_time() {
    let _serial = serial();
    let mut sink = OtlpSink::with_exporter(Stuck).expect("sink");
    let w = window(2, 2, 1);
    let mut refused = 0;
    for _ in 0..QUEUE_CAPACITY + 8 {
        if sink.write(&w).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "the queue filled");
    let start = Instant::now();
    // The sink's flush waits at most its timeout (5 s by default).
    let flushed = within(Duration::from_secs(15), move || {
        let r = sink.flush();
        (r.is_ok(), sink)
    });
    let took = start.elapsed();
    let (ok, sink) = flushed.expect("flush blocked past 15 s");
    assert!(!ok, "a stuck exporter cannot have flushed");
    eprintln!("flush with a stuck exporter and a full queue returned after {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // Dropping the sink does not block either.
    assert!(within(Duration::from_secs(10), move || drop(sink)).is_some());
}

#[test]
fn shutdown_with_a_stuck_exporter_abandons_and_counts_every_window() {
    let _serial = serial();
    use tracing_subscriber::prelude::*;
    let (blackbox, guard) = Blackbox::builder()
        .exporter(Stuck)
        .latency_threshold(Duration::from_millis(5))
        .window(Duration::from_millis(5), Duration::from_millis(1))
        .max_captures_per_sec(1000)
        .shutdown_timeout(Duration::from_millis(500))
        .build()
        .expect("build");
    let sub = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(sub, || {
        for _ in 0..40 {
            let _span = tracing::info_span!("request").entered();
            std::thread::sleep(Duration::from_millis(6));
            drop(_span);
            std::thread::sleep(Duration::from_millis(15)); // separate windows
        }
    });
    let start = Instant::now();
    let _ = blackbox.flush(Duration::from_secs(1));
    let dropped = within(Duration::from_secs(10), move || drop(guard));
    assert!(dropped.is_some(), "dropping the guard blocked");
    // The capture thread hands the sink back within the deadlines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = blackbox.stats();
    // One window in flight (never counted: its exporter never returns);
    // every other one written is counted dropped, once (40 windows: the
    // queue refused none).
    while s.windows_written != s.export_windows_dropped + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        s = blackbox.stats();
    }
    eprintln!("after {:?}: {s:?}", start.elapsed());
    assert!(s.windows_written >= 2, "{s:?}");
    assert_eq!(
        s.windows_exported, 0,
        "one window in flight, forever, and none sent: {s:?}"
    );
    assert_eq!(
        s.windows_written,
        s.export_windows_dropped + 1,
        "every window given to the pipeline is either in flight or counted as dropped: {s:?}"
    );
    assert_eq!(s.export_failures, 0, "no request was given up on: {s:?}");
}

/// Issue 27, a test that could not fail: the byte-bound test above drives
/// `Sink::write` with decoded windows, while the recorder hands its sink
/// cuts (`write_cut`: segments held in place or copied). Here the recorder
/// itself fills the queue of a stuck exporter with cuts of a busy runtime:
/// once the buffer's holds are taken, each cut copies its segments, and the
/// queue's byte bound must refuse cuts (counted) before the copies pass it.
#[test]
fn the_recorders_cuts_are_bounded_by_bytes() {
    use tracing_subscriber::prelude::*;
    let _serial = serial();
    const BUFFER: usize = 32 << 20;
    let (blackbox, guard) = Blackbox::builder()
        .exporter(Stuck)
        .buffer_memory(BUFFER)
        .latency_threshold(Duration::from_millis(5))
        // Each window reaches back a second: a few MiB of segments.
        .window(Duration::from_secs(1), Duration::from_millis(1))
        .max_captures_per_sec(1000)
        // About the queue, not the CPU budget (which would shed windows first).
        .cpu_budget(1.0)
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    let busy: Vec<_> = (0..16)
        .map(|_| {
            rt.spawn(async {
                loop {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    // Resident memory, not the heap's bytes: the mapping reserves room
    // for its task digests up front (address space, backed only as used).
    let before = rss();
    let sub = tracing_subscriber::registry().with(blackbox.layer());
    let mut max_queue = 0;
    let mut max_rss = 0;
    tracing::subscriber::with_default(sub, || {
        // Until the bound refused a cut (a debug build cuts about one
        // window a second here: the rest merge into the pending one).
        for _ in 0..400 {
            {
                let _span = tracing::info_span!("request").entered();
                std::thread::sleep(Duration::from_millis(8));
            }
            std::thread::sleep(Duration::from_millis(60));
            let s = blackbox.stats();
            max_queue = max_queue.max(s.export_queue_bytes);
            max_rss = max_rss.max(rss().saturating_sub(before));
            if s.export_windows_dropped > 0 {
                break;
            }
        }
    });
    let s = blackbox.stats();
    for t in busy {
        t.abort();
    }
    drop(rt);
    eprintln!(
        "cuts of a busy runtime into a stuck exporter: queue at most {} MiB, resident +{} MiB: {s:?}",
        max_queue >> 20,
        max_rss >> 20
    );
    assert!(
        s.export_windows_dropped > 0 && s.sink_errors > 0,
        "the byte bound refused cuts: {s:?}"
    );
    // The bound, and one cut over it at most (half the buffer).
    assert!(
        max_queue <= (QUEUE_MAX_BYTES + BUFFER / 2) as u64,
        "the queue held {} MiB",
        max_queue >> 20
    );
    assert!(
        max_rss <= (QUEUE_MAX_BYTES + BUFFER / 2 + (32 << 20)) as u64,
        "resident memory grew {} MiB",
        max_rss >> 20
    );
    assert!(within(Duration::from_secs(10), move || drop(guard)).is_some());
}
