//! Why a request was slow: its wall time split into shares that add up to
//! its duration, and a verdict naming the dominant cause.
//!
//! The method is written down for users in `docs/verdicts.md`; in short,
//! every instant of the request's interval `[start, end]` goes to exactly
//! one share, in this order of precedence:
//!
//! 1. **own CPU**: one of the request's own tasks was being polled, or its
//!    span was entered on some thread. Its own tasks are those that entered
//!    its span or were spawned inside it, and their children;
//! 2. **unknown**: the window has no evidence for it (before the window,
//!    or before the first kept event of a lane that lost events; all of it
//!    when Tokio's task hooks were not compiled in);
//! 3. **blocked worker**: one of its own tasks was runnable (waiting for a
//!    worker) while another task ran a long poll (at least the window's
//!    `long_poll`) on the worker that then polled it: that task is a culprit.
//!    Also blocked: time when every active worker ran another task's long
//!    poll at once, runnable or not, since then nothing polls the timer and
//!    I/O drivers and the request's wake-up itself waits;
//! 4. **saturated runtime**: runnable, and the worker was busy with polls
//!    that are each short (no single culprit);
//! 5. **waiting**: no own task runnable: a downstream call, a timer, a lock,
//!    a channel, the blocking pool.
//!
//! When a task was runnable comes from Tokio's scheduling delay when it was
//! recorded (`exact`), and is otherwise inferred (`inferred`; with the
//! delay recorded too, since Tokio's delay starts at the wake and misses
//! the time a yielded task waits to be woken): a poll that
//! starts within [`ADJACENT_NS`] of the end of another task's poll on the
//! same worker, with no park in between, was runnable since the start of
//! that worker's run of back-to-back polls (and not before the task's own
//! previous poll ended, or it was spawned). A poll that starts after the
//! worker was idle was not waiting for a worker.

use super::collect::{Spans, TaskDigest, Tasks, Workers};
use super::{Poll, Source, WorkerActivity, overlap};
use crate::window::{Cut, SlowRequest, Window};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Two polls on a worker this close (ns) are back to back: the second task
/// was already waiting when the first ended.
pub const ADJACENT_NS: u64 = 200_000;

/// The dominant reason a request was slow.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::analysis::Cause;
/// assert_eq!(Cause::BlockedWorker.as_str(), "blocked_worker");
/// assert_eq!(Cause::from_name("waiting"), Some(Cause::Waiting));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Cause {
    /// Another task's long poll held the worker the request's task waited for.
    BlockedWorker,
    /// Every worker busy with many short polls: the request's tasks queued.
    SaturatedRuntime,
    /// The request's own tasks were running.
    OwnCpu,
    /// No task of the request was runnable: it awaited something else.
    Waiting,
    /// The evidence is too thin or too evenly split to say.
    Unclear,
}

impl Cause {
    /// The value of `blackbox.cause`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::BlockedWorker => "blocked_worker",
            Cause::SaturatedRuntime => "saturated_runtime",
            Cause::OwnCpu => "own_cpu",
            Cause::Waiting => "waiting",
            Cause::Unclear => "unclear",
        }
    }

    /// The cause named `name` (as [`as_str`](Cause::as_str) writes it).
    pub fn from_name(name: &str) -> Option<Cause> {
        [
            Cause::BlockedWorker,
            Cause::SaturatedRuntime,
            Cause::OwnCpu,
            Cause::Waiting,
            Cause::Unclear,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the scheduling delay was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Confidence {
    /// From Tokio's recorded scheduling delay (`BLACKBOX_SCHEDULE_DELAY`).
    Exact,
    /// Inferred from the order of polls on each worker.
    Inferred,
}

impl Confidence {
    /// The value of `blackbox.verdict.confidence`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Exact => "exact",
            Confidence::Inferred => "inferred",
        }
    }
}

