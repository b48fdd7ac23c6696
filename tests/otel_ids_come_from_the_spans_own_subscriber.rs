//! The recorder asks the subscriber it is part of for a request's
//! OpenTelemetry ids, not the thread's default subscriber. Here the global
//! default is another subscriber with an OpenTelemetry layer of its own
//! (which does not know the request's span); the service's subscriber, with
//! the recorder's layer, is scoped around the span's creation and the span
//! is entered on another thread. The window lands in the
//! request's own trace, and nothing panics.

mod support;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use std::time::Duration;
use tracing_subscriber::prelude::*;

#[test]
fn a_scoped_subscriber_links_the_window_to_its_own_trace() {
    // The thread's (global) default: another OpenTelemetry pipeline.
    let other = SdkTracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(other.tracer("other")))
        .init();

    let exported = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    let sink = support::windows::Collect::default();
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(50))
        .window(Duration::from_millis(100), Duration::from_millis(20))
        .sink(sink.clone())
        .build()
        .expect("recorder");
    let service = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("service")))
        .with(blackbox.layer());

    // The span is made in the service's scope, and entered and closed on a
    // thread whose default is the other subscriber (as a span moved to a
    // worker thread of a runtime is).
    let span = tracing::subscriber::with_default(service, || tracing::info_span!("scoped request"));
    std::thread::spawn(move || {
        let _enter = span.enter();
        std::thread::sleep(Duration::from_millis(80));
    })
    .join()
    .expect("no panic in the layer");
    std::thread::sleep(Duration::from_millis(100));
    assert!(blackbox.flush(Duration::from_secs(5)));
    drop(guard);
    let _ = provider.force_flush();

    let spans = exported.get_finished_spans().expect("spans");
    let request = spans
        .iter()
        .find(|s| s.name == "scoped request")
        .expect("the service's pipeline exported the request span");
    let windows = sink.windows();
    let r = windows
        .iter()
        .flat_map(|w| &w.requests)
        .find(|r| r.name == "scoped request")
        .expect("a window for the request");
    assert!(!r.own_span, "ids came from OpenTelemetry, not made up");
    assert_eq!(r.trace_id, request.span_context.trace_id());
    assert_eq!(r.span_id, request.span_context.span_id());
}
