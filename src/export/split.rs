//! Sizes: what a queued job holds in memory (estimated), and the split of
//! spans into export requests that each encode under [`MAX_REQUEST_BYTES`]
//! and carry at most [`MAX_REQUEST_SPANS`].

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

/// The largest export request sent: 4 MiB, the default limit of the
/// Collector's, Jaeger's and Tempo's OTLP gRPC receivers.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The most spans one export request carries: 256 (half the OpenTelemetry
/// SDK's default export batch, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`). What the
/// export thread holds while it sends (the retry copy, the OTLP messages,
/// the encoded request) is one request's: a window of the default 200
/// spans goes in one; a window of 1,000 (a raised budget) in four, each
/// with a quarter of that memory, which the allocator keeps for the next
/// window (on a storm's 30 s, 2 to 3 MB less resident at the peak than
/// one request a window; see BENCHMARKS.md).
pub(crate) const MAX_REQUEST_SPANS: usize = 256;

/// Requests are cut at this estimate, leaving room for the resource, the
/// scope and the estimate's own error (it over-counts; see `estimated_len`).
pub(crate) const SPLIT_AT: usize = MAX_REQUEST_BYTES - 256 * 1024;

// === Memory estimates ===

/// What the allocator adds to each heap block, besides rounding.
const ALLOC_OVERHEAD: usize = 16;

/// A heap block of `bytes` (none when empty).
fn block(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes + ALLOC_OVERHEAD
    }
}

/// The heap a string value holds: `owned` when it is not static.
fn string_bytes(len: usize, owned: bool) -> usize {
    if owned { block(len) } else { 0 }
}

/// The heap an attribute list holds: the vector (by capacity) and each
/// attribute's strings.
fn kv_bytes(attrs: &Vec<KeyValue>) -> usize {
    block(attrs.capacity() * std::mem::size_of::<KeyValue>())
        + attrs
            .iter()
            .map(|kv| string_bytes(kv.key.as_str().len(), true) + value_heap(&kv.value))
            .sum::<usize>()
}

/// The heap a value holds (its string, or its array's elements).
fn value_heap(v: &Value) -> usize {
    match v {
        Value::String(s) => string_bytes(s.as_str().len(), true),
        Value::Array(a) => block(format!("{a:?}").len()),
        _ => 0,
    }
}

/// The memory a span holds, estimated from what it allocates: the struct,
/// its name, its attribute, event and link vectors by capacity, and their
/// strings, with the allocator's per-block overhead (checked against a
/// counting allocator in `tests/export_queue_is_bounded_and_never_blocks.rs`).
pub(crate) fn span_bytes(s: &SpanData) -> usize {
    let events = &s.events.events;
    let links = &s.links.links;
    std::mem::size_of::<SpanData>()
        + string_bytes(s.name.len(), matches!(s.name, std::borrow::Cow::Owned(_)))
        + kv_bytes(&s.attributes)
        + block(events.capacity() * std::mem::size_of::<opentelemetry::trace::Event>())
        + events
            .iter()
            .map(|e| string_bytes(e.name.len(), true) + kv_bytes(&e.attributes))
            .sum::<usize>()
        + block(links.capacity() * std::mem::size_of::<opentelemetry::trace::Link>())
        + links.iter().map(|l| kv_bytes(&l.attributes)).sum::<usize>()
        + match &s.status {
            opentelemetry::trace::Status::Error { description } => {
                string_bytes(description.len(), true)
            }
            _ => 0,
        }
}

/// The memory `spans` hold, estimated ([`span_bytes`] each).
pub(crate) fn spans_bytes(spans: &[SpanData]) -> usize {
    spans.iter().map(span_bytes).sum()
}

// === Splitting ===

fn value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_str().len(),
        Value::Array(a) => format!("{a:?}").len(),
        _ => 9,
    }
}

fn attrs_len(attrs: &[KeyValue]) -> usize {
    attrs
        .iter()
        .map(|kv| kv.key.as_str().len() + value_len(&kv.value) + 12)
        .sum()
}

/// An upper bound of a span's protobuf size: every field counted at its
/// widest (ids with tags, 9-byte fixed64 times, 5-byte length prefixes).
pub(crate) fn estimated_len(s: &SpanData) -> usize {
    64 + s.name.len()
        + s.span_context.trace_state().header().len()
        + attrs_len(&s.attributes)
        + s.events
            .iter()
            .map(|e| 24 + e.name.len() + attrs_len(&e.attributes))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| 48 + l.span_context.trace_state().header().len() + attrs_len(&l.attributes))
            .sum::<usize>()
        + match &s.status {
            opentelemetry::trace::Status::Error { description } => 8 + description.len(),
            _ => 8,
        }
}

/// Splits spans into requests estimated under `limit` bytes and of at most
/// `max_spans` spans each. A span larger than `limit` on its own goes alone
/// (the receiver decides).
pub(crate) fn split(spans: Vec<SpanData>, limit: usize, max_spans: usize) -> Vec<Vec<SpanData>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for s in spans {
        let n = estimated_len(&s);
        if !cur.is_empty() && (size + n > limit || cur.len() >= max_spans) {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push(s);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::{self, Budget};
    use crate::export::resource::resource;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use prost::Message;

    #[test]
    fn a_window_of_1000_spans_goes_in_requests_of_at_most_256_in_order() {
        let (spans, _) = otlp::window_spans(
            &crate::export::testing::window(100, 9, 2),
            // A raised budget: the default window fits one request.
            Budget::new(1_000),
        );
        let names: Vec<_> = spans.iter().map(|s| s.name.clone()).collect();
        assert!(spans.len() > 3 * MAX_REQUEST_SPANS, "{} spans", spans.len());
        let parts = split(spans, SPLIT_AT, MAX_REQUEST_SPANS);
        assert_eq!(parts.len(), names.len().div_ceil(MAX_REQUEST_SPANS));
        assert!(parts.iter().all(|p| p.len() <= MAX_REQUEST_SPANS));
        let back: Vec<_> = parts.into_iter().flatten().map(|s| s.name).collect();
        assert_eq!(back, names);
    }

    #[test]
    fn estimate_bounds_the_encoded_size_and_splits_stay_under_4_mib() {
        // 60 windows of 1,000 spans: about 12 MiB of OTLP.
        let mut spans = Vec::new();
        for _ in 0..60 {
            spans.extend(
                otlp::window_spans(
                    &crate::export::testing::window(100, 9, 2),
                    Budget::new(1_000),
                )
                .0,
            );
        }
        let res: ResourceAttributesWithSchema = (&resource()).into();
        for s in spans.iter().take(200) {
            let real = group_spans_by_resource_and_scope(vec![s.clone()], &Default::default())[0]
                .scope_spans[0]
                .spans[0]
                .encoded_len();
            assert!(
                estimated_len(s) >= real,
                "{} < {real} for {}",
                estimated_len(s),
                s.name
            );
        }
        let total = spans.len();
        let parts = split(spans, SPLIT_AT, usize::MAX);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), total);
        for p in parts {
            let req = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(p, &res),
            };
            assert!(
                req.encoded_len() <= MAX_REQUEST_BYTES,
                "{}",
                req.encoded_len()
            );
        }
    }
}
