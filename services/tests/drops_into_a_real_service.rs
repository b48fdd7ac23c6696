//! The service of `src/bin/axum-service.rs` (axum + tower-http's `TraceLayer`, a global
//! `EnvFilter`, its own OTLP pipeline with opentelemetry-otlp's default
//! features, reqwest's defaults, tokio-blackbox added as the README says)
//! as a real process against a real Jaeger v2:
//!
//! - over OTLP/HTTP (the specification's default protocol, the variables
//!   only an endpoint) and over gRPC with gzip: the program exits 0 with no panic on
//!   any thread, the app's own spans are in Jaeger under its service name
//!   set in code, and every slow request's trace holds a `blackbox.window`
//!   (or the reference to the capture that covered it) under the app's
//!   request span, exported under the same service name;
//! - with `RUST_LOG` unset (the filter defaults to `info`, which hides
//!   tower-http's `DEBUG` request spans): one `WARN` line names the filter
//!   and the fix.

mod common;

use common::peers::Jaeger;
use common::{Run, assert_clean_exit, run_service, stat};
use std::time::Duration;

const SERVICE: &str = "checkout";

fn run(env: &[(&str, String)]) -> Run {
    run_service(env!("CARGO_BIN_EXE_axum-service"), env, drive)
}

/// Three slow requests (each waits on its `/downstream`) and twelve fast ones.
fn drive(addr: &str) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let get = |path: &str| {
        let reply = client
            .get(format!("http://{addr}{path}"))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(
            reply.status().is_success(),
            "GET {path}: {}",
            reply.status()
        );
        reply.text().expect("body")
    };
    for round in 0..3 {
        assert_eq!(get("/slow"), "inventory\n", "round {round}");
        for _ in 0..4 {
            assert_eq!(get("/fast"), "fast\n");
        }
    }
}

/// The slow traces (each `/slow` and its `/downstream`, their own traces:
/// reqwest propagates no context) hold windows; the app's own fast request
/// spans are there too: its pipeline works.
fn check_slow_traces(jaeger: &Jaeger) {
    common::check_slow_traces(jaeger, SERVICE, 6);
    // The app's own fast requests are there too: its pipeline works.
    let all = jaeger.search(SERVICE, "", "1h");
    let fast = all["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["spans"].as_array().into_iter().flatten().any(|s| {
                s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|tag| tag["key"] == "uri" && tag["value"] == "/fast")
            })
        })
        .count();
    assert!(
        fast >= 12,
        "the app's own /fast request spans in Jaeger: {fast}"
    );
}

#[test]
fn over_otlp_http_the_app_and_its_windows_reach_jaeger() {
    let jaeger = Jaeger::start();
    let run = run(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_url()),
        ("RUST_LOG", "info,tower_http=debug".into()),
    ]);
    assert_clean_exit(&run);
    assert!(stat(&run, "requests_seen") >= 18, "every request seen");
    assert!(stat(&run, "slow_requests") >= 6);
    assert_eq!(stat(&run, "export_failures"), 0);
    assert_eq!(stat(&run, "windows_unlinked"), 0);
    assert!(stat(&run, "spans_exported") > 0);
    check_slow_traces(&jaeger);
}

#[test]
fn over_grpc_the_app_and_its_windows_reach_jaeger() {
    let jaeger = Jaeger::start();
    let run = run(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_grpc_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        // What a vendor's setup asks for; the app's exporter and ours both honour it.
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()),
        ("RUST_LOG", "info,tower_http=debug".into()),
    ]);
    assert_clean_exit(&run);
    assert_eq!(stat(&run, "export_failures"), 0);
    assert!(stat(&run, "slow_requests") >= 6);
    check_slow_traces(&jaeger);
}

#[test]
fn with_rust_log_unset_the_hidden_request_spans_are_named_once() {
    let jaeger = Jaeger::start();
    let run = run(&[("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_url())]);
    assert_clean_exit(&run);
    assert_eq!(
        stat(&run, "requests_seen"),
        0,
        "the info filter hides tower-http's spans"
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("tokio_blackbox") && l.contains("filter"))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {lines:#?}");
    assert!(lines[0].contains("tower_http=debug"), "{}", lines[0]);
    assert!(
        lines[0].contains("level(tracing::Level::INFO)"),
        "{}",
        lines[0]
    );
    assert_eq!(stat(&run, "request_callsites_hidden"), 1);
}
