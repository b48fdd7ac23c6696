//! The collectors behind [`Window::tasks`], [`Window::workers`] and
//! [`Window::request_spans`]: each a [`Visitor`] of the one pairing pass.

use super::{Poll, Visitor, scan_window};
use crate::event::{Event, NO_STRING};
use crate::window::{Lane, Window};
use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// The task it was spawned by (during one of that task's polls), if
    /// the spawn is inside the window.
    pub parent: Option<u64>,
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

fn string(strings: &[String], i: u16) -> Option<String> {
    (i != NO_STRING)
        .then(|| strings.get(usize::from(i)).cloned())
        .flatten()
}

/// Stands for "none" in a [`TaskDigest`]'s times and ids.
const NONE: u64 = u64::MAX;

/// `v` unless it is [`NONE`].
fn some(v: u64) -> Option<u64> {
    (v != NONE).then_some(v)
}

/// What the export plan and the verdict know of one task: the sums over
/// all its polls, and only the polls inside a focus interval. A storm's
/// window has millions of polls (48 bytes each, three times their two
/// events) and tens of thousands of tasks, so a digest is kept small: its
/// times are plain integers ([`NONE`] for none), and what most tasks do
/// not have (a second request, polls in the focus) is boxed.
#[derive(Debug, Clone)]
pub(crate) struct TaskDigest {
    /// Tokio's task id.
    pub(crate) id: u64,
    parent: u64,
    spawned: u64,
    terminated: u64,
    /// All its polls in the window.
    pub(crate) polls: u64,
    /// Time spent being polled, all polls.
    pub(crate) busy_ns: u64,
    /// Its longest poll.
    pub(crate) longest_ns: u64,
    /// Total recorded scheduling delay.
    pub(crate) sched_delay_ns: u64,
    /// When its first poll started and its last one ended ([`NONE`], 0 without polls).
    first_start: u64,
    last_end: u64,
    /// When its last poll before the focus ended.
    end_before: u64,
    /// When its first poll after the focus started.
    start_after: u64,
    /// The first request it worked for.
    request: u64,
    /// The first request whose span it entered in one of its polls: names
    /// it when it has no `TaskName` (pairing rule 7).
    entered: u64,
    /// Polls longer than the window's `long_poll`.
    pub(crate) long_polls: u32,
    /// Its spawn location and span name, as string indexes.
    location: u16,
    span_name: u16,
    more: Option<Box<DigestMore>>,
}

/// What few tasks have.
#[derive(Debug, Clone, Default)]
struct DigestMore {
    /// Requests after the first.
    requests: Vec<u64>,
    /// Its polls in the focus, in time order once digested.
    polls: Vec<Poll>,
}

impl TaskDigest {
    pub(crate) fn new(id: u64) -> TaskDigest {
        TaskDigest {
            id,
            parent: NONE,
            spawned: NONE,
            terminated: NONE,
            polls: 0,
            busy_ns: 0,
            longest_ns: 0,
            sched_delay_ns: 0,
            first_start: NONE,
            last_end: 0,
            end_before: NONE,
            start_after: NONE,
            request: NONE,
            entered: NONE,
            long_polls: 0,
            location: NO_STRING,
            span_name: NO_STRING,
            more: None,
        }
    }

    fn more(&mut self) -> &mut DigestMore {
        self.more.get_or_insert_with(Box::default)
    }

    /// The task it was spawned by, when the spawn is in the window.
    pub(crate) fn parent(&self) -> Option<u64> {
        some(self.parent)
    }

    /// When it was spawned, if inside the window.
    pub(crate) fn spawned_ns(&self) -> Option<u64> {
        some(self.spawned)
    }

    /// When its first poll started and its last one ended.
    pub(crate) fn polled(&self) -> Option<(u64, u64)> {
        some(self.first_start).map(|a| (a, self.last_end))
    }

    /// When its last poll before the focus ended.
    pub(crate) fn end_before_focus(&self) -> Option<u64> {
        some(self.end_before)
    }

    /// When its first poll after the focus started.
    pub(crate) fn start_after_focus(&self) -> Option<u64> {
        some(self.start_after)
    }

    /// Its polls in the focus, in time order.
    pub(crate) fn focus_polls(&self) -> &[Poll] {
        self.more.as_ref().map_or(&[], |m| &m.polls)
    }

