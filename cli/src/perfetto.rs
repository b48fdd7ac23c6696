//! `blackbox perfetto`: Chrome trace-event JSON, for ui.perfetto.dev and
//! chrome://tracing.
//!
//! Process 1 ("tokio runtime") has a track per lane with a complete (`X`)
//! slice per poll, the request spans entered on that thread nested inside,
//! and `parked` slices while the thread slept. Process 2 ("slow requests")
//! has one track per slow request. A flow arrow joins the poll that spawned a
//! task to the task's first poll: the file records no wake events, so a spawn
//! is the one wake whose source is known; the scheduling delay of every poll
//! (the time since it was woken) is in the slice's arguments.
//!
//! Timestamps are microseconds since the start of the file. Events are
//! written per track in time order, so memory is one poll's nested events
//! plus, for the flows, the first poll and spawn of each task.

use std::cmp::Reverse;
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;
use tokio_blackbox::analysis::Visitor;
use tokio_blackbox::event::NO_STRING;
use tokio_blackbox::{Lane, Poll};

use crate::scan::{self, IdMap, Meta, View};
use crate::select::{Clip, Range};
use crate::{Failure, InputContext};

/// Process ids of the two groups of tracks.
const PID_RUNTIME: u32 = 1;
const PID_REQUESTS: u32 = 2;

/// First pass: where each task was spawned (inside a poll) and first polled.
#[derive(Debug, Default)]
struct Flows {
    /// The last spawn seen: task, lane, time.
    last_spawn: Option<(u64, u32, u64)>,
    spawned: IdMap<(u32, u64)>,
    first_poll: IdMap<u64>,
}

impl View for Flows {}

impl Visitor for Flows {
    fn lane(&mut self, _lane: &Lane) {
        self.last_spawn = None;
    }

    fn spawn(&mut self, lane: u32, task: u64, _location: u16, ts: u64) {
        self.last_spawn = Some((task, lane, ts));
    }

    fn spawned_by(&mut self, task: u64, _parent: u64) {
        // Spawned inside a poll (the analyzer says so right after the spawn).
        if let Some((t, lane, ts)) = self.last_spawn
            && t == task
        {
            self.spawned.insert(task, (lane, ts));
        }
    }

    fn poll(&mut self, p: &Poll) {
        let first = self.first_poll.entry(p.task).or_insert(p.start_ns);
        *first = (*first).min(p.start_ns);
    }
}

/// Second pass: writes the events.
struct Writer<'a> {
    out: &'a mut dyn Write,
    error: Option<io::Error>,
    first: bool,
    meta: Option<Meta>,
    /// Tasks whose spawn and first poll are both known: task -> first poll start.
    flows: IdMap<u64>,
    spawned: IdMap<(u32, u64)>,
    locations: IdMap<u16>,
    /// Request id -> name, for the slices of entered request spans.
    names: IdMap<u16>,
    /// The current lane's events not yet written: (ts, class, longer first, json).
    pending: Vec<(u64, u8, Reverse<u64>, serde_json::Value)>,
    parked_at: Option<u64>,
}

impl Writer<'_> {
    fn us(&self, ns: u64) -> f64 {
        let from = self.meta.as_ref().map_or(0, |m| m.from_ns);
        // Microseconds with nanosecond precision, relative to the file's start.
        ns.saturating_sub(from) as f64 / 1e3
    }

    fn write(&mut self, v: &serde_json::Value) {
        if self.error.is_some() {
            return;
        }
        let sep = if self.first { "\n" } else { ",\n" };
        self.first = false;
        let r = self
            .out
            .write_all(sep.as_bytes())
            .and_then(|()| serde_json::to_writer(&mut *self.out, v).map_err(io::Error::from));
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    fn flush_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|a| (a.0, a.1, a.2));
        for (_, _, _, v) in &pending {
            self.write(v);
        }
        pending.clear();
        self.pending = pending;
    }

    fn string(&self, i: u16) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.string(i))
    }

    fn label(&self, task: u64) -> String {
        match self.locations.get(&task).and_then(|&l| self.string(l)) {
            Some(loc) => format!("task {}", loc.rsplit_once(':').map_or(loc, |(fl, _)| fl)),
            None => format!("task {task}"),
        }
    }
}

