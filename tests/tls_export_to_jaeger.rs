//! An `https` endpoint is reached over TLS, over gRPC and over OTLP/HTTP
//! (the recorder's own hyper + rustls client, what a vendor's endpoint
//! asks for): the recorder verifies the server's certificate against the
//! system roots plus the CA named by `OTEL_EXPORTER_OTLP_CERTIFICATE`, and
//! refuses a server it cannot verify (the spans are then dropped and
//! counted, never sent in clear). Real Jaeger with TLS on both OTLP
//! receivers, certificates made by openssl.
//!
//! Needs the peers built once: `tools/build-peers.sh`, and `openssl`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::peers::{Jaeger, find_span};
use tokio_blackbox::{Blackbox, BlackboxStats};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

const SERVICE: &str = "blackbox-tls";

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (install it: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=blackbox test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// Runs one slow request through a recorder exporting to `endpoint` over
/// `protocol`, trusting `ca` if given; returns the stats after the flush.
fn one_slow_request(endpoint: String, protocol: &'static str, ca: Option<String>) -> BlackboxStats {
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(50))
        .window(Duration::from_millis(100), Duration::from_millis(20))
        .with_env(move |var| match var {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some(protocol.into()),
            "OTEL_EXPORTER_OTLP_CERTIFICATE" => ca.clone(),
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
            tokio::spawn(
                tokio::time::sleep(Duration::from_millis(60))
                    .instrument(tracing::info_span!("secure_request"))
                    .with_current_subscriber(),
            )
            .await
            .expect("request");
        }
        .with_subscriber(dispatch),
    );
    assert!(blackbox.flush(Duration::from_secs(20)), "flush timed out");
    let stats = blackbox.stats();
    drop(guard);
    stats
}

#[test]
fn https_endpoint_is_verified_and_reached() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::set_var("OTEL_SERVICE_NAME", SERVICE) };
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    let jaeger = Jaeger::start_with_tls(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let ca = dir.path().join("ca.pem").display().to_string();
    let mut seen = std::collections::HashSet::new();
    for (protocol, port) in [
        ("grpc", jaeger.otlp_grpc_port),
        ("http/protobuf", jaeger.otlp_http_port),
    ] {
        let endpoint = format!("https://127.0.0.1:{port}");
        // Without our CA the server cannot be verified: nothing is sent.
        let refused = one_slow_request(endpoint.clone(), protocol, None);
        assert_eq!(
            refused.windows_written + refused.sink_errors,
            1,
            "{protocol}: {refused:?}"
        );
        assert_eq!(refused.spans_exported, 0, "{protocol}: {refused:?}");
        assert!(
            refused.spans_dropped > 0,
            "{protocol}: the unverified export is dropped and counted: {refused:?}"
        );

        // With it, the window arrives over TLS.
        let sent = one_slow_request(endpoint, protocol, Some(ca.clone()));
        assert!(sent.spans_exported > 0, "{protocol}: {sent:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let id = loop {
            let found = jaeger.search(SERVICE, "50ms", "1h");
            let new = found["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["traceID"].as_str())
                .find(|id| !seen.contains(*id))
                .map(String::from);
            if let Some(id) = new {
                break id;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{protocol}: no new trace in Jaeger"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        seen.insert(id.clone());
        let trace = jaeger.wait_for_trace_where(&id, Duration::from_secs(20), |t| {
            find_span(t, "blackbox.window").is_some()
        });
        let request = find_span(&trace, "secure_request").expect("request span");
        let window = find_span(&trace, "blackbox.window").expect("window");
        assert_eq!(window["parentSpanId"], request["spanId"]);
        println!(
            "TLS export over {protocol} reached jaeger: trace {id} at {}/api/v3/traces/{id}",
            jaeger.query_url()
        );
    }
}
