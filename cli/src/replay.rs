//! `blackbox replay`: send a file's windows to an OTLP endpoint (Jaeger,
//! Tempo, a Collector), so an incident recorded offline opens in Jaeger.
//!
//! - A binary capture file is one window, sent as it is.
//! - A binary dump becomes one window per slow request, cut to
//!   `[start - before, end + after]`, each in its request's recorded trace;
//!   with `--all`, the whole dump is one window under a new trace.
//! - An OTLP JSON file (`traces.otlp.jsonl`) is resent line by line, each
//!   `ExportTraceServiceRequest` as it is: tonic's `TraceServiceClient` for
//!   gRPC, an HTTP POST of the protobuf for `http/protobuf`.
//!
//! Binary windows go through the library's mapping
//! ([`tokio_blackbox::export::otlp::window_spans`]) and `opentelemetry-otlp`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanExporter};
use tokio_blackbox::dump::FileKind;
use tokio_blackbox::export::endpoint::{EndpointKind, traces_endpoint};
use tokio_blackbox::export::otlp::{Budget, attach_request_spans, window_spans};
use tokio_blackbox::export::{OtlpSettings, Protocol, names};
use tokio_blackbox::{SlowRequest, Window};

use crate::otlp_json::Lines;
use crate::{Failure, InputContext};

/// The `--protocol` values: the library's [`Protocol`], by the names the
/// OTLP variables use.
fn protocol_parser() -> impl clap::builder::TypedValueParser<Value = Protocol> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    PossibleValuesParser::new([
        PossibleValue::new(Protocol::Grpc.as_str()).help("OTLP/gRPC (port 4317)"),
        PossibleValue::new(Protocol::HttpProtobuf.as_str())
            .help("OTLP/HTTP with a protobuf body (port 4318, path `/v1/traces`)"),
    ])
    .try_map(|name: String| {
        Protocol::parse(&name).ok_or_else(|| format!("{name:?} is not an OTLP protocol"))
    })
}

/// The arguments of `blackbox replay`.
#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
pub(crate) struct ReplayArgs {
    /// A dump, a capture file or an OTLP JSON file (`traces.otlp.jsonl`).
    file: PathBuf,
    /// Where to send: `http://localhost:4317` for gRPC,
    /// `http://localhost:4318` (or the full `.../v1/traces`) for http/protobuf.
    #[arg(long, value_name = "URL")]
    endpoint: String,
    /// The OTLP transport.
    #[arg(long, default_value = "grpc", value_parser = protocol_parser())]
    protocol: Protocol,
    /// `service.name` of the spans sent. Binary files: the default is
    /// `blackbox-replay`. OTLP JSON files keep the service they were recorded
    /// with unless this is given.
    #[arg(long, value_name = "NAME")]
    service_name: Option<String>,
    /// Dumps: activity kept before each slow request started (the
    /// recorder's default).
    #[arg(long, value_name = "T", default_value = "2s", value_parser = parse_duration)]
    before: Duration,
    /// Dumps: activity kept after each slow request ended (the recorder's default).
    #[arg(long, value_name = "T", default_value = "200ms", value_parser = parse_duration)]
    after: Duration,
    /// Binary files: send the whole file as one window under a new trace
    /// (with a `blackbox replay` root span), instead of one window per slow request.
    #[arg(long)]
    all: bool,
    /// Binary files: do not send the slow request spans themselves, only the
    /// windows under them (when the app's own traces already reached the backend).
    #[arg(long)]
    without_request_spans: bool,
    /// How long one export may take.
    #[arg(long, value_name = "T", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tokio_blackbox::parse_duration(s).ok_or_else(|| {
        format!("{s:?} is not a duration: expected a number and a unit, such as 2s or 200ms")
    })
}

