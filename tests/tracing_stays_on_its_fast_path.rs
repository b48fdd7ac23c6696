//! The recorder's own threads (capture, export, metrics) keep their work out
//! of the application's subscriber without a thread-wide scoped dispatcher:
//! while any thread of the process holds one, tracing-core takes its slow
//! path (a thread-local lookup) for every span and event of *every* thread.
//!
//! Observable from outside: on the slow path a `get_default` nested in
//! another sees no dispatcher, on the fast path it sees the global one.

use std::time::Duration;
use tracing_subscriber::prelude::*;

/// Whether tracing-core is on its fast path (no scoped dispatcher anywhere).
fn fast_path() -> bool {
    tracing::dispatcher::get_default(|_| {
        tracing::dispatcher::get_default(|inner| !inner.is::<tracing::subscriber::NoSubscriber>())
    })
}

/// Whether tracing-core is back on its fast path within `limit`: the
/// recorder's threads may be in the middle of a piece of work (an export
/// try, their setup), but never hold a scoped dispatcher beyond it.
fn fast_path_within(limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if fast_path() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_recorders_threads_hold_no_scoped_dispatcher() {
    // Nobody listens there: exports fail and are counted, the threads run
    // (capture, export and metrics, every 300 ms).
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:9".to_string(),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500".to_string()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_string()),
        ("BLACKBOX_DIR", dir.path().to_string_lossy().into_owned()),
    ];
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(5))
        .shutdown_timeout(Duration::from_secs(2))
        .with_env(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .build()
        .expect("recorder");
    tracing_subscriber::registry().with(blackbox.layer()).init();
    assert!(
        fast_path_within(Duration::from_secs(2)),
        "the recorder's threads started, and hold no scoped dispatcher"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Slow requests: captures, windows cut and export attempts.
    rt.block_on(async {
        for _ in 0..3 {
            tokio::spawn(tracing::Instrument::instrument(
                tokio::time::sleep(Duration::from_millis(10)),
                tracing::info_span!("GET /slow"),
            ))
            .await
            .unwrap();
        }
    });
    let _ = blackbox.flush(Duration::from_secs(10));
    let stats = blackbox.stats();
    assert!(stats.captures >= 1, "{stats:?}");
    assert!(
        stats.export_failures + stats.export_retries + stats.windows_exported >= 1,
        "the export thread tried: {stats:?}"
    );
    // The metrics thread tried too (every 300 ms).
    std::thread::sleep(Duration::from_millis(700));
    let stats = blackbox.stats();
    assert!(
        stats.metrics_export_failures + stats.metrics_exported >= 1,
        "the metrics thread tried: {stats:?}"
    );
    assert!(
        fast_path_within(Duration::from_secs(2)),
        "after captures and exports, no thread holds a scoped dispatcher"
    );
    drop(guard);
}
