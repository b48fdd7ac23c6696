//! With Tokio's `tracing` feature on (every tokio-console user has it), each
//! task runs inside Tokio's own `runtime.spawn` span (target `tokio::task`, a
//! root span), `block_on`'s future too. A request span made inside a task then
//! has Tokio's span as its parent: it is still a request (Tokio's spans are
//! transparent), while a span made inside a task spawned from a request with
//! `.in_current_span()` stays inside that request.
//!
//! Here the spans are made as Tokio makes them, so the test runs without the
//! feature; `tokio-tracing-check/` runs the same with Tokio's real spans.

mod support;

use std::time::Duration;
use tracing::Instrument;

/// The span Tokio's `tracing` feature puts around a task (or `block_on`'s future).
fn tokio_task_span(kind: &'static str) -> tracing::Span {
    tracing::trace_span!(
        target: "tokio::task",
        parent: None,
        "runtime.spawn",
        kind,
        task.name = "",
        task.id = 1
    )
}

#[test]
fn request_spans_inside_tokio_task_spans_are_requests() {
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(50))
            .window(Duration::from_millis(100), Duration::from_millis(20)),
        2,
    );
    rt.block_on(
        async {
            let connections: Vec<_> = (0..3)
                .map(|i| {
                    tokio::spawn(
                        async move {
                            // A request span made inside a connection task.
                            let request = tracing::info_span!("GET /items", item = i);
                            async {
                                // A child task spawned inside the request: its
                                // own spans are the request's, not requests.
                                let child = tokio::spawn(
                                    async {
                                        let _query = tracing::info_span!("db.query").entered();
                                    }
                                    .in_current_span()
                                    .instrument(tokio_task_span("task")),
                                );
                                child.await.expect("child");
                                tokio::time::sleep(Duration::from_millis(60)).await;
                            }
                            .instrument(request)
                            .await;
                        }
                        .instrument(tokio_task_span("task")),
                    )
                })
                .collect();
            for c in connections {
                c.await.expect("connection");
            }
            // Made in `block_on`'s own future, inside its Tokio span.
            let _direct = tracing::info_span!("GET /direct").entered();
        }
        .instrument(tokio_task_span("block_on")),
    );
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    assert_eq!(
        stats.requests_seen, 4,
        "three requests in tasks and one in block_on; Tokio's spans and the query are not: {stats:?}"
    );
    assert_eq!(stats.slow_requests, 3, "{stats:?}");
    // Tasks are named after their own spans, not Tokio's `runtime.spawn`.
    let windows = sink.windows();
    assert!(!windows.is_empty(), "{stats:?}");
    for w in &windows {
        let tasks = w.tasks();
        let names: Vec<String> = tasks.iter().map(|t| t.name()).collect();
        assert!(!names.iter().any(|n| n == "runtime.spawn"), "{names:?}");
        let slow = w.requests[0].request_id;
        let own: Vec<&String> = tasks
            .iter()
            .zip(&names)
            .filter(|(t, _)| t.requests.contains(&slow))
            .map(|(_, n)| n)
            .collect();
        // The connection's task and the child it spawned inside the request.
        assert_eq!(
            own.iter().filter(|n| **n == "GET /items").count(),
            2,
            "{own:?}"
        );
    }
    drop(rt);
    drop(guard);
}
