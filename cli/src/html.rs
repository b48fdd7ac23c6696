//! `blackbox html`: one self-contained page with an interactive timeline.
//!
//! The page is the style and script of `assets/`, with the file's polls,
//! parks, spawns and request intervals inlined as compact arrays. It is
//! written while the input streams, so memory stays bounded whatever the
//! input size (the browser, of course, holds what the page holds). A
//! Content-Security-Policy of `default-src 'none'` forbids every fetch, and
//! nothing in it refers to another URL, so it works from `file://` offline.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;
use tokio_blackbox::analysis::Visitor;
use tokio_blackbox::event::NO_STRING;
use tokio_blackbox::{Lane, Poll};

use crate::scan::{self, Meta, View};
use crate::select::{Clip, Range};
use crate::{Failure, InputContext};

const STYLE: &str = include_str!("assets/timeline.css");
const SCRIPT: &str = include_str!("assets/timeline.js");

/// The page's Content-Security-Policy: nothing may be fetched; the inline
/// style and scripts may run.
pub(crate) const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:";

/// Above this many polls the page passes about 90 MB (a poll row is about 45
/// bytes, measured on the 64 MiB bench dump) and is slow to open: say so.
const LARGE_PAGE_POLLS: u64 = 2_000_000;

/// Rows buffered before a `push` statement is written. Keeps each call's
/// argument list far below the engines' limits (about 65 000 in some).
const ROWS_PER_PUSH: usize = 2000;

/// Writes data rows into the page's data script as it reads.
struct Page<'a> {
    out: &'a mut dyn Write,
    error: Option<io::Error>,
    from_ns: u64,
    /// Pending rows per array name.
    rows: Vec<(&'static str, String, usize)>,
    parked_at: Option<u64>,
    polls: u64,
    /// The verdicts on the slowest requests, by request id.
    verdicts: Vec<(u64, serde_json::Value)>,
}

impl Page<'_> {
    fn emit(&mut self, text: &str) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(text.as_bytes())
        {
            self.error = Some(e);
        }
    }

    /// Nanoseconds since the start of the range; negative for polls that
    /// began before it (the page draws them cut at its edge).
    fn rel(&self, ns: u64) -> i64 {
        (i128::from(ns) - i128::from(self.from_ns)) as i64
    }

    /// Adds a row (a JSON array's contents) to array `name`.
    fn row(&mut self, name: &'static str, row: std::fmt::Arguments<'_>) {
        let i = match self.rows.iter().position(|(n, _, _)| *n == name) {
            Some(i) => i,
            None => {
                self.rows.push((name, String::new(), 0));
                self.rows.len() - 1
            }
        };
        let (_, buf, n) = &mut self.rows[i];
        if *n > 0 {
            buf.push(',');
        }
        buf.push('[');
        let _ = buf.write_fmt(row);
        buf.push(']');
        *n += 1;
        if *n >= ROWS_PER_PUSH {
            self.flush(i);
        }
    }

    fn flush(&mut self, i: usize) {
        let (name, buf, n) = &mut self.rows[i];
        if *n == 0 {
            return;
        }
        let text = format!("D.{name}.push({buf});\n");
        buf.clear();
        *n = 0;
        self.emit(&text);
    }

    fn flush_all(&mut self) {
        for i in 0..self.rows.len() {
            self.flush(i);
        }
    }
}

impl View for Page<'_> {
    fn meta(&mut self, meta: &Meta) {
        self.from_ns = meta.from_ns;
        let requests: Vec<_> = meta
            .requests
            .iter()
            .map(|r| {
                json!({
                    "id": r.request_id,
                    "name": r.name,
                    "trace": r.trace_id.to_string(),
                    "span": r.span_id.to_string(),
                    "start": self.rel(r.start_unix_ns),
                    "end": self.rel(r.end_unix_ns),
                    "error": r.error,
                    "verdict": self
                        .verdicts
                        .iter()
                        .find(|(id, _)| *id == r.request_id)
                        .map(|(_, v)| v),
                })
            })
            .collect();
        let head = json!({
            "from_unix_ns": meta.from_ns,
            "span_ns": meta.to_ns.saturating_sub(meta.from_ns),
            "offset_ns": meta.from_ns.saturating_sub(meta.file_from_ns),
            "kind": format!("{:?}", meta.header.kind).to_lowercase(),
            "sequence": meta.sequence,
            "pid": meta.header.pid,
            "created": crate::fmt::utc(meta.header.created_unix_ns),
            "start": crate::fmt::utc(meta.from_ns),
            "threshold_ns": meta.threshold.as_nanos() as u64,
            "long_poll_ns": meta.long_poll_ns(),
            "schedule_delay": meta.header.schedule_delay,
            "task_hooks": meta.header.task_hooks,
            "strings": meta.strings,
            "requests": requests,
        });
        let text = format!(
            "const D = {{meta: {}, l: [], p: [], s: [], k: [], e: [], t: [], o: []}};\n",
            script_json(&head)
        );
        self.emit(&text);
    }
}

