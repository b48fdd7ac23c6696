//! End to end against a real Jaeger v2: a real axum service with the
//! recorder and `tracing-opentelemetry` exports over OTLP/gRPC; Jaeger's query
//! API shows each slow request's trace with the request span, the
//! `blackbox.window` under it (or a `blackbox.window.ref` linking to it), the
//! task spans with the blocking neighbour's long poll and spawn location,
//! and span events inside the window; fast requests' traces are absent
//! (tail sampling).
//!
//! Needs the peers built once: `tools/build-peers.sh`.

mod support;

use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::peers::{Jaeger, http_get, otlp_spans, span_attr};
use support::service::{NEIGHBOUR_LINE, TestService};
use tokio_blackbox::Blackbox;

const SERVICE: &str = "blackbox-e2e";
const WAIT: Duration = Duration::from_secs(30);

fn get(url: &str) -> String {
    let reply = http_get(url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 200, "{url}: {}", reply.body);
    reply.body
}

fn ns(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

fn int(span: &Value, key: &str) -> Option<i64> {
    let v = span_attr(span, key)?;
    v["intValue"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v["intValue"].as_i64())
}

fn children<'a>(spans: &[&'a Value], parent: &Value) -> Vec<&'a Value> {
    spans
        .iter()
        .copied()
        .filter(|s| s["parentSpanId"] == parent["spanId"])
        .collect()
}

