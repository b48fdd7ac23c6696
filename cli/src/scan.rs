//! Streaming a dump or capture file, lane by lane, as polls, spawns, parks
//! and request intervals, with memory bounded by one record and the state
//! of one lane.
//!
//! [`Window::tasks`](tokio_blackbox::Window::tasks) and friends need the whole
//! window in memory; a dump of a busy service can be gigabytes, so every
//! subcommand reads through [`scan`] instead. It pairs events exactly as
//! `Window::tasks` does: a poll start with no end is cut at the next start or
//! at the window's end, a poll end with no start begins at the window's start.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_blackbox::dump::{DumpReader, FileKind, Header, Record};
use tokio_blackbox::event::{NO_STRING, decode_delay};
use tokio_blackbox::{DumpError, EventKind, SlowRequest, Window};

use crate::otlp_json::{self, Lines, ReadFailure};

/// Inputs larger than this get a progress bar when stderr is a terminal.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// Everything a file says before its lanes: header, bounds, strings, requests.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) header: Header,
    pub(crate) sequence: u64,
    pub(crate) from_ns: u64,
    /// The start of the whole file, when `from_ns` is that of a range.
    pub(crate) file_from_ns: u64,
    pub(crate) to_ns: u64,
    pub(crate) threshold: Duration,
    pub(crate) long_poll: Duration,
    pub(crate) strings: Vec<String>,
    pub(crate) requests: Vec<SlowRequest>,
    /// For an OTLP JSON file, the number of windows in it (`None` for a
    /// binary file). Its header is made up: a capture, format 1.0, with
    /// the flags of its windows.
    pub(crate) json_windows: Option<u64>,
    /// For an OTLP JSON file, the largest lane index of its windows.
    json_max_lane: u32,
}

impl Meta {
    /// The string at `index`, if any.
    pub(crate) fn string(&self, index: u16) -> Option<&str> {
        if index == NO_STRING {
            return None;
        }
        self.strings.get(usize::from(index)).map(String::as_str)
    }

    /// The long-poll limit in nanoseconds (never zero, so "long" means something).
    pub(crate) fn long_poll_ns(&self) -> u64 {
        (self.long_poll.as_nanos() as u64).max(1)
    }
}

/// A lane as it starts.
#[derive(Debug, Clone)]
pub(crate) struct LaneInfo {
    pub(crate) index: u32,
    pub(crate) thread: String,
    pub(crate) events_lost: u64,
}

impl LaneInfo {
    /// Whether the lane belongs to a Tokio worker thread.
    pub(crate) fn is_worker(&self) -> bool {
        self.thread.contains("worker")
    }
}

/// One poll of a task on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollItem {
    pub(crate) lane: u32,
    pub(crate) task: u64,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// The scheduling delay before the poll, when the file records them.
    pub(crate) delay_ns: Option<u64>,
    /// The spawn location's string index ([`NO_STRING`] when unknown).
    pub(crate) location: u16,
    /// `false` when the poll was cut by the window's edge or a lost event.
    pub(crate) complete: bool,
}

