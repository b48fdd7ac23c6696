//! Reading dump and capture files, whole or streamed, without panicking.

use super::{
    DumpError, DumpErrorKind, DumpFile, FORMAT_VERSION, FileKind, HEADER_LEN, Header, MAGIC,
    OLDEST_READABLE_VERSION, tag,
};
use crate::event::Event;
use crate::window::{Lane, SlowRequest, Window};
use opentelemetry::trace::{SpanId, TraceId};
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

/// The largest record a reader accepts (an `EVENTS` record of 16 Ki events is 256 KiB).
const MAX_RECORD: u32 = 64 << 20;

/// One record of a file, as streamed by [`DumpReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// The window's bounds and settings.
    Meta {
        /// Capture sequence number (0 in dumps).
        sequence: u64,
        /// Window start, UNIX ns.
        from_unix_ns: u64,
        /// Window end, UNIX ns.
        to_unix_ns: u64,
        /// The latency threshold.
        threshold: Duration,
        /// The long-poll limit.
        long_poll: Duration,
    },
    /// The string table.
    Strings(Vec<String>),
    /// A slow request.
    Request(SlowRequest),
    /// A lane starts; its events follow in `Events` records.
    Lane {
        /// The lane index.
        index: u32,
        /// The thread's name.
        thread: String,
        /// Events of the window lost to overwrite.
        events_lost: u64,
    },
    /// A chunk of a lane's events.
    Events {
        /// The lane index.
        lane: u32,
        /// The events, timestamps in UNIX ns.
        events: Vec<Event>,
    },
}

/// Streams the records of a dump or capture file with bounded memory.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{Window, dump::{self, DumpReader, FileKind}};
/// let mut bytes = Vec::new();
/// dump::write_window(&mut bytes, &Window::default(), FileKind::Dump)?;
/// let mut reader = DumpReader::new(&bytes[..])?;
/// assert_eq!(reader.header().kind, FileKind::Dump);
/// let mut records = 0;
/// while let Some(_record) = reader.next_record()? {
///     records += 1;
/// }
/// assert_eq!(records, 2); // meta and strings
/// # Ok::<(), tokio_blackbox::DumpError>(())
/// ```
#[derive(Debug)]
pub struct DumpReader<R> {
    input: R,
    offset: u64,
    header: Header,
    done: bool,
}

