//! `blackbox timeline`: the lanes of a file drawn in the terminal.
//!
//! Each column covers the same stretch of time; a cell shows how much of it
//! the lane spent polling (`░▒▓█`), whether one of the polls in it was long
//! (`#`), whether the time went to the marked request's own tasks (`=`), and
//! whether the thread was parked (`.`). Memory is one row of cells per lane.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use tokio_blackbox::analysis::{Explanation, Visitor};
use tokio_blackbox::event::NO_STRING;
use tokio_blackbox::{Lane, Poll};

use crate::fmt::{Paint, dur, offset};
use crate::scan::{self, IdMap, LaneInfo, Meta, View};
use crate::select::{Range, RangeArgs};
use crate::summary::truncate;
use crate::{Failure, InputContext};

/// Width of the label column.
const LABEL: usize = 22;

/// How many long polls are listed under the drawing.
const LISTED: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    busy: u64,
    own: u64,
    parked: u64,
    long: bool,
}

#[derive(Debug)]
struct Row {
    info: LaneInfo,
    cells: Vec<Cell>,
    active: bool,
    parked_at: Option<u64>,
}

/// Collects the tasks that worked for one request (the first pass).
#[derive(Debug)]
struct OwnTasks {
    request: u64,
    tasks: HashSet<u64>,
}

impl View for OwnTasks {}

impl Visitor for OwnTasks {
    fn task_request(&mut self, task: u64, request: u64) {
        if request == self.request {
            self.tasks.insert(task);
        }
    }
}

/// Draws the cells (the second pass).
#[derive(Debug)]
struct Drawing {
    range: Range,
    width: usize,
    col_ns: u64,
    long_ns: u64,
    own: HashSet<u64>,
    rows: Vec<Row>,
    long: Vec<Poll>,
    locations: IdMap<u16>,
}

impl Drawing {
    /// Spreads `[start, end)` over the cells it covers, calling `f(cell, overlap)`.
    fn spread(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut Cell, u64)) {
        let (from, to) = (self.range.from_ns, self.range.to_ns);
        let (s, e) = (start.max(from), end.min(to));
        let Some(row) = self.rows.last_mut() else {
            return;
        };
        if s > e || (s == e && (s < from || s >= to)) {
            return;
        }
        let first = ((s - from) / self.col_ns) as usize;
        let last = (((e - from) / self.col_ns) as usize).min(self.width - 1);
        for c in first..=last.max(first).min(self.width - 1) {
            let cs = from.saturating_add(c as u64 * self.col_ns);
            let ce = cs.saturating_add(self.col_ns);
            let overlap = e.min(ce).saturating_sub(s.max(cs));
            f(&mut row.cells[c], overlap);
        }
        row.active = true;
    }
}

impl View for Drawing {}

impl Visitor for Drawing {
    fn lane(&mut self, lane: &Lane) {
        self.rows.push(Row {
            info: LaneInfo::of(lane),
            cells: vec![Cell::default(); self.width],
            active: false,
            parked_at: None,
        });
    }

    fn poll(&mut self, p: &Poll) {
        if p.location != NO_STRING {
            self.locations.insert(p.task, p.location);
        }
        if p.end_ns < self.range.from_ns || p.start_ns > self.range.to_ns {
            return;
        }
        let own = self.own.contains(&p.task);
        let long = p.is_long(self.long_ns);
        self.spread(p.start_ns, p.end_ns, |c, ns| {
            c.busy = c.busy.saturating_add(ns);
            if own {
                c.own = c.own.saturating_add(ns);
            }
            c.long |= long;
        });
        if long {
            self.long.push(*p);
            self.long
                .sort_by_key(|q| std::cmp::Reverse(q.duration_ns()));
            self.long.truncate(LISTED);
        }
    }

    fn spawn(&mut self, _lane: u32, task: u64, location: u16, _ts: u64) {
        if location != NO_STRING {
            self.locations.insert(task, location);
        }
    }

    fn park(&mut self, _lane: u32, ts: u64, parked: bool) {
        let Some(row) = self.rows.last_mut() else {
            return;
        };
        if parked {
            row.parked_at = Some(ts);
        } else {
            let since = row.parked_at.take().unwrap_or(self.range.from_ns);
            self.spread(since, ts, |c, ns| c.parked = c.parked.saturating_add(ns));
        }
    }

    fn lane_end(&mut self, _lane: u32) {
        if let Some(since) = self.rows.last_mut().and_then(|r| r.parked_at.take()) {
            self.spread(since, self.range.to_ns, |c, ns| {
                c.parked = c.parked.saturating_add(ns)
            });
        }
    }
}

/// Reads `path` and draws its timeline `width` columns wide.
pub(crate) fn run(
    path: &Path,
    args: &RangeArgs,
    width: usize,
    colour: bool,
) -> Result<String, Failure> {
    let meta = scan::read_meta(path).input(path)?;
    let range = args.resolve(&meta)?;
    let mut own = HashSet::new();
    if let Some(i) = range.request {
        let mut pass = OwnTasks {
            request: meta.requests[i].request_id,
            tasks: HashSet::new(),
        };
        scan::scan(path, &mut pass).input(path)?;
        own = pass.tasks;
    }
    let span = range.to_ns - range.from_ns;
    let mut d = Drawing {
        range,
        width,
        col_ns: span.div_ceil(width as u64).max(1),
        long_ns: meta.long_poll_ns(),
        own,
        rows: Vec::new(),
        long: Vec::new(),
        locations: IdMap::default(),
    };
    scan::scan(path, &mut d).input(path)?;
    let verdict = match range.request {
        Some(i) => crate::verdict::explain(path, &meta, &[i])
            .input(path)?
            .pop()
            .map(|(_, x)| x),
        None => None,
    };
    Ok(render(
        &d,
        &meta,
        verdict.as_ref(),
        &path.display().to_string(),
        Paint { on: colour },
    ))
}

