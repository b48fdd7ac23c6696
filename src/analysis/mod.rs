//! The one analyzer: a streaming pass over each lane's time-ordered events
//! that pairs them into polls, request-span intervals and task–request
//! links, feeding small collectors.
//!
//! Every reader of events goes through here: [`Window::tasks`],
//! [`Window::workers`] and [`Window::request_spans`] (and so the exporter),
//! [`scan_dump`] over a dump or capture file of any size, the `blackbox`
//! command's views and the verdict ([`explain`]). There is no other
//! pairing code, so two readers of one window cannot disagree.
//!
//! # Pairing rules
//!
//! A lane is one thread; its events are in time order. [`LaneScan`] keeps
//! the poll open on the lane and the request spans entered on it, and
//! applies these rules, which are also what happens at a window's edges:
//!
//! 1. `PollEnd` of the open poll's task closes it: a complete [`Poll`].
//! 2. `PollStart` while a poll is open: the open poll's end was lost (or it
//!    was cut by an overwrite); it ends at this start, incomplete.
//! 3. `PollEnd` with no open poll (its start is before the window) begins at
//!    the lane's last free moment: the later of the window's start and the
//!    end of the lane's previous poll; incomplete. A `PollEnd` of another
//!    task than the open one closes the open poll there, incomplete, and
//!    counts as a zero-length incomplete poll of its own task.
//! 4. At the lane's end, a poll still open ends at the window's end,
//!    incomplete; so does a request span still entered.
//! 5. `RequestExit` with no `RequestEnter` on the lane was entered at the
//!    window's start (incomplete).
//! 6. A task works for a request when it is spawned while the request's
//!    span is entered on the lane (the innermost one), or when the request's
//!    span is entered during one of its polls. A task spawned during a poll
//!    of another task is that task's child.
//! 7. A task is named after the first span it enters: a `TaskName` event,
//!    or, when it has none, the first request whose span it entered in one
//!    of its polls (the recorder writes no name for those: the enter says
//!    it), by the name in that request's `RequestOpen`. The verdict and the
//!    export plan name tasks so after the window's slow requests only (a
//!    storm's window opens hundreds of thousands of requests); the others'
//!    tasks go by their spawn location there.
//!
//! Polls never overlap on a lane, so a worker's busy time
//! ([`WorkerActivity::busy_ns`]) is the sum of its polls' durations, which
//! is also the sum over tasks of their polls on that lane.
//!
//! # Examples
//!
//! ```
//! use tokio_blackbox::analysis::{self, Visitor};
//! use tokio_blackbox::{Event, EventKind, Poll, Window};
//!
//! #[derive(Default)]
//! struct Longest(u64);
//! impl Visitor for Longest {
//!     fn poll(&mut self, p: &Poll) {
//!         self.0 = self.0.max(p.duration_ns());
//!     }
//! }
//!
//! let mut w = Window::default();
//! w.to_unix_ns = 100;
//! let mut lane = tokio_blackbox::Lane::default();
//! lane.events = vec![
//!     Event::new(10, EventKind::PollStart, 7, 0),
//!     Event::new(40, EventKind::PollEnd, 7, 0),
//!     Event::new(50, EventKind::PollStart, 8, 0), // open at the window's end
//! ];
//! w.lanes.push(lane);
//! let mut longest = Longest::default();
//! analysis::scan_window(&w, &mut longest);
//! assert_eq!(longest.0, 50); // 50..100, cut by the window's end
//! ```

mod collect;
mod dump;
mod verdict;

pub(crate) use collect::{LongestPolls, TaskDigest};
pub use collect::{RequestSpan, TaskActivity, WorkerActivity};
pub use dump::scan_dump;
pub use verdict::{
    ADJACENT_NS, Cause, Confidence, Culprit, Explanation, Share, explain, explain_cut,
};
pub(crate) use verdict::{digest, explain_from};

use crate::event::{Event, EventKind, NO_STRING, decode_delay};
use crate::window::{Cut, Lane, Window};

