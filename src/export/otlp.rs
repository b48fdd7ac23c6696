//! Span assembly: a captured [`Window`] as OTLP [`SpanData`], pure (no I/O,
//! no clock).
//!
//! [`window_spans`] turns a window into spans in the slow request's own
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
//! What is shown and what is only counted is the [plan](super::plan) of the
//! window under its [`Budget`]; every name and key written is in
//! [`names`].
//!
//! The spans are built as `SpanData` (not through a tracer) because a tracer
//! can set neither the ids nor the end time since opentelemetry 0.32, and
//! because the SDK's span limits (128 events by default) would cut a worker's
//! park events.

use super::names;
use super::plan::{Plan, ShownTask, plan_of};
use crate::analysis::Source;
use crate::analysis::{Explanation, WorkerActivity};
use crate::window::{SlowRequest, Window};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use super::plan::{Budget, MAX_EVENTS_PER_SPAN};

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
    InstrumentationScope::builder(names::SCOPE_NAME)
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
/// `source` says why: [`names::SOURCE_RECORDER`],
/// [`names::SOURCE_TAIL_SAMPLER_MISSED`] or [`names::SOURCE_REPLAY`].
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::{names, otlp::request_span};
/// use tokio_blackbox::SlowRequest;
///
/// let ids = (opentelemetry::trace::TraceId::from(7u128), opentelemetry::trace::SpanId::from(9u64));
/// let req = SlowRequest::new(1, "GET /slow", ids.0, ids.1, 1_000, 251_000_000);
/// let span = request_span(&req, names::SOURCE_REPLAY);
/// assert_eq!(span.span_context.span_id(), ids.1);
/// assert_eq!(span.name, "GET /slow");
/// ```
pub fn request_span(req: &SlowRequest, source: &'static str) -> SpanData {
    SpanParts {
        trace_id: req.trace_id,
        span_id: req.span_id,
        parent: SpanId::INVALID,
        name: req.name.clone(),
        start_ns: req.start_unix_ns,
        end_ns: req.end_unix_ns,
        attributes: vec![
            KeyValue::new(names::CAPTURED, true),
            KeyValue::new(names::REQUEST_SOURCE, source),
            KeyValue::new(
                names::REQUEST_DURATION_MS,
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

/// Adds the request spans of a window's slow requests (`requests`) that are not in
/// `spans` yet (those the recorder did not make itself, `own_span` false)
/// for which `missing` holds, each with `source`
/// ([`names::REQUEST_SOURCE`]): so a window whose request span did not reach
/// the backend (a tail sampler dropped it, a replay of a file) does not hang
/// under a missing parent.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use tokio_blackbox::export::{names, otlp::{Budget, attach_request_spans, window_spans}};
/// let window = tokio_blackbox::export::testing::window(1, 1, 1);
/// let (mut spans, _) = window_spans(&window, Budget::default());
/// let n = spans.len();
/// attach_request_spans(&window.requests, &mut spans, names::SOURCE_REPLAY, |_| true);
/// assert_eq!(spans.len(), n + 1);
/// # }
/// ```
pub fn attach_request_spans(
    requests: &[SlowRequest],
    spans: &mut Vec<SpanData>,
    source: &'static str,
    mut missing: impl FnMut(&SlowRequest) -> bool,
) {
    for r in requests.iter().filter(|r| !r.own_span) {
        if missing(r) {
            spans.push(request_span(r, source));
        }
    }
}

/// Maps a window to spans in the first slow request's trace, following its
/// plan ([`super::plan::plan`]) under `budget`.
///
/// Returns the spans and where the `blackbox.window` span is (`None` for a
/// window with no slow request, which maps to nothing).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use tokio_blackbox::export::otlp::{Budget, window_spans};
///
/// // A synthetic window (the `testing` feature): 3 tasks of 4 polls each, one slow request.
/// let window = tokio_blackbox::export::testing::window(3, 4, 1);
/// let req = &window.requests[0];
/// let (spans, at) = window_spans(&window, Budget::default());
/// let at = at.expect("a window with a request is mapped");
/// let w = spans.iter().find(|s| s.name == "blackbox.window").unwrap();
/// assert_eq!(w.span_context.trace_id(), req.trace_id);
/// assert_eq!(w.parent_span_id, req.span_id);
/// assert_eq!(w.span_context.span_id(), at.span_id);
/// assert_eq!(spans.iter().filter(|s| s.name == "poll").count(), 12);
/// # }
/// ```
pub fn window_spans(window: &Window, budget: Budget) -> (Vec<SpanData>, Option<WindowSpanRef>) {
    spans_of(window, budget)
}

/// [`window_spans`] for a window in memory or a [`Cut`](crate::Cut),
/// decoded as it is read.
pub(crate) fn spans_of(
    source: &dyn Source,
    budget: Budget,
) -> (Vec<SpanData>, Option<WindowSpanRef>) {
    let Some(plan) = plan_of(source, budget) else {
        return (Vec::new(), None);
    };
    let assembly = Assembly::new(source.window(), source.events());
    let mut out = Vec::with_capacity(plan.spans());
    assembly.structure(&mut out, &plan);
    for w in &plan.workers {
        out.push(assembly.worker(w, budget.worker_events()));
    }
    for t in &plan.tasks {
        assembly.task(t, &mut out);
    }
    out.push(assembly.window_span(&plan, budget));
    (out, Some(assembly.at))
}

/// The verdict's attributes (docs/verdicts.md): sentence, cause,
/// confidence, ranking, culprit and the five shares in ms and fractions.
fn verdict_attributes(e: &Explanation) -> Vec<KeyValue> {
    let ranking: Vec<String> = e
        .ranking
        .iter()
        .map(|(c, ns)| format!("{c} {:.0}ms", *ns as f64 / 1e6))
        .collect();
    let mut out = vec![
        KeyValue::new(names::VERDICT, e.sentence.clone()),
        KeyValue::new(names::CAUSE, e.cause.as_str()),
        KeyValue::new(names::VERDICT_CONFIDENCE, e.confidence.as_str()),
        KeyValue::new(names::VERDICT_RANKING, ranking.join(", ")),
    ];
    if let Some(c) = e.culprits.first() {
        out.push(KeyValue::new(names::VERDICT_CULPRIT, c.name.clone()));
    }
    for share in e.shares() {
        out.push(KeyValue::new(
            format!("{}{}_ms", names::SHARE_PREFIX, share.name),
            ms(share.ns),
        ));
        out.push(KeyValue::new(
            format!("{}{}", names::SHARE_PREFIX, share.name),
            share.fraction,
        ));
    }
    out
}

/// The verdict as a span event at the request's end.
fn verdict_event(req: &SlowRequest, attributes: Vec<KeyValue>) -> Event {
    Event::new(names::EVENT_VERDICT, time(req.end_unix_ns), attributes, 0)
}

/// What every span of one window shares while it is assembled: the window,
/// its trace and window span, the id generator, the scope.
struct Assembly<'w> {
    /// The window without its events (a cut's header).
    window: &'w Window,
    /// Its number of events.
    events: usize,
    primary: &'w SlowRequest,
    /// The trace and the `blackbox.window` span everything hangs under.
    at: WindowSpanRef,
    from: u64,
    to: u64,
    long_poll_ns: u64,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
}

impl<'w> Assembly<'w> {
    /// For a window with at least one slow request.
    fn new(window: &'w Window, events: usize) -> Assembly<'w> {
        let primary = &window.requests[0];
        let ids = RandomIdGenerator::default();
        Assembly {
            window,
            events,
            primary,
            at: WindowSpanRef {
                trace_id: primary.trace_id,
                span_id: ids.new_span_id(),
            },
            from: window.from_unix_ns,
            to: window.to_unix_ns.max(window.from_unix_ns),
            long_poll_ns: window.long_poll.as_nanos() as u64,
            ids,
            scope: scope(),
        }
    }

    fn span(&self, parts: SpanParts) -> SpanData {
        parts.build(&self.scope)
    }

    /// The request spans the recorder made, and a reference span in each
    /// other slow request's trace. Always exported.
    fn structure(&self, out: &mut Vec<SpanData>, plan: &Plan) {
        let window = self.window;
        for (i, req) in window.requests.iter().enumerate() {
            if req.own_span {
                let mut span = request_span(req, names::SOURCE_RECORDER);
                if i == 0 {
                    // The recorder made the request span: its verdict goes
                    // on the request's own row too.
                    let event = verdict_event(req, verdict_attributes(&plan.verdict));
                    span.events.events.push(event);
                }
                out.push(span);
            }
            if i == 0 {
                continue;
            }
            let link = Link::new(
                context(self.at.trace_id, self.at.span_id),
                vec![KeyValue::new(names::LINK_KIND, names::LINK_WINDOW)],
                0,
            );
            out.push(self.span(SpanParts {
                trace_id: req.trace_id,
                span_id: self.ids.new_span_id(),
                parent: req.span_id,
                name: names::WINDOW_REF_SPAN.into(),
                start_ns: req.start_unix_ns,
                end_ns: req.end_unix_ns,
                attributes: vec![
                    KeyValue::new(names::CAPTURED, true),
                    KeyValue::new(names::WINDOW_TRACE_ID, self.at.trace_id.to_string()),
                    KeyValue::new(names::THRESHOLD_MS, ms(window.threshold.as_nanos() as u64)),
                    KeyValue::new(
                        names::REQUEST_DURATION_MS,
                        ms(req.duration().as_nanos() as u64),
                    ),
                    KeyValue::new(names::REQUEST_NAME, req.name.clone()),
                    KeyValue::new(names::REQUEST_OPEN, req.open),
                ],
                events: Vec::new(),
                links: vec![link],
                status: Status::Unset,
            }));
        }
    }

    /// The window span, once the plan's counts are known.
    fn window_span(&self, plan: &Plan, budget: Budget) -> SpanData {
        let (window, primary) = (self.window, self.primary);
        let mut links: Vec<Link> = window.requests[1..]
            .iter()
            .map(|r| {
                Link::new(
                    context(r.trace_id, r.span_id),
                    vec![
                        KeyValue::new(names::LINK_KIND, names::LINK_SLOW_REQUEST),
                        KeyValue::new(names::REQUEST_NAME, r.name.clone()),
                        KeyValue::new(
                            names::REQUEST_DURATION_MS,
                            ms(r.duration().as_nanos() as u64),
                        ),
                    ],
                    0,
                )
            })
            .collect();
        links.truncate(MAX_EVENTS_PER_SPAN);
        let verdict = verdict_attributes(&plan.verdict);
        let mut attributes = vec![
            KeyValue::new(names::CAPTURED, true),
            KeyValue::new(names::THRESHOLD_MS, ms(window.threshold.as_nanos() as u64)),
            KeyValue::new(
                names::REQUEST_DURATION_MS,
                ms(primary.duration().as_nanos() as u64),
            ),
            KeyValue::new(names::REQUEST_NAME, primary.name.clone()),
            int(names::WINDOW_REQUESTS, window.requests.len() as u64),
            int(names::WINDOW_REQUESTS_OMITTED, window.requests_omitted),
            KeyValue::new(names::REQUEST_OPEN, primary.open),
            int(names::WINDOW_SEQUENCE, window.sequence),
            int(names::WINDOW_START, self.from),
            int(names::WINDOW_END, self.to),
            int(names::WINDOW_EVENTS, self.events as u64),
            int(names::WINDOW_EVENTS_LOST, window.events_lost()),
            int(names::WINDOW_TASKS, plan.tasks_total as u64),
            int(names::WINDOW_TASKS_SHOWN, plan.tasks.len() as u64),
            int(names::WINDOW_TASKS_OMITTED, plan.tasks_omitted() as u64),
            int(names::WINDOW_POLLS_OMITTED, plan.polls_omitted),
            KeyValue::new(
                names::WINDOW_POLLS_OMITTED_BUSY_MS,
                ms(plan.polls_omitted_busy_ns),
            ),
            int(names::WINDOW_LONG_POLLS_OMITTED, plan.long_polls_omitted),
            int(names::WINDOW_WORKERS_OMITTED, plan.workers_omitted as u64),
            int(names::WINDOW_MAX_SPANS, budget.max_spans as u64),
            KeyValue::new(names::LONG_POLL_MS, ms(self.long_poll_ns)),
            KeyValue::new(names::WINDOW_TASK_HOOKS, window.task_hooks),
            KeyValue::new(names::WINDOW_SCHEDULE_DELAY, window.schedule_delay),
        ];
        attributes.extend(verdict.iter().cloned());
        self.span(SpanParts {
            trace_id: self.at.trace_id,
            span_id: self.at.span_id,
            parent: primary.span_id,
            name: names::WINDOW_SPAN.into(),
            start_ns: self.from,
            end_ns: self.to,
            attributes,
            events: vec![verdict_event(primary, verdict)],
            links,
            status: Status::Unset,
        })
    }

    /// A thread's span: the whole window, park and unpark as events, at
    /// most `cap` of them: those nearest the slow request first (all of
    /// those during it when they fit), the rest counted.
    fn worker(&self, w: &WorkerActivity, cap: usize) -> SpanData {
        let window = self.window;
        let mut moments: Vec<(u64, &'static str)> = w
            .parks
            .iter()
            .map(|&t| (t, names::EVENT_PARK))
            .chain(w.unparks.iter().map(|&t| (t, names::EVENT_UNPARK)))
            .collect();
        let omitted = moments.len().saturating_sub(cap);
        if omitted > 0 {
            let (from, to) = (self.primary.start_unix_ns, self.primary.end_unix_ns);
            let distance = |t: u64| from.saturating_sub(t).max(t.saturating_sub(to));
            moments.sort_unstable_by_key(|&(t, name)| (distance(t), t, name));
            moments.truncate(cap);
        }
        moments.sort_unstable();
        let events = moments
            .iter()
            .map(|&(t, name)| Event::new(name, time(t), Vec::new(), 0))
            .collect();
        let lost = window
            .lanes
            .iter()
            .find(|l| l.index == w.lane)
            .map_or(0, |l| l.events_lost);
        let window_ns = (self.to - self.from).max(1);
        self.span(SpanParts {
            trace_id: self.at.trace_id,
            span_id: self.ids.new_span_id(),
            parent: self.at.span_id,
            name: format!("{}{}", names::WORKER_SPAN_PREFIX, w.thread),
            start_ns: window.from_unix_ns,
            end_ns: window.to_unix_ns,
            attributes: vec![
                KeyValue::new(names::CAPTURED, true),
                KeyValue::new(names::THREAD_NAME, w.thread.clone()),
                int(names::WORKER_LANE, u64::from(w.lane)),
                KeyValue::new(
                    names::WORKER_BUSY_FRACTION,
                    (w.busy_ns as f64 / window_ns as f64).min(1.0),
                ),
                KeyValue::new(names::WORKER_BUSY_MS, ms(w.busy_ns)),
                int(names::WORKER_POLLS, w.polls),
                int(names::WORKER_PARKS, w.parks.len() as u64),
                int(names::WORKER_EVENTS_OMITTED, omitted as u64),
                int(names::WORKER_EVENTS_LOST, lost),
            ],
            events,
            links: Vec::new(),
            status: Status::Unset,
        })
    }

    /// A task's span and the polls the plan shows of it.
    fn task(&self, shown_task: &ShownTask, out: &mut Vec<SpanData>) {
        let (window, t) = (self.window, &shown_task.task);
        let long_poll_ns = self.long_poll_ns;
        let task_id = self.ids.new_span_id();
        let shown = &t.polls;
        let omitted_busy = shown_task.omitted_busy_ns();

        let mut events = Vec::new();
        if let Some(ts) = t.spawned_ns {
            events.push(Event::new(names::EVENT_SPAWNED, time(ts), Vec::new(), 0));
        }
        for p in shown {
            if let Some(d) = p.sched_delay_ns.filter(|_| window.schedule_delay) {
                if events.len() >= MAX_EVENTS_PER_SPAN {
                    break;
                }
                events.push(Event::new(
                    names::EVENT_WOKEN,
                    time(p.start_ns.saturating_sub(d)),
                    vec![KeyValue::new(names::POLL_SCHED_DELAY_MS, ms(d))],
                    0,
                ));
            }
        }
        if let Some(ts) = t.terminated_ns {
            events.push(Event::new(names::EVENT_TERMINATED, time(ts), Vec::new(), 0));
        }
        events.sort_by_key(|e| e.timestamp);

        let mut attributes = vec![
            KeyValue::new(names::CAPTURED, true),
            int(names::TASK_ID, t.id),
            KeyValue::new(names::TASK_IN_REQUEST, shown_task.in_request),
            int(names::TASK_POLLS, shown_task.polls_total),
            KeyValue::new(names::TASK_BUSY_MS, ms(shown_task.busy_ns)),
            KeyValue::new(names::TASK_LONGEST_POLL_MS, ms(shown_task.longest_poll_ns)),
            int(names::TASK_LONG_POLLS, shown_task.long_polls),
            int(names::TASK_POLLS_SHOWN, shown.len() as u64),
            int(names::TASK_POLLS_OMITTED, shown_task.polls_omitted()),
            KeyValue::new(names::TASK_POLLS_OMITTED_BUSY_MS, ms(omitted_busy)),
        ];
        if window.schedule_delay {
            attributes.push(KeyValue::new(
                names::TASK_SCHED_DELAY_MS,
                ms(shown_task.sched_delay_ns),
            ));
        }
        if let Some((file, line)) = t.file_line() {
            attributes.push(KeyValue::new(names::CODE_FILE, file.to_owned()));
            attributes.push(int(names::CODE_LINE, u64::from(line)));
            if let Some(col) = t
                .location
                .as_deref()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|c| c.parse::<u64>().ok())
            {
                attributes.push(int(names::CODE_COLUMN, col));
            }
        }
        // The task's bar covers its life inside the window, every poll
        // (shown or not) included.
        let (first_start, last_end) = shown_task.polled.unwrap_or((u64::MAX, 0));
        let start = t.spawned_ns.unwrap_or(window.from_unix_ns).min(first_start);
        let end = t.terminated_ns.unwrap_or(window.to_unix_ns).max(last_end);
        out.push(self.span(SpanParts {
            trace_id: self.at.trace_id,
            span_id: task_id,
            parent: self.at.span_id,
            name: t.name(),
            start_ns: start,
            end_ns: end,
            attributes,
            events,
            links: Vec::new(),
            status: Status::Unset,
        }));
        for p in shown {
            // The lane names the thread: its worker span carries the
            // thread's name once (`thread.name`, `blackbox.worker.lane`),
            // not every poll.
            let mut attributes = vec![int(names::POLL_LANE, u64::from(p.lane))];
            if let Some(d) = p.sched_delay_ns.filter(|_| window.schedule_delay) {
                attributes.push(KeyValue::new(names::POLL_SCHED_DELAY_MS, ms(d)));
            }
            if p.is_long(long_poll_ns) {
                attributes.push(KeyValue::new(names::POLL_LONG, true));
            }
            if !p.complete {
                attributes.push(KeyValue::new(names::POLL_COMPLETE, false));
            }
            out.push(self.span(SpanParts {
                trace_id: self.at.trace_id,
                span_id: self.ids.new_span_id(),
                parent: task_id,
                name: names::POLL_SPAN.into(),
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                attributes,
                events: Vec::new(),
                links: Vec::new(),
                status: Status::Unset,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::names as keys;
    use crate::export::testing;
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
        assert_eq!(
            attr(win, keys::WINDOW_POLLS_OMITTED_BUSY_MS),
            Some(&Value::F64(0.0))
        );
        assert_eq!(int_attr(win, keys::WINDOW_LONG_POLLS_OMITTED), 0);
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
        // Its lane names its thread through the worker span of that lane
        // (the name is not repeated on every poll).
        assert_eq!(attr(long[0], keys::POLL_WORKER), None);
        let lane = int_attr(long[0], keys::POLL_LANE);
        let thread = spans
            .iter()
            .filter(|s| s.name.starts_with(keys::WORKER_SPAN_PREFIX))
            .find(|s| int_attr(s, keys::WORKER_LANE) == lane)
            .expect("the worker span of the poll's lane");
        assert_eq!(
            attr(thread, keys::THREAD_NAME),
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
    fn worker_events_nearest_the_request_are_kept() {
        // 8 park/unpark events a worker; a budget of 8 spans keeps 2 a
        // worker: the two during the request (400 ms to 1.8 s).
        let w = testing::window(1, 1, 1);
        let budget = Budget::new(8);
        assert_eq!(budget.worker_events(), 2);
        let (spans, _) = window_spans(&w, budget);
        let req = &w.requests[0];
        let worker = spans
            .iter()
            .find(|s| s.name.starts_with("worker ") && int_attr(s, keys::WORKER_LANE) == 0)
            .unwrap();
        assert_eq!(worker.events.len(), 2);
        assert!(worker.events.iter().all(|e| {
            e.timestamp >= time(req.start_unix_ns) && e.timestamp <= time(req.end_unix_ns)
        }));
        assert_eq!(int_attr(worker, keys::WORKER_EVENTS_OMITTED), 6);
        assert_eq!(int_attr(worker, keys::WORKER_PARKS), 4);
        // The default keeps all 8.
        let (spans, _) = window_spans(&w, Budget::default());
        let worker = spans
            .iter()
            .find(|s| s.name.starts_with("worker ") && int_attr(s, keys::WORKER_LANE) == 0)
            .unwrap();
        assert_eq!(worker.events.len(), 8);
        assert_eq!(int_attr(worker, keys::WORKER_EVENTS_OMITTED), 0);
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
                .all(|s| s.instrumentation_scope.name() == names::SCOPE_NAME)
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
