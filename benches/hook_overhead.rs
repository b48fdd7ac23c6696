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
//! Results on the project machine (2 vCPUs, Intel Xeon VM, rustc 1.95,
//! tokio 1.54.1, 2026-11-25, nothing else running), per poll of an empty
//! `yield_now` task:
//!
//! | runtime | baseline | with hooks | added |
//! |---|---|---|---|
//! | current-thread, wall | 112 ns | 150 ns | +37 ns (1.34×) |
//! | 2 workers, process CPU | 352 ns | 450 ns | +98 ns (1.28×) |
//! | 2 workers, hooks + schedule delay | 352 ns | 524 ns | +172 ns (1.49×) |
//! | 2 workers, Tokio's schedule latency alone | 352 ns | 445 ns | +92 ns (1.26×) |
//!
//! Most of the added cost is the two clock reads: on this VM one `rdtsc`
//! costs ~8 ns in a tight loop and more in situ; `POLL_COST_MODE=clock_only`
//! in `benches/poll_cost.rs` (two TSC reads per poll, nothing else) adds
//! +75 ns of CPU per poll with 2 workers. The recorder's own code is ~85
//! instructions per poll (`tools/poll-cost.sh`).

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

/// CPU time of the whole process (all threads), which is what the hooks cost
/// the service: with two workers, wall time hides half of it and moves with
/// how often workers park and steal.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes to it.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn runtime(
    mode: Mode,
) -> (
    tokio::runtime::Runtime,
    Option<(Blackbox, tokio_blackbox::BlackboxGuard)>,
) {
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

fn run(rt: &tokio::runtime::Runtime, cpu: bool) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let cpu_start = process_cpu();
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
        if cpu {
            process_cpu() - cpu_start
        } else {
            start.elapsed()
        }
    })
}

fn bench(c: &mut Criterion) {
    // Single worker: no stealing, wall time is the poll's cost.
    let mut g = c.benchmark_group("poll_current_thread");
    g.throughput(Throughput::Elements(TASKS as u64 * (YIELDS + 1)));
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for (name, hooks) in [("baseline", false), ("hooks", true)] {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        let rec = hooks.then(|| {
            let (bb, g) = Blackbox::builder()
                .dir(std::env::temp_dir().join("blackbox-bench"))
                .build()
                .expect("build");
            bb.install_hooks(&mut b);
            (bb, g)
        });
        let rt = b.build().expect("runtime");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(&rt, false)).sum())
        });
        drop(rec);
    }
    g.finish();

    // Two workers, measured in process CPU time.
    let mut g = c.benchmark_group("poll_cpu");
    g.throughput(Throughput::Elements(TASKS as u64 * (YIELDS + 1)));
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    for (name, mode) in [
        ("baseline", Mode::Baseline),
        ("hooks", Mode::Hooks),
        ("hooks_schedule_delay", Mode::HooksScheduleDelay),
        (
            "tokio_schedule_latency_only",
            Mode::TokioScheduleLatencyOnly,
        ),
    ] {
        let (rt, rec) = runtime(mode);
        let rt = Arc::new(rt);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(&rt, true)).sum())
        });
        drop(rec);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
