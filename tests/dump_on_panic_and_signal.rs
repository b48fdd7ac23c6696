//! Dumps are written on a panic (opt-in, chaining the previous hook) and on
//! `SIGUSR1`, into the configured directory, readable by the owner only.
//!
//! One test function: the panic hook and signal handlers are process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_blackbox::Blackbox;
use tokio_blackbox::dump::{self, FileKind};

fn dumps_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "bbx"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn dumps_on_panic_and_on_sigusr1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("dumps"); // created by the recorder
    let (blackbox, _guard) = Blackbox::builder().dir(&dir).build().expect("build");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    rt.block_on(async { tokio::spawn(async {}).await })
        .expect("task");

    // The previous hook still runs after ours.
    let previous_ran = Arc::new(AtomicBool::new(false));
    let flag = previous_ran.clone();
    std::panic::set_hook(Box::new(move |_| flag.store(true, Ordering::SeqCst)));
    blackbox.dump_on_panic();
    let _ = std::thread::spawn(|| panic!("boom")).join();
    let _ = std::panic::take_hook();
    assert!(
        previous_ran.load(Ordering::SeqCst),
        "the earlier panic hook was chained"
    );
    let after_panic = dumps_in(&dir);
    assert_eq!(after_panic.len(), 1, "one dump written on panic");
    // A burst of task panics (Tokio catches them): no more dumps, each counted.
    std::panic::set_hook(Box::new(|_| {}));
    blackbox.dump_on_panic();
    rt.block_on(async {
        for _ in 0..20 {
            let _ = tokio::spawn(async { panic!("a task's unwrap") }).await;
        }
    });
    let _ = std::panic::take_hook();
    assert_eq!(
        dumps_in(&dir).len(),
        1,
        "at most one dump on panic per minute"
    );
    assert_eq!(blackbox.stats().panic_dumps_skipped, 20);
    let file = dump::read_file(&after_panic[0]).expect("panic dump reads back");
    assert_eq!(file.kind, FileKind::Dump);
    assert!(!file.window.tasks().is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&after_panic[0])
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(dir_mode & 0o077, 0, "the dump directory is private");
    }

    #[cfg(unix)]
    {
        blackbox.dump_on_signal().expect("register SIGUSR1");
        // Dump names carry milliseconds: let the clock move past the panic dump's.
        std::thread::sleep(Duration::from_millis(5));
        signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).expect("raise");
        let deadline = Instant::now() + Duration::from_secs(10);
        while dumps_in(&dir).len() < 2 {
            assert!(Instant::now() < deadline, "no dump after SIGUSR1");
            std::thread::sleep(Duration::from_millis(20));
        }
        let newest = dumps_in(&dir).pop().expect("dump");
        dump::read_file(&newest).expect("signal dump reads back");
    }
}