impl PollItem {
    pub(crate) fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// What a subcommand does with the items of a file. Every method has an
/// empty default, so each visitor implements only what it draws.
pub(crate) trait Visitor {
    /// Called once, before the first lane (or at the end for a file without lanes).
    fn begin(&mut self, _meta: &Meta) {}
    /// A lane starts.
    fn lane(&mut self, _lane: &LaneInfo) {}
    /// An event of the lane, before it is paired (counting, ranges).
    fn event(&mut self, _lane: u32, _kind: EventKind, _ts: u64) {}
    /// A poll ended (or was cut).
    fn poll(&mut self, _poll: &PollItem) {}
    /// A task was spawned on `lane` (`location` is a string index, or `NO_STRING`).
    fn spawn(&mut self, _lane: u32, _task: u64, _location: u16, _ts: u64) {}
    /// A task terminated.
    fn terminate(&mut self, _lane: u32, _task: u64, _ts: u64) {}
    /// The lane's thread parked (`true`) or unparked (`false`).
    fn park(&mut self, _lane: u32, _ts: u64, _parked: bool) {}
    /// A request span opened.
    fn request_open(&mut self, _request: u64, _name: u16, _ts: u64) {}
    /// A request span closed.
    fn request_close(&mut self, _request: u64, _ts: u64) {}
    /// A request span was entered on `lane` over `[start, end]`.
    fn entered(&mut self, _lane: u32, _request: u64, _start_ns: u64, _end_ns: u64) {}
    /// `task` worked for `request`: it entered the request's span, or was spawned inside it.
    fn task_request(&mut self, _task: u64, _request: u64) {}
    /// The lane ended.
    fn lane_end(&mut self, _lane: u32) {}
}

/// The pairing state of the lane being read.
#[derive(Debug, Default)]
struct LaneState {
    index: u32,
    /// The poll in progress: task, start, delay.
    open: Option<(u64, u64, Option<u64>)>,
    /// Requests entered and not yet exited, innermost last, with enter time.
    entered: Vec<(u64, u64)>,
}

/// A reader over a file, and its progress bar when one is shown.
pub(crate) type Opened = (DumpReader<Box<dyn Read>>, Option<ProgressBar>);

/// Opens `path` for reading, with a progress bar on a terminal for large files.
pub(crate) fn open(path: &Path) -> Result<Opened, DumpError> {
    let (input, bar) = open_input(path)?;
    let input: Box<dyn Read> = Box::new(input);
    Ok((DumpReader::new(input)?, bar))
}

/// Whether `path` holds OTLP JSON (its first non-blank byte is `{`) rather
/// than a binary dump or capture (`BBXDUMP\0`).
pub(crate) fn is_json(path: &Path) -> Result<bool, DumpError> {
    let mut head = [0u8; 64];
    let mut file = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(otlp_json::looks_like_json(&head[..n]))
}

/// A buffered input over `path`, with a progress bar on a terminal for large files.
pub(crate) fn open_input(
    path: &Path,
) -> Result<(Box<dyn BufRead>, Option<ProgressBar>), DumpError> {
    let file = File::open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (input, bar): (Box<dyn BufRead>, _) =
        if size > PROGRESS_MIN_BYTES && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{wide_msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            bar.set_message(name.unwrap_or_else(|| path.display().to_string()));
            (
                Box::new(BufReader::with_capacity(
                    1 << 20,
                    bar.wrap_read(BufReader::with_capacity(1 << 20, file)),
                )),
                Some(bar),
            )
        } else {
            (Box::new(BufReader::with_capacity(1 << 20, file)), None)
        };
    Ok((input, bar))
}

/// Reads `path` through `visitor`; returns what the file said before its lanes.
///
/// # Errors
///
/// A [`ReadError`], with the byte offset, for bad input.
pub(crate) fn scan(path: &Path, visitor: &mut dyn Visitor) -> Result<Meta, ReadError> {
    if is_json(path)? {
        return scan_json(path, visitor);
    }
    let (mut reader, bar) = open(path)?;
    let result = scan_reader(&mut reader, visitor);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// Reads only the part of `path` before its first lane.
pub(crate) fn read_meta(path: &Path) -> Result<Meta, ReadError> {
    if is_json(path)? {
        return json_meta(path);
    }
    let (mut reader, _) = open(path)?;
    let mut meta = empty_meta(*reader.header());
    while let Some(record) = reader.next_record()? {
        if !apply_meta(&mut meta, &record) {
            break;
        }
    }
    Ok(meta)
}

fn empty_meta(header: Header) -> Meta {
    Meta {
        header,
        sequence: 0,
        from_ns: 0,
        file_from_ns: 0,
        to_ns: 0,
        threshold: Duration::ZERO,
        long_poll: Duration::ZERO,
        strings: Vec::new(),
        requests: Vec::new(),
        json_windows: None,
        json_max_lane: 0,
    }
}

/// Folds a header-part record into `meta`; `false` for a lane or events record.
fn apply_meta(meta: &mut Meta, record: &Record) -> bool {
    match record {
        Record::Meta {
            sequence,
            from_unix_ns,
            to_unix_ns,
            threshold,
            long_poll,
        } => {
            meta.sequence = *sequence;
            meta.from_ns = *from_unix_ns;
            meta.file_from_ns = *from_unix_ns;
            meta.to_ns = *to_unix_ns;
            meta.threshold = *threshold;
            meta.long_poll = *long_poll;
        }
        Record::Strings(s) => meta.strings.extend(s.iter().cloned()),
        Record::Request(r) => meta.requests.push(r.clone()),
        _ => return false,
    }
    true
}

/// [`scan`] over any reader.
pub(crate) fn scan_reader<R: Read>(
    reader: &mut DumpReader<R>,
    v: &mut dyn Visitor,
) -> Result<Meta, ReadError> {
    let mut meta = empty_meta(*reader.header());
    let mut begun = false;
    let mut lane: Option<LaneState> = None;
    loop {
        let at = reader.offset();
        let Some(record) = reader.next_record()? else {
            break;
        };
        if apply_meta(&mut meta, &record) {
            continue;
        }
        if !begun {
            v.begin(&meta);
            begun = true;
        }
        match record {
            Record::Lane {
                index,
                thread,
                events_lost,
            } => {
                if let Some(done) = lane.take() {
                    finish_lane(done, &meta, v);
                }
                v.lane(&LaneInfo {
                    index,
                    thread,
                    events_lost,
                });
                lane = Some(LaneState {
                    index,
                    ..LaneState::default()
                });
            }
            Record::Events {
                lane: index,
                events,
            } => {
                let Some(state) = lane.as_mut().filter(|l| l.index == index) else {
                    return Err(ReadError::UndeclaredLane {
                        offset: at,
                        lane: index,
                    });
                };
                for e in &events {
                    if let Some(kind) = e.kind() {
                        v.event(index, kind, e.ts);
                        step(state, &meta, v, kind, e.subject(), e.arg(), e.ts);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(done) = lane.take() {
        finish_lane(done, &meta, v);
    }
    if !begun {
        v.begin(&meta);
    }
    Ok(meta)
}

/// Why a file could not be read: the reader's error, or one the stream
/// finds itself (the same wording as [`DumpReader::read_all`]).
#[derive(Debug)]
pub(crate) enum ReadError {
    Dump(DumpError),
    UndeclaredLane {
        offset: u64,
        lane: u32,
    },
    /// A line of an OTLP JSON file that does not parse.
    Json(otlp_json::LineError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Dump(e) => e.fmt(f),
            ReadError::UndeclaredLane { offset, lane } => write!(
                f,
                "corrupt file at byte {offset}: events for lane {lane}, which has no LANE record before them"
            ),
            ReadError::Json(e) => write!(
                f,
                "line {} (byte {}): not an OTLP JSON ExportTraceServiceRequest: {}",
                e.line, e.offset, e.message
            ),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<DumpError> for ReadError {
    fn from(e: DumpError) -> ReadError {
        ReadError::Dump(e)
    }
}

impl From<ReadFailure> for ReadError {
    fn from(e: ReadFailure) -> ReadError {
        match e {
            ReadFailure::Io(e) => ReadError::Dump(e.into()),
            ReadFailure::Line(e) => ReadError::Json(e),
        }
    }
}

/// A header for an OTLP JSON file: a capture of format 1.0. `Header` has no
/// public constructor, so it is read from an empty capture made in memory.
fn json_header() -> Header {
    let mut bytes = Vec::new();
    let header =
        tokio_blackbox::dump::write_window(&mut bytes, &Window::default(), FileKind::Capture)
            .ok()
            .and_then(|()| DumpReader::new(&bytes[..]).ok())
            .map(|r| *r.header());
    let mut h = header.expect("an empty capture reads back");
    h.task_hooks = false;
    h.schedule_delay = false;
    h.created_unix_ns = 0;
    h.pid = 0;
    h
}

/// Every window of an OTLP JSON file, one at a time (see [`otlp_json`]).
fn json_windows(
    path: &Path,
    mut each: impl FnMut(Window, Option<u32>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let (input, bar) = open_input(path)?;
    let mut lines = Lines::new(input);
    let mut tables = otlp_json::Tables::default();
    let mut known = otlp_json::KnownSpans::new();
    let result = (|| {
        while let Some((req, _, _)) = lines.next_request()? {
            otlp_json::remember_roots(&req, &mut known);
            let pid = otlp_json::pid(&req);
            for w in otlp_json::windows_of_line(&req, &mut tables, &known) {
                each(w, pid)?;
            }
        }
        Ok(())
    })();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// The first pass over an OTLP JSON file: bounds, requests and strings.
fn json_meta(path: &Path) -> Result<Meta, ReadError> {
    let mut meta = empty_meta(json_header());
    let mut n = 0u64;
    let mut strings = Vec::new();
    json_windows(path, |w, pid| {
        if n == 0 {
            meta.sequence = w.sequence;
            meta.from_ns = w.from_unix_ns;
            meta.to_ns = w.to_unix_ns;
            meta.threshold = w.threshold;
            meta.long_poll = w.long_poll;
            meta.header.created_unix_ns = w.to_unix_ns;
        }
        n += 1;
        meta.from_ns = meta.from_ns.min(w.from_unix_ns);
        meta.to_ns = meta.to_ns.max(w.to_unix_ns);
        meta.header.task_hooks |= w.task_hooks;
        meta.header.schedule_delay |= w.schedule_delay;
        if let Some(pid) = pid {
            meta.header.pid = pid;
        }
        meta.requests.extend(w.requests);
        strings = w.strings;
        if let Some(max) = w.lanes.iter().map(|l| l.index).max() {
            meta.json_max_lane = meta.json_max_lane.max(max);
        }
        Ok(())
    })?;
    meta.file_from_ns = meta.from_ns;
    meta.strings = strings;
    meta.json_windows = Some(n);
    Ok(meta)
}

/// [`scan`] for an OTLP JSON file: a first pass for the metadata, then
/// each window's lanes. Visitors see each lane once, so a thread seen in an
/// earlier window gets a fresh lane index past the file's largest and its
/// name says which window it is (`tokio-runtime-worker (window 2)`).
fn scan_json(path: &Path, v: &mut dyn Visitor) -> Result<Meta, ReadError> {
    let meta = json_meta(path)?;
    v.begin(&meta);
    let mut used = std::collections::HashSet::new();
    let mut next_free = meta.json_max_lane.saturating_add(1);
    let mut window = 0u64;
    json_windows(path, |w, _| {
        window += 1;
        for lane in w.lanes {
            let (mut index, mut thread) = (lane.index, lane.thread);
            if !used.insert(index) {
                index = next_free;
                next_free = next_free.saturating_add(1);
                thread = format!("{thread} (window {window})");
            }
            v.lane(&LaneInfo {
                index,
                thread,
                events_lost: lane.events_lost,
            });
            let mut state = LaneState {
                index,
                ..LaneState::default()
            };
            for e in &lane.events {
                if let Some(kind) = e.kind() {
                    v.event(index, kind, e.ts);
                    step(&mut state, &meta, v, kind, e.subject(), e.arg(), e.ts);
                }
            }
            finish_lane(state, &meta, v);
        }
        Ok(())
    })?;
    Ok(meta)
}

fn step(
    s: &mut LaneState,
    meta: &Meta,
    v: &mut dyn Visitor,
    kind: EventKind,
    subject: u64,
    arg: u16,
    ts: u64,
) {
    let lane = s.index;
    match kind {
        EventKind::TaskSpawn => {
            v.spawn(lane, subject, arg, ts);
            if let Some(&(r, _)) = s.entered.last() {
                v.task_request(subject, r);
            }
        }
        EventKind::PollStart => {
            if let Some((task, start, delay)) = s.open.take() {
                v.poll(&PollItem {
                    lane,
                    task,
                    start_ns: start,
                    end_ns: ts.max(start),
                    delay_ns: delay,
                    location: NO_STRING,
                    complete: false,
                });
            }
            let delay = meta.header.schedule_delay.then(|| decode_delay(arg));
            s.open = Some((subject, ts, delay));
        }
        EventKind::PollEnd => {
            let (start, delay, complete) = match s.open.take() {
                Some((task, start, delay)) if task == subject => (start, delay, true),
                _ => (meta.from_ns.min(ts), None, false),
            };
            v.poll(&PollItem {
                lane,
                task: subject,
                start_ns: start,
                end_ns: ts.max(start),
                delay_ns: delay,
                location: arg,
                complete,
            });
        }
        EventKind::TaskTerminate => v.terminate(lane, subject, ts),
        EventKind::Park => v.park(lane, ts, true),
        EventKind::Unpark => v.park(lane, ts, false),
        EventKind::RequestOpen => v.request_open(subject, arg, ts),
        EventKind::RequestClose => v.request_close(subject, ts),
        EventKind::RequestEnter => {
            s.entered.push((subject, ts));
            if let Some((task, _, _)) = s.open {
                v.task_request(task, subject);
            }
        }
        EventKind::RequestExit => {
            let start = match s.entered.iter().rposition(|&(r, _)| r == subject) {
                Some(pos) => s.entered.remove(pos).1,
                None => meta.from_ns.min(ts),
            };
            v.entered(lane, subject, start, ts.max(start));
        }
        _ => {}
    }
}

fn finish_lane(s: LaneState, meta: &Meta, v: &mut dyn Visitor) {
    if let Some((task, start, delay)) = s.open {
        v.poll(&PollItem {
            lane: s.index,
            task,
            start_ns: start,
            end_ns: meta.to_ns.max(start),
            delay_ns: delay,
            location: NO_STRING,
            complete: false,
        });
    }
    v.lane_end(s.index);
}

/// A hasher for ids that are already well spread (task and request ids):
/// one multiply, as in rustc's `FxHasher`. A dump holds tens of millions of
/// events, each a map lookup, and SipHash would take a third of the time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map keyed by task or request id.
pub(crate) type IdMap<V> =
    std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;
