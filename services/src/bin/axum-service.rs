//! A service as the ecosystem's READMEs write one, with tokio-blackbox added
//! as our README says: axum 0.8, tower-http's `TraceLayer::new_for_http()`,
//! a global `EnvFilter` defaulting to `info` with a `fmt` layer, its own
//! OpenTelemetry pipeline (`tracing-opentelemetry`, `opentelemetry-otlp` with
//! its default features, a `BatchSpanProcessor`), a service name set in code
//! on its `Resource`, and a `reqwest::Client::new()` calling a downstream.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 RUST_LOG=info,tower_http=debug \
//!   cargo run -p tokio-blackbox-services --bin axum-service     # then: curl localhost:3000/slow
//! ```
//!
//! Routes: `/fast`; `/slow`, which waits on a downstream call (`/downstream`,
//! 400 ms) through reqwest. It prints `listening on ADDR` once it serves,
//! and shuts down on SIGTERM or Ctrl-C: the recorder's guard writes what
//! is pending, then the app's own tracer provider is shut down (an error
//! there is an error of the program). `PORT` picks the port (default 3000;
//! 0 for any). `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` makes the app's own
//! exporter gRPC too (the recorder reads the same variables).

use axum::{Router, extract::State, routing::get};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tokio_blackbox_services::{app_exporter, shutdown_signal, stats_line};
use tower_http::trace::TraceLayer;
use tracing_subscriber::{EnvFilter, prelude::*};

#[derive(Clone)]
struct App {
    client: reqwest::Client,
    downstream: String,
}

async fn fast() -> &'static str {
    "fast\n"
}

async fn downstream() -> &'static str {
    tokio::time::sleep(Duration::from_millis(400)).await;
    "inventory\n"
}

/// A request that waits on a downstream call.
async fn slow(State(app): State<App>) -> String {
    match app.client.get(&app.downstream).send().await {
        Ok(reply) => reply.text().await.unwrap_or_default(),
        Err(e) => format!("downstream failed: {e}\n"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resource = Resource::builder().with_service_name("checkout").build();
    // tokio-blackbox, as its README says: before the runtime, whose hooks it installs.
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .with_default_env()
        .resource(resource.clone())
        .build()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(runtime.enable_all());
    let runtime = runtime.build()?;

    let provider = runtime.block_on(async {
        // Built in the runtime: a gRPC exporter's channel starts on build.
        let exporter = app_exporter()?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build();
        tracing_subscriber::registry()
            .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
            .with(tracing_subscriber::fmt::layer())
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("checkout")))
            .with(blackbox.layer())
            .init();
        Ok::<_, Box<dyn std::error::Error>>(provider)
    })?;

    runtime.block_on(async {
        let port: u16 = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let app = App {
            client: reqwest::Client::new(),
            downstream: format!("http://{addr}/downstream"),
        };
        let router = Router::new()
            .route("/fast", get(fast))
            .route("/slow", get(slow))
            .route("/downstream", get(downstream))
            .layer(TraceLayer::new_for_http())
            .with_state(app);
        println!("listening on {addr}");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
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
