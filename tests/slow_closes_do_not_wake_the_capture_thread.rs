//! Issue 25: during an incident every request is slow, and each slow
//! close used to wake the capture thread (a blocking receive on its queue):
//! one context switch a request, stolen from the service's cores. Now the
//! capture thread looks at its queue on its own, every turn (5–100 ms),
//! and only a flush, the shutdown or a half-full queue wakes it. Counted
//! from the kernel: the capture thread's voluntary context switches
//! (`/proc/self/task/<tid>/status`) over 20,000 slow closes.

use std::time::{Duration, Instant};
use tracing_subscriber::prelude::*;

/// The voluntary context switches of this process's thread named `name`.
fn switches_of(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        return status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok());
    }
    None
}

#[test]
fn a_storm_of_slow_closes_wakes_the_capture_thread_by_turns_not_by_request() {
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        // Every request is slow (an incident), and the scan interval is 5 ms.
        .latency_threshold(Duration::from_micros(50))
        .window(Duration::from_millis(5), Duration::from_millis(1))
        .sink(tokio_blackbox::DirSink::new(
            std::env::temp_dir().join("blackbox-storm-wakes"),
        ))
        .build()
        .expect("recorder");
    let subscriber = tracing_subscriber::registry().with(blackbox.layer());
    // The thread is named "blackbox-captur" in comm (15 bytes at most).
    let name = "blackbox-captur";
    std::thread::sleep(Duration::from_millis(50));
    let before = switches_of(name).expect("the capture thread");
    const REQUESTS: u64 = 20_000;
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..REQUESTS {
            let span = tracing::info_span!("GET /storm");
            let _e = span.enter();
            // Slow: past the 50 µs threshold by the clock the close reads.
            let until = Instant::now() + Duration::from_micros(60);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    });
    let elapsed = started.elapsed();
    let after = switches_of(name).expect("the capture thread");
    let stats = blackbox.stats();
    drop(guard);
    assert_eq!(stats.slow_requests, REQUESTS, "{stats:?}");
    let woken = after - before;
    // Turns of 5 ms, plus the capture's own waits: far fewer than requests.
    let turns = elapsed.as_millis() as u64 / 5;
    eprintln!(
        "{REQUESTS} slow closes in {elapsed:?}: the capture thread switched {woken} times ({turns} turns)"
    );
    assert!(
        woken < REQUESTS / 4,
        "{woken} voluntary switches of the capture thread for {REQUESTS} slow closes in {elapsed:?}"
    );
}
