//! The recorder: [`Blackbox`] (the handle), [`BlackboxGuard`] (keeps the
//! capture thread alive) and [`BlackboxStats`].
//!
//! The capture thread (`blackbox-capture`) receives slow requests from the
//! layer through a bounded queue, asks the [`trigger`](crate::trigger) what to
//! do, cuts each due window from all rings and hands it to the sink.

use crate::builder::{Builder, Config};
use crate::capture::{Capture, Lanes};
use crate::clock::{Clock, unix_now_ns};
use crate::error::{BuildError, DumpError};
use crate::export::Sink;
use crate::export::sampling::{SamplerSettings, TailSampler};
use crate::export::transport::ExportShared;
use crate::hooks::BlackboxHooks;
use crate::layer::BlackboxLayer;
use crate::sync::lock;
use crate::trigger::{Decision, Pending, Trigger};
use crate::window::{SlowRequest, Window};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many recent slow requests a dump carries.
const RECENT_SLOW: usize = 256;

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
    pub(crate) inner: Arc<Inner>,
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
}

/// Counters of what the recorder did. Taking them costs a few atomic loads.
///
/// `slow_requests == captures + requests_merged + requests_skipped + slow_requests_dropped`
/// once the capture thread has seen every slow request (after a flush).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlackboxStats {
    /// Events written to the rings.
    pub events_recorded: u64,
    /// Events overwritten by newer ones (the rings are full; this is normal).
    pub events_overwritten: u64,
    /// Events not recorded because the thread had no ring (see `max_threads`).
    pub events_dropped: u64,
    /// Request spans opened.
    pub requests_seen: u64,
    /// Request spans that ran at least the threshold.
    pub slow_requests: u64,
    /// Captures started (each becomes one window).
    pub captures: u64,
    /// Slow requests that joined an overlapping capture.
    pub requests_merged: u64,
    /// Slow requests not captured because of the per-second cap.
    pub requests_skipped: u64,
    /// Slow requests lost because the capture queue was full.
    pub slow_requests_dropped: u64,
    /// Windows handed to the sink successfully.
    pub windows_written: u64,
    /// Windows the sink failed to write.
    pub sink_errors: u64,
    /// Bytes of ring memory allocated now.
    pub ring_bytes: usize,
    /// The most ring memory the settings allow.
    pub ring_bytes_limit: usize,
    /// Whether Tokio's task hooks are compiled in (`--cfg tokio_unstable`). When
    /// `false`, only request spans and worker park/unpark are recorded.
    pub task_hooks: bool,
    /// Whether scheduling delays are recorded.
    pub schedule_delay: bool,
    /// Windows the export thread mapped to spans and sent (or tried to).
    pub windows_exported: u64,
    /// Spans the exporter accepted (windows and kept traces).
    pub spans_exported: u64,
    /// Spans dropped after the export retries failed (endpoint down or slow).
    pub spans_dropped: u64,
    /// Export requests retried.
    pub export_retries: u64,
    /// Export requests given up on after their retries (their spans are in
    /// `spans_dropped`).
    pub export_failures: u64,
    /// Extra export requests made to stay under 4 MiB each.
    pub export_requests_split: u64,
    /// Traces the [`TailSampler`] kept (slow, failed or baseline).
    pub traces_kept: u64,
    /// Traces the [`TailSampler`] dropped by decision (fast and fine).
    pub traces_sampled_out: u64,
    /// Undecided traces the [`TailSampler`] evicted to stay within its limit.
    pub traces_evicted: u64,
    /// Spans the [`TailSampler`] lost: over the per-trace limit, in an
    /// evicted trace, or a full export queue.
    pub sampler_spans_dropped: u64,
}

/// Shared state of one recorder.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) capture: Arc<Capture>,
    pub(crate) next_request_id: AtomicU64,
    tx: SyncSender<Msg>,
    counters: Counters,
    recent_slow: Mutex<VecDeque<SlowRequest>>,
    /// Export counters, and the queue the tail sampler feeds (when the sink
    /// is the recorder's own OTLP or JSON pipeline).
    pub(crate) export: Arc<ExportShared>,
}

#[derive(Debug, Default)]
struct Counters {
    slow_requests: AtomicU64,
    captures: AtomicU64,
    merged: AtomicU64,
    skipped: AtomicU64,
    slow_dropped: AtomicU64,
    windows_written: AtomicU64,
    sink_errors: AtomicU64,
}

#[derive(Debug)]
enum Msg {
    Slow(SlowRequest),
    Flush(SyncSender<()>),
    Shutdown(SyncSender<()>),
}