impl View for Writer<'_> {
    fn meta(&mut self, meta: &Meta) {
        self.meta = Some(meta.clone());
        let meta_events = [
            json!({"ph": "M", "name": "process_name", "pid": PID_RUNTIME, "tid": 0, "args": {"name": "tokio runtime"}}),
            json!({"ph": "M", "name": "process_sort_index", "pid": PID_RUNTIME, "tid": 0, "args": {"sort_index": 1}}),
            json!({"ph": "M", "name": "process_name", "pid": PID_REQUESTS, "tid": 0, "args": {"name": "slow requests"}}),
            json!({"ph": "M", "name": "process_sort_index", "pid": PID_REQUESTS, "tid": 0, "args": {"sort_index": 0}}),
        ];
        for v in &meta_events {
            self.write(v);
        }
        for (i, r) in meta.requests.iter().enumerate() {
            let tid = i as u32 + 1;
            // Cut to the range (a --from/--to range may start inside the
            // request); the arguments keep the whole duration.
            let (s, e) = (
                r.start_unix_ns.max(meta.from_ns),
                r.end_unix_ns.min(meta.to_ns),
            );
            let start = self.us(s);
            let dur = e.saturating_sub(s) as f64 / 1e3;
            let events = [
                json!({"ph": "M", "name": "thread_name", "pid": PID_REQUESTS, "tid": tid,
                       "args": {"name": format!("{} {}", r.name, r.trace_id)}}),
                json!({"ph": "X", "name": r.name, "cat": "request", "pid": PID_REQUESTS, "tid": tid,
                       "ts": start, "dur": dur,
                       "args": {"trace_id": r.trace_id.to_string(), "span_id": r.span_id.to_string(),
                                "request_id": r.request_id, "error": r.error,
                                "duration_us": r.end_unix_ns.saturating_sub(r.start_unix_ns) as f64 / 1e3}}),
            ];
            for v in &events {
                self.write(v);
            }
        }
    }
}

