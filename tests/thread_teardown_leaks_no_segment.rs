//! Issue 27, finding 12: thread teardown. An event recorded from a
//! thread-local destructor that runs after the recorder's own (its lease
//! sealed the thread's segment) claimed a new segment that nobody would
//! ever seal; and a thread whose first event for a recorder came during
//! teardown registered itself again on every event. A service whose
//! threads log or close spans in thread-local destructors (connection
//! pools, tracing's own per-thread state) churns threads all day.
//!
//! A thread-local of the test's, touched before the thread's first event,
//! is destroyed after the recorder's (destructors run in the reverse order
//! of registration) and records a park and an unpark from its destructor.

use std::cell::Cell;
use std::time::Duration;
use tokio_blackbox::{Blackbox, BlackboxHooks};

/// Records through `hooks` when dropped.
struct RecordsOnDrop(Cell<Option<Vec<BlackboxHooks>>>);

impl Drop for RecordsOnDrop {
    fn drop(&mut self) {
        for hooks in self.0.take().unwrap_or_default() {
            for _ in 0..3 {
                hooks.on_thread_park();
                hooks.on_thread_unpark();
            }
        }
    }
}

thread_local! {
    static LATE: RecordsOnDrop = const { RecordsOnDrop(Cell::new(None)) };
}

/// A thread that records for `first` while it runs, and for `late` from a
/// thread-local destructor run after the recorder's.
fn churn(first: &BlackboxHooks, late: Vec<BlackboxHooks>) {
    let first = first.clone();
    std::thread::spawn(move || {
        // Registered first, so destroyed last.
        LATE.with(|l| l.0.set(Some(late)));
        first.on_thread_start();
        for _ in 0..10 {
            first.on_thread_park();
            first.on_thread_unpark();
        }
    })
    .join()
    .expect("thread");
}

#[test]
fn events_after_the_leases_end_claim_no_segment() {
    // 256 KiB: 64 segments of 4 KiB. Each leaked segment stays in the
    // writing state for good: 200 threads would take them all.
    let (blackbox, _guard) = Blackbox::builder()
        .buffer_memory(256 << 10)
        .dir(std::env::temp_dir().join("blackbox-teardown"))
        .build()
        .expect("recorder");
    let hooks = blackbox.hooks();
    for _ in 0..200 {
        churn(&hooks, vec![hooks.clone()]);
    }
    // A live thread keeps recording: it must still find segments.
    let before = blackbox.stats();
    for _ in 0..20_000 {
        hooks.on_thread_park();
        hooks.on_thread_unpark();
    }
    let after = blackbox.stats();
    assert_eq!(
        after.events_dropped, before.events_dropped,
        "a live thread's events were dropped: the exited threads' segments leaked: {after:?}"
    );
    // The capture thread forgets exited threads whose segments are gone, about once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let s = blackbox.stats();
    assert!(
        s.threads_known <= 64 + 2,
        "200 threads came and went; the table holds at most the segments' threads: {s:?}"
    );
}

#[test]
fn a_thread_first_seen_in_its_teardown_registers_once_at_most() {
    let (a, _ga) = Blackbox::builder()
        .dir(std::env::temp_dir().join("blackbox-teardown-a"))
        .build()
        .expect("recorder a");
    let (b, _gb) = Blackbox::builder()
        .dir(std::env::temp_dir().join("blackbox-teardown-b"))
        .build()
        .expect("recorder b");
    // Each thread records for `a`, then for `b` (six events) from its
    // teardown, after its lease ended.
    for _ in 0..20 {
        churn(&a.hooks(), vec![b.hooks()]);
    }
    let s = b.stats();
    assert!(
        s.threads_known <= 20,
        "20 threads, each with six events for b in its teardown: {} entries: {s:?}",
        s.threads_known
    );
}
