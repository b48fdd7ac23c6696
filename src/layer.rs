//! The request layer: a [`tracing_subscriber::Layer`] that watches request
//! spans and fires the trigger when one ran longer than the threshold.
//!
//! Which spans are requests is decided once per callsite, in
//! `register_callsite` (by name or target) and kept in a lock-free table of
//! callsites, and once per span for the default rule, root spans. A request
//! span's state lives in the recorder's open-request table (the span's
//! extensions only when the table's bucket is full); its open, enter, exit
//! and close become events on the thread's ring. Because a
//! ring is written in order by one thread, an enter event that falls between a
//! task's poll start and poll end on the same ring tells which task worked for
//! the request: no table is kept on the hot path.
//!
//! The trace and span ids come from the span's OpenTelemetry context (read on
//! the first enter, when the `tracing-opentelemetry` layer is registered
//! *before* this one), or are made here.

use crate::capture::AddressTable;
use crate::config::RequestSpans;
use crate::event::NO_STRING;
use crate::requests::{IDS_LOOKED_UP, LAYER_TAG_MASK, layer_of, pack, unpack};
use crate::shared::Shared;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tracing_core::span::{Attributes, Id};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Span targets that are never requests: the export path's (its transport
/// would otherwise be recorded and exported too). Tokio's own spans never are
/// either ([`is_runtime_span`]).
const NEVER_TARGETS: &[&str] = &["h2", "tonic", "hyper", "tower", "reqwest", "opentelemetry"];

