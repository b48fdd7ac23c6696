//! The tokio-blackbox demo: a small HTTP service with its own load generator.
//!
//! Some requests are slow for three different reasons, and the recorder
//! captures the runtime activity around each:
//!
//! - `/report` waits on a slow downstream call (an awaited 300 ms timer);
//! - a neighbour task blocks its worker now and then (`std::thread::sleep`
//!   inside a spawned task), delaying whatever `/fast` request shares it;
//! - `/crunch` spawns CPU-heavy tasks that saturate both workers.
//!
//! ```text
//! cargo run --release --example demo                   # 10 s, files in ./blackbox
//! cargo run --release --example demo -- --duration 30s
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run --release --example demo
//! ```
//!
//! The threshold is 200 ms unless `BLACKBOX_LATENCY_THRESHOLD` says otherwise.
//!
//! The service traces itself with `tracing-opentelemetry`; the recorder's tail
//! sampler keeps the traces of slow or failed requests (with their windows)
//! and drops the rest. `BLACKBOX_BASELINE_RATIO=1` keeps every trace, for a
//! Collector that samples on its own. Without an endpoint, everything goes to
//! `./blackbox/traces.otlp.jsonl` (OTLP JSON, one export request per line).

use axum::{Router, extract::Request, middleware::Next, response::Response, routing::get};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

struct Args {
    duration: Duration,
    listen: SocketAddr,
    clients: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        duration: Duration::from_secs(10),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        clients: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--duration" => {
                let v = value()?;
                a.duration = tokio_blackbox::parse_duration(&v)
                    .ok_or(format!("--duration {v}: expected a duration such as 10s"))?;
            }
            "--listen" => {
                let v = value()?;
                a.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--clients" => {
                let v = value()?;
                a.clients = v.parse().map_err(|e| format!("--clients {v}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("usage: demo [--duration 10s] [--listen 127.0.0.1:0] [--clients 4]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(a)
}

/// Every request gets a root span: the recorder's default request spans.
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

async fn fast() -> &'static str {
    tokio::task::yield_now().await;
    "ok\n"
}

/// A slow downstream call: the request waits on a timer.
async fn report() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "report\n"
}

/// CPU-heavy work spread over tasks that saturate the workers.
async fn crunch() -> String {
    let jobs: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let mut x = i as u64;
                let until = Instant::now() + Duration::from_millis(120);
                while Instant::now() < until {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                }
                x
            })
        })
        .collect();
    let mut sum = 0u64;
    for j in jobs {
        sum = sum.wrapping_add(j.await.unwrap_or(0));
    }
    format!("{sum}\n")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        // SAFETY: still single-threaded: no other thread reads the environment.
        unsafe { std::env::set_var("OTEL_SERVICE_NAME", "blackbox-demo") };
    }
    let mut builder = tokio_blackbox::Blackbox::builder()
        .window(Duration::from_secs(1), Duration::from_millis(100));
    if std::env::var_os("BLACKBOX_LATENCY_THRESHOLD").is_none() {
        builder = builder.latency_threshold(Duration::from_millis(200));
    }
    let (blackbox, guard) = builder.with_default_env().build()?;

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(rt.worker_threads(2).enable_all());
    let rt = rt.build()?;
    // The service's own spans: the recorder's tail sampler keeps slow or
    // failed traces and sends them with their windows; the rest are dropped.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(blackbox.tail_sampler())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("blackbox-demo")))
        .with(blackbox.layer()) // after the OpenTelemetry layer: same trace ids
        .init();

    let served = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let app = Router::new()
            .route("/fast", get(fast))
            .route("/report", get(report))
            .route("/crunch", get(crunch))
            .layer(axum::middleware::from_fn(request_span));
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        println!("demo: serving on http://{addr} for {:?}", args.duration);
        tokio::spawn(async move { axum::serve(listener, app).await });

        // The blocking neighbour: every 1.5 s it holds a worker for 250 ms.
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tokio::spawn(async { std::thread::sleep(Duration::from_millis(250)) });
            }
        });

        let deadline = Instant::now() + args.duration;
        let clients: Vec<_> = (0..args.clients)
            .map(|c| {
                let served = served.clone();
                tokio::spawn(async move {
                    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        n += 1;
                        let path = match (n + c as u64) % 20 {
                            0 => "report",
                            7 if c == 0 => "crunch",
                            _ => "fast",
                        };
                        let Ok(uri) = format!("http://{addr}/{path}").parse::<hyper::Uri>() else {
                            continue;
                        };
                        if let Ok(resp) = client.get(uri).await {
                            let _ = resp.into_body().collect().await;
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
        Ok::<_, std::io::Error>(())
    })?;

    let _ = provider.force_flush();
    blackbox.flush(Duration::from_secs(10));
    let stats = blackbox.stats();
    let _ = provider.shutdown();
    drop(guard);
    println!(
        "demo: {} requests served, {} slow (threshold {}), {} captures ({} merged, {} skipped by the cap, {} shed by the CPU budget)",
        served.load(Ordering::Relaxed),
        stats.slow_requests,
        std::env::var("BLACKBOX_LATENCY_THRESHOLD").unwrap_or_else(|_| "200ms".into()),
        stats.captures,
        stats.requests_merged,
        stats.requests_skipped,
        stats.windows_shed,
    );
    println!(
        "demo: {} events recorded in {} KiB of buffer, {} overwritten, {} dropped; task hooks: {}",
        stats.events_recorded,
        stats.buffer_bytes / 1024,
        stats.events_overwritten,
        stats.events_dropped,
        if stats.task_hooks {
            "on"
        } else {
            "off (built without --cfg tokio_unstable: only request spans and worker park/unpark were recorded)"
        }
    );
    println!(
        "demo: tail sampling kept {} traces and dropped {}; {} windows and {} spans exported, {} spans dropped",
        stats.traces_kept,
        stats.traces_sampled_out,
        stats.windows_exported,
        stats.spans_exported,
        stats.spans_dropped
    );
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .ok();
    match endpoint {
        Some(endpoint) => {
            println!("demo: sent to {endpoint}; open the slow traces in Jaeger or Tempo")
        }
        None => {
            let dir = std::env::var("BLACKBOX_DIR")
                .unwrap_or_else(|_| tokio_blackbox::Blackbox::DEFAULT_DIR.into());
            println!(
                "demo: no OTEL_EXPORTER_OTLP_ENDPOINT, so the windows were written to {dir}/traces.otlp.jsonl (OTLP JSON); \
                 `cargo run -- summary {dir}/traces.otlp.jsonl` shows them"
            );
        }
    }
    Ok(())
}
