//! What the services' tests share: running a service binary as a real
//! process with the variables a test gives, reading what it printed, and
//! reading OTLP JSON traces from Jaeger.
#![allow(dead_code)]

#[path = "../../../tests/support/peers.rs"]
pub mod peers;

use peers::{Jaeger, TempDir, otlp_spans, span_attr};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for Jaeger to show what was sent.
pub const WAIT: Duration = Duration::from_secs(30);

/// What one run of a service printed, and how it ended.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

/// Runs the service binary `exe` with `env` (the recorder's threshold
/// 300 ms), calls `drive` with its address once it listens, then stops it
/// with SIGTERM and waits for it to exit.
pub fn run_service(exe: &str, env: &[(&str, String)], drive: impl FnOnce(&str)) -> Run {
    let dir = TempDir::new("service");
    let mut cmd = Command::new(exe);
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

    drive(&addr);
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

pub fn tail(s: &str, n: usize) -> &str {
    let mut from = s.len().saturating_sub(n);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

/// The value of `key=` in the service's closing `blackbox:` line.
pub fn stat(run: &Run, key: &str) -> u64 {
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

pub fn assert_clean_exit(run: &Run) {
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

/// The service name of the resource each span of an OTLP trace came with.
pub fn services_of(trace: &Value) -> Vec<(String, String)> {
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

/// Every trace of `service` at least 350 ms long in Jaeger (at least
/// `expected` of them) is a slow request, and each holds the app's
/// request span with a window (or a reference to the capture that covered
/// it) under it, all under the service name set in code.
pub fn check_slow_traces(jaeger: &Jaeger, service: &str, expected: usize) {
    let deadline = Instant::now() + WAIT;
    let ids: Vec<String> = loop {
        let found = jaeger.search(service, "350ms", "1h");
        let ids: Vec<String> = found["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["traceID"].as_str().map(String::from))
            .collect();
        if ids.len() >= expected || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        ids.len() >= expected,
        "{expected} slow traces of {service} in Jaeger, found {}",
        ids.len()
    );
    let mut windows = 0;
    for id in &ids {
        // The app's spans and the recorder's arrive in different batches
        // (a window alone is long enough to match the search): wait for both.
        let trace = jaeger.wait_for_trace_where(id, WAIT, |t| {
            let spans = otlp_spans(t);
            spans
                .iter()
                .any(|s| s["name"] == "blackbox.window" || s["name"] == "blackbox.window.ref")
                && spans
                    .iter()
                    .any(|s| s["name"] == "request" && span_attr(s, "uri").is_some())
        });
        let spans = otlp_spans(&trace);
        let request = spans
            .iter()
            .find(|s| s["name"] == "request" && span_attr(s, "uri").is_some())
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
        for (name, got) in services_of(&trace) {
            assert_eq!(got, service, "span {name} of {id} exported under {got:?}");
        }
        println!("slow trace {id}: {}/trace/{id}", jaeger.query_url());
    }
    assert!(windows >= 1, "at least one capture");
}
