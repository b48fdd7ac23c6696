//! The recorder: [`Blackbox`] (the handle) and [`BlackboxGuard`] (keeps the
//! capture thread alive), with the dump triggers.
//!
//! The handle owns the recorder's state: the settings, the [`Shared`] state
//! it hands to each layer, the capture thread's counters and the export's.
//! The capture thread lives in [`capture_thread`], the stats in
//! [`stats`](crate::stats).

mod capture_thread;

use crate::capture::Capture;
use crate::clock::{Clock, unix_now_ns};
use crate::config::{self, Settings as Config};
use crate::error::{BuildError, DumpError};
use crate::export::Sink;
use crate::export::metrics::MetricsExport;
use crate::export::sampling::{SamplerSettings, TailSampler};
use crate::export::shared::ExportShared;
use crate::hooks::BlackboxHooks;
use crate::layer::{BlackboxFilter, BlackboxLayer};
use crate::segments::SEGMENT_BYTES;
use crate::shared::{LayerSettings, Msg, Shared};
use crate::stats::{BlackboxStats, Counters};
use capture_thread::Cutter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The flight recorder. Cheap to clone (an `Arc` inside).
///
/// # Examples
///
/// ```
/// use tracing_subscriber::prelude::*;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().with_default_env().build()?;
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// blackbox.install_hooks(builder.enable_all());
/// let rt = builder.build()?;
/// let _subscriber = tracing_subscriber::registry().with(blackbox.layer()).set_default();
/// rt.block_on(async { tokio::spawn(async { 1 + 1 }).await })?;
/// println!("{:?}", blackbox.stats());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Blackbox {
    inner: Arc<Inner>,
}

/// Keeps the recorder's capture thread running; dropping it writes the
/// pending captures and stops the thread, waiting at most the shutdown timeout.
///
/// Keep it in `main`.
#[must_use = "dropping the guard stops the recorder's capture thread"]
#[derive(Debug)]
pub struct BlackboxGuard {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The recorder's own metrics over OTLP, when an endpoint is set.
    metrics: Option<MetricsExport>,
}

/// The state of one recorder.
#[derive(Debug)]
struct Inner {
    config: Config,
    /// What the layers and the capture thread share.
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    /// Raw clock of the last dump on panic (0: none yet).
    last_panic_dump: AtomicU64,
    /// Export counters, and the queue the tail sampler feeds (when the sink
    /// is the recorder's own OTLP or JSON pipeline).
    export: Arc<ExportShared>,
}

pub(crate) fn start(
    config: Config,
    sink: Box<dyn Sink>,
    export: Arc<ExportShared>,
) -> Result<(Blackbox, BlackboxGuard), BuildError> {
    let clock = Clock::new();
    let per_segment = SEGMENT_BYTES + crate::segments::HEADER_BYTES;
    let capture = Arc::new(Capture::new(
        clock,
        config.buffer_memory / per_segment,
        !config.disabled,
    ));
    let (tx, rx) = mpsc::sync_channel(config::DEFAULT_QUEUE_CAPACITY);
    let layer_settings = LayerSettings {
        request_spans: config.request_spans.clone(),
        latency_threshold: config.latency_threshold,
    };
    let shared = Arc::new(Shared::new(layer_settings, capture, tx));
    let counters = Arc::new(Counters::default());
    let cutter = Cutter {
        shared: shared.clone(),
        settings: config.clone(),
    };
    let thread_counters = counters.clone();
    let budget = export.cpu.clone();
    let thread = std::thread::Builder::new()
        .name("blackbox-capture".into())
        .spawn(move || capture_thread::run(cutter, thread_counters, rx, sink, budget))
        .map_err(|source| BuildError::Thread {
            thread: "blackbox-capture",
            source,
        })?;
    let _ = shared.capture_thread.set(thread.thread().clone());
    let inner = Arc::new(Inner {
        config,
        shared,
        counters,
        last_panic_dump: AtomicU64::new(0),
        export,
    });
    Ok((
        Blackbox {
            inner: inner.clone(),
        },
        BlackboxGuard {
            inner,
            thread: Some(thread),
            metrics: None,
        },
    ))
}

// === impl Blackbox ===

impl Blackbox {
    /// Dumps on panic are at most one per minute.
    pub const PANIC_DUMP_INTERVAL: Duration = Duration::from_secs(60);

