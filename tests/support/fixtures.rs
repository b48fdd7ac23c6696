//! Builds the hand-made fixture files of `tests/fixtures/` deterministically.
//!
//! The story of `small.bbx`: a service with two workers. `GET /orders` is
//! accepted on worker 0 and its handler task runs on worker 1, where it
//! spawns a database query. While the query is out, a neighbour task (a cache
//! refresh doing blocking I/O) polls for 200 ms on worker 1, and the handler,
//! woken into worker 1's LIFO slot, waits behind it: the request takes 280 ms
//! against a 250 ms threshold. A third thread lost some events to overwrite.

#![allow(dead_code)]

use std::time::Duration;

use tokio_blackbox::dump::{self, FileKind};
use tokio_blackbox::event::encode_delay;
use tokio_blackbox::{Event, EventKind, Lane, SlowRequest, Window};

/// 2026-11-25 21:00:00 UTC.
pub const T0: u64 = 1_795_640_400_000_000_000;
pub const MS: u64 = 1_000_000;
pub const US: u64 = 1_000;

pub const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
pub const SPAN_ID: &str = "b7ad6b7169203331";

/// String indices of `small.bbx`.
pub const LOC_ACCEPT: u16 = 0;
pub const LOC_HANDLER: u16 = 1;
pub const LOC_QUERY: u16 = 2;
pub const LOC_CACHE: u16 = 3;
pub const NAME_ORDERS: u16 = 4;
pub const NAME_HEALTH: u16 = 5;

/// Task ids of `small.bbx`.
pub const TASK_ACCEPT: u64 = 1;
pub const TASK_CACHE: u64 = 5;
pub const TASK_HEALTH: u64 = 11;
pub const TASK_HANDLER: u64 = 12;
pub const TASK_QUERY: u64 = 13;

/// Request ids of `small.bbx`.
pub const REQ_HEALTH: u64 = 6;
pub const REQ_ORDERS: u64 = 7;

/// A slow request. `SlowRequest` has no public constructor (it is
/// `#[non_exhaustive]`), so it is read back from a one-record file written in
/// the documented format.
pub fn slow_request(
    request_id: u64,
    name: &str,
    trace: &str,
    span: &str,
    start: u64,
    end: u64,
) -> SlowRequest {
    let mut bytes = Vec::new();
    dump::write_window(&mut bytes, &Window::default(), FileKind::Capture).unwrap();
    bytes.truncate(bytes.len() - 5); // drop END
    let mut p = Vec::new();
    p.extend_from_slice(&request_id.to_le_bytes());
    p.extend_from_slice(&hex(trace));
    p.extend_from_slice(&hex(span));
    p.push(0); // flags: ids from OpenTelemetry, no error
    p.extend_from_slice(&start.to_le_bytes());
    p.extend_from_slice(&end.to_le_bytes());
    p.extend_from_slice(&(name.len() as u16).to_le_bytes());
    p.extend_from_slice(name.as_bytes());
    bytes.push(5); // REQUEST
    bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&p);
    bytes.extend_from_slice(&[0xff, 0, 0, 0, 0]);
    let file = dump::read_from(&bytes[..]).unwrap();
    file.window.requests.into_iter().next().unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Builds a lane's events in time order.
struct LaneBuilder {
    events: Vec<Event>,
}

impl LaneBuilder {
    fn new() -> Self {
        LaneBuilder { events: Vec::new() }
    }

    fn at(&mut self, t: u64, kind: EventKind, subject: u64, arg: u16) -> &mut Self {
        self.events.push(Event::new(T0 + t, kind, subject, arg));
        self
    }

    /// A poll of `task` over `[start, end]` after waiting `delay`.
    fn poll(&mut self, task: u64, loc: u16, start: u64, end: u64, delay: u64) -> &mut Self {
        self.at(start, EventKind::PollStart, task, encode_delay(delay))
            .at(end, EventKind::PollEnd, task, loc)
    }

    fn lane(&mut self, index: u32, thread: &str, lost: u64) -> Lane {
        self.events.sort_by_key(|e| e.ts);
        let mut lane = Lane::default();
        lane.index = index;
        lane.thread = thread.to_string();
        lane.events = std::mem::take(&mut self.events);
        lane.events_lost = lost;
        lane
    }
}

