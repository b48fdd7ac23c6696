//! With no OTLP endpoint configured, each capture is appended to
//! `BLACKBOX_DIR/traces.otlp.jsonl` as one OTLP JSON `ExportTraceServiceRequest`
//! per line (with the kept traces of the tail sampler): the lines decode with
//! the OTLP protobuf JSON mapping, and a real Jaeger accepts them as they are
//! on its OTLP/HTTP JSON receiver and serves the window back.
//!
//! Needs the peers built once: `tools/build-peers.sh`.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::time::Duration;
use support::peers::{Jaeger, http_get, otlp_spans, post_otlp_json};
use support::service::TestService;
use tokio_blackbox::Blackbox;

#[test]
fn captures_are_otlp_json_lines_that_jaeger_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = Blackbox::builder()
        .latency_threshold(Duration::from_millis(250))
        .window(Duration::from_millis(300), Duration::from_millis(50))
        .with_env({
            let dir = dir.path().to_string_lossy().into_owned();
            move |var| (var == "BLACKBOX_DIR").then(|| dir.clone())
        });
    let mut svc = TestService::start(builder);
    let slow = http_get(&svc.url("/slow")).expect("slow").body;
    let fast = http_get(&svc.url("/fast")).expect("fast").body;
    assert!(svc.blackbox.flush(Duration::from_secs(10)));
    svc.stop();

    let path = dir.path().join("traces.otlp.jsonl");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("the file exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    }
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "the kept trace, then the capture");
    let mut names = Vec::new();
    for line in &lines {
        let req: ExportTraceServiceRequest = serde_json::from_str(line).expect("OTLP JSON");
        for rs in &req.resource_spans {
            let attrs = &rs.resource.as_ref().expect("resource").attributes;
            assert!(attrs.iter().any(|kv| kv.key == "host.name"));
            assert!(attrs.iter().any(|kv| kv.key == "service.name"));
            for ss in &rs.scope_spans {
                names.extend(ss.spans.iter().map(|s| s.name.clone()));
            }
        }
        // The protobuf JSON mapping: hex ids, 64-bit integers as strings.
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"].as_str().map(str::len), Some(32), "{span}");
        assert!(span["startTimeUnixNano"].is_string(), "{span}");
    }
    assert!(names.iter().any(|n| n == "GET /slow"));
    assert!(names.iter().any(|n| n == "blackbox.window"));
    assert!(!text.contains(&fast), "the fast trace was sampled out");

    // A real OTLP receiver takes the lines as they are.
    let jaeger = Jaeger::start();
    for line in &lines {
        post_otlp_json(
            &jaeger.otlp_http_url(),
            &serde_json::from_str(line).expect("json"),
        );
    }
    let trace = jaeger.wait_for_trace_where(&slow, Duration::from_secs(20), |t| {
        otlp_spans(t).iter().any(|s| s["name"] == "blackbox.window")
    });
    println!(
        "replayed {} lines; trace {slow} at {}/trace/{slow}",
        lines.len(),
        jaeger.query_url()
    );
    assert!(otlp_spans(&trace).iter().any(|s| s["name"] == "GET /slow"));
}