impl Visitor for Page<'_> {
    fn lane(&mut self, lane: &Lane) {
        self.parked_at = None;
        let thread = script_json(&json!(lane.thread));
        self.row(
            "l",
            format_args!("{},{},{}", lane.index, thread, lane.events_lost),
        );
    }

    fn poll(&mut self, p: &Poll) {
        self.polls += 1;
        let delay = p.sched_delay_ns.map_or(-1, |d| d as i64);
        let loc = if p.location == NO_STRING {
            -1
        } else {
            i64::from(p.location)
        };
        let (start, dur) = (self.rel(p.start_ns), p.duration_ns());
        self.row(
            "p",
            format_args!(
                "{},{},{start},{dur},{delay},{loc},{}",
                p.lane,
                p.task,
                u8::from(p.complete)
            ),
        );
    }

    fn spawn(&mut self, lane: u32, task: u64, location: u16, ts: u64) {
        let loc = if location == NO_STRING {
            -1
        } else {
            i64::from(location)
        };
        let ts = self.rel(ts);
        self.row("s", format_args!("{lane},{task},{ts},{loc}"));
    }

    fn park(&mut self, lane: u32, ts: u64, parked: bool) {
        if parked {
            self.parked_at = Some(ts);
        } else {
            let since = self.parked_at.take().unwrap_or(self.from_ns);
            let (a, b) = (self.rel(since), self.rel(ts));
            if b > a {
                self.row("k", format_args!("{lane},{a},{b}"));
            }
        }
    }

    fn lane_end(&mut self, lane: u32) {
        if let Some(since) = self.parked_at.take() {
            // Parked until the end of the file: -1 stands for "the end".
            let a = self.rel(since);
            self.row("k", format_args!("{lane},{a},-1"));
        }
    }

    fn request_open(&mut self, request: u64, name: u16, ts: u64) {
        let name = if name == NO_STRING {
            -1
        } else {
            i64::from(name)
        };
        let ts = self.rel(ts);
        self.row("o", format_args!("{request},{name},{ts}"));
    }

    fn entered(&mut self, lane: u32, request: u64, start_ns: u64, end_ns: u64) {
        let (a, b) = (self.rel(start_ns), self.rel(end_ns));
        self.row("e", format_args!("{lane},{request},{a},{b}"));
    }

    fn task_request(&mut self, task: u64, request: u64) {
        self.row("t", format_args!("{task},{request}"));
    }
}

/// JSON that is safe inside a `<script>` element: no `<`, so no `</script>`.
fn script_json(v: &serde_json::Value) -> String {
    v.to_string().replace('<', "\\u003c")
}

/// Text safe inside HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Reads `path` and writes the page to `out`.
pub(crate) fn run(path: &Path, range: Range, out: &mut dyn Write) -> Result<(), Failure> {
    let io = |e: io::Error| Failure::Other(anyhow::Error::new(e).context("writing the page"));
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>blackbox: {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>blackbox <span id=\"file\">{}</span></h1><div id=\"facts\"></div></header>\n\
         <main><div id=\"controls\"></div><div id=\"timeline\"></div><div id=\"details\"></div></main>\n\
         <div id=\"tip\" hidden></div>\n<script>\n",
        escape(&name),
        escape(&name)
    )
    .map_err(io)?;
    // The verdicts: on the slowest requests of the range, and on the one
    // it is about.
    let meta = scan::read_meta(path).input(path)?;
    let mut which: Vec<usize> = crate::verdict::slowest(&meta, usize::MAX)
        .into_iter()
        .filter(|&i| {
            let r = &meta.requests[i];
            r.end_unix_ns >= range.from_ns && r.start_unix_ns <= range.to_ns
        })
        .take(crate::verdict::SHOWN)
        .collect();
    if let Some(i) = range.request
        && !which.contains(&i)
    {
        which.push(i);
    }
    let verdicts = crate::verdict::explain(path, &meta, &which)
        .input(path)?
        .into_iter()
        .map(|(i, x)| (meta.requests[i].request_id, crate::verdict::json(&x)))
        .collect();
    let mut page = Page {
        verdicts,
        out: &mut *out,
        error: None,
        from_ns: 0,
        rows: Vec::new(),
        parked_at: None,
        polls: 0,
    };
    let mut clip = Clip::new(range, false, &mut page);
    scan::scan(path, &mut clip).input(path)?;
    page.flush_all();
    if let Some(e) = page.error.take() {
        return Err(io(e));
    }
    if page.polls > LARGE_PAGE_POLLS {
        eprintln!(
            "blackbox: note: the page holds {} polls and may be slow to open; \
             --trace ID or --from/--to show a part of the file",
            crate::fmt::count(page.polls)
        );
    }
    write!(
        out,
        "</script>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    )
    .map_err(io)?;
    Ok(())
}
