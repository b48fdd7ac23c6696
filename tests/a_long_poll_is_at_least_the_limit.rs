//! Issue 28 (a rule written in several places): a long poll was `>` the
//! limit in the export and the task digests but `>=` in the verdict and the
//! command, so a poll of exactly `BLACKBOX_LONG_POLL` could be a verdict's
//! culprit and never flagged `blackbox.poll.long`. One rule now,
//! `Poll::is_long` (at least the limit), which all of them call; here the
//! export is held to it at exactly the limit.

use opentelemetry::trace::{SpanId, TraceId};
use std::time::Duration;
use tokio_blackbox::export::names;
use tokio_blackbox::export::otlp::{Budget, window_spans};
use tokio_blackbox::{Event, EventKind, Lane, SlowRequest, Window};

#[test]
fn a_poll_of_exactly_the_limit_is_long_everywhere() {
    let mut w = Window::default();
    w.to_unix_ns = 1_000;
    w.long_poll = Duration::from_nanos(30);
    w.threshold = Duration::from_nanos(100);
    w.requests.push(SlowRequest::new(
        1,
        "request",
        TraceId::from_bytes([1; 16]),
        SpanId::from_bytes([2; 8]),
        0,
        1_000,
    ));
    let mut lane = Lane::default();
    lane.thread = "tokio-runtime-worker".into();
    // Task 7: exactly the limit (30 ns). Task 8: one ns under it.
    lane.events = vec![
        Event::new(10, EventKind::PollStart, 7, 0),
        Event::new(40, EventKind::PollEnd, 7, 0),
        Event::new(50, EventKind::PollStart, 8, 0),
        Event::new(79, EventKind::PollEnd, 8, 0),
    ];
    w.lanes.push(lane);

    // The analyzer's rule.
    let tasks = w.tasks();
    let poll = |task: u64| tasks.iter().find(|t| t.id == task).expect("task").polls[0];
    assert!(poll(7).is_long(30));
    assert!(!poll(8).is_long(30));

    // The export flags the same poll, and only it.
    let (spans, _) = window_spans(&w, Budget::new(100));
    let flagged = |task: u64| {
        spans
            .iter()
            .filter(|s| s.name == names::POLL_SPAN)
            .filter(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key.as_str() == names::TASK_ID && kv.value.to_string() == task.to_string()
                }) || s.parent_span_id != SpanId::INVALID
                    && spans.iter().any(|t| {
                        t.span_context.span_id() == s.parent_span_id
                            && t.attributes.iter().any(|kv| {
                                kv.key.as_str() == names::TASK_ID
                                    && kv.value.to_string() == task.to_string()
                            })
                    })
            })
            .any(|s| {
                s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == names::POLL_LONG)
            })
    };
    assert!(
        flagged(7),
        "a poll of exactly the limit is flagged blackbox.poll.long"
    );
    assert!(!flagged(8), "a poll under the limit is not");
}
