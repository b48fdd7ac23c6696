//! Bytes per window (issue 25): with the default settings, the window of a
//! slow request on a busy runtime (250 tasks running beside it) encodes to at
//! most 64 KiB of OTLP protobuf (an `ExportTraceServiceRequest`, before any
//! compression: the most a window costs on the wire), and it still tells the
//! request's story: every poll of the request's own tasks, and every long
//! poll of the culprits its verdict names.

mod support;

use opentelemetry::Value;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_blackbox::analysis;
use tokio_blackbox::export::otlp::{Budget, window_spans};
use tracing::Instrument;

const MAX_WINDOW_BYTES: usize = 64 * 1024;

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn encoded_len(spans: Vec<SpanData>) -> usize {
    let resource: ResourceAttributesWithSchema =
        (&opentelemetry_sdk::Resource::builder_empty().build()).into();
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &resource),
    }
    .encoded_len()
}

/// Bytes of `spans` as one export request, gzip-compressed as the
/// exporter does with `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`.
fn gzip_len(spans: Vec<SpanData>) -> usize {
    use std::io::Write;
    let resource: ResourceAttributesWithSchema =
        (&opentelemetry_sdk::Resource::builder_empty().build()).into();
    let bytes = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &resource),
    }
    .encode_to_vec();
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&bytes).expect("gzip in memory");
    z.finish().expect("gzip in memory").len()
}

fn int_attr(s: &SpanData, key: &str) -> Option<i64> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match kv.value {
            Value::I64(v) => Some(v),
            _ => None,
        })
}

#[test]
fn a_busy_runtimes_window_fits_in_64_kib_with_the_requests_whole_story() {
    // The default settings but a lower threshold: the default window (2 s
    // before, 200 ms after), buffer and span budget.
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder().latency_threshold(Duration::from_millis(200)),
        2,
    );
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        // 250 tasks running the whole time: a timer of 5 to 24 ms and a
        // little work, over and over (about 25,000 polls a second).
        let load: Vec<_> = (0..250u64)
            .map(|i| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5 + i % 20)).await;
                        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(i));
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // The slow request: 20 short steps of its own and a child doing
        // 10 more, while two neighbours block both workers for 150 ms.
        let request = tokio::spawn(
            async {
                let child = tokio::spawn(async {
                    for _ in 0..10 {
                        spin(Duration::from_micros(300));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                for _ in 0..20 {
                    spin(Duration::from_micros(200));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = child.await;
            }
            .instrument(tracing::info_span!("checkout")),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        let neighbours: Vec<_> = (0..2)
            .map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_millis(150)) }))
            .collect();
        let _ = request.await;
        for n in neighbours {
            let _ = n.await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for t in load {
            let _ = t.await;
        }
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    drop(rt);
    drop(guard);

    let windows = sink.windows();
    let w = windows
        .iter()
        .find(|w| w.requests.first().is_some_and(|r| r.name == "checkout"))
        .expect("a window for the slow request");
    let r = &w.requests[0];
    let tasks = w.tasks();
    assert!(
        tasks.len() >= 250,
        "a busy runtime: {} tasks ran in the window",
        tasks.len()
    );

    let (spans, _) = window_spans(w, Budget::default());
    assert!(spans.len() <= Budget::DEFAULT_MAX_SPANS, "{}", spans.len());
    let by_kind = |f: &dyn Fn(&SpanData) -> bool| -> (usize, usize) {
        let kind: Vec<SpanData> = spans.iter().filter(|s| f(s)).cloned().collect();
        (kind.len(), encoded_len(kind))
    };
    let polls = by_kind(&|s| s.name == "poll");
    let task_spans = by_kind(&|s| int_attr(s, "tokio.task.id").is_some());
    let workers = by_kind(&|s| s.name.starts_with("worker "));
    let bytes = encoded_len(spans.clone());
    eprintln!(
        "window: {} tasks ran, {} spans, {bytes} bytes of OTLP protobuf ({} gzipped); polls {polls:?}, tasks {task_spans:?}, workers {workers:?} (spans, bytes)",
        tasks.len(),
        spans.len(),
        gzip_len(spans.clone()),
    );
    assert!(
        bytes <= MAX_WINDOW_BYTES,
        "the window encodes to {bytes} bytes, over 64 KiB"
    );

    // Every poll of the request's own tasks is a span under its task's span.
    let verdict = analysis::explain(w, r);
    eprintln!(
        "verdict: {}; culprits {:?}",
        verdict.sentence,
        verdict.culprits.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let task_span = |id: u64| {
        spans
            .iter()
            .find(|s| int_attr(s, "tokio.task.id") == Some(id as i64))
    };
    let polls_of = |span: &SpanData| -> Vec<&SpanData> {
        spans
            .iter()
            .filter(|p| p.name == "poll" && p.parent_span_id == span.span_context.span_id())
            .collect()
    };
    let own: Vec<_> = tasks
        .iter()
        .filter(|t| {
            t.requests.contains(&r.request_id)
                || verdict.own_tasks.iter().any(|&(id, _)| id == t.id)
        })
        .collect();
    assert!(
        own.len() >= 2,
        "the request's task and its child: {}",
        own.len()
    );
    let own_polls: usize = own.iter().map(|t| t.polls.len()).sum();
    assert!(own_polls >= 30, "the request's own polls: {own_polls}");
    for t in &own {
        let span =
            task_span(t.id).unwrap_or_else(|| panic!("task {} of the request is shown", t.id));
        let shown = polls_of(span);
        assert_eq!(
            shown.len(),
            t.polls.len(),
            "every poll of the request's task {}",
            t.id
        );
        for p in &t.polls {
            assert!(
                shown
                    .iter()
                    .any(|s| s.start_time
                        == std::time::UNIX_EPOCH + Duration::from_nanos(p.start_ns)),
                "the poll of task {} at {} is shown",
                t.id,
                p.start_ns
            );
        }
    }

    // The culprits the verdict names are shown with every long poll.
    let long_poll = w.long_poll.as_nanos() as u64;
    for c in &verdict.culprits {
        let t = tasks
            .iter()
            .find(|t| t.id == c.task)
            .expect("the culprit ran in the window");
        let span = task_span(c.task).unwrap_or_else(|| panic!("culprit {} is shown", c.name));
        let long: Vec<_> = t
            .polls
            .iter()
            .filter(|p| p.duration_ns() > long_poll)
            .collect();
        let shown_long = polls_of(span)
            .into_iter()
            .filter(|p| {
                p.attributes.iter().any(|kv| {
                    kv.key.as_str() == "blackbox.poll.long" && kv.value == Value::Bool(true)
                })
            })
            .count();
        assert_eq!(
            shown_long,
            long.len(),
            "every long poll of culprit {}",
            c.name
        );
    }
    assert!(
        !verdict.culprits.is_empty(),
        "the neighbours that blocked the workers are named: {}",
        verdict.sentence
    );

    // What is left out is counted on the window span.
    let win = spans.iter().find(|s| s.name == "blackbox.window").unwrap();
    let shown_tasks = spans
        .iter()
        .filter(|s| int_attr(s, "tokio.task.id").is_some())
        .count();
    assert_eq!(
        int_attr(win, "blackbox.window.tasks_omitted"),
        Some((tasks.len() - shown_tasks) as i64)
    );
}
