//! Two recorder layers in one subscriber (a second recorder, or `layer()`
//! added twice) must not panic on request spans: before, the second layer's
//! `extensions_mut().insert` of the same type panicked on every request.

use std::time::Duration;
use tracing_subscriber::prelude::*;

#[test]
fn two_layers_in_one_subscriber_never_panic() {
    let (a, _ga) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(5))
        .dir(std::env::temp_dir().join("blackbox-two-layers-a"))
        .build()
        .unwrap();
    let (b, _gb) = tokio_blackbox::Blackbox::builder()
        .dir(std::env::temp_dir().join("blackbox-two-layers-b"))
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(a.layer())
        .with(a.layer())
        .with(b.layer());
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            let span = tracing::info_span!("request");
            let _e = span.enter();
            std::thread::sleep(Duration::from_millis(6));
        }
    });
    assert!(a.flush(Duration::from_secs(5)));
    // The first layer of a recorder watches each request once; its second leaves it alone.
    assert_eq!(a.stats().requests_seen, 3);
    assert_eq!(a.stats().slow_requests, 3);
    // A second recorder watches the same requests in its own table.
    assert_eq!(b.stats().requests_seen, 3);
}

/// Issue 27, finding 5: past the open-request table (requests whose bucket
/// is full live in the span's extensions), two recorders in one subscriber
/// each keep their state in the same span: neither panics (tracing-subscriber
/// asserts on a second value of one type) and neither skips the requests
/// the other keeps there.
#[test]
fn two_recorders_past_their_tables_never_panic_nor_skip() {
    let recorder = |dir: &str| {
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_secs(60))
            .dir(std::env::temp_dir().join(dir))
            .build()
            .unwrap()
    };
    let (a, _ga) = recorder("blackbox-two-recorders-a");
    let (b, _gb) = recorder("blackbox-two-recorders-b");
    let subscriber = tracing_subscriber::registry()
        .with(a.layer())
        .with(b.layer());
    const OPEN: usize = 10_000;
    tracing::subscriber::with_default(subscriber, || {
        let spans: Vec<_> = (0..OPEN)
            .map(|i| tracing::info_span!("GET /many", i))
            .collect();
        for span in &spans {
            let _e = span.enter();
        }
    });
    for r in [&a, &b] {
        let s = r.stats();
        assert_eq!(s.requests_seen, OPEN as u64, "{s:?}");
        assert!(s.requests_untracked > 0, "some past the table: {s:?}");
    }
}
