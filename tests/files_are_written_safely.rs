//! Where the recorder writes: never through a symbolic link, never into a
//! directory other users may write into, never under a temporary name
//! another process could guess and pre-place, and always mode 0600 (also
//! for a file that existed with a wider mode).
#![cfg(unix)]

mod support;

use std::os::unix::fs::PermissionsExt;
use tokio_blackbox::{DirSink, JsonFileSink, Sink, Window};

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("blackbox-files-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn window() -> Window {
    tokio_blackbox::export::testing::window(1, 2, 1)
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_json_file_is_never_written_through_a_link() {
    let dir = tempdir("link");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("traces.otlp.jsonl")).unwrap();
    let mut sink = JsonFileSink::new(&dir).unwrap();
    sink.write(&window()).unwrap();
    // The export fails (and is counted); the link's target is untouched.
    let _ = sink.flush();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_existing_json_file_with_a_wide_mode_becomes_0600() {
    let dir = tempdir("mode");
    let path = dir.join("traces.otlp.jsonl");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut sink = JsonFileSink::new(&dir).unwrap();
    sink.write(&window()).unwrap();
    sink.flush().unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("resourceSpans")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_others_may_write_into_is_refused() {
    let dir = tempdir("shared");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut sink = DirSink::new(&dir);
    let err = sink.write(&window()).expect_err("refused");
    assert!(err.to_string().contains("writable by other users"), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn capture_files_use_unguessable_temporary_names_and_mode_0600() {
    let dir = tempdir("capture");
    // The temporary name the old scheme used for this window (its final
    // name with `.bbx.tmp`), pre-placed as a link to another file.
    let w = window();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious\n").unwrap();
    let old_tmp = format!(
        "capture-{}-{}.bbx.tmp",
        w.to_unix_ns / 1_000_000,
        w.sequence
    );
    std::os::unix::fs::symlink(&victim, dir.join(old_tmp)).unwrap();
    let mut sink = DirSink::new(&dir);
    sink.write(&w).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let written: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bbx"))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(mode(&written[0]), 0o600);
    assert!(tokio_blackbox::dump::read_file(&written[0]).is_ok());
    // No temporary file of the recorder is left behind (the links are ours).
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .filter(|p| {
            !std::fs::symlink_metadata(p)
                .unwrap()
                .file_type()
                .is_symlink()
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_default_directory_is_resolved_once() {
    // A relative BLACKBOX_DIR is resolved when the recorder is built: a later
    // change of the working directory does not move where dumps go.
    let base = tempdir("relative");
    let before = std::env::current_dir().unwrap();
    std::env::set_current_dir(&base).unwrap();
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .dir("rel")
        .sink(support::windows::Collect::default())
        .build()
        .unwrap();
    std::env::set_current_dir(&before).unwrap();
    let path = blackbox.dump_to_dir().expect("a dump");
    assert!(path.starts_with(base.join("rel")), "{}", path.display());
    drop(guard);
    let _ = std::fs::remove_dir_all(&base);
}