    /// Dump files [`dump_to_dir`](Blackbox::dump_to_dir) keeps in the
    /// directory, the newest (each is at most the buffer memory): older
    /// `dump-*.bbx` files are removed after each dump.
    pub const DUMPS_KEPT: usize = 8;
    /// Requests at least this long are captured: 500 ms.
    pub const DEFAULT_LATENCY_THRESHOLD: Duration = config::DEFAULT_LATENCY_THRESHOLD;
    /// Activity kept before a slow request: 2 s.
    pub const DEFAULT_WINDOW_BEFORE: Duration = config::DEFAULT_WINDOW_BEFORE;
    /// Activity kept after a slow request: 200 ms.
    pub const DEFAULT_WINDOW_AFTER: Duration = config::DEFAULT_WINDOW_AFTER;
    /// The longest a merged window may grow: 30 s.
    pub const DEFAULT_MAX_WINDOW: Duration = config::DEFAULT_MAX_WINDOW;
    /// Memory for events, all threads together: 16 MiB, about 5 s of a
    /// process recording 300,000 events a second.
    pub const DEFAULT_BUFFER_MEMORY: usize = config::DEFAULT_BUFFER_MEMORY;
    /// Captures per second: 5.
    pub const DEFAULT_MAX_CAPTURES_PER_SEC: u32 = config::DEFAULT_MAX_CAPTURES_PER_SEC;
    /// Directory for capture files and dumps: `./blackbox`.
    pub const DEFAULT_DIR: &'static str = config::DEFAULT_DIR;
    /// Scheduling delay tracking: off (it costs Tokio about 50 ns per poll).
    pub const DEFAULT_SCHEDULE_DELAY: bool = config::DEFAULT_SCHEDULE_DELAY;
    /// Polls longer than 10 ms are flagged as long.
    pub const DEFAULT_LONG_POLL: Duration = config::DEFAULT_LONG_POLL;
    /// Slow requests waiting for the capture thread: 1,024.
    pub const DEFAULT_QUEUE_CAPACITY: usize = config::DEFAULT_QUEUE_CAPACITY;
    /// How long dropping the guard waits for pending captures: 5 s.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = config::DEFAULT_SHUTDOWN_TIMEOUT;
    /// Spans per exported window: 200 (see [`Budget`](crate::export::otlp::Budget)).
    pub const DEFAULT_MAX_SPANS_PER_WINDOW: usize = config::DEFAULT_MAX_SPANS_PER_WINDOW;
    /// Fraction of fast, fine traces the [`TailSampler`] keeps anyway: none.
    pub const DEFAULT_BASELINE_RATIO: f64 = config::DEFAULT_BASELINE_RATIO;
    /// CPU the capture and export threads may use together: 2% of one
    /// core, on average over 10 s (see [`Builder::cpu_budget`](crate::Builder::cpu_budget)).
    pub const DEFAULT_CPU_BUDGET: f64 = config::DEFAULT_CPU_BUDGET;
    /// Traces the [`TailSampler`] holds at once: 4,096.
    pub const DEFAULT_SAMPLER_MAX_TRACES: usize = config::DEFAULT_SAMPLER_MAX_TRACES;
    /// Spans the [`TailSampler`] holds per trace: 1,024. The sampler is also
    /// bounded by bytes (64 MiB by default, see [`TailSampler::with_memory_limit`]).
    pub const DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE: usize =
        config::DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE;

