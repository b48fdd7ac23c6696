//! With Tokio's real `tracing` feature (and `tokio_unstable`, as
//! tokio-console needs), every task and `block_on`'s future run inside Tokio's
//! `runtime.spawn` span (a root span). Request spans made inside them are
//! still requests, Tokio's spans never are, a span made in a task spawned from
//! a request with `.in_current_span()` is not a request of its own, and no
//! task is named `runtime.spawn`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_blackbox::{Blackbox, Sink, SinkError, Window};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

/// Counts the `runtime.spawn` spans Tokio makes: the feature is really on.
struct CountTokioSpans(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountTokioSpans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "runtime.spawn" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps the windows written.
#[derive(Clone, Default)]
struct Collect(Arc<std::sync::Mutex<Vec<Window>>>);

impl Sink for Collect {
    fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        self.0.lock().expect("windows").push(window.clone());
        Ok(())
    }
}

#[test]
fn requests_inside_tokio_task_spans_are_requests() {
    let sink = Collect::default();
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(50))
        .window(Duration::from_millis(100), Duration::from_millis(20))
        .sink(sink.clone())
        .build()
        .expect("build");
    let tokio_spans = Arc::new(AtomicU64::new(0));
    tracing_subscriber::registry()
        .with(CountTokioSpans(tokio_spans.clone()))
        .with(blackbox.layer())
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    rt.block_on(async {
        let connections: Vec<_> = (0..3)
            .map(|i| {
                tokio::spawn(async move {
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
    assert!(
        tokio_spans.load(Ordering::Relaxed) >= 7,
        "Tokio's tracing feature made its task spans"
    );
    let stats = blackbox.stats();
    assert_eq!(
        stats.requests_seen, 4,
        "three requests in tasks and one in block_on; Tokio's spans and the query are not: {stats:?}"
    );
    assert_eq!(stats.slow_requests, 3, "{stats:?}");
    let windows = sink.0.lock().expect("windows").clone();
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