pub(crate) fn start(
    config: Config,
    sink: Box<dyn Sink>,
    export: Arc<ExportShared>,
) -> Result<(Blackbox, BlackboxGuard), BuildError> {
    let clock = Clock::new();
    let capture = Arc::new(Capture::new(
        clock,
        Lanes::new(config.events_per_thread, config.max_threads),
        !config.disabled,
    ));
    let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
    let inner = Arc::new(Inner {
        config,
        capture,
        next_request_id: AtomicU64::new(1),
        tx,
        counters: Counters::default(),
        recent_slow: Mutex::new(VecDeque::new()),
        export,
    });
    let thread_inner = inner.clone();
    let thread = std::thread::Builder::new()
        .name("blackbox-capture".into())
        .spawn(move || capture_thread(thread_inner, rx, sink))
        .map_err(|source| BuildError::Thread {
            thread: "blackbox-capture",
            source,
        })?;
    Ok((
        Blackbox {
            inner: inner.clone(),
        },
        BlackboxGuard {
            inner,
            thread: Some(thread),
        },
    ))
}

// === impl Blackbox ===

impl Blackbox {
    /// Requests at least this long are captured: 500 ms.
    pub const DEFAULT_LATENCY_THRESHOLD: Duration = Duration::from_millis(500);
    /// Activity kept before a slow request: 2 s.
    pub const DEFAULT_WINDOW_BEFORE: Duration = Duration::from_secs(2);
    /// Activity kept after a slow request: 200 ms.
    pub const DEFAULT_WINDOW_AFTER: Duration = Duration::from_millis(200);
    /// The longest a merged window may grow: 30 s.
    pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(30);
    /// Ring capacity per thread: 65,536 events of 16 bytes, 1 MiB.
    pub const DEFAULT_EVENTS_PER_THREAD: usize = 64 * 1024;
    /// Threads that may record at once: 16, so ring memory is at most 16 MiB.
    pub const DEFAULT_MAX_THREADS: usize = 16;
    /// Captures per second: 5.
    pub const DEFAULT_MAX_CAPTURES_PER_SEC: u32 = 5;
    /// Directory for capture files and dumps: `./blackbox`.
    pub const DEFAULT_DIR: &'static str = "blackbox";
    /// Scheduling delay tracking: off (it costs Tokio about 50 ns per poll).
    pub const DEFAULT_SCHEDULE_DELAY: bool = false;
    /// Polls longer than 10 ms are flagged as long.
    pub const DEFAULT_LONG_POLL: Duration = Duration::from_millis(10);
    /// Slow requests waiting for the capture thread: 1,024.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    /// How long dropping the guard waits for pending captures: 5 s.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    /// Spans per exported window: 1,000 (see [`Budget`](crate::export::otlp::Budget)).
    pub const DEFAULT_MAX_SPANS_PER_WINDOW: usize = crate::export::otlp::Budget::DEFAULT_MAX_SPANS;
    /// Fraction of fast, fine traces the [`TailSampler`] keeps anyway: none.
    pub const DEFAULT_BASELINE_RATIO: f64 = 0.0;
    /// Traces the [`TailSampler`] holds at once: 4,096.
    pub const DEFAULT_SAMPLER_MAX_TRACES: usize = 4096;
    /// Spans the [`TailSampler`] holds per trace: 1,024. With the two limits
    /// and spans of about 1 KiB, the sampler holds at most a few hundred MiB
    /// in the worst case and typically a few MiB.
    pub const DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE: usize = 1024;

    /// A builder with every setting at its default.
    pub fn builder() -> Builder {
        Builder::default()
    }

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
    pub fn install_hooks<'a>(
        &self,
        builder: &'a mut tokio::runtime::Builder,
    ) -> &'a mut tokio::runtime::Builder {
        if self.inner.capture.enabled {
            self.hooks().install(builder);
        }
        builder
    }

    /// The hook functions, to call from runtime callbacks of your own.
    pub fn hooks(&self) -> BlackboxHooks {
        BlackboxHooks {
            capture: self.inner.capture.clone(),
            schedule_delay: self.inner.config.schedule_delay,
        }
    }

    /// A `tracing` layer that watches request spans.
    ///
    /// Add it after `tracing_opentelemetry`'s layer, if you use one, so the
    /// captured window lands in the request's own trace.
    pub fn layer(&self) -> BlackboxLayer {
        BlackboxLayer::new(self.inner.clone())
    }

    /// The counters.
    pub fn stats(&self) -> BlackboxStats {
        let c = &self.inner.counters;
        let e = &self.inner.export.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lanes = &self.inner.capture.lanes;
        let (events_recorded, events_overwritten) = lanes.totals();
        let (ring_bytes, ring_bytes_limit) = lanes.memory();
        BlackboxStats {
            events_recorded,
            events_overwritten,
            events_dropped: lanes.dropped.load(Ordering::Relaxed),
            requests_seen: self.inner.next_request_id.load(Ordering::Relaxed) - 1,
            slow_requests: c.slow_requests.load(Ordering::Relaxed),
            captures: c.captures.load(Ordering::Relaxed),
            requests_merged: c.merged.load(Ordering::Relaxed),
            requests_skipped: c.skipped.load(Ordering::Relaxed),
            slow_requests_dropped: c.slow_dropped.load(Ordering::Relaxed),
            windows_written: c.windows_written.load(Ordering::Relaxed),
            sink_errors: c.sink_errors.load(Ordering::Relaxed),
            ring_bytes,
            ring_bytes_limit,
            task_hooks: cfg!(tokio_unstable),
            schedule_delay: self.inner.config.schedule_delay && cfg!(tokio_unstable),
            windows_exported: get(&e.windows_exported),
            spans_exported: get(&e.spans_exported),
            spans_dropped: get(&e.spans_dropped),
            export_retries: get(&e.export_retries),
            export_failures: get(&e.export_failures),
            export_requests_split: get(&e.requests_split),
            traces_kept: get(&e.traces_kept),
            traces_sampled_out: get(&e.traces_sampled_out),
            traces_evicted: get(&e.traces_evicted),
            sampler_spans_dropped: get(&e.sampler_spans_dropped),
        }
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
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Flush(ack_tx)).is_err() {
            return false;
        }
        ack_rx.recv_timeout(timeout).is_ok()
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
        let window = self.inner.snapshot_all();
        crate::dump::write_window_file(path.as_ref(), &window, crate::dump::FileKind::Dump)
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
        Ok(path)
    }

    /// Writes a dump into the configured directory when the process panics,
    /// then runs the panic hook that was installed before. Opt-in.
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
                let _ = (Blackbox { inner }).dump_to_dir();
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

