//! The compact event encoding inside a segment: 32-bit words, one to three
//! per event, timestamps as deltas.
//!
//! Every event starts with a *head* word: `kind` in the low 5 bits and a
//! 27-bit field above it. For timed kinds that field is the delta, in raw
//! clock ticks, from the thread's previous timed event (the segment's
//! `base` for its first one). Two delta values are special:
//!
//! - `0`: the event took no clock reading of its own and happened at the time
//!   of the previous timed event (an event inside a poll, stamped with the
//!   poll's start);
//! - [`DELTA_NEXT`]: the event took no clock reading and happened just before
//!   the thread's *next* timed event (the end of a poll, a span exited at the
//!   end of a poll).
//!
//! A delta that does not fit is preceded by a `TimeBase` event holding the
//! whole raw clock reading. Task and request ids are stored as their low 32
//! bits; a `TaskHigh` event carries the high 32 bits of task ids when they
//! change (after 2^32 spawns).
//!
//! | kind | words | layout after the head |
//! |---|---|---|
//! | task spawn | 3 | task, spawn location (low 16 bits) |
//! | poll start | 2 | task |
//! | poll start with delay | 3 | task, encoded scheduling delay (low 16 bits) |
//! | poll end | 1 | head bits 5..31: the spawn location's key ([`location_key`]); no time: the next timed event's |
//! | task terminate | 2 | task |
//! | park, unpark, thread start, thread stop | 1 | — |
//! | request open | 3 | request, span name (low 16 bits) |
//! | request enter, exit, close | 2 | request |
//! | task name | 3 | task, span name (low 16 bits) |
//! | time base | 3 | raw clock, low and high 32 bits |
//! | task high | 2 | high 32 bits of the task ids that follow |
//!
//! A poll (start and end) is 12 bytes.

use crate::event::{Event, EventKind};

pub(crate) const K_SPAWN: u32 = 1;
pub(crate) const K_POLL_START: u32 = 2;
pub(crate) const K_POLL_END: u32 = 3;
pub(crate) const K_TERMINATE: u32 = 4;
pub(crate) const K_PARK: u32 = 5;
pub(crate) const K_UNPARK: u32 = 6;
pub(crate) const K_THREAD_START: u32 = 7;
pub(crate) const K_THREAD_STOP: u32 = 8;
pub(crate) const K_REQ_OPEN: u32 = 9;
pub(crate) const K_REQ_ENTER: u32 = 10;
pub(crate) const K_REQ_EXIT: u32 = 11;
pub(crate) const K_REQ_CLOSE: u32 = 12;
pub(crate) const K_TASK_NAME: u32 = 13;
pub(crate) const K_POLL_START_DELAY: u32 = 14;
pub(crate) const K_TIME_BASE: u32 = 15;
pub(crate) const K_TASK_HIGH: u32 = 16;

/// The delta value meaning "at the next timed event".
pub(crate) const DELTA_NEXT: u64 = (1 << 27) - 1;

/// The key of a spawn location at `addr` that a poll end carries in its
/// head's 27 bits: bits 3 to 29 of the address (a `Location` is aligned to
/// 8), so the hook writes it with no lookup (`(addr as u32) << 2 | kind`, one
/// instruction). The reader maps it back to the location's string index
/// through the keys the spawns registered (`capture::LocationKeys`).
#[inline(always)]
pub(crate) const fn location_key(addr: usize) -> u64 {
    (addr as u64 >> 3) & DELTA_NEXT
}

/// The head word of an event.
#[inline(always)]
pub(crate) const fn head(kind: u32, field: u64) -> u32 {
    kind | ((field as u32) << 5)
}

/// Number of words of an event of this kind, head included (0 for an unknown kind).
pub(crate) const fn words_of(kind: u32) -> usize {
    match kind {
        K_POLL_END | K_PARK | K_UNPARK | K_THREAD_START | K_THREAD_STOP => 1,
        K_POLL_START | K_TERMINATE | K_REQ_ENTER | K_REQ_EXIT | K_REQ_CLOSE | K_TASK_HIGH => 2,
        K_SPAWN | K_REQ_OPEN | K_TASK_NAME | K_POLL_START_DELAY | K_TIME_BASE => 3,
        _ => 0,
    }
}

/// What a lane's decoder carries from one segment to the next of the same thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct LaneState {
    /// Raw time of the last timed event.
    pub(crate) last: u64,
    /// The task whose poll started last (a poll end belongs to it).
    pub(crate) task: u64,
    /// High 32 bits of task ids.
    pub(crate) task_high: u64,
    /// Indices (into the output) of events waiting for the next timed event's time.
    pub(crate) waiting: Vec<usize>,
}

impl LaneState {
    /// A decoder state for a segment whose thread's earlier segments are not at hand.
    pub(crate) fn fresh(base: u64, task_high: u64) -> LaneState {
        LaneState {
            last: base,
            task_high,
            ..LaneState::default()
        }
    }

    /// Gives the waiting events a time: the next timed event's, or `now` at the end.
    pub(crate) fn settle(&mut self, out: &mut [Event], ts: u64) {
        for i in self.waiting.drain(..) {
            if let Some(e) = out.get_mut(i) {
                e.ts = ts;
            }
        }
    }
}

