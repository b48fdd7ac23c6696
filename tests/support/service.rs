//! A small real service for the export tests: axum on a multi-thread Tokio
//! runtime with the recorder's hooks, `tracing-opentelemetry` feeding the
//! recorder's tail sampler, and a blocking neighbour that wakes every 100 ms
//! and holds a worker for 30 ms with `std::thread::sleep`.
//!
//! Routes: `/fast` and `/slow` (sleeps 300 ms, with a helper task of its
//! own); both answer with the request's trace id in hex.

use axum::Router;
use axum::routing::get;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_blackbox::{Blackbox, BlackboxGuard, Builder};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::prelude::*;

/// The line of the neighbour's `tokio::spawn` (its spawn location).
pub static NEIGHBOUR_LINE: AtomicU32 = AtomicU32::new(0);

/// How long `/slow` takes.
pub const SLOW: Duration = Duration::from_millis(300);

pub struct TestService {
    pub blackbox: Blackbox,
    guard: Option<BlackboxGuard>,
    provider: SdkTracerProvider,
    rt: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
}

fn trace_id() -> String {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

async fn fast() -> String {
    trace_id()
}

async fn slow() -> String {
    let helper = tokio::spawn(
        async { tokio::time::sleep(Duration::from_millis(20)).await }.in_current_span(),
    );
    tokio::time::sleep(SLOW).await;
    let _ = helper.await;
    trace_id()
}

async fn request_span(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let name = format!("GET {}", req.uri().path());
    let span = tracing::info_span!("request", otel.name = %name, otel.kind = "server");
    next.run(req).instrument(span).await
}

impl TestService {
    /// Starts the service; `builder` is the recorder's configuration.
    pub fn start(builder: Builder) -> TestService {
        let (blackbox, guard) = builder.build().expect("build recorder");
        let provider = SdkTracerProvider::builder()
            .with_span_processor(blackbox.tail_sampler())
            .build();
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("test-service"));
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(otel)
                .with(blackbox.layer()),
        );
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        blackbox.install_hooks(rt.worker_threads(2).enable_all());
        let rt = rt.build().expect("runtime");
        // axum spawns a task per connection, which would not inherit a
        // scoped subscriber: the service's subscriber is the global one (one
        // service per test binary).
        tracing::dispatcher::set_global_default(dispatch).expect("one TestService per test binary");
        let addr = rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let app = Router::new()
                .route("/fast", get(fast))
                .route("/slow", get(slow))
                .layer(axum::middleware::from_fn(request_span));
            let server = async move { axum::serve(listener, app).await };
            tokio::spawn(server);
            let neighbour = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let block = || std::thread::sleep(Duration::from_millis(30));
                    // Keep the spawn on the next line (short enough for rustfmt).
                    NEIGHBOUR_LINE.store(line!() + 1, Ordering::Relaxed);
                    let blocking = tokio::spawn(async move { block() });
                    let _ = blocking.await;
                }
            };
            tokio::spawn(neighbour);
            addr
        });
        TestService {
            blackbox,
            guard: Some(guard),
            provider,
            rt: Some(rt),
            addr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the runtime, then the recorder (flushing pending captures).
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        let _ = self.provider.shutdown();
        drop(self.guard.take());
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.stop();
    }
}
