//! `blackbox replay` into a real Jaeger v2: a binary dump over OTLP/gRPC
//! (one window per slow request, in the trace recorded in the file), the
//! same dump with `--all` (a new trace), and an OTLP JSON capture file over
//! OTLP/HTTP (resent as it is). Jaeger's query API shows the
//! `blackbox.window` span under the request span, the task spans and the
//! long poll. An unreachable endpoint is one line on stderr and status 1.
//!
//! Needs the peers built once: `tools/build-peers.sh`.

#[path = "../../tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::fixtures;
use support::peers::{Jaeger, TempDir, free_port, otlp_spans, span_attr};

const WAIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn blackbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blackbox"))
        .args(args)
        .output()
        .expect("run blackbox")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The trace ids `replay` printed (`  trace <hex>  <what>`).
fn printed_traces(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("trace "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn has_window(t: &Value) -> bool {
    otlp_spans(t).iter().any(|s| s["name"] == "blackbox.window")
}

fn int(span: &Value, key: &str) -> Option<i64> {
    let v = span_attr(span, key)?;
    v["intValue"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v["intValue"].as_i64())
}

fn same_id(a: &Value, b: &str) -> bool {
    a.as_str().is_some_and(|a| a.eq_ignore_ascii_case(b))
}

/// The window, its task with `task_id` and that task's long poll.
fn assert_window_with_long_poll(trace: &Value, request_span_id: &str, task_id: i64) {
    let spans = otlp_spans(trace);
    let window = spans
        .iter()
        .find(|s| s["name"] == "blackbox.window")
        .expect("blackbox.window span");
    assert!(
        same_id(&window["parentSpanId"], request_span_id),
        "window's parent {} is not the request span {request_span_id}",
        window["parentSpanId"]
    );
    let tasks: Vec<_> = spans
        .iter()
        .filter(|s| {
            s["parentSpanId"] == window["spanId"] && span_attr(s, "tokio.task.id").is_some()
        })
        .collect();
    assert!(!tasks.is_empty(), "no task spans under the window");
    let task = tasks
        .iter()
        .find(|s| int(s, "tokio.task.id") == Some(task_id))
        .unwrap_or_else(|| panic!("task {task_id} not among {} tasks", tasks.len()));
    assert!(span_attr(task, "code.file.path").is_some());
    let long: Vec<_> = spans
        .iter()
        .filter(|s| {
            s["parentSpanId"] == task["spanId"]
                && s["name"] == "poll"
                && span_attr(s, "blackbox.poll.long")
                    == Some(&serde_json::json!({"boolValue": true}))
        })
        .collect();
    assert_eq!(long.len(), 1, "the task's long poll");
}

#[test]
fn replayed_windows_open_in_jaeger_under_their_recorded_traces() {
    let jaeger = Jaeger::start();
    let grpc = jaeger.otlp_grpc_endpoint();

    // 1. The golden dump over gRPC: one window in the recorded trace.
    let golden = tokio_blackbox::dump::read_file(fixture("golden.bbx")).unwrap();
    let req = &golden.window.requests[0];
    let trace_id = req.trace_id.to_string();
    let golden_path = fixture("golden.bbx");
    let out = blackbox(&[
        "replay",
        golden_path.to_str().unwrap(),
        "--endpoint",
        &grpc,
        "--service-name",
        "replay-golden",
    ]);
    let stdout = ok(&out);
    assert_eq!(printed_traces(&stdout), vec![trace_id.clone()], "{stdout}");
    let trace = jaeger.wait_for_trace_where(&trace_id, WAIT, has_window);
    assert_window_with_long_poll(&trace, &req.span_id.to_string(), 13);
    // The request span itself came along (the app's trace never left the box).
    let spans = otlp_spans(&trace);
    assert!(
        spans
            .iter()
            .any(|s| same_id(&s["spanId"], &req.span_id.to_string())),
        "request span"
    );
    assert!(jaeger.services().contains(&"replay-golden".to_string()));

    // 2. The same dump with --all: the whole file under a new trace.
    let out = blackbox(&[
        "replay",
        golden_path.to_str().unwrap(),
        "--endpoint",
        &grpc,
        "--all",
    ]);
    let stdout = ok(&out);
    let traces = printed_traces(&stdout);
    assert_eq!(traces.len(), 1, "{stdout}");
    assert_ne!(traces[0], trace_id);
    let trace = jaeger.wait_for_trace_where(&traces[0], WAIT, has_window);
    let spans = otlp_spans(&trace);
    let root = spans
        .iter()
        .find(|s| {
            s["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("blackbox replay")
        })
        .expect("the new root span");
    assert_window_with_long_poll(&trace, root["spanId"].as_str().unwrap(), 13);
    let tasks = spans
        .iter()
        .filter(|s| span_attr(s, "tokio.task.id").is_some())
        .count();
    assert_eq!(tasks, 11, "every task of the dump");

    // 3. An OTLP JSON capture file over OTLP/HTTP, resent as it is.
    let json_path = fixture("small.otlp.jsonl");
    let out = blackbox(&[
        "replay",
        json_path.to_str().unwrap(),
        "--endpoint",
        &jaeger.otlp_http_url(),
        "--protocol",
        "http/protobuf",
    ]);
    let stdout = ok(&out);
    assert_eq!(
        printed_traces(&stdout),
        vec![fixtures::TRACE_ID.to_string()],
        "{stdout}"
    );
    let trace = jaeger.wait_for_trace_where(fixtures::TRACE_ID, WAIT, |t| {
        has_window(t) && otlp_spans(t).iter().any(|s| s["name"] == "GET /orders")
    });
    assert_window_with_long_poll(&trace, fixtures::SPAN_ID, fixtures::TASK_CACHE as i64);
    assert!(jaeger.services().contains(&"orders".to_string()));

    // 4. The same file over gRPC (tonic's TraceServiceClient), renamed.
    let out = blackbox(&[
        "replay",
        json_path.to_str().unwrap(),
        "--endpoint",
        &grpc,
        "--service-name",
        "orders-replayed",
    ]);
    ok(&out);
    let deadline = std::time::Instant::now() + WAIT;
    while !jaeger.services().contains(&"orders-replayed".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "service renamed on replay"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn an_unreachable_endpoint_is_one_line_and_status_1() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    for (file, protocol) in [
        ("small.bbx", "grpc"),
        ("small.otlp.jsonl", "grpc"),
        ("small.otlp.jsonl", "http/protobuf"),
    ] {
        let path = fixture(file);
        let out = blackbox(&[
            "replay",
            path.to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--timeout",
            "3s",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file} {protocol}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("blackbox: cannot send to {endpoint}")),
            "{stderr}"
        );
    }
}

#[test]
fn a_dump_without_slow_requests_sends_nothing() {
    let dir = TempDir::new("replay-empty");
    let path = dir.path().join("quiet.bbx");
    let mut bytes = Vec::new();
    tokio_blackbox::dump::write_window(
        &mut bytes,
        &tokio_blackbox::Window::default(),
        tokio_blackbox::dump::FileKind::Dump,
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    // Nothing listens there: nothing is sent, so nothing fails.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let out = blackbox(&["replay", path.to_str().unwrap(), "--endpoint", &endpoint]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("no slow requests, nothing sent"),
        "{stdout}"
    );
}
