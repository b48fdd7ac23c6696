//! The export thread: windows and kept traces to a [`SpanExporter`] or to an
//! OTLP JSON file ([`super::json`]), off every application thread.
//!
//! One thread, `blackbox-export`, owns a current-thread Tokio runtime of its
//! own and the exporter (or the file). It is fed by a bounded queue of jobs:
//! windows from the capture thread (through [`OtlpSink`] / [`JsonFileSink`](crate::JsonFileSink))
//! and kept traces from the [`TailSampler`](crate::TailSampler). Whoever
//! feeds it never waits: a full queue ([`QUEUE_CAPACITY`] jobs or
//! [`QUEUE_MAX_BYTES`], the job in flight included) refuses the job, which
//! is counted. A flush never puts anything into the queue: it waits, at most
//! its timeout, for the jobs queued before it to be finished. At shutdown the
//! thread gets what is left of the deadline (none after a flush that timed
//! out); the jobs still queued then are abandoned and counted
//! (`export_failures`, and `spans_dropped` for kept traces).
//!
//! While a request may be retried its spans are held twice (the exporter
//! consumes its copy): one request of at most [`MAX_REQUEST_BYTES`], not a
//! copy per queued job.
//!
//! On the thread:
//! - the window is mapped ([`otlp::window_spans`]);
//! - the spans are split into requests that each encode under
//!   [`MAX_REQUEST_BYTES`] (every common OTLP receiver refuses more);
//! - each request gets [`RETRIES`] retries with a doubling back-off, then its
//!   spans are dropped and counted ([`BlackboxStats::spans_dropped`]).
//!
//! The thread runs under `tracing`'s `NoSubscriber` and OpenTelemetry's
//! suppressed-telemetry scope, so the exporter's own gRPC/HTTP spans and logs
//! (tonic, h2, hyper, reqwest) never feed back into the recorder or into the
//! application's traces.
//!
//! [`BlackboxStats::spans_dropped`]: crate::BlackboxStats::spans_dropped

use super::otlp::{self, Budget};
use crate::error::{BuildError, SinkError};
use crate::export::Sink;
use crate::sync::lock;
use crate::window::Window;
use opentelemetry::trace::TraceId;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The largest export request sent: 4 MiB, the default limit of the
/// Collector's, Jaeger's and Tempo's OTLP gRPC receivers.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Requests are cut at this estimate, leaving room for the resource, the
/// scope and the estimate's own error (it over-counts; see `estimated_len`).
const SPLIT_AT: usize = MAX_REQUEST_BYTES - 256 * 1024;

/// Retries of a failed export request before its spans are dropped: 2, after
/// 100 ms and 200 ms. A window's export so fails within about a second when
/// the endpoint refuses connections; with a black-holed endpoint each try
/// waits for `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s by default) and the queue
/// fills and counts instead.
pub const RETRIES: u32 = 2;

/// First back-off between tries (doubled each retry).
const BACKOFF: Duration = Duration::from_millis(100);

/// Jobs waiting for the export thread, the one in flight included: at most 64.
pub const QUEUE_CAPACITY: usize = 64;

/// Bytes of jobs waiting for the export thread, the one in flight included:
/// 64 MiB (estimated: a window's events at 16 bytes each plus its strings and
/// requests; a kept trace's spans with their names, attributes and events).
/// A job that does not fit is refused and counted (a window in
/// [`BlackboxStats::sink_errors`](crate::BlackboxStats::sink_errors), a kept
/// trace in [`BlackboxStats::sampler_spans_dropped`](crate::BlackboxStats::sampler_spans_dropped)),
/// never waited for. One job larger than the limit is taken when the queue is
/// empty, so the bound is 64 MiB or one job, whichever is larger.
pub const QUEUE_MAX_BYTES: usize = 64 << 20;

/// How many recently kept trace ids are remembered, so a window exported
/// after its trace was kept knows its request span went out (4,096 × 16 bytes).
const KEPT_REMEMBERED: usize = 4096;

// === Counters and shared state ===

