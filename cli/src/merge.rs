//! The windows of one process in an OTLP JSON file, folded into timelines:
//! windows that overlap become one window ([`Window::merge`]), one lane per
//! thread, each event once.
//!
//! The recorder converts its clock to UNIX time afresh for every window, so
//! the same event can carry timestamps a few microseconds apart in two
//! windows. Before merging, a window is shifted onto the timeline it joins:
//! the offset is the most common difference between the starts of the polls
//! both show (the same task on the same lane for the same duration, as the
//! analyzer pairs them), and an event the timeline already has within
//! [`SAME_NS`] of it (same kind, subject and argument) is dropped.

use std::collections::{HashMap, HashSet};

use tokio_blackbox::analysis::{self, Visitor};
use tokio_blackbox::{Event, Lane, Poll, Window};

/// Two events of one kind, subject and argument on one lane this close
/// (after the shift) are the same event: the clock conversion rounds.
const SAME_NS: u64 = 100;

/// How far apart the clock conversion can put one instant after the shift.
const ROUNDING_NS: u64 = 2;

/// How far around a window the timeline it joins is searched for its polls.
const MARGIN_NS: u64 = 10_000_000;

/// Whether `a` and `b` overlap or touch in time.
fn overlaps(a: &Window, b: &Window) -> bool {
    a.from_unix_ns <= b.to_unix_ns && b.from_unix_ns <= a.to_unix_ns
}

/// Folds `w` into `timelines` (sorted by start, none overlapping another):
/// merged with every timeline it overlaps, or inserted on its own.
pub(crate) fn fold(timelines: &mut Vec<Window>, w: Window) {
    let mut current = w;
    while let Some(k) = timelines.iter().position(|t| overlaps(t, &current)) {
        let mut t = timelines.remove(k);
        match absorb(&mut t, current) {
            None => current = t,
            Some(apart) => {
                // The shift moved them apart: both stay.
                insert(timelines, t);
                current = apart;
                if timelines.iter().any(|t| overlaps(t, &current)) {
                    continue;
                }
                break;
            }
        }
    }
    insert(timelines, current);
}

fn insert(timelines: &mut Vec<Window>, w: Window) {
    let at = timelines.partition_point(|t| t.from_unix_ns <= w.from_unix_ns);
    timelines.insert(at, w);
}

/// Complete polls by lane, task and duration, with their starts.
#[derive(Default)]
struct Starts(HashMap<(u32, u64, u64), Vec<u64>>);

impl Visitor for Starts {
    fn poll(&mut self, p: &Poll) {
        if p.complete {
            self.0
                .entry((p.lane, p.task, p.duration_ns()))
                .or_default()
                .push(p.start_ns);
        }
    }
}

/// How far `w`'s clock is from `t`'s: the most common start difference of
/// the polls both show, 0 when they show none in common.
fn offset(t: &Window, w: &Window) -> i64 {
    let (mut a, mut b) = (Starts::default(), Starts::default());
    // Only `t`'s part around `w` can show the same polls: scanning that
    // keeps folding many windows linear in their size.
    analysis::scan_window(&around(t, w.from_unix_ns, w.to_unix_ns), &mut a);
    analysis::scan_window(w, &mut b);
    let mut votes: HashMap<i64, u32> = HashMap::new();
    for (key, starts) in &b.0 {
        let Some(theirs) = a.0.get_mut(key) else {
            continue;
        };
        // Sorted once, searched per start: a task polled many times for
        // one duration has many starts of one shape.
        theirs.sort_unstable();
        for &s in starts {
            // The nearest start of the same poll shape in `t` (the earlier
            // of two as near).
            let at = theirs.partition_point(|&x| x < s);
            let before = at.checked_sub(1).map(|k| theirs[k]);
            let after = theirs.get(at).copied();
            let d = |x: u64| x as i64 - s as i64;
            let nearest = match (before, after) {
                (Some(x), Some(y)) if d(y).unsigned_abs() < d(x).unsigned_abs() => y,
                (Some(x), _) => x,
                (None, Some(y)) => y,
                (None, None) => continue,
            };
            *votes.entry(d(nearest)).or_default() += 1;
        }
    }
    // Rounding spreads one offset over neighbouring nanoseconds: count those too.
    let score = |d: i64| -> u32 { (d - 2..=d + 2).filter_map(|x| votes.get(&x)).sum() };
    votes
        .keys()
        .copied()
        .max_by_key(|&d| (score(d), std::cmp::Reverse(d.unsigned_abs())))
        .unwrap_or(0)
}

/// `t` with only the events of `[from - MARGIN_NS, to + MARGIN_NS]`.
fn around(t: &Window, from: u64, to: u64) -> Window {
    let (from, to) = (
        from.saturating_sub(MARGIN_NS).max(t.from_unix_ns),
        to.saturating_add(MARGIN_NS).min(t.to_unix_ns),
    );
    let mut part = Window::default();
    (part.from_unix_ns, part.to_unix_ns) = (from, to.max(from));
    part.schedule_delay = t.schedule_delay;
    part.lanes = t
        .lanes
        .iter()
        .map(|l| {
            let lo = l.events.partition_point(|e| e.ts < from);
            let hi = l.events.partition_point(|e| e.ts <= to);
            let mut lane = Lane::default();
            lane.index = l.index;
            lane.events = l.events[lo..hi.max(lo)].to_vec();
            lane
        })
        .collect();
    part
}

