//! What the request layer shares with the recorder, and nothing more: the
//! settings the layer reads, the capture it records into, the open-request
//! table and request ids, and the hand-off of slow requests to the capture
//! thread.
//!
//! The layer holds an `Arc<Shared>`; the recorder holds the same one, beside
//! its own state (the other settings, counters, export). Neither the layer
//! nor this module imports the recorder.

use crate::capture::Capture;
use crate::config::RequestSpans;
use crate::requests::OpenRequests;
use crate::sync::lock;
use crate::window::SlowRequest;
use opentelemetry::trace::{SpanId, TraceId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many recent slow requests a dump carries.
const RECENT_SLOW: usize = 256;

/// The settings the layer reads.
#[derive(Debug, Clone)]
pub(crate) struct LayerSettings {
    pub(crate) request_spans: RequestSpans,
    pub(crate) latency_threshold: Duration,
}

/// A slow request as its close reports it: ids, the name's string index
/// and raw clock times, nothing allocated. The capture thread makes the
/// [`SlowRequest`] (name copied, times in UNIX ns) only when a capture
/// carries it: in an incident, when every request is slow, the requests'
/// own threads pay a queue slot each, and the merged ones cost a count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowClose {
    pub(crate) request_id: u64,
    /// The request's name, an index into the capture's strings.
    pub(crate) name: u16,
    /// Trace id, span id, and whether the span is the recorder's own;
    /// `None`: the span had no OpenTelemetry context, and the window goes
    /// into a trace of the recorder's own (ids made when it is carried).
    pub(crate) ids: Option<(TraceId, SpanId, bool)>,
    /// When it opened and closed (raw clock).
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) error: bool,
}

/// A message to the capture thread.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A slow request that closed.
    Slow(SlowClose),
    /// Cut everything pending and flush the sink, by the deadline.
    Flush(SyncSender<()>, Instant),
    /// Like `Flush`, then stop.
    Shutdown(SyncSender<()>, Instant),
}

/// The state shared by the layer and the recorder.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: LayerSettings,
    pub(crate) capture: Arc<Capture>,
    /// The open request spans, shared by the layer and the capture thread.
    pub(crate) requests: OpenRequests,
    /// Layers made for this recorder (`Blackbox::layer` called more than
    /// once): with one, a new span cannot be another layer's already.
    pub(crate) layers: AtomicU64,
    /// The bounded queue to the capture thread.
    tx: SyncSender<Msg>,
    /// Request spans that ran at least the threshold (closed or stuck).
    pub(crate) slow_requests: AtomicU64,
    /// Slow requests lost because the capture queue was full.
    pub(crate) slow_dropped: AtomicU64,
    /// The end (raw clock) of the pending capture that carries all the
    /// requests it can ([`MAX_LINKED`](crate::trigger::MAX_LINKED)), 0: none.
    /// A slow request closing before it would only be counted there, so
    /// its thread counts it here instead of queueing it: in an incident
    /// the requests' threads pay one load and one count each. Set and
    /// cleared by the capture thread.
    pub(crate) absorb_until: AtomicU64,
    /// Slow requests counted into a full pending capture by their own
    /// thread (see `absorb_until`); merged, and omitted from the window.
    pub(crate) slow_absorbed: AtomicU64,
    /// The capture thread has shut down (or is shutting down): slow
    /// closes are counted as dropped, not queued to nobody.
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Slow requests queued since the capture thread last looked: at half
    /// the queue, the sender wakes it (else it wakes on its own).
    pub(crate) slow_queued: AtomicU64,
    /// The capture thread, woken by a flush, the shutdown and a half-full queue.
    pub(crate) capture_thread: std::sync::OnceLock<std::thread::Thread>,
    /// Slow requests with no OpenTelemetry context although the app has an
    /// OpenTelemetry layer: their windows went into traces of their own.
    pub(crate) windows_unlinked: AtomicU64,
    /// A request span marked the ecosystem's way was made (tower-http,
    /// `otel.kind = server`, ...): under `RequestSpans::Auto`, unmarked root
    /// spans are no requests from then on.
    pub(crate) marked_requests: std::sync::atomic::AtomicBool,
    /// What the app's log is told about a setup that leaves the recorder blind.
    pub(crate) setup: crate::setup_check::SetupCheck,
    recent_slow: Mutex<VecDeque<SlowRequest>>,
}

