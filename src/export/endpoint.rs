//! Where and how spans are sent: the `OTEL_EXPORTER_OTLP_[TRACES_]*`
//! settings, the endpoint rules (`/v1/traces` for HTTP), TLS, the protocol,
//! and the `opentelemetry-otlp` exporter built from them.

use super::exporter::DynExporter;
use super::gzip::GzipUnlessRefused;
use super::tls::{TlsFiles, no_tls_error};
use crate::error::BuildError;
use crate::sync::lock;
use std::sync::Mutex;
use std::time::Duration;

/// Which OTLP transport: `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`'s
/// `http/protobuf` (the specification's default, as for the application's
/// own OpenTelemetry SDK) or `grpc`.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::Protocol;
/// assert_eq!(Protocol::parse("http/protobuf"), Some(Protocol::HttpProtobuf));
/// assert_eq!(Protocol::Grpc.as_str(), "grpc");
/// assert_eq!(Protocol::parse("http/json"), None);
/// assert_eq!(Protocol::default(), Protocol::HttpProtobuf);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// OTLP/gRPC (tonic), port 4317 by convention.
    Grpc,
    /// OTLP/HTTP with a protobuf body, port 4318 by convention, path
    /// `/v1/traces`: the OTLP specification's default.
    #[default]
    HttpProtobuf,
}

impl Protocol {
    /// The protocol named as the OTLP variables name it: `grpc` or `http/protobuf`.
    pub fn parse(name: &str) -> Option<Protocol> {
        match name {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            _ => None,
        }
    }

