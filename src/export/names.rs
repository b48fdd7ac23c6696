//! The vocabulary of the export: every span name, event name, link kind,
//! request source and attribute key the recorder writes, in one place.
//! `docs/attributes.md` documents the same list (a test checks that each
//! appears there).
//!
//! Durations are floating-point milliseconds (`*_ms`), so they read well in
//! Jaeger and compare in TraceQL (`{ span.blackbox.task.longest_poll_ms > 50 }`).

/// Name of the span covering the window.
pub const WINDOW_SPAN: &str = "blackbox.window";
/// Name of the span that links another slow request to the window.
pub const WINDOW_REF_SPAN: &str = "blackbox.window.ref";
/// Name of a poll span.
pub const POLL_SPAN: &str = "poll";
/// `true` on every span the recorder exports.
pub const CAPTURED: &str = "blackbox.captured";
/// The latency threshold, ms.
pub const THRESHOLD_MS: &str = "blackbox.threshold_ms";
/// The slow request's duration, ms.
pub const REQUEST_DURATION_MS: &str = "blackbox.request.duration_ms";
/// The slow request's span name.
pub const REQUEST_NAME: &str = "blackbox.request.name";
/// Number of slow requests the capture links (at most 64).
pub const WINDOW_REQUESTS: &str = "blackbox.window.requests";
/// Slow requests the capture also covered but does not link (past 64).
pub const WINDOW_REQUESTS_OMITTED: &str = "blackbox.window.requests_omitted";
/// `true` when the slow request was still open when captured (stuck).
pub const REQUEST_OPEN: &str = "blackbox.request.open";
/// Capture sequence number in the process.
pub const WINDOW_SEQUENCE: &str = "blackbox.window.sequence";
/// Window start, UNIX ns.
pub const WINDOW_START: &str = "blackbox.window.start_unix_ns";
/// Window end, UNIX ns.
pub const WINDOW_END: &str = "blackbox.window.end_unix_ns";
/// Events recorded in the window.
pub const WINDOW_EVENTS: &str = "blackbox.window.events";
/// Events of the window lost to ring overwrite (estimated).
pub const WINDOW_EVENTS_LOST: &str = "blackbox.window.events_lost";
/// Tasks that ran in the window.
pub const WINDOW_TASKS: &str = "blackbox.window.tasks";
/// Tasks exported as spans.
pub const WINDOW_TASKS_SHOWN: &str = "blackbox.window.tasks_shown";
/// Tasks left out by the span budget.
pub const WINDOW_TASKS_OMITTED: &str = "blackbox.window.tasks_omitted";
/// Polls left out by the span budget (over all tasks, shown or not).
pub const WINDOW_POLLS_OMITTED: &str = "blackbox.window.polls_omitted";
/// Time on a worker of the polls left out by the span budget, ms (over all
/// tasks, shown or not).
pub const WINDOW_POLLS_OMITTED_BUSY_MS: &str = "blackbox.window.polls_omitted_busy_ms";
/// Long polls (`blackbox.poll.long`) left out by the span budget, over all
/// tasks: 0 when every long poll of the window is a span.
pub const WINDOW_LONG_POLLS_OMITTED: &str = "blackbox.window.long_polls_omitted";
/// Threads left out by the span budget.
pub const WINDOW_WORKERS_OMITTED: &str = "blackbox.window.workers_omitted";
/// The span budget in force.
pub const WINDOW_MAX_SPANS: &str = "blackbox.window.max_spans";
/// Whether task hooks were compiled in (`--cfg tokio_unstable`).
pub const WINDOW_TASK_HOOKS: &str = "blackbox.window.task_hooks";
/// Whether scheduling delays were recorded.
pub const WINDOW_SCHEDULE_DELAY: &str = "blackbox.window.schedule_delay";
/// Polls of at least this are flagged, ms.
pub const LONG_POLL_MS: &str = "blackbox.long_poll_ms";
/// On a reference span and on a link: the window span's trace id (hex).
pub const WINDOW_TRACE_ID: &str = "blackbox.window.trace_id";
/// On a link of the window span: what the linked span is.
pub const LINK_KIND: &str = "blackbox.link";
/// On a request span the recorder exported itself: why.
pub const REQUEST_SOURCE: &str = "blackbox.request.source";
/// Tokio's task id.
pub const TASK_ID: &str = "tokio.task.id";
/// Spawn location: file.
pub const CODE_FILE: &str = "code.file.path";
/// Spawn location: line.
pub const CODE_LINE: &str = "code.line.number";
/// Spawn location: column.
pub const CODE_COLUMN: &str = "code.column.number";
/// `true` when the task worked for one of the captured requests.
pub const TASK_IN_REQUEST: &str = "blackbox.task.in_request";
/// Polls of the task in the window.
pub const TASK_POLLS: &str = "blackbox.task.polls";
/// Time being polled, ms.
pub const TASK_BUSY_MS: &str = "blackbox.task.busy_ms";
/// Longest poll, ms.
pub const TASK_LONGEST_POLL_MS: &str = "blackbox.task.longest_poll_ms";
/// Polls over the long-poll limit.
pub const TASK_LONG_POLLS: &str = "blackbox.task.long_polls";
/// Total scheduling delay, ms (only when recorded).
pub const TASK_SCHED_DELAY_MS: &str = "blackbox.task.sched_delay_ms";
/// Polls exported as spans.
pub const TASK_POLLS_SHOWN: &str = "blackbox.task.polls_shown";
/// Polls left out by the budget.
pub const TASK_POLLS_OMITTED: &str = "blackbox.task.polls_omitted";
/// Busy time of the polls left out, ms.
pub const TASK_POLLS_OMITTED_BUSY_MS: &str = "blackbox.task.polls_omitted_busy_ms";
/// The worker (thread name) of a poll: written by versions before issue 25
/// and still read from their files; a poll now carries only its lane
/// ([`POLL_LANE`]), and the worker span of that lane the thread's name.
pub const POLL_WORKER: &str = "blackbox.poll.worker";
/// The lane (thread index) of a poll.
pub const POLL_LANE: &str = "blackbox.poll.lane";
/// Scheduling delay before the poll, ms (only when recorded).
pub const POLL_SCHED_DELAY_MS: &str = "blackbox.poll.sched_delay_ms";
/// `true` on polls longer than the limit.
pub const POLL_LONG: &str = "blackbox.poll.long";
/// `false` when the poll was cut by the window's edge.
pub const POLL_COMPLETE: &str = "blackbox.poll.complete";
/// Thread name of a worker span.
pub const THREAD_NAME: &str = "thread.name";
/// Lane index of a worker span.
pub const WORKER_LANE: &str = "blackbox.worker.lane";
/// Fraction of the window the thread spent polling tasks, 0 to 1.
pub const WORKER_BUSY_FRACTION: &str = "blackbox.worker.busy_fraction";
/// Time the thread spent polling, ms.
pub const WORKER_BUSY_MS: &str = "blackbox.worker.busy_ms";
/// Polls run by the thread.
pub const WORKER_POLLS: &str = "blackbox.worker.polls";
/// Park and unpark events.
pub const WORKER_PARKS: &str = "blackbox.worker.parks";
/// Park/unpark events left out (over the per-span event cap).
pub const WORKER_EVENTS_OMITTED: &str = "blackbox.worker.events_omitted";
/// Events of the thread's lane lost to ring overwrite (estimated).
pub const WORKER_EVENTS_LOST: &str = "blackbox.worker.events_lost";

