//! The fixed-size event every hook and layer callback records.
//!
//! An [`Event`] is 16 bytes of plain data: a timestamp and one packed word
//! holding the kind, a 16-bit argument and a 40-bit subject (a task id or a
//! request id). Strings (spawn locations, span names) never live in events:
//! they are interned once and referred to by a 16-bit index.
//!
//! Inside the process the timestamp is a raw reading of the recorder's
//! monotonic clock; in captures and dump files it is UNIX nanoseconds.

use std::fmt;

/// What happened. The numeric values are part of the dump format: never reuse one.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// A task was spawned. Subject: task id. Argument: spawn location (string index).
    TaskSpawn = 1,
    /// A worker started polling a task. Subject: task id. Argument: the
    /// scheduling delay before this poll, see [`decode_delay`] (0 when not recorded).
    PollStart = 2,
    /// A worker finished polling a task. Subject: task id. Argument: spawn location.
    PollEnd = 3,
    /// A task completed or was cancelled. Subject: task id.
    TaskTerminate = 4,
    /// The thread parked (went idle).
    Park = 5,
    /// The thread unparked (woke up to look for work).
    Unpark = 6,
    /// A runtime thread started. Subject: the thread's serial number.
    ThreadStart = 7,
    /// A runtime thread stopped. Subject: the thread's serial number.
    ThreadStop = 8,
    /// A request span was created. Subject: request id. Argument: span name (string index).
    RequestOpen = 9,
    /// A request span was entered on this thread. Subject: request id.
    RequestEnter = 10,
    /// A request span was exited on this thread. Subject: request id.
    RequestExit = 11,
    /// A request span closed. Subject: request id.
    RequestClose = 12,
    /// The span a task runs in (its `.instrument(..)` span, or the first span
    /// entered in its polls), seen once per task and thread. Subject: task id.
    /// Argument: span name (string index). Not written when that span is a
    /// request's: the request's enter in the task's poll names it (see the
    /// [pairing rules](crate::analysis#pairing-rules)).
    TaskName = 13,
}

impl EventKind {
    /// Every kind, in numeric order.
    pub const ALL: [EventKind; 13] = [
        EventKind::TaskSpawn,
        EventKind::PollStart,
        EventKind::PollEnd,
        EventKind::TaskTerminate,
        EventKind::Park,
        EventKind::Unpark,
        EventKind::ThreadStart,
        EventKind::ThreadStop,
        EventKind::RequestOpen,
        EventKind::RequestEnter,
        EventKind::RequestExit,
        EventKind::RequestClose,
        EventKind::TaskName,
    ];

    /// The kind with this numeric value, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::EventKind;
    /// assert_eq!(EventKind::from_u8(2), Some(EventKind::PollStart));
    /// assert_eq!(EventKind::from_u8(0), None);
    /// ```
    pub fn from_u8(v: u8) -> Option<EventKind> {
        if v == 0 {
            return None;
        }
        Self::ALL.get(usize::from(v) - 1).copied()
    }

    /// Whether the argument of events of this kind is an index into the
    /// string table (a spawn location or a span name).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::EventKind;
    /// assert!(EventKind::TaskSpawn.has_string_arg());
    /// assert!(!EventKind::PollStart.has_string_arg()); // a scheduling delay
    /// ```
    pub fn has_string_arg(self) -> bool {
        matches!(
            self,
            EventKind::TaskSpawn
                | EventKind::PollEnd
                | EventKind::RequestOpen
                | EventKind::TaskName
        )
    }

    /// A short lowercase name, as used in exports and the command's output.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::TaskSpawn => "spawned",
            EventKind::PollStart => "poll_start",
            EventKind::PollEnd => "poll_end",
            EventKind::TaskTerminate => "terminated",
            EventKind::Park => "park",
            EventKind::Unpark => "unpark",
            EventKind::ThreadStart => "thread_start",
            EventKind::ThreadStop => "thread_stop",
            EventKind::RequestOpen => "request_open",
            EventKind::RequestEnter => "request_enter",
            EventKind::RequestExit => "request_exit",
            EventKind::RequestClose => "request_close",
            EventKind::TaskName => "task_name",
        }
    }
}

