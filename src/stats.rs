//! [`BlackboxStats`]: the recorder's counters, assembled from the three
//! sets that keep them (the capture thread's [`Counters`], the layer's
//! [`Shared`] and the export pipeline's), with the buffer's own.

use crate::export::metrics::Metric;
use crate::export::shared::ExportShared;
use crate::shared::Shared;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the recorder did. Taking them costs a few atomic loads.
///
/// `slow_requests == captures + requests_merged + requests_skipped + slow_requests_dropped`
/// once the capture thread has seen every slow request (after a flush), and
/// `captures == windows_written + sink_errors + windows_shed` once every
/// capture is cut.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlackboxStats {
    /// Events written to the buffer.
    pub events_recorded: u64,
    /// Events overwritten by newer ones (the buffer is full; this is normal).
    pub events_overwritten: u64,
    /// Events not recorded: every segment was some thread's current one,
    /// pinned or held, or the thread was exiting.
    pub events_dropped: u64,
    /// Segments pinned now for windows not yet cut.
    pub segments_pinned: u64,
    /// Segments held now by windows cut and not yet exported: read in place
    /// rather than copied (at most half the buffer; past that a window is
    /// copied).
    pub segments_held: u64,
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
    /// Slow requests whose span had no OpenTelemetry context although the
    /// app's subscriber has a `tracing-opentelemetry` layer (its per-layer
    /// filter left the span out, or another version of the crate built it):
    /// their windows went into a trace of the recorder's own, with the
    /// request span, not into the app's trace.
    pub windows_unlinked: u64,
    /// Request span callsites that the subscriber's filter disables for
    /// every layer (tower-http's `DEBUG` spans under an `info` filter): the
    /// recorder never sees those requests. Each is named in a `WARN` event
    /// of target `tokio_blackbox`, with the fix.
    pub request_callsites_hidden: u64,
    /// Threads the recorder knows by name: the live ones that recorded,
    /// and exited ones whose events are still in the buffer (exited
    /// threads are forgotten about once a second once their events are
    /// gone, so a churning blocking pool does not grow it).
    pub threads_known: u64,
    /// Windows handed to the sink successfully.
    pub windows_written: u64,
    /// Windows not cut because the recorder's CPU budget was spent
    /// ([`Builder::cpu_budget`](crate::Builder::cpu_budget)): in an
    /// incident, the windows past the budget.
    pub windows_shed: u64,
    /// CPU time the recorder's capture and export threads used on
    /// windows, ns: what its CPU budget counts (the tail sampler's exports
    /// of the app's kept traces are not in it).
    pub recorder_cpu_ns: u64,
    /// Windows the sink failed to write, or that were still waiting to be
    /// cut when the shutdown's deadline passed.
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
    /// Windows whose every export request the endpoint (or the file)
    /// accepted. A window not sent whole is in `export_windows_dropped`
    /// instead: each window the export pipeline was given is in exactly
    /// one of the two.
    pub windows_exported: u64,
    /// Spans the exporter accepted (windows and kept traces).
    pub spans_exported: u64,
    /// Spans dropped after the export retries failed (endpoint down or slow).
    pub spans_dropped: u64,
    /// Export requests retried.
    pub export_retries: u64,
    /// Export work that panicked (a window's mapping, or the exporter, such
    /// as one given to [`Builder::exporter`](crate::Builder::exporter)):
    /// that window (in `export_windows_dropped`) or batch (in
    /// `export_failures`) is lost, and the export thread goes on with the next.
    pub export_panics: u64,
    /// Export requests (one OTLP request, at most 256 spans) given up on
    /// after their retries, or whose exporter panicked; their spans are in
    /// `spans_dropped`. Requests only: a job abandoned at shutdown is not one.
    pub export_failures: u64,
    /// Windows the export pipeline did not send whole: refused by its full
    /// queue (bounded in jobs and bytes), abandoned at shutdown, a request
    /// of it given up on, or its mapping panicked.
    pub export_windows_dropped: u64,
    /// Bytes held in the export queue now (estimated).
    pub export_queue_bytes: u64,
    /// Extra export requests: a window goes in requests of at most 256 spans
    /// and 4 MiB each.
    pub export_requests_split: u64,
    /// Traces the [`TailSampler`](crate::TailSampler) kept (slow, failed or baseline).
    pub traces_kept: u64,
    /// Traces the [`TailSampler`](crate::TailSampler) dropped by decision (fast and fine).
    pub traces_sampled_out: u64,
    /// Undecided traces the [`TailSampler`](crate::TailSampler) evicted to stay within its limit.
    pub traces_evicted: u64,
    /// Spans the [`TailSampler`](crate::TailSampler) lost: over the per-trace limit, in an
    /// evicted trace, or a full export queue.
    pub sampler_spans_dropped: u64,
    /// Exports of these counters as OTLP metrics that succeeded (with an
    /// endpoint set; see `OTEL_METRIC_EXPORT_INTERVAL`).
    pub metrics_exported: u64,
    /// Exports of these counters as OTLP metrics that failed or timed out.
    pub metrics_export_failures: u64,
}

