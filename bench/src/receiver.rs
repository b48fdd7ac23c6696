//! A local OTLP gRPC receiver (TraceService) on 127.0.0.1 that counts what it
//! gets: export requests, spans, protobuf bytes (decoded) and wire bytes (the
//! request bodies as sent: gRPC frames, gzip-compressed when the exporter
//! compressed them; it accepts gzip as the Collector and Jaeger do), and
//! per `blackbox.window` the bytes of its trace. It runs on a thread and
//! runtime of its own, outside the measured runtime.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codec::CompressionEncoding;
use tonic::codegen::{Bytes, Service, http};
use tonic::server::NamedService;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub spans: AtomicU64,
    /// Protobuf bytes of the export requests, decoded.
    pub bytes: AtomicU64,
    /// Request body bytes as they arrived (gRPC frames, compressed or not).
    pub wire_bytes: AtomicU64,
    /// `blackbox.window` spans received.
    pub windows: AtomicU64,
    /// Per trace: (wire bytes, decoded bytes, holds a `blackbox.window`).
    /// A request's wire bytes are shared among its traces in proportion to
    /// their spans' decoded bytes.
    traces: Mutex<HashMap<Vec<u8>, (f64, u64, bool)>>,
}

/// One request's wire bytes, counted by [`WireCount`] as its body is read.
#[derive(Clone, Default)]
struct WireBytes(Arc<AtomicU64>);

/// A request body that counts its data frames as they are read.
struct WireCount<B> {
    inner: B,
    total: Arc<Counts>,
    this: WireBytes,
}

impl<B> tonic::codegen::Body for WireCount<B>
where
    B: tonic::codegen::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            let n = d.len() as u64;
            self.total.wire_bytes.fetch_add(n, Ordering::Relaxed);
            self.this.0.fetch_add(n, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The trace service with every request body counted ([`WireCount`]).
#[derive(Clone)]
struct Wire<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S: NamedService> NamedService for Wire<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<tonic::body::Body>> for Wire<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> S::Future {
        let this = WireBytes::default();
        let total = self.counts.clone();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(this.clone());
        let body = tonic::body::Body::new(WireCount {
            inner: body,
            total,
            this,
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

struct Svc(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let wire = request
            .extensions()
            .get::<WireBytes>()
            .map_or(0, |w| w.0.load(Ordering::Relaxed));
        let r = request.into_inner();
        let all = || {
            r.resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter())
                .flat_map(|ss| ss.spans.iter())
        };
        let spans = all().count();
        let decoded = r.encoded_len() as u64;
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0.bytes.fetch_add(decoded, Ordering::Relaxed);
        let windows = all().filter(|s| s.name == "blackbox.window").count();
        self.0.windows.fetch_add(windows as u64, Ordering::Relaxed);
        let ratio = wire as f64 / decoded.max(1) as f64;
        if let Ok(mut traces) = self.0.traces.lock() {
            for s in all() {
                let len = s.encoded_len() as u64;
                let t = traces.entry(s.trace_id.clone()).or_default();
                t.0 += len as f64 * ratio;
                t.1 += len;
                t.2 |= s.name == "blackbox.window";
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct Receiver {
    pub counts: Arc<Counts>,
    addr: std::net::SocketAddr,
}

impl Receiver {
    pub fn start() -> Receiver {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind receiver");
                    tx.send(l.local_addr().expect("addr")).expect("send addr");
                    tonic::transport::Server::builder()
                        .add_service(Wire {
                            inner: TraceServiceServer::new(Svc(c.clone()))
                                .accept_compressed(CompressionEncoding::Gzip)
                                .max_decoding_message_size(64 * 1024 * 1024),
                            counts: c,
                        })
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                        .await
                        .expect("receiver serve");
                });
            })
            .expect("receiver thread");
        let addr = rx.recv().expect("receiver address");
        Receiver { counts, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bytes(&self) -> u64 {
        self.counts.bytes.load(Ordering::Relaxed)
    }

    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Request body bytes as sent (compressed when the exporter compressed).
    pub fn wire_bytes(&self) -> u64 {
        self.counts.wire_bytes.load(Ordering::Relaxed)
    }

    /// `blackbox.window` spans received.
    pub fn windows(&self) -> u64 {
        self.counts.windows.load(Ordering::Relaxed)
    }

    /// The median over the traces holding a `blackbox.window` span of
    /// (wire bytes, decoded bytes): a window's spans are all in its trace,
    /// except one small reference span per other slow request it covers.
    pub fn median_window_bytes(&self) -> (u64, u64) {
        let Ok(traces) = self.counts.traces.lock() else {
            return (0, 0);
        };
        let median = |mut v: Vec<u64>| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let windows = || traces.values().filter(|t| t.2);
        (
            median(windows().map(|t| t.0.round() as u64).collect()),
            median(windows().map(|t| t.1).collect()),
        )
    }
}
