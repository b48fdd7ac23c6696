//! Issue 27, finding 8: `Duration::MAX` (or any duration too large to add
//! to an `Instant`) panicked: in `flush`, in the guard's drop with a huge
//! `shutdown_timeout` (an abort when already unwinding), in
//! `latency_threshold` and `window`, and a huge `OTEL_METRIC_EXPORT_INTERVAL`
//! killed the metrics thread. Each is accepted now and means "as long as
//! it takes" (or is refused with a typed error where a value is out of range).

use std::time::Duration;
use tracing_subscriber::prelude::*;

#[test]
fn duration_max_as_threshold_timeouts_and_flush_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::MAX)
        .shutdown_timeout(Duration::MAX)
        .dir(dir.path())
        .build()
        .expect("a huge threshold is accepted (nothing is ever slow)");
    let subscriber = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(subscriber, || {
        let _request = tracing::info_span!("GET /forever").entered();
        std::thread::sleep(Duration::from_millis(20));
    });
    assert!(blackbox.flush(Duration::MAX));
    assert_eq!(blackbox.stats().requests_seen, 1);
    drop(guard);
}

#[test]
fn duration_max_as_window_is_a_typed_error() {
    let err = tokio_blackbox::Blackbox::builder()
        .window(Duration::MAX, Duration::MAX)
        .dir(std::env::temp_dir().join("blackbox-huge-window"))
        .build()
        .expect_err("a window past the maximum window");
    assert!(
        matches!(err, tokio_blackbox::BuildError::InvalidSetting { .. }),
        "{err}"
    );
}

#[test]
fn a_huge_metric_interval_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_string_lossy().into_owned();
    let built = tokio_blackbox::Blackbox::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .with_env(move |var| match var {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:9".into()),
            "OTEL_METRIC_EXPORT_INTERVAL" => Some(u64::MAX.to_string()),
            "BLACKBOX_DIR" => Some(d.clone()),
            _ => None,
        })
        .build();
    match built {
        Ok((blackbox, guard)) => {
            std::thread::sleep(Duration::from_millis(200));
            assert!(blackbox.flush(Duration::from_secs(5)));
            drop(guard);
        }
        Err(e) => eprintln!("refused: {e}"),
    }
}
