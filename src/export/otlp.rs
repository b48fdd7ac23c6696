//! The OTLP mapping of a captured [`Window`]: pure, no I/O, no clock.
//!
//! [`window_spans`] turns a window into [`SpanData`] in the slow request's own
//! trace, ready for any [`SpanExporter`](opentelemetry_sdk::trace::SpanExporter):
//!
//! ```text
//! <request span>                       (the app's; exported here only when the recorder made its ids)
//! └─ blackbox.window                   window bounds; links to the other slow requests it covers
//!    ├─ task src/db.rs:42              one per task that ran, the request's own tasks first
//!    │  ├─ poll                        one per poll (start and end as recorded), long ones flagged
//!    │  └─ poll …                      events: spawned, woken, terminated
//!    └─ worker tokio-runtime-worker    one per thread: park / unpark events, busy fraction
//! <other slow request span>
//! └─ blackbox.window.ref               links back to blackbox.window
//! ```
//!
//! The spans are built as `SpanData` (not through a tracer) because a tracer
//! can set neither the ids nor the end time since opentelemetry 0.32, and
//! because the SDK's span limits (128 events by default) would cut a worker's
//! park events. Every key this module writes is listed in [`keys`].
//!
//! The span budget ([`Budget::max_spans`]) is shared out in this order: the
//! spans that carry the structure (the window, the references and request
//! spans the recorder made), then one span per thread, then tasks — the
//! request's own first, then by time spent on a worker — and last their polls,
//! each task getting an equal share and a task with fewer polls leaving the
//! rest to the others. A task whose polls exceed its share keeps its longest
//! ones and summarises the others in attributes. What is left out is counted
//! in attributes, never dropped silently.

use crate::window::{Poll, SlowRequest, TaskActivity, Window, WorkerActivity};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The attribute keys and span names the mapping writes.
///
/// Durations are floating-point milliseconds (`*_ms`), so they read well in
/// Jaeger and compare in TraceQL (`{ span.blackbox.task.longest_poll_ms > 50 }`).
pub mod keys {
    /// Name of the span covering the window.
    pub const WINDOW_SPAN: &str = "blackbox.window";
    /// Name of the span that links another slow request to the window.
    pub const WINDOW_REF_SPAN: &str = "blackbox.window.ref";
    /// Name of a poll span.
    pub const POLL_SPAN: &str = "poll";
    /// `true` on every span the recorder exports.
    pub const CAPTURED: &str = "blackbox.captured";
    /// The latency threshold, ms.
    pub const THRESHOLD_MS: &str = "blackbox.threshold_ms";
    /// The slow request's duration, ms.
    pub const REQUEST_DURATION_MS: &str = "blackbox.request.duration_ms";
    /// The slow request's span name.
    pub const REQUEST_NAME: &str = "blackbox.request.name";
    /// Number of slow requests the capture links (at most 64).
    pub const WINDOW_REQUESTS: &str = "blackbox.window.requests";
    /// Slow requests the capture also covered but does not link (past 64).
    pub const WINDOW_REQUESTS_OMITTED: &str = "blackbox.window.requests_omitted";
    /// `true` when the slow request was still open when captured (stuck).
    pub const REQUEST_OPEN: &str = "blackbox.request.open";
    /// Capture sequence number in the process.
    pub const WINDOW_SEQUENCE: &str = "blackbox.window.sequence";
    /// Window start, UNIX ns.
    pub const WINDOW_START: &str = "blackbox.window.start_unix_ns";
    /// Window end, UNIX ns.
    pub const WINDOW_END: &str = "blackbox.window.end_unix_ns";
    /// Events recorded in the window.
    pub const WINDOW_EVENTS: &str = "blackbox.window.events";
    /// Events of the window lost to ring overwrite (estimated).
    pub const WINDOW_EVENTS_LOST: &str = "blackbox.window.events_lost";
    /// Tasks that ran in the window.
    pub const WINDOW_TASKS: &str = "blackbox.window.tasks";
    /// Tasks exported as spans.
    pub const WINDOW_TASKS_SHOWN: &str = "blackbox.window.tasks_shown";
    /// Tasks left out by the span budget.
    pub const WINDOW_TASKS_OMITTED: &str = "blackbox.window.tasks_omitted";
    /// Polls left out by the span budget (over all tasks, shown or not).
    pub const WINDOW_POLLS_OMITTED: &str = "blackbox.window.polls_omitted";
    /// Threads left out by the span budget.
    pub const WINDOW_WORKERS_OMITTED: &str = "blackbox.window.workers_omitted";
    /// The span budget in force.
    pub const WINDOW_MAX_SPANS: &str = "blackbox.window.max_spans";
    /// Whether task hooks were compiled in (`--cfg tokio_unstable`).
    pub const WINDOW_TASK_HOOKS: &str = "blackbox.window.task_hooks";
    /// Whether scheduling delays were recorded.
    pub const WINDOW_SCHEDULE_DELAY: &str = "blackbox.window.schedule_delay";
    /// Polls longer than this are flagged, ms.
    pub const LONG_POLL_MS: &str = "blackbox.long_poll_ms";
    /// On a reference span and on a link: the window span's trace id (hex).
    pub const WINDOW_TRACE_ID: &str = "blackbox.window.trace_id";
    /// On a link of the window span: what the linked span is.
    pub const LINK_KIND: &str = "blackbox.link";
    /// On a request span the recorder exported itself: why.
    pub const REQUEST_SOURCE: &str = "blackbox.request.source";
    /// Tokio's task id.
    pub const TASK_ID: &str = "tokio.task.id";
    /// Spawn location: file.
    pub const CODE_FILE: &str = "code.file.path";
    /// Spawn location: line.
    pub const CODE_LINE: &str = "code.line.number";
    /// Spawn location: column.
    pub const CODE_COLUMN: &str = "code.column.number";
    /// `true` when the task worked for one of the captured requests.
    pub const TASK_IN_REQUEST: &str = "blackbox.task.in_request";
    /// Polls of the task in the window.
    pub const TASK_POLLS: &str = "blackbox.task.polls";
    /// Time being polled, ms.
    pub const TASK_BUSY_MS: &str = "blackbox.task.busy_ms";
    /// Longest poll, ms.
    pub const TASK_LONGEST_POLL_MS: &str = "blackbox.task.longest_poll_ms";
    /// Polls over the long-poll limit.
    pub const TASK_LONG_POLLS: &str = "blackbox.task.long_polls";
    /// Total scheduling delay, ms (only when recorded).
    pub const TASK_SCHED_DELAY_MS: &str = "blackbox.task.sched_delay_ms";
    /// Polls exported as spans.
    pub const TASK_POLLS_SHOWN: &str = "blackbox.task.polls_shown";
    /// Polls left out by the budget.
    pub const TASK_POLLS_OMITTED: &str = "blackbox.task.polls_omitted";
    /// Busy time of the polls left out, ms.
    pub const TASK_POLLS_OMITTED_BUSY_MS: &str = "blackbox.task.polls_omitted_busy_ms";
    /// The worker (thread name) of a poll.
    pub const POLL_WORKER: &str = "blackbox.poll.worker";
    /// The lane (thread index) of a poll.
    pub const POLL_LANE: &str = "blackbox.poll.lane";
    /// Scheduling delay before the poll, ms (only when recorded).
    pub const POLL_SCHED_DELAY_MS: &str = "blackbox.poll.sched_delay_ms";
    /// `true` on polls longer than the limit.
    pub const POLL_LONG: &str = "blackbox.poll.long";
    /// `false` when the poll was cut by the window's edge.
    pub const POLL_COMPLETE: &str = "blackbox.poll.complete";
    /// Thread name of a worker span.
    pub const THREAD_NAME: &str = "thread.name";
    /// Lane index of a worker span.
    pub const WORKER_LANE: &str = "blackbox.worker.lane";
    /// Fraction of the window the thread spent polling tasks, 0 to 1.
    pub const WORKER_BUSY_FRACTION: &str = "blackbox.worker.busy_fraction";
    /// Time the thread spent polling, ms.
    pub const WORKER_BUSY_MS: &str = "blackbox.worker.busy_ms";
    /// Polls run by the thread.
    pub const WORKER_POLLS: &str = "blackbox.worker.polls";
    /// Park and unpark events.
    pub const WORKER_PARKS: &str = "blackbox.worker.parks";
    /// Park/unpark events left out (over the per-span event cap).
    pub const WORKER_EVENTS_OMITTED: &str = "blackbox.worker.events_omitted";
    /// Events of the thread's lane lost to ring overwrite (estimated).
    pub const WORKER_EVENTS_LOST: &str = "blackbox.worker.events_lost";
}

