//! The recorder: [`Blackbox`] (the handle), [`BlackboxGuard`] (keeps the
//! capture thread alive) and [`BlackboxStats`].
//!
//! The capture thread (`blackbox-capture`) receives slow requests from the
//! layer through a bounded queue, asks the [`trigger`](crate::trigger) what to
//! do, cuts each due window from all rings and hands it to the sink.

use crate::builder::Builder;
use crate::capture::Capture;
use crate::clock::{Clock, unix_now_ns};
use crate::config::{self, Settings as Config};
use crate::error::{BuildError, DumpError};
use crate::export::Sink;
use crate::export::sampling::{SamplerSettings, TailSampler};
use crate::export::transport::ExportShared;
use crate::hooks::BlackboxHooks;
use crate::layer::BlackboxLayer;
use crate::requests::OpenRequests;
use crate::segments::{Pinner, SEGMENT_BYTES};
use crate::sync::lock;
use crate::trigger::{Decision, Pending, Trigger};
use crate::window::{SlowRequest, Window};
use opentelemetry::trace::{SpanId, TraceId};
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
    /// Events written to the buffer.
    pub events_recorded: u64,
    /// Events overwritten by newer ones (the buffer is full; this is normal).
    pub events_overwritten: u64,
    /// Events not recorded: every segment was some thread's current one or
    /// pinned, or the thread was exiting.
    pub events_dropped: u64,
    /// Segments pinned now for windows not yet cut.
    pub segments_pinned: u64,
    /// Times a segment a window needed could not be pinned (at most a
    /// quarter of the buffer is pinned); that window may be incomplete.
    pub pins_refused: u64,
    /// Slow requests captured while still open (stuck past `stuck_after`).
    pub requests_captured_open: u64,
    /// Panics that wrote no dump: within a minute of the last dump on panic.
    pub panic_dumps_skipped: u64,
    /// Request spans opened outside the open-request table (it was full):
    /// captured when they close slow, not while open.
    pub requests_untracked: u64,
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
    /// Bytes of event memory held (segments and their headers).
    pub buffer_bytes: usize,
    /// The configured event memory ([`Builder::buffer_memory`](crate::Builder::buffer_memory)).
    pub buffer_bytes_limit: usize,
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
    /// Export requests given up on after their retries, and export jobs
    /// abandoned at shutdown (their spans are in `spans_dropped`).
    pub export_failures: u64,
    /// Windows the export pipeline did not send: refused by its full queue
    /// (bounded in jobs and bytes) or abandoned at shutdown.
    pub export_windows_dropped: u64,
    /// Bytes held in the export queue now (estimated).
    pub export_queue_bytes: u64,
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
    /// The open request spans, shared by the layer and the capture thread.
    pub(crate) requests: OpenRequests,
    next_request_id: AtomicU64,
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
    pins_refused: AtomicU64,
    captured_open: AtomicU64,
    /// Raw clock of the last dump on panic (0: none yet).
    last_panic_dump: AtomicU64,
    panic_dumps_skipped: AtomicU64,
}

