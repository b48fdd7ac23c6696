//! The window: the events of every lane between two moments, cut when a slow
//! request triggers, and what they say about tasks, polls and workers.
//!
//! [`Window`] is the typed value handed to a sink: the slow requests it
//! covers, each lane's events in UNIX nanoseconds, the string table, and what
//! was lost. The [`analysis`](crate::analysis) module turns the raw events
//! into the activity a person looks at ([`Window::tasks`],
//! [`Window::workers`], [`Window::request_spans`]).

use crate::capture::SegmentLane;
use crate::clock::TimeAnchor;
use crate::event::{Event, NO_STRING};
use opentelemetry::trace::{SpanId, TraceId};
use std::time::Duration;

/// A request span that ran longer than the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlowRequest {
    /// The recorder's id of the request (the subject of its request events).
    pub request_id: u64,
    /// The span's name.
    pub name: String,
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The request span's id.
    pub span_id: SpanId,
    /// `true` when the ids were made by the recorder (no OpenTelemetry context
    /// was found): the request span itself must then be exported too.
    pub own_span: bool,
    /// An error event was recorded inside the request.
    pub error: bool,
    /// When the span was created, UNIX nanoseconds.
    pub start_unix_ns: u64,
    /// When the span closed, UNIX nanoseconds; for a request still open
    /// (`open`), when it was captured.
    pub end_unix_ns: u64,
    /// `true` when the request was still open when captured: it had been
    /// open longer than the stuck limit (`BLACKBOX_STUCK_AFTER`).
    pub open: bool,
}

impl SlowRequest {
    /// A slow request whose ids came from OpenTelemetry (`own_span` and
    /// `error` are `false`; both fields are public to change). For readers
    /// that rebuild a [`Window`] from somewhere else than the recorder, such
    /// as the `blackbox` command reading OTLP JSON capture files.
    ///
    /// # Examples
    ///
    /// ```
    /// use opentelemetry::trace::{SpanId, TraceId};
    /// use tokio_blackbox::SlowRequest;
    /// let r = SlowRequest::new(1, "GET /", TraceId::from(7u128), SpanId::from(8u64), 1_000, 3_000);
    /// assert_eq!(r.duration().as_nanos(), 2_000);
    /// assert!(!r.own_span);
    /// ```
    pub fn new(
        request_id: u64,
        name: impl Into<String>,
        trace_id: TraceId,
        span_id: SpanId,
        start_unix_ns: u64,
        end_unix_ns: u64,
    ) -> SlowRequest {
        SlowRequest {
            request_id,
            name: name.into(),
            trace_id,
            span_id,
            own_span: false,
            error: false,
            start_unix_ns,
            end_unix_ns,
            open: false,
        }
    }

    /// How long the request took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_ns.saturating_sub(self.start_unix_ns))
    }
}

/// The events one thread recorded inside a window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Lane {
    /// The lane's index: stable for the life of the recorder.
    pub index: u32,
    /// The name of the thread that wrote it (`tokio-runtime-worker` for workers).
    pub thread: String,
    /// Events in time order; timestamps are UNIX nanoseconds.
    pub events: Vec<Event>,
    /// Events of this window that were overwritten before the cut (an
    /// estimate from the lane's event rate, since their timestamps are gone).
    pub events_lost: u64,
}

/// The runtime activity around one or more slow requests.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::Window;
/// let w = Window::default();
/// assert!(w.tasks().is_empty());
/// assert_eq!(w.events(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Window {
    /// Sequence number of this capture in the process.
    pub sequence: u64,
    /// Window start, UNIX nanoseconds.
    pub from_unix_ns: u64,
    /// Window end, UNIX nanoseconds.
    pub to_unix_ns: u64,
    /// The slow requests this capture covers; the first triggered it. At
    /// most 64; the others are counted in `requests_omitted`.
    pub requests: Vec<SlowRequest>,
    /// Slow requests this capture also covered but does not carry (past 64).
    pub requests_omitted: u64,
    /// Each thread's events.
    pub lanes: Vec<Lane>,
    /// The string table that events' string arguments index into.
    pub strings: Vec<String>,
    /// The latency threshold in force.
    pub threshold: Duration,
    /// Polls longer than this are flagged as long (likely blocking).
    pub long_poll: Duration,
    /// Whether scheduling delays were recorded.
    pub schedule_delay: bool,
    /// Whether Tokio's task hooks were available (`--cfg tokio_unstable`).
    pub task_hooks: bool,
}

