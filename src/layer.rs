//! The request layer: a [`tracing_subscriber::Layer`] that watches request
//! spans and fires the trigger when one ran longer than the threshold.
//!
//! Which spans are requests is decided once per callsite, in
//! `register_callsite` (by name or target), and once per span for the default
//! rule, root spans. A request span gets a small state in its extensions; its
//! open, enter, exit and close become events on the thread's ring. Because a
//! ring is written in order by one thread, an enter event that falls between a
//! task's poll start and poll end on the same ring tells which task worked for
//! the request: no table is kept on the hot path.
//!
//! The trace and span ids come from the span's OpenTelemetry context (read on
//! the first enter, when the `tracing-opentelemetry` layer is registered
//! *before* this one), or are made here.

use crate::event::{EventKind, NO_STRING};
use crate::recorder::Inner;
use crate::window::SlowRequest;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tracing_core::callsite::Identifier;
use tracing_core::span::{Attributes, Id};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Span targets that belong to the export path: never requests.
const TRANSPORT_TARGETS: &[&str] = &["h2", "tonic", "hyper", "tower", "reqwest", "opentelemetry"];

/// Which spans are requests.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::RequestSpans;
/// let r: RequestSpans = "request, target:my_app::handlers".parse()?;
/// assert_eq!(r, RequestSpans::Matching { names: vec!["request".into()], targets: vec!["my_app::handlers".into()] });
/// assert_eq!("root".parse::<RequestSpans>()?, RequestSpans::Root);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RequestSpans {
    /// Every span with no parent (the default).
    #[default]
    Root,
    /// Spans with one of these names, or whose target starts with one of these prefixes.
    Matching {
        /// Span names.
        names: Vec<String>,
        /// Target prefixes (`my_app::http` matches `my_app::http::server`).
        targets: Vec<String>,
    },
}

impl std::str::FromStr for RequestSpans {
    type Err = String;

    /// `root`, or a comma-separated list of span names and `target:PREFIX` items.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("root") {
            return Ok(RequestSpans::Root);
        }
        let (mut names, mut targets) = (Vec::new(), Vec::new());
        for item in s.split(',').map(str::trim) {
            if let Some(t) = item.strip_prefix("target:") {
                if t.trim().is_empty() {
                    return Err("an empty `target:` prefix".into());
                }
                targets.push(t.trim().to_owned());
            } else if item.is_empty() || item.contains(char::is_whitespace) {
                return Err(format!("`{item}` is not a span name"));
            } else {
                names.push(item.to_owned());
            }
        }
        Ok(RequestSpans::Matching { names, targets })
    }
}

impl RequestSpans {
    /// Decides for a callsite: `Some(true)` request, `Some(false)` never,
    /// `None` depends on the span (root or not).
    fn classify(&self, meta: &Metadata<'_>) -> Option<bool> {
        let target = meta.target();
        if TRANSPORT_TARGETS
            .iter()
            .any(|t| target == *t || target.starts_with(&format!("{t}::")))
        {
            return Some(false);
        }
        match self {
            RequestSpans::Root => None,
            RequestSpans::Matching { names, targets } => Some(
                names.iter().any(|n| n == meta.name())
                    || targets.iter().any(|t| target.starts_with(t.as_str())),
            ),
        }
    }
}

/// Number of slots in the span-id → request table (a power of two).
const SLOTS: usize = 4096;

/// Set in a slot's request word once the request's trace ids were looked up.
const IDS_LOOKED_UP: u64 = 1 << 63;

/// A slot's request word: `IDS_LOOKED_UP | name << 40 | request id` (40 bits).
fn slot_word(request: u64, name: u16) -> u64 {
    (u64::from(name) << 40) | (request & crate::event::MAX_SUBJECT)
}

/// The request id and span name index of a slot's request word.
fn unpack_slot_word(word: u64) -> (u64, u16) {
    (word & crate::event::MAX_SUBJECT, (word >> 40) as u16)
}

/// A small lock-free table from live request span ids to request ids, so that
/// enter and exit, which run on every poll of a request's tasks, cost a hash
/// and two loads instead of a registry lookup and an extensions lock.
///
/// A request span claims slot `id % SLOTS` when it opens (compare-and-swap
/// from empty) and frees it when it closes. Span ids are unique among live
/// spans, so a slot's tag matches only its own span. A request whose slot is
/// taken falls back to its extensions; `fallbacks` counts those alive so that
/// other spans skip the extensions lookup while there are none.
struct RequestSlots {
    slots: Box<[(AtomicU64, AtomicU64)]>,
    fallbacks: AtomicUsize,
}

impl RequestSlots {
    fn new() -> RequestSlots {
        RequestSlots {
            slots: (0..SLOTS)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            fallbacks: AtomicUsize::new(0),
        }
    }

