//! The `blackbox` command on crafted OTLP JSON files made to cost memory
//! out of all proportion to their size (issue 27, finding 10). Each child's
//! own peak RSS is read with `wait4`, and each runs under an address-space
//! limit well above the bound asserted, so code that grows without bound
//! fails fast instead of taking gigabytes from a shared machine.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The address space a child may map: reading any of these files in
/// bounded memory stays far below it.
const AS_LIMIT: u64 = 1 << 30;

/// The peak RSS asserted.
const RSS_BOUND: u64 = 200 << 20;

/// What a finished child said, with its exit status and peak RSS.
struct Run {
    status: libc::c_int,
    stdout: String,
    stderr: String,
    max_rss: u64,
}

impl Run {
    fn ok(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

/// Runs `blackbox args` under [`AS_LIMIT`]; its output goes to files (no
/// pipe to drain while waiting).
fn blackbox(args: &[&str]) -> Run {
    let mut out = tempfile::tempfile().expect("stdout file");
    let mut err = tempfile::tempfile().expect("stderr file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blackbox"));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"));
    // SAFETY: setrlimit is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped by wait4 below, for its own rusage: `Child::wait` would not give it.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("run blackbox");
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage; wait4 writes it and the status.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child; the pointers are valid.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let text = |f: &mut File| {
        let mut s = String::new();
        f.rewind().expect("rewind");
        f.read_to_string(&mut s).expect("read output");
        s
    };
    Run {
        status,
        stdout: text(&mut out),
        stderr: text(&mut err),
        max_rss: usage.ru_maxrss as u64 * 1024,
    }
}

fn check(what: &str, run: &Run) {
    eprintln!(
        "{what}: status {:#x}, peak RSS {} MiB",
        run.status,
        run.max_rss >> 20
    );
    assert!(
        run.ok(),
        "{what}: status {:#x} (peak RSS {} MiB)\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.max_rss >> 20,
        run.stdout,
        run.stderr
    );
    assert!(
        run.max_rss < RSS_BOUND,
        "{what}: a child held {} MiB",
        run.max_rss >> 20
    );
}

/// One window span (its own trace, 1 s long, starting at `start_s`) with a
/// task whose spawn location is `file`.
fn window_line(f: &mut impl Write, i: u64, start_s: u64, file: &str) {
    let start = start_s * 1_000_000_000;
    writeln!(
        f,
        concat!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":["#,
            r#"{{"traceId":"{t:032x}","spanId":"{w:016x}","name":"blackbox.window","#,
            r#""startTimeUnixNano":"{s}","endTimeUnixNano":"{e}"}},"#,
            r#"{{"traceId":"{t:032x}","spanId":"{k:016x}","parentSpanId":"{w:016x}","name":"task 1","#,
            r#""startTimeUnixNano":"{s}","endTimeUnixNano":"{e}","attributes":["#,
            r#"{{"key":"tokio.task.id","value":{{"intValue":"1"}}}},"#,
            r#"{{"key":"code.file.path","value":{{"stringValue":"{file}"}}}},"#,
            r#"{{"key":"code.line.number","value":{{"intValue":"1"}}}}]}}"#,
            r#"]}}]}}]}}"#
        ),
        t = i + 1,
        w = 2 * i + 1,
        k = 2 * i + 2,
        s = start,
        e = start + 1_000_000,
        file = file,
    )
    .expect("write");
}

/// Every window of a file carried a copy of the file's whole string table
/// as it stood then: N windows with a new location each held N²/2 strings.
/// Here 2,000 disjoint windows, each with its own 1 KiB location (a 3 MB
/// file), made about 2 GB of copies.
#[test]
fn windows_do_not_each_copy_the_files_string_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many-strings.otlp.jsonl");
    {
        let mut f = BufWriter::new(File::create(&path).expect("create"));
        for i in 0..2_000u64 {
            let file = format!("src/{i:04}/{}.rs", "x".repeat(1024));
            window_line(&mut f, i, 10 + 2 * i, &file);
        }
        f.flush().expect("flush");
    }
    let file = path.to_str().expect("utf-8 path");
    let run = blackbox(&["summary", file]);
    check("summary of 2,000 windows with a location each", &run);
    assert!(
        run.stdout.contains("OTLP JSON, 2000 windows"),
        "{}",
        run.stdout
    );
    check(
        "perfetto of the same",
        &blackbox(&[
            "perfetto",
            file,
            "-o",
            dir.path().join("t.json").to_str().unwrap(),
        ]),
    );
}
/// A line of the largest size read (64 MiB) made of empty spans parsed
/// into ~22 M `Span` structs of 264 bytes: ~6 GB for one line. A line
/// that holds far more JSON objects than the recorder ever writes in one
/// request is skipped as a bad line, before it is parsed.
#[test]
fn a_line_of_millions_of_empty_spans_is_skipped_unparsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty-spans.otlp.jsonl");
    let mut len;
    {
        let mut f = BufWriter::new(File::create(&path).expect("create"));
        window_line(&mut f, 0, 10, "src/main.rs");
        let head = br#"{"resourceSpans":[{"scopeSpans":[{"spans":["#;
        let tail = b"{}]}]}]}\n";
        f.write_all(head).expect("write");
        len = head.len() + tail.len();
        let chunk = b"{},".repeat(1 << 16);
        while len + chunk.len() < (64 << 20) - 16 {
            f.write_all(&chunk).expect("write");
            len += chunk.len();
        }
        f.write_all(tail).expect("write");
        f.flush().expect("flush");
    }
    assert!(len > 60 << 20 && len < 64 << 20, "{len}");
    let file = path.to_str().expect("utf-8 path");
    let run = blackbox(&["summary", file]);
    check("summary with a 64 MiB line of empty spans", &run);
    assert!(
        run.stderr.contains("skipped 1 line") && run.stderr.contains("line 2 (byte "),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("OTLP JSON, 1 window"), "{}", run.stdout);
    std::fs::remove_file(Path::new(&path)).expect("remove");
}
