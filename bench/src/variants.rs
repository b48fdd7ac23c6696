//! The variants: what a service would install instead of (or as) the recorder.
//! Each builds the runtime the workload runs on and installs its subscriber.

use std::any::Any;
use std::path::PathBuf;
use std::time::Duration;

use crate::receiver::Receiver;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Plain,
    Registry,
    /// A registry with one layer that does nothing: what any subscriber
    /// with a layer costs. A bare registry never frees a closed span
    /// (tokio-rs/tracing#900: the close bookkeeping runs in `Layered`), so
    /// it does less per span than any real subscriber, and grows.
    RegistryLayer,
    Blackbox,
    /// The recorder with `Blackbox::filtered_layer` (a per-layer filter).
    BlackboxFiltered,
    BlackboxStorm,
    TokioMetrics,
    OtelAll,
    Dial9,
    Console,
    /// Tokio's four task hooks set to closures that read what the recorder's
    /// read (the task id, the spawn location) and do nothing with it: what
    /// the hooks themselves cost, the floor under any recorder built on them.
    HooksOnly,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Plain,
        Variant::Registry,
        Variant::RegistryLayer,
        Variant::Blackbox,
        Variant::BlackboxFiltered,
        Variant::BlackboxStorm,
        Variant::TokioMetrics,
        Variant::OtelAll,
        Variant::Dial9,
        Variant::Console,
        Variant::HooksOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Registry => "registry",
            Variant::RegistryLayer => "registry-layer",
            Variant::Blackbox => "blackbox",
            Variant::BlackboxFiltered => "blackbox-filtered",
            Variant::BlackboxStorm => "blackbox-storm",
            Variant::TokioMetrics => "tokio-metrics",
            Variant::OtelAll => "otel-all",
            Variant::Dial9 => "dial9",
            Variant::Console => "console",
            Variant::HooksOnly => "hooks-only",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// What the workloads see of a variant: the TaskMonitor that instruments
/// each task or request (tokio-metrics), cloned into tasks.
#[derive(Clone, Default)]
pub struct Ctx {
    pub task_monitor: Option<tokio_metrics::TaskMonitor>,
}

/// A variant set up: the runtime to measure and what must stay alive.
pub struct Setup {
    pub rt: tokio::runtime::Runtime,
    pub variant: Variant,
    /// What the workloads need of the variant.
    pub ctx: Ctx,
    pub blackbox: Option<tokio_blackbox::Blackbox>,
    pub receiver: Option<Receiver>,
    pub otel: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    pub dial9_dir: Option<PathBuf>,
    /// Guards and recorders dropped after the runtime (blackbox guard, dial9 recorder).
    pub keep: Vec<Box<dyn Any>>,
}

pub fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("blackbox-bench-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The one place the blackbox variants are configured: adapt this when the
/// builder changes (`buffer_memory(bytes)` replaces events_per_thread /
/// max_threads after the capture-core rewrite). Buffer memory: the default.
pub fn blackbox(
    threshold: Duration,
    otlp_endpoint: Option<String>,
) -> (tokio_blackbox::Blackbox, tokio_blackbox::BlackboxGuard) {
    let mut b = tokio_blackbox::Blackbox::builder()
        .latency_threshold(threshold)
        .dir(temp_dir("blackbox"));
    if let Some(endpoint) = otlp_endpoint {
        b = b.with_env(move |var| match var {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            _ => None,
        });
    }
    b.build().expect("blackbox build")
}

/// The ring memory the blackbox variants may use, bytes.
pub fn blackbox_buffer_bytes(bb: &tokio_blackbox::Blackbox) -> usize {
    bb.stats().buffer_bytes_limit
}

fn set_global<S>(s: S)
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    tracing::subscriber::set_global_default(s).expect("global subscriber");
}

