//! When Jaeger goes away mid-run the service keeps its throughput, the
//! recorder's memory stays bounded, failed exports are retried a bounded
//! number of times and then dropped and counted, and captures reach Jaeger
//! again once it is back. Real service, real OTLP/gRPC, real Jaeger.
//!
//! Needs the peers built once: `tools/build-peers.sh`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::peers::{Jaeger, otlp_spans};
use support::service::TestService;
use tokio_blackbox::Blackbox;

/// Resident memory of this process, bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Runs `clients` threads against `/fast` for `d` (plus a `/slow` request
/// every 300 ms); returns (fast requests per second, slow trace ids).
fn load(svc: &TestService, d: Duration, clients: usize) -> (f64, Vec<String>) {
    let done = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    let slow = std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let client = reqwest::blocking::Client::new();
                while !done.load(Ordering::Relaxed) {
                    let ok = client
                        .get(svc.url("/fast"))
                        .send()
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    assert!(ok, "a fast request failed");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let slow = s.spawn(|| {
            let client = reqwest::blocking::Client::new();
            let mut ids = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok(r) = client.get(svc.url("/slow")).send() {
                    ids.push(r.text().unwrap_or_default());
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            ids
        });
        std::thread::sleep(d);
        done.store(true, Ordering::Relaxed);
        slow.join().expect("slow client")
    });
    (
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        slow,
    )
}

#[test]
fn jaeger_outage_costs_the_service_nothing_and_export_recovers() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::set_var("OTEL_SERVICE_NAME", "blackbox-outage") };
    let mut jaeger = Jaeger::start();
    let endpoint = jaeger.otlp_grpc_endpoint();
    let builder = Blackbox::builder()
        .latency_threshold(Duration::from_millis(250))
        .window(Duration::from_millis(300), Duration::from_millis(50))
        // About the export's recovery, not the CPU budget: in this debug
        // build a window costs ~10 times a release build's, and the default
        // 2% would shed the windows right after the outage.
        .cpu_budget(1.0)
        .with_env(move |var| match var {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            _ => None,
        });
    let svc = TestService::start(builder);

    // Warm up, then a baseline with Jaeger up.
    load(&svc, Duration::from_millis(500), 2);
    let (up_rate, up_slow) = load(&svc, Duration::from_secs(3), 2);
    assert!(svc.blackbox.flush(Duration::from_secs(10)));
    jaeger.wait_for_trace(
        up_slow.last().expect("slow requests ran"),
        Duration::from_secs(30),
    );
    let before = svc.blackbox.stats();
    assert_eq!(before.spans_dropped, 0, "{before:?}");

    // Jaeger down: same load.
    jaeger.stop();
    let rss_down_start = rss();
    let (down_rate, down_slow) = load(&svc, Duration::from_secs(4), 2);
    let rss_down_end = rss();
    assert!(
        svc.blackbox.flush(Duration::from_secs(15)),
        "flush returns even with the endpoint down"
    );
    let down = svc.blackbox.stats();
    eprintln!(
        "up {up_rate:.0} req/s, down {down_rate:.0} req/s; rss {} -> {} KiB",
        rss_down_start / 1024,
        rss_down_end / 1024
    );
    eprintln!("after the outage: {down:?}");
    assert!(
        down_rate >= 0.6 * up_rate,
        "throughput fell from {up_rate:.0} to {down_rate:.0} req/s"
    );
    assert!(
        down.export_windows_dropped > before.export_windows_dropped,
        "the windows Jaeger never received are counted dropped, not exported: {down:?}"
    );
    assert!(
        down.spans_dropped > before.spans_dropped,
        "drops are counted: {down:?}"
    );
    assert!(
        down.export_retries > before.export_retries,
        "retried: {down:?}"
    );
    assert!(down.export_failures > before.export_failures, "{down:?}");
    assert!(
        rss_down_end < rss_down_start + 64 * 1024 * 1024,
        "memory grew by {} KiB during the outage",
        (rss_down_end - rss_down_start) / 1024
    );
    let _ = down_slow;

    // Jaeger back (empty: in-memory storage): new captures arrive.
    jaeger.restart();
    let (_, back_slow) = load(&svc, Duration::from_secs(2), 1);
    assert!(svc.blackbox.flush(Duration::from_secs(15)));
    let id = back_slow.last().expect("slow requests after the restart");
    let trace = jaeger.wait_for_trace_where(id, Duration::from_secs(30), |t| {
        let spans = otlp_spans(t);
        spans
            .iter()
            .any(|s| s["name"] == "blackbox.window" || s["name"] == "blackbox.window.ref")
    });
    println!(
        "after the restart: trace {id} with {} spans at {}/trace/{id}",
        otlp_spans(&trace).len(),
        jaeger.query_url()
    );
    let after = svc.blackbox.stats();
    assert!(after.spans_exported > down.spans_exported, "{after:?}");
}