/// One poll of a task.
///
/// # Examples
///
/// ```
/// # use tokio_blackbox::{Window, Lane, Event, EventKind};
/// let mut w = Window::default();
/// w.to_unix_ns = 100;
/// let mut lane = Lane::default();
/// lane.events = vec![Event::new(10, EventKind::PollStart, 7, 0), Event::new(40, EventKind::PollEnd, 7, 0)];
/// w.lanes.push(lane);
/// let poll = w.tasks()[0].polls[0];
/// assert_eq!((poll.task, poll.duration_ns(), poll.complete), (7, 30, true));
/// assert_eq!(poll.overlap_ns(0, 20), 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Poll {
    /// The lane (thread) that polled.
    pub lane: u32,
    /// The task polled.
    pub task: u64,
    /// Poll start, UNIX ns (cut by the window's edge or a lost event, see `complete`).
    pub start_ns: u64,
    /// Poll end, UNIX ns.
    pub end_ns: u64,
    /// How long the task waited for a worker before this poll, when recorded.
    pub sched_delay_ns: Option<u64>,
    /// The spawn location the poll end carried, an index into the window's
    /// strings ([`NO_STRING`] when unknown).
    pub location: u16,
    /// `false` when the poll was cut by the window's edge or a lost event.
    pub complete: bool,
}

/// Whether a poll of `duration_ns` is long for a limit of `limit_ns`: at
/// least the limit (see [`Poll::is_long`]).
pub(crate) fn is_long_poll(duration_ns: u64, limit_ns: u64) -> bool {
    duration_ns >= limit_ns
}

impl Poll {
    /// The poll's duration in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Whether the poll is a long one for a limit of `limit_ns`
    /// (`BLACKBOX_LONG_POLL`): at least the limit. The one rule for the
    /// export's `blackbox.poll.long`, the verdict's culprits, the task
    /// digests and the command's views.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tokio_blackbox::{Window, Lane, Event, EventKind};
    /// let mut w = Window::default();
    /// w.to_unix_ns = 100;
    /// let mut lane = Lane::default();
    /// lane.events = vec![Event::new(10, EventKind::PollStart, 7, 0), Event::new(40, EventKind::PollEnd, 7, 0)];
    /// w.lanes.push(lane);
    /// let poll = w.tasks()[0].polls[0];
    /// assert!(poll.is_long(30)); // exactly the limit: long
    /// assert!(!poll.is_long(31));
    /// ```
    pub fn is_long(&self, limit_ns: u64) -> bool {
        is_long_poll(self.duration_ns(), limit_ns)
    }

    /// The part of the poll inside `[from_ns, to_ns]`, in nanoseconds.
    pub fn overlap_ns(&self, from_ns: u64, to_ns: u64) -> u64 {
        overlap(self.start_ns, self.end_ns, from_ns, to_ns)
    }

    /// Where the poll goes in a lane's time order: by start, then by end.
    /// Polls never overlap on a lane, but a `PollEnd` of another task than
    /// the open one (rule 3) leaves a zero-length poll at the instant the
    /// next poll may start: it comes first, as it happened, and an order
    /// by start alone would put it either side (so "the poll before" would
    /// depend on which other polls are at hand).
    pub(crate) fn time_order(&self) -> (u64, u64) {
        (self.start_ns, self.end_ns)
    }
}

/// The length of the intersection of `[a0, a1]` and `[b0, b1]`.
pub(crate) fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

/// The bounds and flags the pairing rules need: a window's edges and
/// whether `PollStart` arguments are scheduling delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// The window's start, UNIX ns.
    pub from_ns: u64,
    /// The window's end, UNIX ns.
    pub to_ns: u64,
    /// Whether scheduling delays were recorded.
    pub schedule_delay: bool,
}

impl Bounds {
    /// The bounds of `window`.
    pub fn of(window: &Window) -> Bounds {
        Bounds {
            from_ns: window.from_unix_ns,
            to_ns: window.to_unix_ns,
            schedule_delay: window.schedule_delay,
        }
    }
}