// === impl Inner ===

impl Inner {
    pub(crate) fn on_slow_request(&self, req: SlowRequest) {
        self.counters.slow_requests.fetch_add(1, Ordering::Relaxed);
        {
            let mut recent = lock(&self.recent_slow);
            if recent.len() == RECENT_SLOW {
                recent.pop_front();
            }
            recent.push_back(req.clone());
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Slow(req))
        {
            self.counters.slow_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn base_window(&self) -> Window {
        Window {
            strings: self.capture.strings.all(),
            threshold: self.config.latency_threshold,
            long_poll: self.config.long_poll,
            schedule_delay: self.config.schedule_delay && cfg!(tokio_unstable),
            task_hooks: cfg!(tokio_unstable),
            ..Window::default()
        }
    }

    /// Everything in the rings, for a dump.
    fn snapshot_all(&self) -> Window {
        let now = unix_now_ns();
        let lanes = self.capture.lanes.snapshot(None);
        let lanes = Window::cut(lanes, 0, u64::MAX, &self.capture.clock.anchor());
        let from = lanes
            .iter()
            .filter_map(|l| l.events.first().map(|e| e.ts))
            .min()
            .unwrap_or(now);
        Window {
            from_unix_ns: from,
            to_unix_ns: now,
            requests: lock(&self.recent_slow).iter().cloned().collect(),
            lanes,
            ..self.base_window()
        }
    }

    fn cut(&self, p: Pending, sequence: u64) -> Window {
        let lanes = self.capture.lanes.snapshot(None);
        let lanes = Window::cut(lanes, p.from_ns, p.to_ns, &self.capture.clock.anchor());
        Window {
            sequence,
            from_unix_ns: p.from_ns,
            to_unix_ns: p.to_ns,
            requests: p.requests,
            lanes,
            ..self.base_window()
        }
    }
}

fn capture_thread(inner: Arc<Inner>, rx: Receiver<Msg>, mut sink: Box<dyn Sink>) {
    // The recorder's own work must never be recorded or traced.
    let _no_tracing =
        tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let c = &inner.config;
    let mut trigger = Trigger::new(
        c.window_before,
        c.window_after,
        c.max_window,
        c.max_captures_per_sec,
    );
    let mut sequence = 0u64;
    let mut write = |pending: Vec<Pending>, sink: &mut Box<dyn Sink>| {
        for p in pending {
            sequence += 1;
            let window = inner.cut(p, sequence);
            match sink.write(&window) {
                Ok(()) => inner
                    .counters
                    .windows_written
                    .fetch_add(1, Ordering::Relaxed),
                Err(_) => inner.counters.sink_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    };
    loop {
        let timeout = match trigger.next_due() {
            Some(due) => Duration::from_nanos(due.saturating_sub(unix_now_ns())),
            None => Duration::from_secs(3600),
        };
        let msg = match rx.recv_timeout(timeout) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Some(Msg::Slow(req)) => {
                let counter = match trigger.offer(req, unix_now_ns()) {
                    Decision::Started => &inner.counters.captures,
                    Decision::Merged => &inner.counters.merged,
                    Decision::Skipped => &inner.counters.skipped,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Some(Msg::Flush(ack)) => {
                write(trigger.drain(), &mut sink);
                if sink.flush().is_err() {
                    inner.counters.sink_errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ack.try_send(());
            }
            Some(Msg::Shutdown(ack)) => {
                write(trigger.drain(), &mut sink);
                let _ = sink.flush();
                let _ = ack.try_send(());
                break;
            }
            None => {}
        }
        write(trigger.due(unix_now_ns()), &mut sink);
    }
}

// === impl BlackboxGuard ===

impl Drop for BlackboxGuard {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Shutdown(ack_tx)).is_ok()
            && ack_rx
                .recv_timeout(self.inner.config.shutdown_timeout)
                .is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}
