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

use crate::config::RequestSpans;
use crate::event::{EventKind, NO_STRING};
use crate::requests::{IDS_LOOKED_UP, layer_of, pack, unpack};
use crate::shared::Shared;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tracing_core::callsite::Identifier;
use tracing_core::span::{Attributes, Id};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Span targets that are never requests: the export path's (its transport
/// would otherwise be recorded and exported too) and Tokio's own (with Tokio's
/// `tracing` feature, as for every tokio-console user, each spawned task has a
/// root span `runtime.spawn` of target `tokio::task`).
const NEVER_TARGETS: &[&str] = &[
    "h2",
    "tonic",
    "hyper",
    "tower",
    "reqwest",
    "opentelemetry",
    "tokio",
    "runtime",
];

/// Whether `target` is `prefix` or one of its submodules.
fn in_module(target: &str, prefix: &str) -> bool {
    target
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

impl RequestSpans {
    /// Decides for a callsite: `Some(true)` request, `Some(false)` never,
    /// `None` depends on the span (root or not).
    fn classify(&self, meta: &Metadata<'_>) -> Option<bool> {
        let target = meta.target();
        if NEVER_TARGETS.iter().any(|t| in_module(target, t)) || meta.name().starts_with("runtime.")
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

/// A callsite's decision, made once.
#[derive(Clone, Copy)]
struct CallsiteInfo {
    request: Option<bool>,
    name: u16,
}

/// Per-span state of a request, kept in the span's extensions.
struct RequestState {
    /// The layer instance that watches this request (others leave it alone).
    layer: u16,
    id: u64,
    /// Whether the request holds a slot in the open-request table.
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
    shared: Arc<Shared>,
    /// This layer instance's tag: a span seen by two layers of one recorder
    /// (`layer()` added twice) is recorded once, by the first.
    tag: u16,
    callsites: RwLock<HashMap<Identifier, CallsiteInfo>>,
    /// The subscriber this layer is part of, once it became a dispatcher:
    /// OpenTelemetry ids are asked of it.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl fmt::Debug for BlackboxLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlackboxLayer")
            .field("request_spans", &self.shared.settings.request_spans)
            .finish()
    }
}

impl BlackboxLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> BlackboxLayer {
        static NEXT_TAG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        BlackboxLayer {
            shared,
            tag: (NEXT_TAG.fetch_add(1, Ordering::Relaxed) & 0x3ff) as u16,
            callsites: RwLock::new(HashMap::new()),
            dispatch: OnceLock::new(),
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
            request: self.shared.settings.request_spans.classify(meta),
            name: if meta.is_span() {
                self.shared.capture.strings.intern(meta.name())
            } else {
                NO_STRING
            },
        };
        if let Ok(mut map) = self.callsites.write() {
            map.insert(id, info);
        }
        info
    }

    /// The OpenTelemetry ids of span `id`, asked of the subscriber this
    /// layer is part of (not the thread's default, which may be another
    /// subscriber: a scoped one, or one whose OpenTelemetry layer does not
    /// know this span).
    fn otel_ids(&self, id: &Id) -> Option<(TraceId, SpanId)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        tracing_opentelemetry::get_otel_context(id, &dispatch)
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid())
            .map(|sc| (sc.trace_id(), sc.span_id()))
    }
}

impl<S> tracing_subscriber::Layer<S> for BlackboxLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            self.info(meta);
        }
        Interest::always()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.shared.capture.enabled {
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
        let mut ext = span.extensions_mut();
        if ext.get_mut::<RequestState>().is_some() {
            // Another layer of a recorder already watches this span.
            return;
        }
        let req = self.shared.new_request_id();
        let capture = &self.shared.capture;
        let start = capture.clock.raw();
        let slotted =
            self.shared
                .requests
                .open(id.into_u64(), pack(req, info.name, self.tag), start);
        ext.insert(RequestState {
            layer: self.tag,
            id: req,
            slotted,
            name: info.name,
            start,
            ids: OnceLock::new(),
            error: AtomicBool::new(false),
        });
        drop(ext);
        capture.record_at_time(EventKind::RequestOpen, req, info.name, start);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let capture = &self.shared.capture;
        let requests = &self.shared.requests;
        let need_ids = match requests.get(id.into_u64()) {
            Some(word) if layer_of(word) != self.tag => return,
            Some(word) => {
                let (request, name) = unpack(word);
                capture.record_in_poll(EventKind::RequestEnter, request, 0, false);
                // A task polled inside a request span is named after it.
                if let Some(task) = capture.unnamed_task() {
                    capture.name_task(task, name);
                }
                word & IDS_LOOKED_UP == 0 && requests.mark_ids(id.into_u64())
            }
            None => {
                let fallback = requests.any_fallbacks();
                let unnamed = capture.unnamed_task();
                if !fallback && unnamed.is_none() {
                    return;
                }
                let Some(span) = ctx.span(id) else { return };
                let ext = span.extensions();
                match ext.get::<RequestState>() {
                    Some(state) if state.layer != self.tag => return,
                    Some(state) => {
                        capture.record_in_poll(EventKind::RequestEnter, state.id, 0, false);
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
            let ids = self.otel_ids(id);
            if let Some((trace, span_id)) = ids {
                requests.set_ids(id.into_u64(), trace, span_id);
            }
            if let Some(span) = ctx.span(id)
                && let Some(state) = span.extensions().get::<RequestState>()
            {
                let _ = state.ids.set(ids);
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let capture = &self.shared.capture;
        if let Some(word) = self.shared.requests.get(id.into_u64()) {
            if layer_of(word) != self.tag {
                return;
            }
            capture.record_in_poll(EventKind::RequestExit, unpack(word).0, 0, true);
        } else if self.shared.requests.any_fallbacks() {
            let Some(span) = ctx.span(id) else { return };
            if let Some(state) = span.extensions().get::<RequestState>()
                && state.layer == self.tag
            {
                capture.record_in_poll(EventKind::RequestExit, state.id, 0, true);
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
        let Some(state) = ext.get::<RequestState>().filter(|s| s.layer == self.tag) else {
            return;
        };
        let requests = &self.shared.requests;
        // Ids the capture thread made while the request was open (captured stuck).
        let table_ids = if state.slotted {
            requests.ids(id.into_u64())
        } else {
            None
        };
        requests.close(id.into_u64(), state.slotted);
        let capture = &self.shared.capture;
        let end = capture.clock.raw();
        capture.record_at_time(EventKind::RequestClose, state.id, 0, end);
        let duration_ns = capture.clock.delta_ns(state.start, end);
        let error = state.error.load(Ordering::Relaxed);
        let slow = duration_ns >= self.shared.settings.latency_threshold.as_nanos() as u64;
        if !slow {
            return;
        }
        let ids = match (state.ids.get().copied().flatten(), table_ids) {
            (Some((t, s)), _) => (t, s, false),
            (None, Some(ids)) => ids,
            (None, None) => {
                let g = RandomIdGenerator::default();
                (g.new_trace_id(), g.new_span_id(), true)
            }
        };
        let mut req = self
            .shared
            .slow_request(state.id, state.name, ids, state.start, end);
        req.error = error;
        self.shared.on_slow_request(req, state.start, end);
    }
}
