//! OTLP JSON capture files (`traces.otlp.jsonl`, written by `JsonFileSink`):
//! one `ExportTraceServiceRequest` per line, read back as windows.
//!
//! Design: each exported `blackbox.window` span and its children are turned
//! back into a [`tokio_blackbox::Window`] ([`windows_of_line`]): polls become
//! poll start/end events on their lane, park/unpark events of the worker spans
//! become park/unpark events, `spawned`/`terminated` span events become task
//! events, and a task flagged `blackbox.task.in_request` gets the window's
//! request entered around each of its polls. The scan layer then feeds those
//! events through the same pairing code as a binary file, so every view
//! (summary, timeline, html, perfetto) and `replay` work unchanged. The
//! mapping is lossy where the export was: polls and tasks left out by the span
//! budget, park events over the per-span cap and the spawn lane of a task
//! (placed on the lane of its first poll) are not in the file.
//!
//! Memory is bounded by one line (one window) plus the file's metadata (its
//! slow requests, the string table, the lanes seen): a file is read twice,
//! first for the metadata the views need before the first lane, then window
//! by window. A request span is found on the window's own line, or on an
//! earlier line (the tail sampler writes the app's trace before the capture);
//! failing that its times are placed in the middle of the window, from the
//! duration the window span carries.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_blackbox::event::{NO_STRING, encode_delay};
use tokio_blackbox::export::names as keys;
use tokio_blackbox::{Event, EventKind, Lane, SlowRequest, Window};

