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

use std::collections::HashMap;

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
        let Some(theirs) = a.0.get(key) else { continue };
        for &s in starts {
            // The nearest start of the same poll shape in `t`.
            if let Some(d) = theirs
                .iter()
                .map(|&x| x as i64 - s as i64)
                .min_by_key(|d| d.unsigned_abs())
            {
                *votes.entry(d).or_default() += 1;
            }
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
        lane.events.retain(|e| !seen(&theirs.events, e));
        // What is left is new to `t`; one that lands a rounding error away
        // from an event of `t` (the end of a poll before its own start)
        // happened at that instant.
        for e in &mut lane.events {
            let lo = theirs.events.partition_point(|x| x.ts + ROUNDING_NS < e.ts);
            if let Some(x) = theirs.events[lo..]
                .iter()
                .take_while(|x| x.ts <= e.ts + ROUNDING_NS)
                .min_by_key(|x| x.ts.abs_diff(e.ts))
            {
                e.ts = x.ts;
            }
        }
    }
    if t.merge(&w) { None } else { Some(w) }
}

/// Whether `events` (time-ordered) has `e` within [`SAME_NS`].
fn seen(events: &[Event], e: &Event) -> bool {
    let lo = events.partition_point(|x| x.ts + SAME_NS < e.ts);
    events[lo..]
        .iter()
        .take_while(|x| x.ts <= e.ts + SAME_NS)
        .any(|x| x.word == e.word)
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
            let opens = |kind, subject| {
                run.iter()
                    .any(|e| e.kind() == Some(kind) && e.subject() == subject)
            };
            let closer: Vec<bool> = run
                .iter()
                .map(|e| match e.kind() {
                    Some(PollEnd) => !opens(PollStart, e.subject()),
                    Some(RequestExit) => !opens(RequestEnter, e.subject()),
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
