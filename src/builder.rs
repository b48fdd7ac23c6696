//! The builder: every setting, its documented default, and the `BLACKBOX_*`
//! environment variables read by [`Builder::with_default_env`].

use crate::error::BuildError;
use crate::export::Sink;
use crate::export::otlp::Budget;
use crate::export::transport::{DynExporter, ExportShared, OtlpEnv, Target};
use crate::export::{JsonFileSink, OtlpSink};
use crate::layer::RequestSpans;
use crate::recorder::{Blackbox, BlackboxGuard};
use opentelemetry_sdk::trace::SpanExporter;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The settings in force, after code, environment and defaults are combined.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) latency_threshold: Duration,
    pub(crate) window_before: Duration,
    pub(crate) window_after: Duration,
    pub(crate) max_window: Duration,
    pub(crate) buffer_memory: usize,
    pub(crate) stuck_after: Duration,
    pub(crate) max_captures_per_sec: u32,
    pub(crate) dir: PathBuf,
    pub(crate) request_spans: RequestSpans,
    pub(crate) schedule_delay: bool,
    pub(crate) disabled: bool,
    pub(crate) long_poll: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_spans_per_window: usize,
    pub(crate) baseline_ratio: f64,
    pub(crate) sampler_max_traces: usize,
    pub(crate) sampler_max_spans_per_trace: usize,
    /// The OTLP endpoint from `OTEL_EXPORTER_OTLP_*` (only read with the env).
    pub(crate) otlp: Option<OtlpEnv>,
}

/// A variable lookup set by [`Builder::with_env`].
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send>;

/// Configures and builds a [`Blackbox`].
///
/// Values set in code take precedence over the environment, which takes
/// precedence over the defaults (the `DEFAULT_*` constants on [`Blackbox`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), tokio_blackbox::BuildError> {
/// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
///     .latency_threshold(Duration::from_millis(250))
///     .window(Duration::from_secs(1), Duration::from_millis(100))
///     .buffer_memory(8 << 20)
///     .with_default_env()
///     .build()?;
/// # drop(blackbox);
/// # Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct Builder {
    latency_threshold: Option<Duration>,
    window_before: Option<Duration>,
    window_after: Option<Duration>,
    max_window: Option<Duration>,
    buffer_memory: Option<usize>,
    stuck_after: Option<Duration>,
    max_captures_per_sec: Option<u32>,
    dir: Option<PathBuf>,
    request_spans: Option<RequestSpans>,
    schedule_delay: Option<bool>,
    disabled: Option<bool>,
    long_poll: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    max_spans_per_window: Option<usize>,
    baseline_ratio: Option<f64>,
    sampler_limits: Option<(usize, usize)>,
    exporter: Option<Box<dyn DynExporter>>,
    use_env: bool,
    env: Option<EnvLookup>,
    pub(crate) sink: Option<Box<dyn Sink>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("latency_threshold", &self.latency_threshold)
            .field("window_before", &self.window_before)
            .field("window_after", &self.window_after)
            .field("buffer_memory", &self.buffer_memory)
            .field("use_env", &self.use_env)
            .finish_non_exhaustive()
    }
}

/// The environment variables read by [`Builder::with_default_env`], with what each accepts.
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "BLACKBOX_LATENCY_THRESHOLD",
        "a duration such as 250ms or 2s",
    ),
    ("BLACKBOX_WINDOW_BEFORE", "a duration such as 2s"),
    ("BLACKBOX_WINDOW_AFTER", "a duration such as 200ms"),
    (
        "BLACKBOX_BUFFER_MEMORY",
        "a size such as 16MiB, 64M or 1GiB, from 256KiB to 16GiB",
    ),
    (
        "BLACKBOX_STUCK_AFTER",
        "a duration such as 5s, at least the latency threshold",
    ),
    (
        "BLACKBOX_MAX_CAPTURES_PER_SEC",
        "a whole number, at least 1",
    ),
    ("BLACKBOX_DIR", "a directory path"),
    (
        "BLACKBOX_REQUEST_SPANS",
        "`root`, or span names and `target:PREFIX` items, comma-separated",
    ),
    ("BLACKBOX_SCHEDULE_DELAY", "true or false"),
    ("BLACKBOX_DISABLED", "true or false"),
    ("BLACKBOX_LONG_POLL", "a duration such as 10ms"),
    (
        "BLACKBOX_MAX_SPANS_PER_WINDOW",
        "a whole number of spans, at least 1",
    ),
    (
        "BLACKBOX_BASELINE_RATIO",
        "a fraction between 0 and 1, such as 0.01",
    ),
];