/// Builds the variant's runtime (`workers` = 0: current-thread) and installs
/// its subscriber globally. `threshold` is the blackbox latency threshold
/// (ignored by the others).
pub fn setup(variant: Variant, workers: usize, threshold: Option<Duration>) -> Setup {
    use tracing_subscriber::layer::SubscriberExt;
    let mut b = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all();
    let mut s = Setup {
        // Placeholder until the variant builds its own (dial9 builds it).
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt"),
        variant,
        ctx: Ctx::default(),
        blackbox: None,
        receiver: None,
        otel: None,
        dial9_dir: None,
        keep: Vec::new(),
    };
    match variant {
        Variant::Plain => s.rt = b.build().expect("rt"),
        Variant::HooksOnly => {
            b.on_task_spawn(|m| {
                std::hint::black_box((m.id(), m.spawned_at()));
            })
            .on_before_task_poll(|m| {
                std::hint::black_box(m.id());
            })
            .on_after_task_poll(|m| {
                std::hint::black_box(m.spawned_at());
            })
            .on_task_terminate(|m| {
                std::hint::black_box(m.id());
            });
            s.rt = b.build().expect("rt");
        }
        Variant::Registry => {
            set_global(tracing_subscriber::registry());
            s.rt = b.build().expect("rt");
        }
        Variant::RegistryLayer => {
            set_global(
                tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new()),
            );
            s.rt = b.build().expect("rt");
        }
        Variant::Blackbox | Variant::BlackboxFiltered | Variant::BlackboxStorm => {
            let endpoint = if variant == Variant::BlackboxStorm {
                let r = Receiver::start();
                let e = r.endpoint();
                s.receiver = Some(r);
                Some(e)
            } else {
                None
            };
            let default = if variant == Variant::BlackboxStorm {
                Duration::ZERO
            } else {
                Duration::from_secs(3600)
            };
            let (bb, guard) = blackbox(threshold.unwrap_or(default), endpoint);
            bb.install_hooks(&mut b);
            if variant == Variant::BlackboxFiltered {
                set_global(tracing_subscriber::registry().with(bb.filtered_layer()));
            } else {
                set_global(tracing_subscriber::registry().with(bb.layer()));
            }
            s.rt = b.build().expect("rt");
            s.blackbox = Some(bb);
            s.keep.push(Box::new(guard));
        }
        Variant::TokioMetrics => {
            s.rt = b.build().expect("rt");
            let monitor = tokio_metrics::RuntimeMonitor::new(s.rt.handle());
            // Sampled once a second, as a metrics exporter would.
            s.rt.spawn(async move {
                for m in monitor.intervals() {
                    std::hint::black_box(m);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let tm = tokio_metrics::TaskMonitor::new();
            let tm2 = tm.clone();
            s.rt.spawn(async move {
                for m in tm2.intervals() {
                    std::hint::black_box(m);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            s.ctx.task_monitor = Some(tm);
        }
        Variant::OtelAll => {
            use opentelemetry::trace::TracerProvider as _;
            let r = Receiver::start();
            s.rt = b.build().expect("rt");
            // tonic's lazy channel spawns its worker on the current runtime:
            // the measured one, where a service would build it.
            let exporter = {
                let _e = s.rt.enter();
                use opentelemetry_otlp::WithExportConfig;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(r.endpoint())
                    .build()
                    .expect("otlp exporter")
            };
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("blackbox-bench");
            // The exporter's own transport spans (h2, tonic, hyper, tower)
            // filtered out, as every tracing-opentelemetry setup must, or each
            // export produces more spans to export.
            use tracing_subscriber::Layer as _;
            let not_transport = tracing_subscriber::filter::filter_fn(|m| {
                let t = m.target();
                !["h2", "tonic", "hyper", "tower"]
                    .iter()
                    .any(|p| t.starts_with(p))
            });
            set_global(
                tracing_subscriber::registry().with(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(not_transport),
                ),
            );
            s.receiver = Some(r);
            s.otel = Some(provider);
        }
        #[cfg(not(feature = "dial9"))]
        Variant::Dial9 => {
            eprintln!("the dial9 variant needs the `dial9` feature (on by default)");
            std::process::exit(2);
        }
        #[cfg(feature = "dial9")]
        Variant::Dial9 => {
            use dial9::Dial9HandleTokioExt;
            // As dial9's production_use example: a rotated, size-bounded disk
            // buffer, task tracking on (every poll, spawn and terminate).
            let dir = temp_dir("dial9");
            let writer = dial9::DiskBuffer::builder()
                .base_path(dir.join("trace"))
                .max_file_size(64 * 1024 * 1024)
                .max_total_size(1024 * 1024 * 1024)
                .rotation_period(Duration::from_secs(60))
                .build()
                .expect("dial9 writer");
            let recorder = dial9::recorder(writer).build();
            s.rt = recorder
                .handle()
                .attach_tokio_runtime(
                    b,
                    dial9::TokioAttachOptions::builder()
                        .task_tracking_enabled(true)
                        .build(),
                )
                .expect("dial9 runtime");
            s.keep.push(Box::new(recorder));
            s.dial9_dir = Some(dir);
        }
        Variant::Console => {
            #[cfg(feature = "console")]
            {
                let layer = console_subscriber::ConsoleLayer::builder()
                    .server_addr(([127, 0, 0, 1], 0))
                    .spawn();
                set_global(tracing_subscriber::registry().with(layer));
                s.rt = b.build().expect("rt");
            }
            #[cfg(not(feature = "console"))]
            {
                eprintln!(
                    "the console variant needs `--features console` (its own build: tools/bench.sh)"
                );
                std::process::exit(2);
            }
        }
    }
    s
}

/// Bytes a directory's files hold (dial9's trace segments).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_bytes(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