impl Window {
    /// Folds `other`, a window of the same process that overlaps this one
    /// in time, into this one: one lane per thread (by lane index), each
    /// event once, the union of bounds and requests. Strings are matched by
    /// content, so the two string tables may differ.
    ///
    /// Returns `false`, changing nothing, when the windows neither overlap
    /// nor touch: a timeline with a gap would pair a poll across it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::{Event, EventKind, Lane, Window};
    /// let window = |from, to, events: Vec<Event>| {
    ///     let mut lane = Lane::default();
    ///     lane.events = events;
    ///     let mut w = Window::default();
    ///     (w.from_unix_ns, w.to_unix_ns) = (from, to);
    ///     w.lanes.push(lane);
    ///     w
    /// };
    /// let a = Event::new(10, EventKind::PollStart, 1, 0);
    /// let b = Event::new(20, EventKind::PollEnd, 1, tokio_blackbox::event::NO_STRING);
    /// let mut w1 = window(0, 15, vec![a]);
    /// let w2 = window(5, 30, vec![a, b]);
    /// assert!(w1.merge(&w2));
    /// assert_eq!((w1.from_unix_ns, w1.to_unix_ns), (0, 30));
    /// assert_eq!(w1.lanes[0].events, vec![a, b]);
    /// ```
    pub fn merge(&mut self, other: &Window) -> bool {
        if other.from_unix_ns > self.to_unix_ns || other.to_unix_ns < self.from_unix_ns {
            return false;
        }
        // Other's string indexes, in this window's table.
        let mut table: std::collections::HashMap<&str, u16> = std::collections::HashMap::new();
        for (i, s) in self.strings.iter().enumerate() {
            if let Ok(i) = u16::try_from(i) {
                table.entry(s.as_str()).or_insert(i);
            }
        }
        let mut added: Vec<String> = Vec::new();
        let remap: Vec<u16> = other
            .strings
            .iter()
            .map(|s| match table.get(s.as_str()) {
                Some(&i) => i,
                None => {
                    let i = u16::try_from(self.strings.len() + added.len())
                        .ok()
                        .filter(|&i| i != NO_STRING)
                        .unwrap_or(NO_STRING);
                    added.push(s.clone());
                    i
                }
            })
            .collect();
        self.strings.extend(added);
        self.strings.truncate(usize::from(NO_STRING));
        let fix = |e: &Event| -> Event {
            match e.kind() {
                Some(kind) if kind.has_string_arg() && e.arg() != NO_STRING => Event::new(
                    e.ts,
                    kind,
                    e.subject(),
                    remap
                        .get(usize::from(e.arg()))
                        .copied()
                        .unwrap_or(NO_STRING),
                ),
                _ => *e,
            }
        };
        for lane in &other.lanes {
            let events = lane.events.iter().map(fix);
            match self.lanes.iter_mut().find(|l| l.index == lane.index) {
                Some(mine) => {
                    let mut all: Vec<Event> = mine.events.drain(..).chain(events).collect();
                    // Stable: events of one instant keep their order.
                    all.sort_by_key(|e| e.ts);
                    mine.events = dedup_instants(all);
                    mine.events_lost = mine.events_lost.max(lane.events_lost);
                }
                None => self.lanes.push(Lane {
                    index: lane.index,
                    thread: lane.thread.clone(),
                    events: events.collect(),
                    events_lost: lane.events_lost,
                }),
            }
        }
        self.lanes.sort_by_key(|l| l.index);
        for r in &other.requests {
            if !self.requests.iter().any(|x| x.request_id == r.request_id) {
                self.requests.push(r.clone());
            }
        }
        self.from_unix_ns = self.from_unix_ns.min(other.from_unix_ns);
        self.to_unix_ns = self.to_unix_ns.max(other.to_unix_ns);
        self.task_hooks |= other.task_hooks;
        self.schedule_delay |= other.schedule_delay;
        true
    }

    /// Number of events in the window.
    pub fn events(&self) -> usize {
        self.lanes.iter().map(|l| l.events.len()).sum()
    }

    /// Events of the window lost to overwrite, over all lanes.
    pub fn events_lost(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.events_lost)
            .fold(0, u64::saturating_add)
    }

    /// The string at index `i` of the window's string table
    /// ([`NO_STRING`] and indexes past the table are `None`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::Window;
    /// let mut w = Window::default();
    /// w.strings.push("src/main.rs:3:5".into());
    /// assert_eq!(w.string(0), Some("src/main.rs:3:5"));
    /// assert_eq!(w.string(tokio_blackbox::event::NO_STRING), None);
    /// ```
    pub fn string(&self, i: u16) -> Option<&str> {
        if i == NO_STRING {
            return None;
        }
        self.strings.get(usize::from(i)).map(String::as_str)
    }
}

