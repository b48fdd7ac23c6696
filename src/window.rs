//! The window: the events of every lane between two moments, cut when a slow
//! request triggers, and what they say about tasks, polls and workers.
//!
//! [`Window`] is the typed value handed to a sink: the slow requests it
//! covers, each lane's events in UNIX nanoseconds, the string table, and what
//! was lost. [`Window::tasks`], [`Window::workers`] and
//! [`Window::request_spans`] turn the raw events into the activity a person
//! looks at; the exporter, the dump reader and the command all use them.

use crate::capture::RawLane;
use crate::clock::TimeAnchor;
use crate::event::{Event, EventKind, NO_STRING, decode_delay};
use opentelemetry::trace::{SpanId, TraceId};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A request span that ran longer than the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlowRequest {
    /// The recorder's id of the request (the subject of its request events).
    pub request_id: u64,
    /// The span's name.
    pub name: String,
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The request span's id.
    pub span_id: SpanId,
    /// `true` when the ids were made by the recorder (no OpenTelemetry context
    /// was found): the request span itself must then be exported too.
    pub own_span: bool,
    /// An error event was recorded inside the request.
    pub error: bool,
    /// When the span was created, UNIX nanoseconds.
    pub start_unix_ns: u64,
    /// When the span closed, UNIX nanoseconds; for a request still open
    /// (`open`), when it was captured.
    pub end_unix_ns: u64,
    /// `true` when the request was still open when captured: it had been
    /// open longer than the stuck limit (`BLACKBOX_STUCK_AFTER`).
    pub open: bool,
}

impl SlowRequest {
    /// A slow request whose ids came from OpenTelemetry (`own_span` and
    /// `error` are `false`; both fields are public to change). For readers
    /// that rebuild a [`Window`] from somewhere else than the recorder, such
    /// as the `blackbox` command reading OTLP JSON capture files.
    ///
    /// # Examples
    ///
    /// ```
    /// use opentelemetry::trace::{SpanId, TraceId};
    /// use tokio_blackbox::SlowRequest;
    /// let r = SlowRequest::new(1, "GET /", TraceId::from(7u128), SpanId::from(8u64), 1_000, 3_000);
    /// assert_eq!(r.duration().as_nanos(), 2_000);
    /// assert!(!r.own_span);
    /// ```
    pub fn new(
        request_id: u64,
        name: impl Into<String>,
        trace_id: TraceId,
        span_id: SpanId,
        start_unix_ns: u64,
        end_unix_ns: u64,
    ) -> SlowRequest {
        SlowRequest {
            request_id,
            name: name.into(),
            trace_id,
            span_id,
            own_span: false,
            error: false,
            start_unix_ns,
            end_unix_ns,
            open: false,
        }
    }

    /// How long the request took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_ns.saturating_sub(self.start_unix_ns))
    }
}

/// The events one thread recorded inside a window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Lane {
    /// The lane's index: stable for the life of the recorder.
    pub index: u32,
    /// The name of the thread that wrote it (`tokio-runtime-worker` for workers).
    pub thread: String,
    /// Events in time order; timestamps are UNIX nanoseconds.
    pub events: Vec<Event>,
    /// Events of this window that were overwritten before the cut (an
    /// estimate from the lane's event rate, since their timestamps are gone).
    pub events_lost: u64,
}

/// The runtime activity around one or more slow requests.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::Window;
/// let w = Window::default();
/// assert!(w.tasks().is_empty());
/// assert_eq!(w.events(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Window {
    /// Sequence number of this capture in the process.
    pub sequence: u64,
    /// Window start, UNIX nanoseconds.
    pub from_unix_ns: u64,
    /// Window end, UNIX nanoseconds.
    pub to_unix_ns: u64,
    /// The slow requests this capture covers; the first triggered it. At
    /// most 64; the others are counted in `requests_omitted`.
    pub requests: Vec<SlowRequest>,
    /// Slow requests this capture also covered but does not carry (past 64).
    pub requests_omitted: u64,
    /// Each thread's events.
    pub lanes: Vec<Lane>,
    /// The string table that events' string arguments index into.
    pub strings: Vec<String>,
    /// The latency threshold in force.
    pub threshold: Duration,
    /// Polls longer than this are flagged as long (likely blocking).
    pub long_poll: Duration,
    /// Whether scheduling delays were recorded.
    pub schedule_delay: bool,
    /// Whether Tokio's task hooks were available (`--cfg tokio_unstable`).
    pub task_hooks: bool,
}

/// One poll of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Poll {
    /// The lane (thread) that polled.
    pub lane: u32,
    /// Poll start, UNIX ns (the window start if the poll began before it).
    pub start_ns: u64,
    /// Poll end, UNIX ns (the window end if the poll had not ended).
    pub end_ns: u64,
    /// How long the task waited for a worker before this poll, when recorded.
    pub sched_delay_ns: Option<u64>,
    /// `false` when the poll was cut by the window's edge.
    pub complete: bool,
}