/// A task whose long polls held a worker the request waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Culprit {
    /// Tokio's task id.
    pub task: u64,
    /// Its display name ([`TaskActivity::name`](super::TaskActivity::name)).
    pub name: String,
    /// The lane (worker) it held.
    pub lane: u32,
    /// How long its polls on that lane ran inside the request's interval.
    pub held_ns: u64,
    /// The part of the request's time charged to it (blocked worker share).
    pub blocked_ns: u64,
    /// Its longest poll in the window, on any worker.
    pub longest_poll_ns: u64,
}

/// One share of a request's time.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Share {
    /// The share's name, as in `blackbox.share.<name>`: `own_cpu`,
    /// `blocked_worker`, `saturated_runtime`, `waiting` or `unknown`.
    pub name: &'static str,
    /// Its length.
    pub ns: u64,
    /// Its fraction of the request's duration.
    pub fraction: f64,
}

/// Where a slow request's time went, and the verdict.
///
/// # Examples
///
/// ```
/// use opentelemetry::trace::{SpanId, TraceId};
/// use tokio_blackbox::analysis::{self, Cause};
/// use tokio_blackbox::{Event, EventKind, Lane, SlowRequest, Window};
/// use tokio_blackbox::event::NO_STRING;
///
/// // Request 1 runs in task 7, which polls for 90 ms of its 100 ms.
/// let ms = 1_000_000;
/// let mut lane = Lane::default();
/// lane.thread = "tokio-runtime-worker".into();
/// lane.events = vec![
///     Event::new(0, EventKind::PollStart, 7, 0),
///     Event::new(0, EventKind::RequestEnter, 1, 0),
///     Event::new(90 * ms, EventKind::RequestExit, 1, 0),
///     Event::new(90 * ms, EventKind::PollEnd, 7, NO_STRING),
/// ];
/// let request = SlowRequest::new(1, "GET /", TraceId::from(1u128), SpanId::from(1u64), 0, 100 * ms);
/// let mut w = Window::default();
/// (w.to_unix_ns, w.task_hooks) = (200 * ms, true);
/// w.lanes.push(lane);
/// let e = analysis::explain(&w, &request);
/// assert_eq!(e.cause, Cause::OwnCpu);
/// assert_eq!(e.shares().iter().map(|s| s.ns).sum::<u64>(), 100 * ms);
/// assert!(e.sentence.starts_with("own CPU"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// The request explained.
    pub request_id: u64,
    /// Its duration.
    pub duration_ns: u64,
    /// The verdict.
    pub cause: Cause,
    /// How the scheduling shares were known.
    pub confidence: Confidence,
    /// Time its own tasks ran (or its span was entered).
    pub own_cpu_ns: u64,
    /// Time its tasks were runnable behind other tasks' long polls.
    pub blocked_ns: u64,
    /// Time its tasks were runnable behind many short polls.
    pub saturated_ns: u64,
    /// Time no task of it was runnable.
    pub waiting_ns: u64,
    /// Of `waiting_ns`, the time its span was entered on no thread at all.
    pub waiting_outside_span_ns: u64,
    /// Time the window holds no evidence for.
    pub unknown_ns: u64,
    /// The causes with time, largest first (never `Unclear`).
    pub ranking: Vec<(Cause, u64)>,
    /// Worker threads active during the request.
    pub workers: usize,
    /// Tasks that blocked a worker it waited for, largest share first.
    pub culprits: Vec<Culprit>,
    /// Its own tasks (ids), with the CPU time each ran inside its interval.
    pub own_tasks: Vec<(u64, u64)>,
    /// Why the verdict is `Unclear`, when it is.
    pub unclear_because: Option<String>,
    /// One line for a person: the verdict and the numbers behind it.
    pub sentence: String,
}

impl Explanation {
    /// The five shares, adding up to the duration.
    pub fn shares(&self) -> [Share; 5] {
        let d = self.duration_ns.max(1) as f64;
        let share = |name, ns: u64| Share {
            name,
            ns,
            fraction: ns as f64 / d,
        };
        [
            share("own_cpu", self.own_cpu_ns),
            share("blocked_worker", self.blocked_ns),
            share("saturated_runtime", self.saturated_ns),
            share("waiting", self.waiting_ns),
            share("unknown", self.unknown_ns),
        ]
    }
}

