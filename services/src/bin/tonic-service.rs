//! A gRPC service as tonic users write one, with tokio-blackbox added as our
//! README says: tonic's server with tower-http's `TraceLayer::new_for_grpc()`
//! (its request spans, `DEBUG`, let through by the filter), a global
//! `EnvFilter`, its own OpenTelemetry pipeline (`tracing-opentelemetry`,
//! `opentelemetry-otlp`, a `BatchSpanProcessor`) and a service name set in
//! code on its `Resource`.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 RUST_LOG=info,tower_http=debug \
//!   cargo run -p tokio-blackbox-services --bin tonic-service
//! ```
//!
//! `pricing.Pricing/Quote` waits the request's `work_ms`, then answers
//! (the messages are in the package's library). It prints `listening on
//! ADDR` once it serves and shuts down on SIGTERM or Ctrl-C: the
//! recorder's guard writes what is pending, then the app's own tracer
//! provider is shut down. `PORT` picks the port (default 50051; 0 for any).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_blackbox_services::{PricingServer, app_exporter, shutdown_signal, stats_line};
use tower_http::trace::TraceLayer;
use tracing_subscriber::{EnvFilter, prelude::*};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resource = Resource::builder().with_service_name("pricing").build();
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .with_default_env()
        .resource(resource.clone())
        .build()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(runtime.enable_all());
    let runtime = runtime.build()?;

    let provider = runtime.block_on(async {
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(app_exporter()?)
            .build();
        tracing_subscriber::registry()
            .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
            .with(tracing_subscriber::fmt::layer())
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("pricing")))
            .with(blackbox.layer())
            .init();
        Ok::<_, Box<dyn std::error::Error>>(provider)
    })?;

    runtime.block_on(async {
        let port: u16 = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(50051);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        tonic::transport::Server::builder()
            .layer(TraceLayer::new_for_grpc())
            .add_service(PricingServer)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown_signal(),
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    // Pending windows are written before the app's own pipeline closes;
    // the recorder's counters go to stdout (the tests read them).
    drop(guard);
    println!("{}", stats_line(&blackbox.stats()));
    provider.shutdown()?;
    drop(runtime);
    println!("shut down cleanly");
    Ok(())
}
