//! The export thread: windows and kept traces to a [`SpanExporter`] (an
//! OTLP network exporter, or the OTLP JSON file of [`super::json`]), off
//! every application thread.
//!
//! One thread, `blackbox-export`, owns a current-thread Tokio runtime of its
//! own and the exporter (or the file). It is fed by a bounded queue of jobs:
//! windows from the capture thread (through [`OtlpSink`] / [`JsonFileSink`](crate::JsonFileSink))
//! and kept traces from the [`TailSampler`](crate::TailSampler). Whoever
//! feeds it never waits: a full queue ([`QUEUE_CAPACITY`] jobs or
//! [`QUEUE_MAX_BYTES`], the job in flight included) refuses the job, which
//! is counted. A flush never puts anything into the queue: it waits, at most
//! its timeout, for the jobs queued before it to be finished. At shutdown the
//! thread gets what is left of the deadline (none after a flush that timed
//! out); the jobs still queued then are abandoned and counted
//! (`windows_dropped` for windows, `spans_dropped` for kept traces).
//!
//! Each window ends counted once: `windows_exported` when every export
//! request of it was accepted, `windows_dropped` otherwise (refused by the
//! queue, abandoned, a request given up on, or a mapping that panicked).
//! `export_failures` counts export requests given up on, nothing else.
//!
//! While a request may be retried its spans are held twice (the exporter
//! consumes its copy): one request of at most [`MAX_REQUEST_BYTES`], not a
//! copy per queued job.
//!
//! A window reaches the queue as its [`Cut`] (the recorder's segments,
//! held in place or copied, at most half the buffer), or, written as a decoded [`Window`], as
//! its spans: the queue never holds decoded events. On the thread:
//! - a cut is mapped ([`otlp::window_spans`], reading its events as it goes);
//! - the spans are split into requests that each encode under
//!   [`MAX_REQUEST_BYTES`] (every common OTLP receiver refuses more);
//! - each request gets [`RETRIES`] retries with a doubling back-off (an append
//!   to the OTLP JSON file gets none: a disk error does not clear by waiting), then its
//!   spans are dropped and counted ([`BlackboxStats::spans_dropped`]).
//!
//! The thread's work runs with no `tracing` subscriber ([`quietly`]) and
//! in OpenTelemetry's suppressed-telemetry scope, so the exporter's own
//! gRPC/HTTP spans and logs (tonic, h2, hyper, reqwest) never feed back into
//! the recorder or into the application's traces.

use super::counters::{ExportCounters, add};
use super::endpoint::OtlpSettings;
use super::exporter::DynExporter;
use super::otlp::{self, Budget};
use super::queue::{Job, MappedWindow, PushError, Queue};
use super::shared::{ExportShared, quietly};
use super::split::{MAX_REQUEST_SPANS, SPLIT_AT, split};
use crate::error::{BuildError, SinkError};
use crate::window::{Cut, SlowRequest, Window};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SpanData;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender};
use std::time::Duration;

/// Retries of a failed export request before its spans are dropped: 2, after
/// 100 ms and 200 ms. A window's export so fails within about a second when
/// the endpoint refuses connections; with a black-holed endpoint each try
/// waits for `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s by default) and the queue
/// fills and counts instead.
pub const RETRIES: u32 = 2;

/// First back-off between tries (doubled each retry).
const BACKOFF: Duration = Duration::from_millis(100);

/// Tells the queue the export thread has returned, when dropped.
struct ThreadDone(Arc<Queue>);

impl Drop for ThreadDone {
    fn drop(&mut self) {
        self.0.thread_done();
    }
}

/// Counts a job that will not be sent: a window in `windows_dropped`, a
/// kept trace's spans in `spans_dropped` (not in `export_failures`, which
/// counts export requests tried and given up on).
fn count_abandoned(job: Job, c: &ExportCounters) {
    match job {
        Job::Window(_) | Job::Cut(..) => add(&c.windows_dropped, 1),
        Job::Spans(spans) => add(&c.spans_dropped, spans.len() as u64),
    }
}

/// What the export thread is built from.
pub(crate) enum Target {
    Otlp(Box<OtlpSettings>),
    Exporter(Box<dyn DynExporter>),
    /// The OTLP JSON file: a failed append is not retried (a full disk or
    /// a permission does not clear in 300 ms, and each try would serialize
    /// the batch again); its window is dropped and counted.
    File(Box<super::json::JsonFileExporter>),
}