/// What an instant of the request's time is, by precedence (lowest wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Own,
    Unknown,
    /// Blocked behind the culprit with this key (task, lane): where two
    /// culprits' marks overlap, the lower task wins, whichever was found first.
    Blocked((u64, u32)),
    Saturated,
}

/// Explains why `request` was slow from the events of `window`.
pub fn explain(window: &Window, request: &SlowRequest) -> Explanation {
    let (tasks, workers) = digest(window, request);
    explain_from(window, request, &tasks, &workers)
}

/// [`explain`] for a [`Cut`], decoded as it is read.
pub fn explain_cut(cut: &Cut, request: &SlowRequest) -> Explanation {
    let (tasks, workers) = digest(cut, request);
    explain_from(cut, request, &tasks, &workers)
}

/// What the verdict of `request` reads from `window`: each task's digest,
/// with the polls that can bear on the request's interval, and the workers.
///
/// Those polls are the ones ending from [`ADJACENT_NS`] before its start
/// and starting before its end; and, when one of its own tasks alive in
/// the interval (not spawned after it) is next polled after it (its wait
/// for a worker may reach back into the interval), every poll up to that
/// one, so the worker's run of polls before it is at hand. A poll that ended earlier tells no more
/// than when it ended, which the digest keeps (`end_before_focus`).
pub(crate) fn digest(
    window: &dyn Source,
    request: &SlowRequest,
) -> (Vec<TaskDigest>, Vec<WorkerActivity>) {
    let (s, e) = (
        request.start_unix_ns,
        request.end_unix_ns.max(request.start_unix_ns),
    );
    let from = s.saturating_sub(ADJACENT_NS);
    let tasks = tasks_in(window, (from, e));
    let own = own_tasks(&tasks, request.request_id);
    let next = tasks
        .iter()
        .filter(|d| own.contains(&d.id))
        // Alive in the interval: polled by then, or spawned by then, or
        // not spawned in the window at all (so before it began).
        .filter(|d| {
            d.end_before_focus().is_some()
                || !d.focus_polls().is_empty()
                || d.spawned_ns().is_none_or(|t| t <= e)
        })
        .filter_map(TaskDigest::start_after_focus)
        .max();
    let tasks = match next {
        Some(to) => {
            drop(tasks);
            tasks_in(window, (from, to))
        }
        None => tasks,
    };
    let mut workers = Workers::default();
    window.scan(&mut workers);
    (tasks, workers.workers)
}

/// The digests keeping the polls of `focus` (not resolved).
pub(crate) fn tasks_in(source: &dyn Source, focus: (u64, u64)) -> Vec<TaskDigest> {
    let window = source.window();
    let long_poll = window.long_poll.as_nanos().min(u128::from(u64::MAX)) as u64;
    let mut tasks = Tasks::focused(&window.strings, focus, long_poll);
    tasks.name_after(window.requests.iter().map(|r| r.request_id));
    // A task has at least two events (a spawn or poll start, and more).
    tasks.expect(source.events() / 2);
    source.scan(&mut tasks);
    tasks.digests()
}

