//! `blackbox summary`: what a file holds, in one streaming pass.
//!
//! Memory is one record, the state of one lane, and a few counters per task
//! and per slow request, so a dump of any size is summarised in bounded memory.

use std::fmt::Write as _;

use tokio_blackbox::analysis::{Explanation, Visitor};
use tokio_blackbox::dump::FileKind;
use tokio_blackbox::event::NO_STRING;
use tokio_blackbox::{Event, EventKind, Lane, Poll};

use crate::fmt::{count, dur, offset, utc};
use crate::scan::{IdMap, IdSet, LaneInfo, Meta, View};

/// How many rows each ranking shows.
const TOP: usize = 5;

/// The summary's counters, filled by [`Visitor`] callbacks.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    meta: Option<Meta>,
    lanes: Vec<LaneSum>,
    tasks: IdMap<TaskSum>,
    spawned: u64,
    terminated: u64,
    polls: u64,
    polls_cut: u64,
    long_polls: u64,
    /// The longest polls, longest first, at most [`TOP`] of them.
    longest: Vec<Poll>,
    requests_opened: u64,
    requests_closed: u64,
    /// Slow requests sorted by start: (index into `meta.requests`, start, end).
    slow: Vec<(usize, u64, u64)>,
    slow_max_ns: u64,
    /// Per slow request (same order as `meta.requests`): task -> time polled inside it.
    held: Vec<IdMap<u64>>,
    /// Per slow request: the tasks that worked for it.
    own: Vec<IdSet>,
    /// The indexes in `meta.requests` of each request id.
    by_id: IdMap<Vec<usize>>,
    first_ns: Option<u64>,
    last_ns: u64,
    /// The verdicts on the slowest requests (index into `meta.requests`),
    /// slowest first: the summary's headline.
    pub(crate) verdicts: Vec<(usize, Explanation)>,
}

#[derive(Debug, Default)]
struct LaneSum {
    info: Option<LaneInfo>,
    events: u64,
    polls: u64,
    busy_ns: u64,
    parks: u64,
}

#[derive(Debug)]
struct TaskSum {
    location: u16,
    polls: u64,
    busy_ns: u64,
    longest_ns: u64,
}

impl Default for TaskSum {
    fn default() -> Self {
        TaskSum {
            location: NO_STRING,
            polls: 0,
            busy_ns: 0,
            longest_ns: 0,
        }
    }
}

impl View for Summary {
    fn meta(&mut self, meta: &Meta) {
        self.slow = meta
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.start_unix_ns, r.end_unix_ns.max(r.start_unix_ns)))
            .collect();
        self.slow.sort_by_key(|&(_, start, _)| start);
        self.slow_max_ns = self.slow.iter().map(|&(_, s, e)| e - s).max().unwrap_or(0);
        self.held = vec![IdMap::default(); meta.requests.len()];
        self.own = vec![IdSet::default(); meta.requests.len()];
        self.by_id = IdMap::default();
        for (i, r) in meta.requests.iter().enumerate() {
            self.by_id.entry(r.request_id).or_default().push(i);
        }
        self.meta = Some(meta.clone());
    }
}

impl Visitor for Summary {
    fn lane(&mut self, lane: &Lane) {
        self.lanes.push(LaneSum {
            info: Some(LaneInfo::of(lane)),
            ..LaneSum::default()
        });
    }

    fn event(&mut self, _lane: u32, e: &Event) {
        let (Some(kind), ts) = (e.kind(), e.ts) else {
            return;
        };
        if let Some(l) = self.lanes.last_mut() {
            l.events += 1;
            if kind == EventKind::Park {
                l.parks += 1;
            }
        }
        self.first_ns = Some(self.first_ns.map_or(ts, |f| f.min(ts)));
        self.last_ns = self.last_ns.max(ts);
        match kind {
            EventKind::TaskSpawn => self.spawned += 1,
            EventKind::TaskTerminate => self.terminated += 1,
            EventKind::RequestOpen => self.requests_opened += 1,
            EventKind::RequestClose => self.requests_closed += 1,
            _ => {}
        }
    }

    fn poll(&mut self, p: &Poll) {
        let d = p.duration_ns();
        self.polls += 1;
        if !p.complete {
            self.polls_cut += 1;
        }
        if let Some(l) = self.lanes.last_mut() {
            l.polls += 1;
            l.busy_ns = l.busy_ns.saturating_add(d);
        }
        let t = self.tasks.entry(p.task).or_default();
        t.polls += 1;
        t.busy_ns = t.busy_ns.saturating_add(d);
        t.longest_ns = t.longest_ns.max(d);
        if p.location != NO_STRING {
            t.location = p.location;
        }
        let long_ns = self.meta.as_ref().map_or(u64::MAX, Meta::long_poll_ns);
        if p.is_long(long_ns) {
            self.long_polls += 1;
        }
        if self.longest.len() < TOP || d > self.longest.last().map_or(0, Poll::duration_ns) {
            let at = self.longest.partition_point(|q| q.duration_ns() >= d);
            self.longest.insert(at, *p);
            self.longest.truncate(TOP);
        }
        // The slow requests this poll overlaps: those starting after
        // `start - longest request` and before the poll's end.
        let lo = self
            .slow
            .partition_point(|&(_, s, _)| s < p.start_ns.saturating_sub(self.slow_max_ns));
        for &(i, s, e) in &self.slow[lo..] {
            if s >= p.end_ns {
                break;
            }
            let overlap = p.overlap_ns(s, e);
            if overlap > 0 {
                let held = self.held[i].entry(p.task).or_default();
                *held = held.saturating_add(overlap);
            }
        }
    }

