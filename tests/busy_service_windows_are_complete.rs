//! A busy service: two workers running 50,000 short tasks a second
//! (about 300,000 events a second) beside their requests, with a small buffer that wraps during
//! the run (6 MiB: about 2.3 s at the rate this test reaches, so a window of 1.2 s fits even when a
//! loaded machine delays the capture; a cut copies at most half the buffer, `Cut::BUFFER_SHARE`,
//! and the window is about 2.7 MiB of it). Every window of a slow request is still complete: no
//! event of the window lost, and the whole `before` present on every worker.

mod support;

use std::time::{Duration, Instant};

#[test]
fn busy_service_windows_are_complete() {
    let before = Duration::from_millis(800);
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(200))
            .window(before, Duration::from_millis(100))
            .buffer_memory(6 << 20)
            // Three whole windows of 300,000 events a second cost more than
            // the default 2% of a core over 10 s (in a debug build most of
            // all): this test is about the buffer, not the budget.
            .cpu_budget(1.0),
        2,
    );
    let started = Instant::now();
    rt.block_on(async {
        // Background load: short tasks, spawned in waves of 200 every 4 ms
        // (about 300,000 events a second), for the whole run.
        let load = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(4));
            while started.elapsed() < Duration::from_secs(5) {
                tick.tick().await;
                let wave: Vec<_> = (0..200)
                    .map(|i| {
                        tokio::spawn(async move {
                            tokio::task::yield_now().await;
                            std::hint::black_box(i * 7)
                        })
                    })
                    .collect();
                for t in wave {
                    let _ = t.await;
                }
            }
        });
        // A slow request every second, after the buffer has wrapped.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..3 {
            let span = tracing::info_span!("request");
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            .instrument_in(span)
            .await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let _ = load.await;
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    drop(rt);
    drop(guard);
    let windows = sink.windows();
    let rate = stats.events_recorded as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "busy: {} events ({rate:.0}/s), {} overwritten, {} windows, pins refused {}",
        stats.events_recorded,
        stats.events_overwritten,
        windows.len(),
        stats.pins_refused
    );
    assert!(
        stats.events_overwritten > stats.events_recorded / 3,
        "the buffer wrapped during the run: {stats:?}"
    );
    assert_eq!(stats.events_dropped, 0);
    assert_eq!(windows.len(), 3, "{stats:?}");
    for w in &windows {
        assert_eq!(w.events_lost(), 0, "window {} lost events", w.sequence);
        let workers: Vec<_> = w
            .lanes
            .iter()
            .filter(|l| l.thread.starts_with("tokio-rt-worker"))
            .collect();
        let names: Vec<_> = w.lanes.iter().map(|l| l.thread.as_str()).collect();
        assert_eq!(workers.len(), 2, "{names:?}");
        for l in workers {
            let first = l.events.first().map_or(u64::MAX, |e| e.ts);
            // The whole `before` is present: the worker's events start at the window's start.
            assert!(
                first < w.from_unix_ns + 20_000_000,
                "lane {} starts {} ms into the window",
                l.index,
                (first - w.from_unix_ns) / 1_000_000
            );
        }
        let r = &w.requests[0];
        // Within the error of the raw clock's tick-to-ns ratio (a few parts
        // in 10^5 of the 800 ms before, measured against the wall clock).
        let want = r.start_unix_ns - before.as_nanos() as u64;
        assert!(
            w.from_unix_ns <= want + before.as_nanos() as u64 / 10_000,
            "window {} starts {} us after the request's start - before ({} ms request)",
            w.sequence,
            (w.from_unix_ns - want) / 1_000,
            r.duration().as_millis()
        );
    }
}

/// `.instrument` for a span made outside a task, so the request span is a root span.
trait InstrumentIn: std::future::Future + Sized {
    fn instrument_in(self, span: tracing::Span) -> tracing::instrument::Instrumented<Self> {
        tracing::Instrument::instrument(self, span)
    }
}
impl<F: std::future::Future> InstrumentIn for F {}