/// Counters of the export path, read by [`Blackbox::stats`](crate::Blackbox::stats).
#[derive(Debug, Default)]
pub(crate) struct ExportCounters {
    pub(crate) windows_exported: AtomicU64,
    pub(crate) spans_exported: AtomicU64,
    pub(crate) spans_dropped: AtomicU64,
    pub(crate) export_retries: AtomicU64,
    pub(crate) export_failures: AtomicU64,
    pub(crate) requests_split: AtomicU64,
    pub(crate) traces_kept: AtomicU64,
    pub(crate) traces_sampled_out: AtomicU64,
    pub(crate) traces_evicted: AtomicU64,
    pub(crate) sampler_spans_dropped: AtomicU64,
    /// Windows the pipeline did not send: refused by a full queue, or
    /// abandoned at shutdown (the latter are also in `export_failures`).
    pub(crate) windows_dropped: AtomicU64,
    /// Bytes (estimated) held by the export queue now, the job in flight included.
    pub(crate) queue_bytes: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Trace ids the tail sampler kept, most recent [`KEPT_REMEMBERED`].
#[derive(Debug, Default)]
struct Kept {
    set: HashSet<TraceId>,
    order: VecDeque<TraceId>,
}

/// What the recorder, the sinks and the tail sampler share about export.
#[derive(Debug)]
pub(crate) struct ExportShared {
    pub(crate) counters: ExportCounters,
    kept: Mutex<Kept>,
    /// Set once a tail sampler exists: the app's spans go through it, so a
    /// window whose trace it did not keep must carry its request span.
    pub(crate) sampler_active: AtomicBool,
    queue: Mutex<Option<Arc<Queue>>>,
    /// How long a sink's flush waits for the export thread.
    flush_timeout: Duration,
}

impl Default for ExportShared {
    fn default() -> ExportShared {
        ExportShared::new(crate::config::DEFAULT_SHUTDOWN_TIMEOUT)
    }
}

impl ExportShared {
    pub(crate) fn new(flush_timeout: Duration) -> ExportShared {
        ExportShared {
            counters: ExportCounters::default(),
            kept: Mutex::default(),
            sampler_active: AtomicBool::new(false),
            queue: Mutex::new(None),
            flush_timeout,
        }
    }

    /// Remembers that the tail sampler kept `trace`.
    pub(crate) fn kept(&self, trace: TraceId) {
        let mut k = lock(&self.kept);
        if k.set.insert(trace) {
            k.order.push_back(trace);
            if k.order.len() > KEPT_REMEMBERED
                && let Some(old) = k.order.pop_front()
            {
                k.set.remove(&old);
            }
        }
    }

    pub(crate) fn was_kept(&self, trace: TraceId) -> bool {
        lock(&self.kept).set.contains(&trace)
    }

    /// Hands spans (a kept trace) to the export thread; `false` if there is
    /// none or its queue is full.
    pub(crate) fn send_spans(&self, spans: Vec<SpanData>) -> bool {
        let queue = lock(&self.queue).clone();
        match queue {
            Some(q) => {
                let bytes = spans.iter().map(span_bytes).sum();
                q.push(Job::Spans(spans), bytes, &self.counters).is_ok()
            }
            None => false,
        }
    }

    /// Connects a pipeline's queue (the first one wins).
    fn connect(&self, queue: Arc<Queue>) {
        let mut q = lock(&self.queue);
        if q.is_none() {
            *q = Some(queue);
        }
    }

    /// Lets the export thread end once the sinks are gone (guard dropped).
    pub(crate) fn disconnect(&self) {
        lock(&self.queue).take();
    }
}

// === Exporters, object-safe ===

/// [`SpanExporter`] is not object safe (its `export` returns `impl Future`);
/// this is, so the builder can take any exporter.
pub(crate) trait DynExporter: Send + Sync + fmt::Debug {
    fn export_dyn(
        &self,
        batch: Vec<SpanData>,
    ) -> Pin<Box<dyn Future<Output = OTelSdkResult> + Send + '_>>;
    fn set_resource_dyn(&mut self, resource: &Resource);
    fn shutdown_dyn(&self) -> OTelSdkResult;
}

impl<E: SpanExporter + 'static> DynExporter for E {
    fn export_dyn(
        &self,
        batch: Vec<SpanData>,
    ) -> Pin<Box<dyn Future<Output = OTelSdkResult> + Send + '_>> {
        Box::pin(self.export(batch))
    }
    fn set_resource_dyn(&mut self, resource: &Resource) {
        self.set_resource(resource);
    }
    fn shutdown_dyn(&self) -> OTelSdkResult {
        self.shutdown()
    }
}

