//! A request span's exit inside a poll is written with the poll's end (one
//! write per poll, however often the span is entered and left in it), and
//! still before anything else the poll records: a task spawned after the
//! span was left is not the request's, and every interval the request's span
//! was entered starts and ends inside the request.

mod support;

use std::time::Duration;
use tokio_blackbox::Blackbox;
use tracing::Instrument;

#[test]
fn a_spawn_after_the_request_span_is_left_is_not_the_requests() {
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        Blackbox::builder()
            .latency_threshold(Duration::from_millis(50))
            .window(Duration::from_millis(200), Duration::from_millis(20)),
        2,
    );
    let inside_line = line!() + 9;
    let outside_line = line!() + 9;
    rt.block_on(async {
        let span = tracing::info_span!("checkout");
        let request = span.clone();
        let task = tokio::spawn(async move {
            // One poll: the span entered around a spawn, left, entered and
            // left again, then a spawn outside it.
            let inside =
                request.in_scope(|| tokio::spawn(tokio::time::sleep(Duration::from_millis(5))));
            let outside = tokio::spawn(tokio::time::sleep(Duration::from_millis(5)));
            request.in_scope(|| std::hint::black_box(1));
            // Then polls of an instrumented future: entered and left in each.
            async {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            .instrument(request)
            .await;
            inside.await.expect("inside");
            outside.await.expect("outside");
        });
        drop(span);
        task.await.expect("request task");
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    drop(guard);
    let windows = sink.windows();
    assert_eq!(windows.len(), 1, "one capture");
    let window = &windows[0];
    let slow = window.requests[0].request_id;
    let tasks = window.tasks();
    let at = |line: u32| {
        tasks
            .iter()
            .find(|t| t.file_line() == Some((file!(), line)))
            .unwrap_or_else(|| panic!("no task at line {line}: {tasks:#?}"))
    };
    assert!(
        at(inside_line).requests.contains(&slow),
        "spawned inside the request's span: {:?}",
        at(inside_line)
    );
    assert!(
        !at(outside_line).requests.contains(&slow),
        "spawned after the span was left: {:?}",
        at(outside_line)
    );

    let spans = window.request_spans();
    let span = spans
        .iter()
        .find(|s| s.request_id == slow)
        .expect("the request's span");
    let (open, close) = (
        span.open_ns.expect("opened in the window"),
        span.close_ns.expect("closed in the window"),
    );
    // The request task's first poll, then the instrumented future's polls.
    assert!(span.entered.len() >= 4, "{span:?}");
    for &(lane, enter, exit) in &span.entered {
        assert!(
            open <= enter && enter <= exit && exit <= close,
            "lane {lane}: entered {enter}..{exit} outside the request {open}..{close}"
        );
    }
}
