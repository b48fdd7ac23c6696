//! The test peers themselves work: Jaeger v2 stores and serves what it is
//! sent, several run side by side, one survives a restart on the same
//! ports, and the Collector configs in collector-config/ keep and drop the
//! right traces on their way to Jaeger.
//!
//! Needs the peers built once: `tools/build-peers.sh`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::peers::{
    Collector, Jaeger, TestSpan, attr_bool, collector_config, find_span, otlp_json_traces,
    otlp_spans, post_otlp_json, span_attr,
};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn jaeger_stores_an_otlp_http_span_and_serves_it_back() {
    let jaeger = Jaeger::start();
    let span = TestSpan::root("GET /slow", Duration::from_millis(300))
        .with_attr(attr_bool("blackbox.captured", true));
    post_otlp_json(
        &jaeger.otlp_http_url(),
        &otlp_json_traces("peers-smoke", std::slice::from_ref(&span)),
    );

    // v3 API: OTLP JSON.
    let trace = jaeger.wait_for_trace(&span.trace_id, WAIT);
    let spans = otlp_spans(&trace);
    assert_eq!(spans.len(), 1, "{trace}");
    assert_eq!(spans[0]["name"], "GET /slow");
    assert_eq!(
        spans[0]["traceId"].as_str().unwrap().to_lowercase(),
        span.trace_id
    );
    assert_eq!(
        spans[0]["spanId"].as_str().unwrap().to_lowercase(),
        span.span_id
    );
    assert_eq!(
        span_attr(spans[0], "blackbox.captured"),
        Some(&serde_json::json!({"boolValue": true}))
    );

    // Search API: Jaeger's own JSON, filtered by duration.
    let found = jaeger.search("peers-smoke", "250ms", "1h");
    let data = found["data"].as_array().expect("search answer has data");
    assert_eq!(data.len(), 1, "{found}");
    assert_eq!(data[0]["traceID"], span.trace_id.as_str());
    assert_eq!(data[0]["spans"][0]["operationName"], "GET /slow");
    let none = jaeger.search("peers-smoke", "400ms", "1h");
    assert_eq!(none["data"].as_array().map(Vec::len), Some(0), "{none}");
    assert!(jaeger.services().contains(&"peers-smoke".to_string()));

    // Unknown trace: None, not an error.
    assert!(jaeger.trace("0123456789abcdef0123456789abcdef").is_none());
}

#[test]
fn two_jaegers_run_side_by_side() {
    let a = Jaeger::start();
    let b = Jaeger::start();
    assert_ne!(a.query_port, b.query_port);
    let span = TestSpan::root("only-in-a", Duration::from_millis(5));
    post_otlp_json(
        &a.otlp_http_url(),
        &otlp_json_traces("side-by-side", std::slice::from_ref(&span)),
    );
    a.wait_for_trace(&span.trace_id, WAIT);
    assert!(
        b.trace(&span.trace_id).is_none(),
        "b must not see a's trace"
    );
}

#[test]
fn jaeger_restarts_on_the_same_ports() {
    let mut jaeger = Jaeger::start();
    let ports = (
        jaeger.otlp_grpc_port,
        jaeger.otlp_http_port,
        jaeger.query_port,
    );
    let before = TestSpan::root("before-restart", Duration::from_millis(5));
    post_otlp_json(
        &jaeger.otlp_http_url(),
        &otlp_json_traces("restart", std::slice::from_ref(&before)),
    );
    jaeger.wait_for_trace(&before.trace_id, WAIT);

    jaeger.stop();
    assert!(!jaeger.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", jaeger.otlp_grpc_port)).is_err(),
        "OTLP port still open after stop"
    );

    jaeger.restart();
    assert_eq!(
        (
            jaeger.otlp_grpc_port,
            jaeger.otlp_http_port,
            jaeger.query_port
        ),
        ports
    );
    // In-memory storage: what was there before is gone, new data flows.
    assert!(jaeger.trace(&before.trace_id).is_none());
    let after = TestSpan::root("after-restart", Duration::from_millis(5));
    post_otlp_json(
        &jaeger.otlp_http_url(),
        &otlp_json_traces("restart", std::slice::from_ref(&after)),
    );
    jaeger.wait_for_trace(&after.trace_id, WAIT);
}

