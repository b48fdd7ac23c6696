//! The `blackbox` command on a real `traces.otlp.jsonl`: a service with the
//! recorder and no OTLP endpoint writes its captures (and the tail sampler's
//! kept traces) as OTLP JSON lines; every subcommand reads the file, finds
//! both slow requests under their trace ids, the request's own tasks and the
//! blocking neighbour's long polls.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};
use std::time::Duration;
use support::peers::http_get;
use support::service::{NEIGHBOUR_LINE, TestService};
use tokio_blackbox::Blackbox;

fn blackbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blackbox"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run blackbox")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_subcommand_reads_the_recorders_json_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = Blackbox::builder()
        .latency_threshold(Duration::from_millis(250))
        .window(Duration::from_millis(300), Duration::from_millis(50))
        .with_env({
            let dir = dir.path().to_string_lossy().into_owned();
            move |var| (var == "BLACKBOX_DIR").then(|| dir.clone())
        });
    let mut svc = TestService::start(builder);
    std::thread::sleep(Duration::from_millis(300)); // the neighbour has run
    let a = http_get(&svc.url("/slow")).expect("slow").body;
    let _ = http_get(&svc.url("/fast")).expect("fast");
    std::thread::sleep(Duration::from_millis(600)); // a second, separate window
    let b = http_get(&svc.url("/slow")).expect("slow").body;
    assert!(svc.blackbox.flush(Duration::from_secs(10)));
    svc.stop();

    let path = dir.path().join("traces.otlp.jsonl");
    let file = path.to_str().unwrap();
    let summary = ok(blackbox(&["summary", file]));
    assert!(
        summary.contains("kind      OTLP JSON, 2 windows"),
        "{summary}"
    );
    for trace in [&a, &b] {
        assert!(summary.contains(trace.trim()), "{trace} in:\n{summary}");
    }
    assert!(summary.contains("the request's own task"), "{summary}");
    let neighbour = format!(
        ":{}:",
        NEIGHBOUR_LINE.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains(&neighbour) && l.contains("long")),
        "the neighbour's long polls:\n{summary}"
    );

    let timeline = ok(blackbox(&[
        "timeline",
        file,
        "--trace",
        b.trim(),
        "--width",
        "80",
    ]));
    assert!(timeline.contains(b.trim()), "{timeline}");
    assert!(timeline.contains('#'), "a long poll drawn:\n{timeline}");

    let out = dir.path().join("page.html");
    ok(blackbox(&["html", file, "-o", out.to_str().unwrap()]));
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);
    let out = dir.path().join("trace.json");
    ok(blackbox(&["perfetto", file, "-o", out.to_str().unwrap()]));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("perfetto JSON");
    assert!(v.to_string().contains("\"ph\":\"X\""), "poll slices");
}