    fn slot(&self, id: &Id) -> &(AtomicU64, AtomicU64) {
        &self.slots[(id.into_u64() as usize) & (SLOTS - 1)]
    }

    /// Claims a slot for a new request span; `false` if taken.
    fn claim(&self, id: &Id, request: u64) -> bool {
        let (tag, req) = self.slot(id);
        if tag
            .compare_exchange(0, id.into_u64(), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        req.store(request, Ordering::Release);
        true
    }

    /// The request word of a span, if it holds a slot.
    #[inline]
    fn get(&self, id: &Id) -> Option<u64> {
        let (tag, req) = self.slot(id);
        (tag.load(Ordering::Acquire) == id.into_u64()).then(|| req.load(Ordering::Acquire))
    }

    /// Marks the ids as looked up; `true` for the caller that marked them.
    fn mark_ids(&self, id: &Id) -> bool {
        let (_, req) = self.slot(id);
        req.fetch_or(IDS_LOOKED_UP, Ordering::AcqRel) & IDS_LOOKED_UP == 0
    }

    fn release(&self, id: &Id, claimed: bool) {
        if claimed {
            let (tag, _) = self.slot(id);
            let _ = tag.compare_exchange(id.into_u64(), 0, Ordering::Release, Ordering::Relaxed);
        } else {
            self.fallbacks.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn any_fallbacks(&self) -> bool {
        self.fallbacks.load(Ordering::Relaxed) != 0
    }
}

/// A callsite's decision, made once.
#[derive(Clone, Copy)]
struct CallsiteInfo {
    request: Option<bool>,
    name: u16,
}

/// Per-span state of a request, kept in the span's extensions.
struct RequestState {
    id: u64,
    /// Whether the request holds a slot in [`RequestSlots`].
    slotted: bool,
    name: u16,
    start: u64,
    ids: OnceLock<Option<(TraceId, SpanId)>>,
    error: AtomicBool,
}

/// The layer that watches request spans. Made by [`Blackbox::layer`].
///
/// Register it *after* `tracing_opentelemetry`'s layer so it can read the
/// request's trace id:
///
/// # Examples
///
/// ```
/// use tracing_subscriber::prelude::*;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder().build()?;
/// let subscriber = tracing_subscriber::registry().with(blackbox.layer());
/// tracing::subscriber::with_default(subscriber, || {
///     let _request = tracing::info_span!("request").entered();
/// });
/// assert_eq!(blackbox.stats().requests_seen, 1);
/// # Ok(()) }
/// ```
///
/// [`Blackbox::layer`]: crate::Blackbox::layer
pub struct BlackboxLayer {
    inner: Arc<Inner>,
    slots: RequestSlots,
    callsites: RwLock<HashMap<Identifier, CallsiteInfo>>,
}

impl fmt::Debug for BlackboxLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlackboxLayer")
            .field("request_spans", &self.inner.config.request_spans)
            .finish()
    }
}

impl BlackboxLayer {
    pub(crate) fn new(inner: Arc<Inner>) -> BlackboxLayer {
        BlackboxLayer {
            inner,
            slots: RequestSlots::new(),
            callsites: RwLock::new(HashMap::new()),
        }
    }

    fn info(&self, meta: &'static Metadata<'static>) -> CallsiteInfo {
        let id = meta.callsite();
        if let Some(info) = self
            .callsites
            .read()
            .ok()
            .and_then(|map| map.get(&id).copied())
        {
            return info;
        }
        let info = CallsiteInfo {
            request: self.inner.config.request_spans.classify(meta),
            name: if meta.is_span() {
                self.inner.capture.strings.intern(meta.name())
            } else {
                NO_STRING
            },
        };
        if let Ok(mut map) = self.callsites.write() {
            map.insert(id, info);
        }
        info
    }

    fn otel_ids(id: &Id) -> Option<(TraceId, SpanId)> {
        tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(id, d))
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid())
            .map(|sc| (sc.trace_id(), sc.span_id()))
    }
}

