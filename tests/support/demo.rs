//! The demo service (`examples/demo.rs`) as a child process, and the checks
//! the end-to-end tests make on what reached Jaeger through Collectors.
//!
//! [`demo_exe`] builds the example once per test process with
//! `cargo build --release --example demo --message-format=json` (same cargo,
//! same `CARGO_TARGET_DIR`, same `.cargo/config.toml`, so `tokio_unstable` is
//! on) and reads the executable's path from cargo's messages. The first
//! build takes a few minutes; after that cargo only checks it is fresh.
//!
//! [`run_demo`] runs it with `--duration`, exporting over OTLP/gRPC to an
//! endpoint, with `BLACKBOX_BASELINE_RATIO=1` (the recorder's own tail
//! sampling off: every trace is exported, so the Collector decides), and
//! reads the counts the demo prints at exit.
//!
//! [`check_jaeger`] then asserts what a user opening Jaeger would expect: the
//! slow requests' traces with their windows, every span of each trace there
//! (nothing split off or missing), and no fast request's trace.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::peers::{Jaeger, TempDir, otlp_spans, repo_root, span_attr};

/// The demo's service name (its default `OTEL_SERVICE_NAME`, set explicitly).
pub const SERVICE: &str = "blackbox-demo";
/// The demo's latency threshold (its default, set explicitly), and the
/// Collector's `slow` policy threshold in these tests.
pub const THRESHOLD_MS: u64 = 200;
/// How long a demo run may take beyond its `--duration` (flush at exit).
const DEMO_GRACE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Building and running the demo

/// The release build of `examples/demo.rs`, built on first use.
pub fn demo_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(build_demo).clone()
}

/// Variables (and, ending in `_`, prefixes) that cargo sets for a test
/// binary and that must not reach a nested cargo.
const CARGO_SETS_FOR_TESTS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_BIN_EXE_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

fn build_demo() -> PathBuf {
    let cargo = env!("CARGO");
    let started = Instant::now();
    eprintln!(
        "building the demo: cargo build --release --example demo \
         (a few minutes the first time, seconds after)"
    );
    let mut cmd = Command::new(cargo);
    // `cargo test` gives this process the variables cargo sets for the
    // crate under test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Build scripts
    // watch some of them (ring's reruns when CARGO_MANIFEST_DIR changes), so
    // passing them on would rebuild half the dependency tree on every run,
    // and again on the next plain `cargo build`.
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if CARGO_SETS_FOR_TESTS
            .iter()
            .any(|p| k_str == *p || (p.ends_with('_') && k_str.starts_with(p)))
        {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .args([
            "build",
            "--release",
            "--example",
            "demo",
            "--message-format=json",
        ])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run `{cargo} build --release --example demo`: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`cargo build --release --example demo` failed ({}):\n{}",
        out.status,
        tail(&stderr, 6000)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exe = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "demo"
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "example"))
        })
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .unwrap_or_else(|| {
            panic!(
                "`cargo build --release --example demo --message-format=json` named no \
                 executable for the example `demo`; its messages:\n{}",
                tail(&stdout, 4000)
            )
        });
    assert!(
        exe.is_file(),
        "cargo said the demo is at {}, but there is no file there",
        exe.display()
    );
    eprintln!("demo built in {:.1?}: {}", started.elapsed(), exe.display());
    exe
}

fn tail(s: &str, max: usize) -> &str {
    let mut from = s.len().saturating_sub(max);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

/// The counts the demo prints when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoStats {
    /// Requests its load generator got an answer to.
    pub served: u64,
    /// Requests at or over the threshold.
    pub slow: u64,
    /// Windows captured (one may cover several slow requests).
    pub captures: u64,
    /// Slow requests covered by another request's capture (a
    /// `blackbox.window.ref` in their trace).
    pub merged: u64,
    /// Slow requests not captured because of the captures-per-second cap.
    pub skipped: u64,
    /// Captures shed by the recorder's CPU budget.
    pub shed: u64,
    /// Traces its tail sampler kept and exported (all of them with
    /// `BLACKBOX_BASELINE_RATIO=1`: one per request).
    pub traces_kept: u64,
    /// Traces its tail sampler dropped (none with ratio 1).
    pub traces_dropped: u64,
    pub windows_exported: u64,
    pub spans_exported: u64,
    pub spans_dropped: u64,
}

