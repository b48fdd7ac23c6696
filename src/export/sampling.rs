//! In-process tail sampling of the application's own spans.
//!
//! [`TailSampler`] is a [`SpanProcessor`] for the application's
//! `SdkTracerProvider`. It holds the ended spans of each in-flight trace
//! until the trace's local root span (the request span: no parent, or a
//! remote parent) ends, then decides once:
//!
//! - keep when the root ran at least the latency threshold (the same one the
//!   recorder uses), or ended with an error status;
//! - else keep a baseline fraction (`BLACKBOX_BASELINE_RATIO`), chosen from
//!   the trace id so every process keeps the same traces;
//! - else drop.
//!
//! Kept traces go to the recorder's export thread, through the same queue
//! and exporter as the captured windows, so a kept trace and its window
//! reach the backend together. Spans that end after the decision follow it.
//!
//! Memory is bounded by bytes: the spans held take at most
//! [`DEFAULT_MAX_BYTES`] (64 MiB, see [`TailSampler::with_memory_limit`]),
//! estimated per span from its struct, name, attributes, events and links.
//! A span that does not fit evicts the oldest undecided traces of its shard;
//! one that does not fit even then (its own trace fills the shard) is
//! dropped. Besides, at most `max_traces` traces are held and
//! `max_spans_per_trace` spans each. Every evicted trace is counted in
//! `traces_evicted`, every span lost in `sampler_spans_dropped`.
//!
//! Traces are spread over 16 shards by trace id, each with a 16th of the
//! byte limit, so application threads ending spans of different traces
//! rarely meet on one lock; each `on_end` holds it for a hash-map update,
//! never for I/O.

use super::shared::ExportShared;
use super::split::span_bytes;
use crate::sync::lock;
use opentelemetry::Context;
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shards of the held traces (a power of two).
const SHARDS: usize = 16;

/// The most memory a [`TailSampler`] holds in spans, by default: 64 MiB
/// (estimated per span: the struct, its name, attributes, events and links).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// The limits and rules of a [`TailSampler`], from the builder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SamplerSettings {
    pub(crate) threshold: Duration,
    pub(crate) baseline_ratio: f64,
    pub(crate) max_traces: usize,
    pub(crate) max_spans_per_trace: usize,
}

struct Held {
    spans: Vec<SpanData>,
    /// Estimated bytes of `spans`.
    bytes: usize,
    seq: u64,
}

#[derive(Default)]
struct Shard {
    held: HashMap<TraceId, Held>,
    /// Insertion order of `held`, for eviction; entries whose trace is gone
    /// or was re-inserted (another `seq`) are stale and skipped.
    order: VecDeque<(TraceId, u64)>,
    /// Decided traces, so late spans follow the decision; bounded like `held`.
    decided: HashMap<TraceId, bool>,
    decided_order: VecDeque<TraceId>,
    seq: u64,
    /// Estimated bytes of every held span.
    bytes: usize,
}

impl Shard {
    fn decide(&mut self, trace: TraceId, keep: bool, cap: usize) {
        if self.decided.insert(trace, keep).is_none() {
            self.decided_order.push_back(trace);
            while self.decided_order.len() > cap {
                if let Some(old) = self.decided_order.pop_front() {
                    self.decided.remove(&old);
                }
            }
        }
    }

    /// Evicts the oldest held trace other than `keep`; returns its span count.
    fn evict_oldest(&mut self, keep: Option<TraceId>) -> Option<usize> {
        let mut i = 0;
        while i < self.order.len() {
            let (trace, seq) = self.order[i];
            if self.held.get(&trace).is_none_or(|h| h.seq != seq) {
                // Stale: its trace was decided or re-inserted.
                self.order.remove(i);
                continue;
            }
            if Some(trace) == keep {
                i += 1;
                continue;
            }
            self.order.remove(i);
            let held = self.held.remove(&trace)?;
            self.bytes = self.bytes.saturating_sub(held.bytes);
            return Some(held.spans.len());
        }
        None
    }

