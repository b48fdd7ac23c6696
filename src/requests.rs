//! The table of open request spans, shared by the layer (which opens, enters,
//! exits and closes them) and the capture thread (which finds the requests
//! that are slow while still open).
//!
//! Lock-free: a span id hashes (the whole id, mixed, so tracing-subscriber's
//! ids, which share their low bits across threads, spread out) to a bucket of
//! 8 slots, each slot's tag beside its word, four slots to a cache line: a
//! request in its bucket's first four slots (nearly every one, in a sparse
//! table) is found and read in one line; a lookup compares the bucket's
//! eight tags inline, unrolled, and an open tries the first slot inline and
//! the others out of line. A slot holds all of an open request's
//! state (its id, name, start, OpenTelemetry ids and error flag), so the
//! layer keeps nothing in the span's extensions: no allocation and no
//! registry lookup per request. A request whose bucket is full falls back to
//! the span's extensions and is counted: it is still captured when it closes
//! slow, but not seen while open.
//!
//! # Protocol
//!
//! A slot `i` is six words: `tags[i]` (the code's `tag(i)`; 0: free, else
//! the owning span id), `words[i]` (`word(i)`; 0 while unpublished, else
//! [`pack`]ed request id, name and layer tag in the low 58 bits, flags
//! above), `starts[i]` and three id words.
//!
//! - **open** (layer, the span's opener): CAS `tags[i]` 0 → span id
//!   (`Acquire`: it follows the previous owner's close), a `Release` fence,
//!   store `starts[i]`, then store `words[i]` (`Release`, never 0: request
//!   ids are never 0). The tag CAS makes the slot the opener's alone.
//! - **get / enter / exit** (layer): find the slot whose tag is the span id
//!   (`Acquire`), read its word (`Acquire`). tracing orders a span's enters
//!   after its creation, so the word is published by then.
//! - **ids** (layer on first enter, capture thread for a stuck request):
//!   whoever sets `IDS_CLAIMED` first (CAS on the word, with the id bits
//!   unchanged) writes the three id words, then sets `IDS_SET` (`Release`).
//!   A reader reads the id words only after seeing `IDS_SET` (`Acquire`). The
//!   loser of the claim uses its own ids for its window (the capture thread:
//!   fresh ones, so a stuck window may then carry other ids than the close).
//! - **error** (layer, inside the request): `fetch_or` of `ERROR` on the
//!   word; the span is live, so the slot is its own.
//! - **close** (layer, the owner): read the word, the start and the ids (as
//!   **ids** reads them), then store `words[i]` = 0, then `tags[i]` = 0
//!   (`Release`): the next owner sees the slot cleared.
//! - **scan** (capture thread): read the tag (`Acquire`) and the word
//!   (`Acquire`), skip a free or unpublished slot, read the start, an
//!   `Acquire` fence, and re-read the word: if its id bits changed the slot
//!   was closed (and maybe reopened) meanwhile and the start may be the new
//!   owner's, so the slot is skipped this round (seqlock-style, the open's
//!   fence pairing with this one). Marks (`SEEN_SLOW`, `CAPTURED_OPEN`) are
//!   set by CAS on the word read, never on a word whose id bits changed, so
//!   a reused slot never inherits the old request's marks.
//!
//! What is not guarded: an id write by the capture thread racing the close
//! of the same request *and* the slot's immediate reuse can leave stale id
//! words behind an unset `IDS_SET`; they are never read (the flag is clear)
//! and the next claim overwrites them.
//!
//! The atomics come from [`crate::sync`]: under `--cfg blackbox_loom` the
//! table is small (2 buckets of 2 slots) and the models in `tests` check
//! open/close against scan and the two id writers against each other.

use crate::sync::{AtomicU64, Ordering, fence, hash_slot};
use opentelemetry::trace::{SpanId, TraceId};

/// Slots per bucket: 8 slots of 16 bytes, two cache lines.
#[cfg(not(blackbox_loom))]
const BUCKET: usize = 8;
/// Under loom, small enough to explore.
#[cfg(blackbox_loom)]
const BUCKET: usize = 2;