/// What a reader does with the analyzer's items. Every method has an empty
/// default, so each collector implements only what it needs.
///
/// Items of a lane arrive between its [`lane`](Visitor::lane) and
/// [`lane_end`](Visitor::lane_end), in the lane's time order (a poll when
/// it ends, an interval when it is exited).
pub trait Visitor {
    /// Before the first lane: the window's bounds, settings, strings and
    /// requests (its `lanes` are empty when streaming a file).
    fn begin(&mut self, _window: &Window) {}
    /// A lane starts. When streaming a file its `events` are empty.
    fn lane(&mut self, _lane: &Lane) {}
    /// Any event of the lane, before it is paired (counting, ranges).
    fn event(&mut self, _lane: u32, _event: &Event) {}
    /// A poll ended (or was cut).
    fn poll(&mut self, _poll: &Poll) {}
    /// A task was spawned on `lane` (`location` is a string index, or `NO_STRING`).
    fn spawn(&mut self, _lane: u32, _task: u64, _location: u16, _ts: u64) {}
    /// `task` was spawned during a poll of `parent`.
    fn spawned_by(&mut self, _task: u64, _parent: u64) {}
    /// A task terminated.
    fn terminate(&mut self, _lane: u32, _task: u64, _ts: u64) {}
    /// The span a task runs in was named (`name` is a string index).
    fn task_name(&mut self, _task: u64, _name: u16) {}
    /// The lane's thread parked (`true`) or unparked (`false`).
    fn park(&mut self, _lane: u32, _ts: u64, _parked: bool) {}
    /// A request span opened (`name` is a string index).
    fn request_open(&mut self, _request: u64, _name: u16, _ts: u64) {}
    /// A request span closed.
    fn request_close(&mut self, _request: u64, _ts: u64) {}
    /// A request span was entered on `lane` over `[start, end]`.
    fn entered(&mut self, _lane: u32, _request: u64, _start_ns: u64, _end_ns: u64) {}
    /// `task` worked for `request`: it entered the request's span, or was
    /// spawned inside it. May repeat.
    fn task_request(&mut self, _task: u64, _request: u64) {}
    /// `task` entered `request`'s span in one of its polls (after
    /// [`task_request`](Visitor::task_request) for the same pair). May repeat.
    fn task_entered(&mut self, _task: u64, _request: u64) {}
    /// The lane ended.
    fn lane_end(&mut self, _lane: u32) {}
}

/// The pairing state of one lane: feed it the lane's events in order with
/// [`step`](LaneScan::step), then [`finish`](LaneScan::finish) it.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::analysis::{Bounds, LaneScan, Visitor};
/// use tokio_blackbox::{Event, EventKind, Poll};
/// struct Count(usize);
/// impl Visitor for Count {
///     fn poll(&mut self, _: &Poll) { self.0 += 1 }
/// }
/// let bounds = Bounds { from_ns: 0, to_ns: 100, schedule_delay: false };
/// let (mut scan, mut count) = (LaneScan::new(0, &bounds), Count(0));
/// scan.step(&Event::new(30, EventKind::PollEnd, 5, 0), &mut count); // began before the window
/// scan.finish(&mut count);
/// assert_eq!(count.0, 1);
/// ```
#[derive(Debug, Clone)]
pub struct LaneScan {
    lane: u32,
    bounds: Bounds,
    /// The poll in progress: task, start, delay.
    open: Option<(u64, u64, Option<u64>)>,
    /// Requests entered and not yet exited, innermost last, with enter time.
    entered: Vec<(u64, u64)>,
    /// When the lane last became free of a poll (the window's start at first).
    free_since: u64,
}

impl LaneScan {
    /// The state at the start of lane `lane` of a window with `bounds`.
    pub fn new(lane: u32, bounds: &Bounds) -> LaneScan {
        LaneScan {
            lane,
            bounds: *bounds,
            open: None,
            entered: Vec::new(),
            free_since: bounds.from_ns,
        }
    }

    fn emit(&mut self, v: &mut dyn Visitor, poll: Poll) {
        debug_assert!(poll.start_ns <= poll.end_ns);
        self.free_since = poll.end_ns;
        v.poll(&poll);
    }

    /// Applies one event (see the module's pairing rules).
    pub fn step(&mut self, e: &Event, v: &mut dyn Visitor) {
        let Some(kind) = e.kind() else { return };
        v.event(self.lane, e);
        let (lane, subject, arg, ts) = (self.lane, e.subject(), e.arg(), e.ts);
        match kind {
            EventKind::TaskSpawn => {
                v.spawn(lane, subject, arg, ts);
                if let Some((parent, _, _)) = self.open {
                    v.spawned_by(subject, parent);
                }
                if let Some(&(r, _)) = self.entered.last() {
                    v.task_request(subject, r);
                }
            }
            EventKind::PollStart => {
                if let Some((task, start, delay)) = self.open.take() {
                    let poll = self.poll(task, start, ts, delay, NO_STRING, false);
                    self.emit(v, poll);
                }
                let delay = self.bounds.schedule_delay.then(|| decode_delay(arg));
                self.open = Some((subject, ts.max(self.free_since), delay));
            }
            EventKind::PollEnd => {
                let poll = match self.open.take() {
                    Some((task, start, delay)) if task == subject => {
                        self.poll(task, start, ts, delay, arg, true)
                    }
                    Some((task, start, delay)) => {
                        let cut = self.poll(task, start, ts, delay, NO_STRING, false);
                        self.emit(v, cut);
                        self.poll(subject, ts, ts, None, arg, false)
                    }
                    None => self.poll(subject, self.free_since.min(ts), ts, None, arg, false),
                };
                self.emit(v, poll);
            }
            EventKind::TaskTerminate => v.terminate(lane, subject, ts),
            EventKind::TaskName => v.task_name(subject, arg),
            EventKind::Park => v.park(lane, ts, true),
            EventKind::Unpark => v.park(lane, ts, false),
            EventKind::RequestOpen => v.request_open(subject, arg, ts),
            EventKind::RequestClose => v.request_close(subject, ts),
            EventKind::RequestEnter => {
                self.entered.push((subject, ts));
                if let Some((task, _, _)) = self.open {
                    v.task_request(task, subject);
                    v.task_entered(task, subject);
                }
            }
            EventKind::RequestExit => {
                let start = match self.entered.iter().rposition(|&(r, _)| r == subject) {
                    Some(pos) => self.entered.remove(pos).1,
                    None => self.bounds.from_ns.min(ts),
                };
                v.entered(lane, subject, start, ts.max(start));
            }
            EventKind::ThreadStart | EventKind::ThreadStop => {}
        }
    }

