//! The recorder's plain layer takes an interest in every callsite, so an
//! event that the application's other layers filter out is still dispatched
//! (a process-wide cost). `Blackbox::filtered_layer` asks only for what the
//! recorder reads, spans and `ERROR` events, and still records requests
//! (of any level) and their errors.

mod support;

use std::time::Duration;
use tracing::Level;
use tracing_subscriber::{filter::LevelFilter, prelude::*};

fn quiet_fmt<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(LevelFilter::INFO)
}

#[test]
fn the_filtered_layer_leaves_other_events_disabled_and_still_records() {
    let sink = support::windows::Collect::default();
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(5))
        .window(Duration::from_millis(20), Duration::from_millis(5))
        .sink(sink.clone())
        .build()
        .expect("recorder");

    // The plain layer: a DEBUG event nobody else reads stays enabled.
    let plain = tracing_subscriber::registry()
        .with(quiet_fmt())
        .with(blackbox.layer());
    let enabled = tracing::subscriber::with_default(plain, || tracing::enabled!(Level::DEBUG));
    assert!(enabled, "the plain layer asks for every callsite");

    // The filtered layer: disabled, as with the fmt layer alone.
    let filtered = tracing_subscriber::registry()
        .with(quiet_fmt())
        .with(blackbox.filtered_layer());
    tracing::subscriber::with_default(filtered, || {
        assert!(
            !tracing::enabled!(Level::DEBUG),
            "no layer reads DEBUG events: the callsite is off"
        );
        assert!(tracing::enabled!(Level::ERROR));
        // A DEBUG request span (tower-http's default), slow and failed.
        let span = tracing::debug_span!("GET /orders");
        let _entered = span.enter();
        tracing::error!("the database went away");
        std::thread::sleep(Duration::from_millis(10));
    });
    assert!(blackbox.flush(Duration::from_secs(5)));
    let stats = blackbox.stats();
    assert_eq!(stats.requests_seen, 1, "{stats:?}");
    assert_eq!(stats.slow_requests, 1, "{stats:?}");
    let windows = sink.windows();
    let request = windows
        .iter()
        .flat_map(|w| w.requests.iter())
        .find(|r| r.name == "GET /orders")
        .expect("the request's window");
    assert!(request.error, "the ERROR event reached the filtered layer");
}
