//! Issue 27, finding 7: one torn line lost a whole OTLP JSON file. When an
//! append fails part-way (a full disk), the part written stayed without its
//! newline, the retry (as for a network error) found the disk still full,
//! and the next window's line was glued to the torn one. Now the part
//! written is cut off again, a file error is not retried, and the file holds
//! whole lines only.
//!
//! A full disk is made real with the process's file size limit
//! (`RLIMIT_FSIZE`, SIGXFSZ ignored): past it `write` writes what fits and
//! then fails with EFBIG, as it fails with ENOSPC on a full disk. The limit
//! is the process's, so this is a test binary of its own, one test.

#![cfg(target_os = "linux")]

use std::time::Duration;
use tokio_blackbox::Blackbox;
use tracing_subscriber::layer::SubscriberExt;

fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a stack value this function owns.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[test]
fn a_failed_append_leaves_whole_lines_and_is_not_retried() {
    // SAFETY: ignoring a signal; no handler of ours runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(10))
        .window(Duration::from_millis(20), Duration::from_millis(5))
        .with_env(move |name| match name {
            "BLACKBOX_DIR" => Some(dir_s.clone()),
            _ => None,
        })
        .build()
        .expect("build");
    let file = dir.path().join("traces.otlp.jsonl");
    let sub = tracing_subscriber::registry().with(blackbox.layer());
    let slow_request = || {
        {
            let _span = tracing::info_span!("request").entered();
            std::thread::sleep(Duration::from_millis(15));
        }
        // Each its own capture.
        std::thread::sleep(Duration::from_millis(300));
        assert!(blackbox.flush(Duration::from_secs(20)), "flush in time");
    };
    tracing::subscriber::with_default(sub, || {
        slow_request();
        let first = std::fs::metadata(&file).expect("the first window").len();
        assert!(first > 1000, "{first}");

        // The disk fills: 64 bytes left, far less than a window's line.
        set_file_size_limit(first + 64);
        slow_request();
        let s = blackbox.stats();
        assert_eq!(s.windows_written, 2, "{s:?}");
        assert_eq!(s.windows_exported, 1, "{s:?}");
        assert_eq!(s.export_windows_dropped, 1, "{s:?}");
        assert_eq!(s.export_retries, 0, "a file error is not retried: {s:?}");
        let len = std::fs::metadata(&file).expect("file").len();
        assert_eq!(
            len, first,
            "the part of the line that fitted was left in the file"
        );

        // Room again: the next window is a line of its own.
        set_file_size_limit(libc::RLIM_INFINITY);
        slow_request();
    });
    drop(guard);
    let text = std::fs::read_to_string(&file).expect("the file");
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{} lines", lines.len());
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {} is torn: {e}", i + 1));
        assert!(v.get("resourceSpans").is_some());
        assert!(line.contains("\"blackbox.window\""));
    }
}