/// Which OTLP transport, from `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The OTLP settings read from the environment by the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtlpEnv {
    /// The traces endpoint, complete (`/v1/traces` added for HTTP when it
    /// came from `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub(crate) endpoint: String,
    /// The variable the endpoint came from, for error messages.
    pub(crate) endpoint_var: &'static str,
    pub(crate) protocol: Protocol,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`; `None`: the exporter's default (10 s).
    pub(crate) timeout: Option<Duration>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, decoded, keys lowercase.
    pub(crate) headers: Vec<(String, String)>,
    /// TLS files for an `https` endpoint: `(variable, path)` of the CA
    /// certificate, the client certificate and the client key (PEM).
    pub(crate) tls: TlsFiles,
}

/// The PEM files named by `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`,
/// `..._CLIENT_CERTIFICATE` and `..._CLIENT_KEY`, with the variable each came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<(&'static str, String)>,
    pub(crate) client_cert: Option<(&'static str, String)>,
    pub(crate) client_key: Option<(&'static str, String)>,
}

/// What `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` accepts (the spec's form).
const TIMEOUT_EXPECTED: &str =
    "a whole number of milliseconds, at least 1, such as 10000 (the OTLP exporter's form: no unit)";
/// What `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` accepts.
const HEADERS_EXPECTED: &str = "comma-separated key=value pairs, such as api-key=secret,x-team=obs: keys of letters, digits, '-', '_' or '.' (not ending in -bin), values percent-encoded printable ASCII";
/// What `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION` accepts in this build.
const COMPRESSION_EXPECTED: &str = "none (this build of tokio-blackbox sends uncompressed OTLP; gzip and zstd are not compiled in)";

/// Decodes `%XX` escapes (the OTLP headers variable is URL-encoded).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses an OTLP headers value: `k=v` pairs, comma-separated, values
/// percent-decoded. `None` when any pair is malformed.
fn parse_headers(raw: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=')?;
        let key = k.trim().to_ascii_lowercase();
        let key_ok = !key.is_empty()
            && !key.ends_with("-bin")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let value = percent_decode(v.trim())?;
        if !key_ok || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

/// Header names as `&'static str`, which tonic's `MetadataMap::insert`
/// needs: each distinct name is leaked once per process (a handful of bytes).
fn static_key(key: &str) -> &'static str {
    static KEYS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut keys = lock(&KEYS);
    if let Some(k) = keys.iter().find(|k| **k == key) {
        return k;
    }
    let k: &'static str = Box::leak(key.to_owned().into_boxed_str());
    keys.push(k);
    k
}

impl OtlpEnv {
    /// Reads the `OTEL_EXPORTER_OTLP_[TRACES_]*` variables through `env`:
    /// endpoint, protocol, timeout, headers, compression and TLS files (the
    /// signal's variable first, then the general one). `Ok(None)` when no
    /// endpoint is set. A malformed value of any of them is an
    /// [`BuildError::InvalidEnv`] naming the variable it came from.
    pub(crate) fn read(
        env: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Option<OtlpEnv>, BuildError> {
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        // The signal's variable wins; an empty value counts as unset.
        let pick = |traces: &'static str, general: &'static str| {
            nonempty(env(traces))
                .map(|v| (traces, v))
                .or_else(|| nonempty(env(general)).map(|v| (general, v)))
        };
        let invalid =
            |var: &'static str, value: &str, expected: &'static str| BuildError::InvalidEnv {
                var,
                value: value.to_owned(),
                expected,
            };
        let protocol_setting = pick(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        let protocol = match &protocol_setting {
            None => Protocol::Grpc,
            Some((_, p)) if p == "grpc" => Protocol::Grpc,
            Some((_, p)) if p == "http/protobuf" => Protocol::HttpProtobuf,
            Some((var, other)) => return Err(invalid(var, other, "grpc or http/protobuf")),
        };
        let (endpoint_var, endpoint) = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ) {
            None => return Ok(None),
            Some((var, e)) => (var, e),
        };
        let has_host = |e: &str| {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            rest.is_some_and(|r| {
                !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace)
            })
        };
        if !has_host(&endpoint) {
            return Err(invalid(
                endpoint_var,
                &endpoint,
                "an http:// or https:// URL with a host, such as http://localhost:4317",
            ));
        }
        if protocol == Protocol::HttpProtobuf && endpoint.starts_with("https:") {
            return Err(invalid(
                endpoint_var,
                &endpoint,
                "an http:// endpoint for http/protobuf (TLS is supported over grpc: set the protocol variable to grpc)",
            ));
        }
        // The spec: the signal path is appended for HTTP to the general endpoint only.
        let endpoint = if protocol == Protocol::HttpProtobuf
            && endpoint_var == "OTEL_EXPORTER_OTLP_ENDPOINT"
        {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        } else {
            endpoint
        };
        let timeout = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            None => None,
            Some((var, raw)) => Some(
                raw.parse::<u64>()
                    .ok()
                    .filter(|&ms| ms >= 1)
                    .map(Duration::from_millis)
                    .ok_or_else(|| invalid(var, &raw, TIMEOUT_EXPECTED))?,
            ),
        };
        let headers = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            None => Vec::new(),
            Some((var, raw)) => {
                parse_headers(&raw).ok_or_else(|| invalid(var, &raw, HEADERS_EXPECTED))?
            }
        };
        if let Some((var, raw)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) && raw != "none"
        {
            return Err(invalid(var, &raw, COMPRESSION_EXPECTED));
        }
        let tls = TlsFiles {
            ca: pick(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            client_cert: pick(
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ),
            client_key: pick(
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ),
        };
        Ok(Some(OtlpEnv {
            endpoint,
            endpoint_var,
            protocol,
            timeout,
            headers,
            tls,
        }))
    }

    /// Builds the exporter. Must run inside a Tokio runtime (tonic's lazy
    /// channel spawns its worker on build). The timeout and headers read by
    /// [`OtlpEnv::read`] are set in code, so they win over the process
    /// environment `opentelemetry-otlp` would read; retries are ours, so its
    /// own are off.
    fn build(&self) -> Result<Box<dyn DynExporter>, BuildError> {
        use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
        let err = |e: opentelemetry_otlp::ExporterBuildError| BuildError::Exporter(Box::new(e));
        Ok(match self.protocol {
            Protocol::Grpc => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(self.endpoint.clone())
                    .with_retry_policy(RetryPolicy::disabled());
                if let Some(t) = self.timeout {
                    builder = builder.with_timeout(t);
                }
                if !self.headers.is_empty() {
                    let mut map = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
                    for (k, v) in &self.headers {
                        // Checked by `parse_headers`: a valid key, printable ASCII.
                        let value = v.parse().map_err(|_| BuildError::InvalidEnv {
                            var: "OTEL_EXPORTER_OTLP_HEADERS",
                            value: format!("{k}={v}"),
                            expected: HEADERS_EXPECTED,
                        })?;
                        map.insert(static_key(k), value);
                    }
                    builder = builder.with_metadata(map);
                }
                if self.endpoint.starts_with("https:") {
                    builder = builder.with_tls_config(self.tls.client_config()?);
                }
                Box::new(builder.build().map_err(err)?)
            }
            Protocol::HttpProtobuf => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(self.endpoint.clone())
                    .with_retry_policy(RetryPolicy::disabled());
                if let Some(t) = self.timeout {
                    builder = builder.with_timeout(t);
                }
                if !self.headers.is_empty() {
                    builder = builder.with_headers(self.headers.iter().cloned().collect());
                }
                Box::new(builder.build().map_err(err)?)
            }
        })
    }
}

