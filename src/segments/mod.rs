//! Segments: the fixed memory every thread records into, shared by all threads.
//!
//! The buffer memory is cut into segments of a few KiB. Each recording thread
//! owns one *current* segment and appends events to it with plain stores (see
//! [`codec`] for the encoding); nothing is shared per event. A full segment is
//! *sealed* into one process-wide FIFO, and the thread takes the oldest sealed
//! segment that is not pinned for its next one: history is overwritten
//! oldest-first across the whole process, an idle thread holds one segment,
//! busy threads get the history, and one number bounds the memory whatever
//! the thread count (the JFR, Go execution tracer and perf design).
//!
//! ## Protocol
//!
//! Each segment has a control word `ctl = generation << 8 | flags`, where the
//! flags hold a state (`FREE`, `CLAIMING`, `WRITING`, `SEALED`) and `PINNED`.
//!
//! - **Claim** (writer, once per segment): pop an index from the FIFO; if it
//!   is pinned, push it back and pop the next. CAS `ctl` from the value seen
//!   (unpinned, `FREE` or `SEALED`) to `generation + 1, CLAIMING`; a failed CAS
//!   means the capture thread pinned it meanwhile. Then a `Release` fence, the
//!   header fields and `fill = 0`, and `ctl = generation + 1, WRITING` with
//!   `Release`.
//! - **Append** (writer): store the event's words (`Relaxed`), then
//!   `fill = next | events << 16` (`Release`). It only grows within a generation.
//!   The fill is the segment's word 0 and the events follow it, so `next`
//!   (the next word to write) is one more than the event words (0 before
//!   the first event): the writer publishes through the pointer it writes
//!   with, and its bounds check is the one of its own stores.
//! - **Seal** (writer): store `end`, set the state to `SEALED`
//!   (`Release`, keeping `PINNED`), push the index onto the FIFO.
//! - **Copy** (reader, any thread): load `ctl` (`Acquire`) as `c1`; skip
//!   `FREE` and `CLAIMING`; read the header and `fill` (`Acquire`), copy
//!   `words[..len]`, issue an `Acquire` fence and load `ctl` again. If the
//!   generation changed, the segment was recycled during the copy and the copy
//!   is dropped (counted). Otherwise every word read was written in
//!   generation `c1` before the `fill` that was read: the writer's fence after
//!   the claim CAS orders the new generation before any word it overwrites,
//!   so a reader that saw one overwritten word sees the new generation.
//! - **Pin** (capture thread only): CAS `ctl` adding `PINNED` when its
//!   generation is still the one a copy saw and it is `WRITING` or `SEALED`.
//!   A pinned segment is never claimed, so its generation cannot change until
//!   it is unpinned (a `fetch_and`).
//! - **Hold** (a cut, instead of a copy): CAS `ctl` adding one `HOLD` (bits
//!   3 to 7 count them) when it is `SEALED` and its generation is the one
//!   the snapshot read. Like a pin, a hold keeps the segment from being
//!   claimed, so its words stay those of that generation until the last
//!   hold is released (a CAS that checks the generation: a [`reset`]
//!   forgets every hold). A held segment is read in place, later, on any
//!   thread: copy its words, `Acquire` fence, check the generation (only a
//!   reset changes it). At most half the segments are held at once
//!   ([`HOLD_SHARE`]); past that a cut copies.
//!
//! [`reset`]: Segments::reset
//!
//! The words are atomics used with `Relaxed` stores and loads, which compile
//! to plain moves: no `unsafe`. The protocol is model-checked with loom
//! (`--cfg blackbox_loom`) and tested against a model (see `tests.rs`).

pub(crate) mod codec;
#[cfg(test)]
mod tests;

use crate::sync::{AtomicU32, AtomicU64, Ordering, Queue, fence};
use crossbeam_utils::CachePadded;

/// Bytes of one segment's event words.
pub(crate) const SEGMENT_BYTES: usize = 4096;