fn shift(ts: u64, by: i64) -> u64 {
    ts.saturating_add_signed(by)
}

/// Shifts `w` onto `t`'s clock, drops the events `t` already has, and
/// merges the rest into `t`. Returns `w` when the two no longer overlap.
fn absorb(t: &mut Window, mut w: Window) -> Option<Window> {
    let by = offset(t, &w);
    if by != 0 {
        w.from_unix_ns = shift(w.from_unix_ns, by);
        w.to_unix_ns = shift(w.to_unix_ns, by);
        for lane in &mut w.lanes {
            for e in &mut lane.events {
                e.ts = shift(e.ts, by);
            }
        }
    }
    for lane in &mut w.lanes {
        let Some(theirs) = t.lanes.iter().find(|l| l.index == lane.index) else {
            continue;
        };
        let (Some(first), Some(last)) = (lane.events.first(), lane.events.last()) else {
            continue;
        };
        let seen = Seen::new(&theirs.events, first.ts, last.ts);
        lane.events.retain(|e| !seen.has(e));
        // What is left is new to `t`; one that lands a rounding error away
        // from an event of `t` (the end of a poll before its own start)
        // happened at that instant: the nearest (the earlier of two as near).
        for e in &mut lane.events {
            let at = theirs.events.partition_point(|x| x.ts < e.ts);
            let before = at.checked_sub(1).map(|k| theirs.events[k].ts);
            let after = theirs.events.get(at).map(|x| x.ts);
            let near = |ts: &u64| ts.abs_diff(e.ts) <= ROUNDING_NS;
            e.ts = match (before.filter(near), after.filter(near)) {
                (Some(x), Some(y)) if y - e.ts < e.ts - x => y,
                (Some(x), _) => x,
                (None, Some(y)) => y,
                (None, None) => e.ts,
            };
        }
    }
    if t.merge(&w) { None } else { Some(w) }
}

/// The events of a timeline's lane around a joining window's, by what
/// they are (kind, subject and argument), each with its times in order.
/// One event of the window is looked up in the times of its own word, not
/// through every event within [`SAME_NS`]: a crafted file can put a whole
/// file's events at one instant.
struct Seen(HashMap<u64, Vec<u64>>);

impl Seen {
    /// Those of `events` (time-ordered) that can be within [`SAME_NS`] of
    /// `[from, to]`.
    fn new(events: &[Event], from: u64, to: u64) -> Seen {
        let lo = events.partition_point(|x| x.ts.saturating_add(SAME_NS) < from);
        let hi = events.partition_point(|x| x.ts <= to.saturating_add(SAME_NS));
        let mut by_word: HashMap<u64, Vec<u64>> = HashMap::new();
        for x in &events[lo..hi.max(lo)] {
            by_word.entry(x.word).or_default().push(x.ts);
        }
        Seen(by_word)
    }

    /// Whether one has `e` within [`SAME_NS`].
    fn has(&self, e: &Event) -> bool {
        self.0.get(&e.word).is_some_and(|times| {
            let at = times.partition_point(|&ts| ts.saturating_add(SAME_NS) < e.ts);
            times
                .get(at)
                .is_some_and(|&ts| ts <= e.ts.saturating_add(SAME_NS))
        })
    }
}

