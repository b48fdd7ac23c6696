//! Issue 27, finding 11 (its last part): the export counters say what
//! reached the endpoint. `windows_exported` counted a window when it was
//! mapped, before any send, so a window an endpoint never received was
//! "exported"; `export_failures` counted both failed export requests and
//! abandoned jobs. Now: a window is exported when every request of it was
//! accepted, dropped otherwise (`export_windows_dropped`), and
//! `export_failures` counts export requests only.

use std::net::TcpListener;
use std::time::Duration;
use tokio_blackbox::Blackbox;
use tracing_subscriber::layer::SubscriberExt;

/// Two slow requests, each its own window, with `env` as the environment.
fn two_windows(
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> tokio_blackbox::BlackboxStats {
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(10))
        .window(Duration::from_millis(20), Duration::from_millis(5))
        .with_env(env)
        .build()
        .expect("build");
    let sub = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(sub, || {
        for _ in 0..2 {
            {
                let _span = tracing::info_span!("request").entered();
                std::thread::sleep(Duration::from_millis(15));
            }
            // Each its own capture.
            std::thread::sleep(Duration::from_millis(300));
            assert!(blackbox.flush(Duration::from_secs(20)), "flush in time");
        }
    });
    let s = blackbox.stats();
    drop(guard);
    s
}

#[test]
fn a_window_the_endpoint_never_received_is_not_exported() {
    // A port nobody listens on: every connection is refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let s = two_windows(move |name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(format!("http://127.0.0.1:{port}")),
        "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("500".into()),
        "BLACKBOX_DIR" => Some(dir_s.clone()),
        _ => None,
    });
    assert_eq!(s.windows_written, 2, "{s:?}");
    assert_eq!(s.spans_exported, 0, "{s:?}");
    assert_eq!(
        s.windows_exported, 0,
        "nothing reached the endpoint, yet windows were counted exported: {s:?}"
    );
    assert_eq!(s.export_windows_dropped, 2, "{s:?}");
    // One export request a window (each well under 256 spans), each tried
    // 1 + RETRIES times: requests, not jobs.
    assert_eq!(s.export_failures, 2, "{s:?}");
    assert_eq!(
        s.export_retries,
        2 * u64::from(tokio_blackbox::export::RETRIES),
        "{s:?}"
    );
}

#[test]
fn every_window_written_is_exported_or_dropped_once() {
    // The OTLP JSON file: every window lands.
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let s = two_windows(move |name| match name {
        "BLACKBOX_DIR" => Some(dir_s.clone()),
        _ => None,
    });
    assert_eq!(s.windows_written, 2, "{s:?}");
    assert_eq!(s.windows_exported, 2, "{s:?}");
    assert_eq!(s.export_windows_dropped, 0, "{s:?}");
    assert_eq!(s.export_failures, 0, "{s:?}");
    let text = std::fs::read_to_string(dir.path().join("traces.otlp.jsonl")).expect("the file");
    assert_eq!(text.matches("\"blackbox.window\"").count(), 2);
}