/// Words of one segment.
pub(crate) const SEGMENT_WORDS: usize = SEGMENT_BYTES / 4;

/// Bytes of one segment's header (cache-padded).
pub(crate) const HEADER_BYTES: usize = std::mem::size_of::<CachePadded<Header>>();

const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const WRITING: u64 = 2;
const SEALED: u64 = 3;
const STATE: u64 = 3;
const PINNED: u64 = 4;
/// One hold (bits 3 to 7 count them).
const HOLD: u64 = 8;
const HOLDS: u64 = 0xf8;
const GEN_SHIFT: u32 = 8;

/// At most `1 / HOLD_SHARE` of the segments are held by cuts at once.
pub(crate) const HOLD_SHARE: usize = 2;

fn generation(ctl: u64) -> u64 {
    ctl >> GEN_SHIFT
}

/// A segment's header: who wrote it and when. Cache-padded, so that one
/// segment's control word shares no line with another's. (The fill a writer
/// stores on every event is the first of the segment's words.)
#[derive(Debug)]
struct Header {
    ctl: AtomicU64,
    /// The writing thread's number (its lane).
    thread: AtomicU32,
    /// The thread's segment count before this one (0: its first).
    seq: AtomicU64,
    /// Raw clock the first delta counts from (the thread's last timed event before).
    base: AtomicU64,
    /// Events the thread wrote before this segment.
    events_before: AtomicU64,
    /// Raw time of the last timed event, set when sealed.
    end: AtomicU64,
    /// High 32 bits of task ids in force at the segment's start.
    task_high: AtomicU32,
}

/// Who claims a segment and where its history starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) thread: u32,
    pub(crate) seq: u64,
    pub(crate) base: u64,
    pub(crate) events_before: u64,
    pub(crate) task_high: u32,
}

/// A copy of one segment, as a snapshot found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentCopy {
    pub(crate) index: u32,
    pub(crate) generation: u64,
    pub(crate) claim: Claim,
    /// Raw time of its last timed event (sealed), or the snapshot's `now`.
    pub(crate) end: u64,
    pub(crate) sealed: bool,
    /// Events in `words`.
    pub(crate) events: u32,
    pub(crate) words: Words,
}

/// A segment's event words, as a snapshot took them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Words {
    /// Copied out of the buffer.
    Copied(Vec<u32>),
    /// Held in place (see the protocol): this many words, read when needed
    /// with [`Segments::read_held`], released with [`Segments::release`].
    Held(usize),
}

impl Words {
    /// The copied words (none for a held segment).
    #[cfg(all(test, blackbox_loom))]
    pub(crate) fn copied(&self) -> &[u32] {
        match self {
            Words::Copied(w) => w,
            Words::Held(_) => &[],
        }
    }
}

/// What a snapshot found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) segments: Vec<SegmentCopy>,
    /// Segments recycled while they were being copied.
    pub(crate) discarded: u64,
    /// Segments of the range left out for the snapshot's byte limit: their
    /// thread and events.
    pub(crate) left_out: Vec<(u32, u64)>,
}

/// The segments of one recorder.
#[derive(Debug)]
pub(crate) struct Segments {
    headers: Box<[CachePadded<Header>]>,
    words: Box<[AtomicU32]>,
    seg_words: usize,
    /// Sealed (and never used) segments, oldest first.
    fifo: Queue,
    /// Events in segments that were recycled.
    overwritten: AtomicU64,
    /// Events in segments that were sealed.
    sealed_events: AtomicU64,
    /// Segments pinned now (only the capture thread changes it).
    pinned: AtomicU64,
    /// Holds taken by cuts and not released.
    held: AtomicU64,
    /// Times a segment may have become claimable (a seal, a hold released,
    /// an unpin, a reset): a writer whose claim failed tries again only
    /// once this moved ([`Segments::freed`]).
    freed: AtomicU64,
    /// Segments `claim` popped (test builds): its cost.
    #[cfg(test)]
    claim_pops: AtomicU64,
}