impl BlackboxStats {
    /// The counters as the OpenTelemetry metrics the recorder exports
    /// (`blackbox.*`; counters only grow, gauges are levels now).
    pub(crate) fn metrics(&self) -> Vec<Metric> {
        let metric = |name, description, monotonic, value| Metric {
            name,
            description,
            monotonic,
            value,
        };
        vec![
            metric(
                "blackbox.events.recorded",
                "Events written to the buffer",
                true,
                self.events_recorded,
            ),
            metric(
                "blackbox.events.overwritten",
                "Events overwritten by newer ones",
                true,
                self.events_overwritten,
            ),
            metric(
                "blackbox.events.dropped",
                "Events not recorded (no free segment, or the thread exiting)",
                true,
                self.events_dropped,
            ),
            metric(
                "blackbox.segments.pinned",
                "Segments pinned now for windows not yet cut",
                false,
                self.segments_pinned,
            ),
            metric(
                "blackbox.segments.held",
                "Segments held by windows cut and not yet exported",
                false,
                self.segments_held,
            ),
            metric(
                "blackbox.pins.refused",
                "Segments a window needed that could not be pinned",
                true,
                self.pins_refused,
            ),
            metric(
                "blackbox.requests.seen",
                "Request spans opened",
                true,
                self.requests_seen,
            ),
            metric(
                "blackbox.requests.untracked",
                "Request spans opened outside the open-request table",
                true,
                self.requests_untracked,
            ),
            metric(
                "blackbox.requests.slow",
                "Request spans that ran at least the threshold",
                true,
                self.slow_requests,
            ),
            metric(
                "blackbox.requests.captured_open",
                "Slow requests captured while still open",
                true,
                self.requests_captured_open,
            ),
            metric("blackbox.captures", "Captures started", true, self.captures),
            metric(
                "blackbox.requests.merged",
                "Slow requests that joined an overlapping capture",
                true,
                self.requests_merged,
            ),
            metric(
                "blackbox.requests.skipped",
                "Slow requests not captured because of the per-second cap",
                true,
                self.requests_skipped,
            ),
            metric(
                "blackbox.requests.dropped",
                "Slow requests lost to a full capture queue",
                true,
                self.slow_requests_dropped,
            ),
            metric(
                "blackbox.windows.unlinked",
                "Slow requests with no OpenTelemetry context though the app has the layer: windows in traces of their own",
                true,
                self.windows_unlinked,
            ),
            metric(
                "blackbox.windows.written",
                "Windows handed to the sink",
                true,
                self.windows_written,
            ),
            metric(
                "blackbox.windows.shed",
                "Windows not cut because the recorder's CPU budget was spent",
                true,
                self.windows_shed,
            ),
            metric(
                "blackbox.cpu.used_ns",
                "CPU time the recorder's capture and export threads used on windows, ns",
                true,
                self.recorder_cpu_ns,
            ),
            metric(
                "blackbox.sink.errors",
                "Windows the sink failed to write",
                true,
                self.sink_errors,
            ),
            metric(
                "blackbox.panic_dumps.skipped",
                "Panics that wrote no dump (rate limit)",
                true,
                self.panic_dumps_skipped,
            ),
            metric(
                "blackbox.export.windows",
                "Windows sent whole: every export request of it accepted",
                true,
                self.windows_exported,
            ),
            metric(
                "blackbox.export.spans",
                "Spans the exporter accepted",
                true,
                self.spans_exported,
            ),
            metric(
                "blackbox.export.spans_dropped",
                "Spans dropped after the export retries failed",
                true,
                self.spans_dropped,
            ),
            metric(
                "blackbox.export.retries",
                "Export requests retried",
                true,
                self.export_retries,
            ),
            metric(
                "blackbox.export.panics",
                "Export work that panicked: that window or batch lost, the export thread went on",
                true,
                self.export_panics,
            ),
            metric(
                "blackbox.export.failures",
                "Export requests given up on after their retries (or whose exporter panicked)",
                true,
                self.export_failures,
            ),
            metric(
                "blackbox.export.windows_dropped",
                "Windows not sent whole: refused by the queue, abandoned at shutdown, a request given up on, or a mapping that panicked",
                true,
                self.export_windows_dropped,
            ),
            metric(
                "blackbox.export.requests_split",
                "Extra export requests: a window goes in requests of at most 256 spans and 4 MiB",
                true,
                self.export_requests_split,
            ),
            metric(
                "blackbox.export.queue_bytes",
                "Bytes held in the export queue now",
                false,
                self.export_queue_bytes,
            ),
            metric(
                "blackbox.sampler.traces_kept",
                "Traces the tail sampler kept",
                true,
                self.traces_kept,
            ),
            metric(
                "blackbox.sampler.traces_sampled_out",
                "Traces the tail sampler dropped by decision",
                true,
                self.traces_sampled_out,
            ),
            metric(
                "blackbox.sampler.traces_evicted",
                "Undecided traces the tail sampler evicted",
                true,
                self.traces_evicted,
            ),
            metric(
                "blackbox.sampler.spans_dropped",
                "Spans the tail sampler lost",
                true,
                self.sampler_spans_dropped,
            ),
            metric(
                "blackbox.metrics.export_failures",
                "Exports of these metrics that failed",
                true,
                self.metrics_export_failures,
            ),
            metric(
                "blackbox.buffer.bytes",
                "Bytes of event memory held",
                false,
                self.buffer_bytes as u64,
            ),
            metric(
                "blackbox.buffer.limit_bytes",
                "The configured event memory",
                false,
                self.buffer_bytes_limit as u64,
            ),
        ]
    }
}