#[derive(Debug)]
enum Msg {
    /// A slow request that closed, with its start and end (raw clock).
    Slow(SlowRequest, u64, u64),
    /// Cut everything pending and flush the sink, by the deadline.
    Flush(SyncSender<()>, std::time::Instant),
    Shutdown(SyncSender<()>, std::time::Instant),
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
    let inner = Arc::new(Inner {
        config,
        capture,
        requests: OpenRequests::default(),
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
    /// Dumps on panic are at most one per minute.
    pub const PANIC_DUMP_INTERVAL: Duration = Duration::from_secs(60);
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
    /// Spans per exported window: 1,000 (see [`Budget`](crate::export::otlp::Budget)).
    pub const DEFAULT_MAX_SPANS_PER_WINDOW: usize = config::DEFAULT_MAX_SPANS_PER_WINDOW;
    /// Fraction of fast, fine traces the [`TailSampler`] keeps anyway: none.
    pub const DEFAULT_BASELINE_RATIO: f64 = config::DEFAULT_BASELINE_RATIO;
    /// Traces the [`TailSampler`] holds at once: 4,096.
    pub const DEFAULT_SAMPLER_MAX_TRACES: usize = config::DEFAULT_SAMPLER_MAX_TRACES;
    /// Spans the [`TailSampler`] holds per trace: 1,024. The sampler is also
    /// bounded by bytes (64 MiB by default, see [`TailSampler::with_memory_limit`]).
    pub const DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE: usize =
        config::DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE;

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
        let capture = &self.inner.capture;
        let segments = capture.segments();
        BlackboxStats {
            events_recorded: segments.recorded(),
            events_overwritten: segments.overwritten(),
            events_dropped: capture.dropped(),
            segments_pinned: segments.pinned(),
            pins_refused: get(&c.pins_refused),
            requests_captured_open: get(&c.captured_open),
            requests_untracked: get(&self.inner.requests.fallbacks_total),
            panic_dumps_skipped: get(&c.panic_dumps_skipped),
            requests_seen: self.inner.next_request_id.load(Ordering::Relaxed) - 1,
            slow_requests: c.slow_requests.load(Ordering::Relaxed),
            captures: c.captures.load(Ordering::Relaxed),
            requests_merged: c.merged.load(Ordering::Relaxed),
            requests_skipped: c.skipped.load(Ordering::Relaxed),
            slow_requests_dropped: c.slow_dropped.load(Ordering::Relaxed),
            windows_written: c.windows_written.load(Ordering::Relaxed),
            sink_errors: c.sink_errors.load(Ordering::Relaxed),
            buffer_bytes: if capture.enabled { segments.bytes() } else { 0 },
            buffer_bytes_limit: self.inner.config.buffer_memory,
            task_hooks: cfg!(tokio_unstable),
            schedule_delay: self.inner.config.schedule_delay && cfg!(tokio_unstable),
            windows_exported: get(&e.windows_exported),
            spans_exported: get(&e.spans_exported),
            spans_dropped: get(&e.spans_dropped),
            export_retries: get(&e.export_retries),
            export_failures: get(&e.export_failures),
            export_requests_split: get(&e.requests_split),
            export_windows_dropped: get(&e.windows_dropped),
            export_queue_bytes: get(&e.queue_bytes),
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
        let deadline = std::time::Instant::now() + timeout;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if !send_until(&self.inner.tx, Msg::Flush(ack_tx, deadline), deadline) {
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
                let now = inner.capture.clock.raw();
                let interval = inner.capture.clock.ticks(Blackbox::PANIC_DUMP_INTERVAL);
                let last = inner.counters.last_panic_dump.load(Ordering::Relaxed);
                let due = last == 0 || now.saturating_sub(last) >= interval;
                if due
                    && inner
                        .counters
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

// === impl Inner ===

impl Inner {
    /// A new request id: 32 bits, never 0 (events keep the low 32 bits).
    pub(crate) fn new_request_id(&self) -> u64 {
        loop {
            let id = self.next_request_id.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
            if id != 0 {
                return id;
            }
        }
    }

    /// A slow request closed; it ran over `[start, end]` (raw clock).
    pub(crate) fn on_slow_request(&self, req: SlowRequest, start: u64, end: u64) {
        self.counters.slow_requests.fetch_add(1, Ordering::Relaxed);
        self.remember(&req);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Slow(req, start, end))
        {
            self.counters.slow_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A slow request that ran over `[start, end]` (raw clock), its times
    /// in UNIX ns with a fresh anchor (the raw and wall clocks drift apart over hours).
    pub(crate) fn slow_request(
        &self,
        request_id: u64,
        name: u16,
        (trace_id, span_id, own_span): (TraceId, SpanId, bool),
        start: u64,
        end: u64,
    ) -> SlowRequest {
        let anchor = self.capture.clock.anchor();
        let mut req = SlowRequest::new(
            request_id,
            self.capture.strings.get(name),
            trace_id,
            span_id,
            anchor.to_unix_ns(start),
            anchor.to_unix_ns(end),
        );
        req.own_span = own_span;
        req
    }

    fn remember(&self, req: &SlowRequest) {
        let mut recent = lock(&self.recent_slow);
        if recent.len() == RECENT_SLOW {
            recent.pop_front();
        }
        recent.push_back(req.clone());
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

    /// Everything in the buffer, for a dump.
    fn snapshot_all(&self) -> Window {
        let now = unix_now_ns();
        let lanes = self.capture.lanes(None);
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

    /// Cuts a due capture (its bounds in raw clock ticks) from the buffer.
    fn cut(&self, p: Pending, sequence: u64) -> Window {
        let anchor = self.capture.clock.anchor();
        let lanes = self.capture.lanes(Some((p.from_ns, p.to_ns)));
        let (from, to) = (anchor.to_unix_ns(p.from_ns), anchor.to_unix_ns(p.to_ns));
        Window {
            sequence,
            from_unix_ns: from,
            to_unix_ns: to,
            requests: p.requests,
            requests_omitted: p.omitted,
            lanes: Window::cut(lanes, from, to, &anchor),
            ..self.base_window()
        }
    }
}

/// How often the capture thread looks for requests that are slow while open:
/// a quarter of the threshold, between 5 ms and 100 ms.
fn scan_interval(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// The capture thread. Its clock is the recorder's raw monotonic clock (the
/// trigger's "nanoseconds" are raw ticks here): a wall-clock step moves nothing.
fn capture_thread(inner: Arc<Inner>, rx: Receiver<Msg>, mut sink: Box<dyn Sink>) {
    // The recorder's own work must never be recorded or traced.
    let _no_tracing =
        tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let c = &inner.config;
    let clock = inner.capture.clock.clone();
    let ticks = |d: Duration| clock.ticks(d);
    let mut trigger = Trigger::new_ticks(
        ticks(c.window_before),
        ticks(c.window_after),
        ticks(c.max_window),
        ticks(Duration::from_secs(1)),
        c.max_captures_per_sec,
    );
    let (before, threshold, stuck) = (
        ticks(c.window_before),
        ticks(c.latency_threshold),
        ticks(c.stuck_after),
    );
    let interval = scan_interval(c.latency_threshold);
    let segments = inner.capture.segments();
    let mut pinner = Pinner::new(segments.count() / 4);
    let mut sequence = 0u64;
    let mut last_scan = clock.raw();
    let interval_ticks = ticks(interval);
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
    let offer = |trigger: &mut Trigger, req: SlowRequest, start: u64, end: u64, now: u64| {
        let counter = match trigger.offer(req, start, end, now) {
            Decision::Started => &inner.counters.captures,
            Decision::Merged => &inner.counters.merged,
            Decision::Skipped => &inner.counters.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    };
    loop {
        let now = clock.raw();
        let timeout = match trigger.next_due() {
            Some(due) => clock.duration(due.saturating_sub(now)).min(interval),
            None => interval,
        };
        let msg = match rx.recv_timeout(timeout) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = clock.raw();
        match msg {
            Some(Msg::Slow(req, start, end)) => offer(&mut trigger, req, start, end, now),
            Some(Msg::Flush(ack, deadline)) => {
                write(trigger.drain(), &mut sink);
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if sink.flush_within(left).is_err() {
                    inner.counters.sink_errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ack.try_send(());
            }
            Some(Msg::Shutdown(ack, deadline)) => {
                write(trigger.drain(), &mut sink);
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if sink.flush_within(left).is_err() {
                    inner.counters.sink_errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ack.try_send(());
                pinner.release(segments);
                break;
            }
            None => {}
        }
        // Once per interval (not per message: a storm sends thousands a
        // second): requests slow while still open keep their history from
        // now on, and those open past `stuck_after` are captured without waiting.
        let due_now = trigger.next_due().is_some_and(|d| d <= now);
        if now.saturating_sub(last_scan) < interval_ticks && !due_now {
            continue;
        }
        last_scan = now;
        let mut open_needed: Option<u64> = None;
        if inner.capture.enabled {
            for r in inner.requests.scan(now, threshold, stuck) {
                let from = r.start_raw.saturating_sub(before);
                open_needed = Some(open_needed.map_or(from, |n| n.min(from)));
                if r.stuck {
                    let ids = inner.requests.ids_or_own(&r);
                    let mut req = inner.slow_request(r.request_id, r.name, ids, r.start_raw, now);
                    req.open = true;
                    inner.counters.slow_requests.fetch_add(1, Ordering::Relaxed);
                    inner.counters.captured_open.fetch_add(1, Ordering::Relaxed);
                    inner.remember(&req);
                    offer(&mut trigger, req, r.start_raw, now, now);
                }
            }
        }
        write(trigger.due(now), &mut sink);
        let needed = match (trigger.earliest_from(), open_needed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let refused = pinner.update(segments, needed);
        inner
            .counters
            .pins_refused
            .fetch_add(refused, Ordering::Relaxed);
    }
}

// === impl BlackboxGuard ===

impl Drop for BlackboxGuard {
    /// Waits at most the shutdown timeout in all: for the queue, the pending
    /// captures, the sink's flush and the thread's end.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + self.inner.config.shutdown_timeout;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        if send_until(&self.inner.tx, Msg::Shutdown(ack_tx, deadline), deadline)
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
    }
}

/// Sends on the bounded capture queue, retrying until `deadline` while it
/// is full: never blocks an application thread past its timeout.
fn send_until(tx: &SyncSender<Msg>, mut msg: Msg, deadline: std::time::Instant) -> bool {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(m)) => {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