/// Whether `head` (the first bytes of a file) looks like OTLP JSON: its first
/// non-blank byte is `{`. Binary files start with `BBXDUMP\0`.
pub(crate) fn looks_like_json(head: &[u8]) -> bool {
    head.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// The longest line read: 64 MiB. The recorder writes one export request
/// per line, each under 4 MiB of protobuf (about 12 MiB of JSON at most), so
/// a longer line is not the recorder's; the reader stops there instead of
/// holding a line of any length in memory.
pub(crate) const MAX_LINE_BYTES: usize = 64 << 20;

/// The most JSON objects a line may hold: 1 Mi. Parsed, an object costs up
/// to a `Span`'s 264 bytes while it takes 3 bytes of JSON (`{},`), so a
/// 64 MiB line of empty spans parsed into ~6 GB; a line is counted before
/// it is parsed, and one over this is skipped as not the recorder's (its
/// requests hold at most 256 spans of at most 512 events or links each, in
/// under 4 MiB of protobuf: a few hundred thousand objects). What a line
/// can cost parsed is then ~256 MiB at worst.
pub(crate) const MAX_LINE_OBJECTS: usize = 1 << 20;

/// The JSON objects in `line` (its `{` outside strings), counted up to one
/// past `limit`.
fn objects(line: &[u8], limit: usize) -> usize {
    let (mut n, mut in_string, mut escaped) = (0, false, false);
    for &b in line {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'{' {
            n += 1;
            if n > limit {
                break;
            }
        }
    }
    n
}

/// A line that is not an OTLP JSON export request.
#[derive(Debug, Clone)]
pub(crate) struct LineError {
    /// 1-based line number.
    pub(crate) line: u64,
    /// Byte offset of the line's start.
    pub(crate) offset: u64,
    pub(crate) message: String,
}

/// Reads a file line by line, counting lines and bytes.
///
/// A line that is not an export request (one torn by a full disk or a
/// crash, or too long) is skipped and counted ([`Lines::skipped`]), so one
/// bad line costs that line, not the file; a file with no good line at all
/// is refused with its first bad line's error.
pub(crate) struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    line: u64,
    offset: u64,
    /// Lines read as export requests.
    good: u64,
    /// Bad lines skipped, and the first of them.
    skipped: u64,
    first_bad: Option<LineError>,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(input: R) -> Self {
        Lines {
            input,
            buf: Vec::new(),
            line: 0,
            offset: 0,
            good: 0,
            skipped: 0,
            first_bad: None,
        }
    }

    /// The next good non-blank line parsed as an export request, with its
    /// line number and byte offset; bad lines on the way are skipped and
    /// counted. At the end, a file whose every line was bad is an error.
    pub(crate) fn next_request(
        &mut self,
    ) -> Result<Option<(ExportTraceServiceRequest, u64, u64)>, ReadFailure> {
        loop {
            match self.next_line()? {
                Some(Ok(found)) => {
                    self.good += 1;
                    return Ok(Some(found));
                }
                Some(Err(bad)) => {
                    self.skipped += 1;
                    self.first_bad.get_or_insert(bad);
                }
                None => {
                    return match (&self.first_bad, self.good) {
                        (Some(bad), 0) => Err(ReadFailure::Line(bad.clone())),
                        _ => Ok(None),
                    };
                }
            }
        }
    }

    /// Bad lines skipped so far, with the first of them.
    pub(crate) fn skipped(&self) -> Option<(u64, &LineError)> {
        self.first_bad.as_ref().map(|e| (self.skipped, e))
    }

    /// The next non-blank line: an export request or why it is not one.
    #[allow(clippy::type_complexity)]
    fn next_line(
        &mut self,
    ) -> Result<Option<Result<(ExportTraceServiceRequest, u64, u64), LineError>>, ReadFailure> {
        loop {
            self.buf.clear();
            let start = self.offset;
            // At most one byte over the limit, so a longer line is seen
            // without being held.
            let n = (&mut self.input)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(ReadFailure::Io)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.offset += n as u64;
            if n > MAX_LINE_BYTES {
                self.buf = Vec::new();
                // The rest of the line, read past and never held.
                let rest = self.input.skip_until(b'\n').map_err(ReadFailure::Io)?;
                self.offset += rest as u64;
                return Ok(Some(Err(LineError {
                    line: self.line,
                    offset: start,
                    message: format!(
                        "the line is longer than {} MiB, the reader's limit per line (the recorder's lines are a few MiB at most): the file was not written by the recorder or is corrupt",
                        MAX_LINE_BYTES >> 20
                    ),
                })));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if objects(&self.buf, MAX_LINE_OBJECTS) > MAX_LINE_OBJECTS {
                return Ok(Some(Err(LineError {
                    line: self.line,
                    offset: start,
                    message: format!(
                        "the line holds more than {MAX_LINE_OBJECTS} JSON objects, the reader's limit per line (the recorder's lines hold a few hundred thousand at most): the file was not written by the recorder or is corrupt"
                    ),
                })));
            }
            return Ok(Some(
                match serde_json::from_slice::<ExportTraceServiceRequest>(&self.buf) {
                    Ok(r) => Ok((r, self.line, start)),
                    Err(e) => {
                        // serde's position is within the line: keep only its column.
                        let text = e.to_string();
                        let text = text.rfind(" at line ").map_or(&text[..], |i| &text[..i]);
                        Err(LineError {
                            line: self.line,
                            offset: start,
                            message: if e.line() > 1 {
                                format!("{text} at the end of the line")
                            } else {
                                format!("{text} at column {}", e.column())
                            },
                        })
                    }
                },
            ));
        }
    }
}

/// Says on stderr what [`Lines`] skipped in `path`, once per command.
pub(crate) fn report_skipped<R: BufRead>(path: &std::path::Path, lines: &Lines<R>) {
    if let Some((n, first)) = lines.skipped() {
        let lines_word = if n == 1 { "line" } else { "lines" };
        eprintln!(
            "blackbox: warning: {}: skipped {n} {lines_word} that {} (torn by a full disk or a crash?); the first: line {} (byte {}): {}",
            path.display(),
            if n == 1 {
                "is not an OTLP JSON export request"
            } else {
                "are not OTLP JSON export requests"
            },
            first.line,
            first.offset,
            first.message
        );
    }
}

/// Why reading a JSON file failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    Io(std::io::Error),
    Line(LineError),
}