/// Runs `blackbox replay`.
pub(crate) fn run(args: &ReplayArgs) -> Result<(), Failure> {
    let path = &args.file;
    let json = crate::scan::is_json(path).input(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = if json {
        rt.block_on(replay_json(args))?
    } else {
        let windows = binary_windows(args)?;
        if windows.is_empty() {
            println!(
                "{}: no slow requests, nothing sent (--all sends the whole file as one window)",
                path.display()
            );
            return Ok(());
        }
        rt.block_on(replay_windows(args, windows))?
    };
    println!(
        "sent {} window{} ({} spans) from {} to {}",
        report.windows,
        if report.windows == 1 { "" } else { "s" },
        report.spans,
        path.display(),
        args.endpoint
    );
    for (trace, what) in report.traces.iter().take(20) {
        println!("  trace {trace}  {what}");
    }
    if report.traces.len() > 20 {
        println!("  ... and {} more", report.traces.len() - 20);
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Report {
    windows: u64,
    spans: u64,
    traces: Vec<(TraceId, String)>,
}

/// The windows of a binary file to send.
///
/// A dump is streamed: only the events inside some slow request's window are
/// kept, so memory follows the windows, not the dump. A capture file, and a
/// dump with `--all`, is sent whole, so it is read whole.
fn binary_windows(args: &ReplayArgs) -> Result<Vec<Window>, Failure> {
    let path = &args.file;
    let meta = crate::scan::read_meta(path).input(path)?;
    if args.all || meta.header.kind == FileKind::Capture {
        let mut whole = tokio_blackbox::dump::read_file(path).input(path)?.window;
        if !args.all {
            return Ok(if whole.requests.is_empty() {
                Vec::new()
            } else {
                vec![whole]
            });
        }
        let ids = RandomIdGenerator::default();
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut root = SlowRequest::new(
            // Not a request id of the file: request ids count up from 1.
            tokio_blackbox::event::MAX_SUBJECT,
            format!("blackbox replay {name}"),
            ids.new_trace_id(),
            ids.new_span_id(),
            whole.from_unix_ns,
            whole.to_unix_ns.max(whole.from_unix_ns),
        );
        root.own_span = true;
        whole.requests = vec![root];
        return Ok(vec![whole]);
    }
    let before = args.before.as_nanos() as u64;
    let after = args.after.as_nanos() as u64;
    let mut windows: Vec<Window> = meta
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let from = r.start_unix_ns.saturating_sub(before).max(meta.from_ns);
            let to = r
                .end_unix_ns
                .saturating_add(after)
                .min(meta.to_ns.max(r.end_unix_ns))
                .max(from);
            crate::scan::request_window(&meta, r, i as u64 + 1, from, to)
        })
        .collect();
    crate::scan::cut_windows(path, meta.from_ns, &mut windows).input(path)?;
    Ok(windows)
}

/// The resource of replayed binary windows: the library's (with `host.name`,
/// which keeps Jaeger's clock-skew adjuster away) under the chosen service name.
fn resource(service_name: Option<&str>) -> Resource {
    let base = tokio_blackbox::export::resource();
    Resource::builder_empty()
        .with_attributes(
            base.iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(service_name.unwrap_or("blackbox-replay").to_owned())
        .build()
}

/// The URL sent to: the library's rule for a URL given on the command line.
fn traces_url(args: &ReplayArgs) -> String {
    traces_endpoint(
        &args.endpoint,
        args.protocol,
        EndpointKind::of_url(&args.endpoint),
    )
}

/// An error and its causes, each once (transport errors say little alone).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// An error from the endpoint, on one line.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn progress(len: Option<u64>, message: String) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{wide_msg} [{bar:30}] {pos}/{len} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message);
    Some(bar)
}

async fn replay_windows(args: &ReplayArgs, windows: Vec<Window>) -> Result<Report, Failure> {
    let settings = OtlpSettings::new(
        args.endpoint.clone(),
        args.protocol,
        EndpointKind::of_url(&args.endpoint),
    )
    .with_timeout(args.timeout);
    let mut exporter = settings
        .build_exporter()
        .map_err(|e| Failure::Usage(format!("--endpoint {}: {}", args.endpoint, one_line(e))))?;
    exporter.set_resource(&resource(args.service_name.as_deref()));
    let bar = progress(
        Some(windows.len() as u64),
        format!("replaying {}", args.file.display()),
    );
    let mut report = Report::default();
    for w in &windows {
        let (mut spans, at) = window_spans(w, Budget::default());
        attach_request_spans(&w.requests, &mut spans, names::SOURCE_REPLAY, |_| {
            !args.without_request_spans
        });
        let n = spans.len() as u64;
        exporter
            .export(spans)
            .await
            .map_err(|e| anyhow!("cannot send to {}: {}", args.endpoint, one_line(e)))?;
        report.windows += 1;
        report.spans += n;
        if let (Some(at), Some(r)) = (at, w.requests.first()) {
            report.traces.push((
                at.trace_id,
                format!(
                    "{} ({})",
                    r.name,
                    crate::fmt::dur(r.duration().as_nanos() as u64)
                ),
            ));
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let _ = exporter.shutdown();
    Ok(report)
}

/// Sends one export request as it is.
enum Sender {
    Grpc(TraceServiceClient<tonic::transport::Channel>),
    Http(reqwest::Client, String),
}

impl Sender {
    async fn connect(args: &ReplayArgs) -> Result<Sender, Failure> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Failure::Other(anyhow!("cannot send to {}: {}", args.endpoint, one_line(e)))
        };
        Ok(match args.protocol {
            Protocol::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(args.endpoint.clone())
                    .map_err(|e| {
                        Failure::Usage(format!("--endpoint {}: {}", args.endpoint, one_line(e)))
                    })?
                    .connect_timeout(args.timeout)
                    .timeout(args.timeout);
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|e| unreachable(&with_causes(&e)))?;
                Sender::Grpc(
                    TraceServiceClient::new(channel)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20),
                )
            }
            Protocol::HttpProtobuf => {
                let client = reqwest::Client::builder()
                    .timeout(args.timeout)
                    .build()
                    .map_err(|e| unreachable(&e))?;
                Sender::Http(client, traces_url(args))
            }
        })
    }

    /// Sends `request`; the number of spans the receiver rejected.
    async fn send(&mut self, request: ExportTraceServiceRequest) -> Result<i64, String> {
        match self {
            Sender::Grpc(client) => {
                let reply = client
                    .export(request)
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                Ok(reply
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_spans))
            }
            Sender::Http(client, url) => {
                use prost::Message as _;
                let reply = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| with_causes(&e))?;
                let status = reply.status();
                if !status.is_success() {
                    let body = reply.text().await.unwrap_or_default();
                    return Err(format!("HTTP {status}: {}", body.trim()));
                }
                Ok(0)
            }
        }
    }
}