/// Whether `target` is `prefix` or one of its submodules.
fn in_module(target: &str, prefix: &str) -> bool {
    target
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Whether a span is Tokio's own (with Tokio's `tracing` feature, as for
/// every tokio-console user, each task and `block_on`'s future run in a root
/// span `runtime.spawn` of target `tokio::task`): never a request, and
/// transparent to request detection, so a span made inside a task is a root
/// span when only Tokio's spans are above it.
fn is_runtime_span(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    in_module(target, "tokio")
        || in_module(target, "runtime")
        || meta.name().starts_with("runtime.")
}

impl RequestSpans {
    /// Decides for a callsite: `Some(true)` request, `Some(false)` never,
    /// `None` depends on the span (root or not).
    fn classify(&self, meta: &Metadata<'_>) -> Option<bool> {
        let target = meta.target();
        if is_runtime_span(meta) || NEVER_TARGETS.iter().any(|t| in_module(target, t)) {
            return Some(false);
        }
        match self {
            // Root-dependent; under `Auto`, an unmarked root span stops being
            // a request once a marked one was made (`on_new_span`).
            RequestSpans::Root | RequestSpans::Auto => None,
            RequestSpans::Server => {
                if crate::setup_check::looks_like_request(meta) {
                    None
                } else {
                    Some(false)
                }
            }
            RequestSpans::Matching { names, targets } => Some(
                names.iter().any(|n| n == meta.name())
                    || targets.iter().any(|t| target.starts_with(t.as_str())),
            ),
        }
    }
}

/// What the recorder's layer reads: every span (any may be a request, or
/// name the task it is entered in) and `ERROR` events (they mark their
/// request failed). The filter of [`Blackbox::filtered_layer`].
///
/// [`Blackbox::filtered_layer`]: crate::Blackbox::filtered_layer
pub type BlackboxFilter = tracing_subscriber::filter::FilterFn<fn(&Metadata<'_>) -> bool>;

/// The [`BlackboxFilter`].
pub(crate) fn filter() -> BlackboxFilter {
    fn reads(meta: &Metadata<'_>) -> bool {
        meta.is_span() || *meta.level() == Level::ERROR
    }
    tracing_subscriber::filter::FilterFn::new(reads as fn(&Metadata<'_>) -> bool)
}

/// Requests of a name that found no OpenTelemetry context: one in this
/// many asks again.
const OTEL_RECHECK: u64 = 1024;

/// The word and bit of a request name in [`BlackboxLayer::no_otel_names`].
#[inline]
fn name_bit(name: u16) -> (usize, u64) {
    (usize::from(name) / 64, 1 << (name % 64))
}

/// A callsite's decision, made once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CallsiteInfo {
    request: Option<bool>,
    name: u16,
    /// A request of this callsite reads field values at its open: an
    /// `otel.kind` (only `server` is a request, unless the rule names spans
    /// explicitly) or an `otel.name` (it names the request).
    reads_fields: bool,
    /// The callsite marks server requests the ecosystem's way
    /// ([`looks_like_request`](crate::setup_check::looks_like_request)).
    marked: bool,
}

/// The field whose value names a span's OpenTelemetry kind.
const OTEL_KIND: &str = "otel.kind";
/// The field whose value names a span in OpenTelemetry.
const OTEL_NAME: &str = "otel.name";

impl CallsiteInfo {
    /// As kept in the callsite table: the name index, the decision above
    /// it, then the two field flags.
    fn pack(self) -> u32 {
        let request = match self.request {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        u32::from(self.name)
            | request << 16
            | u32::from(self.reads_fields) << 18
            | u32::from(self.marked) << 20
    }

    fn unpack(v: u32) -> CallsiteInfo {
        CallsiteInfo {
            request: match (v >> 16) & 3 {
                0 => None,
                1 => Some(false),
                _ => Some(true),
            },
            name: v as u16,
            reads_fields: v & 1 << 18 != 0,
            marked: v & 1 << 20 != 0,
        }
    }
}

/// Reads a span's `otel.kind` and `otel.name` values at its open, into a
/// buffer on the stack (`otel.name = %route` arrives as a `Display`).
#[derive(Default)]
struct OtelFields {
    /// `otel.kind` was recorded and is `server` (any case).
    server: Option<bool>,
    name: NameBuf,
}

/// A span name of at most 128 bytes, written in place (a longer one is cut
/// at a character boundary).
struct NameBuf {
    bytes: [u8; 128],
    len: usize,
}

impl Default for NameBuf {
    fn default() -> NameBuf {
        NameBuf {
            bytes: [0; 128],
            len: 0,
        }
    }
}

impl NameBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for NameBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl tracing::field::Visit for OtelFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use fmt::Write as _;
        match field.name() {
            OTEL_KIND => self.server = Some(value.eq_ignore_ascii_case("server")),
            OTEL_NAME => {
                self.name.len = 0;
                let _ = self.name.write_str(value);
            }
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use fmt::Write as _;
        match field.name() {
            OTEL_KIND => {
                let mut b = NameBuf::default();
                let _ = write!(b, "{value:?}");
                // `?SpanKind::Server` and `"server"` alike.
                let kind = b.as_str().trim_matches('"');
                self.server = Some(kind.eq_ignore_ascii_case("server"));
            }
            OTEL_NAME => {
                self.name.len = 0;
                let _ = write!(self.name, "{value:?}");
                // A `?`-recorded string keeps its quotes; a `%` one has none.
                let len = self.name.len;
                if len >= 2 && self.name.bytes[0] == b'"' && self.name.bytes[len - 1] == b'"' {
                    self.name.bytes.copy_within(1..len - 1, 0);
                    self.name.len = len - 2;
                }
            }
            _ => {}
        }
    }
}

/// The state of a request whose bucket of the open-request table was full,
/// kept in the span's extensions instead (in [`RequestStates`]).
struct RequestState {
    /// The recorder whose layer watches this request (its shared state's address).
    recorder: usize,
    /// The layer instance that watches this request (others leave it alone).
    layer: u16,
    id: u64,
    name: u16,
    start: u64,
    ids: OnceLock<Option<(TraceId, SpanId, bool)>>,
    error: AtomicBool,
}

/// The requests states of one span, one per recorder whose table was full
/// for it: a span's extensions hold one value of a type (a second insert
/// panics), and two recorders in one subscriber may both need one.
struct RequestStates(Vec<RequestState>);

impl RequestStates {
    /// The state layer `tag` keeps in a span's extensions, if any.
    fn in_span<'a>(
        ext: &'a tracing_subscriber::registry::Extensions<'_>,
        tag: u16,
    ) -> Option<&'a RequestState> {
        ext.get::<RequestStates>()?.of_layer(tag)
    }

    /// The state kept by layer `tag`.
    fn of_layer(&self, tag: u16) -> Option<&RequestState> {
        self.0.iter().find(|s| s.layer == tag)
    }

    /// Whether a layer of `recorder` keeps a state here.
    fn has_recorder(&self, recorder: usize) -> bool {
        self.0.iter().any(|s| s.recorder == recorder)
    }
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
    /// Each span callsite's [`CallsiteInfo`], by the address of its metadata.
    callsites: AddressTable,
    /// The subscriber this layer is part of, once it became a dispatcher:
    /// OpenTelemetry ids are asked of it.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
    /// A request span had an OpenTelemetry context: the subscriber has a
    /// `tracing-opentelemetry` layer (of the version this crate uses).
    otel_seen: AtomicBool,
    /// Request names (interned indices, a bit each) whose span had no
    /// OpenTelemetry context while none was ever seen: their requests do
    /// not ask again (but one in [`OTEL_RECHECK`]), so a subscriber without
    /// the layer pays nothing per request. Per name, not per process: a
    /// span the layer's per-layer filter leaves out (`GET /health`) has no
    /// context either, and must not stop the others from asking.
    no_otel_names: Box<[AtomicU64]>,
    /// The latency threshold in raw clock ticks: a close compares ticks.
    threshold_ticks: u64,
    /// The rule is [`RequestSpans::Auto`] (read on every root span's open).
    auto: bool,
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
        let auto = matches!(shared.settings.request_spans, RequestSpans::Auto);
        shared.layers.fetch_add(1, Ordering::Relaxed);
        let threshold_ticks = shared
            .capture
            .clock
            .ticks(shared.settings.latency_threshold);
        static NEXT_TAG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        BlackboxLayer {
            shared,
            tag: (NEXT_TAG.fetch_add(1, Ordering::Relaxed) as u16) & LAYER_TAG_MASK,
            callsites: AddressTable::new(),
            dispatch: OnceLock::new(),
            otel_seen: AtomicBool::new(false),
            no_otel_names: (0..(1usize << 16) / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            threshold_ticks,
            auto,
        }
    }

    /// Under [`RequestSpans::Auto`], whether a root span of this callsite
    /// is a request: a marked one is; an unmarked one is until a marked
    /// callsite was decided (`decide` flips the process's flag). One
    /// relaxed load for an unmarked span.
    #[inline]
    fn auto_admits(&self, info: CallsiteInfo) -> bool {
        info.marked || !(self.auto && self.shared.marked_requests.load(Ordering::Relaxed))
    }

    /// The decision for a callsite: from the table after its first span (a
    /// few loads, no lock), made and kept on the first. Two threads making
    /// it at once make the same one. Past the table's capacity (thousands of
    /// span callsites) a callsite is decided anew each time: correct, slower.
    #[inline]
    fn info(&self, meta: &'static Metadata<'static>) -> CallsiteInfo {
        let key = meta as *const Metadata<'static> as usize as u64;
        if let Some(v) = self.callsites.get(key) {
            return CallsiteInfo::unpack(v);
        }
        self.decide(meta, key)
    }

    #[cold]
    #[inline(never)]
    fn decide(&self, meta: &'static Metadata<'static>, key: u64) -> CallsiteInfo {
        let request = self.shared.settings.request_spans.classify(meta);
        let fields = meta.fields();
        let info = CallsiteInfo {
            request,
            name: if meta.is_span() {
                self.shared.capture.strings.intern(meta.name())
            } else {
                NO_STRING
            },
            reads_fields: fields.field(OTEL_NAME).is_some()
                || (fields.field(OTEL_KIND).is_some() && request.is_none()),
            marked: meta.is_span() && crate::setup_check::looks_like_request(meta),
        };
        if info.marked && !self.shared.marked_requests.load(Ordering::Relaxed) {
            self.shared.marked_requests.store(true, Ordering::Relaxed);
        }
        self.callsites.insert(key, info.pack());
        info
    }

    /// The OpenTelemetry ids of span `id`, asked of the subscriber this
    /// layer is part of (not the thread's default, which may be another
    /// subscriber: a scoped one, or one whose OpenTelemetry layer does not
    /// know this span).
    ///
    /// The third value is `true` when the app's sampler dropped the trace
    /// (not sampled): the app will never export that request span, so the
    /// window carries it, under the app's trace and span ids.
    fn otel_ids(&self, id: &Id, name: u16) -> Option<(TraceId, SpanId, bool)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        // `None` when the subscriber has no OpenTelemetry layer, or when
        // that layer did not build this span (its per-layer filter).
        let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            let (word, bit) = name_bit(name);
            if self.no_otel_names[word].load(Ordering::Relaxed) & bit == 0 {
                self.no_otel_names[word].fetch_or(bit, Ordering::Relaxed);
            }
            return None;
        };
        if !self.otel_seen.load(Ordering::Relaxed) {
            self.otel_seen.store(true, Ordering::Relaxed);
        }
        let sc = cx.span().span_context().clone();
        sc.is_valid()
            .then(|| (sc.trace_id(), sc.span_id(), !sc.is_sampled()))
    }

    /// Whether a request's first enter asks for its OpenTelemetry ids:
    /// always once a context was seen; else unless its name found none
    /// before (then one request in [`OTEL_RECHECK`]).
    #[inline]
    fn asks_otel(&self, word: u64) -> bool {
        let (request, name) = unpack(word);
        let (i, bit) = name_bit(name);
        self.otel_seen.load(Ordering::Relaxed)
            || self.no_otel_names[i].load(Ordering::Relaxed) & bit == 0
            || request % OTEL_RECHECK == 0
    }
}