impl TlsFiles {
    /// The TLS settings for an `https` endpoint: the system's roots, plus the
    /// CA certificate and client identity from the files, when named.
    fn client_config(
        &self,
    ) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, BuildError> {
        use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |(var, path): &(&'static str, String)| {
            std::fs::read(path).map_err(|_| BuildError::InvalidEnv {
                var,
                value: path.clone(),
                expected: "the path of a readable PEM file",
            })
        };
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            (Some((var, path)), None) | (None, Some((var, path))) => {
                return Err(BuildError::InvalidEnv {
                    var,
                    value: path.clone(),
                    expected: "both a client certificate and a client key (OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY)",
                });
            }
        }
        Ok(config)
    }
}

/// The resource of every exported span: the SDK's detectors
/// (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, telemetry.sdk.*) plus
/// `host.name` when they did not set it. Jaeger's clock-skew adjuster shifts
/// child spans that start before their parent unless `host.name` is present,
/// which would distort the timeline.
///
/// # Examples
///
/// ```
/// let r = tokio_blackbox::export::transport::resource();
/// assert!(r.get(&opentelemetry::Key::new("host.name")).is_some());
/// assert!(r.get(&opentelemetry::Key::new("service.name")).is_some());
/// ```
pub fn resource() -> Resource {
    let detected = Resource::builder().build();
    if detected.get(&Key::new("host.name")).is_some() {
        return detected;
    }
    Resource::builder()
        .with_attribute(KeyValue::new("host.name", host_name()))
        .build()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

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

// === The pipeline ===

/// Work for the export thread.
pub(crate) enum Job {
    Window(Box<Window>),
    Spans(Vec<SpanData>),
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// [`QUEUE_CAPACITY`] jobs or [`QUEUE_MAX_BYTES`] bytes are waiting.
    Full,
    /// The pipeline is shutting down.
    Closed,
}

/// The export queue: bounded by jobs and by bytes, never waited on by its
/// producers.
///
/// Protocol (one mutex, two condition variables):
/// - producers (`push`) add a job and its estimated bytes, or are refused;
/// - the export thread (`pop`) takes the oldest job; its bytes stay counted
///   until `finish`, so the job in flight is inside the bound;
/// - `accepted` and `finished` count jobs; a flush waits (with a deadline)
///   for `finished` to reach the `accepted` it saw, so it never puts
///   anything into a full queue;
/// - `close` lets the thread end once the queue is empty; `abandon` takes
///   every job still queued out, for the caller to count.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// The export thread waits here for jobs (or the close).
    work: Condvar,
    /// Flushes and the shutdown wait here for progress.
    progress: Condvar,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("Queue")
            .field("jobs", &st.jobs.len())
            .field("bytes", &st.bytes)
            .field("closed", &st.closed)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<(Job, usize)>,
    /// Bytes of `jobs` and of the job in flight.
    bytes: usize,
    /// Whether a job is in flight (taken, not finished).
    in_flight: bool,
    accepted: u64,
    finished: u64,
    closed: bool,
    /// The export thread has returned.
    thread_done: bool,
}

