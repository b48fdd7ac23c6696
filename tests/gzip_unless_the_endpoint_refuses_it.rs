//! With no `OTEL_EXPORTER_OTLP_COMPRESSION` set, windows go gzip-compressed
//! to an endpoint that accepts it, and uncompressed, with nothing lost, to
//! one that does not (a tonic server without gzip answers `Unimplemented`);
//! `none` sends uncompressed from the start (issue 25).

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_blackbox::Blackbox;
use tonic::codec::CompressionEncoding;

/// The `grpc-encoding` of each export request received (`None`: uncompressed).
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<Option<String>>>>);

#[tonic::async_trait]
impl TraceService for Recording {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(encoding);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Recording {
    fn seen(&self) -> Vec<Option<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves on 127.0.0.1, reading gzip or not; returns the endpoint and the
/// runtime serving it.
fn start(rec: Recording, gzip: bool) -> (String, tokio::runtime::Runtime) {
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
        let mut service = TraceServiceServer::new(rec);
        if gzip {
            service = service.accept_compressed(CompressionEncoding::Gzip);
        }
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        addr
    });
    (format!("http://{addr}"), rt)
}

/// Two slow requests, one after the other (two windows), exported to
/// `endpoint` over gRPC with `compression` set or not; returns the stats.
fn export_two_windows(
    endpoint: String,
    compression: Option<&'static str>,
) -> tokio_blackbox::BlackboxStats {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(20))
        .window(Duration::from_millis(50), Duration::from_millis(10))
        .with_env(move |name| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            "OTEL_EXPORTER_OTLP_COMPRESSION" => compression.map(str::to_owned),
            "BLACKBOX_DIR" => Some(dir_s.clone()),
            _ => None,
        })
        .build()
        .expect("build");
    {
        use tracing_subscriber::prelude::*;
        let sub = tracing_subscriber::registry().with(blackbox.layer());
        tracing::subscriber::with_default(sub, || {
            for _ in 0..2 {
                let _span = tracing::info_span!("request").entered();
                std::thread::sleep(Duration::from_millis(30));
                drop(_span);
                assert!(blackbox.flush(Duration::from_secs(10)));
            }
        });
    }
    let stats = blackbox.stats();
    drop(guard);
    stats
}

#[test]
fn an_endpoint_that_reads_gzip_gets_gzip() {
    let rec = Recording::default();
    let (endpoint, rt) = start(rec.clone(), true);
    let s = export_two_windows(endpoint, None);
    assert_eq!(s.export_failures, 0, "{s:?}");
    assert!(s.spans_exported > 0, "{s:?}");
    let seen = rec.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|e| e.as_deref() == Some("gzip")),
        "every request compressed: {seen:?}"
    );
    rt.shutdown_background();
}

#[test]
fn an_endpoint_without_gzip_gets_every_window_uncompressed() {
    let rec = Recording::default();
    let (endpoint, rt) = start(rec.clone(), false);
    let s = export_two_windows(endpoint, None);
    assert_eq!(s.export_failures, 0, "{s:?}");
    assert_eq!(s.spans_dropped, 0, "{s:?}");
    assert!(s.spans_exported > 0, "{s:?}");
    let seen = rec.seen();
    assert!(seen.len() >= 2, "both windows arrived: {seen:?}");
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
    rt.shutdown_background();
}

#[test]
fn none_is_uncompressed_even_where_gzip_is_read() {
    let rec = Recording::default();
    let (endpoint, rt) = start(rec.clone(), true);
    let s = export_two_windows(endpoint, Some("none"));
    assert_eq!(s.export_failures, 0, "{s:?}");
    let seen = rec.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
    rt.shutdown_background();
}