/// The new-span and enter callbacks' bodies past their first checks.
impl BlackboxLayer {
    /// Whether a new span is a root span: it has no parent, or only Tokio's
    /// own spans above it ([`is_runtime_span`]).
    #[inline]
    fn is_root<S>(attrs: &Attributes<'_>, ctx: &Context<'_, S>) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if attrs.is_root() {
            return true;
        }
        let parent = if attrs.is_contextual() {
            let current = ctx.current_span();
            match current.metadata() {
                None => return true,
                Some(meta) if !is_runtime_span(meta) => return false,
                Some(_) => current.id().cloned(),
            }
        } else {
            attrs.parent().cloned()
        };
        parent.is_none_or(|p| Self::only_runtime_spans_from(&p, ctx))
    }

    /// Whether span `id` and all its ancestors are Tokio's own spans.
    #[cold]
    #[inline(never)]
    fn only_runtime_spans_from<S>(id: &Id, ctx: &Context<'_, S>) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut span = ctx.span(id);
        while let Some(s) = span {
            if !is_runtime_span(s.metadata()) {
                return false;
            }
            span = s.parent();
        }
        true
    }

    /// A span entered, past [`Capture::reenter`](crate::capture::Capture::reenter):
    /// a request's enter is recorded; the rest is rare.
    #[inline(never)]
    fn enter_span<S>(&self, id: &Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let span_id = id.into_u64();
        let requests = &self.shared.requests;
        let Some(word) = requests.get(span_id) else {
            // Not in the table: a request past it, or a span that names the
            // task it is entered in; both rare, so the rest is out of line.
            let unnamed = self.shared.capture.unnamed_task(span_id);
            if unnamed.is_some() || requests.any_fallbacks() {
                self.enter_other(id, &ctx, unnamed);
            }
            return;
        };
        if layer_of(word) != self.tag {
            return;
        }
        self.shared
            .capture
            .request_enter(unpack(word).0, span_id, self.tag);
        // Once per request (the first enter marks it), out of line.
        if word & IDS_LOOKED_UP == 0 {
            self.first_enter(id, word);
        }
    }
}