/// Puts the events of each instant of a lane in an order the pairing rules
/// read as what happened: a poll (or request span) that ends at the instant
/// another begins ends first. The JSON file gives every poll's start and
/// end but not the order of events with one timestamp, and a merge sorts
/// by time only. Events that begin and end within the instant (a poll of
/// no length) keep their order.
pub(crate) fn order_instants(events: &mut [Event]) {
    use tokio_blackbox::EventKind::{PollEnd, PollStart, RequestEnter, RequestExit};
    let mut i = 0;
    while i < events.len() {
        let ts = events[i].ts;
        let n = events[i..].iter().take_while(|e| e.ts == ts).count();
        if n > 1 {
            let run = &mut events[i..i + n];
            // What opens in the run, looked up once per end: a crafted run
            // can be as long as a file.
            let opens: HashSet<(bool, u64)> = run
                .iter()
                .filter_map(|e| match e.kind() {
                    Some(PollStart) => Some((true, e.subject())),
                    Some(RequestEnter) => Some((false, e.subject())),
                    _ => None,
                })
                .collect();
            let closer: Vec<bool> = run
                .iter()
                .map(|e| match e.kind() {
                    Some(PollEnd) => !opens.contains(&(true, e.subject())),
                    Some(RequestExit) => !opens.contains(&(false, e.subject())),
                    _ => false,
                })
                .collect();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&k| !closer[k]);
            let sorted: Vec<Event> = order.iter().map(|&k| run[k]).collect();
            run.copy_from_slice(&sorted);
        }
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_blackbox::EventKind::{PollEnd, PollStart, TaskSpawn};
    use tokio_blackbox::event::NO_STRING;

    /// Runs `f` on a thread of its own and fails if it has not finished in
    /// `secs` seconds. Not a timing: the sizes used are such that the
    /// quadratic code this replaced would take hours, and the limit is
    /// hundreds of times what the linear code takes on a busy machine.
    fn finishes<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(v) => v,
            Err(e) => panic!("not finished in {secs} s ({e}): quadratic in a run?"),
        }
    }

    fn window(from: u64, to: u64, events: Vec<Event>) -> Window {
        let mut lane = Lane::default();
        lane.thread = "tokio-runtime-worker".into();
        lane.events = events;
        let mut w = Window::default();
        (w.from_unix_ns, w.to_unix_ns) = (from, to);
        w.lanes.push(lane);
        w
    }

    /// Issue 27, finding 10: a poll's end looked for its own start through
    /// the whole run of its instant, per end: 500,000 polls of no length at
    /// one instant cost 2.5·10¹¹ steps.
    #[test]
    fn a_long_run_at_one_instant_is_ordered_in_linear_time() {
        const N: u64 = 500_000;
        let mut events: Vec<Event> = (0..N)
            .flat_map(|i| {
                [
                    Event::new(7, PollStart, i, 0),
                    Event::new(7, PollEnd, i, NO_STRING),
                ]
            })
            .collect();
        // The end of a poll that began before the instant.
        events.push(Event::new(7, PollEnd, N, NO_STRING));
        let events = finishes(120, move || {
            order_instants(&mut events);
            events
        });
        assert_eq!(events[0], Event::new(7, PollEnd, N, NO_STRING));
        assert_eq!(events[1], Event::new(7, PollStart, 0, 0));
        assert_eq!(events[2], Event::new(7, PollEnd, 0, NO_STRING));
        assert_eq!(events.len() as u64, 2 * N + 1);
    }

    /// Issue 27, finding 10: each event of a window joining a timeline was
    /// looked for among every event of the timeline within 100 ns, then
    /// every event within 2 ns, then (in `Window::merge`) among the run of
    /// its instant: two windows of 300,000 distinct events at one instant
    /// cost ~3·10¹¹ steps.
    #[test]
    fn windows_with_long_runs_at_one_instant_join_in_linear_time() {
        const N: u64 = 300_000;
        let spawns = |from: u64| -> Vec<Event> {
            (from..from + N)
                .map(|i| Event::new(50, TaskSpawn, i, NO_STRING))
                .collect()
        };
        let (a, b) = (window(0, 100, spawns(0)), window(10, 110, spawns(N / 2)));
        let timelines = finishes(120, move || {
            let mut timelines = Vec::new();
            fold(&mut timelines, a);
            fold(&mut timelines, b);
            timelines
        });
        assert_eq!(timelines.len(), 1);
        let events = &timelines[0].lanes[0].events;
        // Each spawn once: the second window's first half is the first's second.
        assert_eq!(events.len() as u64, N + N / 2);
        let mut tasks: Vec<u64> = events.iter().map(Event::subject).collect();
        tasks.sort_unstable();
        assert!(tasks.iter().copied().eq(0..N + N / 2));
    }

    /// Issue 27, finding 10: the nearest start of the same poll shape was
    /// found by a search through all of them, per start: a task polled
    /// 300,000 times for the same duration in two windows cost 9·10¹⁰ steps.
    #[test]
    fn the_offset_of_many_polls_of_one_shape_is_found_in_n_log_n() {
        const N: u64 = 300_000;
        let polls = |shift: u64| -> Vec<Event> {
            (0..N)
                .flat_map(|i| {
                    let start = 1_000 + 20 * i + shift;
                    [
                        Event::new(start, PollStart, 1, 0),
                        Event::new(start + 10, PollEnd, 1, NO_STRING),
                    ]
                })
                .collect()
        };
        let end = 1_000 + 20 * N + 100;
        let (t, w) = (window(0, end, polls(0)), window(0, end, polls(3)));
        let by = finishes(120, move || offset(&t, &w));
        assert_eq!(by, -3);
    }

    #[test]
    fn the_offset_is_the_nearest_start_and_ties_go_to_the_earlier() {
        let poll = |start: u64| {
            [
                Event::new(start, PollStart, 1, 0),
                Event::new(start + 10, PollEnd, 1, NO_STRING),
            ]
        };
        // Starts 100 and 140 in `t`; 120 in `w`: -20 and +20 away, the
        // earlier wins, as the linear search had it.
        let t = window(0, 1_000, [poll(100), poll(140)].concat());
        let w = window(0, 1_000, poll(120).to_vec());
        assert_eq!(offset(&t, &w), -20);
        let w = window(0, 1_000, poll(150).to_vec());
        assert_eq!(offset(&t, &w), -10);
        let w = window(0, 1_000, poll(10).to_vec());
        assert_eq!(offset(&t, &w), 90);
    }
}
