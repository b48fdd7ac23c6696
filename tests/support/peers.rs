//! Test peers: a real Jaeger v2 and a real OpenTelemetry Collector, run as
//! child processes on loopback ports chosen per test.
//!
//! The binaries are built from the Go module proxy by `tools/build-peers.sh`
//! (Jaeger 2.13.0 and `otelcol-blackbox`, a Collector 0.161.0 with the
//! components that `collector-config/` uses). They are looked up in
//! `$BLACKBOX_PEERS_DIR`, `$CARGO_TARGET_DIR/peers`, `<target dir of this
//! test binary>/peers` and `<repo>/target/peers`, in that order;
//! `BLACKBOX_JAEGER_BIN` / `BLACKBOX_OTELCOL_BIN` name a binary directly.
//!
//! Only std, `reqwest` (blocking) and `serde_json`. Every HTTP call runs on
//! a short-lived plain thread, so these helpers can be called from sync
//! tests and from inside `#[tokio::test]` alike (they block the calling
//! thread).
//!
//! Each peer gets its own temporary directory (config and log file). It is
//! removed when the peer is dropped, unless the test is panicking: then it
//! is kept and its path is printed, so the log can be read.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How long a peer may take to come up before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Jaeger configuration for tests (ports from environment variables).
pub const JAEGER_CONFIG: &str = include_str!("../../tools/jaeger/jaeger-test.yaml.tmpl");

// ---------------------------------------------------------------------------
// Ports, paths, binaries

/// A TCP port on 127.0.0.1 that was free a moment ago. Never returns the
/// same port twice in one test process, so ports picked for different peers
/// of one test (or of tests running in parallel) do not collide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("free_port: no new free port after 1000 tries");
}

/// The repository root (the workspace's, where Cargo.lock is), also when these
/// helpers are compiled into the command's tests (`cli/tests`).
pub fn repo_root() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&crate_dir)
        .to_path_buf()
}

/// Directories searched for the peer binaries, most specific first.
fn peer_dir_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("BLACKBOX_PEERS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        let d = if d.is_relative() {
            repo_root().join(d)
        } else {
            d
        };
        dirs.push(d.join("peers"));
    }
    // <target>/<profile>/deps/<test binary>
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent)
    {
        dirs.push(target.join("peers"));
    }
    dirs.push(repo_root().join("target").join("peers"));
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The directory holding the peer binaries: the first candidate that has
/// any of them (else the first candidate, which is where
/// `tools/build-peers.sh` would put them with the same environment).
pub fn peers_dir() -> PathBuf {
    let candidates = peer_dir_candidates();
    candidates
        .iter()
        .find(|d| d.join("jaeger").is_file() || d.join("otelcol-blackbox").is_file())
        .unwrap_or(&candidates[0])
        .clone()
}

fn find_bin(env_var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
        panic!(
            "{env_var}={} does not name a file. Unset it, or build the test peers: run tools/build-peers.sh",
            p.display()
        );
    }
    let candidates = peer_dir_candidates();
    for dir in &candidates {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "the test peer `{name}` was not found (looked in: {}).\n\
         Build the test peers first: run tools/build-peers.sh (needs Go; a few minutes the first \
         time, seconds after), or set {env_var} to the binary.",
        looked.join(", ")
    );
}

/// The Jaeger v2 binary (`BLACKBOX_JAEGER_BIN` overrides).
pub fn jaeger_bin() -> PathBuf {
    find_bin("BLACKBOX_JAEGER_BIN", "jaeger")
}

/// The Collector binary `otelcol-blackbox` (`BLACKBOX_OTELCOL_BIN` overrides).
pub fn otelcol_bin() -> PathBuf {
    find_bin("BLACKBOX_OTELCOL_BIN", "otelcol-blackbox")
}

/// `collector-config/<name>` in the repository.
pub fn collector_config(name: &str) -> PathBuf {
    repo_root().join("collector-config").join(name)
}

// ---------------------------------------------------------------------------
// Temporary directories and child processes

