//! Reading a file for the subcommands: a dump or capture streams through
//! the library's analyzer ([`analysis::scan_dump`], memory bounded by one
//! record and one lane's pairing state); the recorder's OTLP JSON file is
//! read into one timeline per thread. No pairing happens here: polls,
//! request intervals and task–request links are the analyzer's
//! ([`tokio_blackbox::analysis`] documents its rules).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_blackbox::analysis::{self, Bounds, LaneScan};
use tokio_blackbox::dump::{DumpReader, FileKind, Header, Part};
use tokio_blackbox::event::NO_STRING;
use tokio_blackbox::{DumpError, Event, Lane, Poll, SlowRequest, Window};

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
    /// A lane's index, thread and losses (not its events).
    pub(crate) fn of(lane: &Lane) -> LaneInfo {
        LaneInfo {
            index: lane.index,
            thread: lane.thread.clone(),
            events_lost: lane.events_lost,
        }
    }

    /// Whether the lane belongs to a Tokio worker thread.
    pub(crate) fn is_worker(&self) -> bool {
        self.thread.contains("worker")
    }
}

/// What a subcommand does with a file: the analyzer's items (it implements
/// [`analysis::Visitor`]; its `begin` is not used), and first what the file
/// says before its lanes.
pub(crate) trait View: analysis::Visitor {
    /// Called once, before the first lane (or at the end for a file without lanes).
    fn meta(&mut self, _meta: &Meta) {}
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

/// Reads `path` through `view`; returns what the file said before its lanes.
///
/// A binary file streams through [`analysis::scan_dump`]; an OTLP JSON file
/// is read into one timeline per thread (see [`scan_json`]).
///
/// # Errors
///
/// A [`ReadError`], with the byte offset, for bad input.
pub(crate) fn scan(path: &Path, view: &mut dyn View) -> Result<Meta, ReadError> {
    if is_json(path)? {
        return scan_json(path, view);
    }
    let meta = read_meta(path)?;
    view.meta(&meta);
    let (mut reader, bar) = open(path)?;
    let result = analysis::scan_dump(&mut reader, view);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    Ok(meta)
}

/// Reads only the part of `path` before its first lane.
pub(crate) fn read_meta(path: &Path) -> Result<Meta, ReadError> {
    if is_json(path)? {
        return json_meta(path);
    }
    let (mut reader, _) = open(path)?;
    let header = *reader.header();
    let mut meta = None;
    /// Stops the stream at the first lane.
    enum Stop {
        Dump(DumpError),
        Begun,
    }
    impl From<DumpError> for Stop {
        fn from(e: DumpError) -> Stop {
            Stop::Dump(e)
        }
    }
    let result = reader.stream(|part| match part {
        Part::Begin(w) => {
            meta = Some(meta_of(header, w));
            Err(Stop::Begun)
        }
        _ => Ok(()),
    });
    match result {
        Ok(w) => Ok(meta_of(header, &w)),
        Err(Stop::Begun) => Ok(meta.unwrap_or_else(|| empty_meta(header))),
        Err(Stop::Dump(e)) => Err(e.into()),
    }
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
    }
}

/// The metadata of a binary file: its header and the part before its lanes.
fn meta_of(header: Header, w: &Window) -> Meta {
    Meta {
        header,
        sequence: w.sequence,
        from_ns: w.from_unix_ns,
        file_from_ns: w.from_unix_ns,
        to_ns: w.to_unix_ns,
        threshold: w.threshold,
        long_poll: w.long_poll,
        strings: w.strings.clone(),
        requests: w.requests.clone(),
        json_windows: None,
    }
}