/// Buckets in the table (a power of two): 8,192 open requests at most in slots.
#[cfg(not(blackbox_loom))]
const BUCKETS: usize = 1024;
#[cfg(blackbox_loom)]
const BUCKETS: usize = 2;

/// The ids of the request were looked up (from OpenTelemetry) by the layer.
pub(crate) const IDS_LOOKED_UP: u64 = 1 << 63;
/// The slot's trace and span ids are set.
const IDS_SET: u64 = 1 << 62;
/// The ids were made by the recorder (no OpenTelemetry context).
const OWN_IDS: u64 = 1 << 61;
/// The capture thread saw the request open past the threshold.
const SEEN_SLOW: u64 = 1 << 60;
/// The capture thread captured the request while open (stuck).
const CAPTURED_OPEN: u64 = 1 << 59;
/// One writer claimed the slot's id words (see the protocol).
const IDS_CLAIMED: u64 = 1 << 58;
/// An `ERROR` event was recorded inside the request.
const ERROR: u64 = 1 << 57;
/// The bits of a word that say which open it is (request, name, layer).
const ID_BITS: u64 = ERROR - 1;

/// Bits of a layer's tag kept in a slot word.
pub(crate) const LAYER_TAG_MASK: u16 = 0x1ff;

/// A request's id, span name index and owning layer's tag, as packed in a slot.
pub(crate) fn pack(request: u64, name: u16, layer: u16) -> u64 {
    debug_assert!(request & 0xffff_ffff != 0, "request ids are never 0");
    (u64::from(layer & LAYER_TAG_MASK) << 48) | (u64::from(name) << 32) | (request & 0xffff_ffff)
}

/// The tag of the layer that opened the request (9 bits).
#[inline]
pub(crate) fn layer_of(word: u64) -> u16 {
    ((word >> 48) as u16) & LAYER_TAG_MASK
}

/// The request id and span name index of a slot word.
pub(crate) fn unpack(word: u64) -> (u64, u16) {
    (word & 0xffff_ffff, (word >> 32) as u16)
}

/// What a request's slot held when the request closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// The slot word ([`pack`] plus flags).
    pub(crate) word: u64,
    pub(crate) start_raw: u64,
    /// The ids set while it was open (by the layer from OpenTelemetry, or
    /// by the capture thread for a stuck request), and whether the recorder
    /// made them; read only for a slow request (see [`OpenRequests::take`]).
    pub(crate) ids: Option<(TraceId, SpanId, bool)>,
}

impl Closed {
    /// Whether an `ERROR` event was recorded inside the request.
    pub(crate) fn error(&self) -> bool {
        self.word & ERROR != 0
    }
}

/// One word per slot. A fixed length, so that a masked index needs no bounds check.
type Column = Box<[AtomicU64; BUCKET * BUCKETS]>;

/// A slot's tag and word side by side: finding a request and reading its
/// state touch one cache line.
#[derive(Debug, Default)]
#[repr(C)]
struct Slot {
    tag: AtomicU64,
    word: AtomicU64,
}

/// A bucket's slots, aligned so that each cache line holds four whole slots
/// (a bucket of 8 is two lines; a request in the first four slots, nearly
/// every one in a sparse table, is found in one).
#[derive(Debug, Default)]
#[repr(C, align(128))]
struct Bucket([Slot; BUCKET]);

/// An open request the capture thread found past a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenRequest {
    pub(crate) request_id: u64,
    pub(crate) name: u16,
    pub(crate) start_raw: u64,
    /// Open longer than the stuck limit, and not captured open before.
    pub(crate) stuck: bool,
    /// First time seen past the threshold.
    pub(crate) newly_slow: bool,
    slot: usize,
}

