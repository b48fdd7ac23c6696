//! A custom sink that panics must not take the recorder down with it: the
//! window it panicked on is counted in `sink_errors`, the capture thread
//! goes on, later windows reach the sink, and the counters add up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing_subscriber::prelude::*;

/// Panics on every other window (and on its flushes after the first panic).
struct Flaky(Arc<AtomicU64>);

impl tokio_blackbox::Sink for Flaky {
    fn write(&mut self, _: &tokio_blackbox::Window) -> Result<(), tokio_blackbox::SinkError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(2) {
            panic!("the user's sink failed on window {n}");
        }
        Ok(())
    }
}

#[test]
fn a_sink_that_panics_is_counted_and_the_recorder_goes_on() {
    let calls = Arc::new(AtomicU64::new(0));
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(5))
        .window(Duration::from_millis(10), Duration::from_millis(5))
        .sink(Flaky(calls.clone()))
        .build()
        .expect("recorder");
    let subscriber = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..6 {
            let _request = tracing::info_span!("GET /slow").entered();
            std::thread::sleep(Duration::from_millis(8));
            drop(_request);
            // One capture each: past the previous window's end.
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    assert!(
        blackbox.flush(Duration::from_secs(5)),
        "the capture thread still answers"
    );
    let stats = blackbox.stats();
    assert_eq!(stats.slow_requests, 6, "{stats:?}");
    let written = calls.load(Ordering::Relaxed);
    assert!(
        written >= 4,
        "later windows reached the sink: {written} calls, {stats:?}"
    );
    assert_eq!(
        stats.windows_written + stats.sink_errors,
        written,
        "every window handed to the sink is written or counted: {stats:?}"
    );
    assert!(stats.sink_errors >= 2, "{stats:?}");
    drop(guard);
}