/// The instrumentation scope of every span the recorder makes.
pub const SCOPE_NAME: &str = "tokio-blackbox";

/// At most this many span events (park/unpark, woken) on one span: enough for
/// a busy worker over a 2 s window at 250 parks per second, and a cap so one
/// thread cannot grow an export request without bound. The rest is counted.
pub const MAX_EVENTS_PER_SPAN: usize = 512;

/// How many spans one window may become, and what counts as a long poll.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::otlp::Budget;
/// let b = Budget::default();
/// assert_eq!(b.max_spans, 1_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Most spans per window. By default, this is [`Budget::DEFAULT_MAX_SPANS`].
    pub max_spans: usize,
}

impl Budget {
    /// Spans per window: 1,000 (`BLACKBOX_MAX_SPANS_PER_WINDOW`). A window of
    /// that size encodes to about 300 KiB of OTLP, well under the 4 MiB
    /// receivers accept, and Jaeger's UI still renders it quickly.
    pub const DEFAULT_MAX_SPANS: usize = 1_000;

    /// A budget of `max_spans` spans per window.
    pub fn new(max_spans: usize) -> Budget {
        Budget { max_spans }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(Budget::DEFAULT_MAX_SPANS)
    }
}

/// Where the window of a capture was put: its trace and span id.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::otlp::{Budget, window_spans};
/// let (spans, at) = window_spans(&tokio_blackbox::Window::default(), Budget::default());
/// assert!(spans.is_empty() && at.is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpanRef {
    /// The trace of the first slow request.
    pub trace_id: TraceId,
    /// The `blackbox.window` span.
    pub span_id: SpanId,
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn int(key: &'static str, v: u64) -> KeyValue {
    KeyValue::new(key, i64::try_from(v).unwrap_or(i64::MAX))
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn context(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// Builds one span; the rest of the fields have one value for the recorder.
struct SpanParts {
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    name: String,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    links: Vec<Link>,
    status: Status,
}

impl SpanParts {
    fn build(self, scope: &InstrumentationScope) -> SpanData {
        let mut events = SpanEvents::default();
        events.events = self.events;
        let mut links = SpanLinks::default();
        links.links = self.links;
        SpanData {
            span_context: context(self.trace_id, self.span_id),
            parent_span_id: self.parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: self.name.into(),
            start_time: time(self.start_ns),
            end_time: time(self.end_ns.max(self.start_ns)),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events,
            links,
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// The request span itself, for a request whose ids the recorder made (no
/// OpenTelemetry context was found) or whose span the app's tail sampling
/// did not keep: without it, the window would hang under a missing parent.
///
/// `source` says why (`"recorder"` or `"tail_sampler_missed"`).
pub fn request_span(req: &SlowRequest, source: &'static str) -> SpanData {
    SpanParts {
        trace_id: req.trace_id,
        span_id: req.span_id,
        parent: SpanId::INVALID,
        name: req.name.clone(),
        start_ns: req.start_unix_ns,
        end_ns: req.end_unix_ns,
        attributes: vec![
            KeyValue::new(keys::CAPTURED, true),
            KeyValue::new(keys::REQUEST_SOURCE, source),
            KeyValue::new(
                keys::REQUEST_DURATION_MS,
                ms(req.end_unix_ns - req.start_unix_ns.min(req.end_unix_ns)),
            ),
        ],
        events: Vec::new(),
        links: Vec::new(),
        status: if req.error {
            Status::error("an error event was recorded in the request")
        } else {
            Status::Unset
        },
    }
    .build(&scope())
}

/// A task's place in the export order: the primary request's tasks, then the
/// other captured requests' tasks, then the rest; ties by busy time, longest first.
fn task_rank(
    t: &TaskActivity,
    primary: u64,
    captured: &[u64],
) -> (u8, std::cmp::Reverse<u64>, u64) {
    let class = if t.requests.contains(&primary) {
        0
    } else if t.requests.iter().any(|r| captured.contains(r)) {
        1
    } else {
        2
    };
    (class, std::cmp::Reverse(t.busy_ns()), t.id)
}

/// Shares `budget` poll spans among tasks wanting `wants[i]` polls: equal
/// shares, and what a task does not need goes to the others (water-filling).
fn share_polls(wants: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i]);
    let mut out = vec![0; wants.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (wants.len() - k);
        let give = wants[i].min(share);
        out[i] = give;
        left -= give;
    }
    out
}

/// Maps a window to spans in the first slow request's trace.
///
/// Returns the spans and where the `blackbox.window` span is (`None` for a
/// window with no slow request, which maps to nothing).
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::otlp::{Budget, testing, window_spans};
///
/// // A synthetic window: 3 tasks of 4 polls each, one slow request.
/// let window = testing::window(3, 4, 1);
/// let req = &window.requests[0];
/// let (spans, at) = window_spans(&window, Budget::default());
/// let at = at.expect("a window with a request is mapped");
/// let w = spans.iter().find(|s| s.name == "blackbox.window").unwrap();
/// assert_eq!(w.span_context.trace_id(), req.trace_id);
/// assert_eq!(w.parent_span_id, req.span_id);
/// assert_eq!(w.span_context.span_id(), at.span_id);
/// assert_eq!(spans.iter().filter(|s| s.name == "poll").count(), 12);
/// ```
pub fn window_spans(window: &Window, budget: Budget) -> (Vec<SpanData>, Option<WindowSpanRef>) {
    let Some(primary) = window.requests.first() else {
        return (Vec::new(), None);
    };
    let ids = RandomIdGenerator::default();
    let scope = scope();
    let trace_id = primary.trace_id;
    let window_id = ids.new_span_id();
    let at = WindowSpanRef {
        trace_id,
        span_id: window_id,
    };
    let (from, to) = (
        window.from_unix_ns,
        window.to_unix_ns.max(window.from_unix_ns),
    );
    let long_poll_ns = window.long_poll.as_nanos() as u64;
    let captured: Vec<u64> = window.requests.iter().map(|r| r.request_id).collect();
    let thread_names: HashMap<u32, &str> = window
        .lanes
        .iter()
        .map(|l| (l.index, l.thread.as_str()))
        .collect();

    let mut out: Vec<SpanData> = Vec::new();

    // 1. Structure: the request spans the recorder made, and a reference span
    //    in each other slow request's trace. Always exported.
    for (i, req) in window.requests.iter().enumerate() {
        if req.own_span {
            out.push(request_span(req, "recorder"));
        }
        if i > 0 {
            let link = Link::new(
                context(trace_id, window_id),
                vec![KeyValue::new(keys::LINK_KIND, "window")],
                0,
            );
            out.push(
                SpanParts {
                    trace_id: req.trace_id,
                    span_id: ids.new_span_id(),
                    parent: req.span_id,
                    name: keys::WINDOW_REF_SPAN.into(),
                    start_ns: req.start_unix_ns,
                    end_ns: req.end_unix_ns,
                    attributes: vec![
                        KeyValue::new(keys::CAPTURED, true),
                        KeyValue::new(keys::WINDOW_TRACE_ID, trace_id.to_string()),
                        KeyValue::new(keys::THRESHOLD_MS, ms(window.threshold.as_nanos() as u64)),
                        KeyValue::new(
                            keys::REQUEST_DURATION_MS,
                            ms(req.duration().as_nanos() as u64),
                        ),
                        KeyValue::new(keys::REQUEST_NAME, req.name.clone()),
                        KeyValue::new(keys::REQUEST_OPEN, req.open),
                    ],
                    events: Vec::new(),
                    links: vec![link],
                    status: Status::Unset,
                }
                .build(&scope),
            );
        }
    }
    // The window span itself counts too.
    let mut left = budget.max_spans.saturating_sub(out.len() + 1);

    // 2. One span per thread, as far as the budget allows.
    let workers = window.workers();
    let workers_shown = workers.len().min(left);
    left -= workers_shown;
    let span_ns = (to - from).max(1);
    for w in &workers[..workers_shown] {
        out.push(worker_span(
            w,
            window,
            trace_id,
            window_id,
            ids.new_span_id(),
            span_ns,
            &scope,
        ));
    }

    // 3. Tasks, then 4. their polls.
    let mut tasks = window.tasks();
    tasks.sort_by_key(|t| task_rank(t, primary.request_id, &captured));
    let total_polls: usize = tasks.iter().map(|t| t.polls.len()).sum();
    let tasks_shown = if tasks.len() + total_polls <= left {
        tasks.len()
    } else {
        // Half the remaining budget at most for task spans, so polls (where
        // the blocking shows) keep room; at least one task.
        tasks.len().min((left / 2).max(left.min(1)))
    };
    let poll_budget = left - tasks_shown;
    let wants: Vec<usize> = tasks[..tasks_shown].iter().map(|t| t.polls.len()).collect();
    let shares = share_polls(&wants, poll_budget);
    let mut polls_omitted: u64 = tasks[tasks_shown..]
        .iter()
        .map(|t| t.polls.len() as u64)
        .sum();
    for (t, &share) in tasks[..tasks_shown].iter().zip(&shares) {
        polls_omitted += (t.polls.len() - share) as u64;
        let in_request = t.requests.iter().any(|r| captured.contains(r));
        task_spans(
            t,
            share,
            in_request,
            window,
            long_poll_ns,
            &thread_names,
            (trace_id, window_id),
            &ids,
            &scope,
            &mut out,
        );
    }

    // The window span, last, once the counts are known.
    let mut links: Vec<Link> = window.requests[1..]
        .iter()
        .map(|r| {
            Link::new(
                context(r.trace_id, r.span_id),
                vec![
                    KeyValue::new(keys::LINK_KIND, "slow_request"),
                    KeyValue::new(keys::REQUEST_NAME, r.name.clone()),
                    KeyValue::new(
                        keys::REQUEST_DURATION_MS,
                        ms(r.duration().as_nanos() as u64),
                    ),
                ],
                0,
            )
        })
        .collect();
    links.truncate(MAX_EVENTS_PER_SPAN);
    let attributes = vec![
        KeyValue::new(keys::CAPTURED, true),
        KeyValue::new(keys::THRESHOLD_MS, ms(window.threshold.as_nanos() as u64)),
        KeyValue::new(
            keys::REQUEST_DURATION_MS,
            ms(primary.duration().as_nanos() as u64),
        ),
        KeyValue::new(keys::REQUEST_NAME, primary.name.clone()),
        int(keys::WINDOW_REQUESTS, window.requests.len() as u64),
        int(keys::WINDOW_REQUESTS_OMITTED, window.requests_omitted),
        KeyValue::new(keys::REQUEST_OPEN, primary.open),
        int(keys::WINDOW_SEQUENCE, window.sequence),
        int(keys::WINDOW_START, from),
        int(keys::WINDOW_END, to),
        int(keys::WINDOW_EVENTS, window.events() as u64),
        int(keys::WINDOW_EVENTS_LOST, window.events_lost()),
        int(keys::WINDOW_TASKS, tasks.len() as u64),
        int(keys::WINDOW_TASKS_SHOWN, tasks_shown as u64),
        int(
            keys::WINDOW_TASKS_OMITTED,
            (tasks.len() - tasks_shown) as u64,
        ),
        int(keys::WINDOW_POLLS_OMITTED, polls_omitted),
        int(
            keys::WINDOW_WORKERS_OMITTED,
            (workers.len() - workers_shown) as u64,
        ),
        int(keys::WINDOW_MAX_SPANS, budget.max_spans as u64),
        KeyValue::new(keys::LONG_POLL_MS, ms(long_poll_ns)),
        KeyValue::new(keys::WINDOW_TASK_HOOKS, window.task_hooks),
        KeyValue::new(keys::WINDOW_SCHEDULE_DELAY, window.schedule_delay),
    ];
    out.push(
        SpanParts {
            trace_id,
            span_id: window_id,
            parent: primary.span_id,
            name: keys::WINDOW_SPAN.into(),
            start_ns: from,
            end_ns: to,
            attributes,
            events: Vec::new(),
            links,
            status: Status::Unset,
        }
        .build(&scope),
    );
    (out, Some(at))
}

/// A thread's span: the whole window, park and unpark as events.
fn worker_span(
    w: &WorkerActivity,
    window: &Window,
    trace_id: TraceId,
    parent: SpanId,
    span_id: SpanId,
    window_ns: u64,
    scope: &InstrumentationScope,
) -> SpanData {
    let mut moments: Vec<(u64, &'static str)> = w
        .parks
        .iter()
        .map(|&t| (t, "park"))
        .chain(w.unparks.iter().map(|&t| (t, "unpark")))
        .collect();
    moments.sort_unstable();
    let omitted = moments.len().saturating_sub(MAX_EVENTS_PER_SPAN);
    let events = moments
        .iter()
        .take(MAX_EVENTS_PER_SPAN)
        .map(|&(t, name)| Event::new(name, time(t), Vec::new(), 0))
        .collect();
    let lost = window
        .lanes
        .iter()
        .find(|l| l.index == w.lane)
        .map_or(0, |l| l.events_lost);
    SpanParts {
        trace_id,
        span_id,
        parent,
        name: format!("worker {}", w.thread),
        start_ns: window.from_unix_ns,
        end_ns: window.to_unix_ns,
        attributes: vec![
            KeyValue::new(keys::CAPTURED, true),
            KeyValue::new(keys::THREAD_NAME, w.thread.clone()),
            int(keys::WORKER_LANE, u64::from(w.lane)),
            KeyValue::new(
                keys::WORKER_BUSY_FRACTION,
                (w.busy_ns as f64 / window_ns as f64).min(1.0),
            ),
            KeyValue::new(keys::WORKER_BUSY_MS, ms(w.busy_ns)),
            int(keys::WORKER_POLLS, w.polls),
            int(keys::WORKER_PARKS, w.parks.len() as u64),
            int(keys::WORKER_EVENTS_OMITTED, omitted as u64),
            int(keys::WORKER_EVENTS_LOST, lost),
        ],
        events,
        links: Vec::new(),
        status: Status::Unset,
    }
    .build(scope)
}

/// A task's span and `share` of its polls (its longest ones, in time order).
#[allow(clippy::too_many_arguments)]
fn task_spans(
    t: &TaskActivity,
    share: usize,
    in_request: bool,
    window: &Window,
    long_poll_ns: u64,
    thread_names: &HashMap<u32, &str>,
    (trace_id, window_id): (TraceId, SpanId),
    ids: &RandomIdGenerator,
    scope: &InstrumentationScope,
    out: &mut Vec<SpanData>,
) {
    let task_id = ids.new_span_id();
    // Which polls to show: all, or the longest `share` of them.
    let shown: Vec<&Poll> = if share >= t.polls.len() {
        t.polls.iter().collect()
    } else {
        let mut by_len: Vec<&Poll> = t.polls.iter().collect();
        by_len.sort_by_key(|p| std::cmp::Reverse(p.duration_ns()));
        by_len.truncate(share);
        by_len.sort_by_key(|p| p.start_ns);
        by_len
    };
    let omitted_busy: u64 = t.busy_ns() - shown.iter().map(|p| p.duration_ns()).sum::<u64>();

    let mut events = Vec::new();
    if let Some(ts) = t.spawned_ns {
        events.push(Event::new("spawned", time(ts), Vec::new(), 0));
    }
    for p in &shown {
        if let Some(d) = p.sched_delay_ns.filter(|_| window.schedule_delay) {
            if events.len() >= MAX_EVENTS_PER_SPAN {
                break;
            }
            events.push(Event::new(
                "woken",
                time(p.start_ns.saturating_sub(d)),
                vec![KeyValue::new(keys::POLL_SCHED_DELAY_MS, ms(d))],
                0,
            ));
        }
    }
    if let Some(ts) = t.terminated_ns {
        events.push(Event::new("terminated", time(ts), Vec::new(), 0));
    }
    events.sort_by_key(|e| e.timestamp);

    let long_polls = t
        .polls
        .iter()
        .filter(|p| p.duration_ns() > long_poll_ns)
        .count();
    let mut attributes = vec![
        KeyValue::new(keys::CAPTURED, true),
        int(keys::TASK_ID, t.id),
        KeyValue::new(keys::TASK_IN_REQUEST, in_request),
        int(keys::TASK_POLLS, t.polls.len() as u64),
        KeyValue::new(keys::TASK_BUSY_MS, ms(t.busy_ns())),
        KeyValue::new(keys::TASK_LONGEST_POLL_MS, ms(t.longest_poll_ns())),
        int(keys::TASK_LONG_POLLS, long_polls as u64),
        int(keys::TASK_POLLS_SHOWN, shown.len() as u64),
        int(
            keys::TASK_POLLS_OMITTED,
            (t.polls.len() - shown.len()) as u64,
        ),
        KeyValue::new(keys::TASK_POLLS_OMITTED_BUSY_MS, ms(omitted_busy)),
    ];
    if window.schedule_delay {
        attributes.push(KeyValue::new(
            keys::TASK_SCHED_DELAY_MS,
            ms(t.sched_delay_ns()),
        ));
    }
    if let Some((file, line)) = t.file_line() {
        attributes.push(KeyValue::new(keys::CODE_FILE, file.to_owned()));
        attributes.push(int(keys::CODE_LINE, u64::from(line)));
        if let Some(col) = t
            .location
            .as_deref()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|c| c.parse::<u64>().ok())
        {
            attributes.push(int(keys::CODE_COLUMN, col));
        }
    }
    // The task's bar covers its life inside the window.
    let start = t
        .spawned_ns
        .unwrap_or(window.from_unix_ns)
        .min(t.polls.first().map_or(u64::MAX, |p| p.start_ns));
    let end = t
        .terminated_ns
        .unwrap_or(window.to_unix_ns)
        .max(t.polls.last().map_or(0, |p| p.end_ns));
    out.push(
        SpanParts {
            trace_id,
            span_id: task_id,
            parent: window_id,
            name: t.name(),
            start_ns: start,
            end_ns: end,
            attributes,
            events,
            links: Vec::new(),
            status: Status::Unset,
        }
        .build(scope),
    );
    for p in shown {
        let mut attributes = vec![
            KeyValue::new(
                keys::POLL_WORKER,
                thread_names.get(&p.lane).copied().unwrap_or("").to_owned(),
            ),
            int(keys::POLL_LANE, u64::from(p.lane)),
        ];
        if let Some(d) = p.sched_delay_ns.filter(|_| window.schedule_delay) {
            attributes.push(KeyValue::new(keys::POLL_SCHED_DELAY_MS, ms(d)));
        }
        if p.duration_ns() > long_poll_ns {
            attributes.push(KeyValue::new(keys::POLL_LONG, true));
        }
        if !p.complete {
            attributes.push(KeyValue::new(keys::POLL_COMPLETE, false));
        }
        out.push(
            SpanParts {
                trace_id,
                span_id: ids.new_span_id(),
                parent: task_id,
                name: keys::POLL_SPAN.into(),
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                attributes,
                events: Vec::new(),
                links: Vec::new(),
                status: Status::Unset,
            }
            .build(scope),
        );
    }
}

/// Synthetic windows for testing a [`Sink`](crate::Sink) of your own (and for
/// this crate's tests, benches and doc examples): no runtime needed. Only with
/// the `testing` feature.
///
/// # Examples
///
/// ```
/// let window = tokio_blackbox::export::otlp::testing::window(3, 4, 1);
/// assert_eq!(window.requests.len(), 1);
/// assert_eq!(window.lanes.len(), 3);
/// ```
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use crate::event::{Event, EventKind};
    use crate::window::{Lane, SlowRequest, Window};
    use opentelemetry::trace::{SpanId, TraceId};
    use std::time::Duration;

    /// Window start of [`window`], UNIX ns (2023-11-14).
    pub const FROM: u64 = 1_700_000_000_000_000_000;

    /// A slow request with fixed ids, from `start` to `end` (UNIX ns).
    pub fn slow_request(request_id: u64, name: &str, start: u64, end: u64) -> SlowRequest {
        SlowRequest {
            request_id,
            name: name.to_owned(),
            trace_id: TraceId::from(
                0x0102_0304_0506_0708_090a_0b0c_0d0e_0f00_u128 + u128::from(request_id),
            ),
            span_id: SpanId::from(0x1000_u64 + request_id),
            own_span: false,
            error: false,
            start_unix_ns: start,
            end_unix_ns: end,
            open: false,
        }
    }

    /// A 2-second window with `tasks` tasks of `polls` 10 µs polls each on
    /// two workers, park/unpark moments, and `requests` slow requests (the
    /// first one entered by task 1's first poll). The last task's first poll
    /// runs 15 ms on a third thread: a long poll.
    pub fn window(tasks: usize, polls: usize, requests: usize) -> Window {
        let mut lanes: Vec<Vec<Event>> = vec![Vec::new(); 3];
        let mut strings = Vec::new();
        let mut t_next = FROM + 1_000_000;
        for i in 0..tasks {
            let id = i as u64 + 1;
            strings.push(format!("src/service/task_{i}.rs:{}:9", 10 + i));
            let loc = (strings.len() - 1) as u16;
            lanes[0].push(Event::new(
                FROM + 1_000 + i as u64,
                EventKind::TaskSpawn,
                id,
                loc,
            ));
            for j in 0..polls {
                let long = i + 1 == tasks && j == 0;
                let lane = if long { 2 } else { (i + j) % 2 };
                let (start, len) = if long {
                    (FROM + 500_000, 15_000_000)
                } else {
                    (t_next, 10_000)
                };
                if !long {
                    t_next += 20_000;
                }
                lanes[lane].push(Event::new(start, EventKind::PollStart, id, 0));
                if i == 0 && j == 0 && requests > 0 {
                    lanes[lane].push(Event::new(start + 1_000, EventKind::RequestEnter, 1, 0));
                    lanes[lane].push(Event::new(start + 2_000, EventKind::RequestExit, 1, 0));
                }
                lanes[lane].push(Event::new(start + len, EventKind::PollEnd, id, loc));
            }
        }
        for (k, lane) in lanes.iter_mut().enumerate().take(2) {
            for n in 0..4u64 {
                lane.push(Event::new(
                    FROM + 100_000_000 * (n + 1) + k as u64,
                    EventKind::Park,
                    0,
                    0,
                ));
                lane.push(Event::new(
                    FROM + 100_000_000 * (n + 1) + 50_000_000,
                    EventKind::Unpark,
                    0,
                    0,
                ));
            }
        }
        let names = [
            "tokio-runtime-worker",
            "tokio-runtime-worker",
            "blocking-neighbour",
        ];
        let lanes = lanes
            .into_iter()
            .enumerate()
            .map(|(i, mut events)| {
                events.sort_by_key(|e| e.ts);
                Lane {
                    index: i as u32,
                    thread: names[i].to_owned(),
                    events,
                    ..Lane::default()
                }
            })
            .collect();
        Window {
            sequence: 1,
            from_unix_ns: FROM,
            to_unix_ns: FROM + 2_000_000_000,
            requests: (1..=requests as u64)
                .map(|r| slow_request(r, "GET /slow", FROM + 400_000_000, FROM + 1_800_000_000))
                .collect(),
            lanes,
            strings,
            threshold: Duration::from_millis(250),
            long_poll: Duration::from_millis(10),
            task_hooks: true,
            ..Window::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Value;

    fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn int_attr(s: &SpanData, key: &str) -> i64 {
        match attr(s, key) {
            Some(Value::I64(v)) => *v,
            other => panic!("{key} on {}: {other:?}", s.name),
        }
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
        spans.iter().filter(|s| s.name == name).collect()
    }

    #[test]
    fn window_hangs_under_the_request_with_tasks_polls_and_workers() {
        let w = testing::window(3, 4, 1);
        let req = &w.requests[0];
        let (spans, at) = window_spans(&w, Budget::default());
        let at = at.unwrap();
        assert!(
            spans
                .iter()
                .all(|s| s.span_context.trace_id() == req.trace_id)
        );
        let win = named(&spans, keys::WINDOW_SPAN)[0];
        assert_eq!(win.parent_span_id, req.span_id);
        assert_eq!(win.span_context.span_id(), at.span_id);
        assert_eq!(win.start_time, time(w.from_unix_ns));
        assert_eq!(win.end_time, time(w.to_unix_ns));
        assert_eq!(attr(win, keys::CAPTURED), Some(&Value::Bool(true)));
        assert_eq!(int_attr(win, keys::WINDOW_TASKS), 3);
        assert_eq!(int_attr(win, keys::WINDOW_TASKS_OMITTED), 0);
        assert_eq!(int_attr(win, keys::WINDOW_EVENTS), w.events() as i64);
        assert_eq!(attr(win, keys::THRESHOLD_MS), Some(&Value::F64(250.0)));

        let tasks: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.name.starts_with("task "))
            .collect();
        assert_eq!(tasks.len(), 3);
        // The request's own task comes first and says so.
        assert_eq!(tasks[0].name, "task src/service/task_0.rs:10");
        assert_eq!(
            attr(tasks[0], keys::TASK_IN_REQUEST),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            attr(tasks[1], keys::TASK_IN_REQUEST),
            Some(&Value::Bool(false))
        );
        for t in &tasks {
            assert_eq!(t.parent_span_id, at.span_id);
            assert_eq!(int_attr(t, keys::TASK_POLLS), 4);
            assert!(matches!(attr(t, keys::CODE_FILE), Some(Value::String(_))));
            assert_eq!(t.events.events[0].name, "spawned");
            let polls: Vec<_> = spans
                .iter()
                .filter(|s| s.parent_span_id == t.span_context.span_id())
                .collect();
            assert_eq!(polls.len(), 4);
            assert!(
                polls
                    .iter()
                    .all(|p| p.start_time >= t.start_time && p.end_time <= t.end_time)
            );
        }
        // The blocking task's long poll is flagged, and only that one.
        let long: Vec<_> = named(&spans, keys::POLL_SPAN)
            .into_iter()
            .filter(|p| attr(p, keys::POLL_LONG) == Some(&Value::Bool(true)))
            .collect();
        assert_eq!(long.len(), 1);
        assert_eq!(
            attr(long[0], keys::POLL_WORKER),
            Some(&Value::from("blocking-neighbour"))
        );
        // Tasks after the request's own are ordered by time on a worker: the blocking one next.
        assert_eq!(tasks[1].name, "task src/service/task_2.rs:12");
        assert_eq!(int_attr(tasks[1], keys::TASK_LONG_POLLS), 1);
        assert_eq!(long[0].parent_span_id, tasks[1].span_context.span_id());

        // Workers: park and unpark as events inside the window.
        let workers: Vec<_> = spans
            .iter()
            .filter(|s| s.name.starts_with("worker "))
            .collect();
        assert_eq!(workers.len(), 3);
        let w0 = workers
            .iter()
            .find(|s| int_attr(s, keys::WORKER_LANE) == 0)
            .unwrap();
        assert_eq!(w0.events.len(), 8);
        assert!(
            w0.events
                .iter()
                .all(|e| e.timestamp >= win.start_time && e.timestamp <= win.end_time)
        );
        assert!(
            matches!(attr(w0, keys::WORKER_BUSY_FRACTION), Some(Value::F64(f)) if *f > 0.0 && *f < 1.0)
        );
    }

    #[test]
    fn budget_is_kept_and_what_is_left_out_is_counted() {
        let w = testing::window(300, 10, 1);
        let budget = Budget::new(100);
        let (spans, _) = window_spans(&w, budget);
        assert!(spans.len() <= 100, "{} spans", spans.len());
        let win = named(&spans, keys::WINDOW_SPAN)[0];
        let shown = int_attr(win, keys::WINDOW_TASKS_SHOWN);
        assert_eq!(shown + int_attr(win, keys::WINDOW_TASKS_OMITTED), 300);
        let tasks: Vec<_> = spans
            .iter()
            .filter(|s| s.name.starts_with("task "))
            .collect();
        assert_eq!(tasks.len() as i64, shown);
        // The request's task is never the one left out.
        assert_eq!(tasks[0].name, "task src/service/task_0.rs:10");
        // Every poll is either a span or counted.
        let polls_shown = named(&spans, keys::POLL_SPAN).len() as i64;
        assert_eq!(
            polls_shown + int_attr(win, keys::WINDOW_POLLS_OMITTED),
            3000
        );
        for t in tasks {
            assert_eq!(
                int_attr(t, keys::TASK_POLLS_SHOWN) + int_attr(t, keys::TASK_POLLS_OMITTED),
                10
            );
        }
        // The longest task (the one with the long poll) is shown, with its long poll.
        assert!(
            named(&spans, keys::POLL_SPAN)
                .iter()
                .any(|p| attr(p, keys::POLL_LONG).is_some())
        );
    }

    #[test]
    fn several_requests_link_both_ways() {
        let mut w = testing::window(2, 2, 3);
        w.requests[2].own_span = true;
        w.requests[2].error = true;
        let (spans, at) = window_spans(&w, Budget::default());
        let at = at.unwrap();
        let win = named(&spans, keys::WINDOW_SPAN)[0];
        assert_eq!(win.links.len(), 2);
        assert_eq!(
            win.links.links[0].span_context.trace_id(),
            w.requests[1].trace_id
        );
        assert_eq!(
            win.links.links[0].span_context.span_id(),
            w.requests[1].span_id
        );
        let refs = named(&spans, keys::WINDOW_REF_SPAN);
        assert_eq!(refs.len(), 2);
        for (r, req) in refs.iter().zip(&w.requests[1..]) {
            assert_eq!(r.span_context.trace_id(), req.trace_id);
            assert_eq!(r.parent_span_id, req.span_id);
            assert_eq!(r.links.links[0].span_context.span_id(), at.span_id);
            assert_eq!(r.links.links[0].span_context.trace_id(), at.trace_id);
        }
        // The third request's span was made by the recorder: exported, with its error.
        let own: Vec<_> = spans
            .iter()
            .filter(|s| s.span_context.span_id() == w.requests[2].span_id)
            .collect();
        assert_eq!(own.len(), 1);
        assert!(matches!(own[0].status, Status::Error { .. }));
        assert_eq!(own[0].parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn an_empty_window_maps_to_nothing() {
        assert_eq!(
            window_spans(&Window::default(), Budget::default()).0.len(),
            0
        );
        let w = testing::window(0, 0, 1);
        let (spans, _) = window_spans(&w, Budget::new(1));
        assert_eq!(spans.len(), 1, "only the window span");
    }

    #[test]
    fn poll_shares_fill_like_water() {
        assert_eq!(share_polls(&[1, 10, 10], 9), vec![1, 4, 4]);
        assert_eq!(share_polls(&[0, 3], 100), vec![0, 3]);
        assert_eq!(share_polls(&[5, 5, 5], 2), vec![0, 1, 1]);
        assert_eq!(share_polls(&[], 5), Vec::<usize>::new());
    }

    #[test]
    fn spans_go_through_an_in_memory_exporter() {
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanExporter};
        let exporter = InMemorySpanExporter::default();
        let (spans, _) = window_spans(&testing::window(2, 3, 1), Budget::default());
        let n = spans.len();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(exporter.export(spans)).unwrap();
        let got = exporter.get_finished_spans().unwrap();
        assert_eq!(got.len(), n);
        assert!(
            got.iter()
                .all(|s| s.instrumentation_scope.name() == SCOPE_NAME)
        );
    }

    #[test]
    fn scheduling_delays_become_woken_events_and_attributes() {
        use crate::event::{EventKind, encode_delay};
        let mut w = testing::window(2, 3, 1);
        w.schedule_delay = true;
        for lane in &mut w.lanes {
            for e in &mut lane.events {
                if e.kind() == Some(EventKind::PollStart) {
                    *e = crate::event::Event::new(
                        e.ts,
                        EventKind::PollStart,
                        e.subject(),
                        encode_delay(5_000),
                    );
                }
            }
        }
        let (spans, _) = window_spans(&w, Budget::default());
        let task = spans.iter().find(|s| s.name.starts_with("task ")).unwrap();
        assert_eq!(
            attr(task, keys::TASK_SCHED_DELAY_MS),
            Some(&Value::F64(0.015))
        );
        let polls: Vec<_> = spans
            .iter()
            .filter(|s| s.parent_span_id == task.span_context.span_id())
            .collect();
        let woken: Vec<_> = task.events.iter().filter(|e| e.name == "woken").collect();
        assert_eq!(woken.len(), 3);
        for (p, e) in polls.iter().zip(&woken) {
            assert_eq!(attr(p, keys::POLL_SCHED_DELAY_MS), Some(&Value::F64(0.005)));
            assert_eq!(e.timestamp + Duration::from_nanos(5_000), p.start_time);
        }
        // Not recorded: no attribute, no event.
        let (spans, _) = window_spans(&testing::window(2, 3, 1), Budget::default());
        assert!(
            spans
                .iter()
                .all(|s| attr(s, keys::TASK_SCHED_DELAY_MS).is_none())
        );
        assert!(
            spans
                .iter()
                .all(|s| s.events.iter().all(|e| e.name != "woken"))
        );
    }
}
