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