/// Why a file could not be read: the reader's error, or one the stream
/// finds itself.
#[derive(Debug)]
pub(crate) enum ReadError {
    Dump(DumpError),
    /// A line of an OTLP JSON file that does not parse.
    Json(otlp_json::LineError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Dump(e) => e.fmt(f),
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

/// Every window of an OTLP JSON file, one at a time (see [`otlp_json`]),
/// each with a string table of its own; returns the file's string table.
/// Bad lines are skipped; the first pass (`report`) says so on stderr.
fn json_windows(
    path: &Path,
    report: bool,
    mut each: impl FnMut(Window, Option<u32>) -> Result<(), ReadError>,
) -> Result<Vec<String>, ReadError> {
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
    if report && result.is_ok() {
        otlp_json::report_skipped(path, &lines);
    }
    result.map(|()| tables.strings)
}

/// The first pass over an OTLP JSON file: bounds, requests and strings.
fn json_meta(path: &Path) -> Result<Meta, ReadError> {
    let mut meta = empty_meta(json_header());
    let mut n = 0u64;
    let strings = json_windows(path, true, |w, pid| {
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
        Ok(())
    })?;
    meta.file_from_ns = meta.from_ns;
    meta.strings = strings;
    meta.json_windows = Some(n);
    Ok(meta)
}

/// The windows of one process, overlapping ones merged with
/// [`Window::merge`]: time-ordered timelines with gaps between them.
#[derive(Debug, Default)]
struct Process {
    pid: Option<u32>,
    timelines: Vec<Window>,
}

/// [`scan`] for an OTLP JSON file. The recorder writes a window per
/// trigger, and windows overlap; those of one process that overlap are
/// merged into one timeline ([`crate::merge`]: one lane per thread, each
/// event once). Visitors then see each thread once, as one lane whose
/// items run through every timeline of the process in time order; the
/// pairing rules apply per timeline, so no poll is paired across a gap.
/// A second process's threads get lane indexes past the first's, their
/// names saying whose they are (`tokio-runtime-worker (pid 42)`).
fn scan_json(path: &Path, v: &mut dyn View) -> Result<Meta, ReadError> {
    let meta = json_meta(path)?;
    v.meta(&meta);
    let processes = json_processes(path)?;
    // A timeline's strings are those of its windows: its events' indexes
    // are put into the file's table, the one the views read.
    let file_index: std::collections::HashMap<&str, u16> = meta
        .strings
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i as u16))
        .collect();
    let mut base = 0u32;
    for (n, process) in processes.iter().enumerate() {
        let mut lanes: Vec<(u32, &str, u64)> = Vec::new();
        for t in &process.timelines {
            for l in &t.lanes {
                match lanes.iter_mut().find(|(i, _, _)| *i == l.index) {
                    Some(seen) => seen.2 = seen.2.saturating_add(l.events_lost),
                    None => lanes.push((l.index, &l.thread, l.events_lost)),
                }
            }
        }
        lanes.sort_by_key(|&(i, _, _)| i);
        for &(index, thread, events_lost) in &lanes {
            let shown = base.saturating_add(index);
            let thread = match (n, process.pid) {
                (0, _) => thread.to_owned(),
                (_, Some(pid)) => format!("{thread} (pid {pid})"),
                (_, None) => format!("{thread} (process {})", n + 1),
            };
            let mut head = Lane::default();
            (head.index, head.thread, head.events_lost) = (shown, thread, events_lost);
            v.lane(&head);
            for t in &process.timelines {
                let Some(lane) = t.lanes.iter().find(|l| l.index == index) else {
                    continue;
                };
                let to_file: Vec<u16> = t
                    .strings
                    .iter()
                    .map(|s| file_index.get(s.as_str()).copied().unwrap_or(NO_STRING))
                    .collect();
                let mut scan = LaneScan::new(shown, &Bounds::of(t));
                for e in &lane.events {
                    scan.step(&in_file_table(e, &to_file), v);
                }
                scan.finish(&mut Held(&mut *v));
            }
            v.lane_end(shown);
        }
        if let Some(max) = lanes.last().map(|&(i, _, _)| i) {
            base = base.saturating_add(max).saturating_add(1);
        }
    }
    Ok(meta)
}

/// `e` with its string argument, an index in its timeline's table, put
/// into the file's (`to_file`, by the timeline's index).
fn in_file_table(e: &Event, to_file: &[u16]) -> Event {
    match e.kind() {
        Some(kind) if kind.has_string_arg() && e.arg() != NO_STRING => Event::new(
            e.ts,
            kind,
            e.subject(),
            to_file
                .get(usize::from(e.arg()))
                .copied()
                .unwrap_or(NO_STRING),
        ),
        _ => *e,
    }
}

