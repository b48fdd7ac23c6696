//! What the export thread spends on one window: mapping a 1,000-span window
//! to OTLP `SpanData`, grouping it into an `ExportTraceServiceRequest` and
//! encoding that to protobuf bytes (what tonic sends).
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench --bench export`
//!
//! Budget (issue 3): at most 5 ms of CPU per 1,000-span window.
//!
//! Recorded results (rustc 1.95, 2-core VM, bench profile, 2026-11-25):
//! - `window_to_otlp_and_encode/1000_spans`: 1.44 ms [1.41 ms 1.48 ms]
//! - `window_to_otlp_and_encode/map_only`:   0.32 ms [0.31 ms 0.33 ms]

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use prost::Message;
use std::hint::black_box;
use tokio_blackbox::export::otlp::{Budget, window_spans};
use tokio_blackbox::export::testing;

fn bench(c: &mut Criterion) {
    // 100 tasks × 9 polls, 3 threads with park/unpark: 1,004 spans before
    // the budget, 1,000 after it.
    let window = testing::window(100, 9, 1);
    let resource: ResourceAttributesWithSchema = (&tokio_blackbox::export::resource()).into();
    let (spans, _) = window_spans(&window, Budget::default());
    assert_eq!(spans.len(), 1000);

    let mut g = c.benchmark_group("window_to_otlp_and_encode");
    g.bench_function("1000_spans", |b| {
        b.iter(|| {
            let (spans, _) = window_spans(black_box(&window), Budget::default());
            let req = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(spans, &resource),
            };
            black_box(req.encode_to_vec())
        })
    });
    g.bench_function("map_only", |b| {
        b.iter(|| window_spans(black_box(&window), Budget::default()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