/// Largest subject (task id or request id) an event can hold: 40 bits.
///
/// Tokio numbers tasks from 1 upwards; 2^40 spawns is over three years at ten
/// thousand spawns a second. Larger ids are kept modulo 2^40.
pub const MAX_SUBJECT: u64 = (1 << 40) - 1;

/// The string index that means "no string".
pub const NO_STRING: u16 = u16::MAX;

/// One recorded moment: 16 bytes of plain data.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{Event, EventKind};
/// let e = Event::new(1_000, EventKind::PollStart, 42, 0);
/// assert_eq!(e.kind(), Some(EventKind::PollStart));
/// assert_eq!(e.subject(), 42);
/// assert_eq!(std::mem::size_of::<Event>(), 16);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Event {
    /// Raw clock reading inside the process; UNIX nanoseconds in captures and dumps.
    pub ts: u64,
    /// `kind:8 | arg:16 | subject:40`, from the most significant bit down.
    pub word: u64,
}

impl Event {
    /// Packs an event. The subject is kept modulo 2^40.
    #[inline(always)]
    pub const fn new(ts: u64, kind: EventKind, subject: u64, arg: u16) -> Event {
        Event {
            ts,
            word: ((kind as u64) << 56) | ((arg as u64) << 40) | (subject & MAX_SUBJECT),
        }
    }

    /// The kind, or `None` for a value this version does not know.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u8((self.word >> 56) as u8)
    }

    /// The task id or request id.
    pub fn subject(&self) -> u64 {
        self.word & MAX_SUBJECT
    }

    /// The 16-bit argument (a string index or an encoded delay).
    pub fn arg(&self) -> u16 {
        (self.word >> 40) as u16
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("ts", &self.ts)
            .field("kind", &self.kind())
            .field("subject", &self.subject())
            .field("arg", &self.arg())
            .finish()
    }
}

/// Encodes a duration in nanoseconds into 16 bits: a 5-bit exponent and an
/// 11-bit mantissa, so the error is below 0.05% and the range reaches past an hour.
///
/// Zero stays zero, so "no delay recorded" and "no delay" look alike; the
/// capture's `schedule_delay` flag tells them apart.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::event::{decode_delay, encode_delay};
/// assert_eq!(decode_delay(encode_delay(1_500)), 1_500);
/// let big = 3_000_000_000u64;
/// let back = decode_delay(encode_delay(big));
/// assert!(back.abs_diff(big) * 1000 < big);
/// ```
#[inline]
pub fn encode_delay(ns: u64) -> u16 {
    if ns < (1 << 11) {
        return ns as u16;
    }
    // Keep the top 12 significant bits: an implicit leading one and 11 stored.
    let shift = 64 - ns.leading_zeros() - 12;
    if shift >= 31 {
        return u16::MAX;
    }
    let mantissa = (ns >> shift) & 0x7ff;
    (((shift + 1) as u16) << 11) | mantissa as u16
}

/// Decodes [`encode_delay`].
pub fn decode_delay(v: u16) -> u64 {
    let exp = u32::from(v >> 11);
    let mantissa = u64::from(v & 0x7ff);
    if exp == 0 {
        mantissa
    } else {
        (mantissa | 0x800) << (exp - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        for kind in EventKind::ALL {
            let e = Event::new(7, kind, MAX_SUBJECT, u16::MAX - 1);
            assert_eq!(e.kind(), Some(kind));
            assert_eq!(e.subject(), MAX_SUBJECT);
            assert_eq!(e.arg(), u16::MAX - 1);
        }
        assert_eq!(
            Event::new(0, EventKind::Park, MAX_SUBJECT + 5, 0).subject(),
            4
        );
    }

    #[test]
    fn delay_encoding_is_close() {
        for ns in [
            0u64,
            1,
            2047,
            2048,
            2049,
            10_000,
            1_234_567,
            999_999_999_999,
        ] {
            let back = decode_delay(encode_delay(ns));
            assert!(back <= ns && (ns - back) * 1000 <= ns, "{ns} -> {back}");
        }
    }
}