impl Segments {
    /// `count` segments of `seg_words` words each, the fill and the events
    /// (at least one segment, and 9 words: the fill, and the largest event
    /// with its time base and task high bits).
    pub(crate) fn new(count: usize, seg_words: usize) -> Segments {
        let count = count.max(1);
        let seg_words = seg_words.max(9);
        let s = Segments {
            headers: (0..count)
                .map(|_| {
                    CachePadded::new(Header {
                        ctl: AtomicU64::new(FREE),
                        thread: AtomicU32::new(0),
                        seq: AtomicU64::new(0),
                        base: AtomicU64::new(0),
                        events_before: AtomicU64::new(0),
                        end: AtomicU64::new(0),
                        task_high: AtomicU32::new(0),
                    })
                })
                .collect(),
            words: (0..count * seg_words).map(|_| AtomicU32::new(0)).collect(),
            seg_words,
            fifo: Queue::new(count),
            overwritten: AtomicU64::new(0),
            sealed_events: AtomicU64::new(0),
            pinned: AtomicU64::new(0),
            held: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            #[cfg(test)]
            claim_pops: AtomicU64::new(0),
        };
        for i in 0..count {
            s.fifo.push(i as u32);
        }
        s
    }

    /// Number of segments.
    pub(crate) fn count(&self) -> usize {
        self.headers.len()
    }

    /// Words per segment.
    pub(crate) fn seg_words(&self) -> usize {
        self.seg_words
    }