/// A handle on a running export thread: a [`Sink`] for windows.
pub(crate) struct Pipeline {
    queue: Arc<Queue>,
    shared: Arc<ExportShared>,
    budget: Budget,
    flush_timeout: Duration,
    /// The last flush timed out: the export thread is stuck (an exporter
    /// without a timeout), so the shutdown does not wait for it again.
    stalled: bool,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the export thread, builds the exporter on it, and connects the
    /// queue to `shared` (for the tail sampler).
    pub(crate) fn start(
        target: Target,
        budget: Budget,
        shared: Arc<ExportShared>,
    ) -> Result<Pipeline, BuildError> {
        let flush_timeout = shared.flush_timeout;
        let queue = Arc::new(Queue::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let thread_queue = queue.clone();
        std::thread::Builder::new()
            .name("blackbox-export".into())
            .spawn(move || {
                // Set however the thread ends, a panicking exporter included.
                let _done = ThreadDone(thread_queue.clone());
                export_thread(target, budget, &thread_shared, &thread_queue, ready_tx);
            })
            .map_err(|source| BuildError::Thread {
                thread: "blackbox-export",
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(BuildError::Thread {
                    thread: "blackbox-export",
                    source: std::io::Error::other("the export thread ended during start-up"),
                });
            }
        }
        shared.connect(queue.clone());
        Ok(Pipeline {
            queue,
            shared,
            budget,
            flush_timeout,
            stalled: false,
        })
    }

    /// Maps `window` to its spans here, on the caller's thread, and queues
    /// the spans: the queue never holds a window's decoded events, only the
    /// at most [`Budget::max_spans`] spans it becomes.
    pub(crate) fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        if !self.queue.has_room(0) {
            return Err(self.full());
        }
        let (spans, _) = otlp::spans_of(window, self.budget);
        let job = MappedWindow {
            spans,
            requests: window.requests.clone(),
        };
        let bytes = job.bytes();
        self.push(Job::Window(job), bytes)
    }

    /// Queues a cut as it is (its compact segment copies, at most half the
    /// buffer): the export thread maps it, so the capture thread only
    /// copies, and is never held up by the mapping.
    pub(crate) fn write_cut(&mut self, cut: Cut) -> Result<(), SinkError> {
        let bytes = cut.held_bytes();
        if !self.queue.has_room(bytes) {
            return Err(self.full());
        }
        // Its mapping's cost is reserved now, while the capture thread may
        // cut the next window: paid before it is spent, settled when it is.
        let reserved = self.shared.cpu.reserve(cut.span_bytes());
        let pushed = self.push(Job::Cut(Box::new(cut), reserved), bytes);
        if pushed.is_err() {
            self.shared.cpu.settle(reserved, 0);
        }
        pushed
    }

    /// Counts a refused window and says why.
    fn full(&self) -> SinkError {
        add(&self.shared.counters.windows_dropped, 1);
        SinkError::new(
            "the export queue is full (64 jobs or 64 MiB): the window is dropped and counted",
        )
    }

    fn push(&mut self, job: Job, bytes: usize) -> Result<(), SinkError> {
        let c = &self.shared.counters;
        match self.queue.push(job, bytes, c) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(self.full()),
            Err(PushError::Closed) => {
                add(&c.windows_dropped, 1);
                Err(SinkError::new("the export thread has stopped"))
            }
        }
    }

    /// Waits until everything queued so far is sent (or dropped and
    /// counted), at most `timeout`. Never puts anything into the queue, so a
    /// full queue or a stuck exporter cannot make it block longer.
    pub(crate) fn flush_within(&mut self, timeout: Duration) -> Result<(), SinkError> {
        if self
            .queue
            .wait_finished(crate::clock::deadline_after(timeout))
        {
            self.stalled = false;
            Ok(())
        } else {
            self.stalled = true;
            Err(SinkError::new(
                "the export thread did not finish in time (the endpoint is slow or unreachable); what it could not send is dropped and counted",
            ))
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_within(self.flush_timeout)
    }
}

/// How long the shutdown waits for the export thread after a flush that
/// finished: the exporter's own shutdown. After a flush that timed out it
/// does not wait at all.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The sink goes with the capture thread: no more windows. The
        // export thread sends what is queued and ends; past the deadline
        // what is still queued is abandoned and counted. A job in flight in
        // an exporter that never returns cannot be taken back: it is
        // counted when (if) the exporter returns.
        self.shared.disconnect();
        self.queue.close();
        let wait = if self.stalled {
            Duration::ZERO
        } else {
            self.flush_timeout.min(SHUTDOWN_GRACE)
        };
        if !self.queue.wait_thread(crate::clock::deadline_after(wait)) {
            for job in self.queue.abandon(&self.shared.counters) {
                count_abandoned(job, &self.shared.counters);
            }
        }
    }
}

