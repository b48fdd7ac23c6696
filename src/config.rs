//! The settings: one table, from which everything else is made.
//!
//! Each row of [`settings!`] names a setting's field, type, default, builder
//! method and, for the settings read from the environment, its `BLACKBOX_*`
//! variable, parser and accepted form. From the table come:
//!
//! - [`Settings`] (the values in force) and [`Overrides`] (the values set in
//!   code, which the [`Builder`](crate::Builder) holds);
//! - [`Settings::resolve`]: code, else the environment, else the default,
//!   with a malformed variable a [`BuildError::InvalidEnv`] naming it;
//! - [`ENV_VARS`](crate::ENV_VARS), the variables and what each accepts;
//! - [`SETTINGS`], the documentation table; the README's settings table is
//!   generated from it, and a test fails when the README differs.
//!
//! The `OTEL_EXPORTER_OTLP_*` variables are read by the export pipeline
//! (they configure the exporter, not the recorder); their rows here are
//! documentation only, in [`OTEL_ROWS`].
//!
//! This module imports nothing of the recorder's: the layer, the capture
//! thread and the builder read it, never the other way round.

use crate::error::BuildError;
use std::path::PathBuf;
use std::time::Duration;

/// Requests at least this long are captured: 500 ms.
pub(crate) const DEFAULT_LATENCY_THRESHOLD: Duration = Duration::from_millis(500);
/// Activity kept before a slow request: 2 s.
pub(crate) const DEFAULT_WINDOW_BEFORE: Duration = Duration::from_secs(2);
/// Activity kept after a slow request: 200 ms.
pub(crate) const DEFAULT_WINDOW_AFTER: Duration = Duration::from_millis(200);
/// The longest a merged window may grow: 30 s.
pub(crate) const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(30);
/// Memory for events, all threads together: 16 MiB.
pub(crate) const DEFAULT_BUFFER_MEMORY: usize = 16 << 20;
/// Captures per second: 5.
pub(crate) const DEFAULT_MAX_CAPTURES_PER_SEC: u32 = 5;
/// Directory for capture files and dumps, relative to the working directory.
pub(crate) const DEFAULT_DIR: &str = "blackbox";
/// Scheduling delay tracking: off.
pub(crate) const DEFAULT_SCHEDULE_DELAY: bool = false;
/// Polls longer than 10 ms are flagged as long.
pub(crate) const DEFAULT_LONG_POLL: Duration = Duration::from_millis(10);
/// Slow requests waiting for the capture thread: 1,024.
pub(crate) const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// How long dropping the guard waits for pending captures: 5 s.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans per exported window: 200 (the export's `Budget::DEFAULT_MAX_SPANS`,
/// checked equal by a test of the builder, which sees both).
pub(crate) const DEFAULT_MAX_SPANS_PER_WINDOW: usize = 200;
/// Fraction of fast, fine traces the tail sampler keeps anyway: none.
pub(crate) const DEFAULT_BASELINE_RATIO: f64 = 0.0;
/// CPU the capture and export threads may use together: 2% of one core.
pub(crate) const DEFAULT_CPU_BUDGET: f64 = 0.02;
/// Traces the tail sampler holds at once: 4,096.
pub(crate) const DEFAULT_SAMPLER_MAX_TRACES: usize = 4096;
/// Spans the tail sampler holds per trace: 1,024.
pub(crate) const DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE: usize = 1024;

/// The accepted buffer memory: 256 KiB to 16 GiB.
pub(crate) const BUFFER_MEMORY_RANGE: std::ops::RangeInclusive<usize> = (256 << 10)..=(16 << 30);

/// Variables of earlier versions, refused with what replaces them.
const REMOVED_VARS: &[(&str, &str)] = &[
    (
        "BLACKBOX_EVENTS_PER_THREAD",
        "BLACKBOX_BUFFER_MEMORY (one memory bound for all threads, such as 16MiB)",
    ),
    (
        "BLACKBOX_MAX_THREADS",
        "BLACKBOX_BUFFER_MEMORY (one memory bound for all threads, such as 16MiB)",
    ),
];

