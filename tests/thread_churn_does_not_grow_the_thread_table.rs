//! Issue 27, finding 1: the recorder's table of thread names grew by one
//! entry for every thread that ever recorded; only a dump removed exited
//! ones. A service whose blocking pool churns threads (keep-alive 1 ms
//! here) and never dumps grew it without bound. Now exited threads whose
//! events are gone from the buffer are forgotten about once a second: the
//! table stays within the live threads plus the buffer's segments.

use std::time::Duration;

#[test]
fn a_churning_blocking_pool_does_not_grow_the_thread_table() {
    // 256 KiB: 64 segments of 4 KiB, so exited threads' events are
    // overwritten soon and their names can go.
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .buffer_memory(256 << 10)
        .dir(std::env::temp_dir().join("blackbox-thread-churn"))
        .build()
        .expect("recorder");
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(
        rt.worker_threads(2)
            .thread_keep_alive(Duration::from_millis(1))
            .enable_all(),
    );
    let rt = rt.build().expect("runtime");
    const THREADS: usize = 600;
    rt.block_on(async {
        for _ in 0..THREADS {
            // Each blocking task runs on a fresh thread: the last one
            // idled past its keep-alive and exited.
            tokio::task::spawn_blocking(|| std::hint::black_box(0))
                .await
                .expect("blocking task");
            tokio::time::sleep(Duration::from_millis(4)).await;
            // Its events, then other threads' overwriting them.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
    });
    // The capture thread forgets about once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let stats = blackbox.stats();
    assert!(
        !cfg!(tokio_unstable) || stats.threads_known >= 2,
        "the workers are known: {stats:?}"
    );
    assert!(
        stats.threads_known <= 64 + 8,
        "{THREADS} threads came and went; the table holds at most the 64 segments' \
         threads and the live ones: {stats:?}"
    );
}
