//! What the recorder, the sinks and the tail sampler share about export:
//! the counters, the trace ids the sampler kept, and the running queue.

use super::counters::ExportCounters;
use super::queue::{Job, Queue};
use super::split::spans_bytes;
use crate::cpu_budget::CpuBudget;
use crate::sync::lock;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs `f` with no `tracing` subscriber on this thread: the recorder's
/// own work (an exporter's tonic, h2 and hyper events, a sink's) never
/// reaches the application's subscriber or the recorder's layer.
///
/// Scoped to the work, not to the thread's life: while any thread holds a
/// scoped dispatcher, tracing-core looks up a thread-local for every span
/// and event of every thread of the process. `Dispatch::none()` is static,
/// so this registers nothing with tracing's callsite registry either.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), f)
}

/// How many recently kept trace ids are remembered, so a window exported
/// after its trace was kept knows its request span went out (4,096 × 16 bytes).
const KEPT_REMEMBERED: usize = 4096;

/// Trace ids the tail sampler kept, most recent [`KEPT_REMEMBERED`].
#[derive(Debug, Default)]
struct Kept {
    set: HashSet<TraceId>,
    order: VecDeque<TraceId>,
}

/// What the recorder, the sinks and the tail sampler share about export.
#[derive(Debug)]
pub(crate) struct ExportShared {
    pub(crate) counters: ExportCounters,
    kept: Mutex<Kept>,
    /// Set once a tail sampler exists: the app's spans go through it, so a
    /// window whose trace it did not keep must carry its request span.
    pub(crate) sampler_active: AtomicBool,
    queue: Mutex<Option<Arc<Queue>>>,
    /// How long a sink's flush waits for the export thread.
    pub(crate) flush_timeout: Duration,
    /// The application's resource, when it gave one (the builder's
    /// `resource`, or its tracer provider through the tail sampler).
    app_resource: Mutex<Option<Resource>>,
    /// `app_resource` changed since the export thread last read it.
    resource_changed: AtomicBool,
    /// The CPU budget the export thread and the capture thread share.
    pub(crate) cpu: Arc<CpuBudget>,
}

impl Default for ExportShared {
    fn default() -> ExportShared {
        ExportShared::new(
            crate::config::DEFAULT_SHUTDOWN_TIMEOUT,
            Arc::new(CpuBudget::new(crate::config::DEFAULT_CPU_BUDGET)),
        )
    }
}

impl ExportShared {
    pub(crate) fn new(flush_timeout: Duration, cpu: Arc<CpuBudget>) -> ExportShared {
        ExportShared {
            cpu,
            counters: ExportCounters::default(),
            kept: Mutex::default(),
            sampler_active: AtomicBool::new(false),
            queue: Mutex::new(None),
            flush_timeout,
            app_resource: Mutex::new(None),
            resource_changed: AtomicBool::new(false),
        }
    }

    /// The application's resource: what every window and kept trace is
    /// exported under from now on (over the environment's).
    pub(crate) fn set_app_resource(&self, resource: &Resource) {
        *lock(&self.app_resource) = Some(resource.clone());
        self.resource_changed.store(true, Ordering::Release);
    }

    /// The resource to export under: the environment's, with the app's over it.
    pub(crate) fn resource(&self) -> Resource {
        super::resource::merged(lock(&self.app_resource).as_ref())
    }

    /// The resource, when it changed since the last call (once per change).
    pub(crate) fn resource_change(&self) -> Option<Resource> {
        self.resource_changed
            .swap(false, Ordering::AcqRel)
            .then(|| self.resource())
    }

    /// Remembers that the tail sampler kept `trace`.
    pub(crate) fn kept(&self, trace: TraceId) {
        let mut k = lock(&self.kept);
        if k.set.insert(trace) {
            k.order.push_back(trace);
            if k.order.len() > KEPT_REMEMBERED
                && let Some(old) = k.order.pop_front()
            {
                k.set.remove(&old);
            }
        }
    }

    pub(crate) fn was_kept(&self, trace: TraceId) -> bool {
        lock(&self.kept).set.contains(&trace)
    }

    /// Hands spans (a kept trace) to the export thread; `false` if there is
    /// none or its queue is full.
    pub(crate) fn send_spans(&self, spans: Vec<SpanData>) -> bool {
        let queue = lock(&self.queue).clone();
        match queue {
            Some(q) => {
                let bytes = spans_bytes(&spans);
                q.push(Job::Spans(spans), bytes, &self.counters).is_ok()
            }
            None => false,
        }
    }

    /// Connects a pipeline's queue (the first one wins).
    pub(crate) fn connect(&self, queue: Arc<Queue>) {
        let mut q = lock(&self.queue);
        if q.is_none() {
            *q = Some(queue);
        }
    }

    /// Lets the export thread end once the sinks are gone (guard dropped).
    pub(crate) fn disconnect(&self) {
        lock(&self.queue).take();
    }
}