/// Environment for collector-config/otelcol.yaml (and the tail-sampling
/// tier) in tests: exporters at two loopback Jaegers (the second one stands
/// in for Tempo), a short decision_wait, no random baseline.
fn sampling_env(jaeger: &Jaeger, tempo_stand_in: &Jaeger) -> Vec<(String, String)> {
    vec![
        (
            "OTELCOL_JAEGER_ENDPOINT".into(),
            jaeger.otlp_grpc_hostport(),
        ),
        (
            "OTELCOL_TEMPO_ENDPOINT".into(),
            tempo_stand_in.otlp_grpc_hostport(),
        ),
        ("OTELCOL_DECISION_WAIT".into(), "1s".into()),
        ("OTELCOL_BASELINE_PERCENT".into(), "0".into()),
        ("OTELCOL_LATENCY_THRESHOLD_MS".into(), "250".into()),
        ("OTELCOL_BATCH_TIMEOUT".into(), "100ms".into()),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Four traces, sent as one request each: (kept?, trace).
fn sampling_cases() -> Vec<(bool, &'static str, Vec<TestSpan>)> {
    // Fast request whose recorder flagged a captured window on a child span.
    let captured_root = TestSpan::root("GET /captured", Duration::from_millis(20));
    let window = captured_root
        .child("blackbox.window")
        .with_attr(attr_bool("blackbox.captured", true));
    // Slow by itself.
    let slow = TestSpan::root("GET /slow", Duration::from_millis(400));
    // Failed.
    let mut failed = TestSpan::root("GET /failed", Duration::from_millis(5));
    failed.status_code = 2;
    // Fast, fine, not flagged: dropped (baseline is 0 %).
    let plain = TestSpan::root("GET /plain", Duration::from_millis(5));
    vec![
        (false, "plain", vec![plain]),
        (true, "captured", vec![captured_root, window]),
        (true, "slow", vec![slow]),
        (true, "failed", vec![failed]),
    ]
}

fn assert_sampled(cases: &[(bool, &str, Vec<TestSpan>)], jaegers: &[&Jaeger]) {
    for j in jaegers {
        for (kept, what, spans) in cases {
            if *kept {
                let t = j.wait_for_spans(&spans[0].trace_id, spans.len(), WAIT);
                assert!(find_span(&t, &spans[0].name).is_some(), "{what}: {t}");
            }
        }
    }
    // The dropped traces were sent first; give the samplers another
    // decision_wait (1s) and tick before checking they never arrived.
    std::thread::sleep(Duration::from_millis(2500));
    for j in jaegers {
        for (kept, what, spans) in cases {
            if !*kept {
                let t: Option<Value> = j.trace(&spans[0].trace_id);
                assert!(
                    t.is_none(),
                    "{what} should have been dropped by tail_sampling: {t:?}"
                );
            }
        }
    }
}

#[test]
fn collector_tail_sampling_keeps_captured_slow_and_failed_traces() {
    let jaeger = Jaeger::start();
    let tempo = Jaeger::start();
    let env = sampling_env(&jaeger, &tempo);
    let collector = Collector::start(collector_config("otelcol.yaml"), &as_refs(&env));

    let cases = sampling_cases();
    for (_, _, spans) in &cases {
        post_otlp_json(
            &collector.otlp_http_url(),
            &otlp_json_traces("collector-smoke", spans),
        );
    }
    assert_sampled(&cases, &[&jaeger, &tempo]);

    // The captured trace arrives whole, window span included.
    let t = jaeger.trace(&cases[1].2[0].trace_id).unwrap();
    let window = find_span(&t, "blackbox.window").expect("window span passed through");
    assert_eq!(
        span_attr(window, "blackbox.captured"),
        Some(&serde_json::json!({"boolValue": true}))
    );
    drop(collector);
}

#[test]
fn two_tier_collectors_route_whole_traces_to_one_sampler() {
    let jaeger = Jaeger::start();
    let tempo = Jaeger::start();
    let env = sampling_env(&jaeger, &tempo);
    let tier2_a = Collector::start(
        collector_config("otelcol-tailsampling-tier.yaml"),
        &as_refs(&env),
    );
    let tier2_b = Collector::start(
        collector_config("otelcol-tailsampling-tier.yaml"),
        &as_refs(&env),
    );
    let backends = format!(
        "[{}, {}]",
        tier2_a.otlp_grpc_hostport, tier2_b.otlp_grpc_hostport
    );
    let lb = Collector::start(
        collector_config("otelcol-loadbalancing.yaml"),
        &[("OTELCOL_LB_BACKENDS", &backends)],
    );

    // Send every span of every trace in its own request, so that only
    // routing by trace id can bring the captured flag and the root together.
    let mut cases = sampling_cases();
    // A few more captured traces, so both backends get some.
    for i in 0..6 {
        let root = TestSpan::root(&format!("GET /captured/{i}"), Duration::from_millis(10));
        let window = root
            .child("blackbox.window")
            .with_attr(attr_bool("blackbox.captured", true));
        cases.push((true, "captured-n", vec![root, window]));
    }
    for (_, _, spans) in &cases {
        for s in spans.iter().rev() {
            post_otlp_json(
                &lb.otlp_http_url(),
                &otlp_json_traces("two-tier", std::slice::from_ref(s)),
            );
        }
    }
    assert_sampled(&cases, &[&jaeger]);
}