    /// The requests it worked for, first first.
    pub(crate) fn requests(&self) -> impl Iterator<Item = u64> + '_ {
        some(self.request)
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.requests.iter().copied()))
    }

    /// Whether it worked for `request`.
    pub(crate) fn worked_for(&self, request: u64) -> bool {
        self.requests().any(|r| r == request)
    }

    fn add_request(&mut self, request: u64) {
        if self.request == NONE {
            self.request = request;
        } else if !self.worked_for(request) {
            self.more().requests.push(request);
        }
    }

    /// The task's activity, with its focus polls and its strings.
    pub(crate) fn activity(&self, strings: &[String]) -> TaskActivity {
        TaskActivity {
            id: self.id,
            location: string(strings, self.location),
            span_name: string(strings, self.span_name),
            spawned_ns: self.spawned_ns(),
            terminated_ns: some(self.terminated),
            polls: self.focus_polls().to_vec(),
            requests: self.requests().collect(),
            parent: self.parent(),
        }
    }

    /// The task's display name ([`TaskActivity::name`]).
    pub(crate) fn name(&self, strings: &[String]) -> String {
        TaskActivity {
            id: self.id,
            location: string(strings, self.location),
            span_name: string(strings, self.span_name),
            ..TaskActivity::default()
        }
        .name()
    }
}

/// Builds [`TaskActivity`] per task: every poll ([`Tasks::new`]), or only
/// those of a focus interval with the sums of all ([`Tasks::focused`]).
#[derive(Debug, Default)]
pub(crate) struct Tasks<'w> {
    strings: &'w [String],
    /// Polls kept: those ending at or after `.0` and starting at or before `.1`.
    focus: (u64, u64),
    long_poll_ns: u64,
    /// Where each task is in `tasks`.
    index: HashMap<u64, u32>,
    tasks: Vec<TaskDigest>,
    /// The requests' names (string indexes): a task with no `TaskName` is
    /// named after the first request it entered (pairing rule 7). Keyed by
    /// the 32-bit id events carry.
    request_names: HashMap<u32, u16>,
    /// Only these requests' names are kept (`None`: every request's): a
    /// storm's window opens hundreds of thousands of requests, and the
    /// verdict and the export plan name tasks after the slow ones only.
    named_requests: Option<HashSet<u64>>,
}

impl<'w> Tasks<'w> {
    pub(crate) fn new(strings: &'w [String]) -> Tasks<'w> {
        Tasks::focused(strings, (0, u64::MAX), u64::MAX)
    }

    /// Keeps the polls of `[from, to]` only; `long_poll_ns` is what the
    /// digests count as long.
    pub(crate) fn focused(
        strings: &'w [String],
        focus: (u64, u64),
        long_poll_ns: u64,
    ) -> Tasks<'w> {
        Tasks {
            strings,
            focus,
            long_poll_ns,
            index: HashMap::new(),
            tasks: Vec::new(),
            request_names: HashMap::new(),
            named_requests: None,
        }
    }

    fn task(&mut self, id: u64) -> &mut TaskDigest {
        let next = self.tasks.len() as u32;
        let at = *self.index.entry(id).or_insert(next);
        if at == next {
            self.tasks.push(TaskDigest::new(id));
        }
        &mut self.tasks[at as usize]
    }

    /// Names tasks after these requests only (pairing rule 7), keeping no
    /// name of the others.
    pub(crate) fn name_after(&mut self, requests: impl IntoIterator<Item = u64>) {
        self.named_requests = Some(requests.into_iter().collect());
    }

    /// Makes room for at most `tasks` digests up front, if the address
    /// space is there: the vector is filled in order, so its pages are
    /// backed only as digests are written, and it is never copied to grow
    /// (a storm's window has tens of thousands of tasks; doubling would
    /// hold two copies of their digests). The index is not reserved: its
    /// entries land anywhere in it, and would touch every page.
    pub(crate) fn expect(&mut self, tasks: usize) {
        let _ = self.tasks.try_reserve_exact(tasks);
    }

