//! The export path's counters, read by [`Blackbox::stats`](crate::Blackbox::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the export path, read by [`Blackbox::stats`](crate::Blackbox::stats).
#[derive(Debug, Default)]
pub(crate) struct ExportCounters {
    pub(crate) windows_exported: AtomicU64,
    pub(crate) spans_exported: AtomicU64,
    pub(crate) spans_dropped: AtomicU64,
    pub(crate) export_retries: AtomicU64,
    pub(crate) export_failures: AtomicU64,
    pub(crate) requests_split: AtomicU64,
    pub(crate) traces_kept: AtomicU64,
    pub(crate) traces_sampled_out: AtomicU64,
    pub(crate) traces_evicted: AtomicU64,
    pub(crate) sampler_spans_dropped: AtomicU64,
    /// Windows the pipeline did not send whole: refused by a full queue,
    /// abandoned at shutdown, a request of it given up on, or its mapping
    /// panicked. With `windows_exported`, each window is counted once.
    pub(crate) windows_dropped: AtomicU64,
    /// Bytes (estimated) held by the export queue now, the job in flight included.
    pub(crate) queue_bytes: AtomicU64,
    /// Exports of the recorder's own metrics that succeeded, and that failed.
    pub(crate) metrics_exported: AtomicU64,
    pub(crate) metrics_failures: AtomicU64,
    /// Export jobs (a window's mapping, a batch's send) that panicked: the
    /// job is lost and counted, the export thread goes on.
    pub(crate) export_panics: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