    fn spawn(&mut self, _lane: u32, task: u64, location: u16, _ts: u64) {
        if location != NO_STRING {
            self.tasks.entry(task).or_default().location = location;
        }
    }

    fn task_request(&mut self, task: u64, request: u64) {
        for &i in self.by_id.get(&request).into_iter().flatten() {
            self.own[i].insert(task);
        }
    }
}

impl Summary {
    /// The summary as text, for a file called `name`.
    pub(crate) fn render(&self, name: &str) -> String {
        let mut o = String::new();
        let Some(meta) = &self.meta else {
            return o;
        };
        let h = &meta.header;
        let kind = match h.kind {
            FileKind::Capture => format!("capture #{}", meta.sequence),
            _ => "dump".to_string(),
        };
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(o, "file      {name}");
        if let Some(n) = meta.json_windows {
            // The pid is known only when the resource carried `process.pid`.
            let pid = if h.pid == 0 {
                String::new()
            } else {
                format!(" by pid {}", h.pid)
            };
            let _ = writeln!(
                o,
                "kind      OTLP JSON, {n} window{}, the first cut {}{pid}",
                if n == 1 { "" } else { "s" },
                utc(h.created_unix_ns),
            );
        } else {
            let _ = writeln!(
                o,
                "kind      {kind}, format {}.{}, written {} by pid {}",
                h.major,
                h.minor,
                utc(h.created_unix_ns),
                h.pid
            );
        }
        let _ = writeln!(
            o,
            "recorded  task hooks: {}, scheduling delays: {}; threshold {}, long poll {}",
            yes(h.task_hooks),
            yes(h.schedule_delay),
            dur(meta.threshold.as_nanos() as u64),
            dur(meta.long_poll.as_nanos() as u64),
        );
        let _ = writeln!(
            o,
            "span      {} .. {} ({})",
            utc(meta.from_ns),
            offset(meta.to_ns, meta.from_ns),
            dur(meta.to_ns.saturating_sub(meta.from_ns))
        );
        let events: u64 = self.lanes.iter().map(|l| l.events).sum();
        let lost: u64 = self
            .lanes
            .iter()
            .filter_map(|l| l.info.as_ref())
            .map(|l| l.events_lost)
            .sum();
        let _ = write!(
            o,
            "events    {} in {} lanes",
            count(events),
            self.lanes.len()
        );
        if let Some(first) = self.first_ns {
            let _ = write!(
                o,
                ", from {} to {}",
                offset(first, meta.from_ns),
                offset(self.last_ns, meta.from_ns)
            );
        }
        let _ = writeln!(o, "; {} lost to overwrite", count(lost));

        // The verdicts: why the slowest requests were slow.
        if !self.verdicts.is_empty() {
            let _ = writeln!(
                o,
                "\nverdicts  {}",
                match self.verdicts.len() {
                    1 => "the slowest request".to_string(),
                    n => format!("the {n} slowest requests"),
                }
            );
        }
        for (i, x) in &self.verdicts {
            let r = &meta.requests[*i];
            let _ = writeln!(
                o,
                "  {}  trace {}  {}  {}",
                r.name,
                r.trace_id,
                dur(r.duration().as_nanos() as u64),
                offset(r.start_unix_ns, meta.from_ns)
            );
            let _ = writeln!(o, "    {}", x.sentence);
            let _ = writeln!(o, "    {}", crate::verdict::shares_line(x));
        }

        // Threads.
        let span = meta.to_ns.saturating_sub(meta.from_ns).max(1);
        let _ = writeln!(o, "\nthreads");
        let _ = writeln!(
            o,
            "  {:>4}  {:<24} {:>10} {:>8} {:>18} {:>7} {:>7}",
            "lane", "thread", "events", "polls", "busy", "parks", "lost"
        );
        for l in &self.lanes {
            let Some(info) = &l.info else { continue };
            let busy = format!(
                "{} ({:.1}%)",
                dur(l.busy_ns),
                l.busy_ns as f64 * 100.0 / span as f64
            );
            let _ = writeln!(
                o,
                "  {:>4}  {:<24} {:>10} {:>8} {:>18} {:>7} {:>7}",
                info.index,
                truncate(&info.thread, 24),
                count(l.events),
                count(l.polls),
                busy,
                count(l.parks),
                count(info.events_lost)
            );
        }

        // Tasks.
        let loc = |t: u64| {
            self.tasks
                .get(&t)
                .and_then(|t| meta.string(t.location))
                .unwrap_or("(unknown location)")
        };
        let _ = writeln!(
            o,
            "\ntasks     {} seen, {} spawned and {} terminated in the file; {} polls ({} cut by the edges), {} long (>= {})",
            count(self.tasks.len() as u64),
            count(self.spawned),
            count(self.terminated),
            count(self.polls),
            count(self.polls_cut),
            count(self.long_polls),
            dur(meta.long_poll_ns()),
        );
        let mut busiest: Vec<(&u64, &TaskSum)> = self.tasks.iter().collect();
        busiest.sort_by(|a, b| b.1.busy_ns.cmp(&a.1.busy_ns).then(a.0.cmp(b.0)));
        if !busiest.is_empty() {
            let _ = writeln!(o, "  busiest");
            let _ = writeln!(
                o,
                "    {:>8}  {:<48} {:>8} {:>10} {:>10}",
                "task", "spawned at", "polls", "busy", "longest"
            );
            for (id, t) in busiest.iter().take(TOP) {
                let _ = writeln!(
                    o,
                    "    {:>8}  {:<48} {:>8} {:>10} {:>10}{}",
                    id,
                    truncate(loc(**id), 48),
                    count(t.polls),
                    dur(t.busy_ns),
                    dur(t.longest_ns),
                    if t.longest_ns >= meta.long_poll_ns() {
                        "  long"
                    } else {
                        ""
                    }
                );
            }
        }
        let long: Vec<&Poll> = self
            .longest
            .iter()
            .filter(|p| p.duration_ns() >= meta.long_poll_ns())
            .collect();
        if !long.is_empty() {
            let _ = writeln!(o, "  longest polls");
            for p in long {
                let _ = writeln!(
                    o,
                    "    {:>8}  {:<48} {:>10} on lane {} at {}{}",
                    p.task,
                    truncate(loc(p.task), 48),
                    dur(p.duration_ns()),
                    p.lane,
                    offset(p.start_ns, meta.from_ns),
                    if p.complete { "" } else { " (cut)" }
                );
            }
        }

        // Requests.
        let _ = writeln!(
            o,
            "\nrequests  {} opened and {} closed in the file; {} slow (>= {})",
            count(self.requests_opened),
            count(self.requests_closed),
            meta.requests.len(),
            dur(meta.threshold.as_nanos() as u64)
        );
        for (i, r) in meta.requests.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {}  trace {}  {}  {} .. {}{}",
                r.name,
                r.trace_id,
                dur(r.duration().as_nanos() as u64),
                offset(r.start_unix_ns, meta.from_ns),
                offset(r.end_unix_ns, meta.from_ns),
                if r.error { "  error" } else { "" }
            );
            let mut held: Vec<(&u64, &u64)> = self.held[i].iter().collect();
            held.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            if held.is_empty() {
                let _ = writeln!(o, "    no task polled during it");
                continue;
            }
            let _ = writeln!(o, "    tasks that held workers longest during it");
            for (task, ns) in held.into_iter().take(TOP) {
                let mut notes = Vec::new();
                if self.own[i].contains(task) {
                    notes.push("the request's own task".to_string());
                }
                if let Some(t) = self.tasks.get(task)
                    && t.longest_ns >= meta.long_poll_ns()
                {
                    notes.push(format!("long poll {}", dur(t.longest_ns)));
                }
                let _ = writeln!(
                    o,
                    "    {:>8}  {:<48} {:>10}{}{}",
                    task,
                    truncate(loc(*task), 48),
                    dur(*ns),
                    if notes.is_empty() { "" } else { "  " },
                    notes.join(", ")
                );
            }
        }
        o
    }
}