/// One row of the settings table, for the documentation.
#[cfg_attr(not(test), allow(dead_code))] // read by the README test
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The environment variable, if the setting has one.
    pub(crate) var: Option<&'static str>,
    /// The builder method (with its arguments when it sets several settings).
    pub(crate) method: Option<&'static str>,
    /// The default, as written in the environment.
    pub(crate) default: &'static str,
    /// What the variable accepts (also the `expected` of its error).
    pub(crate) accepts: &'static str,
    /// What the setting does.
    pub(crate) doc: &'static str,
}

/// The table. Rows are `env` (a builder method and a `BLACKBOX_*` variable)
/// or `code` (a builder method only); an `env` row's default expression may
/// name the settings of the rows above it.
macro_rules! settings {
    (
        $(env $field:ident: $ty:ty = $default:expr;
            var $var:literal, method $method:literal, shown $shown:literal,
            parse $parse:expr, accepts $accepts:literal, doc $doc:literal;)*
        $(code $cfield:ident: $cty:ty = $cdefault:expr;
            method $cmethod:literal, shown $cshown:literal, doc $cdoc:literal;)*
    ) => {
        /// The settings in force, after code, environment and defaults are combined.
        #[derive(Debug, Clone)]
        pub(crate) struct Settings {
            $(pub(crate) $field: $ty,)*
            $(pub(crate) $cfield: $cty,)*
        }

        /// The settings set in code (`None`: not set), held by the builder.
        #[derive(Debug, Clone, Default)]
        pub(crate) struct Overrides {
            $(pub(crate) $field: Option<$ty>,)*
            $(pub(crate) $cfield: Option<$cty>,)*
        }

        /// The variables read by [`Builder::with_default_env`](crate::Builder::with_default_env),
        /// with what each accepts.
        pub const ENV_VARS: &[(&str, &str)] = &[$(($var, $accepts),)*];

        /// The settings table, `BLACKBOX_*` rows then code-only rows.
        #[cfg_attr(not(test), allow(dead_code))] // read by the README test
        pub(crate) const SETTINGS: &[Setting] = &[
            $(Setting { var: Some($var), method: Some($method), default: $shown, accepts: $accepts, doc: $doc },)*
            $(Setting { var: None, method: Some($cmethod), default: $cshown, accepts: "", doc: $cdoc },)*
        ];

        impl Settings {
            /// Each setting from code, else from `env` (when given), else its default;
            /// no validation across settings (see [`Settings::validate`]).
            fn read(
                code: &Overrides,
                env: &dyn Fn(&'static str) -> Option<String>,
            ) -> Result<Settings, BuildError> {
                $(
                    #[allow(clippy::redundant_closure_call)]
                    let $field: $ty = match code.$field.clone() {
                        Some(v) => v,
                        None => match env($var) {
                            Some(raw) => ($parse)(raw.trim()).ok_or_else(|| invalid_env($var, &raw))?,
                            None => $default,
                        },
                    };
                )*
                $(let $cfield: $cty = code.$cfield.clone().unwrap_or($cdefault);)*
                Ok(Settings { $($field,)* $($cfield,)* })
            }
        }

        /// Each `env` row's shown default, parsed, equals its default (or
        /// the row's default is computed and `None` is returned for it).
        #[cfg(test)]
        fn shown_defaults_parse() -> Vec<(&'static str, bool)> {
            let d = Settings::read(&Overrides::default(), &|_| None).expect("defaults are valid");
            vec![$((
                $var,
                #[allow(clippy::redundant_closure_call)]
                { ($parse)($shown).is_some_and(|v: $ty| v == d.$field) },
            ),)*]
        }
    };
}

settings! {
    env latency_threshold: Duration = DEFAULT_LATENCY_THRESHOLD;
        var "BLACKBOX_LATENCY_THRESHOLD", method "latency_threshold", shown "500ms",
        parse parse_duration, accepts "a duration such as 250ms or 2s",
        doc "request spans at least this long are captured";
    env window_before: Duration = DEFAULT_WINDOW_BEFORE;
        var "BLACKBOX_WINDOW_BEFORE", method "window(before, _)", shown "2s",
        parse parse_duration, accepts "a duration such as 2s",
        doc "activity kept before the slow request started";
    env window_after: Duration = DEFAULT_WINDOW_AFTER;
        var "BLACKBOX_WINDOW_AFTER", method "window(_, after)", shown "200ms",
        parse parse_duration, accepts "a duration such as 200ms",
        doc "activity kept after it ended (the capture waits this long)";
    env buffer_memory: usize = DEFAULT_BUFFER_MEMORY;
        var "BLACKBOX_BUFFER_MEMORY", method "buffer_memory", shown "16MiB",
        parse |s: &str| parse_size(s).filter(|n| BUFFER_MEMORY_RANGE.contains(n)),
        accepts "a size such as 16MiB, 64M or 1GiB (K, M, G are powers of 1024; KB, MB, GB powers of 1000), from 256KiB to 16GiB",
        doc "memory for events, all threads together: 4 KiB segments, one per recording thread, the rest the shared history, overwritten oldest first; a poll takes 12 bytes. A capture takes at most half of it (a larger window keeps its oldest part and counts the rest as lost), so a window should fit in half; its segments are held in place until it is exported, not copied. Replaces `BLACKBOX_EVENTS_PER_THREAD` and `BLACKBOX_MAX_THREADS`, which are now refused with an error saying so";
    env stuck_after: Duration = latency_threshold.saturating_mul(10).max(Duration::from_secs(1));
        var "BLACKBOX_STUCK_AFTER", method "stuck_after", shown "10 × threshold (≥ 1s)",
        parse parse_duration, accepts "a duration such as 5s, at least the latency threshold",
        doc "a request open this long is captured while still open (`blackbox.request.open = true`)";
    env max_captures_per_sec: u32 = DEFAULT_MAX_CAPTURES_PER_SEC;
        var "BLACKBOX_MAX_CAPTURES_PER_SEC", method "max_captures_per_sec", shown "5",
        parse |s: &str| s.parse::<u32>().ok().filter(|&n| n >= 1),
        accepts "a whole number, at least 1",
        doc "captures started per second; more slow requests are skipped and counted";
    env dir: PathBuf = PathBuf::from(DEFAULT_DIR);
        var "BLACKBOX_DIR", method "dir", shown "blackbox",
        parse |s: &str| (!s.is_empty()).then(|| PathBuf::from(s)),
        accepts "a directory path",
        doc "where capture files, dumps and the OTLP JSON file go (a relative path is resolved against the working directory once, when the recorder is built); created with mode 0700, refused when other users may write into it";
    env request_spans: RequestSpans = RequestSpans::Auto;
        var "BLACKBOX_REQUEST_SPANS", method "request_spans", shown "auto",
        parse |s: &str| s.parse::<RequestSpans>().ok(),
        accepts "`auto`, `root`, `server`, or span names and `target:PREFIX` items, comma-separated",
        doc "which spans are requests (`server`: root spans marked as server requests the ecosystem's way: tower-http's `TraceLayer`, `otel.kind = server`, `http.request.method` or `rpc.system`; `root`: spans with no parent but Tokio's own `runtime.spawn`, which its `tracing` feature puts around every task, unless their `otel.kind` is not `server`; `auto`: `server` once the process made a marked span, `root` until then). A request is named by its `otel.name` field when it has one, else by the span's name";
    env schedule_delay: bool = DEFAULT_SCHEDULE_DELAY;
        var "BLACKBOX_SCHEDULE_DELAY", method "schedule_delay", shown "false",
        parse parse_bool, accepts "true or false",
        doc "record how long woken tasks waited for a worker (Tokio's schedule latency; costs Tokio ~50 ns per poll)";
    env disabled: bool = false;
        var "BLACKBOX_DISABLED", method "disabled", shown "false",
        parse parse_bool, accepts "true or false",
        doc "turn the recorder off entirely";
    env long_poll: Duration = DEFAULT_LONG_POLL;
        var "BLACKBOX_LONG_POLL", method "long_poll", shown "10ms",
        parse parse_duration, accepts "a duration such as 10ms",
        doc "polls of at least this are long: flagged `blackbox.poll.long` (blocking code), and the verdict's culprits";
    env max_spans_per_window: usize = DEFAULT_MAX_SPANS_PER_WINDOW;
        var "BLACKBOX_MAX_SPANS_PER_WINDOW", method "max_spans_per_window", shown "200",
        parse |s: &str| s.parse::<usize>().ok().filter(|&n| n >= 1),
        accepts "a whole number of spans, at least 1",
        doc "span budget per window (about 64 KiB of OTLP at 200): every poll of the request's own tasks and of its culprits first, the workers, then the tasks that held workers longest; what is left out is counted in attributes. Raise it (1000 was the default before) to see more of the other tasks";
    env baseline_ratio: f64 = DEFAULT_BASELINE_RATIO;
        var "BLACKBOX_BASELINE_RATIO", method "baseline_ratio", shown "0",
        parse |s: &str| s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)),
        accepts "a fraction between 0 and 1, such as 0.01",
        doc "fraction of fast traces the tail sampler keeps anyway";
    env cpu_budget: f64 = DEFAULT_CPU_BUDGET;
        var "BLACKBOX_CPU_BUDGET", method "cpu_budget", shown "2%",
        parse parse_share, accepts "a percentage of one core, such as 2% or 0.5%, above 0% and at most 100%",
        doc "CPU the recorder's capture and export threads may use together on windows, at most this share of one core over any 10 s (the tail sampler's exports of the app's kept traces are not counted). In an incident (every request slow) the first windows are paid from a full budget; past it a window due is shed (counted in `windows_shed`), and a window larger than the budget affords is cut to its first request's span (the rest counted as lost events)";
    code max_window: Duration = DEFAULT_MAX_WINDOW;
        method "max_window", shown "30s",
        doc "the longest window that merging overlapping slow requests may grow to";
    code shutdown_timeout: Duration = DEFAULT_SHUTDOWN_TIMEOUT;
        method "shutdown_timeout", shown "5s",
        doc "how long dropping the guard waits for pending captures";
    code sampler_max_traces: usize = DEFAULT_SAMPLER_MAX_TRACES;
        method "tail_sampling_limits(traces, _)", shown "4096",
        doc "traces the tail sampler holds at once; beyond it the oldest is evicted and counted";
    code sampler_max_spans_per_trace: usize = DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE;
        method "tail_sampling_limits(_, spans)", shown "1024",
        doc "spans the tail sampler holds per trace; beyond it spans are dropped and counted";
}