/// A temporary directory, removed on drop unless the thread is panicking.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "blackbox-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `max_bytes` of a file, lossily decoded.
pub fn file_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn spawn_logged(mut cmd: Command, log_path: &Path) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
    let log2 = log.try_clone().expect("clone log file handle");
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The port of an endpoint written as `host:port` or `http://host:port/...`.
fn endpoint_port(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split("://").last()?;
    let hostport = rest.split('/').next()?;
    hostport.rsplit(':').next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// HTTP (blocking reqwest, each call on its own plain thread)

/// A finished HTTP exchange.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("response is not JSON ({e}): {}", truncate(&self.body, 2000))
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn http(
    method: &'static str,
    url: String,
    body: Option<Vec<u8>>,
    content_type: &'static str,
) -> Result<HttpReply, String> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let req = match method {
            "GET" => client.get(&url),
            "POST" => client
                .post(&url)
                .header("content-type", content_type)
                .body(body.unwrap_or_default()),
            other => return Err(format!("unsupported method {other}")),
        };
        let resp = req.send().map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
        Ok(HttpReply { status, body })
    })
    .join()
    .unwrap_or_else(|_| Err("HTTP thread panicked".to_string()))
}

/// GET `url`.
pub fn http_get(url: &str) -> Result<HttpReply, String> {
    http("GET", url.to_string(), None, "")
}

/// POST a JSON body to `url`.
pub fn http_post_json(url: &str, body: &Value) -> Result<HttpReply, String> {
    http(
        "POST",
        url.to_string(),
        Some(body.to_string().into_bytes()),
        "application/json",
    )
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// OTLP/JSON helpers

/// A random 32-hex-digit trace id.
pub fn random_trace_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// A random 16-hex-digit span id.
pub fn random_span_id() -> String {
    format!("{:016x}", random_u64())
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() | 1
}

/// Now as UNIX nanoseconds.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_nanos() as u64
}

/// One span to send with [`otlp_json_traces`].
#[derive(Debug, Clone)]
pub struct TestSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// OTLP/JSON `KeyValue`s, e.g. from [`attr_bool`], [`attr_str`], [`attr_int`].
    pub attributes: Vec<Value>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: u8,
}

impl TestSpan {
    /// A root span of `duration` ending now, in a new trace.
    pub fn root(name: &str, duration: Duration) -> TestSpan {
        let end = unix_nanos_now();
        TestSpan {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            parent_span_id: None,
            name: name.to_string(),
            start_unix_nanos: end - duration.as_nanos() as u64,
            end_unix_nanos: end,
            attributes: Vec::new(),
            status_code: 0,
        }
    }

    /// A child of `self` with the same start and end.
    pub fn child(&self, name: &str) -> TestSpan {
        TestSpan {
            span_id: random_span_id(),
            parent_span_id: Some(self.span_id.clone()),
            name: name.to_string(),
            attributes: Vec::new(),
            status_code: 0,
            ..self.clone()
        }
    }

    pub fn with_attr(mut self, kv: Value) -> TestSpan {
        self.attributes.push(kv);
        self
    }
}

pub fn attr_bool(key: &str, v: bool) -> Value {
    json!({"key": key, "value": {"boolValue": v}})
}

pub fn attr_str(key: &str, v: &str) -> Value {
    json!({"key": key, "value": {"stringValue": v}})
}

pub fn attr_int(key: &str, v: i64) -> Value {
    // OTLP/JSON encodes 64-bit integers as strings.
    json!({"key": key, "value": {"intValue": v.to_string()}})
}

/// An OTLP/JSON `ExportTraceServiceRequest` with `spans` under one resource
/// (`service.name` = `service`, plus `host.name`, which keeps Jaeger's
/// clock-skew adjuster quiet).
pub fn otlp_json_traces(service: &str, spans: &[TestSpan]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.trace_id,
                "spanId": s.span_id,
                "name": s.name,
                "kind": 2,
                "startTimeUnixNano": s.start_unix_nanos.to_string(),
                "endTimeUnixNano": s.end_unix_nanos.to_string(),
                "attributes": s.attributes,
                "status": {"code": s.status_code},
            });
            if let Some(p) = &s.parent_span_id {
                span["parentSpanId"] = json!(p);
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                attr_str("service.name", service),
                attr_str("host.name", "blackbox-test"),
            ]},
            "scopeSpans": [{
                "scope": {"name": "tokio-blackbox-tests"},
                "spans": spans,
            }],
        }]
    })
}