    /// Bytes of memory held (words and headers).
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 4 + self.headers.len() * std::mem::size_of::<CachePadded<Header>>()
    }

    /// Forgets everything, for a new recorder (no thread may write any more).
    pub(crate) fn reset(&self) {
        while self.fifo.pop().is_some() {}
        for (i, h) in self.headers.iter().enumerate() {
            let g = generation(h.ctl.load(Ordering::Relaxed));
            h.ctl.store((g + 1) << GEN_SHIFT | FREE, Ordering::Release);
            self.fill(i as u32).store(0, Ordering::Relaxed);
            self.fifo.push(i as u32);
        }
        self.overwritten.store(0, Ordering::Relaxed);
        self.sealed_events.store(0, Ordering::Relaxed);
        self.pinned.store(0, Ordering::Relaxed);
        self.held.store(0, Ordering::Relaxed);
        self.freed.fetch_add(1, Ordering::Release);
    }

    /// How many times a segment may have become claimable so far. A writer
    /// whose claim failed reads it at each event (its slow path) and
    /// claims again only when it changed: a thread left without a segment
    /// costs one shared load an event, not a pass over the pinned segments.
    /// (Raised after the segment is back in the queue: a writer that read
    /// the old value tries again at its next event.)
    pub(crate) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Acquire)
    }

    /// Segments `claim` popped so far.
    #[cfg(test)]
    pub(crate) fn claim_pops(&self) -> u64 {
        self.claim_pops.load(Ordering::Relaxed)
    }

    /// The event words and the published fill (`next | events << 16`, see the protocol) of segment `i`.
    pub(crate) fn segment(&self, i: u32) -> (&[AtomicU32], &AtomicU32) {
        let (fill, words) = self
            .segment_with_fill(i)
            .split_first()
            .unwrap_or_else(|| unreachable!("a segment has at least 9 words"));
        (words, fill)
    }

    /// Segment `i` as a writer holds it: the fill (word 0), then the events.
    pub(crate) fn segment_with_fill(&self, i: u32) -> &[AtomicU32] {
        let i = i as usize;
        &self.words[i * self.seg_words..(i + 1) * self.seg_words]
    }

    /// The published fill of segment `i`.
    fn fill(&self, i: u32) -> &AtomicU32 {
        &self.words[i as usize * self.seg_words]
    }

    /// Events recorded: in sealed segments, plus those in segments being written.
    pub(crate) fn recorded(&self) -> u64 {
        let current: u64 = (0..self.headers.len() as u32)
            .filter(|&i| self.headers[i as usize].ctl.load(Ordering::Relaxed) & STATE == WRITING)
            .map(|i| u64::from(self.fill(i).load(Ordering::Relaxed) >> 16))
            .sum();
        self.sealed_events.load(Ordering::Relaxed) + current
    }

    /// The thread numbers that hold events in some segment now.
    pub(crate) fn threads_present(&self) -> std::collections::HashSet<u32> {
        self.headers
            .iter()
            .filter(|h| {
                let s = h.ctl.load(Ordering::Acquire) & STATE;
                s == WRITING || s == SEALED
            })
            .map(|h| h.thread.load(Ordering::Relaxed))
            .collect()
    }

    /// Takes the oldest unpinned sealed segment for a writer; `None` when
    /// every segment is some thread's current one, pinned or held.
    pub(crate) fn claim(&self, claim: Claim) -> Option<u32> {
        // Each pinned segment popped is pushed back once; at most `count` tries.
        for _ in 0..self.headers.len() {
            let i = self.fifo.pop()?;
            #[cfg(test)]
            self.claim_pops.fetch_add(1, Ordering::Relaxed);
            let h = &self.headers[i as usize];
            let mut ctl = h.ctl.load(Ordering::Acquire);
            loop {
                let state = ctl & STATE;
                if ctl & (PINNED | HOLDS) != 0 || !(state == FREE || state == SEALED) {
                    break;
                }
                let next = (generation(ctl) + 1) << GEN_SHIFT | CLAIMING;
                match h
                    .ctl
                    .compare_exchange(ctl, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        // Order the new generation before every word this
                        // writer overwrites (pairs with the reader's fence).
                        fence(Ordering::Release);
                        if state == SEALED {
                            let lost = self.fill(i).load(Ordering::Relaxed) >> 16;
                            self.overwritten
                                .fetch_add(u64::from(lost), Ordering::Relaxed);
                        }
                        self.fill(i).store(0, Ordering::Relaxed);
                        h.thread.store(claim.thread, Ordering::Relaxed);
                        h.seq.store(claim.seq, Ordering::Relaxed);
                        h.base.store(claim.base, Ordering::Relaxed);
                        h.events_before
                            .store(claim.events_before, Ordering::Relaxed);
                        h.task_high.store(claim.task_high, Ordering::Relaxed);
                        h.end.store(0, Ordering::Relaxed);
                        h.ctl.store(next & !STATE | WRITING, Ordering::Release);
                        return Some(i);
                    }
                    Err(now) => ctl = now,
                }
            }
            // Pinned or held (or, by a bug, not sealed): back to the end of the queue.
            debug_assert!(
                ctl & STATE == SEALED || ctl & STATE == FREE || ctl & (PINNED | HOLDS) != 0
            );
            self.fifo.push(i);
            // Unpinned or released while it was out of the queue: the
            // `freed` raised then may have been read by a writer that did
            // not find it (this claim had it), and that writer waits for
            // the next raise. Raise it again now that it is back. (Rare: a
            // pinned or held segment freed during one claim's pass.)
            fence(Ordering::SeqCst);
            let now = h.ctl.load(Ordering::Relaxed);
            if now & (PINNED | HOLDS) == 0 && now & STATE == SEALED {
                self.freed.fetch_add(1, Ordering::Release);
            }
        }
        None
    }

    /// Seals a writer's segment: it joins the FIFO of segments to reuse.
    pub(crate) fn seal(&self, i: u32, end: u64) {
        let h = &self.headers[i as usize];
        h.end.store(end, Ordering::Relaxed);
        let events = self.fill(i).load(Ordering::Relaxed) >> 16;
        self.sealed_events
            .fetch_add(u64::from(events), Ordering::Relaxed);
        let mut ctl = h.ctl.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(ctl & STATE, WRITING, "sealing a segment not being written");
            let next = ctl & !STATE | SEALED;
            match h
                .ctl
                .compare_exchange_weak(ctl, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => ctl = now,
            }
        }
        self.fifo.push(i);
        self.freed.fetch_add(1, Ordering::Release);
    }

    /// Events in segments recycled so far.
    pub(crate) fn overwritten(&self) -> u64 {
        self.overwritten.load(Ordering::Relaxed)
    }

    /// Segments pinned now.
    pub(crate) fn pinned(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Copies the segments holding events in `[from, to]` (raw clock), or all
    /// of them with `None`, without stopping any writer. `now` stands for the
    /// end of segments still being written.
    ///
    /// With a `limit`, at most about that many bytes are copied: the oldest
    /// segments of the range first, and those starting at or after the
    /// first one that does not fit are left out (listed in `left_out`), on
    /// every thread alike, so what is copied is the whole range up to one
    /// moment.
    ///
    /// With `hold`, a sealed segment is held in place rather than copied
    /// (while fewer than `1 / HOLD_SHARE` of the segments are held): the
    /// caller releases it with [`release`](Segments::release).
    pub(crate) fn snapshot(
        &self,
        range: Option<(u64, u64)>,
        now: u64,
        limit: Option<usize>,
        hold: bool,
    ) -> Snapshot {
        let mut out = Snapshot::default();
        let cutoff = limit.map_or(u64::MAX, |limit| self.cutoff(range, now, limit));
        for (i, h) in self.headers.iter().enumerate() {
            let c1 = h.ctl.load(Ordering::Acquire);
            let state = c1 & STATE;
            if state != WRITING && state != SEALED {
                continue;
            }
            let sealed = state == SEALED;
            let claim = Claim {
                thread: h.thread.load(Ordering::Relaxed),
                seq: h.seq.load(Ordering::Relaxed),
                base: h.base.load(Ordering::Relaxed),
                events_before: h.events_before.load(Ordering::Relaxed),
                task_high: h.task_high.load(Ordering::Relaxed),
            };
            let end = if sealed {
                h.end.load(Ordering::Relaxed)
            } else {
                now
            };
            if let Some((from, to)) = range
                && (claim.base > to || end < from)
            {
                // Checked again below: a recycled header may have misled us,
                // but then the copy would be dropped anyway.
                fence(Ordering::Acquire);
                if generation(h.ctl.load(Ordering::Relaxed)) == generation(c1) {
                    continue;
                }
            }
            let (words, fill) = self.segment(i as u32);
            let fill = fill.load(Ordering::Acquire);
            if claim.base >= cutoff {
                out.left_out.push((claim.thread, u64::from(fill >> 16)));
                continue;
            }
            // `next` counts the fill word itself (see the protocol).
            let len = ((fill & 0xffff) as usize)
                .saturating_sub(1)
                .min(words.len());
            let words = if hold && sealed && self.hold(i as u32, generation(c1)) {
                Words::Held(len)
            } else {
                let copy: Vec<u32> = words[..len]
                    .iter()
                    .map(|w| w.load(Ordering::Relaxed))
                    .collect();
                fence(Ordering::Acquire);
                let c2 = h.ctl.load(Ordering::Relaxed);
                if generation(c2) != generation(c1) {
                    out.discarded += 1;
                    continue;
                }
                Words::Copied(copy)
            };
            out.segments.push(SegmentCopy {
                index: i as u32,
                generation: generation(c1),
                claim,
                end,
                sealed,
                events: fill >> 16,
                words,
            });
        }
        out
    }

    /// The start of the oldest segment of `range` that does not fit in
    /// `limit` bytes with the older ones (`u64::MAX` when all fit). Read
    /// from the headers alone, racing with writers: a segment recycled
    /// meanwhile moves the moment a little, and is dropped by the copy
    /// anyway.
    fn cutoff(&self, range: Option<(u64, u64)>, now: u64, limit: usize) -> u64 {
        let mut starts = self.in_range(range, now);
        starts.sort_unstable();
        let mut total = 0usize;
        for (base, bytes) in starts {
            total += bytes;
            if total > limit {
                return base;
            }
        }
        u64::MAX
    }

    /// Bytes of events the segments with events in `range` hold (raw
    /// clock; `now` ends the segments still written), from the headers.
    pub(crate) fn bytes_in(&self, range: (u64, u64), now: u64) -> usize {
        self.in_range(Some(range), now)
            .iter()
            .map(|&(_, b)| b)
            .sum()
    }

    /// `(start, bytes of events)` of each segment with events in `range`
    /// (all: `None`), read from the headers alone, racing with writers.
    fn in_range(&self, range: Option<(u64, u64)>, now: u64) -> Vec<(u64, usize)> {
        let mut starts: Vec<(u64, usize)> = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            let state = h.ctl.load(Ordering::Acquire) & STATE;
            if state != WRITING && state != SEALED {
                continue;
            }
            let base = h.base.load(Ordering::Relaxed);
            let end = if state == SEALED {
                h.end.load(Ordering::Relaxed)
            } else {
                now
            };
            if range.is_some_and(|(from, to)| base > to || end < from) {
                continue;
            }
            let fill = self.fill(i as u32).load(Ordering::Relaxed);
            starts.push((base, ((fill & 0xffff) as usize).saturating_sub(1) * 4));
        }
        starts
    }

    /// Pins segment `i` if it still holds generation `generation`; `false`
    /// when it was recycled since. Only the capture thread pins.
    pub(crate) fn pin(&self, i: u32, gen_seen: u64) -> bool {
        let h = &self.headers[i as usize];
        let mut ctl = h.ctl.load(Ordering::Acquire);
        loop {
            let state = ctl & STATE;
            if generation(ctl) != gen_seen || !(state == WRITING || state == SEALED) {
                return false;
            }
            if ctl & PINNED != 0 {
                return true;
            }
            match h.ctl.compare_exchange_weak(
                ctl,
                ctl | PINNED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.pinned.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(now) => ctl = now,
            }
        }
    }

    /// Holds sealed segment `i` in generation `gen_seen` for a cut: it is
    /// not claimed until released. `false` when it was recycled, is not
    /// sealed, or the holds are at their limit.
    fn hold(&self, i: u32, gen_seen: u64) -> bool {
        let limit = (self.headers.len() / HOLD_SHARE) as u64;
        if self.held.load(Ordering::Relaxed) >= limit {
            return false;
        }
        let h = &self.headers[i as usize];
        let mut ctl = h.ctl.load(Ordering::Acquire);
        loop {
            if generation(ctl) != gen_seen || ctl & STATE != SEALED || ctl & HOLDS == HOLDS {
                return false;
            }
            match h
                .ctl
                .compare_exchange_weak(ctl, ctl + HOLD, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.held.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(now) => ctl = now,
            }
        }
    }

    /// Releases one hold of segment `i` in generation `gen_seen` (a no-op
    /// once a reset forgot it).
    pub(crate) fn release(&self, i: u32, gen_seen: u64) {
        let h = &self.headers[i as usize];
        let mut ctl = h.ctl.load(Ordering::Acquire);
        loop {
            if generation(ctl) != gen_seen || ctl & HOLDS == 0 {
                return;
            }
            match h
                .ctl
                .compare_exchange_weak(ctl, ctl - HOLD, Ordering::SeqCst, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => ctl = now,
            }
        }
        // A reset may have zeroed the count meanwhile.
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        self.freed.fetch_add(1, Ordering::Release);
    }

    /// Reads the first `len` words of held segment `i` (generation
    /// `gen_seen`) into `out`; `false` when a reset recycled it.
    pub(crate) fn read_held(&self, i: u32, gen_seen: u64, len: usize, out: &mut Vec<u32>) -> bool {
        let (words, _) = self.segment(i);
        out.clear();
        out.extend(
            words[..len.min(words.len())]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
        fence(Ordering::Acquire);
        generation(self.headers[i as usize].ctl.load(Ordering::Relaxed)) == gen_seen
    }

    /// Holds taken by cuts and not released.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Unpins segment `i` (a no-op if it is not pinned).
    pub(crate) fn unpin(&self, i: u32) {
        // SeqCst: ordered against a claim's check after it puts a pinned
        // segment back (see `claim`).
        let before = self.headers[i as usize]
            .ctl
            .fetch_and(!PINNED, Ordering::SeqCst);
        if before & PINNED != 0 {
            self.pinned.fetch_sub(1, Ordering::Relaxed);
            self.freed.fetch_add(1, Ordering::Release);
        }
    }
}

