//! The hand-made fixtures in `tests/fixtures/` are exactly what
//! `tests/support/fixtures.rs` generates. Regenerate them after a format
//! change with `BLACKBOX_BLESS=1 cargo test --test cli_fixtures_match_their_generator`.

mod support;

use support::fixtures;

#[test]
fn fixtures_match_their_generator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bless = std::env::var_os("BLACKBOX_BLESS").is_some();
    for (name, bytes) in fixtures::all() {
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with BLACKBOX_BLESS=1", path.display()));
        assert!(
            on_disk == bytes,
            "{} differs from its generator; run with BLACKBOX_BLESS=1",
            path.display()
        );
    }
}

#[test]
fn small_fixture_reads_back_as_built() {
    let window = fixtures::small_window();
    let bytes = fixtures::fixed_bytes(&window, tokio_blackbox::dump::FileKind::Capture);
    let back = tokio_blackbox::dump::read_from(&bytes[..]).unwrap();
    assert_eq!(back.window, window);
    assert_eq!(back.header.pid, 4242);
    let tasks = back.window.tasks();
    let cache = tasks.iter().find(|t| t.id == fixtures::TASK_CACHE).unwrap();
    assert_eq!(cache.longest_poll_ns(), 200 * fixtures::MS);
    let handler = tasks
        .iter()
        .find(|t| t.id == fixtures::TASK_HANDLER)
        .unwrap();
    assert_eq!(handler.requests, vec![fixtures::REQ_ORDERS]);
}