    fn poll(
        &self,
        task: u64,
        start: u64,
        end: u64,
        delay: Option<u64>,
        location: u16,
        complete: bool,
    ) -> Poll {
        Poll {
            lane: self.lane,
            task,
            start_ns: start,
            end_ns: end.max(start),
            sched_delay_ns: delay,
            location,
            complete,
        }
    }

    /// Ends the lane: what is still open ends at the window's end.
    pub fn finish(mut self, v: &mut dyn Visitor) {
        let to = self.bounds.to_ns;
        if let Some((task, start, delay)) = self.open.take() {
            let poll = self.poll(task, start, to, delay, NO_STRING, false);
            self.emit(v, poll);
        }
        for (request, start) in std::mem::take(&mut self.entered) {
            v.entered(self.lane, request, start, to.max(start));
        }
        v.lane_end(self.lane);
    }
}

/// Runs one lane's events through the pairing rules.
pub fn scan_lane(lane: &Lane, bounds: &Bounds, v: &mut dyn Visitor) {
    v.lane(lane);
    let mut scan = LaneScan::new(lane.index, bounds);
    for e in &lane.events {
        scan.step(e, v);
    }
    scan.finish(v);
}

/// Runs every lane of `window` through the pairing rules, lane by lane.
pub fn scan_window(window: &Window, v: &mut dyn Visitor) {
    v.begin(window);
    let bounds = Bounds::of(window);
    for lane in &window.lanes {
        scan_lane(lane, &bounds, v);
    }
}

/// Runs every lane of `cut` through the pairing rules, decoding each as it
/// goes: [`Visitor::lane`] gets the lane without its events.
pub fn scan_cut(cut: &Cut, v: &mut dyn Visitor) {
    let window = cut.header();
    v.begin(window);
    let bounds = Bounds::of(window);
    for (i, lane) in window.lanes.iter().enumerate() {
        v.lane(lane);
        let mut scan = LaneScan::new(lane.index, &bounds);
        cut.lane_events(i, |e| scan.step(e, v));
        scan.finish(v);
    }
}

/// What the analyzer reads a window from: decoded in memory, or a [`Cut`]
/// decoded as it is read.
pub(crate) trait Source {
    /// Everything but the events (a [`Cut`]'s lanes have none; read them
    /// with [`scan`](Source::scan)).
    fn window(&self) -> &Window;
    /// Runs every lane through the pairing rules.
    fn scan(&self, v: &mut dyn Visitor);
    /// Number of events in the window.
    fn events(&self) -> usize;
    /// When the `i`-th lane's first event in the window happened.
    fn first_event_ts(&self, i: usize) -> Option<u64>;
}

impl Source for Window {
    fn window(&self) -> &Window {
        self
    }

    fn scan(&self, v: &mut dyn Visitor) {
        scan_window(self, v);
    }

    fn events(&self) -> usize {
        Window::events(self)
    }

    fn first_event_ts(&self, i: usize) -> Option<u64> {
        self.lanes.get(i)?.events.first().map(|e| e.ts)
    }
}

impl Source for Cut {
    fn window(&self) -> &Window {
        self.header()
    }

    fn scan(&self, v: &mut dyn Visitor) {
        scan_cut(self, v);
    }

    fn events(&self) -> usize {
        Cut::events(self)
    }

    fn first_event_ts(&self, i: usize) -> Option<u64> {
        Cut::first_event_ts(self, i)
    }
}

#[cfg(test)]
mod tests;