fn expected(var: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(v, _)| *v == var)
        .map_or("a valid value", |(_, e)| e)
}

impl Builder {
    /// Requests that last at least this long are captured.
    ///
    /// By default, this is [`Blackbox::DEFAULT_LATENCY_THRESHOLD`].
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = Some(threshold);
        self
    }

    /// How much runtime activity to keep before a slow request started and
    /// after it ended. The capture is cut `after` the request ends.
    ///
    /// By default, these are [`Blackbox::DEFAULT_WINDOW_BEFORE`] and
    /// [`Blackbox::DEFAULT_WINDOW_AFTER`].
    pub fn window(mut self, before: Duration, after: Duration) -> Self {
        self.window_before = Some(before);
        self.window_after = Some(after);
        self
    }

    /// The longest window that merging overlapping slow requests may grow to.
    ///
    /// By default, this is [`Blackbox::DEFAULT_MAX_WINDOW`].
    pub fn max_window(mut self, max: Duration) -> Self {
        self.max_window = Some(max);
        self
    }

    /// The memory every thread records into, in bytes: one bound for all
    /// events, whatever the number of threads. It is cut into 4 KiB segments;
    /// each recording thread holds one and the rest is the shared history,
    /// overwritten oldest first. A poll takes 12 bytes, so 16 MiB holds about
    /// 5 s of a process recording 300,000 events a second.
    ///
    /// By default, this is [`Blackbox::DEFAULT_BUFFER_MEMORY`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (blackbox, _guard) = tokio_blackbox::Blackbox::builder()
    ///     .buffer_memory(64 << 20)
    ///     .build()?;
    /// assert_eq!(blackbox.stats().buffer_bytes_limit, 64 << 20);
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = Some(bytes);
        self
    }

    /// A request open this long is captured while still open, its window
    /// exported with `blackbox.request.open = true`: a hung request gets a
    /// window too. At least the latency threshold.
    ///
    /// By default, ten times the latency threshold (at least 1 s).
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.stuck_after = Some(after);
        self
    }

    /// The most captures started in any one second; more slow requests are
    /// skipped and counted.
    ///
    /// By default, this is [`Blackbox::DEFAULT_MAX_CAPTURES_PER_SEC`].
    pub fn max_captures_per_sec(mut self, captures: u32) -> Self {
        self.max_captures_per_sec = Some(captures);
        self
    }

    /// Where capture files and dumps are written.
    ///
    /// By default, this is [`Blackbox::DEFAULT_DIR`].
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Which spans are requests.
    ///
    /// By default, this is [`RequestSpans::Root`].
    pub fn request_spans(mut self, spans: RequestSpans) -> Self {
        self.request_spans = Some(spans);
        self
    }

    /// Records how long each woken task waited for a worker, through Tokio's
    /// `track_task_schedule_latency`. It costs Tokio two clock reads per poll
    /// (about 50 ns), which is why it is off by default.
    ///
    /// By default, this is [`Blackbox::DEFAULT_SCHEDULE_DELAY`].
    pub fn schedule_delay(mut self, enabled: bool) -> Self {
        self.schedule_delay = Some(enabled);
        self
    }

    /// Turns the recorder off: hooks are not installed, the layer does nothing.
    ///
    /// By default, this is `false`.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// Polls longer than this are flagged as long, the signature of blocking code.
    ///
    /// By default, this is [`Blackbox::DEFAULT_LONG_POLL`].
    pub fn long_poll(mut self, limit: Duration) -> Self {
        self.long_poll = Some(limit);
        self
    }

    /// How long dropping the [`BlackboxGuard`] waits for pending captures.
    ///
    /// By default, this is [`Blackbox::DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Where captured windows go, instead of the recorder's own export
    /// pipeline. Takes precedence over [`exporter`](Builder::exporter).
    ///
    /// By default, windows become OTLP spans: sent to the endpoint of
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// when [`with_default_env`](Builder::with_default_env) finds one
    /// ([`OtlpSink`]), else appended as OTLP JSON to a file in the
    /// [`dir`](Builder::dir) ([`JsonFileSink`]). [`crate::DirSink`] keeps the
    /// binary capture files instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("blackbox-doc-sink");
    /// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder()
    ///     .sink(tokio_blackbox::DirSink::new(&dir))
    ///     .build()?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Sends the windows (and the traces kept by the
    /// [`tail_sampler`](crate::Blackbox::tail_sampler)) through `exporter`,
    /// on the recorder's export thread with a Tokio runtime of its own.
    ///
    /// By default, the exporter is `opentelemetry-otlp`'s, built from the
    /// `OTEL_EXPORTER_OTLP_*` variables when an endpoint is set.
    ///
    /// # Examples
    ///
    /// ```
    /// let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    /// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder().exporter(exporter).build()?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn exporter<E: SpanExporter + 'static>(mut self, exporter: E) -> Self {
        self.exporter = Some(Box::new(exporter));
        self
    }

    /// The most spans one window becomes; what does not fit is counted in
    /// attributes of the window and task spans.
    ///
    /// By default, this is [`Blackbox::DEFAULT_MAX_SPANS_PER_WINDOW`].
    pub fn max_spans_per_window(mut self, spans: usize) -> Self {
        self.max_spans_per_window = Some(spans);
        self
    }

    /// The fraction of fast, error-free traces the
    /// [`tail_sampler`](crate::Blackbox::tail_sampler) keeps anyway, as a
    /// baseline to compare slow traces with (0 to 1, chosen by trace id).
    ///
    /// By default, this is [`Blackbox::DEFAULT_BASELINE_RATIO`].
    pub fn baseline_ratio(mut self, ratio: f64) -> Self {
        self.baseline_ratio = Some(ratio);
        self
    }

    /// The memory limits of the [`tail_sampler`](crate::Blackbox::tail_sampler):
    /// traces held at once and spans held per trace. Beyond them the oldest
    /// trace is evicted, or the span dropped, and counted.
    ///
    /// By default, these are [`Blackbox::DEFAULT_SAMPLER_MAX_TRACES`] and
    /// [`Blackbox::DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE`].
    pub fn tail_sampling_limits(mut self, traces: usize, spans_per_trace: usize) -> Self {
        self.sampler_limits = Some((traces, spans_per_trace));
        self
    }

    /// Reads the `BLACKBOX_*` environment variables for every setting not set
    /// in code. A malformed value makes [`build`](Builder::build) fail with
    /// [`BuildError::InvalidEnv`], naming the variable; it never falls back silently.
    ///
    /// | variable | setting | accepts |
    /// |---|---|---|
    /// | `BLACKBOX_LATENCY_THRESHOLD` | [`latency_threshold`](Builder::latency_threshold) | `250ms`, `2s`, `1.5s`, `500us` |
    /// | `BLACKBOX_WINDOW_BEFORE` / `_AFTER` | [`window`](Builder::window) | a duration |
    /// | `BLACKBOX_BUFFER_MEMORY` | [`buffer_memory`](Builder::buffer_memory) | `16MiB`, `64M`, `1GiB` (256 KiB to 16 GiB) |
    /// | `BLACKBOX_STUCK_AFTER` | [`stuck_after`](Builder::stuck_after) | a duration ≥ the threshold |
    /// | `BLACKBOX_MAX_CAPTURES_PER_SEC` | [`max_captures_per_sec`](Builder::max_captures_per_sec) | a number ≥ 1 |
    /// | `BLACKBOX_DIR` | [`dir`](Builder::dir) | a path |
    /// | `BLACKBOX_REQUEST_SPANS` | [`request_spans`](Builder::request_spans) | `root` or `name,target:prefix` |
    /// | `BLACKBOX_SCHEDULE_DELAY` | [`schedule_delay`](Builder::schedule_delay) | `true`/`false` |
    /// | `BLACKBOX_DISABLED` | [`disabled`](Builder::disabled) | `true`/`false` |
    /// | `BLACKBOX_LONG_POLL` | [`long_poll`](Builder::long_poll) | a duration |
    /// | `BLACKBOX_MAX_SPANS_PER_WINDOW` | [`max_spans_per_window`](Builder::max_spans_per_window) | a number ≥ 1 |
    /// | `BLACKBOX_BASELINE_RATIO` | [`baseline_ratio`](Builder::baseline_ratio) | `0` to `1` |
    /// | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the default sink becomes [`OtlpSink`] | a URL |
    /// | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | gRPC or HTTP | `grpc` (default), `http/protobuf` |
    /// | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` | time per export try | whole milliseconds ≥ 1 (default `10000`) |
    /// | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | headers / gRPC metadata | `k=v,k2=v2`, values percent-encoded |
    /// | `OTEL_EXPORTER_OTLP_COMPRESSION`, `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION` | compression | `none` (gzip and zstd are not compiled in) |
    /// | `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`, `..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY` | TLS for an `https` gRPC endpoint | PEM file paths |
    ///
    /// These are read through the same lookup (the process environment, or
    /// [`with_env`](Builder::with_env)'s function), the `_TRACES_` variable
    /// first. `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` are read by
    /// the OpenTelemetry SDK from the process environment, as in any
    /// OpenTelemetry program.
    ///
    /// # Examples
    ///
    /// ```
    /// // SAFETY of the test: single-threaded doctest.
    /// unsafe { std::env::set_var("BLACKBOX_LATENCY_THRESHOLD", "soon") };
    /// let err = tokio_blackbox::Blackbox::builder().with_default_env().build().unwrap_err();
    /// assert!(err.to_string().contains("BLACKBOX_LATENCY_THRESHOLD"));
    /// unsafe { std::env::remove_var("BLACKBOX_LATENCY_THRESHOLD") };
    /// ```
    pub fn with_default_env(mut self) -> Self {
        self.use_env = true;
        self
    }

    /// Like [`with_default_env`](Builder::with_default_env), reading variables
    /// through `lookup` instead of the process environment (for tests, or
    /// configuration from elsewhere).
    ///
    /// # Examples
    ///
    /// ```
    /// let env = |name: &str| (name == "BLACKBOX_BUFFER_MEMORY").then(|| "lots".to_string());
    /// let err = tokio_blackbox::Blackbox::builder().with_env(env).build().unwrap_err();
    /// assert!(err.to_string().contains("BLACKBOX_BUFFER_MEMORY=\"lots\""));
    /// ```
    pub fn with_env(mut self, lookup: impl Fn(&str) -> Option<String> + Send + 'static) -> Self {
        self.use_env = true;
        self.env = Some(Box::new(lookup));
        self
    }

    /// Builds the recorder and starts its capture thread.
    ///
    /// Returns the handle and a guard; keep the guard in `main`: dropping it
    /// writes pending captures and stops the thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidEnv`] for a malformed `BLACKBOX_*` variable,
    /// [`BuildError::InvalidSetting`] for an out-of-range value set in code,
    /// [`BuildError::Thread`] if the capture thread cannot start.
    pub fn build(mut self) -> Result<(Blackbox, BlackboxGuard), BuildError> {
        let config = self.config()?;
        let export = Arc::new(ExportShared::new(config.shutdown_timeout));
        // The sink: one set in code, else the recorder's export pipeline
        // (an exporter set in code, the OTLP endpoint from the environment,
        // or the OTLP JSON file), which the tail sampler shares.
        let budget = Budget::new(config.max_spans_per_window);
        let sink: Box<dyn Sink> = match (self.sink.take(), self.exporter.take(), &config.otlp) {
            (Some(sink), _, _) => sink,
            (None, Some(exporter), _) => Box::new(OtlpSink::start(
                Target::Exporter(exporter),
                budget,
                export.clone(),
            )?),
            (None, None, Some(otlp)) => Box::new(OtlpSink::start(
                Target::Otlp(otlp.clone()),
                budget,
                export.clone(),
            )?),
            (None, None, None) => {
                Box::new(JsonFileSink::start(&config.dir, budget, export.clone())?)
            }
        };
        crate::recorder::start(config, sink, export)
    }

    pub(crate) fn config(&self) -> Result<Config, BuildError> {
        let env = |var: &'static str| -> Option<String> {
            if !self.use_env {
                return None;
            }
            match &self.env {
                Some(f) => f(var),
                None => std::env::var(var).ok(),
            }
        };
        let invalid = |var: &'static str, value: &str| BuildError::InvalidEnv {
            var,
            value: value.to_owned(),
            expected: expected(var),
        };
        macro_rules! setting {
            ($field:ident, $var:literal, $parse:expr, $default:expr) => {
                match self.$field.clone() {
                    Some(v) => v,
                    None => match env($var) {
                        Some(raw) => $parse(raw.trim()).ok_or_else(|| invalid($var, &raw))?,
                        None => $default,
                    },
                }
            };
        }
        let config = Config {
            latency_threshold: setting!(
                latency_threshold,
                "BLACKBOX_LATENCY_THRESHOLD",
                parse_duration,
                Blackbox::DEFAULT_LATENCY_THRESHOLD
            ),
            window_before: setting!(
                window_before,
                "BLACKBOX_WINDOW_BEFORE",
                parse_duration,
                Blackbox::DEFAULT_WINDOW_BEFORE
            ),
            window_after: setting!(
                window_after,
                "BLACKBOX_WINDOW_AFTER",
                parse_duration,
                Blackbox::DEFAULT_WINDOW_AFTER
            ),
            max_window: self.max_window.unwrap_or(Blackbox::DEFAULT_MAX_WINDOW),
            buffer_memory: setting!(
                buffer_memory,
                "BLACKBOX_BUFFER_MEMORY",
                |s: &str| parse_size(s).filter(|n| BUFFER_MEMORY_RANGE.contains(n)),
                Blackbox::DEFAULT_BUFFER_MEMORY
            ),
            stuck_after: Duration::ZERO, // set below, from the threshold
            max_captures_per_sec: setting!(
                max_captures_per_sec,
                "BLACKBOX_MAX_CAPTURES_PER_SEC",
                |s: &str| s.parse::<u32>().ok().filter(|&n| n >= 1),
                Blackbox::DEFAULT_MAX_CAPTURES_PER_SEC
            ),
            dir: setting!(
                dir,
                "BLACKBOX_DIR",
                |s: &str| (!s.is_empty()).then(|| PathBuf::from(s)),
                PathBuf::from(Blackbox::DEFAULT_DIR)
            ),
            request_spans: setting!(
                request_spans,
                "BLACKBOX_REQUEST_SPANS",
                |s: &str| s.parse::<RequestSpans>().ok(),
                RequestSpans::Root
            ),
            schedule_delay: setting!(
                schedule_delay,
                "BLACKBOX_SCHEDULE_DELAY",
                parse_bool,
                Blackbox::DEFAULT_SCHEDULE_DELAY
            ),
            disabled: setting!(disabled, "BLACKBOX_DISABLED", parse_bool, false),
            long_poll: setting!(
                long_poll,
                "BLACKBOX_LONG_POLL",
                parse_duration,
                Blackbox::DEFAULT_LONG_POLL
            ),
            queue_capacity: Blackbox::DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout: self
                .shutdown_timeout
                .unwrap_or(Blackbox::DEFAULT_SHUTDOWN_TIMEOUT),
            max_spans_per_window: setting!(
                max_spans_per_window,
                "BLACKBOX_MAX_SPANS_PER_WINDOW",
                |s: &str| s.parse::<usize>().ok().filter(|&n| n >= 1),
                Blackbox::DEFAULT_MAX_SPANS_PER_WINDOW
            ),
            baseline_ratio: setting!(
                baseline_ratio,
                "BLACKBOX_BASELINE_RATIO",
                |s: &str| s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)),
                Blackbox::DEFAULT_BASELINE_RATIO
            ),
            sampler_max_traces: self
                .sampler_limits
                .map_or(Blackbox::DEFAULT_SAMPLER_MAX_TRACES, |l| l.0),
            sampler_max_spans_per_trace: self
                .sampler_limits
                .map_or(Blackbox::DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE, |l| l.1),
            // Only with the environment (values set in code are the exporter).
            otlp: if self.use_env {
                OtlpEnv::read(env)?
            } else {
                None
            },
        };
        let bad = |setting: &'static str, value: String, expected: &'static str| {
            Err(BuildError::InvalidSetting {
                setting,
                value,
                expected,
            })
        };
        // The per-thread rings are gone: say what replaced them.
        for old in ["BLACKBOX_EVENTS_PER_THREAD", "BLACKBOX_MAX_THREADS"] {
            if let Some(value) = env(old) {
                return Err(BuildError::RemovedEnv {
                    var: old,
                    value,
                    instead: "BLACKBOX_BUFFER_MEMORY (one memory bound for all threads, such as 16MiB)",
                });
            }
        }
        let mut config = config;
        config.stuck_after = setting!(
            stuck_after,
            "BLACKBOX_STUCK_AFTER",
            parse_duration,
            (config.latency_threshold * 10).max(Duration::from_secs(1))
        );
        if config.stuck_after < config.latency_threshold {
            if self.stuck_after.is_none()
                && let Some(raw) = env("BLACKBOX_STUCK_AFTER")
            {
                return Err(invalid("BLACKBOX_STUCK_AFTER", &raw));
            }
            return bad(
                "stuck_after",
                format!("{:?}", config.stuck_after),
                "at least the latency threshold",
            );
        }
        if config.window_before + config.window_after > config.max_window {
            return bad(
                "window",
                format!(
                    "{:?} before + {:?} after",
                    config.window_before, config.window_after
                ),
                "before + after at most the maximum window (30 s by default)",
            );
        }
        if !BUFFER_MEMORY_RANGE.contains(&config.buffer_memory) {
            return bad(
                "buffer_memory",
                config.buffer_memory.to_string(),
                "from 256 KiB to 16 GiB",
            );
        }
        if config.max_captures_per_sec == 0 {
            return bad("max_captures_per_sec", "0".into(), "at least 1");
        }
        if config.max_spans_per_window == 0 {
            return bad("max_spans_per_window", "0".into(), "at least 1");
        }
        if !(0.0..=1.0).contains(&config.baseline_ratio) {
            return bad(
                "baseline_ratio",
                config.baseline_ratio.to_string(),
                "between 0 and 1",
            );
        }
        if config.sampler_max_traces == 0 || config.sampler_max_spans_per_trace == 0 {
            return bad(
                "tail_sampling_limits",
                format!("{:?}", self.sampler_limits),
                "at least 1 trace and 1 span",
            );
        }
        if config.dir.as_os_str().is_empty() {
            return bad("dir", "\"\"".into(), "a directory path");
        }
        Ok(config)
    }
}

/// The accepted buffer memory: 256 KiB to 16 GiB.
const BUFFER_MEMORY_RANGE: std::ops::RangeInclusive<usize> = (256 << 10)..=(16 << 30);

/// Parses a size in bytes: a whole number with an optional unit, `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB` (powers of 1024; `KB`, `MB`, `GB` too), or `B`.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::parse_size;
/// assert_eq!(parse_size("16MiB"), Some(16 << 20));
/// assert_eq!(parse_size("64M"), Some(64 << 20));
/// assert_eq!(parse_size("4096"), Some(4096));
/// assert_eq!(parse_size("lots"), None);
/// assert_eq!(parse_size("99999999999G"), None); // overflows
/// ```
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1usize << shift)
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
    fn bools() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