/// Every span of a request, with its resource's attributes.
fn spans(req: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
    req.resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
}

/// The `process.pid` of the first resource that has one.
pub(crate) fn pid(req: &ExportTraceServiceRequest) -> Option<u32> {
    req.resource_spans
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == "process.pid")
        .and_then(int_value)
        .and_then(|v| u32::try_from(v).ok())
}

fn value(kv: &KeyValue) -> Option<&any_value::Value> {
    kv.value.as_ref()?.value.as_ref()
}

fn int_value(kv: &KeyValue) -> Option<i64> {
    match value(kv)? {
        any_value::Value::IntValue(v) => Some(*v),
        any_value::Value::DoubleValue(v) => Some(*v as i64),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

fn a_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attr(attrs, key).and_then(int_value)
}

fn a_u64(attrs: &[KeyValue], key: &str) -> Option<u64> {
    a_int(attrs, key).and_then(|v| u64::try_from(v).ok())
}

fn a_f64(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match value(attr(attrs, key)?)? {
        any_value::Value::DoubleValue(v) => Some(*v),
        any_value::Value::IntValue(v) => Some(*v as f64),
        _ => None,
    }
}

fn a_bool(attrs: &[KeyValue], key: &str) -> Option<bool> {
    match value(attr(attrs, key)?)? {
        any_value::Value::BoolValue(v) => Some(*v),
        _ => None,
    }
}

fn a_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match value(attr(attrs, key)?)? {
        any_value::Value::StringValue(v) => Some(v),
        _ => None,
    }
}

/// Milliseconds (as the mapping writes durations) to nanoseconds.
fn ms_ns(ms: f64) -> u64 {
    (ms * 1e6).round().max(0.0) as u64
}

fn trace_id(b: &[u8]) -> TraceId {
    b.try_into()
        .map(TraceId::from_bytes)
        .unwrap_or(TraceId::INVALID)
}

fn span_id(b: &[u8]) -> SpanId {
    b.try_into()
        .map(SpanId::from_bytes)
        .unwrap_or(SpanId::INVALID)
}

/// The string table of a whole file, and the request ids given out so far:
/// both grow identically on both passes over a file.
///
/// A window gets its own table, of the strings it uses ([`WindowStrings`]),
/// not a copy of this one: a copy per window made N windows that each name
/// a new location hold N²/2 strings (issue 27, finding 10).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tables {
    pub(crate) strings: Vec<String>,
    index: HashMap<String, u16>,
    pub(crate) next_request: u64,
}

