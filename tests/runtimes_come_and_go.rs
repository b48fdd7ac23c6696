//! A soak (20 s, or `SOAK_SECS`; `tools/test-all.sh` runs it for two
//! minutes): several runtimes in one process, started and shut down over
//! and over while a steady runtime runs a busy load and slow requests are
//! captured and dumps written: threads exit and start by the hundred, a
//! runtime is dropped with a capture pending and during a dump. No panic, no
//! deadlock, every slow request accounted for, and resident memory (sampled
//! each round) flat after warm-up.

mod support;

use std::time::{Duration, Instant};
use support::windows::rss;
use tracing::Instrument;

struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl tokio_blackbox::Sink for Count {
    fn write(&mut self, _: &tokio_blackbox::Window) -> Result<(), tokio_blackbox::SinkError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn runtimes_come_and_go_under_captures_and_dumps() {
    let dir = std::env::temp_dir().join(format!("blackbox-runtimes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Windows are counted and let go (a sink that kept them would grow).
    let windows = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(30))
        .window(Duration::from_millis(100), Duration::from_millis(20))
        .buffer_memory(4 << 20)
        .dir(&dir)
        .sink(Count(windows.clone()))
        .build()
        .expect("recorder");
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry().with(blackbox.layer()).init();
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(rt.worker_threads(2).enable_all());
    let first = rt.build().expect("runtime");
    // A long-lived runtime beside the ones that come and go, busy with
    // short tasks (tens of thousands of events a second).
    let steady = first.spawn(async {
        loop {
            let wave: Vec<_> = (0..200)
                .map(|i| tokio::spawn(async move { std::hint::black_box(i) }))
                .collect();
            for t in wave {
                let _ = t.await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // Dumps from another thread all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dumper = {
        let (b, stop) = (blackbox.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if b.dump_to_dir().is_ok() {
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            n
        })
    };
    let soak = Duration::from_secs(
        std::env::var("SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let started = Instant::now();
    let mut rss_after_warm_up: Vec<u64> = Vec::new();
    let mut round = 0usize;
    while started.elapsed() < soak {
        round += 1;
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.worker_threads(1 + round % 3).max_blocking_threads(8);
        blackbox.install_hooks(rt.enable_all());
        let rt = rt.build().unwrap();
        rt.block_on(async {
            let slow = tokio::spawn(
                async {
                    let blocking: Vec<_> = (0..8)
                        .map(|_| {
                            tokio::task::spawn_blocking(|| {
                                std::thread::sleep(Duration::from_millis(5))
                            })
                        })
                        .collect();
                    for b in blocking {
                        let _ = b.await;
                    }
                    tokio::time::sleep(Duration::from_millis(35)).await;
                }
                .instrument(tracing::info_span!("slow")),
            );
            let _ = slow.await;
            // A request still open when the runtime goes away.
            tokio::spawn(
                async { tokio::time::sleep(Duration::from_secs(60)).await }
                    .instrument(tracing::info_span!("abandoned")),
            );
        });
        // Dropped at once: its capture is pending, its threads exit.
        rt.shutdown_timeout(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(5) {
            rss_after_warm_up.push(rss());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let dumps = dumper.join().expect("the dumper never panicked");
    steady.abort();
    assert!(blackbox.flush(Duration::from_secs(10)), "no deadlock");
    let stats = blackbox.stats();
    drop(first);
    drop(guard);
    let (low, high) = (
        *rss_after_warm_up.iter().min().unwrap(),
        *rss_after_warm_up.iter().max().unwrap(),
    );
    eprintln!(
        "{:?}: {round} rounds, {dumps} dumps, {} windows, {:.0} events/s, resident {} to {} MiB after warm-up, {stats:?}",
        started.elapsed(),
        windows.load(std::sync::atomic::Ordering::Relaxed),
        stats.events_recorded as f64 / started.elapsed().as_secs_f64(),
        low >> 20,
        high >> 20
    );
    assert!(dumps >= 5, "dumps were written during the rounds");
    assert!(stats.slow_requests >= round as u64, "{stats:?}");
    assert_eq!(
        stats.slow_requests,
        stats.captures
            + stats.requests_merged
            + stats.requests_skipped
            + stats.slow_requests_dropped,
        "every slow request accounted for: {stats:?}"
    );
    assert!(
        high - low < 16 << 20,
        "resident memory after warm-up went from {} to {} MiB",
        low >> 20,
        high >> 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
