//! The span budget goes first to the slow request's own story: a fan-out
//! request whose child polls 31 times (300 ms of CPU) is exported with all
//! 31 polls, although hundreds of unrelated tasks ran in the 2 s before it;
//! and its window span says why it was slow (`own_cpu`), as attributes and
//! as a `blackbox.verdict` span event.

mod support;

use opentelemetry::Value;
use std::time::{Duration, Instant};
use tokio_blackbox::export::otlp::{Budget, window_spans};
use tracing::Instrument;

#[test]
fn a_fan_out_requests_heavy_child_keeps_every_poll() {
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(200))
            .window(Duration::from_secs(2), Duration::from_millis(100)),
        2,
    );
    rt.block_on(async {
        // 600 unrelated tasks, two polls each, in the 2 s before the request.
        for wave in 0..20 {
            let tasks: Vec<_> = (0..30)
                .map(|i| {
                    tokio::spawn(async move {
                        tokio::task::yield_now().await;
                        std::hint::black_box(wave * i)
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::spawn(
            async {
                let child = tokio::spawn(async {
                    for _ in 0..31 {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(9_700) {
                            std::hint::spin_loop();
                        }
                        tokio::task::yield_now().await;
                    }
                });
                let _ = child.await;
            }
            .instrument(tracing::info_span!("fanout")),
        )
        .await
        .unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(blackbox.flush(Duration::from_secs(10)));
    drop(rt);
    drop(guard);
    let windows = sink.windows();
    let w = windows
        .iter()
        .find(|w| w.requests.first().is_some_and(|r| r.name == "fanout"))
        .expect("a window for the fan-out request");
    let tasks = w.tasks();
    assert!(
        tasks.len() > 300,
        "unrelated tasks ran in the window: {}",
        tasks.len()
    );
    let child = tasks
        .iter()
        .find(|t| t.polls.len() >= 31 && t.parent.is_some())
        .expect("the child task");

    // A budget far smaller than the window: 250 spans for 600+ tasks.
    let (spans, _) = window_spans(w, Budget::new(250));
    assert!(spans.len() <= 250);
    let child_span = spans
        .iter()
        .find(|s| {
            s.attributes.iter().any(|kv| {
                kv.key.as_str() == "tokio.task.id" && kv.value == Value::I64(child.id as i64)
            })
        })
        .expect("the child's task span");
    let polls = spans
        .iter()
        .filter(|s| s.name == "poll" && s.parent_span_id == child_span.span_context.span_id())
        .count();
    assert_eq!(
        polls,
        child.polls.len(),
        "every poll of the request's child is shown"
    );

    let window_span = spans.iter().find(|s| s.name == "blackbox.window").unwrap();
    let attr = |k: &str| {
        window_span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("blackbox.cause").as_deref(), Some("own_cpu"));
    assert!(attr("blackbox.verdict").unwrap().starts_with("own CPU: "));
    let shares: f64 = [
        "own_cpu",
        "blocked_worker",
        "saturated_runtime",
        "waiting",
        "unknown",
    ]
    .iter()
    .map(|s| {
        attr(&format!("blackbox.share.{s}"))
            .unwrap()
            .parse::<f64>()
            .unwrap()
    })
    .sum();
    assert!((shares - 1.0).abs() < 1e-6, "shares add up: {shares}");
    assert!(
        window_span
            .events
            .iter()
            .any(|e| e.name == "blackbox.verdict"),
        "the verdict event"
    );
}