/// [`explain`] with the request's [`digest`] already at hand (the export
/// plan has it): only the polls near the request are read (see [`digest`]).
pub(crate) fn explain_from(
    source: &dyn Source,
    request: &SlowRequest,
    tasks: &[TaskDigest],
    workers: &[WorkerActivity],
) -> Explanation {
    let window = source.window();
    let (s, e) = (
        request.start_unix_ns,
        request.end_unix_ns.max(request.start_unix_ns),
    );
    let mut spans = Spans::new(&window.strings, Some(request.request_id));
    source.scan(&mut spans);
    let spans = spans.finish();
    let own = own_tasks(tasks, request.request_id);
    let exact = window.schedule_delay;
    let long_poll = (window.long_poll.as_nanos() as u64).max(1);

    // Each lane's polls in time order (borrowed: a storm's window has
    // millions), and its park/unpark moments.
    let mut lanes: BTreeMap<u32, Vec<&Poll>> = workers
        .iter()
        .filter(|w| w.polls > 0)
        .map(|w| (w.lane, Vec::new()))
        .collect();
    for t in tasks {
        for p in t.focus_polls() {
            lanes.entry(p.lane).or_default().push(p);
        }
    }
    for polls in lanes.values_mut() {
        polls.sort_by_key(|p| p.time_order());
    }
    let idle: HashMap<u32, Vec<u64>> = workers
        .iter()
        .map(|w| {
            let mut v: Vec<u64> = w.parks.iter().chain(&w.unparks).copied().collect();
            v.sort_unstable();
            (w.lane, v)
        })
        .collect();

    // Intervals, each with its class.
    let mut marks: Vec<(u64, u64, Class)> = Vec::new();
    // Unknown: before the window, before the first kept event of a lane
    // that lost some, or everything without task hooks.
    let mut known_from = window.from_unix_ns;
    for (i, lane) in window.lanes.iter().enumerate() {
        if lane.events_lost > 0
            && let Some(first) = source.first_event_ts(i)
        {
            known_from = known_from.max(first);
        }
    }
    if !window.task_hooks {
        known_from = e;
    }
    marks.push((s, known_from.min(e), Class::Unknown));
    // Own CPU: own polls, and the span entered anywhere.
    let span = spans.iter().find(|r| r.request_id == request.request_id);
    let entered: Vec<(u64, u64)> = span
        .map(|r| r.entered.iter().map(|&(_, a, b)| (a, b)).collect())
        .unwrap_or_default();
    for &(a, b) in &entered {
        marks.push((a, b, Class::Own));
    }
    let mut own_cpu_by_task: BTreeMap<u64, u64> = BTreeMap::new();
    // By (task, lane): the order does not depend on which polls are at hand.
    let mut culprits: BTreeMap<(u64, u32), Culprit> = BTreeMap::new();
    for d in tasks.iter().filter(|d| own.contains(&d.id)) {
        // The end of its poll before the first one kept, or its spawn.
        let mut prev_end = d.end_before_focus().or(d.spawned_ns());
        if d.polls > 0 {
            // Listed when polled in the window, even if not near the request.
            own_cpu_by_task.entry(d.id).or_default();
        }
        for p in d.focus_polls() {
            marks.push((p.start_ns, p.end_ns, Class::Own));
            let cpu = own_cpu_by_task.entry(d.id).or_default();
            // Saturating: a damaged file may hold overlapping polls of any length.
            *cpu = cpu.saturating_add(p.overlap_ns(s, e));
            // When was it runnable before this poll?
            // Tokio's delay counts from the wake; a task that yielded (or
            // ran out of its cooperative budget) is woken only when its
            // worker next looks at its deferred tasks, so the order of
            // polls still tells what the delay misses.
            let recorded = p.sched_delay_ns.map(|d| p.start_ns.saturating_sub(d));
            let inferred = inferred_runnable(&lanes[&p.lane], &idle, p, prev_end);
            let runnable_from = match (recorded, inferred) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            prev_end = Some(p.end_ns);
            let Some(from) = runnable_from else { continue };
            if from >= p.start_ns || overlap(from, p.start_ns, s, e) == 0 {
                continue;
            }
            // Runnable: queued (saturated) unless another task's long poll
            // held that worker meanwhile (blocked, which takes precedence).
            marks.push((from, p.start_ns, Class::Saturated));
            // Polls never overlap on a lane, so sorted by start they are
            // sorted by end too: the ones during the wait are one run.
            let lane = &lanes[&p.lane];
            let first = lane.partition_point(|q| q.end_ns <= from);
            for q in lane[first..]
                .iter()
                .take_while(|q| q.start_ns < p.start_ns)
                .filter(|q| q.is_long(long_poll) && !own.contains(&q.task))
            {
                let key = culprit(&mut culprits, (tasks, &window.strings), q);
                marks.push((
                    q.start_ns.max(from),
                    q.end_ns.min(p.start_ns),
                    Class::Blocked(key),
                ));
            }
        }
    }
    // Every worker held by another task's long poll at once: nothing polls
    // the timer and I/O drivers, so the request's wake-up itself waits.
    // That time is blocked even where no task of it was runnable yet.
    let active_lanes: Vec<u32> = lanes
        .iter()
        .filter(|(lane, polls)| {
            polls.iter().any(|p| p.end_ns > s && p.start_ns < e)
                || idle
                    .get(lane)
                    .is_some_and(|v| v.iter().any(|&t| t >= s && t <= e))
        })
        .map(|(&lane, _)| lane)
        .collect();
    // (time, +1/-1, when its poll began, culprit)
    let mut held: Vec<(u64, i64, u64, (u64, u32))> = Vec::new();
    for &lane in &active_lanes {
        for q in lanes[&lane].iter().filter(|q| {
            q.is_long(long_poll) && !own.contains(&q.task) && q.end_ns > s && q.start_ns < e
        }) {
            let key = culprit(&mut culprits, (tasks, &window.strings), q);
            held.push((q.start_ns.max(s), 1, q.start_ns, key));
            held.push((q.end_ns.min(e), -1, q.start_ns, key));
        }
    }
    held.sort_unstable_by_key(|&(t, d, _, _)| (t, d));
    let mut holding: Vec<(u64, (u64, u32))> = Vec::new(); // (poll start, culprit)
    let mut since = s;
    for (t, d, began, key) in held {
        if !active_lanes.is_empty() && holding.len() == active_lanes.len() && t > since {
            // Charged to the one of them that has held its worker longest
            // (the lower lane when they began at once).
            if let Some(&(_, first)) = holding
                .iter()
                .min_by_key(|&&(began, (_, lane))| (began, lane))
            {
                marks.push((since, t, Class::Blocked(first)));
            }
        }
        if d > 0 {
            holding.push((began, key));
        } else if let Some(pos) = holding.iter().position(|&(_, k)| k == key) {
            holding.remove(pos);
        }
        since = t;
    }
    for c in culprits.values_mut() {
        for q in lanes[&c.lane].iter().filter(|q| q.task == c.task) {
            c.held_ns = c.held_ns.saturating_add(q.overlap_ns(s, e));
        }
        c.longest_poll_ns = tasks
            .binary_search_by_key(&c.task, |d| d.id)
            .map_or(0, |i| tasks[i].longest_ns);
    }

    // Sweep: each elementary interval of [s, e] goes to its lowest class.
    let mut cuts: Vec<u64> = vec![s, e];
    for &(a, b, _) in &marks {
        cuts.push(a.clamp(s, e));
        cuts.push(b.clamp(s, e));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut starts: Vec<(u64, u64, Class)> = marks
        .into_iter()
        .filter_map(|(a, b, c)| {
            let (a, b) = (a.max(s), b.min(e));
            (a < b).then_some((a, b, c))
        })
        .collect();
    starts.sort_unstable_by_key(|&(a, _, _)| a);
    let (mut own_ns, mut blocked_ns, mut saturated_ns, mut waiting_ns, mut unknown_ns) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut outside_span = 0u64;
    let mut active: BTreeSet<(Class, u64, usize)> = BTreeSet::new(); // (class, end, id)
    let mut next = 0;
    for pair in cuts.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        while next < starts.len() && starts[next].0 <= a {
            let (_, end, class) = starts[next];
            active.insert((class, end, next));
            next += 1;
        }
        active.retain(|&(_, end, _)| end > a);
        let len = b - a;
        match active.iter().next().map(|&(c, _, _)| c) {
            Some(Class::Unknown) => unknown_ns += len,
            Some(Class::Own) => own_ns += len,
            Some(Class::Blocked(key)) => {
                blocked_ns += len;
                if let Some(c) = culprits.get_mut(&key) {
                    c.blocked_ns += len;
                }
            }
            Some(Class::Saturated) => saturated_ns += len,
            None => {
                waiting_ns += len;
                if !entered.iter().any(|&(x, y)| x < b && y > a) {
                    outside_span += len;
                }
            }
        }
    }
    let mut culprits: Vec<Culprit> = culprits
        .into_values()
        .filter(|c| c.blocked_ns > 0)
        .collect();
    // Stable: equal shares stay in task order.
    culprits.sort_by_key(|c| std::cmp::Reverse(c.blocked_ns));

    let duration = e - s;
    let mut ranking: Vec<(Cause, u64)> = [
        (Cause::BlockedWorker, blocked_ns),
        (Cause::SaturatedRuntime, saturated_ns),
        (Cause::OwnCpu, own_ns),
        (Cause::Waiting, waiting_ns),
    ]
    .into_iter()
    .filter(|&(_, ns)| ns > 0)
    .collect();
    ranking.sort_by_key(|&(c, ns)| (std::cmp::Reverse(ns), c));

    let unclear_because = if !window.task_hooks {
        Some("no task hooks (built without --cfg tokio_unstable), so polls are unknown".to_owned())
    } else if unknown_ns.saturating_mul(2) >= duration.max(1) {
        Some(format!(
            "incomplete window: no events for {} of the request's {}",
            ms(unknown_ns),
            ms(duration)
        ))
    } else {
        match ranking.as_slice() {
            [] => Some("no activity of the request in the window".to_owned()),
            [(c1, a), (c2, b), ..] if (a - b).saturating_mul(10) < duration => Some(format!(
                "shares too close: {} {}, {} {}",
                c1,
                ms(*a),
                c2,
                ms(*b)
            )),
            _ => None,
        }
    };
    let cause = match (&unclear_because, ranking.first()) {
        (None, Some(&(c, _))) => c,
        _ => Cause::Unclear,
    };
    let mut own_tasks: Vec<(u64, u64)> = own_cpu_by_task.into_iter().collect();
    own_tasks.sort_by_key(|&(id, ns)| (std::cmp::Reverse(ns), id));
    let mut out = Explanation {
        request_id: request.request_id,
        duration_ns: duration,
        cause,
        confidence: if exact {
            Confidence::Exact
        } else {
            Confidence::Inferred
        },
        own_cpu_ns: own_ns,
        blocked_ns,
        saturated_ns,
        waiting_ns,
        waiting_outside_span_ns: outside_span,
        unknown_ns,
        ranking,
        workers: active_lanes.len(),
        culprits,
        own_tasks,
        unclear_because,
        sentence: String::new(),
    };
    out.sentence = sentence(&out, tasks, &window.strings);
    out
}

