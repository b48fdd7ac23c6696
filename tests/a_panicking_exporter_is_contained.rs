//! Issue 27, finding 11: an exporter of the app's (`Builder::exporter`) that
//! panics takes one job with it, counted in `export_panics`, not the export
//! thread: the next windows are still exported.

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// Panics on its first export; counts the spans of the others.
#[derive(Debug, Clone, Default)]
struct PanicsOnce {
    calls: Arc<AtomicU64>,
    spans: Arc<AtomicU64>,
}

impl SpanExporter for PanicsOnce {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("the app's exporter failed");
        }
        self.spans.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn an_exporter_that_panics_costs_one_job_and_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = PanicsOnce::default();
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(10))
        .window(Duration::from_millis(20), Duration::from_millis(5))
        .dir(dir.path())
        .exporter(exporter.clone())
        .build()
        .expect("build");
    let sub = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(sub, || {
        for _ in 0..3 {
            {
                let _span = tracing::info_span!("request").entered();
                std::thread::sleep(Duration::from_millis(15));
            }
            // Each its own capture: the last one's window and the cap's second are past.
            std::thread::sleep(Duration::from_millis(300));
            assert!(blackbox.flush(Duration::from_secs(10)));
        }
    });
    let s = blackbox.stats();
    drop(guard);
    assert_eq!(s.export_panics, 1, "{s:?}");
    assert!(
        exporter.spans.load(Ordering::SeqCst) > 0,
        "the windows after the panic were exported: {s:?}"
    );
    // The first window's request went into the panic: that window was not
    // sent whole, the two after it were.
    assert_eq!(s.windows_exported, 2, "{s:?}");
    assert_eq!(s.export_windows_dropped, 1, "{s:?}");
    assert_eq!(s.export_failures, 1, "{s:?}");
}
