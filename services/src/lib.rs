//! What the services share: the tonic service's gRPC API (`pricing.Pricing`,
//! one unary method `Quote`), written as `tonic-build` would generate it
//! (the messages with prost's derive, the server as a `tower::Service`, the
//! client call through `tonic::client::Grpc`), so the package needs no
//! `protoc`; and the app's own OpenTelemetry pipeline, as both services set
//! it up.

use opentelemetry_otlp::SpanExporter;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The app's own exporter: OTLP/HTTP (opentelemetry-otlp's default), or
/// gRPC when the standard variable asks for it. Build it inside the
/// runtime: a gRPC exporter's channel starts on build.
///
/// # Errors
///
/// What opentelemetry-otlp says of the settings.
pub fn app_exporter() -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("grpc") => SpanExporter::builder().with_tonic().build(),
        _ => SpanExporter::builder().with_http().build(),
    }
}

/// The recorder's counters as one line, `blackbox: key=value ...`, which a
/// service prints as it stops (the tests read it).
pub fn stats_line(stats: &tokio_blackbox::BlackboxStats) -> String {
    format!(
        "blackbox: requests_seen={} slow_requests={} windows_exported={} spans_exported={} \
         export_failures={} windows_unlinked={} request_callsites_hidden={} task_hooks={}",
        stats.requests_seen,
        stats.slow_requests,
        stats.windows_exported,
        stats.spans_exported,
        stats.export_failures,
        stats.windows_unlinked,
        stats.request_callsites_hidden,
        stats.task_hooks
    )
}

/// Resolves when the process gets SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// `pricing.QuoteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuoteRequest {
    /// The item to price.
    #[prost(string, tag = "1")]
    pub item: String,
    /// How long the pricing engine takes, milliseconds (the test's knob).
    #[prost(uint64, tag = "2")]
    pub work_ms: u64,
}

/// `pricing.QuoteReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuoteReply {
    /// The price in cents.
    #[prost(uint64, tag = "1")]
    pub cents: u64,
}

/// The gRPC path of `Quote`.
pub const QUOTE_PATH: &str = "/pricing.Pricing/Quote";

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The `pricing.Pricing` server: `Quote` waits `work_ms` (a downstream
/// pricing engine), then answers.
#[derive(Clone, Debug, Default)]
pub struct PricingServer;

impl tonic::server::NamedService for PricingServer {
    const NAME: &'static str = "pricing.Pricing";
}

struct Quote;

impl tonic::server::UnaryService<QuoteRequest> for Quote {
    type Response = QuoteReply;
    type Future = BoxFuture<tonic::Response<QuoteReply>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<QuoteRequest>) -> Self::Future {
        Box::pin(async move {
            let req = request.into_inner();
            tokio::time::sleep(std::time::Duration::from_millis(req.work_ms)).await;
            Ok(tonic::Response::new(QuoteReply {
                cents: 100 + req.item.len() as u64,
            }))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for PricingServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == QUOTE_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Quote, req).await)
            })
        } else {
            Box::pin(async { Ok(tonic::Status::unimplemented("no such method").into_http()) })
        }
    }
}

/// Calls `Quote` on `channel`, as a generated client would.
///
/// # Errors
///
/// The call's status.
pub async fn quote(
    channel: tonic::transport::Channel,
    request: QuoteRequest,
) -> Result<QuoteReply, tonic::Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(QUOTE_PATH);
    let reply = client
        .unary(
            tonic::Request::new(request),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(reply.into_inner())
}
