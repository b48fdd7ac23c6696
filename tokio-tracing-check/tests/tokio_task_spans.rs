//! With Tokio's real `tracing` feature (and `tokio_unstable`, as
//! tokio-console needs), every task and `block_on`'s future run inside Tokio's
//! `runtime.spawn` span (a root span). Request spans made inside them are
//! still requests, Tokio's spans never are, a span made in a task spawned from
//! a request with `.in_current_span()` is not a request of its own, and no
//! task is named `runtime.spawn`.

// The main crate's in-memory sink and recorder setup, shared with its tests.
#[allow(dead_code)]
#[path = "../../tests/support/windows.rs"]
mod windows;

use std::time::Duration;
use tracing::Instrument;

#[test]
fn requests_inside_tokio_task_spans_are_requests() {
    let (blackbox, guard, rt, sink) = windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(50))
            .window(Duration::from_millis(100), Duration::from_millis(20)),
        2,
    );
    rt.block_on(async {
        let connections: Vec<_> = (0..3)
            .map(|i| {
                tokio::spawn(async move {
                    // Tokio's tracing feature is on: the task runs in its span.
                    let current = tracing::Span::current();
                    assert_eq!(current.metadata().map(|m| m.name()), Some("runtime.spawn"));
                    let request = tracing::info_span!("GET /items", item = i);
                    async {
                        let child = tokio::spawn(
                            async {
                                let _query = tracing::info_span!("db.query").entered();
                            }
                            .in_current_span(),
                        );
                        child.await.expect("child");
                        // A task with a span of its own (not a request: its
                        // parent is the request) is named after it, Tokio's
                        // span around it aside.
                        let refresh = tokio::spawn(
                            async { tokio::task::yield_now().await }
                                .instrument(tracing::info_span!("cache_refresh")),
                        );
                        refresh.await.expect("refresh");
                        tokio::time::sleep(Duration::from_millis(60)).await;
                    }
                    .instrument(request)
                    .await;
                })
            })
            .collect();
        for c in connections {
            c.await.expect("connection");
        }
        let _direct = tracing::info_span!("GET /direct").entered();
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    assert_eq!(
        stats.requests_seen, 4,
        "three requests in tasks and one in block_on; Tokio's spans and the query are not: {stats:?}"
    );
    assert_eq!(stats.slow_requests, 3, "{stats:?}");
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
        assert!(own.iter().any(|n| *n == "cache_refresh"), "{own:?}");
    }
    drop(rt);
    drop(guard);
}
