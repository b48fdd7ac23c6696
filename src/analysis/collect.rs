//! The collectors behind [`Window::tasks`], [`Window::workers`] and
//! [`Window::request_spans`]: each a [`Visitor`] of the one pairing pass.

use super::{Poll, Visitor, scan_window};
use crate::event::{Event, NO_STRING};
use crate::window::{Lane, Window};
use std::collections::BTreeMap;

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

/// Builds [`TaskActivity`] per task.
#[derive(Debug, Default)]
pub(crate) struct Tasks<'w> {
    strings: &'w [String],
    tasks: BTreeMap<u64, TaskActivity>,
}

impl<'w> Tasks<'w> {
    pub(crate) fn new(strings: &'w [String]) -> Tasks<'w> {
        Tasks {
            strings,
            tasks: BTreeMap::new(),
        }
    }

    fn string(&self, i: u16) -> Option<String> {
        string(self.strings, i)
    }

    fn task(&mut self, id: u64) -> &mut TaskActivity {
        self.tasks.entry(id).or_insert_with(|| TaskActivity {
            id,
            ..TaskActivity::default()
        })
    }

    /// The tasks, ordered by id, each with its polls in time order.
    pub(crate) fn finish(self) -> Vec<TaskActivity> {
        let mut out: Vec<TaskActivity> = self.tasks.into_values().collect();
        for t in &mut out {
            t.polls.sort_by_key(|p| p.start_ns);
        }
        out
    }
}

impl Visitor for Tasks<'_> {
    fn event(&mut self, _lane: u32, e: &Event) {
        if e.kind() == Some(crate::EventKind::PollStart) {
            self.task(e.subject());
        }
    }

    fn poll(&mut self, p: &Poll) {
        let loc = self.string(p.location);
        let t = self.task(p.task);
        if t.location.is_none() {
            t.location = loc;
        }
        t.polls.push(*p);
    }

    fn spawn(&mut self, _lane: u32, task: u64, location: u16, ts: u64) {
        let loc = self.string(location);
        let t = self.task(task);
        t.spawned_ns = Some(ts);
        if t.location.is_none() {
            t.location = loc;
        }
    }

    fn spawned_by(&mut self, task: u64, parent: u64) {
        self.task(task).parent = Some(parent);
    }

    fn terminate(&mut self, _lane: u32, task: u64, ts: u64) {
        self.task(task).terminated_ns = Some(ts);
    }

    fn task_name(&mut self, task: u64, name: u16) {
        let name = self.string(name);
        let t = self.task(task);
        if t.span_name.is_none() {
            t.span_name = name;
        }
    }

    fn task_request(&mut self, task: u64, request: u64) {
        let t = self.task(task);
        if !t.requests.contains(&request) {
            t.requests.push(request);
        }
    }
}

/// Builds [`WorkerActivity`] per lane from the same polls as [`Tasks`].
#[derive(Debug, Default)]
pub(crate) struct Workers {
    workers: Vec<WorkerActivity>,
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

/// Builds [`RequestSpan`] per request.
#[derive(Debug)]
struct Spans<'w> {
    strings: &'w [String],
    spans: BTreeMap<u64, RequestSpan>,
}

impl Spans<'_> {
    fn span(&mut self, id: u64) -> &mut RequestSpan {
        self.spans.entry(id).or_insert_with(|| RequestSpan {
            request_id: id,
            name: None,
            open_ns: None,
            close_ns: None,
            entered: Vec::new(),
        })
    }
}

impl Visitor for Spans<'_> {
    fn request_open(&mut self, request: u64, name: u16, ts: u64) {
        let name = string(self.strings, name);
        let s = self.span(request);
        s.open_ns = Some(ts);
        s.name = name;
    }

    fn request_close(&mut self, request: u64, ts: u64) {
        self.span(request).close_ns = Some(ts);
    }

    fn entered(&mut self, lane: u32, request: u64, start_ns: u64, end_ns: u64) {
        self.span(request).entered.push((lane, start_ns, end_ns));
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
        let mut spans = Spans {
            strings: &self.strings,
            spans: BTreeMap::new(),
        };
        scan_window(self, &mut spans);
        spans.spans.into_values().collect()
    }
}