    /// The digests, ordered by task id, each with its kept polls in time order.
    pub(crate) fn digests(self) -> Vec<TaskDigest> {
        drop(self.index);
        let (names, strings) = (self.request_names, self.strings);
        let mut out = self.tasks;
        for d in &mut out {
            if d.span_name == NO_STRING
                && let Some(name) = u32::try_from(d.entered).ok().and_then(|r| names.get(&r))
            {
                first_string(&mut d.span_name, *name, strings);
            }
            if let Some(m) = d.more.as_mut() {
                m.polls.sort_by_key(Poll::time_order);
            }
        }
        out.sort_unstable_by_key(|d| d.id);
        out
    }

    /// The tasks, ordered by id, each with its polls in time order.
    pub(crate) fn finish(self) -> Vec<TaskActivity> {
        let strings = self.strings;
        self.digests()
            .into_iter()
            .map(|d| d.activity(strings))
            .collect()
    }
}

/// Sets `slot` to the string index `i` the first time one is known (in
/// the table: a damaged file may hold others).
fn first_string(slot: &mut u16, i: u16, strings: &[String]) {
    if *slot == NO_STRING && usize::from(i) < strings.len() {
        *slot = i;
    }
}

impl Visitor for Tasks<'_> {
    fn event(&mut self, _lane: u32, e: &Event) {
        if e.kind() == Some(crate::EventKind::PollStart) {
            self.task(e.subject());
        }
    }

    fn poll(&mut self, p: &Poll) {
        let ((from, to), long, strings) = (self.focus, self.long_poll_ns, self.strings);
        let d = self.task(p.task);
        first_string(&mut d.location, p.location, strings);
        let len = p.duration_ns();
        d.polls += 1;
        d.busy_ns = d.busy_ns.saturating_add(len);
        d.longest_ns = d.longest_ns.max(len);
        d.long_polls += u32::from(super::is_long_poll(len, long));
        d.sched_delay_ns = d
            .sched_delay_ns
            .saturating_add(p.sched_delay_ns.unwrap_or(0));
        d.first_start = d.first_start.min(p.start_ns);
        d.last_end = d.last_end.max(p.end_ns);
        if p.end_ns < from {
            d.end_before = match d.end_before {
                NONE => p.end_ns,
                t => t.max(p.end_ns),
            };
        } else if p.start_ns <= to {
            d.more().polls.push(*p);
        } else {
            d.start_after = d.start_after.min(p.start_ns);
        }
    }

    fn spawn(&mut self, _lane: u32, task: u64, location: u16, ts: u64) {
        let strings = self.strings;
        let d = self.task(task);
        d.spawned = ts;
        first_string(&mut d.location, location, strings);
    }

    fn spawned_by(&mut self, task: u64, parent: u64) {
        self.task(task).parent = parent;
    }

    fn terminate(&mut self, _lane: u32, task: u64, ts: u64) {
        self.task(task).terminated = ts;
    }

    fn task_name(&mut self, task: u64, name: u16) {
        let strings = self.strings;
        first_string(&mut self.task(task).span_name, name, strings);
    }

    fn task_request(&mut self, task: u64, request: u64) {
        self.task(task).add_request(request);
    }

    fn task_entered(&mut self, task: u64, request: u64) {
        let d = self.task(task);
        if d.entered == NONE {
            d.entered = request;
        }
    }

    fn request_open(&mut self, request: u64, name: u16, _ts: u64) {
        if self
            .named_requests
            .as_ref()
            .is_some_and(|only| !only.contains(&request))
        {
            return;
        }
        if let Ok(request) = u32::try_from(request) {
            self.request_names.insert(request, name);
        }
    }
}

/// The `share` longest polls of some tasks (a second pass, once the plan
/// knows which tasks it shows and how many polls each may show).
#[derive(Debug, Default)]
pub(crate) struct LongestPolls {
    shares: HashMap<u64, usize>,
    kept: HashMap<u64, Vec<Poll>>,
}

impl LongestPolls {
    /// Longest first, the earlier of two as long.
    fn trim(polls: &mut Vec<Poll>, share: usize) {
        polls.sort_unstable_by_key(|p| (std::cmp::Reverse(p.duration_ns()), p.start_ns, p.lane));
        polls.truncate(share);
    }

    /// Keeps, for each `(task, share)`, the task's `share` longest polls.
    pub(crate) fn new(shares: impl IntoIterator<Item = (u64, usize)>) -> LongestPolls {
        LongestPolls {
            shares: shares.into_iter().filter(|&(_, n)| n > 0).collect(),
            kept: HashMap::new(),
        }
    }