/// The capture thread's counters (and the panic dumps skipped).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) captures: AtomicU64,
    pub(crate) merged: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) windows_written: AtomicU64,
    pub(crate) sink_errors: AtomicU64,
    pub(crate) pins_refused: AtomicU64,
    pub(crate) captured_open: AtomicU64,
    pub(crate) panic_dumps_skipped: AtomicU64,
}

/// The stats now, from every counter set. `buffer_memory` and
/// `schedule_delay` are the settings in force.
pub(crate) fn assemble(
    c: &Counters,
    shared: &Shared,
    export: &ExportShared,
    buffer_memory: usize,
    schedule_delay: bool,
) -> BlackboxStats {
    let e = &export.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let capture = &shared.capture;
    let segments = capture.segments();
    BlackboxStats {
        events_recorded: segments.recorded(),
        events_overwritten: segments.overwritten(),
        events_dropped: capture.dropped(),
        segments_pinned: segments.pinned(),
        segments_held: segments.held(),
        pins_refused: get(&c.pins_refused),
        requests_captured_open: get(&c.captured_open),
        requests_untracked: shared.requests.untracked_total(),
        panic_dumps_skipped: get(&c.panic_dumps_skipped),
        requests_seen: shared.capture.requests_opened(),
        slow_requests: get(&shared.slow_requests),
        captures: get(&c.captures),
        // Those counted by their own thread into a full capture included.
        requests_merged: get(&c.merged) + get(&shared.slow_absorbed),
        requests_skipped: get(&c.skipped),
        slow_requests_dropped: get(&shared.slow_dropped),
        windows_unlinked: get(&shared.windows_unlinked),
        request_callsites_hidden: shared.setup.hidden(),
        threads_known: capture.threads_known() as u64,
        windows_written: get(&c.windows_written),
        windows_shed: export.cpu.windows_shed(),
        recorder_cpu_ns: export.cpu.spent().as_nanos() as u64,
        sink_errors: get(&c.sink_errors),
        buffer_bytes: if capture.enabled { segments.bytes() } else { 0 },
        buffer_bytes_limit: buffer_memory,
        task_hooks: cfg!(tokio_unstable),
        schedule_delay: schedule_delay && cfg!(tokio_unstable),
        windows_exported: get(&e.windows_exported),
        spans_exported: get(&e.spans_exported),
        spans_dropped: get(&e.spans_dropped),
        export_retries: get(&e.export_retries),
        export_panics: get(&e.export_panics),
        export_failures: get(&e.export_failures),
        export_requests_split: get(&e.requests_split),
        export_windows_dropped: get(&e.windows_dropped),
        export_queue_bytes: get(&e.queue_bytes),
        traces_kept: get(&e.traces_kept),
        traces_sampled_out: get(&e.traces_sampled_out),
        traces_evicted: get(&e.traces_evicted),
        sampler_spans_dropped: get(&e.sampler_spans_dropped),
        metrics_exported: get(&e.metrics_exported),
        metrics_export_failures: get(&e.metrics_failures),
    }
}