/// Name prefix of a task span without a span of its own: `task <file>:<line>`.
pub const TASK_SPAN_PREFIX: &str = "task ";
/// Name prefix of a thread's span: `worker <thread name>`.
pub const WORKER_SPAN_PREFIX: &str = "worker ";
/// Event on a task span: the task was spawned.
pub const EVENT_SPAWNED: &str = "spawned";
/// Event on a task span: the task was woken (poll start minus the scheduling delay).
pub const EVENT_WOKEN: &str = "woken";
/// Event on a task span: the task ended.
pub const EVENT_TERMINATED: &str = "terminated";
/// Event on a worker span: the thread parked.
pub const EVENT_PARK: &str = "park";
/// Event on a worker span: the thread unparked.
pub const EVENT_UNPARK: &str = "unpark";
/// [`LINK_KIND`] of a reference span's link back to the window span.
pub const LINK_WINDOW: &str = "window";
/// [`LINK_KIND`] of the window span's link to another slow request.
pub const LINK_SLOW_REQUEST: &str = "slow_request";
/// [`REQUEST_SOURCE`]: the recorder made the request's ids (no OpenTelemetry context).
pub const SOURCE_RECORDER: &str = "recorder";
/// [`REQUEST_SOURCE`]: the tail sampler did not keep the request's trace.
pub const SOURCE_TAIL_SAMPLER_MISSED: &str = "tail_sampler_missed";
/// [`REQUEST_SOURCE`]: sent by `blackbox replay`.
pub const SOURCE_REPLAY: &str = "replay";
/// On the window span: the verdict's sentence (see docs/verdicts.md).
pub const VERDICT: &str = "blackbox.verdict";
/// On the window span: the dominant cause (`blocked_worker`, `saturated_runtime`, `own_cpu`, `waiting`, `unclear`).
pub const CAUSE: &str = "blackbox.cause";
/// On the window span: `exact` or `inferred`, how runnable time was known.
pub const VERDICT_CONFIDENCE: &str = "blackbox.verdict.confidence";
/// On the window span: the causes with time, largest first.
pub const VERDICT_RANKING: &str = "blackbox.verdict.ranking";
/// On the window span: the first culprit's name, for a blocked worker.
pub const VERDICT_CULPRIT: &str = "blackbox.verdict.culprit";
/// Prefix of the share attributes: `blackbox.share.<share>` (a fraction)
/// and `blackbox.share.<share>_ms`.
pub const SHARE_PREFIX: &str = "blackbox.share.";
/// A span event carrying the verdict, on the window span (and on the
/// request span when the recorder made it): the same name as [`VERDICT`].
pub const EVENT_VERDICT: &str = VERDICT;
/// The instrumentation scope of every span the recorder makes.
pub const SCOPE_NAME: &str = "tokio-blackbox";