/// A finished demo run.
pub struct DemoRun {
    pub stdout: String,
    pub stderr: String,
    pub stats: DemoStats,
    /// When the demo exited (all it exported was flushed by then).
    pub exited: Instant,
    pub took: Duration,
}

/// The number just before `suffix` in `line`, e.g. `number_before("demo: 12
/// requests served", " requests served") == Some(12)`.
fn number_before(line: &str, suffix: &str) -> Option<u64> {
    let head = &line[..line.find(suffix)?];
    let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    head[head.len() - digits..].parse().ok()
}

fn parse_stats(stdout: &str) -> DemoStats {
    let line = |marker: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("demo: ") && l.contains(marker))
            .unwrap_or_else(|| {
                panic!(
                    "the demo printed no `demo: ...{marker}...` line (has examples/demo.rs \
                     changed its summary? tests/support/demo.rs parses it); its output:\n{stdout}"
                )
            })
    };
    let get = |l: &str, suffix: &str| {
        number_before(l, suffix).unwrap_or_else(|| {
            panic!("no number before {suffix:?} in the demo's line {l:?}; its output:\n{stdout}")
        })
    };
    let served = line(" requests served");
    let export = line(" spans exported");
    DemoStats {
        served: get(served, " requests served"),
        slow: get(served, " slow ("),
        captures: get(served, " captures ("),
        merged: get(served, " merged"),
        skipped: get(served, " skipped by the cap"),
        shed: get(served, " shed by the CPU budget"),
        traces_kept: get(export, " traces and dropped"),
        // "... kept 589 traces and dropped 0; 16 windows ..."
        traces_dropped: get(export, "; "),
        windows_exported: get(export, " windows and"),
        spans_exported: get(export, " spans exported"),
        spans_dropped: get(export, " spans dropped"),
    }
}

/// Runs the demo for `duration` (e.g. `"6s"`), exporting over OTLP/gRPC to
/// `otlp_endpoint` (`http://127.0.0.1:PORT`) with the recorder's own tail
/// sampling off, and waits for it to exit. Inherited `OTEL_*` and
/// `BLACKBOX_*` variables are removed, so the run depends only on what is
/// set here. Panics, with the demo's output, if it fails or hangs.
pub fn run_demo(otlp_endpoint: &str, duration: &str) -> DemoRun {
    let exe = demo_exe();
    let dir = TempDir::new("demo");
    let mut cmd = Command::new(&exe);
    cmd.args(["--duration", duration])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("OTEL_") || k_str.starts_with("BLACKBOX_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", SERVICE)
        .env("BLACKBOX_BASELINE_RATIO", "1")
        // This debug build's windows cost ~10 times a release build's: the
        // default 2% would shed some, and these tests read the windows.
        .env("BLACKBOX_CPU_BUDGET", "100%")
        .env("BLACKBOX_LATENCY_THRESHOLD", format!("{THRESHOLD_MS}ms"))
        .env("BLACKBOX_DIR", dir.path().join("blackbox"));
    let limit = tokio_blackbox::parse_duration(duration)
        .unwrap_or_else(|| panic!("run_demo: bad duration {duration:?}"))
        + DEMO_GRACE;
    let started = Instant::now();
    eprintln!(
        "running {} --duration {duration} with OTEL_EXPORTER_OTLP_ENDPOINT={otlp_endpoint} OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
         BLACKBOX_BASELINE_RATIO=1",
        exe.display()
    );
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the demo {}: {e}", exe.display()));
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exited = Instant::now();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "the demo did not exit within {limit:?} (--duration {duration}); killed it.\n\
             stdout:\n{stdout}\nstderr:\n{}",
            tail(&stderr, 4000)
        );
    };
    assert!(
        status.success(),
        "the demo failed ({status}).\nstdout:\n{stdout}\nstderr:\n{}",
        tail(&stderr, 4000)
    );
    let stats = parse_stats(&stdout);
    assert!(
        stdout.contains("task hooks: on"),
        "the demo ran without task hooks (built without --cfg tokio_unstable? \
         .cargo/config.toml sets it unless RUSTFLAGS overrides it): its windows have no task \
         spans. Its output:\n{stdout}"
    );
    let took = exited - started;
    eprintln!("demo exited after {took:.1?}:\n{}", stdout.trim_end());
    DemoRun {
        stdout,
        stderr,
        stats,
        exited,
        took,
    }
}