/// The windows of an OTLP JSON file as timelines, by process (see
/// [`scan_json`]), the events of each instant in order.
fn json_processes(path: &Path) -> Result<Vec<Process>, ReadError> {
    let mut processes: Vec<Process> = Vec::new();
    json_windows(path, false, |w, pid| {
        let i = match processes.iter().position(|p| p.pid == pid) {
            Some(i) => i,
            None => {
                processes.push(Process {
                    pid,
                    timelines: Vec::new(),
                });
                processes.len() - 1
            }
        };
        crate::merge::fold(&mut processes[i].timelines, w);
        Ok(())
    })?;
    for lane in processes
        .iter_mut()
        .flat_map(|p| p.timelines.iter_mut())
        .flat_map(|t| t.lanes.iter_mut())
    {
        crate::merge::order_instants(&mut lane.events);
    }
    Ok(processes)
}

/// The timelines of an OTLP JSON file, every process's, in file order.
pub(crate) fn json_timelines(path: &Path) -> Result<Vec<Window>, ReadError> {
    Ok(json_processes(path)?
        .into_iter()
        .flat_map(|p| p.timelines)
        .collect())
}

/// Passes every item on but a timeline's `lane_end`: a thread's lane ends
/// once, after its last timeline.
struct Held<'a>(&'a mut dyn View);

impl analysis::Visitor for Held<'_> {
    fn poll(&mut self, p: &Poll) {
        self.0.poll(p);
    }
    fn entered(&mut self, lane: u32, request: u64, start_ns: u64, end_ns: u64) {
        self.0.entered(lane, request, start_ns, end_ns);
    }
}

/// Cuts `windows` (bounds, requests and settings set, no lanes) out of
/// the binary file at `path` in one streaming pass: each gets the events of
/// every lane inside its bounds. Memory is the windows' events.
/// `file_from_ns` is the file's start: events lost to overwrite were a
/// lane's oldest, so they count for a window reaching back to it.
pub(crate) fn cut_windows(
    path: &Path,
    file_from_ns: u64,
    windows: &mut [Window],
) -> Result<(), ReadError> {
    if windows.is_empty() {
        return Ok(());
    }
    let (mut reader, bar) = open(path)?;
    let result = reader.stream(|part| {
        match part {
            Part::Lane {
                index,
                thread,
                events_lost,
            } => {
                for w in windows.iter_mut() {
                    let mut lane = Lane::default();
                    lane.index = index;
                    lane.thread = thread.to_owned();
                    if w.from_unix_ns <= file_from_ns {
                        lane.events_lost = events_lost;
                    }
                    w.lanes.push(lane);
                }
            }
            Part::Events { events, .. } => {
                for w in windows.iter_mut() {
                    let (from, to) = (w.from_unix_ns, w.to_unix_ns);
                    if let Some(l) = w.lanes.last_mut() {
                        l.events
                            .extend(events.iter().filter(|e| e.ts >= from && e.ts <= to));
                    }
                }
            }
            _ => {}
        }
        Ok::<(), ReadError>(())
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    for w in windows.iter_mut() {
        w.lanes
            .retain(|l| !l.events.is_empty() || l.events_lost > 0);
    }
    Ok(())
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

/// A set of task or request ids.
pub(crate) type IdSet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>;

/// An empty window of the file around request `r`, over `[from_ns, to_ns]`,
/// with the file's strings and settings: for [`cut_windows`] to fill.
pub(crate) fn request_window(
    meta: &Meta,
    r: &SlowRequest,
    sequence: u64,
    from_ns: u64,
    to_ns: u64,
) -> Window {
    let mut w = Window::default();
    w.sequence = sequence;
    w.from_unix_ns = from_ns;
    w.to_unix_ns = to_ns;
    w.requests = vec![r.clone()];
    w.strings = meta.strings.clone();
    w.threshold = meta.threshold;
    w.long_poll = meta.long_poll;
    w.schedule_delay = meta.header.schedule_delay;
    w.task_hooks = meta.header.task_hooks;
    w
}