    /// The name the OTLP variables use: `grpc` or `http/protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an endpoint URL names: the OTLP receiver's base
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`), or the traces endpoint itself
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::endpoint::EndpointKind;
/// assert_eq!(EndpointKind::of_url("http://c:4318"), EndpointKind::Base);
/// assert_eq!(EndpointKind::of_url("http://c:4318/"), EndpointKind::Base);
/// assert_eq!(EndpointKind::of_url("http://c:4318/v1/traces"), EndpointKind::Traces);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// A base URL: over HTTP the signal's path `/v1/traces` is appended.
    Base,
    /// The traces endpoint, used as it is.
    Traces,
}

impl EndpointKind {
    /// For a URL given without saying which it is (a command-line flag): a
    /// base when it has no path beyond `/`, else the traces endpoint.
    pub fn of_url(url: &str) -> EndpointKind {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        if rest.trim_end_matches('/').contains('/') {
            EndpointKind::Traces
        } else {
            EndpointKind::Base
        }
    }
}

/// The URL spans are sent to, by the OTLP specification's rule: over
/// HTTP/protobuf a [`EndpointKind::Base`] endpoint gets `/v1/traces`
/// appended (after any trailing `/`); a traces endpoint, and any gRPC
/// endpoint, is used as it is.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::Protocol;
/// use tokio_blackbox::export::endpoint::{EndpointKind, traces_endpoint};
///
/// let url = traces_endpoint("http://c:4318/", Protocol::HttpProtobuf, EndpointKind::Base);
/// assert_eq!(url, "http://c:4318/v1/traces");
/// let url = traces_endpoint("http://c:4318/custom", Protocol::HttpProtobuf, EndpointKind::Traces);
/// assert_eq!(url, "http://c:4318/custom");
/// assert_eq!(traces_endpoint("http://c:4317", Protocol::Grpc, EndpointKind::Base), "http://c:4317");
/// ```
pub fn traces_endpoint(endpoint: &str, protocol: Protocol, kind: EndpointKind) -> String {
    match (protocol, kind) {
        (Protocol::HttpProtobuf, EndpointKind::Base) => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_owned(),
    }
}

/// The metrics endpoint beside a traces endpoint: `/v1/metrics` for a
/// trailing `/v1/traces` over HTTP, the same URL otherwise.
fn metrics_endpoint(traces: &str, protocol: Protocol) -> String {
    match (protocol, traces.strip_suffix("/v1/traces")) {
        (Protocol::HttpProtobuf, Some(base)) => format!("{base}/v1/metrics"),
        _ => traces.to_owned(),
    }
}

/// How the recorder's exporter is made: endpoint, protocol, timeout,
/// headers and TLS files, read from the `OTEL_EXPORTER_OTLP_[TRACES_]*`
/// variables ([`OtlpSettings::from_env`]) or given ([`OtlpSettings::new`]),
/// and the `opentelemetry-otlp` exporter built from them
/// ([`OtlpSettings::build_exporter`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tokio_blackbox::export::{OtlpSettings, Protocol};
/// use tokio_blackbox::export::endpoint::EndpointKind;
///
/// let settings = OtlpSettings::new("http://localhost:4318", Protocol::HttpProtobuf, EndpointKind::Base)
///     .with_timeout(Duration::from_secs(3));
/// assert_eq!(settings.endpoint(), "http://localhost:4318/v1/traces");
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// // Built inside a runtime (tonic's channel starts on build); nothing is sent yet.
/// let _exporter = rt.block_on(async { settings.build_exporter() })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Its `Debug` shows the headers' names, never their values (API keys).
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The traces endpoint, complete (`/v1/traces` added for HTTP when it
    /// came from `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub(crate) endpoint: String,
    /// The variable the endpoint came from, for error messages.
    pub(crate) endpoint_var: &'static str,
    /// Where the recorder's own metrics go ([`OtlpSettings::metrics_endpoint`]).
    pub(crate) metrics_endpoint: String,
    /// The transport.
    pub(crate) protocol: Protocol,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`; `None`: the exporter's default (10 s).
    pub(crate) timeout: Option<Duration>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, decoded, keys lowercase.
    pub(crate) headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION=gzip`.
    pub(crate) gzip: bool,
    /// No compression set (and the `gzip` feature): the recorder's span
    /// exporter sends gzip until the endpoint refuses it
    /// ([`super::gzip`]). Its metrics go uncompressed.
    pub(crate) gzip_unless_refused: bool,
    /// TLS files for an `https` endpoint: `(variable, path)` of the CA
    /// certificate, the client certificate and the client key (PEM).
    pub(crate) tls: TlsFiles,
}

impl std::fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint)
            .field("endpoint_var", &self.endpoint_var)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("protocol", &self.protocol)
            .field("timeout", &self.timeout)
            .field("headers (values hidden)", &header_names)
            .field("gzip", &self.gzip)
            .field("gzip_unless_refused", &self.gzip_unless_refused)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` accepts (the spec's form).
const TIMEOUT_EXPECTED: &str =
    "a whole number of milliseconds, at least 1, such as 10000 (the OTLP exporter's form: no unit)";
/// What `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` accepts.
const HEADERS_EXPECTED: &str = "comma-separated key=value pairs, such as api-key=secret,x-team=obs: keys of letters, digits, '-', '_' or '.' (not ending in -bin), values percent-encoded printable ASCII";
/// What `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION` accepts.
const COMPRESSION_EXPECTED: &str = "gzip or none (zstd is not supported)";

/// The exporter's timeout when none is set (the OTLP specification's 10 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A headers value as an error may show it: the keys, never the values
/// (they hold API keys), and the position of an item that is not `k=v`.
fn redact_headers(raw: &str) -> String {
    raw.split(',')
        .map(|item| match item.split_once('=') {
            Some((k, _)) => format!("{}=<hidden>", k.trim()),
            None if item.trim().is_empty() => String::new(),
            None => "<an item without '='>".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

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

/// The body of [`OtlpSettings::build_exporter`] and
/// [`OtlpSettings::build_metric_exporter`]: `opentelemetry-otlp`'s span and
/// metric exporter builders have the same configuration methods.
macro_rules! build_otlp {
    ($self:ident, $exporter:ty, $endpoint:expr) => {{
        use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
        let err = |e: opentelemetry_otlp::ExporterBuildError| BuildError::Exporter(Box::new(e));
        Ok(match $self.protocol {
            Protocol::Grpc => {
                let mut builder = <$exporter>::builder()
                    .with_tonic()
                    .with_endpoint($endpoint.clone())
                    .with_retry_policy(RetryPolicy::disabled());
                if let Some(t) = $self.timeout {
                    builder = builder.with_timeout(t);
                }
                if !$self.headers.is_empty() {
                    let mut map = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
                    for (k, v) in &$self.headers {
                        // Checked by `parse_headers`: a valid key, printable ASCII.
                        let value = v.parse().map_err(|_| BuildError::InvalidEnv {
                            var: "OTEL_EXPORTER_OTLP_HEADERS",
                            value: format!("{k}=<hidden>"),
                            expected: HEADERS_EXPECTED,
                        })?;
                        map.insert(static_key(k), value);
                    }
                    builder = builder.with_metadata(map);
                }
                if $self.gzip {
                    builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
                }
                if $endpoint.starts_with("https:") {
                    builder = $self.tls.with_tls(builder)?;
                }
                builder.build().map_err(err)?
            }
            Protocol::HttpProtobuf => {
                let mut builder = <$exporter>::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint($endpoint.clone())
                    .with_retry_policy(RetryPolicy::disabled());
                if let Some(t) = $self.timeout {
                    builder = builder.with_timeout(t);
                }
                if !$self.headers.is_empty() {
                    builder = builder.with_headers($self.headers.iter().cloned().collect());
                }
                if $self.gzip {
                    builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
                }
                // Our own client, never one of opentelemetry-otlp's client
                // features (they would change the app's exporter too).
                builder = builder.with_http_client(super::http_client::client(
                    &$endpoint,
                    $self.timeout.unwrap_or(DEFAULT_TIMEOUT),
                    &$self.tls,
                )?);
                builder.build().map_err(err)?
            }
        })
    }};
}

impl OtlpSettings {
    /// Settings for `endpoint` over `protocol`, with the exporter's default
    /// timeout (10 s), no headers and, for `https`, the system's roots. The
    /// URL sent to is [`traces_endpoint`] of it. It is not checked here: a
    /// malformed URL is an error of [`build_exporter`](OtlpSettings::build_exporter).
    pub fn new(
        endpoint: impl Into<String>,
        protocol: Protocol,
        kind: EndpointKind,
    ) -> OtlpSettings {
        let endpoint = traces_endpoint(&endpoint.into(), protocol, kind);
        OtlpSettings {
            metrics_endpoint: metrics_endpoint(&endpoint, protocol),
            endpoint,
            endpoint_var: "the endpoint",
            protocol,
            timeout: None,
            headers: Vec::new(),
            gzip: false,
            gzip_unless_refused: false,
            tls: TlsFiles::default(),
        }
    }

    /// The settings of the process environment's `OTEL_EXPORTER_OTLP_[TRACES_]*`
    /// variables, as the recorder reads them: endpoint, protocol, timeout,
    /// headers, compression (only `none`) and TLS files, the signal's
    /// variable first, then the general one; `Ok(None)` when no endpoint is set.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidEnv`] naming the variable of a malformed value.
    pub fn from_env() -> Result<Option<OtlpSettings>, BuildError> {
        OtlpSettings::read(|v| std::env::var(v).ok())
    }

    /// Each export waits at most `timeout` (the OTLP default is 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> OtlpSettings {
        self.timeout = Some(timeout);
        self
    }

    /// The URL spans are sent to (`/v1/traces` already appended where the rule says).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The transport.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Reads the `OTEL_EXPORTER_OTLP_[TRACES_]*` variables through `env`:
    /// endpoint, protocol, timeout, headers, compression and TLS files (the
    /// signal's variable first, then the general one). `Ok(None)` when no
    /// endpoint is set. A malformed value of any of them is an
    /// [`BuildError::InvalidEnv`] naming the variable it came from.
    pub(crate) fn read(
        env: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Option<OtlpSettings>, BuildError> {
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
            None => Protocol::default(),
            Some((var, p)) => Protocol::parse(p).ok_or_else(|| {
                invalid(
                    var,
                    p,
                    "http/protobuf (the default) or grpc; http/json is not supported",
                )
            })?,
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
        if endpoint.starts_with("https:")
            && !cfg!(any(feature = "tls-ring", feature = "tls-aws-lc"))
        {
            return Err(no_tls_error());
        }
        // The spec: the signal path is appended for HTTP to the general endpoint only.
        let kind = if endpoint_var == "OTEL_EXPORTER_OTLP_ENDPOINT" {
            EndpointKind::Base
        } else {
            EndpointKind::Traces
        };
        let endpoint = traces_endpoint(&endpoint, protocol, kind);
        let metrics_endpoint = nonempty(env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
            .unwrap_or_else(|| metrics_endpoint(&endpoint, protocol));
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
            Some((var, raw)) => parse_headers(&raw)
                .ok_or_else(|| invalid(var, &redact_headers(&raw), HEADERS_EXPECTED))?,
        };
        let compression = pick(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        );
        // Unset: gzip until the endpoint refuses it (the Collector's own
        // OTLP exporter defaults to gzip too).
        let gzip_unless_refused = compression.is_none() && cfg!(feature = "gzip");
        let gzip = match compression {
            None => false,
            Some((_, raw)) if raw == "none" => false,
            Some((var, raw)) if raw == "gzip" => {
                if !cfg!(feature = "gzip") {
                    return Err(BuildError::MissingFeature {
                        what: format!("{var}=gzip"),
                        feature: "gzip",
                        fix: "keep tokio-blackbox's default features (or add `gzip`), or set the variable to none",
                    });
                }
                true
            }
            Some((var, raw)) => return Err(invalid(var, &raw, COMPRESSION_EXPECTED)),
        };
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
        Ok(Some(OtlpSettings {
            endpoint,
            endpoint_var,
            metrics_endpoint,
            protocol,
            timeout,
            headers,
            gzip,
            gzip_unless_refused,
            tls,
        }))
    }

    /// Builds the `opentelemetry-otlp` exporter. Must run inside a Tokio
    /// runtime (tonic's lazy channel spawns its worker on build). The timeout
    /// and headers are set in code, so they win over the process environment
    /// `opentelemetry-otlp` would read; its own retries are off (the
    /// recorder's export thread retries, [`RETRIES`](crate::export::RETRIES)).
    /// Nothing is sent or connected until the first export.
    ///
    /// # Errors
    ///
    /// [`BuildError::Exporter`] when `opentelemetry-otlp` refuses the
    /// settings (a malformed endpoint, for instance);
    /// [`BuildError::InvalidEnv`] when a TLS file named cannot be read.
    pub fn build_exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, BuildError> {
        build_otlp!(self, opentelemetry_otlp::SpanExporter, &self.endpoint)
    }

    /// The recorder's own span exporter: [`build_exporter`](OtlpSettings::build_exporter),
    /// or, with no compression set, gzip until the endpoint refuses it
    /// ([`super::gzip`]).
    pub(crate) fn build_span_exporter(&self) -> Result<Box<dyn DynExporter>, BuildError> {
        if self.gzip_unless_refused && !self.gzip {
            let gzip = OtlpSettings {
                gzip: true,
                ..self.clone()
            };
            return Ok(Box::new(GzipUnlessRefused::new(
                gzip.build_exporter()?,
                self.build_exporter()?,
            )));
        }
        Ok(Box::new(self.build_exporter()?))
    }

    /// Builds the `opentelemetry-otlp` metric exporter for the recorder's
    /// own counters: the same protocol, timeout, headers and TLS as the
    /// spans, sent to [`metrics_endpoint`](OtlpSettings::metrics_endpoint).
    /// Must run inside a Tokio runtime, as [`build_exporter`](OtlpSettings::build_exporter).
    ///
    /// # Errors
    ///
    /// As [`build_exporter`](OtlpSettings::build_exporter).
    pub fn build_metric_exporter(&self) -> Result<opentelemetry_otlp::MetricExporter, BuildError> {
        build_otlp!(
            self,
            opentelemetry_otlp::MetricExporter,
            &self.metrics_endpoint
        )
    }

    /// Where the recorder's metrics go: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
    /// as it is, else the endpoint of the spans with `/v1/metrics` for
    /// `/v1/traces` over HTTP (the same URL over gRPC).
    pub fn metrics_endpoint(&self) -> &str {
        &self.metrics_endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of these variables only.
    fn env(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&'static str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn otlp_env_is_read_like_the_spec() {
        assert_eq!(OtlpSettings::read(env(&[])).unwrap(), None);
        let grpc = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            grpc,
            OtlpSettings {
                endpoint: "http://c:4317".into(),
                endpoint_var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                metrics_endpoint: "http://c:4317".into(),
                protocol: Protocol::Grpc,
                timeout: None,
                headers: Vec::new(),
                gzip: false,
                gzip_unless_refused: cfg!(feature = "gzip"),
                tls: TlsFiles::default(),
            }
        );
        let tls = OtlpSettings::read(env(&[
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
        // The spec's default protocol, as the app's SDK reads the same variables.
        let http = OtlpSettings::read(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]))
            .unwrap()
            .unwrap();
        assert_eq!(http.protocol, Protocol::HttpProtobuf);
        assert_eq!(http.endpoint, "http://c:4318/v1/traces");
        // No compression set: gzip until the endpoint refuses it; `none`
        // and `gzip` are used as they are.
        assert!(!http.gzip);
        assert_eq!(http.gzip_unless_refused, cfg!(feature = "gzip"));
        for (var, value, gzip) in [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none", false),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none", false),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", true),
        ] {
            if gzip && !cfg!(feature = "gzip") {
                continue;
            }
            let pairs = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
                (var, value),
            ];
            let set = OtlpSettings::read(env(Box::leak(pairs.into_boxed_slice())))
                .unwrap()
                .unwrap();
            assert_eq!(
                (set.gzip, set.gzip_unless_refused),
                (gzip, false),
                "{var}={value}"
            );
        }
        let https_http = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ]));
        if cfg!(any(feature = "tls-ring", feature = "tls-aws-lc")) {
            let https_http = https_http.unwrap().unwrap();
            assert_eq!(https_http.endpoint, "https://c:4318/v1/traces");
            assert!(https_http.gzip);
        } else {
            let err = https_http.unwrap_err();
            assert!(err.to_string().contains("tls-ring"), "{err}");
        }
        let zstd = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
        ]))
        .unwrap_err();
        assert!(
            zstd.to_string()
                .contains("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"),
            "{zstd}"
        );
        let traces = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(traces.endpoint, "http://t:4318/custom");
        let err = OtlpSettings::read(env(&[
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

    /// A malformed headers value and the settings' `Debug` never show a
    /// header's value (an API key would land in the app's startup log).
    #[test]
    fn header_values_never_reach_errors_or_debug() {
        let err = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cr3t-token,broken",
            ),
        ]))
        .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("authorization=<hidden>"), "{text}");
        let ok = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t-token"),
        ]))
        .unwrap()
        .unwrap();
        let debug = format!("{ok:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("api-key"), "{debug}");
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
    fn metrics_go_beside_the_traces() {
        let http = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(http.endpoint(), "http://c:4318/v1/traces");
        assert_eq!(http.metrics_endpoint(), "http://c:4318/v1/metrics");
        let own = OtlpSettings::read(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(own.metrics_endpoint(), "http://m:4317");
    }
}