/// Overrides `service.name` on every resource of `request`.
fn set_service_name(request: &mut ExportTraceServiceRequest, name: &str) {
    use opentelemetry_proto::tonic::common::v1::KeyValue as ProtoKv;
    let value = Some(AnyValue {
        value: Some(any_value::Value::StringValue(name.to_owned())),
    });
    for rs in &mut request.resource_spans {
        let resource = rs.resource.get_or_insert_with(Default::default);
        match resource
            .attributes
            .iter_mut()
            .find(|kv| kv.key == "service.name")
        {
            Some(kv) => kv.value = value.clone(),
            None => resource.attributes.push(ProtoKv {
                key: "service.name".to_owned(),
                value: value.clone(),
                ..ProtoKv::default()
            }),
        }
    }
}

async fn replay_json(args: &ReplayArgs) -> Result<Report, Failure> {
    let path: &Path = &args.file;
    // A first pass counts the lines and says which are bad (a file with no
    // good line sends nothing); bad lines are skipped, not sent.
    let (input, bar) = crate::scan::open_input(path).input(path)?;
    let mut lines = Lines::new(input);
    let mut count = 0u64;
    let checked = (|| {
        while lines.next_request()?.is_some() {
            count += 1;
        }
        Ok::<(), crate::otlp_json::ReadFailure>(())
    })();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    checked.map_err(|e| Failure::Input(path.to_path_buf(), e.into()))?;
    crate::otlp_json::report_skipped(path, &lines);
    let (input, _) = crate::scan::open_input(path).input(path)?;
    let mut lines = Lines::new(input);
    let bar = progress(Some(count), format!("replaying {}", path.display()));
    let mut sender = Sender::connect(args).await?;
    let mut report = Report::default();
    let mut rejected = 0i64;
    let result = async {
        while let Some((mut request, _, _)) = lines
            .next_request()
            .map_err(|e| Failure::Input(path.to_path_buf(), e.into()))?
        {
            let spans: Vec<_> = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .collect();
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            if spans.is_empty() {
                continue;
            }
            report.spans += spans.len() as u64;
            for w in spans.iter().filter(|s| s.name == "blackbox.window") {
                report.windows += 1;
                let name = w
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "blackbox.request.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .and_then(|v| match v {
                        any_value::Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let trace = w
                    .trace_id
                    .as_slice()
                    .try_into()
                    .map_or(TraceId::INVALID, TraceId::from_bytes);
                report.traces.push((trace, name));
            }
            if let Some(name) = &args.service_name {
                set_service_name(&mut request, name);
            }
            rejected += sender
                .send(request)
                .await
                .map_err(|e| anyhow!("cannot send to {}: {}", args.endpoint, one_line(e)))?;
        }
        Ok::<(), Failure>(())
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    if rejected > 0 {
        eprintln!("blackbox: {} rejected {rejected} spans", args.endpoint);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio_blackbox::Blackbox;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ReplayArgs,
    }

    #[test]
    fn defaults_are_the_recorders() {
        let c = Cmd::parse_from(["replay", "f", "--endpoint", "http://x:4317"]);
        assert_eq!(c.args.before, Blackbox::DEFAULT_WINDOW_BEFORE);
        assert_eq!(c.args.after, Blackbox::DEFAULT_WINDOW_AFTER);
        assert_eq!(c.args.protocol, Protocol::Grpc);
    }

    #[test]
    fn http_urls_get_the_traces_path_only_without_one() {
        let url = |endpoint: &str, protocol: &str| {
            let c = Cmd::parse_from([
                "replay",
                "f",
                "--endpoint",
                endpoint,
                "--protocol",
                protocol,
            ]);
            traces_url(&c.args)
        };
        let http = "http/protobuf";
        assert_eq!(url("http://h:4318", http), "http://h:4318/v1/traces");
        assert_eq!(url("http://h:4318/", http), "http://h:4318/v1/traces");
        assert_eq!(
            url("http://h:4318/v1/traces", http),
            "http://h:4318/v1/traces"
        );
        assert_eq!(
            url("https://h/otlp/v1/traces", http),
            "https://h/otlp/v1/traces"
        );
        assert_eq!(url("http://h:4317", "grpc"), "http://h:4317");
    }

    #[test]
    fn a_dump_is_cut_around_each_slow_request() {
        let mut whole = tokio_blackbox::export::testing::window(3, 4, 2);
        let from = whole.from_unix_ns;
        whole.requests[1].start_unix_ns = from + 1_500_000_000;
        whole.requests[1].end_unix_ns = from + 1_600_000_000;
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut bytes = Vec::new();
        tokio_blackbox::dump::write_window(&mut bytes, &whole, FileKind::Dump).unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let path = file.path().to_str().unwrap();
        let c = Cmd::parse_from([
            "replay",
            path,
            "--endpoint",
            "http://x:4317",
            "--before",
            "100ms",
            "--after",
            "10ms",
        ]);
        let windows = binary_windows(&c.args).map_err(|_| ()).unwrap();
        assert_eq!(windows.len(), 2);
        for (w, r) in windows.iter().zip(&whole.requests) {
            assert_eq!(w.requests, vec![r.clone()]);
            assert_eq!(w.from_unix_ns, r.start_unix_ns - 100_000_000);
            assert_eq!(
                w.to_unix_ns,
                (r.end_unix_ns + 10_000_000).min(whole.to_unix_ns)
            );
            let expected: usize = whole
                .lanes
                .iter()
                .flat_map(|l| &l.events)
                .filter(|e| e.ts >= w.from_unix_ns && e.ts <= w.to_unix_ns)
                .count();
            assert_eq!(w.events(), expected);
            assert!(w.events() < whole.events());
        }
        // --all: everything, under a new root span.
        let c = Cmd::parse_from(["replay", path, "--endpoint", "http://x:4317", "--all"]);
        let windows = binary_windows(&c.args).map_err(|_| ()).unwrap();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].events(), whole.events());
        assert!(windows[0].requests[0].own_span);
        assert_ne!(windows[0].requests[0].trace_id, whole.requests[0].trace_id);
    }
}