/// The open-request table.
#[derive(Debug)]
pub(crate) struct OpenRequests {
    /// Slot `i` is slot `i % BUCKET` of bucket `i / BUCKET`.
    slots: Box<[Bucket; BUCKETS]>,
    starts: Column,
    trace_hi: Column,
    trace_lo: Column,
    span: Column,
    /// Requests open outside the table (bucket full).
    fallbacks: AtomicU64,
    /// Requests ever opened outside the table.
    fallbacks_total: AtomicU64,
}

impl Default for OpenRequests {
    fn default() -> Self {
        let n = BUCKET * BUCKETS;
        let zeros = || {
            let v: Box<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
            Column::try_from(v).unwrap_or_else(|_| unreachable!("{n} slots"))
        };
        let slots: Box<[Bucket]> = (0..BUCKETS).map(|_| Bucket::default()).collect();
        OpenRequests {
            slots: slots
                .try_into()
                .unwrap_or_else(|_| unreachable!("{BUCKETS} buckets")),
            starts: zeros(),
            trace_hi: zeros(),
            trace_lo: zeros(),
            span: zeros(),
            fallbacks: AtomicU64::new(0),
            fallbacks_total: AtomicU64::new(0),
        }
    }
}

impl OpenRequests {
    /// Slot `i`.
    #[inline(always)]
    fn slot(&self, i: usize) -> &Slot {
        let i = i & (BUCKET * BUCKETS - 1);
        &self.slots[i / BUCKET].0[i % BUCKET]
    }

    /// Slot `i`'s tag: 0 when free, else the span id that owns it.
    #[inline(always)]
    fn tag(&self, i: usize) -> &AtomicU64 {
        &self.slot(i).tag
    }

    /// Slot `i`'s word: [`pack`] plus flags, 0 while unpublished.
    #[inline(always)]
    fn word(&self, i: usize) -> &AtomicU64 {
        &self.slot(i).word
    }

    /// The span's bucket: the top bits of a multiplicative (Fibonacci)
    /// hash, which depend on every bit of the id, so tracing-subscriber's
    /// ids, which share their low bits across threads, spread out.
    #[inline(always)]
    fn bucket_index(span_id: u64) -> usize {
        hash_slot(span_id, BUCKETS.trailing_zeros()) & (BUCKETS - 1)
    }

    /// The slot of a live request span, if it holds one: the bucket's eight
    /// tags compared inline, unrolled over its fixed-length array (three
    /// instructions a slot; every enter and exit of a span that is no
    /// request, a child span or Tokio's `runtime.spawn`, compares them all).
    #[inline(always)]
    fn lookup(&self, span_id: u64) -> Option<(usize, &Slot)> {
        let b = Self::bucket_index(span_id);
        let (k, slot) = self.slots[b]
            .0
            .iter()
            .enumerate()
            .find(|(_, s)| s.tag.load(Ordering::Acquire) == span_id)?;
        Some((b * BUCKET + k, slot))
    }

    /// The index of a live request span's slot ([`lookup`](Self::lookup)).
    #[inline(always)]
    fn find(&self, span_id: u64) -> Option<usize> {
        self.lookup(span_id).map(|(i, _)| i)
    }

    /// Claims a slot for a new request span; `false` (and counted) when its bucket is full.
    #[inline]
    pub(crate) fn open(&self, span_id: u64, word: u64, start_raw: u64) -> bool {
        debug_assert!(span_id != 0, "span ids are never 0");
        debug_assert!(
            word != 0 && word & !ID_BITS == 0,
            "a new slot word is published without flags"
        );
        let first = Self::bucket_index(span_id) * BUCKET;
        if self.claim(first, span_id) {
            self.publish(first, word, start_raw);
            return true;
        }
        self.open_after(first, span_id, word, start_raw)
    }

