//! Without `tracing-opentelemetry` the recorder makes the trace and span ids
//! itself and exports the request span too, so the window never hangs under
//! a missing parent; and `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` sends
//! over OTLP/HTTP. Real runtime, real Jaeger (its OTLP/HTTP receiver).
//!
//! Needs the peers built once: `tools/build-peers.sh`.

mod support;

use std::time::Duration;
use support::peers::{Jaeger, find_span, otlp_spans, span_attr};
use tokio_blackbox::Blackbox;
use tracing::Instrument;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

const SERVICE: &str = "blackbox-http-protobuf";

#[test]
fn recorder_made_ids_reach_jaeger_over_http_protobuf() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::set_var("OTEL_SERVICE_NAME", SERVICE) };
    let jaeger = Jaeger::start();
    let base = jaeger.otlp_http_url();
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(100))
        .window(Duration::from_millis(200), Duration::from_millis(50))
        .with_env(move |var| match var {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(base.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
            _ => None,
        })
        .build()
        .expect("build");
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(rt.worker_threads(2).enable_all());
    let rt = rt.build().expect("runtime");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(blackbox.layer()));
    rt.block_on(
        async {
            let work = async {
                let helper =
                    tokio::spawn(tokio::time::sleep(Duration::from_millis(10)).in_current_span());
                tokio::time::sleep(Duration::from_millis(150)).await;
                helper.await.expect("helper");
            };
            tokio::spawn(
                work.instrument(tracing::info_span!("checkout"))
                    .with_current_subscriber(),
            )
            .await
            .expect("request");
        }
        .with_subscriber(dispatch),
    );
    assert!(blackbox.flush(Duration::from_secs(10)));

    // The trace id was made inside the recorder: find it by search.
    let id = jaeger.wait_for_search(SERVICE, "100ms", Duration::from_secs(20));
    let trace = jaeger.wait_for_trace_where(&id, Duration::from_secs(20), |t| {
        find_span(t, "checkout").is_some() && find_span(t, "blackbox.window").is_some()
    });
    let request = find_span(&trace, "checkout").expect("request span");
    let window = find_span(&trace, "blackbox.window").expect("window");
    assert_eq!(window["parentSpanId"], request["spanId"]);
    assert_eq!(
        span_attr(request, "blackbox.request.source"),
        Some(&serde_json::json!({"stringValue": "recorder"}))
    );
    assert!(otlp_spans(&trace).len() > 2, "the window has children");
    println!(
        "trace {id} over OTLP/HTTP at {}/trace/{id}",
        jaeger.query_url()
    );
    let stats = blackbox.stats();
    assert_eq!(stats.spans_dropped, 0, "{stats:?}");
    drop(guard);
}