impl Queue {
    fn push(&self, job: Job, bytes: usize, c: &ExportCounters) -> Result<(), PushError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(PushError::Closed);
        }
        let held = st.jobs.len() + usize::from(st.in_flight);
        let empty = held == 0;
        if !empty && (held >= QUEUE_CAPACITY || st.bytes + bytes > QUEUE_MAX_BYTES) {
            return Err(PushError::Full);
        }
        st.jobs.push_back((job, bytes));
        st.bytes += bytes;
        st.accepted += 1;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    /// Whether a job of `bytes` would be accepted now.
    fn has_room(&self, bytes: usize) -> bool {
        let st = lock(&self.state);
        let held = st.jobs.len() + usize::from(st.in_flight);
        !st.closed && (held == 0 || (held < QUEUE_CAPACITY && st.bytes + bytes <= QUEUE_MAX_BYTES))
    }

    /// The next job, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<(Job, usize)> {
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.jobs.pop_front() {
                st.in_flight = true;
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st = self
                .work
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn finish(&self, bytes: usize, c: &ExportCounters) {
        let mut st = lock(&self.state);
        st.in_flight = false;
        st.bytes = st.bytes.saturating_sub(bytes);
        st.finished += 1;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.progress.notify_all();
    }

    /// Waits until every job accepted so far is finished, or `deadline`.
    fn wait_finished(&self, deadline: Instant) -> bool {
        let target = lock(&self.state).accepted;
        self.wait_for(deadline, |st| st.finished >= target || st.thread_done)
            && lock(&self.state).finished >= target
    }

    /// No more jobs; the thread ends once the queue is empty.
    fn close(&self) {
        lock(&self.state).closed = true;
        self.work.notify_all();
    }

    /// Waits until the export thread has returned, or `deadline`.
    fn wait_thread(&self, deadline: Instant) -> bool {
        self.wait_for(deadline, |st| st.thread_done)
    }

    /// Waits on `progress` until `done` holds, or `deadline`; `false` on time-out.
    fn wait_for(&self, deadline: Instant, done: impl Fn(&QueueState) -> bool) -> bool {
        let mut st = lock(&self.state);
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .progress
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    fn thread_done(&self) {
        lock(&self.state).thread_done = true;
        self.progress.notify_all();
    }

    /// Takes every queued job out (not the one in flight).
    fn abandon(&self, c: &ExportCounters) -> Vec<Job> {
        let mut st = lock(&self.state);
        st.closed = true;
        let jobs: Vec<(Job, usize)> = st.jobs.drain(..).collect();
        let freed: usize = jobs.iter().map(|(_, b)| b).sum();
        st.bytes = st.bytes.saturating_sub(freed);
        st.finished += jobs.len() as u64;
        c.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
        drop(st);
        self.progress.notify_all();
        jobs.into_iter().map(|(j, _)| j).collect()
    }
}

/// Tells the queue the export thread has returned, when dropped.
struct ThreadDone(Arc<Queue>);

impl Drop for ThreadDone {
    fn drop(&mut self) {
        self.0.thread_done();
    }
}

/// Counts a job that will not be sent: a window as a failed export (and in
/// `windows_dropped`), a kept trace's spans in `spans_dropped`.
fn count_abandoned(job: Job, c: &ExportCounters) {
    add(&c.export_failures, 1);
    match job {
        Job::Window(_) => add(&c.windows_dropped, 1),
        Job::Spans(spans) => add(&c.spans_dropped, spans.len() as u64),
    }
}

/// Where spans end up.
enum Backend {
    Exporter(Box<dyn DynExporter>),
    Json {
        file: super::json::JsonFile,
        resource: ResourceAttributesWithSchema,
    },
}

impl Backend {
    async fn send(&mut self, spans: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Backend::Exporter(e) => e.export_dyn(spans).await,
            Backend::Json { file, resource } => super::json::write_json_line(file, spans, resource)
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string())),
        }
    }
}

/// What the export thread is built from.
pub(crate) enum Target {
    Otlp(OtlpEnv),
    Exporter(Box<dyn DynExporter>),
    Json(super::json::JsonFile),
}

