//! Sizes: what a queued job holds in memory (estimated), and the split of
//! spans into export requests that each encode under [`MAX_REQUEST_BYTES`].

use crate::window::Window;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

/// The largest export request sent: 4 MiB, the default limit of the
/// Collector's, Jaeger's and Tempo's OTLP gRPC receivers.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Requests are cut at this estimate, leaving room for the resource, the
/// scope and the estimate's own error (it over-counts; see `estimated_len`).
pub(crate) const SPLIT_AT: usize = MAX_REQUEST_BYTES - 256 * 1024;

// === Memory estimates ===

fn kv_bytes(attrs: &[KeyValue]) -> usize {
    attrs
        .iter()
        .map(|kv| std::mem::size_of::<KeyValue>() + kv.key.as_str().len() + value_len(&kv.value))
        .sum()
}

/// The memory a span holds, estimated: the struct, its name, attributes,
/// events and links with their strings (allocator overhead not counted).
pub(crate) fn span_bytes(s: &SpanData) -> usize {
    std::mem::size_of::<SpanData>()
        + s.name.len()
        + kv_bytes(&s.attributes)
        + s.events
            .iter()
            .map(|e| {
                std::mem::size_of::<opentelemetry::trace::Event>()
                    + e.name.len()
                    + kv_bytes(&e.attributes)
            })
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| std::mem::size_of::<opentelemetry::trace::Link>() + kv_bytes(&l.attributes))
            .sum::<usize>()
        + match &s.status {
            opentelemetry::trace::Status::Error { description } => description.len(),
            _ => 0,
        }
}

/// The memory a window holds, estimated: 16 bytes per event, its strings,
/// lanes and requests.
pub(crate) fn window_bytes(w: &Window) -> usize {
    std::mem::size_of::<Window>()
        + w.lanes
            .iter()
            .map(|l| {
                std::mem::size_of::<crate::window::Lane>()
                    + l.thread.len()
                    + l.events.len() * std::mem::size_of::<crate::event::Event>()
            })
            .sum::<usize>()
        + w.strings
            .iter()
            .map(|s| std::mem::size_of::<String>() + s.len())
            .sum::<usize>()
        + w.requests
            .iter()
            .map(|r| std::mem::size_of::<crate::window::SlowRequest>() + r.name.len())
            .sum::<usize>()
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

/// Splits spans into requests estimated under `limit` bytes each. A span
/// larger than `limit` on its own goes alone (the receiver decides).
pub(crate) fn split(spans: Vec<SpanData>, limit: usize) -> Vec<Vec<SpanData>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for s in spans {
        let n = estimated_len(&s);
        if !cur.is_empty() && size + n > limit {
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
    fn estimate_bounds_the_encoded_size_and_splits_stay_under_4_mib() {
        // 40 windows of 1,000 spans: about 12 MiB of OTLP.
        let mut spans = Vec::new();
        for _ in 0..40 {
            spans.extend(
                otlp::window_spans(
                    &crate::export::testing::window(100, 9, 2),
                    Budget::default(),
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
        let parts = split(spans, SPLIT_AT);
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