impl Segments {
    /// Whether segment `i`, still in generation `gen_seen`, may hold events
    /// at or after `from` (being written, or sealed with its end there).
    fn holds_from(&self, i: u32, gen_seen: u64, from: u64) -> bool {
        let h = &self.headers[i as usize];
        let ctl = h.ctl.load(Ordering::Acquire);
        generation(ctl) == gen_seen
            && (ctl & STATE == WRITING
                || ctl & STATE == SEALED && h.end.load(Ordering::Relaxed) >= from)
    }

    /// The unpinned segments that may hold events at or after `from`, oldest
    /// end first: `(index, generation)`.
    fn unpinned_from(&self, from: u64) -> Vec<(u32, u64)> {
        let mut v: Vec<(u64, u32, u64)> = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            let ctl = h.ctl.load(Ordering::Acquire);
            if ctl & PINNED != 0 {
                continue;
            }
            let end = match ctl & STATE {
                WRITING => u64::MAX,
                SEALED => h.end.load(Ordering::Relaxed),
                _ => continue,
            };
            if end >= from {
                v.push((end, i as u32, generation(ctl)));
            }
        }
        v.sort_unstable();
        v.into_iter().map(|(_, i, g)| (i, g)).collect()
    }
}

/// The capture thread's pins: the segments that hold events a window not yet
/// cut needs, kept out of the rotation, at most `limit` of them.
#[derive(Debug)]
pub(crate) struct Pinner {
    held: Vec<(u32, u64)>,
    limit: usize,
    refused: std::collections::HashSet<(u32, u64)>,
}