/// The key of the culprit for the task and lane of poll `q`, added if new.
fn culprit(
    culprits: &mut BTreeMap<(u64, u32), Culprit>,
    (tasks, strings): (&[TaskDigest], &[String]),
    q: &Poll,
) -> (u64, u32) {
    let key = (q.task, q.lane);
    culprits.entry(key).or_insert_with(|| Culprit {
        task: q.task,
        name: name_of(tasks, strings, q.task),
        lane: q.lane,
        held_ns: 0,
        blocked_ns: 0,
        longest_poll_ns: 0,
    });
    key
}

/// The display name of task `id` ([`TaskActivity::name`](super::TaskActivity::name)).
fn name_of(tasks: &[TaskDigest], strings: &[String], id: u64) -> String {
    tasks
        .binary_search_by_key(&id, |d| d.id)
        .map_or_else(|_| format!("task {id}"), |i| tasks[i].name(strings))
}

/// The request's own tasks: those linked to it and, transitively, their children.
fn own_tasks(tasks: &[TaskDigest], request: u64) -> BTreeSet<u64> {
    let mut own: BTreeSet<u64> = tasks
        .iter()
        .filter(|d| d.worked_for(request))
        .map(|d| d.id)
        .collect();
    loop {
        let before = own.len();
        for t in tasks {
            if let Some(parent) = t.parent()
                && own.contains(&parent)
            {
                own.insert(t.id);
            }
        }
        if own.len() == before {
            return own;
        }
    }
}

