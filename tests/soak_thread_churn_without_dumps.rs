//! Issue 27: a soak without dumps. The other soak (`runtimes_come_and_go`)
//! dumps every 40 ms, and a dump used to be the only thing that forgot
//! exited threads (finding 1): it masked the leak. Here nothing dumps, the
//! blocking pool starts and retires threads continuously (10,000 over the
//! run, keep-alive 1 ms) while the workers stay busy and slow requests are
//! captured: resident memory stays flat after warm-up and the thread table
//! stays within the buffer's segments and the live threads.

mod support;

use std::time::Duration;
use support::windows::rss;

struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl tokio_blackbox::Sink for Count {
    fn write(&mut self, _: &tokio_blackbox::Window) -> Result<(), tokio_blackbox::SinkError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn ten_thousand_blocking_threads_without_a_dump() {
    const THREADS: usize = 10_000;
    const BATCH: usize = 20;
    // 1 MiB: 256 segments of 4 KiB.
    let windows = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .buffer_memory(1 << 20)
        .latency_threshold(Duration::from_millis(20))
        .window(Duration::from_millis(50), Duration::from_millis(10))
        .sink(Count(windows.clone()))
        .dir(std::env::temp_dir().join("blackbox-soak-no-dumps"))
        .build()
        .expect("recorder");
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(
        rt.worker_threads(2)
            .max_blocking_threads(BATCH)
            .thread_keep_alive(Duration::from_millis(1))
            .enable_all(),
    );
    let rt = rt.build().expect("runtime");
    let sub = {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry().with(blackbox.layer())
    };
    let _default = tracing::subscriber::set_default(sub);
    let mut warm = 0;
    let mut most_threads = 0;
    rt.block_on(async {
        for round in 0..THREADS / BATCH {
            // A batch of blocking tasks, each on its own thread (the pool
            // is empty: the last batch's threads idled out).
            let tasks: Vec<_> = (0..BATCH)
                .map(|_| {
                    tokio::task::spawn_blocking(|| {
                        std::thread::sleep(Duration::from_micros(200));
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("blocking task");
            }
            // A slow request now and then: captures without a dump.
            if round % 25 == 0 {
                use tracing::Instrument;
                async { tokio::time::sleep(Duration::from_millis(25)).await }
                    .instrument(tracing::info_span!("request"))
                    .await;
            }
            // Past the keep-alive: the batch's threads exit.
            tokio::time::sleep(Duration::from_millis(4)).await;
            let s = blackbox.stats();
            most_threads = most_threads.max(s.threads_known);
            if round == THREADS / BATCH / 5 {
                warm = rss();
            }
        }
    });
    // The capture thread forgets exited threads about once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let end = rss();
    let s = blackbox.stats();
    eprintln!(
        "{THREADS} blocking threads, no dump: rss {} -> {} KiB after warm-up, threads known at most {most_threads}, {} now, {} windows: {s:?}",
        warm / 1024,
        end / 1024,
        s.threads_known,
        windows.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(s.captures > 0, "slow requests were captured: {s:?}");
    assert!(
        s.threads_known <= 256 + BATCH as u64 + 8,
        "the table holds at most the 256 segments' threads and the live ones: {s:?}"
    );
    // Forgotten about once a second while the run starts some 4,000
    // threads a second: never all of them at once.
    assert!(
        most_threads <= THREADS as u64 / 2,
        "the table grew to {most_threads} entries during the run"
    );
    assert!(
        end < warm + (8 << 20),
        "resident memory grew from {} to {} KiB after warm-up",
        warm / 1024,
        end / 1024
    );
}