impl<S> tracing_subscriber::Layer<S> for BlackboxLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            self.info(meta);
        }
        Interest::always()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.inner.capture.enabled {
            return;
        }
        let info = self.info(attrs.metadata());
        let is_request = match info.request {
            Some(r) => r,
            None => attrs.is_root() || (attrs.is_contextual() && ctx.current_span().id().is_none()),
        };
        if !is_request {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let req = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let start = self.inner.capture.clock.raw();
        let slotted = self.slots.claim(id, slot_word(req, info.name));
        span.extensions_mut().insert(RequestState {
            id: req,
            slotted,
            name: info.name,
            start,
            ids: OnceLock::new(),
            error: AtomicBool::new(false),
        });
        self.inner
            .capture
            .record(EventKind::RequestOpen, req, info.name);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let capture = &self.inner.capture;
        let need_ids = match self.slots.get(id) {
            Some(word) => {
                let (request, name) = unpack_slot_word(word);
                capture.record(EventKind::RequestEnter, request, 0);
                // A task polled inside a request span is named after it.
                if let Some(task) = capture.unnamed_task() {
                    capture.name_task(task, name);
                }
                word & IDS_LOOKED_UP == 0 && self.slots.mark_ids(id)
            }
            None => {
                let fallback = self.slots.any_fallbacks();
                let unnamed = capture.unnamed_task();
                if !fallback && unnamed.is_none() {
                    return;
                }
                let Some(span) = ctx.span(id) else { return };
                let ext = span.extensions();
                match ext.get::<RequestState>() {
                    Some(state) => {
                        capture.record(EventKind::RequestEnter, state.id, 0);
                        if let Some(task) = unnamed {
                            capture.name_task(task, state.name);
                        }
                        state.ids.get().is_none()
                    }
                    None => {
                        // Not a request: the first span a task enters names it
                        // (its `.instrument(..)` span is entered first in every poll).
                        if let Some(task) = unnamed {
                            capture.name_task(task, self.info(span.metadata()).name);
                        }
                        return;
                    }
                }
            }
        };
        if need_ids {
            // Not while holding our extensions: the OpenTelemetry layer takes
            // the same span's extensions to build its context.
            let ids = Self::otel_ids(id);
            if let Some(span) = ctx.span(id)
                && let Some(state) = span.extensions().get::<RequestState>()
            {
                let _ = state.ids.set(ids);
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(word) = self.slots.get(id) {
            self.inner
                .capture
                .record(EventKind::RequestExit, unpack_slot_word(word).0, 0);
        } else if self.slots.any_fallbacks() {
            let Some(span) = ctx.span(id) else { return };
            if let Some(state) = span.extensions().get::<RequestState>() {
                self.inner
                    .capture
                    .record(EventKind::RequestExit, state.id, 0);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(state) = span.extensions().get::<RequestState>() {
                state.error.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(state) = ext.get::<RequestState>() else {
            return;
        };
        self.slots.release(&id, state.slotted);
        let capture = &self.inner.capture;
        let end = capture.clock.raw();
        capture.record(EventKind::RequestClose, state.id, 0);
        let duration_ns = capture.clock.delta_ns(state.start, end);
        let error = state.error.load(Ordering::Relaxed);
        let slow = duration_ns >= self.inner.config.latency_threshold.as_nanos() as u64;
        if !slow {
            return;
        }
        let (trace_id, span_id, own_span) = match state.ids.get().copied().flatten() {
            Some((t, s)) => (t, s, false),
            None => {
                let g = RandomIdGenerator::default();
                (g.new_trace_id(), g.new_span_id(), true)
            }
        };
        let name = self.inner.capture.strings.get(state.name);
        // A fresh anchor: the raw clock and the wall clock drift apart over hours.
        let anchor = self.inner.capture.clock.anchor();
        self.inner.on_slow_request(SlowRequest {
            request_id: state.id,
            name,
            trace_id,
            span_id,
            own_span,
            error,
            start_unix_ns: anchor.to_unix_ns(state.start),
            end_unix_ns: anchor.to_unix_ns(end),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_claim_collide_and_release() {
        let slots = RequestSlots::new();
        let a = Id::from_u64(5);
        let b = Id::from_u64(5 + SLOTS as u64); // same slot as `a`
        assert!(slots.claim(&a, 1));
        assert!(!slots.claim(&b, 2), "taken slot: fallback");
        assert!(slots.any_fallbacks());
        assert_eq!(slots.get(&a), Some(1));
        assert_eq!(
            slots.get(&b),
            None,
            "a colliding span never reads another's slot"
        );
        assert!(slots.mark_ids(&a));
        assert!(!slots.mark_ids(&a), "ids are looked up once");
        assert_eq!(slots.get(&a), Some(1 | IDS_LOOKED_UP));
        slots.release(&b, false);
        slots.release(&a, true);
        assert!(!slots.any_fallbacks());
        assert_eq!(slots.get(&a), None);
        assert!(slots.claim(&b, 3));
    }

    #[test]
    fn request_span_selectors_parse() {
        assert!("".parse::<RequestSpans>().is_err());
        assert!("target:".parse::<RequestSpans>().is_err());
        assert_eq!(
            "http.request".parse::<RequestSpans>(),
            Ok(RequestSpans::Matching {
                names: vec!["http.request".into()],
                targets: vec![]
            })
        );
    }
}