fn render(
    d: &Drawing,
    meta: &Meta,
    verdict: Option<&Explanation>,
    name: &str,
    paint: Paint,
) -> String {
    let mut o = String::new();
    let r = d.range;
    let _ = writeln!(
        o,
        "timeline  {name}  {} .. {}  ({} per column)",
        offset(r.from_ns, meta.from_ns),
        offset(r.to_ns, meta.from_ns),
        dur(d.col_ns)
    );
    let request = r.request.map(|i| &meta.requests[i]);
    if let Some(req) = request {
        let _ = writeln!(
            o,
            "request   {}  trace {}  {}  {} .. {}",
            req.name,
            req.trace_id,
            dur(req.duration().as_nanos() as u64),
            offset(req.start_unix_ns, meta.from_ns),
            offset(req.end_unix_ns, meta.from_ns)
        );
    }
    if let Some(x) = verdict {
        let _ = writeln!(o, "verdict   {}", x.sentence);
        let _ = writeln!(o, "          {}", crate::verdict::shares_line(x));
    }
    let _ = writeln!(o);

    // Ruler: a tick every ten columns, labelled where the label fits.
    let mut ticks = String::new();
    let mut labels = String::new();
    for c in 0..d.width {
        ticks.push(if c % 10 == 0 { '|' } else { ' ' });
        if c % 20 == 0 && labels.chars().count() <= c {
            while labels.chars().count() < c {
                labels.push(' ');
            }
            let at = r.from_ns.saturating_add(c as u64 * d.col_ns);
            labels.push_str(&offset(at, meta.from_ns));
        }
    }
    let _ = writeln!(o, "{:LABEL$}{}", "", labels.trim_end());
    let _ = writeln!(o, "{:LABEL$}{}", "", paint.paint(Paint::DIM, &ticks));

    if let Some(req) = request {
        let mut line = String::new();
        for c in 0..d.width {
            let cs = r.from_ns.saturating_add(c as u64 * d.col_ns);
            let ce = cs.saturating_add(d.col_ns);
            line.push(if req.start_unix_ns < ce && req.end_unix_ns >= cs {
                '━'
            } else {
                ' '
            });
        }
        let _ = writeln!(
            o,
            "{:<LABEL$}{}",
            truncate(&format!("request {}", req.name), LABEL - 1),
            paint.paint(Paint::YELLOW, line.trim_end())
        );
    }

    let mut hidden = 0;
    for row in &d.rows {
        if !row.active {
            hidden += 1;
            continue;
        }
        let label = if row.info.is_worker() {
            format!("lane {} worker", row.info.index)
        } else {
            format!("lane {} {}", row.info.index, row.info.thread)
        };
        let mut line = String::new();
        let mut run_style = "";
        let mut run = String::new();
        for cell in &row.cells {
            let (ch, style) = symbol(cell, d.col_ns);
            if style != run_style {
                line.push_str(&paint.paint(run_style, &run));
                run.clear();
                run_style = style;
            }
            run.push(ch);
        }
        let run = run.trim_end();
        line.push_str(&paint.paint(run_style, run));
        let _ = writeln!(o, "{:<LABEL$}{}", truncate(&label, LABEL - 1), line);
    }
    if hidden > 0 {
        let _ = writeln!(
            o,
            "{:LABEL$}({hidden} lanes with nothing in this range not shown)",
            ""
        );
    }
    let _ = writeln!(
        o,
        "\n{}  {}  {}  {}",
        paint.paint(Paint::CYAN, "░▒▓█ busy share of the column"),
        paint.paint(Paint::RED, &format!("# long poll (>= {})", dur(d.long_ns))),
        paint.paint(Paint::GREEN, "= the request's own tasks"),
        paint.paint(Paint::DIM, ". parked"),
    );
    if !d.long.is_empty() {
        let _ = writeln!(o, "\nlong polls in range");
        for p in &d.long {
            let loc = d
                .locations
                .get(&p.task)
                .and_then(|&l| meta.string(l))
                .unwrap_or("(unknown location)");
            let _ = writeln!(
                o,
                "  task {:<6} {:<48} {:>10} on lane {} at {}{}",
                p.task,
                truncate(loc, 48),
                dur(p.duration_ns()),
                p.lane,
                offset(p.start_ns, meta.from_ns),
                if d.own.contains(&p.task) {
                    "  (the request's own task)"
                } else {
                    ""
                }
            );
        }
    }
    o
}

/// The character and style of one cell.
fn symbol(c: &Cell, col_ns: u64) -> (char, &'static str) {
    if c.long {
        return ('#', Paint::RED);
    }
    if c.busy > 0 && c.own * 2 >= c.busy {
        return ('=', Paint::GREEN);
    }
    if c.busy > 0 {
        let f = c.busy as f64 / col_ns as f64;
        let ch = match f {
            f if f > 0.75 => '█',
            f if f > 0.5 => '▓',
            f if f > 0.25 => '▒',
            _ => '░',
        };
        return (ch, Paint::CYAN);
    }
    if c.parked * 2 >= col_ns {
        return ('.', Paint::DIM);
    }
    (' ', "")
}