    /// Takes a trace's spans out (its root ended).
    fn take(&mut self, trace: TraceId) -> Vec<SpanData> {
        match self.held.remove(&trace) {
            Some(h) => {
                self.bytes = self.bytes.saturating_sub(h.bytes);
                h.spans
            }
            None => Vec::new(),
        }
    }
}

/// Keeps the application's slow and failed traces, drops the rest.
///
/// Made by [`Blackbox::tail_sampler`](crate::Blackbox::tail_sampler); add it
/// to the application's tracer provider **instead of** a batch processor with
/// an exporter of its own: kept traces leave through the recorder's exporter.
///
/// # Examples
///
/// ```
/// use opentelemetry::trace::{Tracer, TracerProvider as _};
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
/// use std::time::Duration;
///
/// let exporter = InMemorySpanExporter::default();
/// let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
///     .latency_threshold(Duration::from_millis(20))
///     .exporter(exporter.clone())
///     .build()?;
/// let provider = SdkTracerProvider::builder().with_span_processor(blackbox.tail_sampler()).build();
/// let tracer = provider.tracer("app");
/// tracer.in_span("fast", |_| {});
/// tracer.in_span("slow", |_| std::thread::sleep(Duration::from_millis(25)));
/// blackbox.flush(Duration::from_secs(5));
/// let names: Vec<_> = exporter.get_finished_spans()?.into_iter().map(|s| s.name).collect();
/// assert_eq!(names, ["slow"]);
/// # drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TailSampler {
    settings: SamplerSettings,
    /// Bytes of spans each shard may hold.
    shard_bytes: usize,
    shards: Vec<Mutex<Shard>>,
    shared: Arc<ExportShared>,
}

impl fmt::Debug for TailSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailSampler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TailSampler {
    pub(crate) fn new(settings: SamplerSettings, shared: Arc<ExportShared>) -> TailSampler {
        shared.sampler_active.store(true, Ordering::Relaxed);
        TailSampler {
            settings,
            shard_bytes: DEFAULT_MAX_BYTES / SHARDS,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shared,
        }
    }

    /// Sets the most memory the sampler holds in spans, in bytes (estimated;
    /// at least 16 KiB). Traces that would take it past the limit evict the
    /// oldest undecided ones, which are counted in
    /// [`BlackboxStats::traces_evicted`](crate::BlackboxStats::traces_evicted)
    /// and their spans in
    /// [`BlackboxStats::sampler_spans_dropped`](crate::BlackboxStats::sampler_spans_dropped).
    ///
    /// By default, this is [`DEFAULT_MAX_BYTES`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
    ///     .exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default())
    ///     .build()?;
    /// let sampler = blackbox.tail_sampler().with_memory_limit(16 << 20);
    /// assert_eq!(sampler.memory_limit(), 16 << 20);
    /// assert_eq!(sampler.held_bytes(), 0);
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    #[must_use]
    pub fn with_memory_limit(mut self, bytes: usize) -> TailSampler {
        self.shard_bytes = (bytes / SHARDS).max(1024);
        self
    }

    /// The most memory the sampler holds in spans, in bytes (estimated).
    pub fn memory_limit(&self) -> usize {
        self.shard_bytes * SHARDS
    }

    /// The memory the sampler holds in spans now, in bytes (estimated).
    pub fn held_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    fn shard(&self, trace: TraceId) -> &Mutex<Shard> {
        let bytes = trace.to_bytes();
        &self.shards[usize::from(bytes[15]) & (SHARDS - 1)]
    }

    fn per_shard(&self) -> usize {
        self.settings.max_traces.div_ceil(SHARDS).max(1)
    }

    /// The baseline choice: the trace id's low 53 bits as a fraction, like
    /// the SDK's `TraceIdRatioBased`, so every service keeps the same traces.
    fn baseline(&self, trace: TraceId) -> bool {
        let low = u64::from_be_bytes(trace.to_bytes()[8..].try_into().unwrap_or([0; 8]));
        ((low >> 11) as f64 / (1u64 << 53) as f64) < self.settings.baseline_ratio
    }