fn export_thread(
    target: Target,
    budget: Budget,
    shared: &ExportShared,
    queue: &Queue,
    ready: SyncSender<Result<(), BuildError>>,
) {
    // No feedback: the exporter's own spans and events go nowhere (each
    // piece of work below runs `quietly`; the runtime's tasks run only
    // inside its `block_on`).
    let _suppressed = opentelemetry::Context::enter_telemetry_suppressed_scope();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let _ = ready.send(Err(BuildError::Thread {
                thread: "blackbox-export",
                source,
            }));
            return;
        }
    };
    let retries = match target {
        Target::File(_) => 0,
        _ => RETRIES,
    };
    let built = quietly(|| {
        let _enter = rt.enter();
        match target {
            Target::Otlp(env) => env.build_span_exporter(),
            Target::Exporter(e) => Ok(e),
            Target::File(e) => Ok(e as Box<dyn DynExporter>),
        }
    });
    let mut exporter = match built {
        Ok(mut e) => {
            // Whatever the app gave so far (and no change pending after it).
            let resource = shared
                .resource_change()
                .unwrap_or_else(|| shared.resource());
            e.set_resource_dyn(&resource);
            let _ = ready.send(Ok(()));
            e
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let c = &shared.counters;
    // What each window costs is paid from the budget this thread shares
    // with the capture thread (a cut's was reserved when it was queued); a
    // cut's cost sizes the next cuts. (Waiting for a job costs next to nothing:
    // each lap is the job.)
    let mut cpu = crate::cpu_budget::ThreadCpu::start();
    while let Some((job, bytes)) = queue.pop() {
        let (mut cut_bytes, reserved) = match &job {
            Job::Cut(cut, reserved) => (Some(cut.span_bytes()), *reserved),
            _ => (None, 0),
        };
        let is_window = !matches!(job, Job::Spans(_));
        // A window is exported when it was mapped and every request of it
        // was accepted; otherwise it is dropped (counted once either way).
        let mut mapped_ok = true;
        let mut all_sent = true;
        // The app's resource arrived (its tracer provider was built after
        // the recorder): every later export goes under it.
        if let Some(r) = shared.resource_change() {
            exporter.set_resource_dyn(&r);
        }
        let spans = match job {
            Job::Window(MappedWindow {
                mut spans,
                requests,
            }) => {
                attach_missed(shared, &requests, &mut spans);
                spans
            }
            Job::Cut(cut, _) => {
                // A panic in the mapping costs this window, counted.
                let mapped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    quietly(|| otlp::spans_of(cut.as_ref(), budget))
                }));
                match mapped {
                    Ok((mut spans, _)) => {
                        attach_missed(shared, &cut.header().requests, &mut spans);
                        drop(cut);
                        spans
                    }
                    Err(_) => {
                        // A lost window (no request was tried): counted
                        // below as dropped.
                        add(&c.export_panics, 1);
                        mapped_ok = false;
                        // Its cost says nothing of the next windows'.
                        cut_bytes = None;
                        Vec::new()
                    }
                }
            }
            Job::Spans(spans) => spans,
        };
        let requests = split(spans, SPLIT_AT, MAX_REQUEST_SPANS);
        if requests.len() > 1 {
            add(&c.requests_split, requests.len() as u64 - 1);
        }
        for batch in requests {
            let n = batch.len() as u64;
            // One batch's tries and back-offs, `quietly` (the connection's
            // tasks run only inside `block_on`).
            // An exporter that panics (the app's, through `Builder::exporter`)
            // costs this batch, counted, not the thread: the next jobs go on.
            let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                quietly(|| rt.block_on(send_with_retries(exporter.as_ref(), batch, retries, c)))
            }));
            if sent.is_err() {
                add(&c.export_panics, 1);
            }
            if matches!(sent, Ok(true)) {
                add(&c.spans_exported, n);
            } else {
                add(&c.spans_dropped, n);
                add(&c.export_failures, 1);
                all_sent = false;
            }
        }
        if is_window {
            if mapped_ok && all_sent {
                add(&c.windows_exported, 1);
            } else {
                add(&c.windows_dropped, 1);
            }
        }
        queue.finish(bytes, c);
        let used = cpu.lap();
        // Windows are paid from the budget; a kept trace's spans are the
        // app's own (the tail sampler's), not the recorder's work, and are
        // never shed for it.
        if is_window {
            shared.cpu.settle(reserved, used);
        }
        if let Some(b) = cut_bytes {
            shared.cpu.learn_window(b, used);
        }
    }
    quietly(move || {
        let _ = exporter.shutdown_dyn();
        // The connection's tasks end with the runtime.
        drop(exporter);
        drop(rt);
    });
}

/// With the tail sampler on, the app's spans go through it: a request whose
/// trace it did not keep would leave the window under a missing parent, so
/// the request span is sent too.
fn attach_missed(shared: &ExportShared, requests: &[SlowRequest], spans: &mut Vec<SpanData>) {
    if shared.sampler_active.load(Ordering::Relaxed) {
        otlp::attach_request_spans(
            requests,
            spans,
            super::names::SOURCE_TAIL_SAMPLER_MISSED,
            |r| !shared.was_kept(r.trace_id),
        );
    }
}

/// Sends `batch` with `retries` retries ([`RETRIES`] over the network);
/// `true` when one try succeeded.
async fn send_with_retries(
    exporter: &dyn DynExporter,
    mut batch: Vec<SpanData>,
    retries: u32,
    c: &ExportCounters,
) -> bool {
    let mut delay = BACKOFF;
    for attempt in 0..=retries {
        // The exporter takes the batch by value: keep a copy while a retry may follow.
        let this = if attempt == retries {
            std::mem::take(&mut batch)
        } else {
            batch.clone()
        };
        match exporter.export_dyn(this).await {
            Ok(()) => return true,
            Err(OTelSdkError::AlreadyShutdown) => return false,
            Err(_) if attempt < retries => {
                add(&c.export_retries, 1);
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(_) => return false,
        }
    }
    false
}