/// A window as cut from the buffer, before it is decoded: its bounds,
/// settings, strings and requests, and each thread's copy of its segments
/// in the buffer's compact form (a few bytes an event), decoded each time
/// it is read.
///
/// The recorder hands each window to [`Sink::write_cut`](crate::Sink::write_cut).
/// Decoded, a window takes 16 bytes an event: a storm's window is the whole
/// buffer, millions of events. The recorder's own sinks read the cut as they
/// go and never hold the decoded window; a sink of yours gets the
/// [`Window`] ([`Cut::to_window`]) unless it implements `write_cut` too.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{Cut, Sink, SinkError, Window};
///
/// /// Counts events without decoding the window into memory.
/// struct Count(usize);
/// impl Sink for Count {
///     fn write(&mut self, window: &Window) -> Result<(), SinkError> {
///         self.0 += window.events();
///         Ok(())
///     }
///     fn write_cut(&mut self, cut: Cut) -> Result<(), SinkError> {
///         self.0 += cut.events();
///         Ok(())
///     }
/// }
/// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder().sink(Count(0)).build()?;
/// # Ok::<(), tokio_blackbox::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Cut {
    /// Everything but the events: its lanes are the threads with events in
    /// the window (or losses), with `events` empty.
    header: Window,
    /// The segments of `header.lanes` (copied or held), in the same order.
    lanes: Vec<SegmentLane>,
    /// When each lane's first event in the window happened, UNIX ns.
    first: Vec<Option<u64>>,
    events: usize,
    anchor: TimeAnchor,
}

impl Cut {
    /// A cut takes at most `1 / BUFFER_SHARE` of the buffer memory
    /// (`BLACKBOX_BUFFER_MEMORY`): when a window's segments are more (a
    /// storm's merged requests span the whole buffer), its oldest part is
    /// kept, up to one moment on every thread, and the rest is counted in
    /// each lane's `events_lost`. A busy service's window of 2.5 s at
    /// 300,000 events a second is about 5 MiB: whole with the default 16 MiB.
    ///
    /// Its sealed segments are held in place, out of the rotation, until the
    /// cut is dropped (at most half the buffer's segments are held by all
    /// cuts together; the `blackbox.segments.held` gauge): only the
    /// segments still being written, and those past that bound, are
    /// copied. So a capture adds at most half the buffer to the recorder's
    /// memory, and usually almost nothing.
    pub const BUFFER_SHARE: usize = 2;

    /// Cuts `header`'s interval out of `lanes` (raw clock): one pass over
    /// each lane counts its events in the window and what it lost.
    pub(crate) fn new(mut header: Window, lanes: Vec<SegmentLane>, anchor: TimeAnchor) -> Cut {
        let (from, to) = (header.from_unix_ns, header.to_unix_ns);
        let mut cut = Cut {
            header: Window::default(),
            lanes: Vec::new(),
            first: Vec::new(),
            events: 0,
            anchor,
        };
        header.lanes.clear();
        for lane in lanes {
            let (mut n, mut first) = (0usize, None);
            let lost = lane.decode_with(|e| {
                let ts = cut.anchor.to_unix_ns(e.ts);
                if ts >= from && ts <= to {
                    n += 1;
                    first.get_or_insert(ts);
                }
            });
            if n == 0 && lost == 0 {
                continue;
            }
            header.lanes.push(Lane {
                index: lane.lane,
                thread: lane.thread.clone(),
                events: Vec::new(),
                events_lost: lost,
            });
            cut.events += n;
            cut.first.push(first);
            cut.lanes.push(lane);
        }
        cut.header = header;
        cut
    }

    /// The window without its events: bounds, settings, strings, requests,
    /// and its lanes (thread, index, events lost) with `events` empty.
    pub fn header(&self) -> &Window {
        &self.header
    }

    /// Number of events in the window.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Bytes of the compact segment copies the cut holds (segments held in
    /// place are the buffer's own memory, not counted).
    pub fn bytes(&self) -> usize {
        self.lanes.iter().map(SegmentLane::bytes).sum()
    }