    fn keep(&self, root: &SpanData) -> bool {
        let duration = root
            .end_time
            .duration_since(root.start_time)
            .unwrap_or(Duration::ZERO);
        duration >= self.settings.threshold
            || matches!(root.status, Status::Error { .. })
            || self.baseline(root.span_context.trace_id())
    }

    fn send(&self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        if !self.shared.send_spans(spans) {
            self.shared
                .counters
                .sampler_spans_dropped
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl SpanProcessor for TailSampler {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    /// The app's tracer provider gives its resource when built: windows
    /// and kept traces are exported under it from then on.
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.shared.set_app_resource(resource);
    }

    fn on_end(&self, span: SpanData) {
        let c = &self.shared.counters;
        let trace = span.span_context.trace_id();
        let is_root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
        let cap = self.per_shard();
        let mut shard = lock(self.shard(trace));
        if let Some(&keep) = shard.decided.get(&trace) {
            drop(shard);
            // A late span of a dropped trace goes with its trace.
            if keep {
                self.send(vec![span]);
            }
            return;
        }
        if is_root {
            let mut spans = shard.take(trace);
            let keep = self.keep(&span);
            shard.decide(trace, keep, cap);
            drop(shard);
            if keep {
                spans.push(span);
                self.shared.kept(trace);
                c.traces_kept.fetch_add(1, Ordering::Relaxed);
                self.send(spans);
            } else {
                c.traces_sampled_out.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if !shard.held.contains_key(&trace) {
            if shard.held.len() >= cap
                && let Some(n) = shard.evict_oldest(None)
            {
                c.traces_evicted.fetch_add(1, Ordering::Relaxed);
                c.sampler_spans_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            shard.seq += 1;
            let seq = shard.seq;
            shard.order.push_back((trace, seq));
            // Stale order entries (traces already decided) are dropped now
            // and then, so the queue stays within twice the cap.
            if shard.order.len() > 2 * cap {
                let Shard { order, held, .. } = &mut *shard;
                order.retain(|(t, s)| {
                    held.get(t).is_some_and(|h| h.seq == *s) || (*t == trace && *s == seq)
                });
            }
            shard.held.insert(
                trace,
                Held {
                    spans: Vec::new(),
                    bytes: 0,
                    seq,
                },
            );
        }
        let max = self.settings.max_spans_per_trace;
        if shard.held.get(&trace).is_none_or(|h| h.spans.len() >= max) {
            c.sampler_spans_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Within the shard's bytes: evict the oldest other traces first.
        let bytes = span_bytes(&span);
        while shard.bytes + bytes > self.shard_bytes {
            match shard.evict_oldest(Some(trace)) {
                Some(n) => {
                    c.traces_evicted.fetch_add(1, Ordering::Relaxed);
                    c.sampler_spans_dropped
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                None => {
                    // This trace alone fills the shard.
                    c.sampler_spans_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        shard.bytes += bytes;
        if let Some(h) = shard.held.get_mut(&trace) {
            h.bytes += bytes;
            h.spans.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Undecided traces never saw their root end: count them as evicted.
        for shard in &self.shards {
            let mut s = lock(shard);
            let n: usize = s.held.values().map(|h| h.spans.len()).sum();
            let traces = s.held.len() as u64;
            s.held.clear();
            s.order.clear();
            s.bytes = 0;
            self.shared
                .counters
                .traces_evicted
                .fetch_add(traces, Ordering::Relaxed);
            self.shared
                .counters
                .sampler_spans_dropped
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use std::time::UNIX_EPOCH;

    fn span(trace: u128, id: u64, parent: u64, ms: u64, error: bool) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: format!("s{id}").into(),
            start_time: start,
            end_time: start + Duration::from_millis(ms),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: if error {
                Status::error("boom")
            } else {
                Status::Unset
            },
            instrumentation_scope: Default::default(),
        }
    }

    fn sampler(max_traces: usize, ratio: f64) -> (TailSampler, Arc<ExportShared>) {
        let shared = Arc::new(ExportShared::default());
        let settings = SamplerSettings {
            threshold: Duration::from_millis(100),
            baseline_ratio: ratio,
            max_traces,
            max_spans_per_trace: 3,
        };
        (TailSampler::new(settings, shared.clone()), shared)
    }

    fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn slow_and_failed_traces_are_kept_the_rest_dropped() {
        let (s, shared) = sampler(64, 0.0);
        s.on_end(span(1, 11, 10, 5, false));
        s.on_end(span(1, 10, 0, 150, false)); // slow root
        s.on_end(span(2, 21, 20, 5, false));
        s.on_end(span(2, 20, 0, 5, false)); // fast root
        s.on_end(span(3, 30, 0, 5, true)); // failed root
        let c = &shared.counters;
        assert_eq!(get(&c.traces_kept), 2);
        assert_eq!(get(&c.traces_sampled_out), 1);
        assert!(shared.was_kept(TraceId::from(1)));
        assert!(!shared.was_kept(TraceId::from(2)));
        // No export queue is connected: the kept spans are counted as dropped.
        assert_eq!(get(&c.sampler_spans_dropped), 3);
    }

    #[test]
    fn memory_is_bounded_and_evictions_counted() {
        let (s, shared) = sampler(16, 0.0); // one trace per shard
        for t in 0..100u128 {
            for i in 0..5u64 {
                s.on_end(span(t << 8, i + 2, 1, 1, false)); // same shard (low byte 0)
            }
        }
        let c = &shared.counters;
        assert_eq!(get(&c.traces_evicted), 99);
        // 3 spans kept per trace (2 over the limit each), the evicted ones dropped too.
        assert_eq!(get(&c.sampler_spans_dropped), 100 * 2 + 99 * 3);
        let shard = lock(s.shard(TraceId::from(0)));
        assert_eq!(shard.held.len(), 1);
        assert!(shard.order.len() <= 2);
    }

    #[test]
    fn bytes_are_bounded_per_shard_evicting_the_oldest_other_trace() {
        let (s, shared) = sampler(4096, 0.0);
        let s = s.with_memory_limit(SHARDS * 4096); // 4 KiB per shard
        let big = |trace: u128, id: u64| {
            let mut sp = span(trace, id, 1, 1, false);
            sp.attributes
                .push(opentelemetry::KeyValue::new("payload", "x".repeat(1024)));
            sp
        };
        let one = span_bytes(&big(0, 2));
        assert!(one > 1024 && one < 2048, "{one}");
        for t in 0..10u128 {
            s.on_end(big(t << 8, 2)); // all in shard 0
            s.on_end(big(t << 8, 3));
        }
        let c = &shared.counters;
        let held = s.held_bytes();
        assert!(held <= 4096, "{held}");
        assert_eq!(get(&c.sampler_spans_dropped), 20 - (held / one) as u64);
        assert!(get(&c.traces_evicted) >= 8, "{}", get(&c.traces_evicted));
        // The newest trace is the one kept.
        let shard = lock(s.shard(TraceId::from(9u128 << 8)));
        assert!(shard.held.contains_key(&TraceId::from(9u128 << 8)));
        assert_eq!(shard.bytes, held);
    }

    #[test]
    fn late_spans_follow_the_decision_and_baseline_is_by_trace_id() {
        let (s, shared) = sampler(64, 1.0);
        s.on_end(span(5, 50, 0, 1, false)); // kept by the baseline (ratio 1)
        s.on_end(span(5, 51, 50, 1, false)); // late child: follows
        assert_eq!(get(&shared.counters.traces_kept), 1);
        assert_eq!(
            get(&shared.counters.sampler_spans_dropped),
            2,
            "no queue: both counted"
        );
        let (none, _) = sampler(64, 0.0);
        assert!(!none.baseline(TraceId::from(u128::MAX)));
        let (half, _) = sampler(64, 0.5);
        let kept = (0..1000u128)
            .filter(|t| {
                half.baseline(TraceId::from(
                    t.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                ))
            })
            .count();
        assert!((400..600).contains(&kept), "{kept}");
    }
}