#[test]
fn slow_requests_open_in_jaeger_with_their_task_timeline() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::set_var("OTEL_SERVICE_NAME", SERVICE) };
    let jaeger = Jaeger::start();
    // Jaeger's OTLP/HTTP port with no protocol variable: the specification's
    // default, http/protobuf, as the app's own SDK would send.
    let endpoint = jaeger.otlp_http_url();
    let builder = Blackbox::builder()
        .latency_threshold(Duration::from_millis(250))
        .window(Duration::from_millis(500), Duration::from_millis(100))
        // The standard variable, read through the builder's environment.
        .with_env(move |var| (var == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| endpoint.clone()));
    let mut svc = TestService::start(builder);
    std::thread::sleep(Duration::from_millis(300)); // the neighbour has run

    // Two slow requests at once (one capture, linked), one alone, and fast ones.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| get(&svc.url("/slow")));
        std::thread::sleep(Duration::from_millis(50));
        let b = s.spawn(|| get(&svc.url("/slow")));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let fast: Vec<String> = (0..20).map(|_| get(&svc.url("/fast"))).collect();
    std::thread::sleep(Duration::from_millis(800));
    let c = get(&svc.url("/slow"));
    let slow = [a, b, c];
    assert!(svc.blackbox.flush(Duration::from_secs(10)), "flush");
    let stats = svc.blackbox.stats();
    eprintln!("{stats:?}");

    let (mut windows, mut refs) = (0, 0);
    for id in &slow {
        let trace = jaeger.wait_for_trace_where(id, WAIT, |t| {
            let spans = otlp_spans(t);
            spans.iter().any(|s| s["name"] == "GET /slow")
                && spans
                    .iter()
                    .any(|s| s["name"] == "blackbox.window" || s["name"] == "blackbox.window.ref")
        });
        let spans = otlp_spans(&trace);
        let request = spans
            .iter()
            .find(|s| s["name"] == "GET /slow")
            .expect("request span");
        assert!(
            request["parentSpanId"].as_str().unwrap_or("").is_empty(),
            "the request is the root"
        );
        let under = children(&spans, request);
        if let Some(window) = under.iter().find(|s| s["name"] == "blackbox.window") {
            windows += 1;
            assert_eq!(
                span_attr(window, "blackbox.captured"),
                Some(&serde_json::json!({"boolValue": true}))
            );
            let (from, to) = (
                ns(&window["startTimeUnixNano"]),
                ns(&window["endTimeUnixNano"]),
            );
            assert_eq!(
                int(window, "blackbox.window.start_unix_ns"),
                Some(from as i64)
            );
            assert!(int(window, "blackbox.window.events").unwrap_or(0) > 0);
            let tasks: Vec<&Value> = children(&spans, window)
                .into_iter()
                // Task spans carry Tokio's task id; their names are the span
                // they run in, or `task <file>:<line>`.
                .filter(|s| span_attr(s, "tokio.task.id").is_some())
                .collect();
            assert!(!tasks.is_empty(), "task spans under the window");
            assert!(
                tasks
                    .iter()
                    .any(|t| span_attr(t, "blackbox.task.in_request")
                        == Some(&serde_json::json!({"boolValue": true})))
            );
            // The blocking neighbour: its spawn location and a long poll.
            let line = NEIGHBOUR_LINE.load(Ordering::Relaxed) as i64;
            let neighbour = tasks
                .iter()
                .find(|t| {
                    span_attr(t, "code.file.path")
                        .and_then(|v| v["stringValue"].as_str())
                        .is_some_and(|f| f.ends_with("support/service.rs"))
                        && int(t, "code.line.number") == Some(line)
                        && children(&spans, t)
                            .iter()
                            .any(|p| span_attr(p, "blackbox.poll.long").is_some())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "no neighbour task at line {line} with a long poll in {:#?}",
                        tasks.iter().map(|t| &t["name"]).collect::<Vec<_>>()
                    )
                });
            let long = children(&spans, neighbour)
                .into_iter()
                .find(|p| span_attr(p, "blackbox.poll.long").is_some())
                .expect("long poll");
            assert!(ns(&long["endTimeUnixNano"]) - ns(&long["startTimeUnixNano"]) >= 30_000_000);
            // Span events (spawned, terminated, park, unpark) inside the window.
            let mut events = 0;
            for s in children(&spans, window) {
                for e in s["events"].as_array().into_iter().flatten() {
                    let t = ns(&e["timeUnixNano"]);
                    assert!(
                        t >= from && t <= to,
                        "event {e} outside the window [{from}, {to}]"
                    );
                    events += 1;
                }
            }
            assert!(events > 0, "span events in the window");
            assert!(under.iter().all(|s| s["traceId"] == request["traceId"]));
        } else {
            // Covered by another request's capture: the reference links to
            // that window, which is in Jaeger under the other trace.
            let r = under
                .iter()
                .find(|s| s["name"] == "blackbox.window.ref")
                .expect("window or ref under the request");
            let link = &r["links"][0];
            let other = link["traceId"]
                .as_str()
                .expect("link trace id")
                .to_lowercase();
            assert_ne!(&other, id);
            let target = jaeger.wait_for_trace(&other, WAIT);
            let window = otlp_spans(&target)
                .into_iter()
                .find(|s| s["name"] == "blackbox.window")
                .expect("linked window");
            assert_eq!(window["spanId"], link["spanId"]);
            assert!(
                window["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|l| l["traceId"].as_str().map(str::to_lowercase).as_deref()
                        == Some(id.as_str())),
                "the window links back to {id}"
            );
            refs += 1;
        }
        println!("slow trace {id}: {}/trace/{id}", jaeger.query_url());
    }
    assert!(windows >= 2, "two captures: the pair and the lone one");
    assert_eq!(windows + refs, slow.len());

    // Search by duration finds them; fast traces were never kept.
    let found = jaeger.search(SERVICE, "250ms", "1h");
    let ids: Vec<&str> = found["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["traceID"].as_str())
        .collect();
    for id in &slow {
        assert!(ids.contains(&id.as_str()), "search finds {id}: {ids:?}");
    }
    for id in &fast {
        assert!(
            jaeger.trace(id).is_none(),
            "fast trace {id} must be sampled out"
        );
    }
    println!(
        "checked {} slow traces and {} fast ones at {}/search?service={SERVICE}",
        slow.len(),
        fast.len(),
        jaeger.query_url()
    );
    let s = svc.blackbox.stats();
    assert!(s.traces_sampled_out >= 20, "{s:?}");
    assert!(s.traces_kept >= 3, "{s:?}");
    assert_eq!(s.spans_dropped, 0, "{s:?}");
    svc.stop();
}