    /// Each task's kept polls, in time order.
    pub(crate) fn finish(self) -> HashMap<u64, Vec<Poll>> {
        let mut kept = self.kept;
        for (task, polls) in &mut kept {
            LongestPolls::trim(polls, self.shares[task]);
            polls.sort_by_key(Poll::time_order);
        }
        kept
    }
}

impl Visitor for LongestPolls {
    fn poll(&mut self, p: &Poll) {
        let Some(&share) = self.shares.get(&p.task) else {
            return;
        };
        let polls = self.kept.entry(p.task).or_default();
        polls.push(*p);
        // Trimmed now and then: at most twice the share is held.
        if polls.len() >= 2 * share.max(8) {
            LongestPolls::trim(polls, share);
        }
    }
}

/// Builds [`WorkerActivity`] per lane from the same polls as [`Tasks`].
#[derive(Debug, Default)]
pub(crate) struct Workers {
    pub(crate) workers: Vec<WorkerActivity>,
}

impl Visitor for Workers {
    fn lane(&mut self, lane: &Lane) {
        self.workers.push(WorkerActivity {
            lane: lane.index,
            thread: lane.thread.clone(),
            ..WorkerActivity::default()
        });
    }

    fn poll(&mut self, p: &Poll) {
        if let Some(w) = self.workers.last_mut() {
            w.busy_ns = w.busy_ns.saturating_add(p.duration_ns());
            w.polls += 1;
        }
    }

    fn park(&mut self, _lane: u32, ts: u64, parked: bool) {
        if let Some(w) = self.workers.last_mut() {
            if parked {
                w.parks.push(ts);
            } else {
                w.unparks.push(ts);
            }
        }
    }
}

/// Builds [`RequestSpan`] per request, or for one request only.
#[derive(Debug)]
pub(crate) struct Spans<'w> {
    strings: &'w [String],
    only: Option<u64>,
    spans: BTreeMap<u64, RequestSpan>,
}

impl<'w> Spans<'w> {
    /// Collects the span of request `only`, or every request's.
    pub(crate) fn new(strings: &'w [String], only: Option<u64>) -> Spans<'w> {
        Spans {
            strings,
            only,
            spans: BTreeMap::new(),
        }
    }

    /// The spans, ordered by request id.
    pub(crate) fn finish(self) -> Vec<RequestSpan> {
        self.spans.into_values().collect()
    }

    fn span(&mut self, id: u64) -> Option<&mut RequestSpan> {
        if self.only.is_some_and(|only| only != id) {
            return None;
        }
        Some(self.spans.entry(id).or_insert_with(|| RequestSpan {
            request_id: id,
            name: None,
            open_ns: None,
            close_ns: None,
            entered: Vec::new(),
        }))
    }
}

impl Visitor for Spans<'_> {
    fn request_open(&mut self, request: u64, name: u16, ts: u64) {
        let name = string(self.strings, name);
        if let Some(s) = self.span(request) {
            s.open_ns = Some(ts);
            s.name = name;
        }
    }

    fn request_close(&mut self, request: u64, ts: u64) {
        if let Some(s) = self.span(request) {
            s.close_ns = Some(ts);
        }
    }

    fn entered(&mut self, lane: u32, request: u64, start_ns: u64, end_ns: u64) {
        if let Some(s) = self.span(request) {
            s.entered.push((lane, start_ns, end_ns));
        }
    }
}

impl Window {
    /// The tasks seen in the window, ordered by task id (see the
    /// [pairing rules](crate::analysis#pairing-rules)).
    pub fn tasks(&self) -> Vec<TaskActivity> {
        let mut tasks = Tasks::new(&self.strings);
        scan_window(self, &mut tasks);
        tasks.finish()
    }

    /// Each thread's park/unpark moments and busy time: the sum of the
    /// same polls [`tasks`](Window::tasks) returns for that lane.
    pub fn workers(&self) -> Vec<WorkerActivity> {
        let mut workers = Workers::default();
        scan_window(self, &mut workers);
        workers.workers
    }

    /// The request spans seen in the window: open, close and entered
    /// intervals, ordered by request id.
    pub fn request_spans(&self) -> Vec<RequestSpan> {
        let mut spans = Spans::new(&self.strings, None);
        scan_window(self, &mut spans);
        spans.finish()
    }
}