/// Without recorded delays: when was the task of poll `p` runnable? `lane`
/// is the worker's polls in time order; `prev_end` is when the task's
/// previous poll ended (or it was spawned).
fn inferred_runnable(
    lane: &[&Poll],
    idle: &HashMap<u32, Vec<u64>>,
    p: &Poll,
    prev_end: Option<u64>,
) -> Option<u64> {
    let idle_between = |a: u64, b: u64| {
        idle.get(&p.lane)
            .is_some_and(|v| v.iter().any(|&t| t > a && t < b))
    };
    let at = lane.partition_point(|q| q.time_order() < p.time_order());
    let (before, earlier) = lane[..at].split_last()?;
    // Polled again right after its own poll, or after the worker was idle:
    // it was not waiting for a worker.
    if before.task == p.task
        || p.start_ns.saturating_sub(before.end_ns) > ADJACENT_NS
        || idle_between(before.end_ns, p.start_ns)
    {
        return None;
    }
    // Walk back over the worker's run of back-to-back polls.
    let mut run_start = before.start_ns;
    for q in earlier.iter().rev() {
        if prev_end.is_some_and(|prev| run_start <= prev)
            || run_start.saturating_sub(q.end_ns) > ADJACENT_NS
            || idle_between(q.end_ns, run_start)
        {
            break;
        }
        run_start = run_start.min(q.start_ns);
    }
    Some(prev_end.map_or(run_start, |prev| run_start.max(prev)))
}

