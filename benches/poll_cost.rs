//! A fixed poll workload for instruction counting under callgrind.
//!
//! `POLL_COST_MODE=baseline|hooks|hooks_schedule_delay|empty_hooks|clock_only`
//! selects the runtime (`empty_hooks`: no-op callbacks; `clock_only`: two TSC
//! reads per poll and nothing else);
//! the workload is the same as `hook_overhead`: 4 tasks × `YIELDS` yields on 2
//! workers. `tools/poll-cost.sh` runs each mode under
//! `valgrind --tool=callgrind` and divides the difference in instructions by
//! the number of polls. With `perf stat -e task-clock` at two workload sizes it
//! also gives the CPU time per poll without valgrind.
//!
//! Result (2026-11-25): 127 instructions per poll in the two poll hooks under
//! callgrind (where the clock falls back to clock_gettime, ~20 instructions a
//! read), 146 with the schedule delay.

use tokio_blackbox::Blackbox;

const TASKS: u64 = 4;

fn main() {
    // `cargo bench` passes `--bench`; this binary only runs when asked.
    let Ok(mode) = std::env::var("POLL_COST_MODE") else {
        println!("poll_cost: set POLL_COST_MODE (see tools/poll-cost.sh); skipping");
        return;
    };
    let yields: u64 = std::env::var("POLL_COST_YIELDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let rec = match mode.as_str() {
        "baseline" => None,
        "hooks" | "hooks_schedule_delay" => {
            let (bb, g) = Blackbox::builder()
                .schedule_delay(mode == "hooks_schedule_delay")
                .dir(std::env::temp_dir().join("blackbox-bench"))
                .build()
                .expect("build");
            bb.install_hooks(&mut b);
            Some((bb, g))
        }
        "empty_hooks" => {
            // The same hooks doing nothing: what Tokio's hook calls cost alone.
            b.on_thread_park(|| {})
                .on_thread_unpark(|| {})
                .on_task_spawn(|_| {})
                .on_before_task_poll(|_| {})
                .on_after_task_poll(|_| {})
                .on_task_terminate(|_| {});
            None
        }
        "clock_only" => {
            // Two TSC reads per poll and nothing else: the clock's share.
            let clock = quanta::Clock::new();
            let c2 = clock.clone();
            b.on_before_task_poll(move |_| {
                std::hint::black_box(clock.raw());
            })
            .on_after_task_poll(move |_| {
                std::hint::black_box(c2.raw());
            });
            None
        }
        other => panic!("unknown POLL_COST_MODE {other}"),
    };
    let rt = b.build().expect("runtime");
    rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    if let Some((bb, _g)) = &rec {
        let s = bb.stats();
        println!(
            "poll_cost: {mode}: {} polls, {} events",
            TASKS * (yields + 1),
            s.events_recorded
        );
    } else {
        println!("poll_cost: {mode}: {} polls", TASKS * (yields + 1));
    }
}
