//! Issue 27, finding 11: slow requests that reach the capture queue behind
//! the shutdown are counted (as dropped), not lost: after the guard is
//! dropped, `slow_requests == captures + merged + skipped + dropped`, with
//! threads still closing slow requests while it shuts down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn slow_requests_closing_during_the_shutdown_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..5 {
        let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::ZERO)
            // No window around a request: none overlaps another, none is
            // taken in by a full capture; every close goes through the queue.
            .window(Duration::ZERO, Duration::ZERO)
            .dir(dir.path())
            .build()
            .expect("build");
        let stop = Arc::new(AtomicBool::new(false));
        let closers: Vec<_> = (0..3)
            .map(|_| {
                let (blackbox, stop) = (blackbox.clone(), stop.clone());
                std::thread::spawn(move || {
                    let sub = tracing_subscriber::registry().with(blackbox.layer());
                    tracing::subscriber::with_default(sub, || {
                        while !stop.load(Ordering::Relaxed) {
                            // Each starts a capture or is skipped by the 5/s cap.
                            let _span = tracing::info_span!("request").entered();
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    });
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        drop(guard);
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        for c in closers {
            c.join().expect("closer");
        }
        let s = blackbox.stats();
        assert!(s.slow_requests > 0);
        assert_eq!(
            s.captures + s.requests_merged + s.requests_skipped + s.slow_requests_dropped,
            s.slow_requests,
            "round {round}: every slow request is accounted for: {s:?}"
        );
    }
}
