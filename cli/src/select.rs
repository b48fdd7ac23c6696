//! Choosing what to draw: a time range and a slow request, from
//! `--trace`, `--from` and `--to`.

use std::time::Duration;

use tokio_blackbox::analysis::Visitor;
use tokio_blackbox::{Event, Lane, Poll};

use crate::Failure;
use crate::scan::{Meta, View};

/// The part of a file to show.
#[derive(Debug, Clone, clap::Args)]
#[deny(missing_docs)]
pub(crate) struct RangeArgs {
    /// Show the slow request with this trace id (32 hex digits, or a unique
    /// prefix) and the time around it. Without it the first slow request in
    /// the file, if any, is marked.
    #[arg(long, value_name = "ID")]
    pub(crate) trace: Option<String>,
    /// Start of the range, as an offset from the start of the file: `1.5s`, `250ms`.
    #[arg(long, value_name = "T", value_parser = parse_offset)]
    pub(crate) from: Option<Duration>,
    /// End of the range, as an offset from the start of the file: `2s`.
    #[arg(long, value_name = "T", value_parser = parse_offset)]
    pub(crate) to: Option<Duration>,
}

fn parse_offset(s: &str) -> Result<Duration, String> {
    tokio_blackbox::parse_duration(s).ok_or_else(|| {
        format!(
            "{s:?} is not a duration: expected a number and a unit, such as 1.5s, 250ms or 800us"
        )
    })
}

/// A resolved selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    /// Start, UNIX ns.
    pub(crate) from_ns: u64,
    /// End, UNIX ns (greater than `from_ns`).
    pub(crate) to_ns: u64,
    /// Index into `meta.requests` of the request to mark.
    pub(crate) request: Option<usize>,
}

impl RangeArgs {
    /// Resolves the arguments against a file's metadata.
    ///
    /// # Errors
    ///
    /// [`Failure::Usage`] for a trace id that matches no slow request (or
    /// several), or an empty range.
    pub(crate) fn resolve(&self, meta: &Meta) -> Result<Range, Failure> {
        let (mut from_ns, mut to_ns) = (meta.from_ns, meta.to_ns.max(meta.from_ns));
        let mut request = (!meta.requests.is_empty()).then_some(0);
        if let Some(id) = &self.trace {
            let want = id.trim().to_ascii_lowercase();
            let hits: Vec<usize> = meta
                .requests
                .iter()
                .enumerate()
                .filter(|(_, r)| !want.is_empty() && r.trace_id.to_string().starts_with(&want))
                .map(|(i, _)| i)
                .collect();
            let i = match hits[..] {
                [i] => i,
                [] => {
                    let known: Vec<String> = meta
                        .requests
                        .iter()
                        .map(|r| r.trace_id.to_string())
                        .collect();
                    return Err(Failure::Usage(format!(
                        "no slow request with trace id {id:?} in the file; it has {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
                _ if hits
                    .iter()
                    .all(|&i| meta.requests[i].trace_id == meta.requests[hits[0]].trace_id) =>
                {
                    hits[0]
                }
                _ => {
                    return Err(Failure::Usage(format!(
                        "trace id prefix {id:?} matches {} slow requests",
                        hits.len()
                    )));
                }
            };
            let r = &meta.requests[i];
            // Context on both sides: a quarter of the request's duration.
            let margin = r.end_unix_ns.saturating_sub(r.start_unix_ns) / 4;
            from_ns = r
                .start_unix_ns
                .saturating_sub(margin)
                .max(meta.from_ns.min(r.start_unix_ns));
            to_ns = r
                .end_unix_ns
                .saturating_add(margin)
                .min(meta.to_ns.max(r.end_unix_ns));
            request = Some(i);
        }
        if let Some(f) = self.from {
            from_ns = meta.from_ns.saturating_add(f.as_nanos() as u64);
        }
        if let Some(t) = self.to {
            to_ns = meta.from_ns.saturating_add(t.as_nanos() as u64);
        }
        if to_ns <= from_ns {
            return Err(Failure::Usage(format!(
                "the range is empty: --to must be after --from (the file spans {})",
                crate::fmt::dur(meta.to_ns.saturating_sub(meta.from_ns))
            )));
        }
        Ok(Range {
            from_ns,
            to_ns,
            request,
        })
    }
}

/// A visitor that sees only `range`: the file's bounds become the range's,
/// items outside it are dropped and, with `cut`, polls and request
/// intervals across its edges are cut there (a cut poll is marked
/// incomplete, as at a window's edge). Parked intervals are always cut.
/// Request names and task-to-request links pass for slow requests only.
#[derive(Debug)]
pub(crate) struct Clip<'a, V: ?Sized> {
    pub(crate) range: Range,
    pub(crate) cut: bool,
    pub(crate) inner: &'a mut V,
    /// When the current lane's thread parked, if it is parked.
    parked_at: Option<u64>,
    /// Ids of the slow requests in the range.
    slow: Vec<u64>,
}

impl<'a, V: ?Sized> Clip<'a, V> {
    /// A clip of `inner` to `range`.
    pub(crate) fn new(range: Range, cut: bool, inner: &'a mut V) -> Self {
        Clip {
            range,
            cut,
            inner,
            parked_at: None,
            slow: Vec::new(),
        }
    }
}

impl<V: View + ?Sized> Clip<'_, V> {
    fn inside(&self, ts: u64) -> bool {
        ts >= self.range.from_ns && ts <= self.range.to_ns
    }

    /// `[start, end]` cut to the range (with `cut`), or `None` when it lies outside.
    fn cut(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        if end < self.range.from_ns || start > self.range.to_ns {
            return None;
        }
        if !self.cut {
            return Some((start, end));
        }
        Some((start.max(self.range.from_ns), end.min(self.range.to_ns)))
    }
}

impl<V: View + ?Sized> View for Clip<'_, V> {
    fn meta(&mut self, meta: &Meta) {
        let mut meta = meta.clone();
        meta.from_ns = self.range.from_ns;
        meta.to_ns = self.range.to_ns;
        meta.requests
            .retain(|r| r.end_unix_ns >= self.range.from_ns && r.start_unix_ns <= self.range.to_ns);
        self.slow = meta.requests.iter().map(|r| r.request_id).collect();
        self.inner.meta(&meta);
    }
}

impl<V: View + ?Sized> Visitor for Clip<'_, V> {
    fn lane(&mut self, lane: &Lane) {
        self.parked_at = None;
        self.inner.lane(lane);
    }