/// The line of the blocking neighbour's `tokio::spawn` in examples/demo.rs
/// (its spawn location, which the task span carries).
pub fn neighbour_line() -> u64 {
    const NEEDLE: &str = "tokio::spawn(async { std::thread::sleep(";
    let path = repo_root().join("examples").join("demo.rs");
    let src =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let lines: Vec<usize> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(NEEDLE))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "examples/demo.rs should spawn its blocking neighbour on exactly one line containing \
         `{NEEDLE}`; found {lines:?}. Update tests/support/demo.rs if the demo changed."
    );
    lines[0] as u64
}

// ---------------------------------------------------------------------------
// Reading Jaeger

fn ns(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

fn int_attr(span: &Value, key: &str) -> Option<i64> {
    let v = &span_attr(span, key)?["intValue"];
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

fn str_attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span_attr(span, key)?["stringValue"].as_str()
}

fn bool_attr(span: &Value, key: &str) -> bool {
    span_attr(span, key).is_some_and(|v| v["boolValue"] == true)
}

fn span_ms(span: &Value) -> f64 {
    ns(&span["endTimeUnixNano"]).saturating_sub(ns(&span["startTimeUnixNano"])) as f64 / 1e6
}

fn parent(span: &Value) -> &str {
    span["parentSpanId"].as_str().unwrap_or("")
}

fn name(span: &Value) -> &str {
    span["name"].as_str().unwrap_or("")
}

/// Jaeger's search answer (`/api/traces`) as (trace id, spans) pairs.
fn search_traces(found: &Value) -> Vec<(String, &Vec<Value>)> {
    found["data"]
        .as_array()
        .unwrap_or_else(|| panic!("search answer without data: {found}"))
        .iter()
        .filter_map(|t| {
            Some((
                t["traceID"].as_str()?.to_lowercase(),
                t["spans"].as_array()?,
            ))
        })
        .collect()
}

/// A Jaeger-JSON span's tag value.
fn jaeger_tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

/// All traces of the demo Jaeger holds.
fn all_demo_traces(jaeger: &Jaeger) -> Value {
    jaeger.search_limit(SERVICE, "", "1h", 100_000)
}

/// Waits until the Collector has decided every trace of the run and Jaeger
/// has stored what it kept: at least `decision_wait` + 2.5 s after the demo
/// exited (tail_sampling decides once a second, then batch and Jaeger's own
/// batch), then until the number of spans Jaeger holds stops changing.
pub fn wait_settled(jaeger: &Jaeger, run: &DemoRun, decision_wait: Duration) {
    let earliest = run.exited + decision_wait + Duration::from_millis(2500);
    if let Some(d) = earliest.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let found = all_demo_traces(jaeger);
        let traces = search_traces(&found);
        let spans: usize = traces.iter().map(|(_, s)| s.len()).sum();
        let now = (traces.len(), spans);
        if spans > 0 && last == Some(now) {
            eprintln!(
                "jaeger settled at {} traces, {} spans of {SERVICE}",
                now.0, now.1
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jaeger at {} did not settle within 20 s after decision_wait ({} traces, {} spans \
             of {SERVICE}; last {last:?}). Nothing at all means the demo's spans never got \
             through the Collector(s): see their logs below.\ndemo stdout:\n{}",
            jaeger.query_url(),
            now.0,
            now.1,
            run.stdout
        );
        last = Some(now);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What [`check_jaeger`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Traces Jaeger holds for the demo.
    pub traces: usize,
    /// Spans in those traces.
    pub all_spans: usize,
    /// Traces found by `minDuration = threshold`.
    pub slow_traces: usize,
    /// Slow traces with their own `blackbox.window`.
    pub windows: usize,
    /// Slow traces with a `blackbox.window.ref` to another one's window.
    pub refs: usize,
    /// Slow traces with neither (capture skipped by the cap).
    pub bare: usize,
    /// Spans in the slow traces.
    pub spans: usize,
    /// Kept traces by request path.
    pub by_path: BTreeMap<String, usize>,
}

/// Checks what Jaeger holds after a demo run through Collectors with the
/// `tail_sampling` of collector-config/ (baseline 0 %, slow threshold
/// [`THRESHOLD_MS`]):
///
/// - every trace it holds is a slow request's (root ≥ threshold) or carries
///   `blackbox.captured = true`, and there are far fewer traces than requests
///   served: the fast ones were dropped;
/// - every slow trace (`minDuration`) is whole: one root, the `request`
///   span; every other span's parent is in the trace; under the request a
///   `blackbox.window` (or a `blackbox.window.ref` whose link leads to a
///   window in Jaeger) whose task spans number `blackbox.window.tasks_shown`,
///   each with `blackbox.task.polls_shown` polls, plus worker spans;
/// - some window shows the blocking neighbour: its spawn location in
///   examples/demo.rs and a poll flagged `blackbox.poll.long`.
///
/// Prints every trace id checked with its Jaeger URL.
pub fn check_jaeger(jaeger: &Jaeger, run: &DemoRun) -> Checked {
    let stats = run.stats;
    let threshold_us = THRESHOLD_MS * 1000;
    let mut checked = Checked::default();
    let ui = |id: &str| format!("{}/trace/{id}", jaeger.query_url());

    assert!(
        stats.served >= 100,
        "the demo served only {} requests: {stats:?}",
        stats.served
    );
    assert!(
        stats.slow >= 3,
        "the demo had too few slow requests: {stats:?}"
    );
    assert_eq!(
        (stats.traces_kept, stats.traces_dropped),
        (stats.served, 0),
        "with BLACKBOX_BASELINE_RATIO=1 the demo should export every request's trace: {stats:?}"
    );
    assert!(
        stats.windows_exported >= 1 && stats.spans_dropped == 0,
        "the demo's recorder should have exported its windows without dropping spans: {stats:?}"
    );

    // 1. Everything Jaeger holds: slow or captured, nothing else.
    let all = all_demo_traces(jaeger);
    let all = search_traces(&all);
    checked.traces = all.len();
    checked.all_spans = all.iter().map(|(_, s)| s.len()).sum();
    let mut fast_kept = Vec::new();
    for (id, spans) in &all {
        let roots: Vec<&Value> = spans
            .iter()
            .filter(|s| {
                !s["references"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["refType"] == "CHILD_OF"))
            })
            .collect();
        let root_us = roots.iter().filter_map(|r| r["duration"].as_u64()).max();
        let captured = spans
            .iter()
            .any(|s| jaeger_tag(s, "blackbox.captured") == Some(&Value::Bool(true)));
        let path = roots
            .iter()
            .find_map(|r| jaeger_tag(r, "path").and_then(Value::as_str))
            .unwrap_or("?")
            .to_string();
        *checked.by_path.entry(path.clone()).or_default() += 1;
        if !captured && root_us.is_none_or(|d| d < threshold_us) {
            fast_kept.push(format!(
                "{} ({path}, root {:?} µs, {} spans)",
                ui(id),
                root_us,
                spans.len()
            ));
        }
    }
    assert!(
        fast_kept.is_empty(),
        "the Collector kept {} traces that are neither slow (≥ {THRESHOLD_MS} ms) nor \
         captured, e.g. {:#?}",
        fast_kept.len(),
        &fast_kept[..fast_kept.len().min(10)]
    );
    println!(
        "jaeger holds {} traces of {SERVICE} for {} requests served ({} slow); by path: {:?}",
        checked.traces, stats.served, stats.slow, checked.by_path
    );
    assert!(
        checked.traces * 5 <= stats.served as usize,
        "jaeger holds {} traces for {} requests served: the fast ones were not dropped",
        checked.traces,
        stats.served
    );
    assert!(
        checked.traces as u64 <= stats.slow + 2,
        "jaeger holds {} traces, more than the {} slow requests the demo counted",
        checked.traces,
        stats.slow
    );

    // 2. The slow traces, whole.
    let slow = jaeger.search_limit(SERVICE, &format!("{THRESHOLD_MS}ms"), "1h", 10_000);
    let slow_ids: Vec<String> = search_traces(&slow).into_iter().map(|(id, _)| id).collect();
    checked.slow_traces = slow_ids.len();
    assert!(
        !slow_ids.is_empty(),
        "no trace of {SERVICE} with minDuration={THRESHOLD_MS}ms in jaeger ({}); demo: {stats:?}",
        jaeger.query_url()
    );
    assert!(
        (slow_ids.len() as u64) + 2 >= stats.slow,
        "the demo had {} slow requests but jaeger has only {} slow traces: some were lost on \
         the way",
        stats.slow,
        slow_ids.len()
    );
    let neighbour_line = neighbour_line() as i64;
    let mut neighbour_seen: Option<(String, f64)> = None;
    let mut traces: HashMap<String, Value> = HashMap::new();
    for id in &slow_ids {
        let t = jaeger
            .trace(id)
            .unwrap_or_else(|| panic!("search found {id} but /api/v3/traces/{id} has nothing"));
        traces.insert(id.clone(), t);
    }
    let mut problems: Vec<String> = Vec::new();
    for id in &slow_ids {
        let trace = &traces[id];
        let spans = otlp_spans(trace);
        checked.spans += spans.len();
        let by_id: HashSet<&str> = spans.iter().filter_map(|s| s["spanId"].as_str()).collect();
        let children = |p: &Value| -> Vec<&Value> {
            spans
                .iter()
                .copied()
                .filter(|s| parent(s) == p["spanId"].as_str().unwrap_or("-"))
                .collect()
        };
        let mut problem = |what: String| problems.push(format!("{}: {what}", ui(id)));

        let roots: Vec<&Value> = spans
            .iter()
            .copied()
            .filter(|s| parent(s).is_empty())
            .collect();
        let orphans: Vec<String> = spans
            .iter()
            .filter(|s| !parent(s).is_empty() && !by_id.contains(parent(s)))
            .map(|s| format!("{} (parent {})", name(s), parent(s)))
            .collect();
        if !orphans.is_empty() {
            problem(format!(
                "{} spans whose parent is not in the trace: {:?}",
                orphans.len(),
                &orphans[..orphans.len().min(10)]
            ));
        }
        let [request] = roots[..] else {
            problem(format!(
                "expected one root span (the request), found {:?}",
                roots.iter().map(|r| name(r)).collect::<Vec<_>>()
            ));
            continue;
        };
        if name(request) != "request" {
            problem(format!(
                "the root is {:?}, not the request span",
                name(request)
            ));
        }
        let request_ms = span_ms(request);
        // (1 ms of slack: the recorder and the OpenTelemetry layer read
        // their clocks a few microseconds apart.)
        if request_ms < THRESHOLD_MS as f64 - 1.0 {
            problem(format!(
                "the request lasted {request_ms:.1} ms, under the threshold"
            ));
        }
        let under = children(request);
        let path = str_attr(request, "path").unwrap_or("?");
        if let Some(window) = under.iter().find(|s| name(s) == "blackbox.window") {
            checked.windows += 1;
            if !bool_attr(window, "blackbox.captured") {
                problem("the window lacks blackbox.captured = true".into());
            }
            let in_window = children(window);
            let tasks: Vec<&Value> = in_window
                .iter()
                .copied()
                .filter(|s| span_attr(s, "tokio.task.id").is_some())
                .collect();
            let workers = in_window
                .iter()
                .filter(|s| name(s).starts_with("worker "))
                .count();
            let shown = int_attr(window, "blackbox.window.tasks_shown");
            if shown != Some(tasks.len() as i64) {
                problem(format!(
                    "the window says tasks_shown = {shown:?} but {} task spans are under it",
                    tasks.len()
                ));
            }
            if tasks.is_empty() || workers == 0 {
                problem(format!(
                    "the window has {} task spans and {workers} worker spans",
                    tasks.len()
                ));
            }
            let mut polls = 0;
            for task in &tasks {
                let mine = children(task);
                polls += mine.len();
                let shown = int_attr(task, "blackbox.task.polls_shown");
                if shown != Some(mine.len() as i64) {
                    problem(format!(
                        "task {:?} says polls_shown = {shown:?} but has {} polls under it",
                        name(task),
                        mine.len()
                    ));
                }
                let at_neighbour = str_attr(task, "code.file.path")
                    .is_some_and(|f| f.ends_with("examples/demo.rs"))
                    && int_attr(task, "code.line.number") == Some(neighbour_line);
                let longest_long_poll = mine
                    .iter()
                    .filter(|p| bool_attr(p, "blackbox.poll.long"))
                    .map(|p| span_ms(p))
                    .reduce(f64::max);
                if let Some(long) = longest_long_poll.filter(|_| at_neighbour)
                    && neighbour_seen.as_ref().is_none_or(|(_, ms)| long > *ms)
                {
                    neighbour_seen = Some((id.clone(), long));
                }
            }
            println!(
                "slow trace {id} ({path}, {request_ms:.0} ms): request > blackbox.window > {} \
                 tasks, {polls} polls, {workers} workers; {} spans: {}",
                tasks.len(),
                spans.len(),
                ui(id)
            );
        } else if let Some(r) = under.iter().find(|s| name(s) == "blackbox.window.ref") {
            checked.refs += 1;
            let link = &r["links"][0];
            let other = link["traceId"].as_str().unwrap_or("").to_lowercase();
            let target = traces.get(&other).cloned().or_else(|| jaeger.trace(&other));
            let found = target.as_ref().is_some_and(|t| {
                otlp_spans(t)
                    .iter()
                    .any(|s| name(s) == "blackbox.window" && s["spanId"] == link["spanId"])
            });
            if !found {
                problem(format!(
                    "its blackbox.window.ref links to window {} in trace {other}, which is not \
                     in jaeger",
                    link["spanId"]
                ));
            }
            println!(
                "slow trace {id} ({path}, {request_ms:.0} ms): request > blackbox.window.ref \
                 -> window in {other}; {} spans: {}",
                spans.len(),
                ui(id)
            );
        } else {
            checked.bare += 1;
            println!(
                "slow trace {id} ({path}, {request_ms:.0} ms): no window (capture cap); {} \
                 spans: {}",
                spans.len(),
                ui(id)
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in the slow traces:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        checked.windows >= 1,
        "no slow trace has its own blackbox.window"
    );
    assert!(
        checked.bare as u64 <= stats.skipped + stats.shed,
        "{} slow traces have neither a window nor a window.ref, but the demo skipped only {} \
         captures (and shed {}): windows were lost",
        checked.bare,
        stats.skipped,
        stats.shed
    );
    let (nid, long_ms) = neighbour_seen.unwrap_or_else(|| {
        panic!(
            "no window shows the blocking neighbour (a task spawned at examples/demo.rs:\
             {neighbour_line} with a poll flagged blackbox.poll.long) in the {} slow traces",
            slow_ids.len()
        )
    });
    assert!(
        long_ms >= 200.0,
        "the neighbour's longest poll in any window lasted only {long_ms:.1} ms (it sleeps \
         250 ms)"
    );
    println!(
        "the blocking neighbour (examples/demo.rs:{neighbour_line}) with a {long_ms:.0} ms long \
         poll: {}",
        ui(&nid)
    );
    println!(
        "checked {} slow traces ({} windows, {} refs, {} without), {} spans; search: {}/search?\
         service={SERVICE}&minDuration={THRESHOLD_MS}ms",
        checked.slow_traces,
        checked.windows,
        checked.refs,
        checked.bare,
        checked.spans,
        jaeger.query_url()
    );
    checked
}

/// Every span the demo exported for the traces the Collector(s) kept is in
/// Jaeger, none missing and none twice: Jaeger holds exactly the demo's
/// exported spans less one per dropped trace (a fast request's trace is its
/// request span alone).
pub fn assert_kept_traces_whole(run: &DemoRun, checked: &Checked, not_sampled: f64) {
    let expected = run.stats.spans_exported as i64 - not_sampled as i64;
    assert_eq!(
        checked.all_spans as i64, expected,
        "jaeger holds {} spans of {} kept traces; the demo exported {} spans and the \
         Collector(s) dropped {not_sampled} single-span traces, which leaves {expected}: \
         spans were lost or duplicated on the way",
        checked.all_spans, checked.traces, run.stats.spans_exported
    );
    println!(
        "all {expected} spans of the {} kept traces arrived ({} exported by the demo, {not_sampled} \
         dropped with their fast traces)",
        checked.traces, run.stats.spans_exported
    );
}

/// Environment for the sampling configs (otelcol.yaml and the tail-sampling
/// tier): exporters at `jaeger` and `tempo_stand_in`, no random baseline,
/// the demo's threshold, a short decision_wait.
pub fn sampling_env(
    jaeger: &Jaeger,
    tempo_stand_in: &Jaeger,
    decision_wait: Duration,
) -> Vec<(String, String)> {
    vec![
        (
            "OTELCOL_JAEGER_ENDPOINT".into(),
            jaeger.otlp_grpc_hostport(),
        ),
        (
            "OTELCOL_TEMPO_ENDPOINT".into(),
            tempo_stand_in.otlp_grpc_hostport(),
        ),
        (
            "OTELCOL_DECISION_WAIT".into(),
            format!("{}ms", decision_wait.as_millis()),
        ),
        ("OTELCOL_BASELINE_PERCENT".into(), "0".into()),
        (
            "OTELCOL_LATENCY_THRESHOLD_MS".into(),
            THRESHOLD_MS.to_string(),
        ),
        ("OTELCOL_BATCH_TIMEOUT".into(), "200ms".into()),
        ("OTELCOL_EXPECTED_NEW_TRACES_PER_SEC".into(), "1000".into()),
    ]
}

pub fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The sum of a Prometheus metric's samples in `metrics` (text format)
/// whose labels contain `label` (e.g. `decision="sampled"`; `""` for all).
pub fn metric_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with('{') || rest.starts_with(' ')) && rest.contains(label)
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a sampling Collector's tail_sampling did, from its own metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled {
    /// Traces it saw (`new_trace_id_received`).
    pub traces: f64,
    pub sampled: f64,
    pub not_sampled: f64,
}

pub fn tail_sampling_counts(metrics: &str) -> Sampled {
    const PREFIX: &str = "otelcol_processor_tail_sampling_";
    let global = format!("{PREFIX}global_count_traces_sampled");
    Sampled {
        traces: metric_sum(metrics, &format!("{PREFIX}new_trace_id_received"), ""),
        sampled: metric_sum(metrics, &global, "decision=\"sampled\""),
        not_sampled: metric_sum(metrics, &global, "decision=\"not_sampled\""),
    }
}