impl Poll {
    /// The poll's duration in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// What one task did inside a window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TaskActivity {
    /// Tokio's task id.
    pub id: u64,
    /// The spawn location, `file:line:column`, when known.
    pub location: Option<String>,
    /// The span the task runs in (its `.instrument(..)` span or request
    /// span), when one was entered in its polls.
    pub span_name: Option<String>,
    /// When it was spawned, if inside the window.
    pub spawned_ns: Option<u64>,
    /// When it terminated, if inside the window.
    pub terminated_ns: Option<u64>,
    /// Its polls, in time order.
    pub polls: Vec<Poll>,
    /// Ids of the requests it worked for (entered their span, or was spawned inside it).
    pub requests: Vec<u64>,
}

impl TaskActivity {
    /// Time spent being polled.
    pub fn busy_ns(&self) -> u64 {
        self.polls
            .iter()
            .map(Poll::duration_ns)
            .fold(0, u64::saturating_add)
    }

    /// The longest poll.
    pub fn longest_poll_ns(&self) -> u64 {
        self.polls.iter().map(Poll::duration_ns).max().unwrap_or(0)
    }

    /// Total recorded scheduling delay.
    pub fn sched_delay_ns(&self) -> u64 {
        self.polls
            .iter()
            .filter_map(|p| p.sched_delay_ns)
            .fold(0, u64::saturating_add)
    }

    /// The spawn location split into file and line, when known.
    pub fn file_line(&self) -> Option<(&str, u32)> {
        let loc = self.location.as_deref()?;
        let mut parts = loc.rsplitn(3, ':');
        let _col = parts.next()?;
        let line = parts.next()?.parse().ok()?;
        Some((parts.next()?, line))
    }

    /// A display name: the span the task runs in, else `task <file>:<line>`,
    /// else `task <id>`.
    pub fn name(&self) -> String {
        if let Some(span) = &self.span_name {
            return span.clone();
        }
        match self.file_line() {
            Some((file, line)) => format!("task {file}:{line}"),
            None => format!("task {}", self.id),
        }
    }
}

/// What one thread did inside a window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerActivity {
    /// The lane index.
    pub lane: u32,
    /// The thread's name.
    pub thread: String,
    /// Moments the thread parked.
    pub parks: Vec<u64>,
    /// Moments the thread unparked.
    pub unparks: Vec<u64>,
    /// Time spent polling tasks.
    pub busy_ns: u64,
    /// Number of polls.
    pub polls: u64,
}

/// A request span's time on one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSpan {
    /// The request id.
    pub request_id: u64,
    /// The span name, if its open event is in the window.
    pub name: Option<String>,
    /// Opened (UNIX ns), if inside the window.
    pub open_ns: Option<u64>,
    /// Closed (UNIX ns), if inside the window.
    pub close_ns: Option<u64>,
    /// `(lane, enter, exit)` intervals.
    pub entered: Vec<(u32, u64, u64)>,
}

impl Window {
    /// Cuts a window from decoded lanes (raw clock): converts to UNIX
    /// nanoseconds and keeps the events in `[from, to]`.
    pub(crate) fn cut(
        lanes: Vec<RawLane>,
        from_unix_ns: u64,
        to_unix_ns: u64,
        anchor: &TimeAnchor,
    ) -> Vec<Lane> {
        lanes
            .into_iter()
            .filter_map(|l| {
                // In place: a storm's window is millions of events.
                let mut events = l.events;
                events.retain_mut(|e| {
                    e.ts = anchor.to_unix_ns(e.ts);
                    e.ts >= from_unix_ns && e.ts <= to_unix_ns
                });
                events.shrink_to_fit();
                (!events.is_empty() || l.events_lost > 0).then_some(Lane {
                    index: l.lane,
                    thread: l.thread,
                    events,
                    events_lost: l.events_lost,
                })
            })
            .collect()
    }

    /// Number of events in the window.
    pub fn events(&self) -> usize {
        self.lanes.iter().map(|l| l.events.len()).sum()
    }

