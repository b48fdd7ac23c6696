//! A storm: every request slow (threshold 0) at full load. Memory stays
//! bounded, each window stays within its span budget and 4 MiB of OTLP, no
//! window links more than 64 requests, and every slow request is accounted
//! for: `captures + merged + skipped + dropped == slow requests`, and every
//! capture is a window or shed by the CPU budget, counted.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use prost::Message;
use std::time::{Duration, Instant};
use support::windows::peak_rss;
use tokio_blackbox::export::otlp::{Budget, window_spans};

#[test]
fn a_storm_stays_bounded_and_adds_up() {
    let rss_before = peak_rss();
    let buffer = 8 << 20;
    let (blackbox, guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::ZERO)
            .window(Duration::from_millis(500), Duration::from_millis(100))
            .buffer_memory(buffer),
        2,
    );
    let started = Instant::now();
    let served = rt.block_on(async {
        let mut served = 0u64;
        while started.elapsed() < Duration::from_secs(4) {
            let batch: Vec<_> = (0..64)
                .map(|_| {
                    let span = tracing::info_span!("request");
                    tokio::spawn(tracing::Instrument::instrument(
                        async {
                            let child = tokio::spawn(async { tokio::task::yield_now().await });
                            tokio::task::yield_now().await;
                            let _ = child.await;
                        },
                        span,
                    ))
                })
                .collect();
            for t in batch {
                let _ = t.await;
                served += 1;
            }
        }
        served
    });
    assert!(blackbox.flush(Duration::from_secs(20)));
    let s = blackbox.stats();
    drop(rt);
    drop(guard);
    let rss_growth = peak_rss().saturating_sub(rss_before);
    eprintln!(
        "storm: {served} requests, {} slow, {} captures, {} merged, {} skipped, {} dropped; peak RSS +{} MiB",
        s.slow_requests,
        s.captures,
        s.requests_merged,
        s.requests_skipped,
        s.slow_requests_dropped,
        rss_growth >> 20
    );
    assert!(served > 10_000, "full load: {served} requests");
    assert_eq!(
        s.segments_held, 0,
        "a window's segments are held until it is written, then released"
    );
    assert_eq!(s.slow_requests, served);
    assert_eq!(
        s.captures + s.requests_merged + s.requests_skipped + s.slow_requests_dropped,
        s.slow_requests
    );
    // Each capture became a window, or was shed by the recorder's CPU
    // budget (2% of one core by default), counted.
    let windows = sink.windows();
    assert_eq!(windows.len() as u64 + s.windows_shed, s.captures, "{s:?}");
    assert!(
        !windows.is_empty(),
        "the incident's first windows are paid from a full budget"
    );
    let resource: ResourceAttributesWithSchema =
        (&opentelemetry_sdk::Resource::builder_empty().build()).into();
    for w in &windows {
        assert!(
            w.requests.len() <= 64,
            "{} requests linked",
            w.requests.len()
        );
        let (spans, _) = window_spans(w, Budget::default());
        assert!(
            spans.len() <= Budget::DEFAULT_MAX_SPANS,
            "{} spans",
            spans.len()
        );
        let bytes = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        }
        .encoded_len();
        assert!(bytes <= 4 << 20, "a window of {bytes} bytes of OTLP");
    }
    // The recorder's own memory: its buffer, one decoded window (16 bytes an
    // event, while the sink writes it), and 16 MiB; plus the windows this test keeps.
    let kept: usize = windows.iter().map(|w| w.events() * 16).sum();
    eprintln!(
        "storm: windows keep {} MiB of events, lost {}",
        kept >> 20,
        windows.iter().map(|w| w.events_lost()).sum::<u64>()
    );
    assert!(
        rss_growth <= (buffer + 2 * kept + (16 << 20)) as u64,
        "peak RSS grew {} MiB",
        rss_growth >> 20
    );
}