    /// Takes free slot `i` for `span_id`; `false` when it is taken.
    #[inline(always)]
    fn claim(&self, i: usize, span_id: u64) -> bool {
        self.tag(i).load(Ordering::Relaxed) == 0
            && self
                .tag(i)
                .compare_exchange(0, span_id, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Publishes a claimed slot's start and word.
    #[inline(always)]
    fn publish(&self, i: usize, word: u64, start_raw: u64) {
        // Pairs with the scan's fence: a start read there that is this
        // one's makes the re-read word this open's (or later).
        fence(Ordering::Release);
        self.starts[i].store(start_raw, Ordering::Relaxed);
        self.word(i).store(word, Ordering::Release);
    }

    /// An open whose bucket's first slot is taken: the other slots, then
    /// the fallback (counted).
    #[cold]
    #[inline(never)]
    fn open_after(&self, first: usize, span_id: u64, word: u64, start_raw: u64) -> bool {
        if let Some(i) = (first + 1..first + BUCKET).find(|&i| self.claim(i, span_id)) {
            self.publish(i, word, start_raw);
            return true;
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.fallbacks_total.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The slot word of a live request span (`pack` plus flags).
    #[inline(always)]
    pub(crate) fn get(&self, span_id: u64) -> Option<u64> {
        self.lookup(span_id)
            .map(|(_, s)| s.word.load(Ordering::Acquire))
    }

    /// Marks the ids as looked up; `true` for the caller that marked them.
    pub(crate) fn mark_ids(&self, span_id: u64) -> bool {
        self.find(span_id).is_some_and(|i| {
            self.word(i).fetch_or(IDS_LOOKED_UP, Ordering::AcqRel) & IDS_LOOKED_UP == 0
        })
    }

    /// Stores the request's OpenTelemetry ids (once); `own`: the window
    /// exports the request span itself (the app's sampler dropped it).
    pub(crate) fn set_ids(&self, span_id: u64, trace: TraceId, span: SpanId, own: bool) {
        if let Some(i) = self.find(span_id) {
            self.store_ids(i, trace, span, if own { OWN_IDS } else { 0 });
        }
    }

    /// Writes the slot's ids if this caller claims them first (and the
    /// slot still holds the open whose word was read); `true` when written.
    fn store_ids(&self, i: usize, trace: TraceId, span: SpanId, own: u64) -> bool {
        let mut cur = self.word(i).load(Ordering::Acquire);
        let open = cur & ID_BITS;
        loop {
            if cur & (IDS_CLAIMED | IDS_SET) != 0 || cur & ID_BITS != open || open == 0 {
                return false;
            }
            match self.word(i).compare_exchange_weak(
                cur,
                cur | IDS_CLAIMED,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(w) => cur = w,
            }
        }
        let t = u128::from_be_bytes(trace.to_bytes());
        self.trace_hi[i].store((t >> 64) as u64, Ordering::Relaxed);
        self.trace_lo[i].store(t as u64, Ordering::Relaxed);
        self.span[i].store(u64::from_be_bytes(span.to_bytes()), Ordering::Relaxed);
        let before = self.word(i).fetch_or(IDS_SET | own, Ordering::Release);
        debug_assert!(before & IDS_SET == 0, "only the claimer publishes the ids");
        true
    }

    /// The ids stored for a slot, and whether the recorder made them (read
    /// for a slow request only: out of the close's line).
    #[inline(never)]
    fn ids_at(&self, i: usize) -> Option<(TraceId, SpanId, bool)> {
        let w = self.word(i).load(Ordering::Acquire);
        (w & IDS_SET != 0).then(|| {
            let t = u128::from(self.trace_hi[i].load(Ordering::Relaxed)) << 64
                | u128::from(self.trace_lo[i].load(Ordering::Relaxed));
            (
                TraceId::from_bytes(t.to_be_bytes()),
                SpanId::from_bytes(self.span[i].load(Ordering::Relaxed).to_be_bytes()),
                w & OWN_IDS != 0,
            )
        })
    }

    /// The ids stored for a live request span.
    #[cfg(test)]
    pub(crate) fn ids(&self, span_id: u64) -> Option<(TraceId, SpanId, bool)> {
        self.find(span_id).and_then(|i| self.ids_at(i))
    }

    /// The ids of an open request the capture thread found (made by the
    /// recorder now, and kept for the close, when it has none yet).
    pub(crate) fn ids_or_own(&self, r: &OpenRequest) -> (TraceId, SpanId, bool) {
        if let Some(ids) = self.ids_at(r.slot) {
            return ids;
        }
        use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
        let g = RandomIdGenerator::default();
        let (t, s) = (g.new_trace_id(), g.new_span_id());
        self.store_ids(r.slot, t, s, OWN_IDS);
        self.ids_at(r.slot).unwrap_or((t, s, true))
    }

    /// Marks a live request span as having had an `ERROR` event.
    pub(crate) fn mark_error(&self, span_id: u64) -> bool {
        self.find(span_id).is_some_and(|i| {
            self.word(i).fetch_or(ERROR, Ordering::Relaxed);
            true
        })
    }

    /// Frees a request span's slot and returns what it held, when the slot
    /// is held by the layer tagged `layer` (`None`: the span holds no slot,
    /// or another layer's). Called by the span's closer, its owner. The ids
    /// are read only when `slow(start)` says the request is slow: a fast
    /// request's close touches none of their lines.
    #[inline]
    pub(crate) fn take(
        &self,
        span_id: u64,
        layer: u16,
        slow: impl FnOnce(u64) -> bool,
    ) -> Option<Closed> {
        let i = self.find(span_id)?;
        let word = self.word(i).load(Ordering::Acquire);
        if layer_of(word) != layer & LAYER_TAG_MASK {
            return None;
        }
        let start_raw = self.starts[i].load(Ordering::Relaxed);
        let closed = Closed {
            word,
            start_raw,
            ids: if slow(start_raw) {
                self.ids_at(i)
            } else {
                None
            },
        };
        self.word(i).store(0, Ordering::Relaxed);
        self.tag(i).store(0, Ordering::Release);
        Some(closed)
    }

    /// Closes a request that was open outside the table.
    pub(crate) fn close_fallback(&self) {
        let before = self.fallbacks.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a fallback closed that was never opened");
    }

    /// Requests ever opened outside the table (bucket full).
    pub(crate) fn untracked_total(&self) -> u64 {
        self.fallbacks_total.load(Ordering::Relaxed)
    }

    /// Whether some open request lives outside the table.
    #[inline]
    pub(crate) fn any_fallbacks(&self) -> bool {
        self.fallbacks.load(Ordering::Relaxed) != 0
    }

    /// The open requests older than `slow_ticks` (by `now_raw`), marking each
    /// as seen; those older than `stuck_ticks` and not captured open before
    /// are flagged `stuck` and marked captured.
    pub(crate) fn scan(&self, now_raw: u64, slow_ticks: u64, stuck_ticks: u64) -> Vec<OpenRequest> {
        let mut out = Vec::new();
        'slots: for i in 0..BUCKET * BUCKETS {
            let tag = self.tag(i).load(Ordering::Acquire);
            if tag == 0 {
                continue;
            }
            let word = self.word(i).load(Ordering::Acquire);
            if word == 0 {
                continue; // opening or closing right now
            }
            let start = self.starts[i].load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.word(i).load(Ordering::Relaxed) & ID_BITS != word & ID_BITS
                || self.tag(i).load(Ordering::Relaxed) != tag
            {
                continue; // closed (and maybe reopened) meanwhile
            }
            let age = now_raw.saturating_sub(start);
            if age < slow_ticks {
                continue;
            }
            let newly_slow = word & SEEN_SLOW == 0;
            let stuck = age >= stuck_ticks && word & CAPTURED_OPEN == 0;
            let mark = SEEN_SLOW | if stuck { CAPTURED_OPEN } else { 0 };
            let mut cur = word;
            while cur & mark != mark {
                if cur & ID_BITS != word & ID_BITS {
                    continue 'slots; // closed meanwhile: mark nothing
                }
                match self.word(i).compare_exchange_weak(
                    cur,
                    cur | mark,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(w) => cur = w,
                }
            }
            let (request_id, name) = unpack(word);
            debug_assert!(request_id != 0, "a published word names its request");
            out.push(OpenRequest {
                request_id,
                name,
                start_raw: start,
                stuck,
                newly_slow,
                slot: i,
            });
        }
        out
    }
}

#[cfg(all(test, not(blackbox_loom)))]
mod tests {
    use super::*;

    #[test]
    fn open_find_close_and_fallback() {
        let t = OpenRequests::default();
        // Ids that share their low 12 bits, like tracing-subscriber's across threads.
        let ids: Vec<u64> = (1..=64).map(|k| (k << 22) | 5).collect();
        for (n, &id) in ids.iter().enumerate() {
            assert!(
                t.open(id, pack(n as u64 + 1, 7, 0), 100),
                "id {id} found no slot"
            );
        }
        assert!(
            !t.any_fallbacks(),
            "ids with equal low bits spread over buckets"
        );
        for (n, &id) in ids.iter().enumerate() {
            assert_eq!(t.get(id).map(unpack), Some((n as u64 + 1, 7)));
        }
        assert!(t.mark_ids(ids[0]));
        assert!(!t.mark_ids(ids[0]), "ids are looked up once");
        assert_eq!(t.get(3), None);
        assert!(t.mark_error(ids[0]));
        let closed = t.take(ids[0], 0, |_| true).expect("open");
        assert_eq!(unpack(closed.word), (1, 7));
        assert_eq!(closed.start_raw, 100);
        assert!(closed.error() && closed.ids.is_none());
        assert_eq!(t.get(ids[0]), None);
        assert_eq!(t.take(ids[0], 0, |_| true), None, "taken once");
        // A reopened slot starts without the old request's flags.
        assert!(t.open(ids[0], pack(99, 7, 3), 5));
        assert_eq!(t.take(ids[0], 0, |_| true), None, "another layer's");
        assert!(!t.take(ids[0], 3, |_| true).expect("open").error());
        // A full bucket falls back and counts.
        let same_bucket: Vec<u64> = (1..100_000u64)
            .filter(|&id| OpenRequests::bucket_index(id) == OpenRequests::bucket_index(1))
            .take(BUCKET + 1)
            .collect();
        let t = OpenRequests::default();
        for &id in &same_bucket[..BUCKET] {
            assert!(t.open(id, pack(1, 0, 0), 0));
        }
        assert!(!t.open(same_bucket[BUCKET], pack(2, 0, 0), 0));
        assert!(t.any_fallbacks());
        assert_eq!(
            t.take(same_bucket[BUCKET], 0, |_| true),
            None,
            "not in the table"
        );
        t.close_fallback();
        assert!(!t.any_fallbacks());
    }

    #[test]
    fn scan_finds_slow_then_stuck_once() {
        let t = OpenRequests::default();
        assert!(t.open(11, pack(1, 3, 0), 1_000));
        assert!(t.open(12, pack(2, 3, 0), 9_000));
        let found = t.scan(10_000, 5_000, 50_000);
        assert_eq!(found.len(), 1);
        assert!(found[0].newly_slow && !found[0].stuck);
        assert_eq!(found[0].request_id, 1);
        let again = t.scan(10_000, 5_000, 50_000);
        assert!(!again[0].newly_slow);
        let stuck = t.scan(60_000, 5_000, 50_000);
        assert_eq!(stuck.iter().filter(|r| r.stuck).count(), 2);
        assert!(t.scan(70_000, 5_000, 50_000).iter().all(|r| !r.stuck));
        let first = stuck.iter().find(|r| r.request_id == 1).copied().unwrap();
        let (trace, span, own) = t.ids_or_own(&first);
        assert!(own);
        assert_eq!(t.ids(11), Some((trace, span, true)), "kept for the close");
    }
}

/// Loom models of the protocol (`--cfg blackbox_loom`, a table of 2 buckets
/// of 2 slots).
#[cfg(all(test, blackbox_loom))]
mod models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A request opens, closes, and its slot is reused by the next request
    /// while the capture thread scans: a reported request carries its own
    /// start, and the new request inherits none of the old one's marks.
    ///
    /// Issue 27, tests that could not fail: the second request used to
    /// start at 1,000, after the scan's `now`, so a report mixing request
    /// 1's id with request 2's start was filtered out by its age before the
    /// assertion could see it; and the scan ran on the model's main thread
    /// before the spawned layer, where loom explored one interleaving only
    /// (a thread that only loads sets no backtracking point). Both starts
    /// are old enough now, the scan runs on a thread of its own, and the
    /// model checks that it explored interleavings where request 2 is seen.
    #[test]
    fn scan_never_mixes_a_reused_slot() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        static SAW_SECOND: AtomicUsize = AtomicUsize::new(0);
        loom::model(|| {
            RUNS.fetch_add(1, Relaxed);
            let t = Arc::new(OpenRequests::default());
            let layer = {
                let t = t.clone();
                thread::spawn(move || {
                    assert!(t.open(7, pack(1, 0, 0), 10));
                    assert!(t.take(7, 0, |_| true).is_some());
                    assert!(t.open(7, pack(2, 0, 0), 20));
                })
            };
            let scanner = {
                let t = t.clone();
                thread::spawn(move || {
                    let (mut first, mut second) = (false, false);
                    for r in t.scan(100, 50, 1_000_000) {
                        let pair = (r.request_id, r.start_raw);
                        assert!(pair == (1, 10) || pair == (2, 20), "{r:?}");
                        first |= r.request_id == 1;
                        second |= r.request_id == 2;
                    }
                    (first, second)
                })
            };
            layer.join().unwrap();
            let (first_reported, second_reported) = scanner.join().unwrap();
            if second_reported {
                SAW_SECOND.fetch_add(1, Relaxed);
            }
            // Where the scan marked request 1, loom 0.7.3 lets that
            // compare-exchange succeed on request 1's word after the layer
            // had replaced it (found here: the table then ends with request
            // 1's word; a plain three-store model shows the same, see the
            // note in RELIABILITY.md). Hardware never does (a
            // read-modify-write reads the newest value), so the end state is
            // checked only where the scan did not mark request 1.
            if !first_reported {
                let word = t.get(7).expect("request 2 is open");
                assert_eq!(unpack(word).0, 2);
                if !second_reported {
                    assert_eq!(word & (SEEN_SLOW | CAPTURED_OPEN), 0, "marks inherited");
                }
            }
        });
        let runs = RUNS.load(Relaxed);
        assert!(runs > 100, "loom explored {runs} interleavings");
        assert!(
            SAW_SECOND.load(Relaxed) > 0,
            "no interleaving reported request 2"
        );
    }

    /// The layer stores a request's OpenTelemetry ids while the capture
    /// thread captures it stuck: the table ends with one writer's ids, whole,
    /// and what the capture thread used is what the table says, unless the
    /// layer won the claim and had not published yet.
    #[test]
    fn two_id_writers_never_mix() {
        loom::model(|| {
            let t = Arc::new(OpenRequests::default());
            assert!(t.open(9, pack(1, 0, 0), 0));
            let (trace, span) = (TraceId::from_bytes([1; 16]), SpanId::from_bytes([2; 8]));
            let layer = {
                let t = t.clone();
                thread::spawn(move || t.set_ids(9, trace, span, false))
            };
            let found = t.scan(100, 10, 50);
            assert_eq!(found.len(), 1);
            assert!(found[0].stuck);
            let used = t.ids_or_own(&found[0]);
            layer.join().unwrap();
            let (t_ids, s_ids, own) = t.ids(9).expect("ids are set");
            if own {
                assert_ne!(t_ids, trace);
                assert_ne!(s_ids, span);
                assert_eq!(used, (t_ids, s_ids, true));
            } else {
                assert_eq!((t_ids, s_ids), (trace, span), "ids of two writers mixed");
                assert!(used == (trace, span, false) || used.2, "{used:?}");
            }
        });
    }
}