/// POSTs an OTLP/JSON request to `<base_url>/v1/traces` and panics unless it
/// was accepted.
pub fn post_otlp_json(base_url: &str, request: &Value) {
    let url = format!("{}/v1/traces", base_url.trim_end_matches('/'));
    let reply = http_post_json(&url, request).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (200..300).contains(&reply.status),
        "POST {url} answered {}: {}",
        reply.status,
        truncate(&reply.body, 2000)
    );
}

/// Every span (OTLP/JSON object) in a `/api/v3/traces` answer, from all
/// resources and scopes.
pub fn otlp_spans(trace: &Value) -> Vec<&Value> {
    let root = trace.get("result").unwrap_or(trace);
    let mut out = Vec::new();
    for rs in root["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            out.extend(ss["spans"].as_array().into_iter().flatten());
        }
    }
    out
}

/// The first span named `name` in a `/api/v3/traces` answer.
pub fn find_span<'a>(trace: &'a Value, name: &str) -> Option<&'a Value> {
    otlp_spans(trace).into_iter().find(|s| s["name"] == name)
}

/// The value of attribute `key` of an OTLP/JSON span (the inner AnyValue,
/// e.g. `{"boolValue": true}`).
pub fn span_attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

// ---------------------------------------------------------------------------
// Jaeger