/// Decodes the words of one segment, appending events with raw timestamps to
/// `out`; `location` maps a poll end's location key to its string index.
/// Stops at the first malformed word (a segment is only ever read up to
/// its published length, so that means a bug or a recycled copy): returns
/// `false` then.
pub(crate) fn decode(
    words: &[u32],
    state: &mut LaneState,
    out: &mut Vec<Event>,
    location: impl Fn(u32) -> u16,
) -> bool {
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let kind = w & 0x1f;
        let field = u64::from(w >> 5);
        let n = words_of(kind);
        if n == 0 || i + n > words.len() {
            return false;
        }
        let arg = |k: usize| words[i + k];
        // The time of a timed event, and whether it is one.
        let timed = |state: &mut LaneState, out: &mut Vec<Event>| -> Option<u64> {
            match field {
                0 => Some(state.last),
                DELTA_NEXT => None,
                d => {
                    state.last = state.last.wrapping_add(d);
                    let ts = state.last;
                    state.settle(out, ts);
                    Some(ts)
                }
            }
        };
        let task = |lo: u32, state: &LaneState| state.task_high << 32 | u64::from(lo);
        let event = match kind {
            K_TIME_BASE => {
                state.last = u64::from(arg(1)) | u64::from(arg(2)) << 32;
                let ts = state.last;
                state.settle(out, ts);
                None
            }
            K_TASK_HIGH => {
                state.task_high = u64::from(arg(1));
                None
            }
            K_POLL_END => {
                state.waiting.push(out.len());
                Some(Event::new(
                    state.last,
                    EventKind::PollEnd,
                    state.task,
                    location(field as u32),
                ))
            }
            _ => {
                let at = timed(state, out);
                let ts = at.unwrap_or(state.last);
                let (kind, subject, a) = match kind {
                    K_SPAWN => (EventKind::TaskSpawn, task(arg(1), state), arg(2) as u16),
                    K_POLL_START | K_POLL_START_DELAY => {
                        let t = task(arg(1), state);
                        state.task = t;
                        let delay = if kind == K_POLL_START_DELAY {
                            arg(2) as u16
                        } else {
                            0
                        };
                        (EventKind::PollStart, t, delay)
                    }
                    K_TERMINATE => (EventKind::TaskTerminate, task(arg(1), state), 0),
                    K_PARK => (EventKind::Park, 0, 0),
                    K_UNPARK => (EventKind::Unpark, 0, 0),
                    K_THREAD_START => (EventKind::ThreadStart, 0, 0),
                    K_THREAD_STOP => (EventKind::ThreadStop, 0, 0),
                    K_REQ_OPEN => (EventKind::RequestOpen, u64::from(arg(1)), arg(2) as u16),
                    K_REQ_ENTER => (EventKind::RequestEnter, u64::from(arg(1)), 0),
                    K_REQ_EXIT => (EventKind::RequestExit, u64::from(arg(1)), 0),
                    K_REQ_CLOSE => (EventKind::RequestClose, u64::from(arg(1)), 0),
                    K_TASK_NAME => (EventKind::TaskName, task(arg(1), state), arg(2) as u16),
                    _ => return false,
                };
                if at.is_none() {
                    state.waiting.push(out.len());
                }
                Some(Event::new(ts, kind, subject, a))
            }
        };
        if let Some(e) = event {
            out.push(e);
        }
        i += n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_twelve_bytes_and_its_end_takes_the_next_time() {
        let words = [
            head(K_POLL_START, 100),
            7,
            head(K_REQ_ENTER, 0),
            3,
            head(K_REQ_EXIT, DELTA_NEXT),
            3,
            head(K_POLL_END, 42),
            head(K_PARK, 50),
        ];
        let mut st = LaneState::fresh(1_000, 0);
        let mut out = Vec::new();
        assert!(decode(&words, &mut st, &mut out, |k| k as u16));
        let got: Vec<(u64, Option<EventKind>, u64, u16)> = out
            .iter()
            .map(|e| (e.ts, e.kind(), e.subject(), e.arg()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1_100, Some(EventKind::PollStart), 7, 0),
                (1_100, Some(EventKind::RequestEnter), 3, 0),
                (1_150, Some(EventKind::RequestExit), 3, 0),
                (1_150, Some(EventKind::PollEnd), 7, 42),
                (1_150, Some(EventKind::Park), 0, 0),
            ]
        );
        assert_eq!(words_of(K_POLL_START) + words_of(K_POLL_END), 3);
    }

    #[test]
    fn time_base_and_task_high() {
        let big = (5u64 << 32) | 9;
        let words = [
            head(K_TIME_BASE, 0),
            9,
            5,
            head(K_TASK_HIGH, 0),
            1,
            head(K_SPAWN, 1),
            2,
            77,
        ];
        let mut st = LaneState::fresh(0, 0);
        let mut out = Vec::new();
        assert!(decode(&words, &mut st, &mut out, |k| k as u16));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts, big + 1);
        assert_eq!(
            out[0].subject(),
            (1u64 << 32 | 2) & crate::event::MAX_SUBJECT
        );
        assert_eq!(out[0].arg(), 77);
    }

    #[test]
    fn malformed_words_stop_decoding() {
        let mut out = Vec::new();
        assert!(!decode(&[0], &mut LaneState::default(), &mut out, |k| k as u16));
        assert!(!decode(
            &[head(K_SPAWN, 1), 1],
            &mut LaneState::default(),
            &mut out,
            |k| k as u16
        ));
        assert!(out.is_empty());
    }
}