    /// Events of the window lost to overwrite, over all lanes.
    pub fn events_lost(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.events_lost)
            .fold(0, u64::saturating_add)
    }

    fn string(&self, i: u16) -> Option<String> {
        (i != NO_STRING)
            .then(|| self.strings.get(usize::from(i)).cloned())
            .flatten()
    }

    /// The tasks seen in the window, ordered by task id.
    pub fn tasks(&self) -> Vec<TaskActivity> {
        let mut tasks: BTreeMap<u64, TaskActivity> = BTreeMap::new();
        fn task(tasks: &mut BTreeMap<u64, TaskActivity>, id: u64) -> &mut TaskActivity {
            tasks.entry(id).or_insert_with(|| TaskActivity {
                id,
                ..TaskActivity::default()
            })
        }
        for lane in &self.lanes {
            // The poll in progress on this lane, and the requests entered.
            let mut open: Option<(u64, u64, Option<u64>)> = None;
            let mut entered: Vec<u64> = Vec::new();
            for e in &lane.events {
                let Some(kind) = e.kind() else { continue };
                match kind {
                    EventKind::TaskSpawn => {
                        let loc = self.string(e.arg());
                        let t = task(&mut tasks, e.subject());
                        t.spawned_ns = Some(e.ts);
                        if t.location.is_none() {
                            t.location = loc;
                        }
                        if let Some(&r) = entered.last() {
                            push_unique(&mut t.requests, r);
                        }
                    }
                    EventKind::PollStart => {
                        if let Some((id, start, delay)) = open.take() {
                            // A poll start with no end: the end was lost.
                            task(&mut tasks, id).polls.push(Poll {
                                lane: lane.index,
                                start_ns: start,
                                end_ns: e.ts,
                                sched_delay_ns: delay,
                                complete: false,
                            });
                        }
                        let delay = self.schedule_delay.then(|| decode_delay(e.arg()));
                        open = Some((e.subject(), e.ts, delay));
                        task(&mut tasks, e.subject());
                    }
                    EventKind::PollEnd => {
                        let loc = self.string(e.arg());
                        let (start, delay, complete) = match open.take() {
                            Some((id, start, delay)) if id == e.subject() => (start, delay, true),
                            _ => (self.from_unix_ns.min(e.ts), None, false),
                        };
                        let t = task(&mut tasks, e.subject());
                        if t.location.is_none() {
                            t.location = loc;
                        }
                        t.polls.push(Poll {
                            lane: lane.index,
                            start_ns: start,
                            end_ns: e.ts,
                            sched_delay_ns: delay,
                            complete,
                        });
                    }
                    EventKind::TaskTerminate => {
                        task(&mut tasks, e.subject()).terminated_ns = Some(e.ts);
                    }
                    EventKind::TaskName => {
                        let name = self.string(e.arg());
                        let t = task(&mut tasks, e.subject());
                        if t.span_name.is_none() {
                            t.span_name = name;
                        }
                    }
                    EventKind::RequestEnter => {
                        entered.push(e.subject());
                        if let Some((id, _, _)) = open {
                            push_unique(&mut task(&mut tasks, id).requests, e.subject());
                        }
                    }
                    EventKind::RequestExit => {
                        if let Some(pos) = entered.iter().rposition(|&r| r == e.subject()) {
                            entered.remove(pos);
                        }
                    }
                    _ => {}
                }
            }
            if let Some((id, start, delay)) = open {
                task(&mut tasks, id).polls.push(Poll {
                    lane: lane.index,
                    start_ns: start,
                    end_ns: self.to_unix_ns.max(start),
                    sched_delay_ns: delay,
                    complete: false,
                });
            }
        }
        let mut out: Vec<TaskActivity> = tasks.into_values().collect();
        for t in &mut out {
            t.polls.sort_by_key(|p| p.start_ns);
        }
        out
    }

    /// Each thread's park/unpark moments and busy time.
    pub fn workers(&self) -> Vec<WorkerActivity> {
        self.lanes
            .iter()
            .map(|lane| {
                let mut w = WorkerActivity {
                    lane: lane.index,
                    thread: lane.thread.clone(),
                    ..WorkerActivity::default()
                };
                let mut poll_start: Option<u64> = None;
                for e in &lane.events {
                    match e.kind() {
                        Some(EventKind::Park) => w.parks.push(e.ts),
                        Some(EventKind::Unpark) => w.unparks.push(e.ts),
                        Some(EventKind::PollStart) => poll_start = Some(e.ts),
                        Some(EventKind::PollEnd) => {
                            let start = poll_start.take().unwrap_or(self.from_unix_ns.min(e.ts));
                            w.busy_ns = w.busy_ns.saturating_add(e.ts.saturating_sub(start));
                            w.polls += 1;
                        }
                        _ => {}
                    }
                }
                w
            })
            .collect()
    }

    /// The request spans seen in the window: open, close and entered intervals.
    pub fn request_spans(&self) -> Vec<RequestSpan> {
        let mut spans: BTreeMap<u64, RequestSpan> = BTreeMap::new();
        let mut entered_at: HashMap<(u32, u64), u64> = HashMap::new();
        for lane in &self.lanes {
            for e in &lane.events {
                let Some(kind) = e.kind() else { continue };
                let id = e.subject();
                let span = || RequestSpan {
                    request_id: id,
                    name: None,
                    open_ns: None,
                    close_ns: None,
                    entered: Vec::new(),
                };
                match kind {
                    EventKind::RequestOpen => {
                        let s = spans.entry(id).or_insert_with(span);
                        s.open_ns = Some(e.ts);
                        s.name = self.string(e.arg());
                    }
                    EventKind::RequestClose => {
                        spans.entry(id).or_insert_with(span).close_ns = Some(e.ts);
                    }
                    EventKind::RequestEnter => {
                        entered_at.insert((lane.index, id), e.ts);
                    }
                    EventKind::RequestExit => {
                        let start = entered_at
                            .remove(&(lane.index, id))
                            .unwrap_or(self.from_unix_ns.min(e.ts));
                        spans
                            .entry(id)
                            .or_insert_with(span)
                            .entered
                            .push((lane.index, start, e.ts));
                    }
                    _ => {}
                }
            }
        }
        spans.into_values().collect()
    }
}

fn push_unique(v: &mut Vec<u64>, x: u64) {
    if !v.contains(&x) {
        v.push(x);
    }
}