fn ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn sentence(x: &Explanation, tasks: &[TaskDigest], strings: &[String]) -> String {
    let d = ms(x.duration_ns);
    match x.cause {
        Cause::BlockedWorker => {
            let c = &x.culprits[0];
            let mut s = format!(
                "blocked worker: {} held worker {} for {} of this {d} request",
                c.name,
                c.lane,
                ms(c.held_ns)
            );
            if x.culprits.len() > 1 {
                let rest: u64 = x.culprits[1..].iter().map(|c| c.blocked_ns).sum();
                s.push_str(&format!(
                    " (and {} other task(s) for {})",
                    x.culprits.len() - 1,
                    ms(rest)
                ));
            }
            s
        }
        Cause::SaturatedRuntime => {
            let workers = x.workers;
            format!(
                "saturated runtime: the request's tasks waited {} of this {d} request for one of {workers} busy workers running many short polls (no single culprit)",
                ms(x.saturated_ns)
            )
        }
        Cause::OwnCpu => {
            let mut s = format!(
                "own CPU: the request's own tasks ran for {} of this {d} request",
                ms(x.own_cpu_ns)
            );
            if let Some(&(id, ns)) = x.own_tasks.first() {
                let name = name_of(tasks, strings, id);
                s.push_str(&format!(" ({name}: {})", ms(ns)));
            }
            s
        }
        Cause::Waiting => {
            let mut s = format!(
                "waiting: no task of the request was runnable for {} of this {d} request (a downstream call, a timer, a lock, a channel or the blocking pool)",
                ms(x.waiting_ns)
            );
            if x.waiting_outside_span_ns > 0 {
                s.push_str(&format!(
                    "; its span was entered on no thread for {} of that",
                    ms(x.waiting_outside_span_ns)
                ));
            }
            s
        }
        Cause::Unclear => {
            let why = x.unclear_because.as_deref().unwrap_or("no clear cause");
            let ranked: Vec<String> = x
                .ranking
                .iter()
                .map(|(c, ns)| format!("{c} {}", ms(*ns)))
                .collect();
            if ranked.is_empty() {
                format!("unclear: {why}")
            } else {
                format!("unclear: {why} ({} of {d})", ranked.join(", "))
            }
        }
    }
}