/// A Jaeger v2 all-in-one with in-memory storage on loopback ports.
pub struct Jaeger {
    pub otlp_grpc_port: u16,
    pub otlp_http_port: u16,
    /// Query HTTP: the API (`/api/...`) and the UI.
    pub query_port: u16,
    pub query_grpc_port: u16,
    pub health_port: u16,
    pub metrics_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Jaeger {
    /// Starts Jaeger on fresh ports and waits (up to [`START_TIMEOUT`]) until
    /// its query API and OTLP receivers answer.
    pub fn start() -> Jaeger {
        Self::start_with_config(JAEGER_CONFIG.to_owned())
    }

    /// Like [`Jaeger::start`], with TLS on both OTLP receivers (gRPC and
    /// HTTP): the server certificate and key are PEM files.
    pub fn start_with_tls(cert: &Path, key: &Path) -> Jaeger {
        let mut config = JAEGER_CONFIG.to_owned();
        for port in ["JAEGER_OTLP_GRPC_PORT", "JAEGER_OTLP_HTTP_PORT"] {
            let plain = format!("        endpoint: 127.0.0.1:${{env:{port}}}\n");
            assert!(config.contains(&plain), "the {port} receiver line moved");
            let with_tls = format!(
                "{plain}        tls:\n          cert_file: {}\n          key_file: {}\n",
                cert.display(),
                key.display()
            );
            config = config.replacen(&plain, &with_tls, 1);
        }
        Self::start_with_config(config)
    }

    fn start_with_config(config: String) -> Jaeger {
        let dir = TempDir::new("jaeger");
        let config_path = dir.path().join("jaeger.yaml");
        fs::write(&config_path, config).expect("write jaeger config");
        let mut j = Jaeger {
            otlp_grpc_port: free_port(),
            otlp_http_port: free_port(),
            query_port: free_port(),
            query_grpc_port: free_port(),
            health_port: free_port(),
            metrics_port: free_port(),
            log_path: dir.path().join("jaeger.log"),
            config_path,
            child: None,
            dir,
        };
        j.spawn();
        j
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(jaeger_bin());
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("JAEGER_OTLP_GRPC_PORT", self.otlp_grpc_port.to_string())
            .env("JAEGER_OTLP_HTTP_PORT", self.otlp_http_port.to_string())
            .env("JAEGER_QUERY_HTTP_PORT", self.query_port.to_string())
            .env("JAEGER_QUERY_GRPC_PORT", self.query_grpc_port.to_string())
            .env("JAEGER_HEALTH_PORT", self.health_port.to_string())
            .env("JAEGER_METRICS_PORT", self.metrics_port.to_string())
            .current_dir(self.dir.path());
        self.child = Some(spawn_logged(cmd, &self.log_path));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let services_url = format!("{}/api/services", self.query_url());
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "jaeger exited during start-up ({status}); log:\n{}",
                    self.log_tail()
                );
            }
            let api_up = matches!(http_get(&services_url), Ok(r) if r.status == 200);
            if api_up && port_open(self.otlp_grpc_port) && port_open(self.otlp_http_port) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "jaeger did not come up within {:?} (query {}, otlp grpc {}, otlp http {}); log:\n{}",
                    START_TIMEOUT,
                    self.query_port,
                    self.otlp_grpc_port,
                    self.otlp_http_port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// OTLP/gRPC endpoint, `http://127.0.0.1:PORT` (for OTEL_EXPORTER_OTLP_ENDPOINT).
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_grpc_port)
    }

    /// OTLP/gRPC endpoint as `127.0.0.1:PORT` (for Collector exporter configs).
    pub fn otlp_grpc_hostport(&self) -> String {
        format!("127.0.0.1:{}", self.otlp_grpc_port)
    }

    /// OTLP/HTTP base URL, `http://127.0.0.1:PORT` (POST `/v1/traces` on it).
    pub fn otlp_http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_http_port)
    }

    /// Query API and UI base URL, `http://127.0.0.1:PORT`.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last 8 KiB of Jaeger's log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path, 8 * 1024)
    }

    /// `GET /api/v3/traces/{trace_id}`: the trace as OTLP/JSON
    /// (`{"result": {"resourceSpans": [...]}}`), or None if Jaeger has no
    /// such trace (404).
    pub fn trace(&self, trace_id_hex: &str) -> Option<Value> {
        let url = format!("{}/api/v3/traces/{}", self.query_url(), trace_id_hex);
        let reply =
            http_get(&url).unwrap_or_else(|e| panic!("{e}\njaeger log:\n{}", self.log_tail()));
        match reply.status {
            200 => Some(reply.json()),
            404 => None,
            s => panic!("GET {url} answered {s}: {}", truncate(&reply.body, 2000)),
        }
    }

    /// `GET /api/traces?service=..&minDuration=..&lookback=..&limit=..`
    /// (Jaeger's own JSON: `{"data": [{"traceID", "spans": [{"operationName",
    /// "logs", "references", ...}], "processes"}]}`). An empty `min_duration`
    /// or `lookback` leaves that parameter out. Durations like `250ms`, `1h`.
    pub fn search(&self, service: &str, min_duration: &str, lookback: &str) -> Value {
        self.search_limit(service, min_duration, lookback, 100)
    }

    /// [`Jaeger::search`] returning at most `limit` traces.
    pub fn search_limit(
        &self,
        service: &str,
        min_duration: &str,
        lookback: &str,
        limit: usize,
    ) -> Value {
        let mut url = format!(
            "{}/api/traces?service={}&limit={limit}",
            self.query_url(),
            url_encode(service)
        );
        if !min_duration.is_empty() {
            url.push_str(&format!("&minDuration={}", url_encode(min_duration)));
        }
        if !lookback.is_empty() {
            url.push_str(&format!("&lookback={}", url_encode(lookback)));
        }
        let reply =
            http_get(&url).unwrap_or_else(|e| panic!("{e}\njaeger log:\n{}", self.log_tail()));
        assert_eq!(
            reply.status,
            200,
            "GET {url}: {}",
            truncate(&reply.body, 2000)
        );
        reply.json()
    }

    /// `GET /api/services`: the service names Jaeger has seen.
    pub fn services(&self) -> Vec<String> {
        let url = format!("{}/api/services", self.query_url());
        let reply = http_get(&url).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status, 200, "GET {url}: {}", reply.body);
        reply.json()["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls [`Jaeger::trace`] until the trace is there; panics after `timeout`.
    /// Searches until a trace of `service` at least `min_duration` long shows
    /// up, and returns its id (for traces whose ids were made elsewhere).
    pub fn wait_for_search(&self, service: &str, min_duration: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.search(service, min_duration, "1h");
            if let Some(id) = found["data"][0]["traceID"].as_str() {
                return id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no trace of {service} (min duration {min_duration}) in jaeger within {timeout:?}: {found}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_for_trace(&self, trace_id_hex: &str, timeout: Duration) -> Value {
        self.wait_for_trace_where(trace_id_hex, timeout, |_| true)
    }

    /// Polls until the trace exists and has at least `min_spans` spans
    /// (spans of one trace may arrive in several batches).
    pub fn wait_for_spans(&self, trace_id_hex: &str, min_spans: usize, timeout: Duration) -> Value {
        self.wait_for_trace_where(trace_id_hex, timeout, |t| otlp_spans(t).len() >= min_spans)
    }

    /// Polls until the trace exists and `pred` holds for it.
    pub fn wait_for_trace_where(
        &self,
        trace_id_hex: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(t) = self.trace(trace_id_hex) {
                if pred(&t) {
                    return t;
                }
                last = Some(t);
            }
            if Instant::now() > deadline {
                panic!(
                    "trace {trace_id_hex} {} in jaeger within {timeout:?}; last seen: {}\njaeger log:\n{}",
                    if last.is_some() {
                        "did not reach the expected shape"
                    } else {
                        "did not show up"
                    },
                    last.map(|t| truncate(&t.to_string(), 4000).to_string())
                        .unwrap_or_else(|| "nothing".into()),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Whether the Jaeger process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills Jaeger (its in-memory traces are lost). The ports stay reserved
    /// for [`Jaeger::restart`].
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
        // Make sure the ports are really closed before returning, so a
        // test that checks "the exporter copes with a dead endpoint" sees one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while (port_open(self.otlp_grpc_port) || port_open(self.query_port))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts Jaeger again on the same ports (stopping it first if needed)
    /// and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "jaeger log ({}):\n{}",
                self.log_path.display(),
                file_tail(&self.log_path, 4096)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// OpenTelemetry Collector

/// Environment variables of the configs in collector-config/ that name a
/// listener; [`Collector::start`] fills in free loopback ports for those the
/// test does not set, so no test ever binds 4317/4318/8888.
const OTLP_GRPC_VAR: &str = "OTELCOL_OTLP_GRPC_ENDPOINT";
const OTLP_HTTP_VAR: &str = "OTELCOL_OTLP_HTTP_ENDPOINT";
const METRICS_HOST_VAR: &str = "OTELCOL_METRICS_HOST";
const METRICS_PORT_VAR: &str = "OTELCOL_METRICS_PORT";

/// The configs read only `OTELCOL_*` variables: drop any that the
/// developer's shell exported, so a test sees exactly what it sets plus the
/// defaults written in the files.
fn remove_inherited_otelcol_vars(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTELCOL_") {
            cmd.env_remove(k);
        }
    }
}

/// `otelcol-blackbox` running one of the configs.
pub struct Collector {
    pub config_path: PathBuf,
    /// The environment the Collector was started with (after defaults).
    pub env: Vec<(String, String)>,
    /// `127.0.0.1:PORT` of its OTLP/gRPC receiver.
    pub otlp_grpc_hostport: String,
    /// `127.0.0.1:PORT` of its OTLP/HTTP receiver (None if the config has none,
    /// e.g. the tail-sampling tier).
    pub otlp_http_hostport: Option<String>,
    pub metrics_port: u16,
    log_path: PathBuf,
    child: Option<Child>,
    _dir: TempDir,
}

impl Collector {
    /// Starts the Collector with `--config config_path` and `env` on top of
    /// this process's environment (less its `OTELCOL_*` variables). `OTELCOL_OTLP_GRPC_ENDPOINT`,
    /// `OTELCOL_OTLP_HTTP_ENDPOINT` and `OTELCOL_METRICS_PORT` get free
    /// loopback ports unless `env` sets them. Waits (up to
    /// [`START_TIMEOUT`]) until the OTLP receivers accept connections.
    pub fn start(config_path: impl AsRef<Path>, env: &[(&str, &str)]) -> Collector {
        let config_path = config_path.as_ref().to_path_buf();
        let dir = TempDir::new("otelcol");
        let log_path = dir.path().join("otelcol.log");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let has = |env: &Vec<(String, String)>, k: &str| env.iter().any(|(key, _)| key == k);
        if !has(&env, OTLP_GRPC_VAR) {
            env.push((OTLP_GRPC_VAR.into(), format!("127.0.0.1:{}", free_port())));
        }
        if !has(&env, OTLP_HTTP_VAR) {
            env.push((OTLP_HTTP_VAR.into(), format!("127.0.0.1:{}", free_port())));
        }
        if !has(&env, METRICS_HOST_VAR) {
            env.push((METRICS_HOST_VAR.into(), "127.0.0.1".into()));
        }
        if !has(&env, METRICS_PORT_VAR) {
            env.push((METRICS_PORT_VAR.into(), free_port().to_string()));
        }
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let otlp_grpc_hostport = get(OTLP_GRPC_VAR);
        let metrics_port = get(METRICS_PORT_VAR)
            .parse()
            .expect("OTELCOL_METRICS_PORT is a port number");
        // Only wait for the HTTP receiver if the config has one.
        let config_text = fs::read_to_string(&config_path)
            .unwrap_or_else(|e| panic!("read collector config {}: {e}", config_path.display()));
        let otlp_http_hostport = config_text
            .contains(OTLP_HTTP_VAR)
            .then(|| get(OTLP_HTTP_VAR));

        let mut cmd = Command::new(otelcol_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .current_dir(dir.path());
        remove_inherited_otelcol_vars(&mut cmd);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let child = spawn_logged(cmd, &log_path);
        let mut c = Collector {
            config_path,
            env,
            otlp_grpc_hostport,
            otlp_http_hostport,
            metrics_port,
            log_path,
            child: Some(child),
            _dir: dir,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ports =
            vec![endpoint_port(&self.otlp_grpc_hostport).expect("OTLP gRPC endpoint has a port")];
        if let Some(h) = &self.otlp_http_hostport {
            ports.push(endpoint_port(h).expect("OTLP HTTP endpoint has a port"));
        }
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "otelcol-blackbox exited during start-up ({status}) with config {}; log:\n{}",
                    self.config_path.display(),
                    self.log_tail()
                );
            }
            if ports.iter().all(|p| port_open(*p)) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "otelcol-blackbox did not open its OTLP ports {ports:?} within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `otelcol-blackbox validate --config config_path` with this
    /// process's environment less its `OTELCOL_*` variables, so the
    /// defaults written in the config are what gets checked.
    pub fn validate(config_path: impl AsRef<Path>) -> Output {
        Collector::validate_with_env(config_path, &[])
    }

    /// [`Collector::validate`] with extra environment variables.
    pub fn validate_with_env(config_path: impl AsRef<Path>, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(otelcol_bin());
        cmd.arg("validate")
            .arg("--config")
            .arg(config_path.as_ref())
            .stdin(Stdio::null());
        remove_inherited_otelcol_vars(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("run otelcol-blackbox validate: {e}"))
    }

    /// OTLP/gRPC endpoint, `http://127.0.0.1:PORT` (for OTEL_EXPORTER_OTLP_ENDPOINT).
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://{}", self.otlp_grpc_hostport)
    }

    /// OTLP/HTTP base URL, `http://127.0.0.1:PORT`; panics if the config
    /// has no HTTP receiver.
    pub fn otlp_http_url(&self) -> String {
        format!(
            "http://{}",
            self.otlp_http_hostport
                .as_ref()
                .expect("this collector config has no OTLP/HTTP receiver")
        )
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last 8 KiB of the Collector's log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path, 8 * 1024)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The Collector's own Prometheus metrics (text format).
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        http_get(&url)
            .map(|r| r.body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the Collector.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "otelcol log ({}):\n{}",
                self.log_path.display(),
                file_tail(&self.log_path, 4096)
            );
        }
    }
}
