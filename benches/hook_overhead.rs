//! Added cost per task poll of the recorder's hooks (both events: poll start
//! and poll end), against a runtime without hooks, measured in the same run.
//!
//! Workload: 2 workers, 2 tasks per worker, each task calls `yield_now` in a
//! loop, so nearly all the time is polls of empty futures: the worst case for
//! per-poll overhead. Reported per poll (`elements` = polls).
//!
//! ```text
//! cargo bench --bench hook_overhead
//! ```
//!
//! For instruction counts, which do not depend on how noisy the machine is,
//! see `tools/poll-cost.sh` (callgrind over `benches/poll_cost.rs`).
//!
//! Results on the project machine (2 cores, rustc 1.95, tokio 1.54.1), see the
//! issue notes for the latest: baseline ≈ 60 ns/poll; hooks add a few ns.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_blackbox::Blackbox;

const TASKS: usize = 4;
const YIELDS: u64 = 5_000;

#[derive(Clone, Copy)]
enum Mode {
    Baseline,
    Hooks,
    HooksScheduleDelay,
    TokioScheduleLatencyOnly,
}

fn runtime(mode: Mode) -> (tokio::runtime::Runtime, Option<(Blackbox, tokio_blackbox::BlackboxGuard)>) {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let rec = match mode {
        Mode::Baseline => None,
        Mode::TokioScheduleLatencyOnly => {
            b.track_task_schedule_latency();
            None
        }
        Mode::Hooks | Mode::HooksScheduleDelay => {
            let (bb, g) = Blackbox::builder()
                .schedule_delay(matches!(mode, Mode::HooksScheduleDelay))
                .dir(std::env::temp_dir().join("blackbox-bench"))
                .build()
                .expect("build");
            bb.install_hooks(&mut b);
            Some((bb, g))
        }
    };
    (b.build().expect("runtime"), rec)
}

fn run(rt: &tokio::runtime::Runtime) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                tokio::spawn(async {
                    for _ in 0..YIELDS {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll");
    g.throughput(Throughput::Elements(TASKS as u64 * (YIELDS + 1)));
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    for (name, mode) in [
        ("baseline", Mode::Baseline),
        ("hooks", Mode::Hooks),
        ("hooks_schedule_delay", Mode::HooksScheduleDelay),
        ("tokio_schedule_latency_only", Mode::TokioScheduleLatencyOnly),
    ] {
        let (rt, rec) = runtime(mode);
        let rt = Arc::new(rt);
        g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| run(&rt)).sum()));
        drop(rec);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
