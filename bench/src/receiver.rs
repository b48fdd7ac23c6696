//! A local OTLP gRPC receiver (TraceService) on 127.0.0.1 that counts what it
//! gets: export requests, spans and protobuf bytes. It runs on a thread and
//! runtime of its own, outside the measured runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub bytes: AtomicU64,
}

struct Svc(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let r = request.into_inner();
        let spans: usize = r
            .resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter())
            .map(|ss| ss.spans.len())
            .sum();
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0
            .bytes
            .fetch_add(r.encoded_len() as u64, Ordering::Relaxed);
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
                        .add_service(
                            TraceServiceServer::new(Svc(c))
                                .max_decoding_message_size(64 * 1024 * 1024),
                        )
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
}
