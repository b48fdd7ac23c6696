//! With no endpoint the recorder appends OTLP JSON lines to
//! `traces.otlp.jsonl`; the file is rotated by size (`traces.otlp.jsonl.1`,
//! `.2`, ...) and only a bounded number of files are kept, so the
//! directory's total stays bounded however long the service runs. Real
//! files; small limits so the test is quick (the defaults are 64 MiB × 4).

use std::path::Path;
use tokio_blackbox::export::json::{DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES, JSON_FILE_NAME};
use tokio_blackbox::export::testing::window;
use tokio_blackbox::{JsonFileSink, Sink};

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_json_file_rotates_and_the_directory_stays_bounded() {
    assert_eq!(DEFAULT_MAX_FILE_BYTES, 64 << 20);
    assert_eq!(DEFAULT_MAX_FILES, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    const LIMIT: u64 = 256 << 10;
    let mut sink = JsonFileSink::with_rotation(dir.path(), LIMIT, 3).expect("sink");
    let w = window(5, 4, 1);
    let mut line = 0;
    for _ in 0..300 {
        sink.write(&w).expect("write");
        sink.flush().expect("flush");
        if line == 0 {
            line = std::fs::metadata(dir.path().join(JSON_FILE_NAME))
                .expect("written")
                .len();
        }
    }
    let found = files(dir.path());
    let total: u64 = found.iter().map(|(_, n)| n).sum();
    eprintln!(
        "one line {line} B; 300 lines ({} KiB) written; kept {found:?}, {total} B",
        300 * line / 1024
    );
    assert!(
        300 * line > 4 * LIMIT,
        "the test writes more than the bound"
    );
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            JSON_FILE_NAME.to_string(),
            format!("{JSON_FILE_NAME}.1"),
            format!("{JSON_FILE_NAME}.2")
        ]
    );
    for (name, len) in &found {
        assert!(*len <= LIMIT, "{name} has {len} bytes");
        // Every kept file holds whole lines.
        let text = std::fs::read_to_string(dir.path().join(name)).expect("read");
        assert!(text.ends_with('\n'));
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).expect("a whole JSON line");
        }
    }
    assert!(total <= 3 * LIMIT, "{total}");
}
