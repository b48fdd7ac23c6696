//! Capture files and dumps no longer pile up without bound in the
//! recorder's directory: a `DirSink` keeps its newest capture files
//! (`with_max_files`, 64 by default) and `dump_to_dir` the newest
//! `Blackbox::DUMPS_KEPT` dumps. Files of other names are left alone.

use std::path::Path;
use std::time::Duration;
use tokio_blackbox::Sink;

fn names(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_dir_sink_keeps_its_newest_capture_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    std::fs::write(dir.path().join("capture-mine.bbx"), "not a capture").unwrap();
    let mut sink = tokio_blackbox::DirSink::new(dir.path()).with_max_files(3);
    let base = tokio_blackbox::export::testing::window(2, 4, 1);
    for i in 0..10u64 {
        let mut w = base.clone();
        w.sequence = i;
        w.to_unix_ns = 1_700_000_000_000_000_000 + i * 1_000_000;
        sink.write(&w).unwrap();
    }
    let kept: Vec<String> = names(dir.path(), "capture-")
        .into_iter()
        .filter(|n| n != "capture-mine.bbx")
        .collect();
    assert_eq!(
        kept,
        vec![
            "capture-1700000000007-7.bbx",
            "capture-1700000000008-8.bbx",
            "capture-1700000000009-9.bbx",
        ],
        "the newest three"
    );
    for name in &kept {
        tokio_blackbox::dump::read_file(dir.path().join(name)).expect("a whole capture file");
    }
    assert!(dir.path().join("notes.txt").exists(), "other files stay");
    assert!(
        dir.path().join("capture-mine.bbx").exists(),
        "other names stay"
    );
}

#[test]
fn dumps_to_the_directory_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .dir(dir.path())
        .build()
        .unwrap();
    let mut written = Vec::new();
    for _ in 0..tokio_blackbox::Blackbox::DUMPS_KEPT + 4 {
        written.push(blackbox.dump_to_dir().expect("a dump"));
        // Dump names carry the millisecond.
        std::thread::sleep(Duration::from_millis(2));
    }
    let kept = names(dir.path(), "dump-");
    assert_eq!(kept.len(), tokio_blackbox::Blackbox::DUMPS_KEPT, "{kept:?}");
    let newest: Vec<String> = written[written.len() - tokio_blackbox::Blackbox::DUMPS_KEPT..]
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, newest, "the newest dumps are the ones kept");
}
