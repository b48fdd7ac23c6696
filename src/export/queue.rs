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

/// Jobs of kept traces' spans the queue holds at most, of its
/// [`QUEUE_CAPACITY`]: the other half is the windows', so a burst of late
/// spans (timeouts, background work ending after their roots) never
/// refuses the windows of the same incident.
pub(crate) const QUEUE_SPAN_JOBS: usize = QUEUE_CAPACITY / 2;

/// Spans a queued job of kept traces' spans grows to by taking later ones
/// in (the late spans of kept traces arrive one by one): one export batch.
const SPANS_PER_JOB: usize = 512;

/// Work for the export thread.
pub(crate) enum Job {
    /// A window, already mapped to its spans.
    Window(MappedWindow),
    /// A window as cut, mapped on the export thread, with the CPU time
    /// reserved for it in the recorder's budget when it was queued, ns.
    Cut(Box<crate::window::Cut>, u64),
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
    /// Queued jobs of kept traces' spans (not the one in flight).
    span_jobs: usize,
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
        if !empty && st.bytes + bytes > QUEUE_MAX_BYTES {
            return Err(PushError::Full);
        }
        let job = match job {
            // Spans join the last queued job of spans when it has room:
            // one span a job would fill the queue's slots.
            Job::Spans(spans) => {
                if let Some((Job::Spans(last), last_bytes)) = st.jobs.back_mut()
                    && last.len() + spans.len() <= SPANS_PER_JOB
                {
                    last.extend(spans);
                    *last_bytes += bytes;
                    st.bytes += bytes;
                    c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
                    return Ok(());
                }
                if !empty && st.span_jobs >= QUEUE_SPAN_JOBS {
                    return Err(PushError::Full);
                }
                st.span_jobs += 1;
                Job::Spans(spans)
            }
            other => other,
        };
        if !empty && held >= QUEUE_CAPACITY {
            if matches!(job, Job::Spans(_)) {
                st.span_jobs -= 1;
            }
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
                if matches!(job.0, Job::Spans(_)) {
                    st.span_jobs -= 1;
                }
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
        st.span_jobs = 0;
        let freed: usize = jobs.iter().map(|(_, b)| b).sum();
        st.bytes = st.bytes.saturating_sub(freed);
        st.finished += jobs.len() as u64;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.progress.notify_all();
        jobs.into_iter().map(|(j, _)| j).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Job {
        Job::Window(MappedWindow {
            spans: Vec::new(),
            requests: Vec::new(),
        })
    }

    fn late_span() -> Job {
        let req = crate::export::testing::slow_request(1, "GET /late", 0, 1);
        Job::Spans(vec![crate::export::otlp::request_span(&req, "test")])
    }

    /// Issue 27, finding 2: each late span of a kept trace was a job of its
    /// own, so 64 of them (the export thread busy) refused every window of
    /// the incident. Late spans now join the last job of spans, and spans
    /// hold at most half the jobs.
    #[test]
    fn late_spans_never_crowd_out_windows() {
        let q = Queue::default();
        let c = ExportCounters::default();
        // The export thread is busy with a window.
        q.push(window(), 0, &c).unwrap();
        let _in_flight = q.pop().unwrap();
        for i in 0..2_000 {
            q.push(late_span(), 10, &c)
                .unwrap_or_else(|e| panic!("late span {i}: {e:?}"));
            if i % 100 == 0 {
                // A window between them: the next spans start a new job.
                q.push(window(), 0, &c).unwrap();
            }
        }
        let queued = lock(&q.state).jobs.len();
        assert!(queued < QUEUE_CAPACITY, "{queued} jobs");
        for i in 0..(QUEUE_CAPACITY - 1 - queued) {
            q.push(window(), 0, &c)
                .unwrap_or_else(|e| panic!("window {i} refused: {e:?}"));
        }
        assert_eq!(q.push(window(), 0, &c), Err(PushError::Full));
        // Every span is still there, in the jobs.
        let spans: usize = lock(&q.state)
            .jobs
            .iter()
            .map(|(j, _)| match j {
                Job::Spans(s) => s.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(spans, 2_000);
    }

    /// Spans alone take at most half the queue's jobs.
    #[test]
    fn spans_take_at_most_half_the_jobs() {
        let q = Queue::default();
        let c = ExportCounters::default();
        q.push(window(), 0, &c).unwrap();
        let _in_flight = q.pop().unwrap();
        let mut accepted = 0;
        for _ in 0..QUEUE_CAPACITY {
            // Full jobs: none takes the next one in.
            let big = Job::Spans(
                (0..SPANS_PER_JOB)
                    .map(|_| match late_span() {
                        Job::Spans(mut s) => s.remove(0),
                        _ => unreachable!(),
                    })
                    .collect(),
            );
            if q.push(big, 10, &c).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, QUEUE_SPAN_JOBS);
    }
}
