//! The export's `OTEL_EXPORTER_OTLP_*` settings, read through
//! `Builder::with_env`: every malformed value is a typed
//! `BuildError::InvalidEnv` naming the variable it came from, the value and
//! what is accepted; none falls back to a default silently. And a timeout
//! that is read is used: with `OTEL_EXPORTER_OTLP_TIMEOUT=300` an endpoint
//! that accepts TCP and never answers fails each try within about 300 ms.

use std::time::{Duration, Instant};
use tokio_blackbox::{Blackbox, BuildError};

/// Builds with exactly these variables set (plus a private BLACKBOX_DIR).
fn build_with(vars: &[(&'static str, &str)]) -> Result<(), BuildError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.push((
        "BLACKBOX_DIR".into(),
        dir.path().to_string_lossy().into_owned(),
    ));
    Blackbox::builder()
        .with_env(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .build()
        .map(drop)
}

#[track_caller]
fn rejected(vars: &[(&'static str, &str)], var: &str, value: &str) {
    match build_with(vars) {
        Ok(()) => panic!("{vars:?} was accepted"),
        Err(e @ BuildError::InvalidEnv { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("{var}={value:?}")),
                "{vars:?}: the error should name {var}={value:?}: {text}"
            );
            assert!(text.contains("expected"), "{text}");
        }
        Err(e) => panic!("{vars:?}: not an InvalidEnv error: {e}"),
    }
}

const EP: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");

#[test]
fn malformed_export_variables_are_errors_naming_the_variable() {
    for (var, bad) in [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1.5"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
    ] {
        rejected(&[EP, (var, bad)], var, bad);
    }
    // Malformed headers: the error names the variable and the keys, never
    // a value (an API key would land in the app's startup log).
    for (var, bad, shown) in [
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20s3cret,no-equals-sign",
            "authorization=<hidden>",
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", "=s3cret", "=<hidden>"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "bad key=s3cret",
            "bad key=<hidden>",
        ),
    ] {
        let err = build_with(&[EP, (var, bad)]).expect_err(bad);
        let text = format!("{err} {err:?}");
        assert!(matches!(err, BuildError::InvalidEnv { .. }), "{text}");
        assert!(text.contains(var) && text.contains(shown), "{text}");
        assert!(
            !text.contains("s3cret"),
            "a header value in the error: {text}"
        );
    }
    // The endpoint itself, from either variable.
    rejected(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "not a url",
    );
    rejected(
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "localhost:4317")],
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "localhost:4317",
    );
    // Good values are accepted: among them what a vendor's setup looks like
    // (https over http/protobuf, gzip; these tests build with `tls-ring`).
    for good in [
        vec![
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://c:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=abc"),
        ],
        vec![EP, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")],
        vec![EP, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", " 250 ")],
        vec![
            EP,
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=abc%20def, x-team=obs",
            ),
        ],
        vec![EP, ("OTEL_EXPORTER_OTLP_COMPRESSION", "none")],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "100"),
        ],
    ] {
        if let Err(e) = build_with(&good) {
            panic!("{good:?} was refused: {e}");
        }
    }
}

#[test]
fn the_timeout_read_through_with_env_is_the_one_used() {
    // Accepts connections and never answers: only the timeout ends a try.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(16).flatten() {
            conns.push(c);
        }
        conns
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let exporter_env = move |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("300".into()),
        "BLACKBOX_DIR" => Some(dir_s.clone()),
        _ => None,
    };
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(20))
        .window(Duration::from_millis(50), Duration::from_millis(10))
        .with_env(exporter_env)
        .build()
        .expect("build");
    {
        use tracing_subscriber::prelude::*;
        let sub = tracing_subscriber::registry().with(blackbox.layer());
        tracing::subscriber::with_default(sub, || {
            let _span = tracing::info_span!("request").entered();
            std::thread::sleep(Duration::from_millis(30));
        });
    }
    let start = Instant::now();
    assert!(blackbox.flush(Duration::from_secs(20)), "flush in time");
    // 3 tries of 300 ms plus 100 + 200 ms of back-off: about 1.2 s, far
    // from the 3 × 10 s of the default timeout.
    let took = start.elapsed();
    let s = blackbox.stats();
    assert_eq!(s.export_failures, 1, "{s:?}");
    assert!(s.spans_dropped > 0, "{s:?}");
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}: the 300 ms timeout was not used"
    );
    eprintln!("flush with a black-holed endpoint and a 300 ms timeout: {took:?}");
    drop(guard);
    drop(held);
}

mod receiver {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use std::sync::{Arc, Mutex};

    /// Records the metadata of each export request.
    #[derive(Clone, Default)]
    pub struct Recording(pub Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>);

    #[tonic::async_trait]
    impl TraceService for Recording {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request.metadata().clone());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// Serves on 127.0.0.1; returns the endpoint and the runtime serving it.
    pub fn start(rec: Recording) -> (String, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(rec))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            addr
        });
        (format!("http://{addr}"), rt)
    }
}

#[test]
fn headers_read_through_with_env_are_sent_as_grpc_metadata() {
    let rec = receiver::Recording::default();
    let (endpoint, rt) = receiver::start(rec.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(20))
        .window(Duration::from_millis(50), Duration::from_millis(10))
        .with_env(move |name| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => Some("Api-Key=s%3Dcret, x-team = obs".into()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("ignored=1".into()),
            "BLACKBOX_DIR" => Some(dir_s.clone()),
            _ => None,
        })
        .build()
        .expect("build");
    {
        use tracing_subscriber::prelude::*;
        let sub = tracing_subscriber::registry().with(blackbox.layer());
        tracing::subscriber::with_default(sub, || {
            let _span = tracing::info_span!("request").entered();
            std::thread::sleep(Duration::from_millis(30));
        });
    }
    assert!(blackbox.flush(Duration::from_secs(10)));
    let s = blackbox.stats();
    assert!(s.spans_exported > 0, "{s:?}");
    let seen = rec.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let first = seen.first().expect("an export request");
    assert_eq!(
        first.get("api-key").and_then(|v| v.to_str().ok()),
        Some("s=cret")
    );
    assert_eq!(
        first.get("x-team").and_then(|v| v.to_str().ok()),
        Some("obs")
    );
    assert!(first.get("ignored").is_none(), "the _TRACES_ variable wins");
    drop(guard);
    rt.shutdown_background();
}
