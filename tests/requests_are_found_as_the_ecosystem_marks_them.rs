//! Which spans are requests, the way the ecosystem marks them:
//! - `BLACKBOX_REQUEST_SPANS=server`: tower-http's `TraceLayer` spans
//!   (target `tower_http::trace::make_span`, `DEBUG`) and spans with
//!   `otel.kind = server` (axum-tracing-opentelemetry's `HTTP request` at
//!   `TRACE`, target `otel::tracing`) are requests; a cron job's root span
//!   is not;
//! - under the default `root` rule, a root span whose `otel.kind` is
//!   `client` is no request;
//! - a request is named by its `otel.name` value (`GET /items/{id}`), not
//!   by the callsite's name (`HTTP request`).
//!
//! The spans below have the targets, levels, names and fields those crates
//! give theirs (tower-http 0.6's `DefaultMakeSpan`, axum-tracing-opentelemetry
//! 0.3x's `make_span_from_request`); the full services are in `services/`.

mod support;

use std::time::Duration;
use tracing::Instrument;

fn tower_http_span() -> tracing::Span {
    tracing::debug_span!(target: "tower_http::trace::make_span", "request",
        method = %"GET", uri = %"/orders", version = ?"HTTP/1.1")
}

fn axum_otel_span(route: &str) -> tracing::Span {
    tracing::trace_span!(target: "otel::tracing", "HTTP request",
        http.request.method = "GET",
        http.route = route,
        otel.name = %format!("GET {route}"),
        otel.kind = ?opentelemetry::trace::SpanKind::Server,
        otel.status_code = tracing::field::Empty)
}

#[test]
fn server_spans_are_requests_named_by_otel_name_and_other_roots_are_not() {
    let (blackbox, _guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .request_spans(tokio_blackbox::RequestSpans::Server)
            .latency_threshold(Duration::from_millis(20))
            .window(Duration::from_millis(50), Duration::from_millis(10)),
        2,
    );
    let slow = || tokio::time::sleep(Duration::from_millis(30));
    rt.block_on(async {
        // A cron job's root span: not a request under `server`.
        tokio::spawn(slow().instrument(tracing::info_span!("cache_refresh")))
            .await
            .unwrap();
        assert_eq!(blackbox.stats().requests_seen, 0, "a plain root span");
        tokio::spawn(slow().instrument(tower_http_span()))
            .await
            .unwrap();
        tokio::spawn(slow().instrument(axum_otel_span("/items/{id}")))
            .await
            .unwrap();
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    assert_eq!(stats.requests_seen, 2, "{stats:?}");
    assert_eq!(stats.slow_requests, 2, "{stats:?}");
    let names: Vec<String> = sink
        .windows()
        .iter()
        .flat_map(|w| w.requests.iter().map(|r| r.name.clone()))
        .collect();
    assert!(names.iter().any(|n| n == "request"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "GET /items/{id}"),
        "named by otel.name: {names:?}"
    );
    assert!(!names.iter().any(|n| n == "HTTP request"), "{names:?}");
    drop(rt);
}

/// The default, `auto`: plain root spans are requests until the process
/// makes a span marked the ecosystem's way; from then on only marked ones
/// are (a service with tower-http: its cron job's root span is no request).
#[test]
fn by_default_plain_roots_stop_being_requests_once_marked_ones_appear() {
    use tracing_subscriber::prelude::*;
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(20))
        .sink(support::windows::Collect::default())
        .build()
        .expect("recorder");
    let subscriber = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(subscriber, || {
        let plain = || drop(tracing::info_span!("cache_refresh").entered());
        plain();
        assert_eq!(
            blackbox.stats().requests_seen,
            1,
            "a plain root span, before"
        );
        drop(tower_http_span().entered());
        assert_eq!(blackbox.stats().requests_seen, 2, "a marked one");
        plain();
        drop(axum_otel_span("/x").entered());
        assert_eq!(
            blackbox.stats().requests_seen,
            3,
            "after a marked span, a plain root span is no request"
        );
    });
}
