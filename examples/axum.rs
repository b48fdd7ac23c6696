//! The smallest real service with the recorder and `tracing-opentelemetry`.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_SERVICE_NAME=axum-demo \
//!   cargo run --example axum          # then: curl localhost:3000/slow
//! ```
//! Without an endpoint, captures go to `./blackbox/traces.otlp.jsonl`.
use axum::{Router, routing::get};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::prelude::*;

async fn slow() -> &'static str {
    // A neighbour blocking its worker: the window shows its long poll.
    tokio::spawn(async { std::thread::sleep(Duration::from_millis(50)) });
    tokio::time::sleep(Duration::from_millis(600)).await;
    "slow\n"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
        .with_default_env()
        .build()?;
    // The app's own spans: slow or failed traces are kept, with their window.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(blackbox.tail_sampler())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("axum-demo")))
        .with(blackbox.layer()) // after the OpenTelemetry layer: same trace ids
        .init();

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(rt.enable_all());
    rt.build()?.block_on(async {
        let app = Router::new()
            .route("/", get(|| async { "fast\n" }))
            .route("/slow", get(slow))
            // tower-http's request spans, made at INFO so an `info` filter lets them through.
            .layer(
                tower_http::trace::TraceLayer::new_for_http().make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                tokio::signal::ctrl_c().await.ok();
            })
            .await
    })?;
    println!("{:?}", blackbox.stats());
    provider.shutdown()?;
    Ok(())
}