    /// Bytes of the buffer the cut spans, its segments held in place and
    /// copied alike: what reading it back costs is in proportion.
    pub(crate) fn span_bytes(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.segments() * crate::segments::SEGMENT_BYTES)
            .sum()
    }

    /// The memory a queued cut holds, estimated: its segment copies, and
    /// its header's copy of the string table (up to 65,535 strings) and
    /// slow requests. What the export queue's byte bound counts.
    pub(crate) fn held_bytes(&self) -> usize {
        let h = &self.header;
        let strings: usize = h
            .strings
            .iter()
            .map(|s| std::mem::size_of::<String>() + s.capacity())
            .sum();
        let requests: usize = h
            .requests
            .iter()
            .map(|r| std::mem::size_of::<SlowRequest>() + r.name.capacity())
            .sum();
        std::mem::size_of::<Cut>() + self.bytes() + strings + requests
    }

    /// When lane `i` (of [`header`](Cut::header)'s lanes) has its first
    /// event in the window, UNIX ns.
    pub(crate) fn first_event_ts(&self, i: usize) -> Option<u64> {
        self.first.get(i).copied().flatten()
    }

    /// Decodes lane `i` (of [`header`](Cut::header)'s lanes), calling `f`
    /// with each of its events in the window, in time order, UNIX ns.
    pub(crate) fn lane_events(&self, i: usize, mut f: impl FnMut(&Event)) {
        let Some(lane) = self.lanes.get(i) else {
            return;
        };
        let (from, to) = (self.header.from_unix_ns, self.header.to_unix_ns);
        lane.decode_with(|mut e| {
            e.ts = self.anchor.to_unix_ns(e.ts);
            if e.ts >= from && e.ts <= to {
                f(&e);
            }
        });
    }

    /// The window, decoded: 16 bytes an event.
    pub fn to_window(&self) -> Window {
        let mut w = self.header.clone();
        for (i, lane) in w.lanes.iter_mut().enumerate() {
            let n = self.lanes.get(i).map_or(0, |l| l.events_hint());
            lane.events.reserve_exact(n);
            self.lane_events(i, |e| lane.events.push(*e));
            lane.events.shrink_to_fit();
        }
        w
    }
}

/// `events` (sorted by time) with each event once: within a run of one
/// instant, a repeat of an earlier event of the run goes, the order of the
/// others stays. A long run (a crafted file can put any number of events
/// at one instant) is deduplicated through a set, not by a search of the
/// run per event.
fn dedup_instants(events: Vec<Event>) -> Vec<Event> {
    /// Runs up to this long are searched: most are of one or two events.
    const SEARCHED: usize = 32;
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    let mut i = 0;
    while i < events.len() {
        let ts = events[i].ts;
        let n = events[i..].iter().take_while(|e| e.ts == ts).count();
        let run = &events[i..i + n];
        if n <= SEARCHED {
            let start = out.len();
            for e in run {
                if !out[start..].contains(e) {
                    out.push(*e);
                }
            }
        } else {
            let mut seen = std::collections::HashSet::with_capacity(n);
            out.extend(run.iter().filter(|e| seen.insert(e.word)));
        }
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_instants_keeps_the_first_of_each_event_of_an_instant_in_order() {
        let e = |ts, subject| Event::new(ts, crate::EventKind::TaskSpawn, subject, NO_STRING);
        for n in [3, 100] {
            // n events at one instant, each twice, in two orders; then one more instant.
            let mut events: Vec<Event> = (0..n).map(|i| e(5, i)).collect();
            events.extend((0..n).rev().map(|i| e(5, i)));
            events.extend([e(6, 1), e(6, 1), e(6, 0)]);
            let mut want: Vec<Event> = (0..n).map(|i| e(5, i)).collect();
            want.extend([e(6, 1), e(6, 0)]);
            assert_eq!(dedup_instants(events), want, "a run of {n}");
        }
    }

    /// Issue 27, finding 9: the export queue's byte bound counted a cut's
    /// segment copies but not its header's string table, a copy of up to
    /// 65,535 strings per queued cut.
    #[test]
    fn a_cuts_held_bytes_count_its_string_table() {
        let header = Window {
            strings: (0..60_000).map(|i| format!("{i:0>64}")).collect(),
            ..Window::default()
        };
        let cut = Cut::new(header, Vec::new(), crate::clock::Clock::new().anchor());
        assert_eq!(cut.bytes(), 0, "no segment copies");
        assert!(
            cut.held_bytes() >= 60_000 * 64,
            "the strings are counted: {}",
            cut.held_bytes()
        );
    }
}