/// At most `n` characters of `s`, ending in `~` when cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    // Keep the end: for `file:line:col` the line is the useful part.
    let tail: String = s
        .chars()
        .rev()
        .take(n - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("~{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_blackbox::SlowRequest;

    /// Issue 27, finding 10: each `task_request` went through every slow
    /// request, and through the request's own tasks (a list) for the task:
    /// 1,000,000 tasks of one request among 100,000 cost ~10¹¹ steps twice
    /// over. The limit is hundreds of times what the lookups take.
    #[test]
    fn a_requests_own_tasks_are_found_in_constant_time() {
        const REQUESTS: u64 = 100_000;
        const TASKS: u64 = 1_000_000;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/small.otlp.jsonl"
        );
        let mut meta = crate::scan::read_meta(std::path::Path::new(path)).expect("fixture");
        let r = meta.requests[0].clone();
        meta.requests = (1..=REQUESTS)
            .map(|id| {
                SlowRequest::new(
                    id,
                    &r.name,
                    r.trace_id,
                    r.span_id,
                    r.start_unix_ns,
                    r.end_unix_ns,
                )
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = Summary::default();
            s.meta(&meta);
            for task in 0..TASKS {
                s.task_request(task, REQUESTS);
                s.task_request(task, REQUESTS); // may repeat
            }
            let _ = tx.send(s);
        });
        let s = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("not finished in 120 s: quadratic?");
        let last = usize::try_from(REQUESTS - 1).unwrap();
        assert_eq!(s.own[last].len() as u64, TASKS);
        assert!(s.own[last].contains(&(TASKS - 1)));
        assert!(s.own[..last].iter().all(|o| o.is_empty()));
    }
}
