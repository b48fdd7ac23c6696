//! Request detection: a request that never finishes is captured while still
//! open, and Tokio's own task spans (`runtime.spawn`, target `tokio::task`,
//! which Tokio's `tracing` feature creates for every spawned task) are never
//! requests.

mod support;

use std::time::{Duration, Instant};

#[test]
fn a_hung_request_is_captured_open_and_tokio_spans_are_not_requests() {
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(100))
            .stuck_after(Duration::from_millis(400))
            .window(Duration::from_millis(200), Duration::from_millis(50)),
        2,
    );
    rt.block_on(async {
        // What Tokio's `tracing` feature does for each spawned task.
        // Each lives past the threshold: as requests, they would be slow.
        let tokio_spans: Vec<_> = (0..100)
            .map(|_| {
                let span =
                    tracing::trace_span!(target: "tokio::task", "runtime.spawn", kind = "task");
                tokio::spawn(tracing::Instrument::instrument(
                    async { tokio::time::sleep(Duration::from_millis(150)).await },
                    span,
                ))
            })
            .collect();
        for t in tokio_spans {
            let _ = t.await;
        }
        // A request that hangs (a lost wakeup, a deadlock): it never closes.
        let hung = tracing::info_span!("GET /hung");
        tokio::spawn(tracing::Instrument::instrument(
            std::future::pending::<()>(),
            hung,
        ));
        let start = Instant::now();
        while blackbox.stats().requests_captured_open == 0
            && start.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(blackbox.flush(Duration::from_secs(5)));
    let stats = blackbox.stats();
    assert_eq!(
        stats.requests_seen, 1,
        "only the hung request is a request: {stats:?}"
    );
    assert_eq!(stats.requests_captured_open, 1, "{stats:?}");
    let windows = sink.windows();
    let w = windows
        .iter()
        .find(|w| w.requests.iter().any(|r| r.open))
        .expect("a window for the open request");
    let r = w.requests.iter().find(|r| r.open).unwrap();
    assert_eq!(r.name, "GET /hung");
    assert!(
        r.duration() >= Duration::from_millis(400),
        "{:?}",
        r.duration()
    );
    // Its task's polls are in the window, and tied to it.
    let tasks = w.tasks();
    assert!(
        tasks.iter().any(|t| t.requests.contains(&r.request_id)),
        "the hung request's task is in its window"
    );
    // The OTLP mapping says it was open.
    let (spans, _) = tokio_blackbox::export::otlp::window_spans(
        w,
        tokio_blackbox::export::otlp::Budget::default(),
    );
    let window_span = spans.iter().find(|s| s.name == "blackbox.window").unwrap();
    assert!(
        window_span
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "blackbox.request.open"
                && kv.value == opentelemetry::Value::Bool(true))
    );
    drop(rt);
    drop(guard);
}