/// The window of `small.bbx`.
pub fn small_window() -> Window {
    use EventKind::*;
    let mut w = Window::default();
    w.sequence = 1;
    w.from_unix_ns = T0;
    w.to_unix_ns = T0 + 1000 * MS;
    w.threshold = Duration::from_millis(250);
    w.long_poll = Duration::from_millis(50);
    w.schedule_delay = true;
    w.task_hooks = true;
    w.strings = vec![
        "src/server.rs:41:5".into(),
        "src/handlers/orders.rs:28:9".into(),
        "src/handlers/orders.rs:52:17".into(),
        "src/cache.rs:77:13".into(),
        "GET /orders".into(),
        "GET /health".into(),
    ];
    w.requests = vec![slow_request(
        REQ_ORDERS,
        "GET /orders",
        TRACE_ID,
        SPAN_ID,
        T0 + 300 * MS,
        T0 + 580 * MS,
    )];

    // Worker 0: the accept loop, a fast health check, the request's open and close.
    let mut l0 = LaneBuilder::new();
    l0.at(0, Unpark, 0, 0);
    l0.poll(TASK_ACCEPT, LOC_ACCEPT, 2 * MS, 2 * MS + 40 * US, 3 * US);
    l0.at(2 * MS + 60 * US, Park, 0, 0);
    // GET /health at +100ms, handled inline by its own task on worker 0.
    l0.at(100 * MS, Unpark, 0, 0);
    l0.poll(
        TASK_ACCEPT,
        LOC_ACCEPT,
        100 * MS + 10 * US,
        100 * MS + 50 * US,
        8 * US,
    );
    l0.at(100 * MS + 20 * US, RequestOpen, REQ_HEALTH, NAME_HEALTH)
        .at(100 * MS + 30 * US, TaskSpawn, TASK_HEALTH, LOC_HANDLER);
    l0.poll(
        TASK_HEALTH,
        LOC_HANDLER,
        100 * MS + 70 * US,
        101 * MS + 900 * US,
        20 * US,
    );
    l0.at(100 * MS + 80 * US, RequestEnter, REQ_HEALTH, 0)
        .at(101 * MS + 850 * US, RequestExit, REQ_HEALTH, 0)
        .at(101 * MS + 860 * US, RequestClose, REQ_HEALTH, 0)
        .at(101 * MS + 880 * US, TaskTerminate, TASK_HEALTH, 0);
    l0.at(102 * MS, Park, 0, 0);
    // GET /orders at +300ms: the accept loop opens the span and spawns the handler.
    l0.at(300 * MS - 20 * US, Unpark, 0, 0);
    l0.poll(
        TASK_ACCEPT,
        LOC_ACCEPT,
        300 * MS - 10 * US,
        300 * MS + 60 * US,
        6 * US,
    );
    l0.at(300 * MS, RequestOpen, REQ_ORDERS, NAME_ORDERS).at(
        300 * MS + 40 * US,
        TaskSpawn,
        TASK_HANDLER,
        LOC_HANDLER,
    );
    l0.at(300 * MS + 80 * US, Park, 0, 0);
    // Worker 0 sleeps through the stall: the handler sits in worker 1's LIFO
    // slot, which other workers cannot steal from.
    l0.at(700 * MS, Unpark, 0, 0);
    l0.poll(
        TASK_ACCEPT,
        LOC_ACCEPT,
        700 * MS + 5 * US,
        700 * MS + 45 * US,
        4 * US,
    );
    l0.at(700 * MS + 60 * US, Park, 0, 0);

    // Worker 1: the handler, its query, and the blocking neighbour.
    let mut l1 = LaneBuilder::new();
    l1.at(0, Park, 0, 0);
    l1.at(300 * MS + 45 * US, Unpark, 0, 0);
    l1.poll(
        TASK_HANDLER,
        LOC_HANDLER,
        300 * MS + 70 * US,
        301 * MS + 200 * US,
        25 * US,
    );
    l1.at(300 * MS + 80 * US, RequestEnter, REQ_ORDERS, 0)
        .at(300 * MS + 400 * US, TaskSpawn, TASK_QUERY, LOC_QUERY)
        .at(301 * MS + 150 * US, RequestExit, REQ_ORDERS, 0);
    l1.poll(
        TASK_QUERY,
        LOC_QUERY,
        301 * MS + 220 * US,
        301 * MS + 700 * US,
        800 * US,
    );
    l1.at(301 * MS + 240 * US, RequestEnter, REQ_ORDERS, 0).at(
        301 * MS + 650 * US,
        RequestExit,
        REQ_ORDERS,
        0,
    );
    // The cache refresh: a 200 ms poll doing blocking I/O.
    l1.poll(TASK_CACHE, LOC_CACHE, 350 * MS, 550 * MS, 15 * US);
    // The query's reply woke the handler at +360ms; it runs only now.
    l1.poll(
        TASK_QUERY,
        LOC_QUERY,
        550 * MS + 20 * US,
        550 * MS + 300 * US,
        190 * MS,
    );
    l1.at(550 * MS + 30 * US, RequestEnter, REQ_ORDERS, 0)
        .at(550 * MS + 280 * US, RequestExit, REQ_ORDERS, 0)
        .at(550 * MS + 290 * US, TaskTerminate, TASK_QUERY, 0);
    l1.poll(
        TASK_HANDLER,
        LOC_HANDLER,
        550 * MS + 320 * US,
        579 * MS + 800 * US,
        190 * MS,
    );
    l1.at(550 * MS + 330 * US, RequestEnter, REQ_ORDERS, 0)
        .at(579 * MS + 700 * US, RequestExit, REQ_ORDERS, 0)
        .at(579 * MS + 750 * US, TaskTerminate, TASK_HANDLER, 0);
    l1.at(580 * MS, RequestClose, REQ_ORDERS, 0);
    l1.at(580 * MS + 100 * US, Park, 0, 0);
    l1.at(900 * MS, Unpark, 0, 0);
    l1.poll(TASK_CACHE, LOC_CACHE, 900 * MS + 10 * US, 912 * MS, 5 * US);
    l1.at(912 * MS + 20 * US, Park, 0, 0);

    // A third worker whose ring wrapped: it lost its oldest events.
    let mut l2 = LaneBuilder::new();
    for i in 0..20u64 {
        let t = 40 * MS + i * 45 * MS;
        l2.at(t, Unpark, 0, 0);
        l2.poll(TASK_ACCEPT, LOC_ACCEPT, t + 10 * US, t + 30 * US, 2 * US);
        l2.at(t + 50 * US, Park, 0, 0);
    }
    w.lanes = vec![
        l0.lane(0, "tokio-runtime-worker", 0),
        l1.lane(1, "tokio-runtime-worker", 0),
        l2.lane(2, "tokio-runtime-worker", 37),
    ];
    w
}

