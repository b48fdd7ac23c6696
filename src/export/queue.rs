//! The export queue: bounded by jobs and by bytes, never waited on by its
//! producers (the capture thread, the tail sampler).

use super::counters::ExportCounters;
use crate::sync::lock;
use crate::window::SlowRequest;
use opentelemetry_sdk::trace::SpanData;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Jobs waiting for the export thread, the one in flight included: at most 64.
pub const QUEUE_CAPACITY: usize = 64;

/// Bytes of jobs waiting for the export thread, the one in flight included:
/// 64 MiB (estimated: the spans of a window or of a kept trace, with their
/// names, attributes and events).
/// A job that does not fit is refused and counted (a window in
/// [`BlackboxStats::sink_errors`](crate::BlackboxStats::sink_errors), a kept
/// trace in [`BlackboxStats::sampler_spans_dropped`](crate::BlackboxStats::sampler_spans_dropped)),
/// never waited for. One job larger than the limit is taken when the queue is
/// empty, so the bound is 64 MiB or one job, whichever is larger.
pub const QUEUE_MAX_BYTES: usize = 64 << 20;

/// Work for the export thread.
pub(crate) enum Job {
    /// A window, already mapped to its spans.
    Window(MappedWindow),
    /// A window as cut, mapped on the export thread.
    Cut(Box<crate::window::Cut>),
    /// A kept trace's spans.
    Spans(Vec<SpanData>),
}

/// A window's spans, and its slow requests: whether the tail sampler kept
/// their traces is asked when the spans are sent, not when they are queued.
pub(crate) struct MappedWindow {
    pub(crate) spans: Vec<SpanData>,
    pub(crate) requests: Vec<SlowRequest>,
}

impl MappedWindow {
    /// The memory the job holds, estimated.
    pub(crate) fn bytes(&self) -> usize {
        super::split::spans_bytes(&self.spans)
            + self
                .requests
                .iter()
                .map(|r| std::mem::size_of::<SlowRequest>() + r.name.len())
                .sum::<usize>()
    }
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// [`QUEUE_CAPACITY`] jobs or [`QUEUE_MAX_BYTES`] bytes are waiting.
    Full,
    /// The pipeline is shutting down.
    Closed,
}

/// The export queue: bounded by jobs and by bytes, never waited on by its
/// producers.
///
/// Protocol (one mutex, two condition variables):
/// - producers (`push`) add a job and its estimated bytes, or are refused;
/// - the export thread (`pop`) takes the oldest job; its bytes stay counted
///   until `finish`, so the job in flight is inside the bound;
/// - `accepted` and `finished` count jobs; a flush waits (with a deadline)
///   for `finished` to reach the `accepted` it saw, so it never puts
///   anything into a full queue;
/// - `close` lets the thread end once the queue is empty; `abandon` takes
///   every job still queued out, for the caller to count.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// The export thread waits here for jobs (or the close).
    work: Condvar,
    /// Flushes and the shutdown wait here for progress.
    progress: Condvar,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("Queue")
            .field("jobs", &st.jobs.len())
            .field("bytes", &st.bytes)
            .field("closed", &st.closed)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<(Job, usize)>,
    /// Bytes of `jobs` and of the job in flight.
    bytes: usize,
    /// Whether a job is in flight (taken, not finished).
    in_flight: bool,
    accepted: u64,
    finished: u64,
    closed: bool,
    /// The export thread has returned.
    thread_done: bool,
}

impl Queue {
    pub(crate) fn push(&self, job: Job, bytes: usize, c: &ExportCounters) -> Result<(), PushError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(PushError::Closed);
        }
        let held = st.jobs.len() + usize::from(st.in_flight);
        let empty = held == 0;
        if !empty && (held >= QUEUE_CAPACITY || st.bytes + bytes > QUEUE_MAX_BYTES) {
            return Err(PushError::Full);
        }
        st.jobs.push_back((job, bytes));
        st.bytes += bytes;
        st.accepted += 1;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    /// Whether a job of `bytes` would be accepted now.
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        let st = lock(&self.state);
        let held = st.jobs.len() + usize::from(st.in_flight);
        !st.closed && (held == 0 || (held < QUEUE_CAPACITY && st.bytes + bytes <= QUEUE_MAX_BYTES))
    }

    /// The next job, waiting for one; `None` once closed and empty.
    pub(crate) fn pop(&self) -> Option<(Job, usize)> {
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.jobs.pop_front() {
                st.in_flight = true;
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st = self
                .work
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    pub(crate) fn finish(&self, bytes: usize, c: &ExportCounters) {
        let mut st = lock(&self.state);
        st.in_flight = false;
        st.bytes = st.bytes.saturating_sub(bytes);
        st.finished += 1;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.progress.notify_all();
    }

    /// Waits until every job accepted so far is finished, or `deadline`.
    pub(crate) fn wait_finished(&self, deadline: Instant) -> bool {
        let target = lock(&self.state).accepted;
        self.wait_for(deadline, |st| st.finished >= target || st.thread_done)
            && lock(&self.state).finished >= target
    }

    /// No more jobs; the thread ends once the queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.work.notify_all();
    }

    /// Waits until the export thread has returned, or `deadline`.
    pub(crate) fn wait_thread(&self, deadline: Instant) -> bool {
        self.wait_for(deadline, |st| st.thread_done)
    }

    /// Waits on `progress` until `done` holds, or `deadline`; `false` on time-out.
    fn wait_for(&self, deadline: Instant, done: impl Fn(&QueueState) -> bool) -> bool {
        let mut st = lock(&self.state);
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .progress
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    pub(crate) fn thread_done(&self) {
        lock(&self.state).thread_done = true;
        self.progress.notify_all();
    }

    /// Takes every queued job out (not the one in flight).
    pub(crate) fn abandon(&self, c: &ExportCounters) -> Vec<Job> {
        let mut st = lock(&self.state);
        st.closed = true;
        let jobs: Vec<(Job, usize)> = st.jobs.drain(..).collect();
        let freed: usize = jobs.iter().map(|(_, b)| b).sum();
        st.bytes = st.bytes.saturating_sub(freed);
        st.finished += jobs.len() as u64;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.progress.notify_all();
        jobs.into_iter().map(|(j, _)| j).collect()
    }
}