    /// Sets the recorder's hooks on a Tokio runtime builder, replacing any
    /// callbacks set before for the same hooks (Tokio keeps one per hook; see
    /// [`hooks`](Blackbox::hooks) to combine them with your own).
    ///
    /// Without `--cfg tokio_unstable` only the thread hooks (park, unpark,
    /// start, stop) are set. When the recorder is disabled, nothing is set.
    ///
    /// # Examples
    ///
    /// ```
    /// # let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().build().unwrap();
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// blackbox.install_hooks(builder.worker_threads(2).enable_all());
    /// let _rt = builder.build().unwrap();
    /// ```
    #[inline]
    pub fn install_hooks<'a>(
        &self,
        builder: &'a mut tokio::runtime::Builder,
    ) -> &'a mut tokio::runtime::Builder {
        if self.inner.shared.capture.enabled {
            self.hooks().install(builder);
        }
        builder
    }

    /// The hook functions, to call from runtime callbacks of your own.
    pub fn hooks(&self) -> BlackboxHooks {
        BlackboxHooks {
            capture: self.inner.shared.capture.clone(),
            schedule_delay: self.inner.config.schedule_delay,
        }
    }

    /// A `tracing` layer that watches request spans.
    ///
    /// Add it after `tracing_opentelemetry`'s layer, if you use one, so the
    /// captured window lands in the request's own trace.
    ///
    /// A plain layer takes an interest in every callsite, events included
    /// (it reads spans of any level and `ERROR` events): an event that the
    /// other layers filter out with per-layer filters is still dispatched,
    /// to be ignored here. Where the application has many such events, use
    /// [`filtered_layer`](Blackbox::filtered_layer) instead.
    pub fn layer(&self) -> BlackboxLayer {
        BlackboxLayer::new(self.inner.shared.clone())
    }

    /// The layer behind a per-layer filter ([`BlackboxFilter`]: every span,
    /// and `ERROR` events): the recorder then asks for no other callsite,
    /// so events that no other layer wants cost nothing, as without it.
    ///
    /// The price is tracing-subscriber's per-layer filtering on every span
    /// callback (it looks the span up to see whether this filter enabled
    /// it). Measured by `cargo bench --bench layer_overhead` on a 2-vCPU
    /// machine: a request span's enter + exit costs about 200 ns here
    /// against 33 ns with [`layer`](Blackbox::layer) (12 ns with the
    /// registry alone), and a filtered-out `debug!` event 0.9 ns against
    /// 27 ns (0.3 ns without the recorder). Choose this one when such events
    /// outnumber span enters about seven to one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tracing_subscriber::{filter::LevelFilter, prelude::*};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().build()?;
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO))
    ///     .with(blackbox.filtered_layer());
    /// tracing::subscriber::with_default(subscriber, || {
    ///     // No layer reads DEBUG events: the callsite is disabled.
    ///     assert!(!tracing::enabled!(tracing::Level::DEBUG));
    ///     // A DEBUG span (tower-http's default) is still a request.
    ///     let _request = tracing::debug_span!("request").entered();
    /// });
    /// assert_eq!(blackbox.stats().requests_seen, 1);
    /// # Ok(()) }
    /// ```
    pub fn filtered_layer<S>(
        &self,
    ) -> tracing_subscriber::filter::Filtered<BlackboxLayer, BlackboxFilter, S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        self.layer().with_filter(crate::layer::filter())
    }

    /// The counters.
    pub fn stats(&self) -> BlackboxStats {
        let i = &self.inner;
        crate::stats::assemble(
            &i.counters,
            &i.shared,
            &i.export,
            i.config.buffer_memory,
            i.config.schedule_delay,
        )
    }

    /// A span processor for the application's own OpenTelemetry spans that
    /// keeps the traces whose root span was slow (the same
    /// [`latency_threshold`](crate::Builder::latency_threshold)) or failed,
    /// plus a [`baseline_ratio`](crate::Builder::baseline_ratio), and drops
    /// the rest. Kept traces leave through the recorder's exporter, with the
    /// captured windows. See [`TailSampler`].
    ///
    /// With a custom [`sink`](crate::Builder::sink) there is no exporter of
    /// the recorder's: kept traces are then counted in
    /// [`BlackboxStats::sampler_spans_dropped`].
    ///
    /// # Examples
    ///
    /// ```
    /// use opentelemetry_sdk::trace::SdkTracerProvider;
    /// let dir = std::env::temp_dir().join("blackbox-doc-sampler");
    /// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().dir(&dir).build()?;
    /// let provider = SdkTracerProvider::builder()
    ///     .with_span_processor(blackbox.tail_sampler())
    ///     .build();
    /// # drop(provider);
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn tail_sampler(&self) -> TailSampler {
        let c = &self.inner.config;
        TailSampler::new(
            SamplerSettings {
                threshold: c.latency_threshold,
                baseline_ratio: c.baseline_ratio,
                max_traces: c.sampler_max_traces,
                max_spans_per_trace: c.sampler_max_spans_per_trace,
            },
            self.inner.export.clone(),
        )
    }

    /// Cuts every pending capture now, hands it to the sink and flushes the
    /// sink, waiting at most `timeout`. Returns `false` on time-out.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = crate::clock::deadline_after(timeout);
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if !self
            .inner
            .shared
            .send_until(Msg::Flush(ack_tx, deadline), deadline)
        {
            return false;
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }

    /// Writes every ring, with the string table and the recent slow requests,
    /// to a dump file at `path` (mode 0600 on Unix). Writers keep running.
    ///
    /// # Errors
    ///
    /// [`DumpError`] when the file cannot be created or written.
    ///
    /// # Examples
    ///
    /// ```
    /// # let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().build().unwrap();
    /// let path = std::env::temp_dir().join("doc-example.bbx");
    /// blackbox.dump(&path)?;
    /// let dump = tokio_blackbox::dump::read_file(&path)?;
    /// assert_eq!(dump.kind, tokio_blackbox::dump::FileKind::Dump);
    /// # Ok::<(), tokio_blackbox::DumpError>(())
    /// ```
    pub fn dump(&self, path: impl AsRef<Path>) -> Result<(), DumpError> {
        let i = &self.inner;
        let cutter = Cutter {
            shared: i.shared.clone(),
            settings: i.config.clone(),
        };
        let (head, cut) = cutter.snapshot_all();
        crate::dump::write_cut_file(path.as_ref(), &head, &cut, crate::dump::FileKind::Dump)
    }

    /// Writes a dump into the configured directory, named
    /// `dump-<unix ms>-<pid>.bbx`, and returns its path.
    ///
    /// # Errors
    ///
    /// [`DumpError`] when the directory or file cannot be written.
    pub fn dump_to_dir(&self) -> Result<PathBuf, DumpError> {
        crate::dump::create_private_dir(&self.inner.config.dir).map_err(DumpError::io)?;
        let path = self.inner.config.dir.join(format!(
            "dump-{}-{}.bbx",
            unix_now_ns() / 1_000_000,
            std::process::id()
        ));
        self.dump(&path)?;
        crate::dump::prune(&self.inner.config.dir, "dump", Self::DUMPS_KEPT);
        Ok(path)
    }

    /// Writes a dump into the configured directory when the process panics,
    /// then runs the panic hook that was installed before. Opt-in.
    ///
    /// At most one dump per [`PANIC_DUMP_INTERVAL`](Blackbox::PANIC_DUMP_INTERVAL):
    /// a service whose tasks panic often (Tokio catches task panics) would
    /// otherwise stall a worker and write a file for each. The panics not
    /// dumped are counted in [`BlackboxStats::panic_dumps_skipped`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().build().unwrap();
    /// blackbox.dump_on_panic();
    /// ```
    pub fn dump_on_panic(&self) {
        let weak = Arc::downgrade(&self.inner);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(inner) = weak.upgrade() {
                let clock = &inner.shared.capture.clock;
                let now = clock.raw();
                let interval = clock.ticks(Blackbox::PANIC_DUMP_INTERVAL);
                let last = inner.last_panic_dump.load(Ordering::Relaxed);
                let due = last == 0 || now.saturating_sub(last) >= interval;
                if due
                    && inner
                        .last_panic_dump
                        .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    let _ = (Blackbox { inner }).dump_to_dir();
                } else {
                    inner
                        .counters
                        .panic_dumps_skipped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            previous(info);
        }));
    }

    /// Writes a dump into the configured directory each time the process
    /// receives `SIGUSR1` (`kill -USR1 <pid>`). Unix only.
    ///
    /// # Errors
    ///
    /// The OS error if the signal handler cannot be registered.
    #[cfg(unix)]
    pub fn dump_on_signal(&self) -> std::io::Result<()> {
        use signal_hook::consts::SIGUSR1;
        let mut signals = signal_hook::iterator::Signals::new([SIGUSR1])?;
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("blackbox-signal".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let Some(inner) = weak.upgrade() else { break };
                    let _ = (Blackbox { inner }).dump_to_dir();
                }
            })?;
        Ok(())
    }
}

// === impl BlackboxGuard ===

impl Drop for BlackboxGuard {
    /// Waits at most the shutdown timeout in all: for the queue, the pending
    /// captures, the sink's flush and the thread's end.
    fn drop(&mut self) {
        let deadline = crate::clock::deadline_after(self.inner.config.shutdown_timeout);
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        if self
            .inner
            .shared
            .send_until(Msg::Shutdown(ack_tx, deadline), deadline)
            && ack_rx.recv_timeout(left()).is_ok()
            && let Some(t) = self.thread.take()
        {
            while !t.is_finished() && !left().is_zero() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        // Last: the metrics, once more, with the counters of the shutdown.
        if let Some(mut m) = self.metrics.take() {
            m.shutdown(deadline);
        }
    }
}

impl BlackboxGuard {
    /// Keeps the metrics thread, stopped (after a last export) when the
    /// guard is dropped.
    pub(crate) fn with_metrics(mut self, metrics: MetricsExport) -> BlackboxGuard {
        self.metrics = Some(metrics);
        self
    }
}
