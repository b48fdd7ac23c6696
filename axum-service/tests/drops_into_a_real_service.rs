//! The service of `src/main.rs` (axum + tower-http's `TraceLayer`, a global
//! `EnvFilter`, its own OTLP pipeline with opentelemetry-otlp's default
//! features, reqwest's defaults, tokio-blackbox added as the README says)
//! as a real process against a real Jaeger v2:
//!
//! - over OTLP/HTTP (the specification's default protocol, the variables
//!   only an endpoint) and over gRPC: the program exits 0 with no panic on
//!   any thread, the app's own spans are in Jaeger under its service name
//!   set in code, and every slow request's trace holds a `blackbox.window`
//!   (or the reference to the capture that covered it) under the app's
//!   request span, exported under the same service name;
//! - with `RUST_LOG` unset (the filter defaults to `info`, which hides
//!   tower-http's `DEBUG` request spans): one `WARN` line names the filter
//!   and the fix.

#[allow(dead_code)]
#[path = "../../tests/support/peers.rs"]
mod peers;

use peers::{Jaeger, TempDir, otlp_spans};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = "checkout";
const WAIT: Duration = Duration::from_secs(30);

/// What one run of the service printed, and how it ended.
struct Run {
    stdout: String,
    stderr: String,
    success: bool,
}

/// Runs the service with `env`, sends it three slow and ten fast
/// requests, stops it with SIGTERM and waits for it to exit.
fn run_service(env: &[(&str, String)]) -> Run {
    let dir = TempDir::new("axum-service");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_axum-service"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("BLACKBOX_") || k == "RUST_LOG" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("PORT", "0")
        .env("BLACKBOX_LATENCY_THRESHOLD", "300ms")
        .env("BLACKBOX_DIR", dir.path().join("blackbox"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the service");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    let addr = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read stdout") == 0 {
            let _ = child.wait();
            panic!(
                "the service ended before listening:\n{out}\n{}",
                stderr_reader.join().unwrap_or_default()
            );
        }
        out.push_str(&line);
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };
    let stdout_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });

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
    // The last window's `after` (200 ms) passes before the shutdown.
    std::thread::sleep(Duration::from_millis(500));

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the service did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    out.push_str(&stdout_reader.join().unwrap_or_default());
    let run = Run {
        stdout: out,
        stderr: stderr_reader.join().unwrap_or_default(),
        success: status.success(),
    };
    eprintln!(
        "--- service stdout\n{}--- service stderr (last 4000 bytes)\n{}",
        run.stdout,
        tail(&run.stderr, 4000)
    );
    run
}

fn tail(s: &str, n: usize) -> &str {
    let mut from = s.len().saturating_sub(n);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

/// The value of `key=` in the service's closing `blackbox:` line.
fn stat(run: &Run, key: &str) -> u64 {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("blackbox: "))
        .unwrap_or_else(|| panic!("no stats line in:\n{}", run.stdout));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn assert_clean_exit(run: &Run) {
    assert!(run.success, "the service failed");
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains("panicked"), "a thread panicked");
        assert!(
            !text.contains("no reactor running"),
            "an exporter ran outside a runtime"
        );
    }
    assert!(
        run.stdout.contains("shut down cleanly"),
        "the app's provider shut down with an error"
    );
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// The service name of the resource each span of an OTLP trace came with.
fn services_of(trace: &Value) -> Vec<(String, String)> {
    let root = trace.get("result").unwrap_or(trace);
    let mut out = Vec::new();
    for rs in root["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or("")
            .to_owned();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                out.push((s["name"].as_str().unwrap_or("").to_owned(), service.clone()));
            }
        }
    }
    out
}

/// Every trace of the service at least 350 ms long in Jaeger: each is a
/// slow request (a `/slow` or its `/downstream`), and each holds the app's
/// request span with a window (or a reference to the capture that covered
/// it) under it, all under the service name set in code.
fn check_slow_traces(jaeger: &Jaeger) {
    let deadline = Instant::now() + WAIT;
    let ids: Vec<String> = loop {
        let found = jaeger.search(SERVICE, "350ms", "1h");
        let ids: Vec<String> = found["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["traceID"].as_str().map(String::from))
            .collect();
        // Three /slow and their three /downstream calls (their own traces:
        // reqwest propagates no context).
        if ids.len() >= 6 || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        ids.len() >= 6,
        "six slow traces of {SERVICE} in Jaeger, found {}",
        ids.len()
    );
    let mut windows = 0;
    for id in &ids {
        let trace = jaeger.wait_for_trace_where(id, WAIT, |t| {
            otlp_spans(t)
                .iter()
                .any(|s| s["name"] == "blackbox.window" || s["name"] == "blackbox.window.ref")
        });
        let spans = otlp_spans(&trace);
        let request = spans
            .iter()
            .find(|s| s["name"] == "request" && attr(s, "uri").is_some())
            .unwrap_or_else(|| panic!("the app's request span in {id}"));
        let under: Vec<&&Value> = spans
            .iter()
            .filter(|s| s["parentSpanId"] == request["spanId"])
            .collect();
        let window = under
            .iter()
            .find(|s| s["name"] == "blackbox.window" || s["name"] == "blackbox.window.ref")
            .unwrap_or_else(|| panic!("no window under the app's request span in {id}"));
        if window["name"] == "blackbox.window" {
            windows += 1;
        }
        for (name, service) in services_of(&trace) {
            assert_eq!(
                service, SERVICE,
                "span {name} of {id} exported under {service:?}"
            );
        }
        println!("slow trace {id}: {}/trace/{id}", jaeger.query_url());
    }
    assert!(windows >= 1, "at least one capture");
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
    let run = run_service(&[
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
    let run = run_service(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_grpc_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
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
    let run = run_service(&[("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_url())]);
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