impl Pinner {
    pub(crate) fn new(limit: usize) -> Pinner {
        Pinner {
            held: Vec::new(),
            limit,
            refused: std::collections::HashSet::new(),
        }
    }

    /// Pins every segment that may hold events at or after `from`, oldest
    /// first, and unpins those that no longer can; `None` unpins all.
    /// Returns how many segments were refused for the first time (over the limit).
    pub(crate) fn update(&mut self, segments: &Segments, from: Option<u64>) -> u64 {
        let Some(from) = from else {
            self.release(segments);
            return 0;
        };
        self.held.retain(|&(i, g)| {
            let keep = segments.holds_from(i, g, from);
            if !keep {
                segments.unpin(i);
            }
            keep
        });
        let mut refused = 0;
        for (i, g) in segments.unpinned_from(from) {
            if self.held.len() >= self.limit {
                if self.refused.insert((i, g)) {
                    refused += 1;
                }
                continue;
            }
            if segments.pin(i, g) {
                self.held.push((i, g));
            }
        }
        if self.refused.len() > segments.count() {
            self.refused.clear();
        }
        refused
    }

    /// Unpins everything.
    pub(crate) fn release(&mut self, segments: &Segments) {
        for (i, _) in self.held.drain(..) {
            segments.unpin(i);
        }
        self.refused.clear();
    }

    /// Segments pinned by this pinner.
    #[cfg(all(test, not(blackbox_loom)))]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }
}
