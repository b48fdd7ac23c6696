//! The builder: the settings set in code, the environment lookup, and the
//! sink or exporter; [`config`](crate::config) reads and checks the settings.

use crate::config::{Overrides, RequestSpans, Settings};
use crate::error::BuildError;
use crate::export::OtlpSettings as OtlpEnv;
use crate::export::Sink;
use crate::export::exporter::DynExporter;
use crate::export::metrics;
use crate::export::otlp::Budget;
use crate::export::pipeline::Target;
use crate::export::shared::ExportShared;
use crate::export::{JsonFileSink, OtlpSink};
use crate::recorder::{Blackbox, BlackboxGuard};
use opentelemetry_sdk::trace::SpanExporter;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// The settings set in code.
    settings: Overrides,
    exporter: Option<Box<dyn DynExporter>>,
    use_env: bool,
    env: Option<EnvLookup>,
    pub(crate) sink: Option<Box<dyn Sink>>,
    resource: Option<opentelemetry_sdk::Resource>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .field("use_env", &self.use_env)
            .finish_non_exhaustive()
    }
}

impl Blackbox {
    /// A builder with every setting at its default.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Builder {
    /// Requests that last at least this long are captured.
    ///
    /// By default, this is [`Blackbox::DEFAULT_LATENCY_THRESHOLD`].
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.settings.latency_threshold = Some(threshold);
        self
    }

    /// How much runtime activity to keep before a slow request started and
    /// after it ended. The capture is cut `after` the request ends.
    ///
    /// By default, these are [`Blackbox::DEFAULT_WINDOW_BEFORE`] and
    /// [`Blackbox::DEFAULT_WINDOW_AFTER`].
    pub fn window(mut self, before: Duration, after: Duration) -> Self {
        self.settings.window_before = Some(before);
        self.settings.window_after = Some(after);
        self
    }

    /// The longest window that merging overlapping slow requests may grow to.
    ///
    /// By default, this is [`Blackbox::DEFAULT_MAX_WINDOW`].
    pub fn max_window(mut self, max: Duration) -> Self {
        self.settings.max_window = Some(max);
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
        self.settings.buffer_memory = Some(bytes);
        self
    }

    /// A request open this long is captured while still open, its window
    /// exported with `blackbox.request.open = true`: a hung request gets a
    /// window too. At least the latency threshold.
    ///
    /// By default, ten times the latency threshold (at least 1 s).
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.settings.stuck_after = Some(after);
        self
    }

    /// The most captures started in any one second; more slow requests are
    /// skipped and counted.
    ///
    /// By default, this is [`Blackbox::DEFAULT_MAX_CAPTURES_PER_SEC`].
    pub fn max_captures_per_sec(mut self, captures: u32) -> Self {
        self.settings.max_captures_per_sec = Some(captures);
        self
    }

    /// Where capture files and dumps are written.
    ///
    /// By default, this is [`Blackbox::DEFAULT_DIR`].
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.dir = Some(dir.into());
        self
    }

    /// Which spans are requests.
    ///
    /// By default, this is [`RequestSpans::Auto`].
    pub fn request_spans(mut self, spans: RequestSpans) -> Self {
        self.settings.request_spans = Some(spans);
        self
    }

    /// Records how long each woken task waited for a worker, through Tokio's
    /// `track_task_schedule_latency`. It costs Tokio two clock reads per poll
    /// (about 50 ns), which is why it is off by default.
    ///
    /// By default, this is [`Blackbox::DEFAULT_SCHEDULE_DELAY`].
    pub fn schedule_delay(mut self, enabled: bool) -> Self {
        self.settings.schedule_delay = Some(enabled);
        self
    }

    /// Turns the recorder off: hooks are not installed, the layer does nothing.
    ///
    /// By default, this is `false`.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.settings.disabled = Some(disabled);
        self
    }

    /// Polls longer than this are flagged as long, the signature of blocking code.
    ///
    /// By default, this is [`Blackbox::DEFAULT_LONG_POLL`].
    pub fn long_poll(mut self, limit: Duration) -> Self {
        self.settings.long_poll = Some(limit);
        self
    }

    /// How long dropping the [`BlackboxGuard`] waits for pending captures.
    ///
    /// By default, this is [`Blackbox::DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = Some(timeout);
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

    /// The application's OpenTelemetry [`Resource`](opentelemetry_sdk::Resource):
    /// windows, kept traces and the recorder's metrics are exported under
    /// it (its `service.name` set in code included), over what the
    /// environment says (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
    ///
    /// Not needed when the app's tracer provider has the
    /// [`tail_sampler`](crate::Blackbox::tail_sampler) as a span processor:
    /// the provider hands its resource to it when built.
    ///
    /// # Examples
    ///
    /// ```
    /// let resource = opentelemetry_sdk::Resource::builder().with_service_name("checkout").build();
    /// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder()
    ///     .resource(resource.clone())
    ///     .build()?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn resource(mut self, resource: opentelemetry_sdk::Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// The most spans one window becomes; what does not fit is counted in
    /// attributes of the window and task spans. The request's own tasks,
    /// its culprits and the workers come first; a larger budget shows more
    /// of the other tasks, at a few hundred bytes a span (see
    /// [`Budget`](crate::export::otlp::Budget)).
    ///
    /// By default, this is [`Blackbox::DEFAULT_MAX_SPANS_PER_WINDOW`] (200:
    /// about 64 KiB of OTLP at most).
    ///
    /// # Examples
    ///
    /// ```
    /// // The whole picture: up to 1,000 spans a window (the default before issue 25).
    /// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder()
    ///     .max_spans_per_window(1_000)
    ///     .build()?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn max_spans_per_window(mut self, spans: usize) -> Self {
        self.settings.max_spans_per_window = Some(spans);
        self
    }

    /// The CPU the recorder's own threads (capture and export) may use
    /// together on windows, as a share of one core (0.02: 2%) over any
    /// 10 s. The tail sampler's exports of the app's kept traces are not
    /// counted, nor ever shed for it.
    ///
    /// In an incident every request is slow: past the budget, a window due
    /// is shed and counted ([`BlackboxStats::windows_shed`](crate::BlackboxStats::windows_shed)),
    /// and a window larger than the budget affords is cut to its first
    /// request's span (the rest counted as lost events). The first windows
    /// of an incident are paid from a full budget. A share outside (0, 1]
    /// is refused by [`build`](Self::build).
    ///
    /// By default, this is [`Blackbox::DEFAULT_CPU_BUDGET`] (`BLACKBOX_CPU_BUDGET`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder()
    ///     .cpu_budget(0.05) // 5% of one core
    ///     .build()?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn cpu_budget(mut self, share_of_one_core: f64) -> Self {
        self.settings.cpu_budget = Some(share_of_one_core);
        self
    }

    /// The fraction of fast, error-free traces the
    /// [`tail_sampler`](crate::Blackbox::tail_sampler) keeps anyway, as a
    /// baseline to compare slow traces with (0 to 1, chosen by trace id).
    ///
    /// By default, this is [`Blackbox::DEFAULT_BASELINE_RATIO`].
    pub fn baseline_ratio(mut self, ratio: f64) -> Self {
        self.settings.baseline_ratio = Some(ratio);
        self
    }

    /// The memory limits of the [`tail_sampler`](crate::Blackbox::tail_sampler):
    /// traces held at once and spans held per trace. Beyond them the oldest
    /// trace is evicted, or the span dropped, and counted.
    ///
    /// By default, these are [`Blackbox::DEFAULT_SAMPLER_MAX_TRACES`] and
    /// [`Blackbox::DEFAULT_SAMPLER_MAX_SPANS_PER_TRACE`].
    pub fn tail_sampling_limits(mut self, traces: usize, spans_per_trace: usize) -> Self {
        self.settings.sampler_max_traces = Some(traces);
        self.settings.sampler_max_spans_per_trace = Some(spans_per_trace);
        self
    }

    /// Reads the `BLACKBOX_*` environment variables for every setting not set
    /// in code. A malformed value makes [`build`](Builder::build) fail with
    /// [`BuildError::InvalidEnv`], naming the variable; it never falls back silently.
    ///
    /// Every variable, with its default and what it accepts, is in the
    /// [settings table](crate#configuration) (generated from the one table
    /// the recorder reads them by). The `OTEL_EXPORTER_OTLP_*` variables
    /// choose and configure the exporter.
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
        let (mut settings, otlp, metrics_interval) = self.settings()?;
        // Resolved once: a later change of the working directory moves nothing.
        if let Ok(dir) = std::path::absolute(&settings.dir) {
            settings.dir = dir;
        }
        let metrics = otlp.clone().zip(metrics_interval);
        let export = Arc::new(ExportShared::new(
            settings.shutdown_timeout,
            Arc::new(crate::cpu_budget::CpuBudget::new(settings.cpu_budget)),
        ));
        if let Some(resource) = &self.resource {
            export.set_app_resource(resource);
        }
        // The sink: one set in code, else the recorder's export pipeline
        // (an exporter set in code, the OTLP endpoint from the environment,
        // or the OTLP JSON file), which the tail sampler shares.
        let budget = Budget::new(settings.max_spans_per_window);
        let sink: Box<dyn Sink> = match (self.sink.take(), self.exporter.take(), otlp) {
            (Some(sink), _, _) => sink,
            (None, Some(exporter), _) => Box::new(OtlpSink::start(
                Target::Exporter(exporter),
                budget,
                export.clone(),
            )?),
            (None, None, Some(otlp)) => Box::new(OtlpSink::start(
                Target::Otlp(Box::new(otlp)),
                budget,
                export.clone(),
            )?),
            (None, None, None) => {
                Box::new(JsonFileSink::start(&settings.dir, budget, export.clone())?)
            }
        };
        let export_shared = export.clone();
        let (blackbox, guard) = crate::recorder::start(settings, sink, export)?;
        // With an endpoint, the recorder's own counters leave as metrics too.
        let guard = match metrics {
            Some((otlp, interval)) => {
                let stats = blackbox.clone();
                let source: metrics::Source = Arc::new(move || stats.stats().metrics());
                guard.with_metrics(metrics::MetricsExport::start(
                    &otlp,
                    export_shared.resource(),
                    interval,
                    source,
                    export_shared,
                )?)
            }
            None => guard,
        };
        Ok((blackbox, guard))
    }

    /// The settings in force, the OTLP endpoint from the environment (only
    /// read with it: values set in code are the exporter) and the metrics
    /// export interval (`None`: `OTEL_METRICS_EXPORTER=none`).
    #[allow(clippy::type_complexity)]
    fn settings(&self) -> Result<(Settings, Option<OtlpEnv>, Option<Duration>), BuildError> {
        let env = |var: &'static str| -> Option<String> {
            if !self.use_env {
                return None;
            }
            match &self.env {
                Some(f) => f(var),
                None => std::env::var(var).ok(),
            }
        };
        let settings = Settings::resolve(&self.settings, &env)?;
        let (otlp, metrics) = if self.use_env {
            (OtlpEnv::read(env)?, metrics::interval_from(env)?)
        } else {
            (None, None)
        };
        Ok((settings, otlp, metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's default span budget is the export's.
    #[test]
    fn the_default_span_budget_is_the_exports() {
        assert_eq!(
            crate::config::DEFAULT_MAX_SPANS_PER_WINDOW,
            Budget::DEFAULT_MAX_SPANS
        );
    }
}