/// The layer's rare paths, out of line so the hooks' fast paths stay small:
/// spans outside the open-request table (a request whose bucket was full, a
/// span that names the task it is entered in).
impl BlackboxLayer {
    #[cold]
    #[inline(never)]
    fn enter_other<S>(&self, id: &Id, ctx: &Context<'_, S>, unnamed: Option<u64>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let capture = &self.shared.capture;
        let Some(span) = ctx.span(id) else { return };
        let need_ids = {
            let ext = span.extensions();
            let states = ext.get::<RequestStates>();
            match states.and_then(|s| s.of_layer(self.tag)) {
                Some(state) => {
                    capture.request_enter(state.id, id.into_u64(), self.tag);
                    state.ids.get().is_none()
                }
                // Another layer of this recorder watches it.
                None if states.is_some_and(|s| s.has_recorder(self.recorder())) => return,
                None => {
                    // Not a request: the first span a task enters names it
                    // (its `.instrument(..)` span is entered first in every
                    // poll), Tokio's own `runtime.spawn` around it aside.
                    if is_runtime_span(span.metadata()) {
                        capture.remember_runtime_span(id.into_u64());
                    } else if let Some(task) = unnamed {
                        capture.name_task(task, self.info(span.metadata()).name);
                    }
                    return;
                }
            }
        };
        if need_ids {
            // Not while holding our extensions: the OpenTelemetry layer takes
            // the same span's extensions to build its context.
            // Requests past the table always ask (they are rare).
            let ids = self.otel_ids(id, crate::event::NO_STRING);
            if let Some(state) = RequestStates::in_span(&span.extensions(), self.tag) {
                let _ = state.ids.set(ids);
            }
        }
    }

