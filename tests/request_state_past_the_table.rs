//! A request's state lives in the recorder's open-request table (8,192
//! slots); past it, in the span's extensions. Both kinds of request are seen
//! slow at their close, and an `ERROR` event inside a request marks it, in
//! the table and out of it.

mod support;

use std::time::Duration;

#[test]
fn requests_past_the_table_are_still_found_slow_and_errors_are_kept() {
    let (blackbox, _guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(20))
            .window(Duration::from_millis(50), Duration::from_millis(10)),
        2,
    );
    // One slow request without an error, in a task.
    rt.block_on(async {
        tokio::spawn(tracing::Instrument::instrument(
            tokio::time::sleep(Duration::from_millis(30)),
            tracing::info_span!("GET /fine"),
        ))
        .await
        .unwrap();
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    let fine: Vec<_> = requests_named(&sink, "GET /fine");
    assert_eq!(fine.len(), 1, "the fine request's window");
    assert!(!fine[0].error, "no ERROR event, no mark");

    // 10,000 request spans open at once: more than the table holds.
    const OPEN: usize = 10_000;
    let spans: Vec<_> = (0..OPEN)
        .map(|i| tracing::info_span!("GET /many", i))
        .collect();
    let during = blackbox.stats();
    assert_eq!(during.requests_seen, OPEN as u64 + 1, "{during:?}");
    assert!(
        during.requests_untracked > 0,
        "some requests live outside the table: {during:?}"
    );
    std::thread::sleep(Duration::from_millis(30));
    // Every request is entered and exited once; every one has an error.
    for span in &spans {
        let _e = span.enter();
        tracing::error!("failed");
    }
    drop(spans);
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    assert_eq!(
        stats.slow_requests,
        OPEN as u64 + 1,
        "every request is found slow at its close, in the table or not: {stats:?}"
    );
    let many = requests_named(&sink, "GET /many");
    assert!(!many.is_empty(), "windows for the many requests");
    assert!(
        many.iter().all(|r| r.error),
        "an ERROR event marks its request"
    );
}

/// The requests of every window so far whose span is named `name`.
fn requests_named(
    sink: &support::windows::Collect,
    name: &str,
) -> Vec<tokio_blackbox::SlowRequest> {
    sink.windows()
        .iter()
        .flat_map(|w| w.requests.iter().filter(|r| r.name == name).cloned())
        .collect()
}