impl<R: Read> DumpReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    ///
    /// [`DumpErrorKind::NotADump`], [`DumpErrorKind::UnsupportedVersion`],
    /// [`DumpErrorKind::Truncated`] or an I/O error.
    pub fn new(input: R) -> Result<DumpReader<R>, DumpError> {
        let mut r = DumpReader {
            input,
            offset: 0,
            header: Header {
                major: 0,
                minor: 0,
                kind: FileKind::Dump,
                task_hooks: false,
                schedule_delay: false,
                created_unix_ns: 0,
                pid: 0,
            },
            done: false,
        };
        let mut h = [0u8; HEADER_LEN];
        let got = r.fill(&mut h)?;
        if got < MAGIC.len() || h[..MAGIC.len()] != MAGIC {
            // Name the first differing byte.
            let at = h[..got]
                .iter()
                .zip(MAGIC.iter())
                .take_while(|(a, b)| a == b)
                .count();
            if at == got && got < MAGIC.len() && got > 0 {
                return Err(truncated(got as u64, "the rest of the magic bytes"));
            }
            return Err(DumpError::new(DumpErrorKind::NotADump {
                offset: at as u64,
            }));
        }
        if got < HEADER_LEN {
            return Err(truncated(got as u64, "the rest of the 32-byte header"));
        }
        let major = u16::from_le_bytes([h[8], h[9]]);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&major) {
            return Err(DumpError::new(DumpErrorKind::UnsupportedVersion {
                major,
                offset: 8,
            }));
        }
        let kind = match h[12] {
            1 => FileKind::Dump,
            2 => FileKind::Capture,
            k => {
                return Err(corrupt(
                    12,
                    format!("file kind {k}, expected 1 (dump) or 2 (capture)"),
                ));
            }
        };
        r.header = Header {
            major,
            minor: u16::from_le_bytes([h[10], h[11]]),
            kind,
            task_hooks: h[13] & 1 != 0,
            schedule_delay: h[13] & 2 != 0,
            created_unix_ns: u64::from_le_bytes(h[16..24].try_into().unwrap_or_default()),
            pid: u32::from_le_bytes(h[24..28].try_into().unwrap_or_default()),
        };
        Ok(r)
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, DumpError> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DumpError::io(e)),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// The next record, or `None` after the `END` record.
    ///
    /// # Errors
    ///
    /// [`DumpErrorKind::Truncated`] when the input ends before `END`,
    /// [`DumpErrorKind::Corrupt`] for an invalid record, or an I/O error.
    pub fn next_record(&mut self) -> Result<Option<Record>, DumpError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let start = self.offset;
            let mut head = [0u8; 5];
            let got = self.fill(&mut head)?;
            if got < head.len() {
                return Err(truncated(
                    start + got as u64,
                    "a record header (tag and length); the file has no END record",
                ));
            }
            let tag = head[0];
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
            if len > MAX_RECORD {
                return Err(corrupt(
                    start + 1,
                    format!("record length {len} exceeds the limit of {MAX_RECORD}"),
                ));
            }
            let body_at = self.offset;
            // Grown as bytes arrive: a length promising more than the file
            // holds costs what the file holds, not the length.
            let mut body = Vec::with_capacity((len as usize).min(64 << 10));
            let got = (&mut self.input)
                .take(u64::from(len))
                .read_to_end(&mut body)
                .map_err(DumpError::io)?;
            self.offset += got as u64;
            if got < len as usize {
                return Err(truncated(body_at + got as u64, "the rest of a record"));
            }
            let mut p = Payload {
                buf: &body,
                pos: 0,
                base: body_at,
            };
            let record = match tag {
                tag::END => {
                    self.done = true;
                    return Ok(None);
                }
                tag::META => Record::Meta {
                    sequence: p.u64()?,
                    from_unix_ns: p.u64()?,
                    to_unix_ns: p.u64()?,
                    threshold: Duration::from_nanos(p.u64()?),
                    long_poll: Duration::from_nanos(p.u64()?),
                },
                tag::STRINGS => {
                    let n = p.u32()?;
                    // Indexes are 16 bits (one value means "none": indices
                    // 0..=65,534, so 65,535 strings at most), and each string
                    // takes two bytes at least.
                    if n > u32::from(crate::event::NO_STRING) || n as usize > p.remaining() / 2 {
                        return Err(corrupt(
                            body_at,
                            format!(
                                "a string table of {n} strings (at most 65,535, two bytes each at least)"
                            ),
                        ));
                    }
                    let mut v = Vec::with_capacity((n as usize).min(body.len() / 2));
                    for _ in 0..n {
                        v.push(p.string()?);
                    }
                    Record::Strings(v)
                }
                tag::REQUEST => {
                    let request_id = p.u64()?;
                    let trace_id = TraceId::from_bytes(p.array::<16>()?);
                    let span_id = SpanId::from_bytes(p.array::<8>()?);
                    let flags = p.u8()?;
                    Record::Request(SlowRequest {
                        request_id,
                        trace_id,
                        span_id,
                        own_span: flags & 1 != 0,
                        error: flags & 2 != 0,
                        open: flags & 4 != 0,
                        start_unix_ns: p.u64()?,
                        end_unix_ns: p.u64()?,
                        name: p.string()?,
                    })
                }
                tag::LANE => Record::Lane {
                    index: p.u32()?,
                    events_lost: p.u64()?,
                    thread: p.string()?,
                },
                tag::EVENTS if self.header.major >= 2 => {
                    let lane = p.u32()?;
                    let n = p.u32()? as usize;
                    // Each event takes at least 3 bytes: no count can promise more.
                    if n > p.remaining() / 3 + 1 {
                        return Err(corrupt(
                            body_at + 4,
                            format!(
                                "{n} events cannot fit in the {} bytes of the record",
                                p.remaining()
                            ),
                        ));
                    }
                    let mut events = Vec::with_capacity(n);
                    let (mut ts, mut task) = (0u64, 0u64);
                    for _ in 0..n {
                        let at = p.base + p.pos as u64;
                        let k = p.u8()?;
                        let raw_kind = k & !super::compact::SAME_TASK;
                        let kind = crate::event::EventKind::from_u8(raw_kind);
                        ts = ts.wrapping_add(super::compact::unzigzag(p.varint()?) as u64);
                        let subject = if k & super::compact::SAME_TASK != 0 {
                            task
                        } else {
                            p.varint()?
                        };
                        let arg = if kind.is_none_or(super::compact::has_arg) {
                            u16::try_from(p.varint()?)
                                .map_err(|_| corrupt(at, "an event argument over 16 bits".into()))?
                        } else {
                            0
                        };
                        if kind == Some(crate::event::EventKind::PollStart) {
                            task = subject;
                        }
                        events.push(Event {
                            ts,
                            word: (u64::from(raw_kind) << 56)
                                | (u64::from(arg) << 40)
                                | (subject & crate::event::MAX_SUBJECT),
                        });
                    }
                    if p.remaining() != 0 {
                        return Err(corrupt(
                            p.base + p.pos as u64,
                            format!("{} bytes after the last event of the record", p.remaining()),
                        ));
                    }
                    Record::Events { lane, events }
                }
                tag::EVENTS => {
                    let lane = p.u32()?;
                    let n = p.u32()? as usize;
                    if p.remaining() != n * 16 {
                        return Err(corrupt(
                            body_at + 4,
                            format!(
                                "{n} events need {} bytes, the record has {}",
                                n * 16,
                                p.remaining()
                            ),
                        ));
                    }
                    let mut events = Vec::with_capacity(n);
                    for _ in 0..n {
                        events.push(Event {
                            ts: p.u64()?,
                            word: p.u64()?,
                        });
                    }
                    Record::Events { lane, events }
                }
                _ => continue, // a newer minor version's record: skip it
            };
            return Ok(Some(record));
        }
    }

    /// Streams every remaining record with bounded memory: `each` gets the
    /// part of the file before its lanes once (a [`Window`] with bounds,
    /// settings, strings and requests but no lanes), then each lane's start
    /// and its events chunk by chunk. Returns that part, with any header
    /// records found after the first lane folded in. This is the one record
    /// loop; [`read_all`](DumpReader::read_all) and
    /// [`analysis::scan_dump`](crate::analysis::scan_dump) are built on it.
    ///
    /// # Errors
    ///
    /// As [`next_record`](DumpReader::next_record), plus
    /// [`DumpErrorKind::Corrupt`] for events of a lane that was never
    /// declared; and whatever `each` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::dump::{self, DumpReader, FileKind, Part};
    /// use tokio_blackbox::Window;
    /// let mut bytes = Vec::new();
    /// let mut w = Window::default();
    /// w.to_unix_ns = 9;
    /// dump::write_window(&mut bytes, &w, FileKind::Dump)?;
    /// let mut lanes = 0;
    /// let meta = DumpReader::new(&bytes[..])?.stream(|part| {
    ///     if let Part::Lane { .. } = part { lanes += 1 }
    ///     Ok::<(), tokio_blackbox::DumpError>(())
    /// })?;
    /// assert_eq!((meta.to_unix_ns, lanes), (9, 0));
    /// # Ok::<(), tokio_blackbox::DumpError>(())
    /// ```
    pub fn stream<E: From<DumpError>>(
        &mut self,
        mut each: impl FnMut(Part<'_>) -> Result<(), E>,
    ) -> Result<Window, E> {
        let mut meta = Window {
            task_hooks: self.header.task_hooks,
            schedule_delay: self.header.schedule_delay,
            ..Window::default()
        };
        let mut begun = false;
        let mut lane: Option<u32> = None;
        loop {
            let at = self.offset;
            let Some(record) = self.next_record()? else {
                break;
            };
            match record {
                Record::Meta {
                    sequence,
                    from_unix_ns,
                    to_unix_ns,
                    threshold,
                    long_poll,
                } => {
                    meta.sequence = sequence;
                    meta.from_unix_ns = from_unix_ns;
                    meta.to_unix_ns = to_unix_ns;
                    meta.threshold = threshold;
                    meta.long_poll = long_poll;
                }
                Record::Strings(s) => {
                    if meta.strings.len() + s.len() > usize::from(crate::event::NO_STRING) {
                        return Err(corrupt(
                            at,
                            "string tables of more than 65,535 strings in all".into(),
                        )
                        .into());
                    }
                    meta.strings.extend(s);
                }
                Record::Request(r) => meta.requests.push(r),
                Record::Lane {
                    index,
                    thread,
                    events_lost,
                } => {
                    if !begun {
                        each(Part::Begin(&meta))?;
                        begun = true;
                    }
                    lane = Some(index);
                    each(Part::Lane {
                        index,
                        thread: &thread,
                        events_lost,
                    })?;
                }
                Record::Events {
                    lane: index,
                    events,
                } => {
                    if lane != Some(index) {
                        return Err(corrupt(
                            at,
                            format!(
                                "events for lane {index}, which has no LANE record before them"
                            ),
                        )
                        .into());
                    }
                    each(Part::Events {
                        lane: index,
                        events: &events,
                    })?;
                }
            }
        }
        if !begun {
            each(Part::Begin(&meta))?;
        }
        Ok(meta)
    }

    /// Reads every remaining record into one [`DumpFile`].
    ///
    /// # Errors
    ///
    /// As [`stream`](DumpReader::stream).
    pub fn read_all(mut self) -> Result<DumpFile, DumpError> {
        let mut lanes: Vec<Lane> = Vec::new();
        let mut window = self.stream(|part| {
            match part {
                Part::Begin(_) => {}
                Part::Lane {
                    index,
                    thread,
                    events_lost,
                } => lanes.push(Lane {
                    index,
                    thread: thread.to_owned(),
                    events: Vec::new(),
                    events_lost,
                }),
                Part::Events { events, .. } => {
                    if let Some(l) = lanes.last_mut() {
                        l.events.extend_from_slice(events);
                    }
                }
            }
            Ok::<(), DumpError>(())
        })?;
        window.lanes = lanes;
        Ok(DumpFile {
            kind: self.header.kind,
            header: self.header,
            window,
        })
    }
}