    /// A span exited, past [`Capture::defer_exit`](crate::capture::Capture::defer_exit):
    /// a request's exit outside a poll (or not the span entered last) is
    /// written now.
    #[inline(never)]
    fn exit_span<S>(&self, id: &Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let requests = &self.shared.requests;
        match requests.get(id.into_u64()) {
            Some(word) if layer_of(word) == self.tag => {
                self.shared.capture.request_exit(unpack(word).0);
            }
            Some(_) => {}
            None if requests.any_fallbacks() => self.exit_fallback(id, &ctx),
            None => {}
        }
    }

    /// A request's first enter: marked, so its later enters skip this;
    /// with OpenTelemetry on, its ids exist by now and are kept for the
    /// window (once per request, out of line).
    #[cold]
    #[inline(never)]
    fn first_enter(&self, id: &Id, word: u64) {
        let requests = &self.shared.requests;
        let span_id = id.into_u64();
        if requests.mark_ids(span_id)
            && self.asks_otel(word)
            && let Some((trace, span, own)) = self.otel_ids(id, unpack(word).1)
        {
            requests.set_ids(span_id, trace, span, own);
        }
    }

    /// A request-candidate span whose callsite has `otel.kind` or
    /// `otel.name`: `None` when its kind is not `server` (a client call, a
    /// producer: no request), else its name (the `otel.name` value, interned
    /// through the thread's cache, or the callsite's name).
    #[cold]
    #[inline(never)]
    fn otel_fields(&self, attrs: &Attributes<'_>, info: CallsiteInfo) -> Option<u16> {
        let mut fields = OtelFields::default();
        attrs.record(&mut fields);
        if info.request.is_none() && fields.server == Some(false) {
            return None;
        }
        let name = fields.name.as_str();
        if name.is_empty() {
            return Some(info.name);
        }
        Some(self.shared.capture.strings.intern_cached(name))
    }

    /// Whether another layer of this recorder watches span `id` already (in
    /// the table, or in the extensions when its bucket was full). A layer
    /// made later sees the span's open already.
    #[cold]
    #[inline(never)]
    fn watched_elsewhere<S>(&self, id: &Id, ctx: &Context<'_, S>) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let requests = &self.shared.requests;
        self.shared.layers.load(Ordering::Relaxed) > 1 && requests.get(id.into_u64()).is_some()
            || requests.any_fallbacks()
                && ctx.span(id).is_some_and(|s| {
                    s.extensions()
                        .get::<RequestStates>()
                        .is_some_and(|st| st.has_recorder(self.recorder()))
                })
    }

    /// This layer's recorder, as [`RequestState::recorder`] names it.
    fn recorder(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// A request whose bucket was full: its state goes in the span's
    /// extensions. `false` when the span is gone (nothing to record).
    #[cold]
    #[inline(never)]
    fn open_fallback<S>(
        &self,
        id: &Id,
        ctx: &Context<'_, S>,
        req: u64,
        name: u16,
        start: u64,
    ) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else {
            self.shared.requests.close_fallback();
            return false;
        };
        let state = RequestState {
            recorder: self.recorder(),
            layer: self.tag,
            id: req,
            name,
            start,
            ids: OnceLock::new(),
            error: AtomicBool::new(false),
        };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<RequestStates>() {
            Some(states) => states.0.push(state),
            None => ext.insert(RequestStates(vec![state])),
        }
        true
    }

    /// The close of a request kept in the span's extensions: `(request,
    /// name, start, ids, error)`, or `None` when the span is no request of
    /// this layer's.
    #[cold]
    #[inline(never)]
    fn close_fallback<S>(&self, id: &Id, ctx: &Context<'_, S>) -> Option<ClosedRequest>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let span = ctx.span(id)?;
        let ext = span.extensions();
        let state = RequestStates::in_span(&ext, self.tag)?;
        self.shared.requests.close_fallback();
        let ids = state.ids.get().copied().flatten();
        let error = state.error.load(Ordering::Relaxed);
        Some((state.id, state.name, state.start, ids, error))
    }

