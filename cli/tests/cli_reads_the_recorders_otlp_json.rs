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
fn a_crafted_file_with_a_huge_line_is_refused_in_bounded_memory() {
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
    for cmd in ["summary", "timeline"] {
        let out = blackbox(&[cmd, file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains(&format!("{file}: line 2 (byte 21)")) && stderr.contains("64 MiB"),
            "{cmd}: {stderr}"
        );
    }
    let out = blackbox(&["replay", file, "--endpoint", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let rss = children_max_rss();
    eprintln!("a 300 MiB line: refused, peak child RSS {} MiB", rss >> 20);
    assert!(rss < 200 << 20, "a child held {} MiB", rss >> 20);
}