/// Peak resident memory of the finished children of this process, bytes.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_crafted_file_with_a_huge_line_is_read_past_in_bounded_memory() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge-line.otlp.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        f.write_all(b"{\"resourceSpans\":[]}\n{\"resourceSpans\":[")
            .expect("write");
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..300 {
            f.write_all(&chunk).expect("write");
        }
        f.flush().expect("flush");
    }
    let file = path.to_str().expect("utf-8 path");
    // The huge line is skipped (reported, never held); the good line is read.
    let said = |stderr: &str| {
        stderr.contains(&format!("{file}: skipped 1 line"))
            && stderr.contains("line 2 (byte 21)")
            && stderr.contains("64 MiB")
    };
    for cmd in ["summary", "timeline"] {
        let out = blackbox(&[cmd, file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // (The good line holds no window: a timeline of nothing is refused.)
        let code = if cmd == "summary" { 0 } else { 2 };
        assert_eq!(out.status.code(), Some(code), "{cmd}: {stderr}");
        assert!(said(&stderr), "{cmd}: {stderr}");
    }
    // Nobody listens there: the skipped line is said before the connection fails.
    let out = blackbox(&["replay", file, "--endpoint", "http://127.0.0.1:9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(said(&stderr), "{stderr}");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let rss = children_max_rss();
    eprintln!("a 300 MiB line: skipped, peak child RSS {} MiB", rss >> 20);
    assert!(rss < 200 << 20, "a child held {} MiB", rss >> 20);
}

/// The debug build of `examples/demo.rs` (same cargo and target directory),
/// built on first use from the repository root so `.cargo/config.toml`
/// applies (`tokio_unstable`).
fn demo_exe() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(env!("CARGO"));
    // Variables cargo sets for this test would make the nested build see a
    // different environment (and rebuild build scripts that watch them).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd
        .current_dir(&root)
        .args([
            "build",
            "--example",
            "demo",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cargo build --example demo");
    assert!(out.status.success(), "building the demo failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "demo")
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .expect("the demo's executable in cargo's messages")
}

/// A duration as the command prints it (`250.3ms`, `762.4us`, `3.9s`, `0ns`), in ns.
fn parse_dur(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// The README's first suggestion after the demo, on a real 10 s run: the
/// recorder's JSON (many overlapping windows) reads as one lane per
/// thread, each poll once, and what a slow request's summary says about
/// the tasks that held workers is measured within that request.
#[test]
fn a_demo_runs_json_reads_as_one_timeline_per_thread() {
    let exe = demo_exe();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&exe)
        .args(["--duration", "10s"])
        .current_dir(dir.path())
        .env("BLACKBOX_DIR", dir.path())
        // The whole picture (the default budget before issue 25): joining
        // overlapping windows gives back a poll cut at one window's edge
        // only when the next window shows that task too. With the default
        // 200 spans, about 2.5% of the polls stay cut: the next window
        // left their task out, and counted it.
        .env("BLACKBOX_MAX_SPANS_PER_WINDOW", "1000")
        // A debug build's windows cost ~10 times a release build's: the
        // default 2% would shed some, and this test joins them all.
        .env("BLACKBOX_CPU_BUDGET", "100%")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .expect("run the demo");
    assert!(out.status.success(), "demo: {out:?}");
    let path = dir.path().join("traces.otlp.jsonl");
    let file = path.to_str().expect("utf-8 path");

    let summary = ok(blackbox(&["summary", file]));
    let windows: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("kind      OTLP JSON, "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the window count");
    assert!(
        windows > 3,
        "a 10 s demo cuts overlapping windows:\n{summary}"
    );
    assert!(!summary.contains("(window"), "{summary}");
    // The headline: a verdict on each of the slowest requests, with its shares.
    assert!(
        summary.contains("\nverdicts  the 5 slowest requests\n"),
        "{summary}"
    );
    assert_eq!(summary.matches("): own_cpu ").count(), 5, "{summary}");

    // One lane per thread: each lane index once, and no more lanes than
    // the demo has threads that record (two workers and the main thread).
    let threads: Vec<&str> = summary
        .lines()
        .skip_while(|l| *l != "threads")
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    let lanes: Vec<&str> = threads
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut unique = lanes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), lanes.len(), "a lane twice:\n{summary}");
    assert!(
        (2..=4).contains(&lanes.len()),
        "{} lanes:\n{summary}",
        lanes.len()
    );

    // Each poll once: on every thread the polls follow one another, none
    // shown twice or overlapping another (the windows repeat them), and
    // none is cut where one window ended and the next went on.
    let out = dir.path().join("trace.json");
    ok(blackbox(&["perfetto", file, "-o", out.to_str().unwrap()]));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("perfetto JSON");
    let mut by_lane: std::collections::BTreeMap<u64, Vec<(f64, f64, u64, bool)>> =
        Default::default();
    for e in v["traceEvents"].as_array().expect("events") {
        if e["cat"] == "poll" {
            by_lane
                .entry(e["tid"].as_u64().unwrap())
                .or_default()
                .push((
                    e["ts"].as_f64().unwrap(),
                    e["dur"].as_f64().unwrap(),
                    e["args"]["task"].as_u64().unwrap(),
                    e["args"]["complete"].as_bool().unwrap(),
                ));
        }
    }
    let polls: usize = by_lane.values().map(Vec::len).sum();
    assert!(polls > 1000, "{polls} polls");
    let mut cut = 0;
    for (lane, polls) in &mut by_lane {
        polls.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in polls.windows(2) {
            let ((s0, d0, t0, _), (s1, _, t1, _)) = (w[0], w[1]);
            // Microseconds; a nanosecond of rounding allowed.
            assert!(
                s0 + d0 <= s1 + 0.001,
                "lane {lane}: task {t0}'s poll at {s0}us ({d0}us) overlaps task {t1}'s at {s1}us"
            );
        }
        cut += polls.iter().filter(|p| !p.3).count();
    }
    assert!(
        cut * 100 <= polls,
        "{cut} of {polls} polls cut: windows were not joined"
    );

    // Per request: what the tasks held is within the request's duration.
    let mut requests = 0;
    let mut duration = None;
    for line in summary.lines().skip_while(|l| !l.starts_with("requests")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(1) == Some(&"trace") {
            duration = words.get(3).and_then(|d| parse_dur(d));
            requests += 1;
            continue;
        }
        let (Some(limit), Some(held)) = (duration, words.get(2).and_then(|d| parse_dur(d))) else {
            continue;
        };
        if words.first().is_some_and(|w| w.parse::<u64>().is_ok()) {
            assert!(
                held <= limit * 1.001 + 100.0,
                "a task held {held} ns during a {limit} ns request:\n{line}\n{summary}"
            );
        }
    }
    assert!(requests > 3, "slow requests in the summary:\n{summary}");
}
