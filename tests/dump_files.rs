//! Dump files: a real runtime's rings round-trip through a file, the file is
//! private to its owner, and truncated, garbage and future-version input is
//! rejected with the byte offset, never a panic (arbitrary bytes:
//! `dump_readers_never_panic.rs`).

use std::time::Duration;
use tokio_blackbox::dump::{self, FORMAT_VERSION, FileKind};
use tokio_blackbox::{Blackbox, DumpErrorKind, EventKind};

fn real_dump() -> (Vec<u8>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, _guard) = Blackbox::builder().dir(dir.path()).build().expect("build");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    rt.block_on(async {
        for _ in 0..50 {
            tokio::spawn(async { tokio::time::sleep(Duration::from_millis(1)).await })
                .await
                .expect("task");
        }
    });
    let path = blackbox.dump_to_dir().expect("dump");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "dump readable by its owner only");
    }
    (std::fs::read(&path).expect("read"), dir)
}

#[test]
fn a_real_dump_round_trips() {
    let (bytes, _dir) = real_dump();
    let file = dump::read_from(&bytes[..]).expect("reads back");
    assert_eq!(file.kind, FileKind::Dump);
    assert_eq!(file.header.major, FORMAT_VERSION);
    assert!(file.header.task_hooks);
    let w = &file.window;
    let tasks = w.tasks();
    assert!(tasks.len() >= 50, "{} tasks", tasks.len());
    let here = file!();
    assert!(
        tasks
            .iter()
            .any(|t| t.file_line().is_some_and(|(f, _)| f == here))
    );
    assert!(
        w.lanes
            .iter()
            .any(|l| l.events.iter().any(|e| e.kind() == Some(EventKind::Park)))
    );
    // Writing what was read gives the same window back.
    let mut again = Vec::new();
    dump::write_window(&mut again, w, FileKind::Dump).expect("write");
    assert_eq!(dump::read_from(&again[..]).expect("read").window, *w);
}

#[test]
fn truncated_input_names_the_offset() {
    let (bytes, _dir) = real_dump();
    for cut in [
        0usize,
        1,
        7,
        8,
        20,
        31,
        32,
        33,
        40,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let err = dump::read_from(&bytes[..cut]).expect_err("truncated input is refused");
        let offset = err.offset().expect("offset");
        assert!(offset <= cut as u64, "offset {offset} past the end {cut}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("byte {offset}")), "{msg}");
        if cut > 0 {
            assert!(
                matches!(err.kind(), DumpErrorKind::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }
}

#[test]
fn foreign_and_future_files_are_refused() {
    let err = dump::read_from(&b"{\"resourceSpans\":[]}"[..]).expect_err("json");
    assert!(matches!(err.kind(), DumpErrorKind::NotADump { offset: 0 }));
    let (mut bytes, _dir) = real_dump();
    bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = dump::read_from(&bytes[..]).expect_err("future version");
    assert!(
        matches!(
            err.kind(),
            DumpErrorKind::UnsupportedVersion { offset: 8, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade"));
}