impl Visitor for Writer<'_> {
    fn lane(&mut self, lane: &Lane) {
        self.flush_pending();
        self.parked_at = None;
        let name = format!("lane {} {}", lane.index, lane.thread);
        let events = [
            json!({"ph": "M", "name": "thread_name", "pid": PID_RUNTIME, "tid": lane.index, "args": {"name": name}}),
            json!({"ph": "M", "name": "thread_sort_index", "pid": PID_RUNTIME, "tid": lane.index,
                   "args": {"sort_index": lane.index}}),
        ];
        for v in &events {
            self.write(v);
        }
    }

    fn poll(&mut self, p: &Poll) {
        if p.location != NO_STRING {
            self.locations.insert(p.task, p.location);
        }
        let long_ns = self.meta.as_ref().map_or(u64::MAX, Meta::long_poll_ns);
        let long = p.is_long(long_ns);
        let mut args = json!({
            "task": p.task,
            "location": self.locations.get(&p.task).and_then(|&l| self.string(l)),
            "duration_us": p.duration_ns() as f64 / 1e3,
            "complete": p.complete,
            "long": long,
        });
        if let Some(d) = p.sched_delay_ns {
            args["scheduling_delay_us"] = json!(d as f64 / 1e3);
            args["woken_at_us"] = json!(self.us(p.start_ns.saturating_sub(d)));
        }
        let mut slice = json!({
            "ph": "X", "name": self.label(p.task), "cat": "poll",
            "pid": PID_RUNTIME, "tid": p.lane,
            "ts": self.us(p.start_ns), "dur": p.duration_ns() as f64 / 1e3, "args": args,
        });
        if long {
            slice["cname"] = json!("terrible");
        }
        self.pending
            .push((p.start_ns, 0, Reverse(p.duration_ns()), slice));
        if self.flows.get(&p.task) == Some(&p.start_ns) {
            let flow = json!({"ph": "f", "bp": "e", "name": "spawn", "cat": "flow", "id": p.task,
                              "pid": PID_RUNTIME, "tid": p.lane, "ts": self.us(p.start_ns)});
            self.pending.push((p.start_ns, 1, Reverse(0), flow));
        }
        self.flush_pending();
    }

    fn spawn(&mut self, lane: u32, task: u64, location: u16, ts: u64) {
        if location != NO_STRING {
            self.locations.insert(task, location);
        }
        if self.flows.contains_key(&task) && self.spawned.get(&task) == Some(&(lane, ts)) {
            let flow = json!({"ph": "s", "name": "spawn", "cat": "flow", "id": task,
                              "pid": PID_RUNTIME, "tid": lane, "ts": self.us(ts)});
            self.pending.push((ts, 1, Reverse(0), flow));
        }
    }

    fn park(&mut self, lane: u32, ts: u64, parked: bool) {
        if parked {
            self.parked_at = Some(ts);
        } else if let Some(since) = self.parked_at.take().filter(|&since| since < ts) {
            let slice = json!({"ph": "X", "name": "parked", "cat": "park", "pid": PID_RUNTIME, "tid": lane,
                               "ts": self.us(since), "dur": ts.saturating_sub(since) as f64 / 1e3,
                               "cname": "grey"});
            self.pending
                .push((since, 0, Reverse(ts.saturating_sub(since)), slice));
        }
    }

    fn request_open(&mut self, request: u64, name: u16, _ts: u64) {
        if name != NO_STRING {
            self.names.insert(request, name);
        }
    }

    fn entered(&mut self, lane: u32, request: u64, start_ns: u64, end_ns: u64) {
        let name = self
            .names
            .get(&request)
            .and_then(|&n| self.string(n))
            .map_or_else(|| format!("request {request}"), |n| format!("in {n}"));
        let slice = json!({"ph": "X", "name": name, "cat": "request", "pid": PID_RUNTIME, "tid": lane,
                           "ts": self.us(start_ns), "dur": end_ns.saturating_sub(start_ns) as f64 / 1e3,
                           "args": {"request_id": request}});
        self.pending
            .push((start_ns, 0, Reverse(end_ns.saturating_sub(start_ns)), slice));
    }

    fn lane_end(&mut self, _lane: u32) {
        self.flush_pending();
    }
}

/// Reads `path` and writes its trace-event JSON to `out`.
pub(crate) fn run(path: &Path, range: Range, out: &mut dyn Write) -> Result<(), Failure> {
    let mut first = Flows::default();
    let mut clip = Clip::new(range, true, &mut first);
    scan::scan(path, &mut clip).input(path)?;
    let flows: IdMap<u64> = first
        .spawned
        .iter()
        .filter_map(|(task, &(_, ts))| {
            first
                .first_poll
                .get(task)
                .filter(|&&p| p >= ts)
                .map(|&p| (*task, p))
        })
        .collect();
    let head = json!({
        "tool": "blackbox",
        "from_unix_ns": range.from_ns,
        "to_unix_ns": range.to_ns,
        "timestamps": "microseconds since from_unix_ns",
    });
    let io = |e: io::Error| Failure::Other(anyhow::Error::new(e).context("writing the trace"));
    write!(
        out,
        "{{\"displayTimeUnit\":\"ms\",\"otherData\":{head},\"traceEvents\":["
    )
    .map_err(io)?;
    let mut w = Writer {
        out: &mut *out,
        error: None,
        first: true,
        meta: None,
        flows,
        spawned: first.spawned,
        locations: IdMap::default(),
        names: IdMap::default(),
        pending: Vec::new(),
        parked_at: None,
    };
    let mut clip = Clip::new(range, true, &mut w);
    scan::scan(path, &mut clip).input(path)?;
    w.flush_pending();
    if let Some(e) = w.error.take() {
        return Err(io(e));
    }
    writeln!(out, "\n]}}").map_err(io)?;
    Ok(())
}
