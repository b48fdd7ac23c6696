//! The recorder's sinks that export: [`OtlpSink`] and [`JsonFileSink`], each
//! a handle on an export [`Pipeline`] with its exporter.

use super::endpoint::OtlpSettings;
use super::json::JsonFileExporter;
use super::otlp::Budget;
use super::pipeline::{Pipeline, Target};
use super::shared::ExportShared;
use super::sink::Sink;
use crate::error::{BuildError, SinkError};
use crate::window::{Cut, Window};
use opentelemetry_sdk::trace::SpanExporter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
/// # #[cfg(feature = "testing")] {
/// use opentelemetry_sdk::trace::InMemorySpanExporter;
/// use tokio_blackbox::{OtlpSink, Sink};
///
/// let exporter = InMemorySpanExporter::default();
/// let mut sink = OtlpSink::with_exporter(exporter.clone())?;
/// // A synthetic window (the `testing` feature).
/// let window = tokio_blackbox::export::testing::window(2, 2, 1);
/// sink.write(&window)?;
/// sink.flush()?;
/// assert!(exporter.get_finished_spans()?.iter().any(|s| s.name == "blackbox.window"));
/// # }
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
        let env = OtlpSettings::read(|v| std::env::var(v).ok())?.ok_or(BuildError::InvalidEnv {
            var: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: String::new(),
            expected: "an OTLP endpoint such as http://localhost:4317",
        })?;
        OtlpSink::start(
            Target::Otlp(Box::new(env)),
            Budget::default(),
            Arc::default(),
        )
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

    /// An OTLP sink exporting through `exporter`, each window mapped to at
    /// most `budget`'s spans ([`with_exporter`](OtlpSink::with_exporter)
    /// uses the default, [`Budget::DEFAULT_MAX_SPANS`]).
    ///
    /// # Errors
    ///
    /// [`BuildError::Thread`] when the export thread cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::export::otlp::Budget;
    /// let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    /// // The whole picture: up to 1,000 spans a window.
    /// let _sink = tokio_blackbox::OtlpSink::with_exporter_and_budget(exporter, Budget::new(1_000))?;
    /// # Ok::<(), tokio_blackbox::BuildError>(())
    /// ```
    pub fn with_exporter_and_budget<E: SpanExporter + 'static>(
        exporter: E,
        budget: Budget,
    ) -> Result<OtlpSink, BuildError> {
        OtlpSink::start(Target::Exporter(Box::new(exporter)), budget, Arc::default())
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

/// Both sinks hand windows to their export pipeline, the one place that
/// queues, maps and sends them.
macro_rules! pipeline_sink {
    ($($sink:ty),*) => {$(
        impl Sink for $sink {
            fn write(&mut self, window: &Window) -> Result<(), SinkError> {
                self.pipeline.write(window)
            }

            fn write_cut(&mut self, cut: Cut) -> Result<(), SinkError> {
                self.pipeline.write_cut(cut)
            }

            fn flush(&mut self) -> Result<(), SinkError> {
                self.pipeline.flush()
            }

            fn flush_within(&mut self, timeout: std::time::Duration) -> Result<(), SinkError> {
                self.pipeline.flush_within(timeout)
            }
        }
    )*};
}

pipeline_sink!(OtlpSink, JsonFileSink);

/// Appends each captured window to `<dir>/traces.otlp.jsonl` as OTLP JSON: one
/// `ExportTraceServiceRequest` per line, in the standard protobuf JSON mapping,
/// so the Collector's `otlpjsonfile` receiver can read it back.
///
/// This is the default sink when no OTLP endpoint is configured; the
/// directory is [`Builder::dir`](crate::Builder::dir) (`BLACKBOX_DIR`),
/// created with mode 0700 and the file with mode 0600 on Unix.
///
/// The file is rotated by size: before a line would take it past
/// [`DEFAULT_MAX_FILE_BYTES`](super::json::DEFAULT_MAX_FILE_BYTES) (64 MiB) it becomes `traces.otlp.jsonl.1`
/// (`.1` becomes `.2`, and so on), and only [`DEFAULT_MAX_FILES`](super::json::DEFAULT_MAX_FILES) files are
/// kept (4, the current one included), so the directory holds at most
/// 256 MiB of OTLP JSON. Each kept file holds whole lines; the `blackbox`
/// command reads any of them. [`JsonFileSink::with_rotation`] sets other limits.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use tokio_blackbox::{JsonFileSink, Sink};
///
/// let dir = std::env::temp_dir().join(format!("blackbox-doc-json-{}", std::process::id()));
/// let mut sink = JsonFileSink::new(&dir)?;
/// // A synthetic window (the `testing` feature).
/// sink.write(&tokio_blackbox::export::testing::window(1, 1, 1))?;
/// sink.flush()?;
/// let text = std::fs::read_to_string(sink.path())?;
/// assert_eq!(text.lines().count(), 1);
/// assert!(text.contains("\"resourceSpans\""));
/// # std::fs::remove_dir_all(&dir)?;
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonFileSink {
    pipeline: Pipeline,
    path: PathBuf,
}

impl JsonFileSink {
    /// A sink appending to `dir/traces.otlp.jsonl`.
    ///
    /// # Errors
    ///
    /// [`BuildError::Thread`] when the export thread cannot start.
    pub fn new(dir: impl AsRef<Path>) -> Result<JsonFileSink, BuildError> {
        JsonFileSink::start(dir.as_ref(), Budget::default(), Arc::default())
    }

    pub(crate) fn start(
        dir: &Path,
        budget: Budget,
        shared: Arc<ExportShared>,
    ) -> Result<JsonFileSink, BuildError> {
        JsonFileSink::start_with(JsonFileExporter::new(dir), budget, shared)
    }

    fn start_with(
        exporter: JsonFileExporter,
        budget: Budget,
        shared: Arc<ExportShared>,
    ) -> Result<JsonFileSink, BuildError> {
        let path = exporter.path().to_owned();
        let pipeline = Pipeline::start(Target::File(Box::new(exporter)), budget, shared)?;
        Ok(JsonFileSink { pipeline, path })
    }

    /// A sink appending to `dir/traces.otlp.jsonl`, rotated once it would
    /// grow past `max_file_bytes`, keeping `max_files` files.
    ///
    /// # Errors
    ///
    /// [`BuildError::Thread`] when the export thread cannot start.
    pub fn with_rotation(
        dir: impl AsRef<Path>,
        max_file_bytes: u64,
        max_files: usize,
    ) -> Result<JsonFileSink, BuildError> {
        JsonFileSink::start_with(
            JsonFileExporter::with_rotation(dir, max_file_bytes, max_files),
            Budget::default(),
            Arc::default(),
        )
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::endpoint::Protocol;
    use crate::export::otlp;
    use crate::export::tls::TlsFiles;
    use opentelemetry::Value;
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use std::sync::atomic::{AtomicU64, Ordering};

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
        let w = crate::export::testing::window(2, 2, 1);
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
        let w = crate::export::testing::window(1, 1, 1);
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
            let env = OtlpSettings {
                endpoint: "not a url".into(),
                endpoint_var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                metrics_endpoint: "not a url".into(),
                protocol,
                timeout: None,
                headers: Vec::new(),
                gzip: false,
                gzip_unless_refused: false,
                tls: TlsFiles::default(),
            };
            let err = OtlpSink::start(
                Target::Otlp(Box::new(env)),
                Budget::default(),
                Arc::default(),
            )
            .unwrap_err();
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