    /// A slow request closed: its window is offered to the trigger, with
    /// the OpenTelemetry ids, or those the capture thread made for a stuck
    /// capture, or fresh ones.
    #[cold]
    #[inline(never)]
    fn closed_slow(
        &self,
        request: u64,
        name: u16,
        (start, end): (u64, u64),
        ids: Option<(TraceId, SpanId, bool)>,
        error: bool,
    ) {
        if ids.is_none() && self.otel_seen.load(Ordering::Relaxed) {
            // The app traces with OpenTelemetry, but this request had no
            // context: its window goes into a trace of its own (counted;
            // its ids are made by the capture thread, if a capture carries it).
            self.shared.windows_unlinked.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.on_slow_request(crate::shared::SlowClose {
            request_id: request,
            name,
            ids,
            start,
            end,
            error,
        });
    }

    #[cold]
    #[inline(never)]
    fn exit_fallback<S>(&self, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        if let Some(state) = RequestStates::in_span(&span.extensions(), self.tag) {
            self.shared.capture.request_exit(state.id);
        }
    }
}

/// A closed request as the close reads it, from the table or the span's
/// extensions: `(request, name, start, ids, error)`.
type ClosedRequest = (u64, u16, u64, Option<(TraceId, SpanId, bool)>, bool);

impl<S> tracing_subscriber::Layer<S> for BlackboxLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
        self.shared.setup.set_dispatch(subscriber.downgrade());
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            let info = self.info(meta);
            // Checked later, on the capture thread: does the subscriber's
            // filter hide this request callsite from every layer?
            self.shared
                .setup
                .note_callsite(meta, info.marked || info.request == Some(true));
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
            None => Self::is_root(attrs, &ctx) && self.auto_admits(info),
        };
        if !is_request {
            return;
        }
        // Only callsites with `otel.kind` / `otel.name` fields read values.
        let mut name = info.name;
        if info.reads_fields {
            match self.otel_fields(attrs, info) {
                Some(n) => name = n,
                None => return,
            }
        }
        let requests = &self.shared.requests;
        let span_id = id.into_u64();
        // Another layer of this recorder may watch this span already (one
        // layer alone never looks).
        if (self.shared.layers.load(Ordering::Relaxed) > 1 || requests.any_fallbacks())
            && self.watched_elsewhere(id, &ctx)
        {
            return;
        }
        let capture = &self.shared.capture;
        let req = capture.new_request_id();
        let start = capture.clock.raw();
        if !requests.open(span_id, pack(req, name, self.tag), start)
            && !self.open_fallback(id, &ctx, req, name, start)
        {
            return;
        }
        capture.request_open(req, name, start);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        // Entered again in the poll that exited it (an `Instrumented`
        // future dropped in the poll that polled it): nothing to write, and
        // this small function returns without the rest's register saves.
        if !self.shared.capture.reenter(id.into_u64(), self.tag) {
            self.enter_span(id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        // Written with the poll's end, when deferred; this small function
        // returns without the rest's register saves.
        if !self.shared.capture.defer_exit(id.into_u64(), self.tag) {
            self.exit_span(id, ctx);
        }
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let requests = &self.shared.requests;
        for span in scope {
            if requests.mark_error(span.id().into_u64()) {
                return;
            }
            if requests.any_fallbacks()
                && let Some(state) = RequestStates::in_span(&span.extensions(), self.tag)
            {
                state.error.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let requests = &self.shared.requests;
        let span_id = id.into_u64();
        let capture = &self.shared.capture;
        let end = capture.clock.raw();
        let slow = |start: u64| end.saturating_sub(start) >= self.threshold_ticks;
        let closed: ClosedRequest = match requests.take(span_id, self.tag, slow) {
            Some(c) => {
                let (request, name) = unpack(c.word);
                (request, name, c.start_raw, c.ids, c.error())
            }
            None if requests.any_fallbacks() => match self.close_fallback(&id, &ctx) {
                Some(c) => c,
                None => return,
            },
            None => return,
        };
        let (request, name, start, ids, error) = closed;
        capture.request_close(request, end);
        if slow(start) {
            self.closed_slow(request, name, (start, end), ids, error);
        }
    }
}
