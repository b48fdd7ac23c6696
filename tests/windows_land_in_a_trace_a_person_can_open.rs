//! Every window lands in a trace a person can open:
//! - a first request whose span the app's OpenTelemetry layer did not build
//!   (its per-layer filter leaves `GET /health` out) does not stop the
//!   next requests from being linked to their own traces (there was a
//!   process-wide "no OpenTelemetry" latch: every later window went into a
//!   new, unlinked trace); the unlinked one is counted;
//! - a request the app's head sampler dropped (not sampled) keeps the app's
//!   trace id, and its window carries the request span itself (the app will
//!   never export it, so the window would hang under a missing parent).

mod support;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

#[test]
fn windows_are_linked_after_a_filtered_request_and_an_unsampled_one_carries_its_span() {
    let exported = InMemorySpanExporter::default();
    // The app samples nothing under `GET /unsampled` (a ratio sampler's
    // "no", made certain), everything else.
    let provider = SdkTracerProvider::builder()
        .with_sampler(UnsampledByName)
        .with_simple_exporter(exported.clone())
        .build();
    let sink = support::windows::Collect::default();
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(20))
        .window(Duration::from_millis(50), Duration::from_millis(10))
        .max_captures_per_sec(100)
        .sink(sink.clone())
        .build()
        .expect("recorder");
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("app"))
                .with_filter(filter_fn(|m| m.name() != "GET /health")),
        )
        .with(blackbox.layer())
        .init();

    let slow = |name: &'static str| {
        let span = match name {
            "GET /health" => tracing::info_span!("GET /health"),
            "GET /unsampled" => tracing::info_span!("GET /unsampled"),
            _ => tracing::info_span!("GET /orders"),
        };
        let trace = span.context().span().span_context().trace_id();
        {
            let _e = span.enter();
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(span);
        // One capture each: the next starts after this one's window.
        std::thread::sleep(Duration::from_millis(80));
        trace
    };
    // Filtered first, many times: more than any number of misses a
    // heuristic might count before giving up on OpenTelemetry.
    for _ in 0..80 {
        slow("GET /health");
    }
    let orders = slow("GET /orders");
    let unsampled = slow("GET /unsampled");
    // Once the app's layer is known to be there, a request without a
    // context is counted as unlinked.
    slow("GET /health");
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    drop(guard);

    let requests: Vec<_> = sink
        .windows()
        .iter()
        .flat_map(|w| w.requests.clone())
        .collect();
    let find = |name: &str| {
        requests
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no window for {name}: {stats:?}"))
            .clone()
    };
    let o = find("GET /orders");
    assert_eq!(o.trace_id, orders, "GET /orders lands in its own trace");
    assert!(!o.own_span, "the app exports that request span itself");
    let u = find("GET /unsampled");
    assert_eq!(u.trace_id, unsampled, "the app's trace id is kept");
    assert!(
        u.own_span,
        "the window carries the request span the app drops"
    );
    let h = find("GET /health");
    assert!(h.own_span, "no context: a trace of the recorder's own");
    assert!(
        stats.windows_unlinked == 1,
        "the filtered requests are counted: {stats:?}"
    );
    let _ = provider.force_flush();
    let app = exported.get_finished_spans().expect("spans");
    assert!(app.iter().any(|s| s.name == "GET /orders"));
    assert!(!app.iter().any(|s| s.name == "GET /unsampled"));
}

/// Samples every span but those named `GET /unsampled`.
#[derive(Debug, Clone)]
struct UnsampledByName;

impl opentelemetry_sdk::trace::ShouldSample for UnsampledByName {
    fn should_sample(
        &self,
        parent: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let sampler = if name == "GET /unsampled" {
            Sampler::AlwaysOff
        } else {
            Sampler::AlwaysOn
        };
        sampler.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}