impl Tables {
    fn intern(&mut self, s: &str) -> u16 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        // The last index means "no string".
        if self.strings.len() >= usize::from(NO_STRING) {
            return NO_STRING;
        }
        let i = self.strings.len() as u16;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// One window's string table: the strings its events and requests name,
/// each once, interned in the file's table too (so the file's table, and
/// which string it has no room for, are what they would be without it).
#[derive(Debug, Default)]
struct WindowStrings {
    strings: Vec<String>,
    /// The file's index of each string, to the window's.
    index: HashMap<u16, u16>,
}

impl WindowStrings {
    fn intern(&mut self, tables: &mut Tables, s: &str) -> u16 {
        let file = tables.intern(s);
        if file == NO_STRING {
            return NO_STRING;
        }
        *self.index.entry(file).or_insert_with(|| {
            self.strings.push(s.to_owned());
            // At most as many strings as the file's table: an index fits.
            (self.strings.len() - 1) as u16
        })
    }
}

/// Start and end (UNIX ns) of request spans, by trace and span id.
pub(crate) type KnownSpans = HashMap<(TraceId, SpanId), (u64, u64)>;

/// Remembers the root spans of a line that are not the recorder's window
/// structure: candidates for a later window's request span.
pub(crate) fn remember_roots(req: &ExportTraceServiceRequest, known: &mut KnownSpans) {
    for s in spans(req) {
        let recorder_made = a_str(&s.attributes, keys::REQUEST_SOURCE).is_some();
        let captured = a_bool(&s.attributes, keys::CAPTURED) == Some(true);
        if s.parent_span_id.is_empty() && (recorder_made || !captured) {
            known.insert(
                (trace_id(&s.trace_id), span_id(&s.span_id)),
                (s.start_time_unix_nano, s.end_time_unix_nano),
            );
        }
    }
}

/// The windows exported on one line, rebuilt (usually one; none on a line
/// the tail sampler wrote). `known` holds request spans of earlier lines.
pub(crate) fn windows_of_line(
    req: &ExportTraceServiceRequest,
    tables: &mut Tables,
    known: &KnownSpans,
) -> Vec<Window> {
    let all: Vec<&Span> = spans(req).collect();
    let mut by_id: HashMap<(TraceId, SpanId), &Span> = HashMap::new();
    let mut children: HashMap<(TraceId, SpanId), Vec<&Span>> = HashMap::new();
    for s in &all {
        let t = trace_id(&s.trace_id);
        by_id.insert((t, span_id(&s.span_id)), s);
        if !s.parent_span_id.is_empty() {
            children
                .entry((t, span_id(&s.parent_span_id)))
                .or_default()
                .push(s);
        }
    }
    let times = |t: TraceId, id: SpanId| {
        by_id
            .get(&(t, id))
            .map(|s| (s.start_time_unix_nano, s.end_time_unix_nano))
            .or_else(|| known.get(&(t, id)).copied())
    };
    let mut out = Vec::new();
    for win in all.iter().filter(|s| s.name == keys::WINDOW_SPAN) {
        let a = &win.attributes;
        let t = trace_id(&win.trace_id);
        let wid = span_id(&win.span_id);
        let mut w = Window::default();
        let mut strings = WindowStrings::default();
        w.sequence = a_u64(a, keys::WINDOW_SEQUENCE).unwrap_or(0);
        w.from_unix_ns = a_u64(a, keys::WINDOW_START).unwrap_or(win.start_time_unix_nano);
        w.to_unix_ns = a_u64(a, keys::WINDOW_END)
            .unwrap_or(win.end_time_unix_nano)
            .max(w.from_unix_ns);
        w.threshold = Duration::from_nanos(ms_ns(a_f64(a, keys::THRESHOLD_MS).unwrap_or(0.0)));
        w.long_poll = Duration::from_nanos(ms_ns(a_f64(a, keys::LONG_POLL_MS).unwrap_or(0.0)));
        w.task_hooks = a_bool(a, keys::WINDOW_TASK_HOOKS).unwrap_or(true);
        w.schedule_delay = a_bool(a, keys::WINDOW_SCHEDULE_DELAY).unwrap_or(false);

        // Where a request whose span is not in the file sits: in the middle.
        let (from, to) = (w.from_unix_ns, w.to_unix_ns);
        let placed = |d: u64| {
            let d = d.min(to - from);
            let start = from + (to - from - d) / 2;
            (start, start + d)
        };
        // The slow requests: the window's parent, then its links.
        let parent = span_id(&win.parent_span_id);
        let dur = ms_ns(a_f64(a, keys::REQUEST_DURATION_MS).unwrap_or(0.0));
        let (start, end) = times(t, parent).unwrap_or_else(|| placed(dur));
        tables.next_request += 1;
        let primary = tables.next_request;
        let name = a_str(a, keys::REQUEST_NAME).unwrap_or("request");
        let mut r = SlowRequest::new(primary, name, t, parent, start, end);
        r.own_span = by_id
            .get(&(t, parent))
            .is_some_and(|s| a_str(&s.attributes, keys::REQUEST_SOURCE).is_some());
        w.requests.push(r);
        for link in &win.links {
            let la = &link.attributes;
            if a_str(la, keys::LINK_KIND).is_some_and(|k| k != "slow_request") {
                continue;
            }
            let (lt, ls) = (trace_id(&link.trace_id), span_id(&link.span_id));
            let d = ms_ns(a_f64(la, keys::REQUEST_DURATION_MS).unwrap_or(0.0));
            // The reference span in the other trace has the request's bounds.
            let bounds = children
                .get(&(lt, ls))
                .and_then(|c| c.iter().find(|s| s.name == keys::WINDOW_REF_SPAN))
                .map(|s| (s.start_time_unix_nano, s.end_time_unix_nano))
                .or_else(|| times(lt, ls))
                .unwrap_or_else(|| placed(d));
            tables.next_request += 1;
            let name = a_str(la, keys::REQUEST_NAME).unwrap_or("request");
            w.requests.push(SlowRequest::new(
                tables.next_request,
                name,
                lt,
                ls,
                bounds.0,
                bounds.1,
            ));
        }
        for r in &w.requests {
            strings.intern(tables, &r.name);
        }

        // Lanes: the worker spans first, then any lane a poll names.
        let mut lanes: BTreeMap<u32, Lane> = BTreeMap::new();
        let kids = children.get(&(t, wid)).map(Vec::as_slice).unwrap_or(&[]);
        for s in kids
            .iter()
            .filter(|s| attr(&s.attributes, keys::WORKER_LANE).is_some())
        {
            let sa = &s.attributes;
            let index = a_u64(sa, keys::WORKER_LANE).unwrap_or(0) as u32;
            let lane = lanes.entry(index).or_insert_with(|| new_lane(index, ""));
            lane.thread = a_str(sa, keys::THREAD_NAME)
                .map(str::to_owned)
                .unwrap_or_else(|| s.name.trim_start_matches("worker ").to_owned());
            lane.events_lost = a_u64(sa, keys::WORKER_EVENTS_LOST).unwrap_or(0);
            for e in &s.events {
                let kind = match e.name.as_str() {
                    "park" => EventKind::Park,
                    "unpark" => EventKind::Unpark,
                    _ => continue,
                };
                lane.events.push(Event::new(e.time_unix_nano, kind, 0, 0));
            }
        }
        // Where polls end, per lane: a cut poll starting at one of them began
        // before the window (or a lost event), not at a lost end.
        let lane_ends: std::collections::HashSet<(u32, u64)> = kids
            .iter()
            .filter_map(|task| children.get(&(t, span_id(&task.span_id))))
            .flatten()
            .filter(|p| p.name == keys::POLL_SPAN)
            .filter_map(|p| {
                let lane = a_u64(&p.attributes, keys::POLL_LANE)? as u32;
                Some((lane, p.end_time_unix_nano))
            })
            .collect();
        // Tasks and their polls.
        for task in kids
            .iter()
            .filter(|s| attr(&s.attributes, keys::TASK_ID).is_some())
        {
            let ta = &task.attributes;
            let id = a_u64(ta, keys::TASK_ID).unwrap_or(0);
            let loc = match (a_str(ta, keys::CODE_FILE), a_u64(ta, keys::CODE_LINE)) {
                (Some(file), Some(line)) => {
                    let col = a_u64(ta, keys::CODE_COLUMN).unwrap_or(0);
                    strings.intern(tables, &format!("{file}:{line}:{col}"))
                }
                _ => NO_STRING,
            };
            let in_request = a_bool(ta, keys::TASK_IN_REQUEST) == Some(true);
            let mut polls: Vec<&Span> = children
                .get(&(t, span_id(&task.span_id)))
                .map(|c| {
                    c.iter()
                        .filter(|s| s.name == keys::POLL_SPAN)
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            polls.sort_by_key(|p| p.start_time_unix_nano);
            let first_lane = polls
                .first()
                .and_then(|p| a_u64(&p.attributes, keys::POLL_LANE))
                .map(|l| l as u32)
                .or_else(|| lanes.keys().next().copied())
                .unwrap_or(0);
            for p in &polls {
                let pa = &p.attributes;
                let index = a_u64(pa, keys::POLL_LANE).map_or(first_lane, |l| l as u32);
                let thread = a_str(pa, keys::POLL_WORKER).unwrap_or("");
                let lane = lanes
                    .entry(index)
                    .or_insert_with(|| new_lane(index, thread));
                let delay = a_f64(pa, keys::POLL_SCHED_DELAY_MS)
                    .filter(|_| w.schedule_delay)
                    .map_or(0, |d| encode_delay(ms_ns(d)));
                let (start, end) = (p.start_time_unix_nano, p.end_time_unix_nano);
                // A poll cut by the window's edge has one end the window
                // made up: leave that event out, so the pairing rules cut it
                // again here and a neighbouring window's real end (or start)
                // takes its place when windows are merged.
                let (has_start, has_end) = if a_bool(pa, keys::POLL_COMPLETE) == Some(false) {
                    let cut_at_start =
                        end < to && (start <= from || lane_ends.contains(&(index, start)));
                    (!cut_at_start, end < to && cut_at_start)
                } else {
                    (true, true)
                };
                if has_start {
                    lane.events
                        .push(Event::new(start, EventKind::PollStart, id, delay));
                }
                if in_request {
                    if has_start {
                        lane.events
                            .push(Event::new(start, EventKind::RequestEnter, primary, 0));
                    }
                    if has_end {
                        lane.events
                            .push(Event::new(end, EventKind::RequestExit, primary, 0));
                    }
                }
                if has_end {
                    lane.events
                        .push(Event::new(end, EventKind::PollEnd, id, loc));
                }
            }
            let lane = lanes
                .entry(first_lane)
                .or_insert_with(|| new_lane(first_lane, ""));
            for e in &task.events {
                match e.name.as_str() {
                    "spawned" => lane.events.push(Event::new(
                        e.time_unix_nano,
                        EventKind::TaskSpawn,
                        id,
                        loc,
                    )),
                    "terminated" => lane.events.push(Event::new(
                        e.time_unix_nano,
                        EventKind::TaskTerminate,
                        id,
                        0,
                    )),
                    _ => {}
                }
            }
        }
        // The requests open and close on the first lane, when inside the window.
        if let Some(lane) = lanes.values_mut().next() {
            for r in &w.requests {
                if (from..=to).contains(&r.start_unix_ns) {
                    let name = strings.intern(tables, &r.name);
                    lane.events.push(Event::new(
                        r.start_unix_ns,
                        EventKind::RequestOpen,
                        r.request_id,
                        name,
                    ));
                }
                if (from..=to).contains(&r.end_unix_ns) {
                    lane.events.push(Event::new(
                        r.end_unix_ns,
                        EventKind::RequestClose,
                        r.request_id,
                        0,
                    ));
                }
            }
        }
        w.lanes = lanes
            .into_values()
            .map(|mut l| {
                // Stable: a poll's start, enter, exit and end keep their order.
                l.events.sort_by_key(|e| e.ts);
                l
            })
            .collect();
        w.strings = strings.strings;
        out.push(w);
    }
    out
}

fn new_lane(index: u32, thread: &str) -> Lane {
    let mut l = Lane::default();
    l.index = index;
    l.thread = thread.to_owned();
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_over_the_limit_is_skipped_with_its_line_and_offset() {
        // A valid first line, then one of 200 MiB, then a valid line: the
        // reader must stop holding at its limit, skip the rest of the long
        // line, and read the line after it.
        let long = std::io::repeat(b'x').take(200 << 20);
        let input = std::io::Cursor::new(&b"{}\n{\"resourceSpans\":"[..])
            .chain(long)
            .chain(&b"\n{}\n"[..]);
        let mut lines = Lines::new(std::io::BufReader::new(input));
        assert!(lines.next_request().expect("line 1").is_some());
        let (_, line, _) = lines
            .next_request()
            .expect("line 3")
            .expect("the line after the long one");
        assert_eq!(line, 3);
        assert!(lines.next_request().expect("end").is_none());
        let (n, e) = lines.skipped().expect("one skipped");
        assert_eq!((n, e.line, e.offset), (1, 2, 3));
        assert!(e.message.contains("64 MiB"), "{}", e.message);
        assert!(
            lines.buf.capacity() <= MAX_LINE_BYTES + (1 << 20),
            "the reader held {} bytes",
            lines.buf.capacity()
        );
    }

    #[test]
    fn objects_are_counted_outside_strings() {
        let line = br#"{"a":[{},{"k":"{{\"{"}],"b":"}{"}"#;
        assert_eq!(objects(line, 100), 3);
        assert_eq!(objects(line, 1), 2, "stops one past the limit");
    }

    #[test]
    fn a_line_of_too_many_objects_is_skipped_unparsed() {
        // Empty spans: the line is well under the byte limit, and each
        // `{},` would have been a 264-byte `Span`.
        let mut text = b"{}\n{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[".to_vec();
        text.extend(b"{},".repeat(MAX_LINE_OBJECTS));
        text.extend(b"{}]}]}]}\n{}\n");
        assert!(text.len() < MAX_LINE_BYTES);
        let mut lines = Lines::new(&text[..]);
        let mut good = Vec::new();
        while let Some((_, line, _)) = lines.next_request().expect("read") {
            good.push(line);
        }
        assert_eq!(good, [1, 3]);
        let (n, e) = lines.skipped().expect("the line of empty spans");
        assert_eq!((n, e.line, e.offset), (1, 2, 3));
        assert!(e.message.contains("JSON objects"), "{}", e.message);
    }

    #[test]
    fn a_line_at_the_object_limit_is_read() {
        let mut text = b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[".to_vec();
        text.extend(b"{},".repeat(MAX_LINE_OBJECTS - 4));
        text.extend(b"{}]}]}]}\n");
        let mut lines = Lines::new(&text[..]);
        let (req, _, _) = lines.next_request().expect("read").expect("a request");
        assert_eq!(spans(&req).count(), MAX_LINE_OBJECTS - 3);
    }

    #[test]
    fn a_torn_line_costs_that_line_only() {
        // What a full disk left before the writer cut partial lines off:
        // a line without its end, the next line glued to it.
        let text = b"{}\n{\"resourceSpans\":[{\"reso{\"resourceSpans\":[]}\n{}\n";
        let mut lines = Lines::new(&text[..]);
        let mut good = Vec::new();
        while let Some((_, line, _)) = lines.next_request().expect("read") {
            good.push(line);
        }
        assert_eq!(good, [1, 3]);
        let (n, e) = lines.skipped().expect("the torn line");
        assert_eq!((n, e.line, e.offset), (1, 2, 3));
    }

    #[test]
    fn a_file_with_no_good_line_is_refused() {
        let mut lines = Lines::new(&b"not json\n{\"resourceSpans\":\n"[..]);
        match lines.next_request() {
            Err(ReadFailure::Line(e)) => assert_eq!((e.line, e.offset), (1, 0)),
            other => panic!("expected the first bad line, got {other:?}"),
        }
    }

    #[test]
    fn a_line_just_under_the_limit_is_read() {
        let mut text = b"{\"resourceSpans\":[]".to_vec();
        text.resize(MAX_LINE_BYTES - 2, b' ');
        text.extend_from_slice(b"}\n");
        assert_eq!(text.len(), MAX_LINE_BYTES);
        let mut lines = Lines::new(std::io::BufReader::new(&text[..]));
        assert!(lines.next_request().expect("at the limit").is_some());
    }
}