/// A handle on a running export thread: a [`Sink`] for windows.
pub(crate) struct Pipeline {
    queue: Arc<Queue>,
    shared: Arc<ExportShared>,
    flush_timeout: Duration,
    /// The last flush timed out: the export thread is stuck (an exporter
    /// without a timeout), so the shutdown does not wait for it again.
    stalled: bool,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the export thread, builds the exporter on it, and connects the
    /// queue to `shared` (for the tail sampler).
    pub(crate) fn start(
        target: Target,
        budget: Budget,
        shared: Arc<ExportShared>,
    ) -> Result<Pipeline, BuildError> {
        let flush_timeout = shared.flush_timeout;
        let queue = Arc::new(Queue::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let thread_queue = queue.clone();
        std::thread::Builder::new()
            .name("blackbox-export".into())
            .spawn(move || {
                // Set however the thread ends, a panicking exporter included.
                let _done = ThreadDone(thread_queue.clone());
                export_thread(target, budget, &thread_shared, &thread_queue, ready_tx);
            })
            .map_err(|source| BuildError::Thread {
                thread: "blackbox-export",
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(BuildError::Thread {
                    thread: "blackbox-export",
                    source: std::io::Error::other("the export thread ended during start-up"),
                });
            }
        }
        shared.connect(queue.clone());
        Ok(Pipeline {
            queue,
            shared,
            flush_timeout,
            stalled: false,
        })
    }

    pub(crate) fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        let bytes = window_bytes(window);
        let c = &self.shared.counters;
        // Checked before the clone: a full queue costs no copy of the window.
        if !self.queue.has_room(bytes) {
            add(&c.windows_dropped, 1);
            return Err(SinkError::new(
                "the export queue is full (64 jobs or 64 MiB): the window is dropped and counted",
            ));
        }
        match self
            .queue
            .push(Job::Window(Box::new(window.clone())), bytes, c)
        {
            Ok(()) => Ok(()),
            Err(PushError::Full) => {
                add(&c.windows_dropped, 1);
                Err(SinkError::new(
                    "the export queue is full (64 jobs or 64 MiB): the window is dropped and counted",
                ))
            }
            Err(PushError::Closed) => {
                add(&c.windows_dropped, 1);
                Err(SinkError::new("the export thread has stopped"))
            }
        }
    }

    /// Waits until everything queued so far is sent (or dropped and
    /// counted), at most `timeout`. Never puts anything into the queue, so a
    /// full queue or a stuck exporter cannot make it block longer.
    pub(crate) fn flush_within(&mut self, timeout: Duration) -> Result<(), SinkError> {
        if self.queue.wait_finished(Instant::now() + timeout) {
            self.stalled = false;
            Ok(())
        } else {
            self.stalled = true;
            Err(SinkError::new(
                "the export thread did not finish in time (the endpoint is slow or unreachable); what it could not send is dropped and counted",
            ))
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_within(self.flush_timeout)
    }
}

/// How long the shutdown waits for the export thread after a flush that
/// finished: the exporter's own shutdown. After a flush that timed out it
/// does not wait at all.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The sink goes with the capture thread: no more windows. The
        // export thread sends what is queued and ends; past the deadline
        // what is still queued is abandoned and counted. A job in flight in
        // an exporter that never returns cannot be taken back: it is
        // counted when (if) the exporter returns.
        self.shared.disconnect();
        self.queue.close();
        let wait = if self.stalled {
            Duration::ZERO
        } else {
            self.flush_timeout.min(SHUTDOWN_GRACE)
        };
        if !self.queue.wait_thread(Instant::now() + wait) {
            for job in self.queue.abandon(&self.shared.counters) {
                count_abandoned(job, &self.shared.counters);
            }
        }
    }
}