impl Shared {
    pub(crate) fn new(
        settings: LayerSettings,
        capture: Arc<Capture>,
        tx: SyncSender<Msg>,
    ) -> Shared {
        Shared {
            settings,
            capture,
            requests: OpenRequests::default(),
            layers: AtomicU64::new(0),
            tx,
            slow_requests: AtomicU64::new(0),
            slow_dropped: AtomicU64::new(0),
            absorb_until: AtomicU64::new(0),
            slow_absorbed: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            slow_queued: AtomicU64::new(0),
            capture_thread: std::sync::OnceLock::new(),
            windows_unlinked: AtomicU64::new(0),
            marked_requests: std::sync::atomic::AtomicBool::new(false),
            setup: Default::default(),
            recent_slow: Mutex::new(VecDeque::new()),
        }
    }

    /// A slow request closed. It is counted and queued for the capture
    /// thread (counted as dropped when the queue is full: never blocks),
    /// which remembers it for dumps when a capture carries it; or, when a
    /// full capture's window covers it, only counted (`absorb_until`).
    pub(crate) fn on_slow_request(&self, close: SlowClose) {
        self.slow_requests.fetch_add(1, Ordering::Relaxed);
        if self.closed.load(Ordering::Relaxed) {
            self.slow_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if close.end <= self.absorb_until.load(Ordering::Relaxed) {
            // A full capture is pending and its window covers this close.
            self.slow_absorbed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(Msg::Slow(close)) {
            // No wake-up: the capture thread looks every turn; only a queue
            // filling up before that wakes it (once).
            Ok(()) => {
                let queued = self.slow_queued.fetch_add(1, Ordering::Relaxed) + 1;
                if queued == (crate::config::DEFAULT_QUEUE_CAPACITY / 2) as u64 {
                    self.wake_capture();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.slow_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A slow request that ran over `[start, end]` (raw clock), its times
    /// in UNIX ns with a fresh anchor (the raw and wall clocks drift apart
    /// over hours). The one place that makes a [`SlowRequest`] from raw times.
    pub(crate) fn slow_request(
        &self,
        request_id: u64,
        name: u16,
        (trace_id, span_id, own_span): (TraceId, SpanId, bool),
        start: u64,
        end: u64,
    ) -> SlowRequest {
        let anchor = self.capture.clock.anchor();
        let mut req = SlowRequest::new(
            request_id,
            self.capture.strings.get(name),
            trace_id,
            span_id,
            anchor.to_unix_ns(start),
            anchor.to_unix_ns(end),
        );
        req.own_span = own_span;
        req
    }

    /// The [`SlowRequest`] a close reported (see [`Shared::slow_request`]).
    pub(crate) fn slow_request_of(&self, c: &SlowClose) -> SlowRequest {
        let ids = c.ids.unwrap_or_else(|| {
            use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
            let g = RandomIdGenerator::default();
            (g.new_trace_id(), g.new_span_id(), true)
        });
        let mut req = self.slow_request(c.request_id, c.name, ids, c.start, c.end);
        req.error = c.error;
        req
    }

    /// Keeps `req` among the recent slow requests a dump carries.
    pub(crate) fn remember(&self, req: &SlowRequest) {
        let mut recent = lock(&self.recent_slow);
        if recent.len() == RECENT_SLOW {
            recent.pop_front();
        }
        recent.push_back(req.clone());
    }

    /// The recent slow requests, oldest first.
    pub(crate) fn recent_slow(&self) -> Vec<SlowRequest> {
        lock(&self.recent_slow).iter().cloned().collect()
    }

    /// Wakes the capture thread (it otherwise looks at its queue every turn).
    pub(crate) fn wake_capture(&self) {
        if let Some(t) = self.capture_thread.get() {
            t.unpark();
        }
    }

    /// Sends on the bounded capture queue, retrying until `deadline` while
    /// it is full: never blocks an application thread past its timeout.
    pub(crate) fn send_until(&self, mut msg: Msg, deadline: Instant) -> bool {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => {
                    self.wake_capture();
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
