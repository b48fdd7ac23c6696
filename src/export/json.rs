//! The embedded default sink: captures as OTLP JSON lines in a file.
//!
//! With no OTLP endpoint configured, each capture (and each trace kept by the
//! tail sampler) is appended to `<BLACKBOX_DIR>/traces.otlp.jsonl` as one
//! `ExportTraceServiceRequest` per line, in the standard protobuf JSON mapping
//! (`opentelemetry-proto`'s `with-serde` types: hex ids, 64-bit integers as
//! strings, camelCase names). The Collector's `otlpjsonfile` receiver reads
//! such files; so does any OTLP/HTTP receiver, line by line, as
//! `application/json`. The writing happens on the export thread
//! ([`super::transport`]), never on an application thread.

use super::otlp::Budget;
use super::transport::{ExportShared, Pipeline, Target};
use crate::error::{BuildError, SinkError};
use crate::export::Sink;
use crate::window::Window;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the OTLP JSON file written into the directory.
pub const JSON_FILE_NAME: &str = "traces.otlp.jsonl";

/// Appends one `ExportTraceServiceRequest` as one line of OTLP JSON.
pub(crate) fn write_json_line(
    path: &Path,
    spans: Vec<SpanData>,
    resource: &ResourceAttributesWithSchema,
) -> std::io::Result<()> {
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, resource),
    };
    let mut line = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    if let Some(dir) = path.parent() {
        crate::dump::create_private_dir(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    // One write per line, so lines of concurrent writers do not interleave.
    opts.open(path)?.write_all(&line)
}

// === JsonFileSink ===

/// Appends each captured window to `<dir>/traces.otlp.jsonl` as OTLP JSON: one
/// `ExportTraceServiceRequest` per line, in the standard protobuf JSON mapping,
/// so the Collector's `otlpjsonfile` receiver can read it back.
///
/// This is the default sink when no OTLP endpoint is configured; the
/// directory is [`Builder::dir`](crate::Builder::dir) (`BLACKBOX_DIR`),
/// created with mode 0700 and the file with mode 0600 on Unix.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{JsonFileSink, Sink};
///
/// let dir = std::env::temp_dir().join(format!("blackbox-doc-json-{}", std::process::id()));
/// let mut sink = JsonFileSink::new(&dir)?;
/// sink.write(&tokio_blackbox::export::otlp::testing::window(1, 1, 1))?;
/// sink.flush()?;
/// let text = std::fs::read_to_string(sink.path())?;
/// assert_eq!(text.lines().count(), 1);
/// assert!(text.contains("\"resourceSpans\""));
/// # std::fs::remove_dir_all(&dir)?;
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
        let path = dir.join(JSON_FILE_NAME);
        let pipeline = Pipeline::start(Target::Json(path.clone()), budget, shared)?;
        Ok(JsonFileSink { pipeline, path })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for JsonFileSink {
    fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        self.pipeline.write(window)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.pipeline.flush()
    }
}