/// Writes `window` as a file of `kind` whose header is fixed (creation time
/// = the window's end, pid 4242), so the bytes depend only on the window.
pub fn fixed_bytes(window: &Window, kind: FileKind) -> Vec<u8> {
    let mut bytes = Vec::new();
    dump::write_window(&mut bytes, window, kind).unwrap();
    // Header layout (docs/dump-format.md): created_unix_ns at 16..24, pid at 24..28.
    bytes[16..24].copy_from_slice(&window.to_unix_ns.to_le_bytes());
    bytes[24..28].copy_from_slice(&4242u32.to_le_bytes());
    bytes
}

/// Every fixture file: name and bytes.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    let small = fixed_bytes(&small_window(), FileKind::Capture);
    let mut future = small.clone();
    future[8..10].copy_from_slice(&7u16.to_le_bytes());
    let mut corrupt = small.clone();
    // The STRINGS record's first string length, made to point past the record.
    let strings_at = 32 + 5 + 40;
    corrupt[strings_at + 5 + 4] = 0xff;
    vec![
        ("small.bbx", small.clone()),
        ("small.otlp.jsonl", small_otlp_json()),
        ("bad-line.otlp.jsonl", {
            // A good line, then one cut short.
            let json = small_otlp_json();
            let first = json.iter().position(|&b| b == b'\n').unwrap() + 1;
            let mut bad = json[..first].to_vec();
            bad.extend_from_slice(&json[first..first + 200]);
            bad.push(b'\n');
            bad
        }),
        ("empty.bbx", Vec::new()),
        ("truncated.bbx", small[..small.len() / 2].to_vec()),
        ("future.bbx", future),
        ("corrupt.bbx", corrupt),
        (
            "not-a-dump.txt",
            b"this is a text file, not a blackbox dump\n".to_vec(),
        ),
    ]
}

/// `small.bbx`'s window as the recorder's JSON file sink writes it
/// (`traces.otlp.jsonl`): one `ExportTraceServiceRequest` per line, through
/// the library's OTLP mapping. The first line is the app's own request span,
/// as the tail sampler writes it before the capture; the second the window.
/// The mapping's random span ids are renumbered in order (1, 2, ...), and the
/// resource is fixed, so the bytes depend only on the window and the mapping.
pub fn small_otlp_json() -> Vec<u8> {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;
    use tokio_blackbox::export::otlp::{Budget, window_spans};

    let window = small_window();
    let (mut spans, _) = window_spans(&window, Budget::default());
    let mut ids: HashMap<SpanId, SpanId> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        ids.insert(s.span_context.span_id(), SpanId::from(i as u64 + 1));
    }
    let renumber = |c: &SpanContext| {
        SpanContext::new(
            c.trace_id(),
            ids.get(&c.span_id()).copied().unwrap_or(c.span_id()),
            c.trace_flags(),
            c.is_remote(),
            c.trace_state().clone(),
        )
    };
    for s in &mut spans {
        s.span_context = renumber(&s.span_context);
        s.parent_span_id = ids
            .get(&s.parent_span_id)
            .copied()
            .unwrap_or(s.parent_span_id);
        for l in &mut s.links.links {
            l.span_context = renumber(&l.span_context);
        }
    }
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "orders"),
            KeyValue::new("host.name", "fixture-host"),
            KeyValue::new("process.pid", 4242_i64),
        ])
        .build();
    let resource = ResourceAttributesWithSchema::from(&resource);
    let req = &window.requests[0];
    let app_span = SpanData {
        span_context: SpanContext::new(
            req.trace_id,
            req.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: req.name.clone().into(),
        start_time: UNIX_EPOCH + Duration::from_nanos(req.start_unix_ns),
        end_time: UNIX_EPOCH + Duration::from_nanos(req.end_unix_ns),
        attributes: vec![KeyValue::new("http.request.method", "GET")],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: opentelemetry::InstrumentationScope::builder("orders").build(),
    };
    let mut out = Vec::new();
    for batch in [vec![app_span], spans] {
        let mut request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &resource),
        };
        // The resource's attributes come out of a hash map: fix their order.
        for r in &mut request.resource_spans {
            if let Some(res) = &mut r.resource {
                res.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        out.extend(serde_json::to_vec(&request).unwrap());
        out.push(b'\n');
    }
    out
}