    fn event(&mut self, lane: u32, e: &Event) {
        if self.inside(e.ts) {
            self.inner.event(lane, e);
        }
    }

    fn poll(&mut self, poll: &Poll) {
        if let Some((s, e)) = self.cut(poll.start_ns, poll.end_ns) {
            let whole = (s, e) == (poll.start_ns, poll.end_ns);
            let mut cut = *poll;
            cut.start_ns = s;
            cut.end_ns = e;
            cut.complete = poll.complete && whole;
            self.inner.poll(&cut);
        }
    }

    fn spawned_by(&mut self, task: u64, parent: u64) {
        self.inner.spawned_by(task, parent);
    }

    fn task_name(&mut self, task: u64, name: u16) {
        self.inner.task_name(task, name);
    }

    fn spawn(&mut self, lane: u32, task: u64, location: u16, ts: u64) {
        if self.inside(ts) {
            self.inner.spawn(lane, task, location, ts);
        }
    }

    fn terminate(&mut self, lane: u32, task: u64, ts: u64) {
        if self.inside(ts) {
            self.inner.terminate(lane, task, ts);
        }
    }

    fn park(&mut self, lane: u32, ts: u64, parked: bool) {
        // Parks are intervals to their visitors: pass on the part of each
        // parked interval inside the range, as a park and an unpark.
        if parked {
            self.parked_at = Some(ts);
            return;
        }
        let since = self.parked_at.take().unwrap_or(self.range.from_ns);
        let (s, e) = (since.max(self.range.from_ns), ts.min(self.range.to_ns));
        if s < e {
            self.inner.park(lane, s, true);
            self.inner.park(lane, e, false);
        }
    }

    fn request_open(&mut self, request: u64, name: u16, ts: u64) {
        // Only the slow requests are drawn by name; their names are needed
        // even when they opened before the range.
        if ts <= self.range.to_ns && self.slow.contains(&request) {
            self.inner
                .request_open(request, name, ts.max(self.range.from_ns));
        }
    }

    fn request_close(&mut self, request: u64, ts: u64) {
        if self.inside(ts) {
            self.inner.request_close(request, ts);
        }
    }

    fn entered(&mut self, lane: u32, request: u64, start_ns: u64, end_ns: u64) {
        if let Some((s, e)) = self.cut(start_ns, end_ns) {
            self.inner.entered(lane, request, s, e);
        }
    }

    fn task_request(&mut self, task: u64, request: u64) {
        // Which tasks worked for a slow request, wherever in the file: that
        // marks them in the range too. Others would only grow the output.
        if self.slow.contains(&request) {
            self.inner.task_request(task, request);
        }
    }

    fn task_entered(&mut self, task: u64, request: u64) {
        if self.slow.contains(&request) {
            self.inner.task_entered(task, request);
        }
    }

    fn lane_end(&mut self, lane: u32) {
        // Still parked at the end of the lane: the visitor closes the interval.
        if let Some(since) = self.parked_at.take()
            && since <= self.range.to_ns
        {
            self.inner.park(lane, since.max(self.range.from_ns), true);
        }
        self.inner.lane_end(lane);
    }
}
