//! The table of open request spans, shared by the layer (which opens, enters,
//! exits and closes them) and the capture thread (which finds the requests
//! that are slow while still open).
//!
//! Lock-free: a span id hashes (the whole id, mixed, so tracing-subscriber's
//! ids, which share their low bits across threads, spread out) to a bucket of
//! 8 slots in one cache line of tags. Opening a request claims a free slot
//! with a CAS, closing frees it; enter and exit look up the bucket, which
//! costs one cache line and no lock for every span. A request whose bucket is
//! full falls back to the span's extensions and is counted: it is still
//! captured when it closes slow, but not seen while open.
//!
//! Each slot holds the request's id, span name, start (raw clock) and, once
//! known, its trace and span ids, published by flag bits with `Release`.

use crate::capture::mix;
use opentelemetry::trace::{SpanId, TraceId};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per bucket: 8 tags of 8 bytes, one cache line.
const BUCKET: usize = 8;

/// Buckets in the table (a power of two): 8,192 open requests at most in slots.
const BUCKETS: usize = 1024;

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

/// A request's id, span name index and owning layer's tag, as packed in a slot.
pub(crate) fn pack(request: u64, name: u16, layer: u16) -> u64 {
    (u64::from(layer & 0x3ff) << 48) | (u64::from(name) << 32) | (request & 0xffff_ffff)
}

/// The tag of the layer that opened the request (10 bits).
#[inline]
pub(crate) fn layer_of(word: u64) -> u16 {
    ((word >> 48) & 0x3ff) as u16
}

/// The request id and span name index of a slot word.
pub(crate) fn unpack(word: u64) -> (u64, u16) {
    (word & 0xffff_ffff, (word >> 32) as u16)
}

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
    tags: Box<[AtomicU64]>,
    words: Box<[AtomicU64]>,
    starts: Box<[AtomicU64]>,
    trace_hi: Box<[AtomicU64]>,
    trace_lo: Box<[AtomicU64]>,
    span: Box<[AtomicU64]>,
    /// Requests open outside the table (bucket full).
    fallbacks: AtomicUsize,
    /// Requests ever opened outside the table.
    pub(crate) fallbacks_total: AtomicU64,
}

impl Default for OpenRequests {
    fn default() -> Self {
        let n = BUCKET * BUCKETS;
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        OpenRequests {
            tags: zeros(),
            words: zeros(),
            starts: zeros(),
            trace_hi: zeros(),
            trace_lo: zeros(),
            span: zeros(),
            fallbacks: AtomicUsize::new(0),
            fallbacks_total: AtomicU64::new(0),
        }
    }
}

impl OpenRequests {
    fn bucket(span_id: u64) -> std::ops::Range<usize> {
        let b = (mix(span_id) as usize) & (BUCKETS - 1);
        b * BUCKET..(b + 1) * BUCKET
    }

    /// The slot of a live request span, if it holds one.
    #[inline]
    fn find(&self, span_id: u64) -> Option<usize> {
        Self::bucket(span_id).find(|&i| self.tags[i].load(Ordering::Acquire) == span_id)
    }

    /// Claims a slot for a new request span; `false` (and counted) when its bucket is full.
    pub(crate) fn open(&self, span_id: u64, word: u64, start_raw: u64) -> bool {
        for i in Self::bucket(span_id) {
            if self.tags[i].load(Ordering::Relaxed) == 0
                && self.tags[i]
                    .compare_exchange(0, span_id, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.starts[i].store(start_raw, Ordering::Relaxed);
                self.words[i].store(word, Ordering::Release);
                return true;
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.fallbacks_total.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The slot word of a live request span (`pack` plus flags).
    #[inline]
    pub(crate) fn get(&self, span_id: u64) -> Option<u64> {
        self.find(span_id)
            .map(|i| self.words[i].load(Ordering::Acquire))
    }

    /// Marks the ids as looked up; `true` for the caller that marked them.
    pub(crate) fn mark_ids(&self, span_id: u64) -> bool {
        self.find(span_id).is_some_and(|i| {
            self.words[i].fetch_or(IDS_LOOKED_UP, Ordering::AcqRel) & IDS_LOOKED_UP == 0
        })
    }

    /// Stores the request's OpenTelemetry ids (once).
    pub(crate) fn set_ids(&self, span_id: u64, trace: TraceId, span: SpanId) {
        if let Some(i) = self.find(span_id) {
            self.store_ids(i, trace, span, 0);
        }
    }

    fn store_ids(&self, i: usize, trace: TraceId, span: SpanId, own: u64) -> bool {
        let w = self.words[i].load(Ordering::Acquire);
        if w & IDS_SET != 0 {
            return false;
        }
        let t = u128::from_be_bytes(trace.to_bytes());
        self.trace_hi[i].store((t >> 64) as u64, Ordering::Relaxed);
        self.trace_lo[i].store(t as u64, Ordering::Relaxed);
        self.span[i].store(u64::from_be_bytes(span.to_bytes()), Ordering::Relaxed);
        self.words[i].fetch_or(IDS_SET | own, Ordering::AcqRel) & IDS_SET == 0
    }

    /// The ids stored for a slot, and whether the recorder made them.
    fn ids_at(&self, i: usize) -> Option<(TraceId, SpanId, bool)> {
        let w = self.words[i].load(Ordering::Acquire);
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

    /// Frees a request span's slot (or its fallback count).
    pub(crate) fn close(&self, span_id: u64, slotted: bool) {
        if slotted {
            if let Some(i) = self.find(span_id) {
                self.words[i].store(0, Ordering::Relaxed);
                self.tags[i].store(0, Ordering::Release);
            }
        } else {
            self.fallbacks.fetch_sub(1, Ordering::Relaxed);
        }
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
        for i in 0..self.tags.len() {
            let tag = self.tags[i].load(Ordering::Acquire);
            if tag == 0 {
                continue;
            }
            let word = self.words[i].load(Ordering::Acquire);
            let start = self.starts[i].load(Ordering::Relaxed);
            if word == 0 || self.tags[i].load(Ordering::Acquire) != tag {
                continue; // opening or closing right now
            }
            let age = now_raw.saturating_sub(start);
            if age < slow_ticks {
                continue;
            }
            let newly_slow = word & SEEN_SLOW == 0;
            let stuck = age >= stuck_ticks && word & CAPTURED_OPEN == 0;
            let mark = SEEN_SLOW | if stuck { CAPTURED_OPEN } else { 0 };
            if word & mark != mark {
                self.words[i].fetch_or(mark, Ordering::AcqRel);
            }
            let (request_id, name) = unpack(word);
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

#[cfg(test)]
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
        t.close(ids[0], true);
        assert_eq!(t.get(ids[0]), None);
        // A full bucket falls back and counts.
        let same_bucket: Vec<u64> = (1..100_000u64)
            .filter(|&id| OpenRequests::bucket(id) == OpenRequests::bucket(1))
            .take(BUCKET + 1)
            .collect();
        let t = OpenRequests::default();
        for &id in &same_bucket[..BUCKET] {
            assert!(t.open(id, pack(1, 0, 0), 0));
        }
        assert!(!t.open(same_bucket[BUCKET], pack(2, 0, 0), 0));
        assert!(t.any_fallbacks());
        t.close(same_bucket[BUCKET], false);
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