/// Every name of this module, for tests and readers that check the vocabulary.
pub const ALL: &[&str] = &[
    WINDOW_SPAN,
    WINDOW_REF_SPAN,
    POLL_SPAN,
    CAPTURED,
    THRESHOLD_MS,
    REQUEST_DURATION_MS,
    REQUEST_NAME,
    WINDOW_REQUESTS,
    WINDOW_REQUESTS_OMITTED,
    REQUEST_OPEN,
    WINDOW_SEQUENCE,
    WINDOW_START,
    WINDOW_END,
    WINDOW_EVENTS,
    WINDOW_EVENTS_LOST,
    WINDOW_TASKS,
    WINDOW_TASKS_SHOWN,
    WINDOW_TASKS_OMITTED,
    WINDOW_POLLS_OMITTED,
    WINDOW_POLLS_OMITTED_BUSY_MS,
    WINDOW_LONG_POLLS_OMITTED,
    WINDOW_WORKERS_OMITTED,
    WINDOW_MAX_SPANS,
    WINDOW_TASK_HOOKS,
    WINDOW_SCHEDULE_DELAY,
    LONG_POLL_MS,
    WINDOW_TRACE_ID,
    LINK_KIND,
    REQUEST_SOURCE,
    TASK_ID,
    CODE_FILE,
    CODE_LINE,
    CODE_COLUMN,
    TASK_IN_REQUEST,
    TASK_POLLS,
    TASK_BUSY_MS,
    TASK_LONGEST_POLL_MS,
    TASK_LONG_POLLS,
    TASK_SCHED_DELAY_MS,
    TASK_POLLS_SHOWN,
    TASK_POLLS_OMITTED,
    TASK_POLLS_OMITTED_BUSY_MS,
    POLL_WORKER,
    POLL_LANE,
    POLL_SCHED_DELAY_MS,
    POLL_LONG,
    POLL_COMPLETE,
    THREAD_NAME,
    WORKER_LANE,
    WORKER_BUSY_FRACTION,
    WORKER_BUSY_MS,
    WORKER_POLLS,
    WORKER_PARKS,
    WORKER_EVENTS_OMITTED,
    WORKER_EVENTS_LOST,
    TASK_SPAN_PREFIX,
    WORKER_SPAN_PREFIX,
    EVENT_SPAWNED,
    EVENT_WOKEN,
    EVENT_TERMINATED,
    EVENT_PARK,
    EVENT_UNPARK,
    LINK_WINDOW,
    LINK_SLOW_REQUEST,
    SOURCE_RECORDER,
    SOURCE_TAIL_SAMPLER_MISSED,
    SOURCE_REPLAY,
    SCOPE_NAME,
    VERDICT,
    CAUSE,
    VERDICT_CONFIDENCE,
    VERDICT_RANKING,
    VERDICT_CULPRIT,
    SHARE_PREFIX,
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_is_documented_in_attributes_md() {
        let doc = include_str!("../../docs/attributes.md");
        let missing: Vec<&str> = super::ALL
            .iter()
            .copied()
            .filter(|n| !doc.contains(&format!("`{n}")))
            .collect();
        assert!(missing.is_empty(), "not in docs/attributes.md: {missing:?}");
        let mut sorted = super::ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), super::ALL.len(), "a name is listed twice");
    }
}
