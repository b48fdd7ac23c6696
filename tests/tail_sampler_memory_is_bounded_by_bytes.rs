//! The tail sampler holds the spans of traces whose root has not ended. A
//! service with many long-lived traces and big spans must not make it grow
//! past its byte limit (64 MiB by default): it evicts the oldest traces and
//! counts what it dropped. Real SDK tracer provider, real spans.

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio_blackbox::Blackbox;

/// Resident memory of this process, bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The sampler behind an `Arc`, so the test can read its bytes.
#[derive(Debug)]
struct Shared(std::sync::Arc<tokio_blackbox::TailSampler>);

impl opentelemetry_sdk::trace::SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx)
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

#[test]
fn many_open_traces_with_big_spans_stay_within_the_byte_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, guard) = Blackbox::builder()
        .dir(dir.path())
        .exporter(InMemorySpanExporter::default())
        .build()
        .expect("build");
    let sampler = std::sync::Arc::new(blackbox.tail_sampler());
    let limit = tokio_blackbox::export::sampling::DEFAULT_MAX_BYTES;
    assert_eq!(limit, 64 << 20);
    assert_eq!(sampler.memory_limit(), limit);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Shared(sampler.clone()))
        .build();
    let tracer = provider.tracer("app");
    let payload = "x".repeat(1024);
    let before = rss();
    // 200 traces whose roots stay open, 1,000 spans of about 1.3 KiB each:
    // about 260 MiB if all were held.
    let mut roots = Vec::new();
    for _ in 0..200 {
        let root = tracer.start("request");
        let cx = opentelemetry::Context::current_with_span(root);
        for i in 0..1000 {
            let mut child = tracer.start_with_context("db.query", &cx);
            child.set_attribute(KeyValue::new("db.statement", payload.clone()));
            child.set_attribute(KeyValue::new("i", i as i64));
            child.end();
        }
        roots.push(cx);
    }
    let grown = rss().saturating_sub(before);
    let s = blackbox.stats();
    eprintln!(
        "200 open traces × 1,000 spans of ~1.3 KiB: RSS grew {} MiB; evicted {}, spans dropped {}",
        grown >> 20,
        s.traces_evicted,
        s.sampler_spans_dropped
    );
    let held = sampler.held_bytes();
    eprintln!("held {} MiB (estimated)", held >> 20);
    assert!(held <= limit, "{held}");
    assert!(held > limit / 2, "the limit is used: {held}");
    assert!(s.traces_evicted > 0, "{s:?}");
    assert!(s.sampler_spans_dropped > 0, "{s:?}");
    // The limit, plus allocator overhead and the test's own allocations.
    assert!(
        grown < (limit as u64) * 2,
        "the sampler's memory grew by {} MiB (limit {} MiB)",
        grown >> 20,
        limit >> 20
    );
    drop(roots);
    let _ = provider.shutdown();
    drop(guard);
}