fn export_thread(
    target: Target,
    budget: Budget,
    shared: &ExportShared,
    queue: &Queue,
    ready: SyncSender<Result<(), BuildError>>,
) {
    // No feedback: the exporter's own spans and events go nowhere.
    let _no_tracing =
        tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let _suppressed = opentelemetry::Context::enter_telemetry_suppressed_scope();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let _ = ready.send(Err(BuildError::Thread {
                thread: "blackbox-export",
                source,
            }));
            return;
        }
    };
    let built = {
        let _enter = rt.enter();
        match target {
            Target::Otlp(env) => env.build().map(Backend::Exporter),
            Target::Exporter(e) => Ok(Backend::Exporter(e)),
            Target::Json(file) => Ok(Backend::Json {
                file,
                resource: (&resource()).into(),
            }),
        }
    };
    let mut backend = match built {
        Ok(mut b) => {
            if let Backend::Exporter(e) = &mut b {
                e.set_resource_dyn(&resource());
            }
            let _ = ready.send(Ok(()));
            b
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let c = &shared.counters;
    while let Some((job, bytes)) = queue.pop() {
        let spans = match job {
            Job::Window(w) => {
                let (mut spans, _) = otlp::window_spans(&w, budget);
                if shared.sampler_active.load(Ordering::Relaxed) {
                    // The app's spans go through the tail sampler: a request
                    // whose trace it did not keep would leave the window
                    // under a missing parent, so send the request span too.
                    for r in w
                        .requests
                        .iter()
                        .filter(|r| !r.own_span && !shared.was_kept(r.trace_id))
                    {
                        spans.push(otlp::request_span(r, "tail_sampler_missed"));
                    }
                }
                add(&c.windows_exported, 1);
                spans
            }
            Job::Spans(spans) => spans,
        };
        let requests = split(spans, SPLIT_AT);
        if requests.len() > 1 {
            add(&c.requests_split, requests.len() as u64 - 1);
        }
        for batch in requests {
            let n = batch.len() as u64;
            if rt.block_on(send_with_retries(&mut backend, batch, c)) {
                add(&c.spans_exported, n);
            } else {
                add(&c.spans_dropped, n);
                add(&c.export_failures, 1);
            }
        }
        queue.finish(bytes, c);
    }
    if let Backend::Exporter(e) = &backend {
        let _ = e.shutdown_dyn();
    }
}

async fn send_with_retries(
    backend: &mut Backend,
    mut batch: Vec<SpanData>,
    c: &ExportCounters,
) -> bool {
    let mut delay = BACKOFF;
    for attempt in 0..=RETRIES {
        // The exporter takes the batch by value: keep a copy while a retry may follow.
        let this = if attempt == RETRIES {
            std::mem::take(&mut batch)
        } else {
            batch.clone()
        };
        match backend.send(this).await {
            Ok(()) => return true,
            Err(OTelSdkError::AlreadyShutdown) => return false,
            Err(_) if attempt < RETRIES => {
                add(&c.export_retries, 1);
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(_) => return false,
        }
    }
    false
}

// === Public sinks ===

/// Sends each captured window, as OTLP spans in the slow request's trace, to a
/// [`SpanExporter`] on the recorder's own export thread.
///
/// This is the default sink when `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and
/// [`Builder::with_default_env`](crate::Builder::with_default_env) is used;
/// [`Builder::exporter`](crate::Builder::exporter) makes one with any exporter.
/// Build one by hand only to combine it with a sink of your own.
///
/// # Examples
///
/// ```
/// use opentelemetry_sdk::trace::InMemorySpanExporter;
/// use tokio_blackbox::{OtlpSink, Sink};
///
/// let exporter = InMemorySpanExporter::default();
/// let mut sink = OtlpSink::with_exporter(exporter.clone())?;
/// let window = tokio_blackbox::export::otlp::testing::window(2, 2, 1);
/// sink.write(&window)?;
/// sink.flush()?;
/// assert!(exporter.get_finished_spans()?.iter().any(|s| s.name == "blackbox.window"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OtlpSink {
    pipeline: Pipeline,
}

impl OtlpSink {
    /// An OTLP sink configured from the standard `OTEL_EXPORTER_OTLP_*`
    /// variables: gRPC (tonic), or HTTP/protobuf when
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidEnv`] when no endpoint is set or the protocol is
    /// not `grpc` or `http/protobuf`; [`BuildError::Exporter`] when the
    /// exporter cannot be built (a malformed endpoint, for instance).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let _sink = tokio_blackbox::OtlpSink::from_env()?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn from_env() -> Result<OtlpSink, BuildError> {
        let env = OtlpEnv::read(|v| std::env::var(v).ok())?.ok_or(BuildError::InvalidEnv {
            var: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: String::new(),
            expected: "an OTLP endpoint such as http://localhost:4317",
        })?;
        OtlpSink::start(Target::Otlp(env), Budget::default(), Arc::default())
    }

    /// An OTLP sink exporting through `exporter`.
    ///
    /// # Errors
    ///
    /// [`BuildError::Thread`] when the export thread cannot start.
    pub fn with_exporter<E: SpanExporter + 'static>(exporter: E) -> Result<OtlpSink, BuildError> {
        OtlpSink::start(
            Target::Exporter(Box::new(exporter)),
            Budget::default(),
            Arc::default(),
        )
    }

    pub(crate) fn start(
        target: Target,
        budget: Budget,
        shared: Arc<ExportShared>,
    ) -> Result<OtlpSink, BuildError> {
        Ok(OtlpSink {
            pipeline: Pipeline::start(target, budget, shared)?,
        })
    }
}

impl Sink for OtlpSink {
    fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        self.pipeline.write(window)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.pipeline.flush()
    }

    fn flush_within(&mut self, timeout: std::time::Duration) -> Result<(), SinkError> {
        self.pipeline.flush_within(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use prost::Message;

    #[test]
    fn otlp_env_is_read_like_the_spec() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &'static str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(OtlpEnv::read(env(&[])).unwrap(), None);
        let grpc = OtlpEnv::read(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            grpc,
            OtlpEnv {
                endpoint: "http://c:4317".into(),
                endpoint_var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                protocol: Protocol::Grpc,
                timeout: None,
                headers: Vec::new(),
                tls: TlsFiles::default(),
            }
        );
        let tls = OtlpEnv::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/etc/traces-ca.pem",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            tls.tls.ca,
            Some((
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/etc/traces-ca.pem".into()
            ))
        );
        let https_http = OtlpEnv::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap_err();
        assert!(https_http.to_string().contains("grpc"), "{https_http}");
        let http = OtlpEnv::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(http.endpoint, "http://c:4318/v1/traces");
        let traces = OtlpEnv::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(traces.endpoint, "http://t:4318/custom");
        let err = OtlpEnv::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"carrier-pigeon\""),
            "{err}"
        );
    }

    #[test]
    fn headers_are_parsed_like_the_spec() {
        assert_eq!(
            parse_headers(" Api-Key = a%20b ,x.team=obs,, ").unwrap(),
            [
                ("api-key".to_string(), "a b".to_string()),
                ("x.team".to_string(), "obs".to_string())
            ]
        );
        assert_eq!(parse_headers("").unwrap(), []);
        for bad in ["k", "=v", "k y=v", "k=%zz", "k=%0a", "k-bin=v", "k=\u{e9}"] {
            assert!(parse_headers(bad).is_none(), "{bad}");
        }
        assert!(std::ptr::eq(static_key("x-a"), static_key("x-a")));
    }

    #[test]
    fn estimate_bounds_the_encoded_size_and_splits_stay_under_4_mib() {
        // 40 windows of 1,000 spans: about 12 MiB of OTLP.
        let mut spans = Vec::new();
        for _ in 0..40 {
            spans
                .extend(otlp::window_spans(&otlp::testing::window(100, 9, 2), Budget::default()).0);
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

    /// An exporter that fails the first `fail` calls.
    #[derive(Debug)]
    struct Flaky {
        fail: AtomicU64,
        inner: InMemorySpanExporter,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail.load(Ordering::Relaxed) > 0 {
                self.fail.fetch_sub(1, Ordering::Relaxed);
                return Err(OTelSdkError::InternalFailure("down".into()));
            }
            self.inner.export(batch).await
        }
    }

    #[test]
    fn retries_are_bounded_then_spans_are_dropped_and_counted() {
        let inner = InMemorySpanExporter::default();
        let shared = Arc::new(ExportShared::default());
        let flaky = Flaky {
            fail: AtomicU64::new(4),
            inner: inner.clone(),
        };
        let mut sink = OtlpSink::start(
            Target::Exporter(Box::new(flaky)),
            Budget::default(),
            shared.clone(),
        )
        .unwrap();
        let w = otlp::testing::window(2, 2, 1);
        sink.write(&w).unwrap(); // fails 3 times: dropped
        sink.write(&w).unwrap(); // fails once, then goes
        sink.flush().unwrap();
        let c = &shared.counters;
        let n = otlp::window_spans(&w, Budget::default()).0.len() as u64;
        assert_eq!(c.spans_dropped.load(Ordering::Relaxed), n);
        assert_eq!(c.spans_exported.load(Ordering::Relaxed), n);
        assert_eq!(c.export_retries.load(Ordering::Relaxed), 3);
        assert_eq!(c.export_failures.load(Ordering::Relaxed), 1);
        assert_eq!(inner.get_finished_spans().unwrap().len() as u64, n);
    }

    #[test]
    fn a_window_whose_trace_the_sampler_missed_carries_its_request_span() {
        let exporter = InMemorySpanExporter::default();
        let shared = Arc::new(ExportShared::default());
        shared.sampler_active.store(true, Ordering::Relaxed);
        let mut sink = OtlpSink::start(
            Target::Exporter(Box::new(exporter.clone())),
            Budget::default(),
            shared.clone(),
        )
        .unwrap();
        let w = otlp::testing::window(1, 1, 1);
        let req = w.requests[0].clone();
        sink.write(&w).unwrap();
        sink.flush().unwrap();
        let is_request = |s: &SpanData| s.span_context.span_id() == req.span_id;
        let spans = exporter.get_finished_spans().unwrap();
        let own: Vec<_> = spans.iter().filter(|s| is_request(s)).collect();
        assert_eq!(own.len(), 1, "the request span is sent with the window");
        assert!(
            own[0]
                .attributes
                .iter()
                .any(|kv| kv.value == Value::from("tail_sampler_missed"))
        );
        // Once the sampler kept the trace, the window goes alone.
        exporter.reset();
        shared.kept(req.trace_id);
        sink.write(&w).unwrap();
        sink.flush().unwrap();
        assert!(
            !exporter
                .get_finished_spans()
                .unwrap()
                .iter()
                .any(is_request)
        );
    }

    #[test]
    fn a_malformed_endpoint_is_a_build_error() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let env = OtlpEnv {
                endpoint: "not a url".into(),
                endpoint_var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                protocol,
                timeout: None,
                headers: Vec::new(),
                tls: TlsFiles::default(),
            };
            let err =
                OtlpSink::start(Target::Otlp(env), Budget::default(), Arc::default()).unwrap_err();
            assert!(
                matches!(err, BuildError::Exporter(_)),
                "{protocol:?}: {err}"
            );
            assert!(
                err.to_string()
                    .starts_with("could not build the span exporter"),
                "{err}"
            );
        }
    }
}