/// One part of a file, as [`DumpReader::stream`] hands it over.
#[derive(Debug)]
#[non_exhaustive]
pub enum Part<'a> {
    /// Everything before the first lane: a window with no lanes. Once,
    /// before the first lane (at the end for a file without lanes).
    Begin(&'a Window),
    /// A lane starts; its events follow.
    Lane {
        /// The lane index.
        index: u32,
        /// The thread's name.
        thread: &'a str,
        /// Events of the window lost to overwrite.
        events_lost: u64,
    },
    /// A chunk of the current lane's events, timestamps in UNIX ns.
    Events {
        /// The lane index.
        lane: u32,
        /// The events.
        events: &'a [Event],
    },
}

/// Reads a whole dump or capture file.
///
/// # Errors
///
/// A [`DumpError`] with the byte offset for truncated, corrupt,
/// future-version or foreign input; an I/O error if the file cannot be read.
pub fn read_file(path: impl AsRef<Path>) -> Result<DumpFile, DumpError> {
    let file = std::fs::File::open(path)?;
    read_from(BufReader::new(file))
}

/// Reads a whole dump or capture from any reader. See [`read_file`].
///
/// # Errors
///
/// As [`read_file`].
pub fn read_from<R: Read>(input: R) -> Result<DumpFile, DumpError> {
    DumpReader::new(input)?.read_all()
}

fn truncated(offset: u64, expected: &'static str) -> DumpError {
    DumpError::new(DumpErrorKind::Truncated { offset, expected })
}

fn corrupt(offset: u64, what: String) -> DumpError {
    DumpError::new(DumpErrorKind::Corrupt { offset, what })
}

/// A cursor over one record's payload.
struct Payload<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl Payload<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DumpError> {
        if self.remaining() < n {
            return Err(corrupt(
                self.base + self.pos as u64,
                format!(
                    "record too short: {n} more bytes expected, {} left",
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DumpError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DumpError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DumpError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DumpError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> Result<u64, DumpError> {
        let at = self.base + self.pos as u64;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(corrupt(at, "a varint longer than 64 bits".into()))
    }

    fn string(&mut self) -> Result<String, DumpError> {
        let at = self.base + self.pos as u64;
        let n = usize::from(self.u16()?);
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(at, "a string that is not UTF-8".into()))
    }
}