/// The `OTEL_EXPORTER_OTLP_*` variables the builder's environment reading
/// passes to the export pipeline, which parses them (documentation rows).
#[cfg_attr(not(test), allow(dead_code))] // read by the README test
pub(crate) const OTEL_ROWS: &[Setting] = &[
    Setting {
        var: Some("OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        method: Some("exporter"),
        default: "none set",
        accepts: "a URL",
        doc: "where windows and kept traces are sent over OTLP; unset: OTLP JSON lines in `BLACKBOX_DIR`, rotated at 64 MiB, 4 files kept",
    },
    Setting {
        var: Some("OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        method: None,
        default: "http/protobuf",
        accepts: "`http/protobuf` or `grpc`",
        doc: "the OTLP transport (the specification's default, as the app's own SDK reads it: port 4318; gRPC on 4317)",
    },
    Setting {
        var: Some("OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
        method: None,
        default: "10000",
        accepts: "whole milliseconds, at least 1",
        doc: "time per export try",
    },
    Setting {
        var: Some("OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        method: None,
        default: "no headers",
        accepts: "`k=v,k2=v2`, values percent-encoded",
        doc: "headers, or gRPC metadata",
    },
    Setting {
        var: Some("OTEL_EXPORTER_OTLP_COMPRESSION, OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"),
        method: None,
        default: "gzip unless the endpoint refuses it (with the `gzip` feature; else none)",
        accepts: "`gzip` (the default feature `gzip`) or `none`",
        doc: "compression of the recorder's export requests. Unset, windows go gzip-compressed (about 5x smaller) and, if the endpoint refuses gzip (gRPC `Unimplemented`, HTTP 415 or 400), the same batch and every later one uncompressed; the SDK's own default is none, and its exporter is not changed. `gzip` or `none` is used as it is",
    },
    Setting {
        var: Some(
            "OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE, ..._CLIENT_CERTIFICATE, ..._CLIENT_KEY",
        ),
        method: None,
        default: "the roots of the `tls-roots` or `tls-webpki-roots` feature, no client identity",
        accepts: "PEM file paths",
        doc: "TLS for an `https` endpoint (gRPC or HTTP; needs the `tls-ring` or `tls-aws-lc` feature): extra CA, client certificate and key",
    },
    Setting {
        var: Some("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
        method: None,
        default: "beside the traces endpoint",
        accepts: "a URL",
        doc: "where the recorder's own counters go as OTLP metrics (`blackbox.*`, the counters of `stats()`); by default the traces endpoint, with `/v1/metrics` over HTTP",
    },
    Setting {
        var: Some("OTEL_METRIC_EXPORT_INTERVAL"),
        method: None,
        default: "60000",
        accepts: "whole milliseconds, at least 1",
        doc: "how often those metrics are sent (with an OTLP endpoint set)",
    },
    Setting {
        var: Some("OTEL_METRICS_EXPORTER"),
        method: None,
        default: "otlp",
        accepts: "`otlp` or `none`",
        doc: "`none` sends no metrics",
    },
];

fn invalid_env(var: &'static str, value: &str) -> BuildError {
    BuildError::InvalidEnv {
        var,
        value: value.to_owned(),
        expected: expected(var),
    }
}

/// What a variable accepts, from the table.
fn expected(var: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(v, _)| *v == var)
        .map_or("a valid value", |(_, e)| e)
}

fn invalid_setting(setting: &'static str, value: String, expected: &'static str) -> BuildError {
    BuildError::InvalidSetting {
        setting,
        value,
        expected,
    }
}

impl Settings {
    /// The settings in force: `code`, else `env` (the variables, when read),
    /// else the defaults; then checked across settings.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidEnv`] for a malformed variable,
    /// [`BuildError::RemovedEnv`] for a variable of an older version,
    /// [`BuildError::InvalidSetting`] for an out-of-range value set in code.
    pub(crate) fn resolve(
        code: &Overrides,
        env: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<Settings, BuildError> {
        let settings = Settings::read(code, env)?;
        for &(var, instead) in REMOVED_VARS {
            if let Some(value) = env(var) {
                return Err(BuildError::RemovedEnv {
                    var,
                    value,
                    instead,
                });
            }
        }
        settings.validate(code, env)?;
        Ok(settings)
    }

    /// The rules across settings, and the ranges of values set in code.
    fn validate(
        &self,
        code: &Overrides,
        env: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<(), BuildError> {
        if self.stuck_after < self.latency_threshold {
            if code.stuck_after.is_none()
                && let Some(raw) = env("BLACKBOX_STUCK_AFTER")
            {
                return Err(invalid_env("BLACKBOX_STUCK_AFTER", &raw));
            }
            return Err(invalid_setting(
                "stuck_after",
                format!("{:?}", self.stuck_after),
                "at least the latency threshold",
            ));
        }
        if self.window_before.saturating_add(self.window_after) > self.max_window {
            return Err(invalid_setting(
                "window",
                format!(
                    "{:?} before + {:?} after",
                    self.window_before, self.window_after
                ),
                "before + after at most the maximum window (30 s by default)",
            ));
        }
        if !BUFFER_MEMORY_RANGE.contains(&self.buffer_memory) {
            return Err(invalid_setting(
                "buffer_memory",
                self.buffer_memory.to_string(),
                "from 256 KiB to 16 GiB",
            ));
        }
        if self.max_captures_per_sec == 0 {
            return Err(invalid_setting(
                "max_captures_per_sec",
                "0".into(),
                "at least 1",
            ));
        }
        if self.max_spans_per_window == 0 {
            return Err(invalid_setting(
                "max_spans_per_window",
                "0".into(),
                "at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.baseline_ratio) {
            return Err(invalid_setting(
                "baseline_ratio",
                self.baseline_ratio.to_string(),
                "between 0 and 1",
            ));
        }
        if !(self.cpu_budget > 0.0 && self.cpu_budget <= 1.0) {
            return Err(invalid_setting(
                "cpu_budget",
                self.cpu_budget.to_string(),
                "a share of one core above 0 and at most 1, such as 0.02 for 2%",
            ));
        }
        if self.sampler_max_traces == 0 || self.sampler_max_spans_per_trace == 0 {
            return Err(invalid_setting(
                "tail_sampling_limits",
                format!(
                    "({}, {})",
                    self.sampler_max_traces, self.sampler_max_spans_per_trace
                ),
                "at least 1 trace and 1 span",
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return Err(invalid_setting("dir", "\"\"".into(), "a directory path"));
        }
        Ok(())
    }
}

/// The settings table in Markdown, as the README carries it between
/// [`TABLE_BEGIN`] and [`TABLE_END`].
#[cfg_attr(not(test), allow(dead_code))] // read by the README test
pub(crate) fn markdown_table() -> String {
    let mut out = String::from(
        "| variable | builder method | default | accepts | meaning |\n|---|---|---|---|---|\n",
    );
    let code = |s: &str| {
        s.split(", ")
            .map(|part| format!("`{part}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for row in SETTINGS.iter().chain(OTEL_ROWS) {
        let var = row.var.map_or_else(|| "—".to_owned(), code);
        let method = row
            .method
            .map_or_else(|| "—".to_owned(), |m| format!("`{m}`"));
        let default = if row.default.contains(' ') {
            row.default.to_owned()
        } else {
            format!("`{}`", row.default)
        };
        let accepts = if row.accepts.is_empty() {
            "in code"
        } else {
            row.accepts
        };
        out.push_str(&format!(
            "| {var} | {method} | {default} | {accepts} | {} |\n",
            row.doc
        ));
    }
    out
}

/// The line before the generated table in the README.
#[cfg_attr(not(test), allow(dead_code))] // read by the README test
pub(crate) const TABLE_BEGIN: &str = "<!-- settings table: generated from src/config.rs (BLACKBOX_BLESS=1 cargo test --lib config:: rewrites it) -->";
/// The line after it.
#[cfg_attr(not(test), allow(dead_code))] // read by the README test
pub(crate) const TABLE_END: &str = "<!-- end of settings table -->";

/// Which spans are requests.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::RequestSpans;
/// let r: RequestSpans = "request, target:my_app::handlers".parse()?;
/// assert_eq!(r, RequestSpans::Matching { names: vec!["request".into()], targets: vec!["my_app::handlers".into()] });
/// assert_eq!("root".parse::<RequestSpans>()?, RequestSpans::Root);
/// assert_eq!("auto".parse::<RequestSpans>()?, RequestSpans::default());
/// assert_eq!("server".parse::<RequestSpans>()?, RequestSpans::Server);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RequestSpans {
    /// The default: [`Server`](RequestSpans::Server) spans once the process
    /// has made one (tower-http's `TraceLayer`, `otel.kind = server`, ...),
    /// every root span as [`Root`](RequestSpans::Root) until then. So in a
    /// service that marks its requests the ecosystem's way, a cron job's or
    /// a queue consumer's root span is no request (unless it opened before
    /// the first marked request); in one whose request spans are its own
    /// plain root spans, those are.
    #[default]
    Auto,
    /// Every span with no parent. Tokio's own spans (with its `tracing`
    /// feature, a task's or `block_on`'s `runtime.spawn`) do not count as
    /// parents, and are never requests. A root span whose `otel.kind` field
    /// is not `server` (a client call, a producer) is not a request either.
    Root,
    /// Root spans marked as server requests the way the ecosystem marks
    /// them: tower-http's `TraceLayer` spans (HTTP and gRPC, target
    /// `tower_http::trace`), and spans with `otel.kind = "server"` or an
    /// `http.request.method` or `rpc.system` field (axum-tracing-opentelemetry,
    /// OpenTelemetry's semantic conventions). Other root spans (a cron job,
    /// a queue consumer's loop) are not requests.
    Server,
    /// Spans with one of these names, or whose target starts with one of these prefixes.
    Matching {
        /// Span names.
        names: Vec<String>,
        /// Target prefixes (`my_app::http` matches `my_app::http::server`).
        targets: Vec<String>,
    },
}

impl std::str::FromStr for RequestSpans {
    type Err = String;

    /// `root`, or a comma-separated list of span names and `target:PREFIX` items.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("root") {
            return Ok(RequestSpans::Root);
        }
        if s.eq_ignore_ascii_case("auto") {
            return Ok(RequestSpans::Auto);
        }
        if s.eq_ignore_ascii_case("server") {
            return Ok(RequestSpans::Server);
        }
        let (mut names, mut targets) = (Vec::new(), Vec::new());
        for item in s.split(',').map(str::trim) {
            if let Some(t) = item.strip_prefix("target:") {
                if t.trim().is_empty() {
                    return Err("an empty `target:` prefix".into());
                }
                targets.push(t.trim().to_owned());
            } else if item.is_empty() || item.contains(char::is_whitespace) {
                return Err(format!("`{item}` is not a span name"));
            } else {
                names.push(item.to_owned());
            }
        }
        Ok(RequestSpans::Matching { names, targets })
    }
}

/// Parses a size in bytes: a whole number with an optional unit, `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB` (powers of 1024), `KB`/`MB`/`GB` (powers of 1000,
/// as written: `16MB` is 16,000,000 bytes), or `B`. Case is ignored.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::parse_size;
/// assert_eq!(parse_size("16MiB"), Some(16 << 20));
/// assert_eq!(parse_size("64M"), Some(64 << 20));
/// assert_eq!(parse_size("16MB"), Some(16_000_000));
/// assert_eq!(parse_size("4096"), Some(4096));
/// assert_eq!(parse_size("lots"), None);
/// assert_eq!(parse_size("99999999999G"), None); // overflows
/// ```
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let unit: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Parses a duration such as `250ms`, `2s`, `1.5s`, `500us`, `1m` or `0`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tokio_blackbox::parse_duration;
/// assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("250"), None); // a unit is required
/// ```
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let ns_per = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let ns = value * ns_per;
    (ns.is_finite() && ns < 1e18).then(|| Duration::from_nanos(ns as u64))
}

/// Parses a share of one core given in percent (`2%`, `0.5%`, `100%`):
/// above 0 and at most 1.
fn parse_share(s: &str) -> Option<f64> {
    let pct: f64 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    (pct > 0.0 && pct <= 100.0).then_some(pct / 100.0)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500us"), Some(Duration::from_micros(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        for bad in [
            "",
            "ms",
            "1.ms",
            "-1s",
            "1 parsec",
            "1e3ms",
            "s1",
            "99999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpu_shares() {
        assert_eq!(parse_share("2%"), Some(0.02));
        assert_eq!(parse_share(" 0.5 % "), Some(0.005));
        assert_eq!(parse_share("100%"), Some(1.0));
        for bad in ["2", "0%", "150%", "-1%", "NaN%", "inf%", "%"] {
            assert_eq!(parse_share(bad), None, "{bad}");
        }
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let code = Overrides {
                cpu_budget: Some(bad),
                ..Overrides::default()
            };
            let s = Settings::read(&code, &|_| None).expect("read");
            assert!(
                s.validate(&code, &|_| None).is_err(),
                "cpu_budget({bad}) is refused"
            );
        }
    }

    #[test]
    fn bools() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn request_span_selectors_parse() {
        assert!("".parse::<RequestSpans>().is_err());
        assert!("target:".parse::<RequestSpans>().is_err());
        assert_eq!(
            "http.request".parse::<RequestSpans>(),
            Ok(RequestSpans::Matching {
                names: vec!["http.request".into()],
                targets: vec![]
            })
        );
    }

    /// The default the table shows is the default in force (parsed with
    /// the variable's own parser); only `stuck_after`'s is computed.
    #[test]
    fn shown_defaults_are_the_defaults() {
        for (var, same) in shown_defaults_parse() {
            assert_eq!(same, var != "BLACKBOX_STUCK_AFTER", "{var}'s shown default");
        }
        let d = Settings::resolve(&Overrides::default(), &|_| None).expect("defaults");
        assert_eq!(d.stuck_after, Duration::from_secs(5));
    }

    #[test]
    fn every_row_is_documented_once() {
        let mut vars: Vec<_> = ENV_VARS.iter().map(|(v, _)| *v).collect();
        vars.sort_unstable();
        vars.dedup();
        assert_eq!(vars.len(), ENV_VARS.len(), "a variable is listed twice");
        for row in SETTINGS.iter().chain(OTEL_ROWS) {
            assert!(!row.doc.is_empty() && !row.default.is_empty(), "{row:?}");
            assert!(
                !row.doc.contains('|') && !row.accepts.contains('|'),
                "{row:?}"
            );
        }
    }

    /// The README's settings table is the one generated from [`SETTINGS`]:
    /// it cannot drift. `BLACKBOX_BLESS=1` rewrites it.
    #[test]
    fn readme_table_is_generated_from_the_settings() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let begin = readme
            .find(TABLE_BEGIN)
            .expect("the README marks the settings table");
        let start = begin + TABLE_BEGIN.len() + 1;
        let end = readme[start..]
            .find(TABLE_END)
            .expect("the table's end marker")
            + start;
        let table = markdown_table();
        if readme[start..end] == table {
            return;
        }
        if std::env::var_os("BLACKBOX_BLESS").is_some() {
            let fixed = format!("{}{}{}", &readme[..start], table, &readme[end..]);
            std::fs::write(path, fixed).expect("write README.md");
            return;
        }
        panic!(
            "README.md's settings table differs from src/config.rs's; expected:\n{table}\n\
             (BLACKBOX_BLESS=1 cargo test --lib config:: rewrites it)"
        );
    }

    /// Every variable goes through the table's reading: a malformed value
    /// names the variable and what the table says it accepts.
    #[test]
    fn malformed_values_name_the_variable_and_the_accepted_form() {
        for (var, accepts) in ENV_VARS {
            let env = |v: &'static str| (v == *var).then(String::new);
            match Settings::resolve(&Overrides::default(), &env) {
                Err(BuildError::InvalidEnv {
                    var: v, expected, ..
                }) => {
                    assert_eq!((v, expected), (*var, *accepts));
                }
                other => panic!("{var}: {other:?}"),
            }
        }
    }
}
