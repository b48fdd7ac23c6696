//! Memory stays fixed: after a million requests through a real runtime with
//! the recorder, resident memory has grown by no more than the configured ring
//! memory plus 2 MiB. Prints the figures and exits non-zero if the bound is
//! broken.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Result (2026-11-25): 1,008,000 requests in 1.0 s; resident memory 6.4 MiB
//! before and after (growth 0.00 MiB, bound 5 MiB = 3 MiB of rings + 2 MiB);
//! 10 million events recorded, 9.9 million overwritten.

use std::time::Duration;
use tokio_blackbox::Blackbox;
use tracing::Instrument;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let requests: u64 = std::env::var("MEMORY_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("blackbox-memory-{}", std::process::id()));
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_secs(3600)) // nothing is slow: measure the rings alone
        .dir(&dir)
        .build()
        .expect("build");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(b.worker_threads(2).enable_all());
    let rt = b.build().expect("runtime");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(blackbox.layer()));

    let batch = |n: u64| {
        rt.block_on(
            async move {
                let tasks: Vec<_> = (0..8u64)
                    .map(|_| {
                        tokio::spawn(
                            async move {
                                for _ in 0..n / 8 {
                                    async { tokio::task::yield_now().await }
                                        .instrument(tracing::info_span!("request"))
                                        .await;
                                }
                            }
                            .with_current_subscriber(),
                        )
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
            .with_subscriber(dispatch.clone()),
        )
    };
    batch(8_000); // warm up: threads, lanes, allocator arenas
    let before = rss_bytes();
    let start = std::time::Instant::now();
    batch(requests);
    let elapsed = start.elapsed();
    let after = rss_bytes();
    let s = blackbox.stats();
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    let growth = after.saturating_sub(before);
    let bound = s.buffer_bytes + 2 * 1024 * 1024;
    println!(
        "memory: {} requests in {:.2?}; RSS {:.1} MiB -> {:.1} MiB (growth {:.2} MiB); buffer {:.2} MiB held, limit {:.1} MiB; bound {:.2} MiB; {} events, {} overwritten",
        s.requests_seen,
        elapsed,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        s.buffer_bytes as f64 / 1048576.0,
        s.buffer_bytes_limit as f64 / 1048576.0,
        bound as f64 / 1048576.0,
        s.events_recorded,
        s.events_overwritten
    );
    println!(
        "memory: default buffer memory {:.1} MiB for all threads",
        Blackbox::DEFAULT_BUFFER_MEMORY as f64 / 1048576.0,
    );
    if growth > bound {
        eprintln!("memory: FAILED: growth {growth} B exceeds buffer memory + 2 MiB = {bound} B");
        std::process::exit(1);
    }
}
