//! Export: where captured windows go, off the application's threads.
//!
//! Windows are cut and handed to a [`Sink`] on the recorder's own thread
//! (`blackbox-capture`), fed by a bounded queue: a slow sink delays captures,
//! never the application, and a full queue is counted, never waited on.
//!
//! The sinks of this crate:
//!
//! - [`OtlpSink`]: the window as OTLP spans in the slow request's trace
//!   ([`otlp`]), sent by `opentelemetry-otlp` (gRPC or HTTP/protobuf, built
//!   from the settings of [`endpoint`]) or any [`SpanExporter`] on the
//!   `blackbox-export` thread. The default when an
//!   `OTEL_EXPORTER_OTLP_*ENDPOINT` is set.
//! - [`JsonFileSink`]: the same spans appended as OTLP JSON lines under the
//!   recorder's directory by [`JsonFileExporter`] ([`json`]), on the same
//!   kind of thread. The default otherwise.
//! - [`DirSink`]: binary capture files in the dump format.
//!
//! [`TailSampler`] ([`sampling`]) keeps the application's own slow and
//! failed traces and sends them through the same export thread.
//!
//! Inside, one job per file, each importing only those before it:
//! `counters` (the stats), `split` (memory and request sizes), `queue` (the
//! bounded job queue), `shared` (what the recorder, sinks and sampler share),
//! `exporter` (the one object-safe exporter trait), `resource`, `endpoint`,
//! `json`, `pipeline` (the export thread: map, split, retry), `sink`.
//!
//! [`SpanExporter`]: opentelemetry_sdk::trace::SpanExporter

mod counters;
pub mod endpoint;
mod exporter;
pub mod json;
pub mod otlp;
mod pipeline;
mod queue;
mod resource;
pub mod sampling;
mod shared;
mod sink;
mod split;
pub mod transport;

pub use endpoint::{OtlpSettings, Protocol};
pub use json::JsonFileExporter;
pub use pipeline::RETRIES;
pub use queue::{QUEUE_CAPACITY, QUEUE_MAX_BYTES};
pub use resource::resource;
pub use sampling::TailSampler;
pub use sink::{JsonFileSink, OtlpSink};
pub use split::MAX_REQUEST_BYTES;

use crate::error::SinkError;
use crate::window::Window;
use std::path::PathBuf;

/// Receives each captured [`Window`] on the recorder's capture thread.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{Sink, SinkError, Window};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Clone, Default)]
/// struct Collect(Arc<Mutex<Vec<Window>>>);
/// impl Sink for Collect {
///     fn write(&mut self, window: &Window) -> Result<(), SinkError> {
///         self.0.lock().unwrap().push(window.clone());
///         Ok(())
///     }
/// }
/// let windows = Collect::default();
/// let (_blackbox, _guard) = tokio_blackbox::Blackbox::builder().sink(windows.clone()).build()?;
/// # Ok::<(), tokio_blackbox::BuildError>(())
/// ```
pub trait Sink: Send + 'static {
    /// Writes one window. An error is counted in
    /// [`BlackboxStats::sink_errors`](crate::BlackboxStats::sink_errors).
    fn write(&mut self, window: &Window) -> Result<(), SinkError>;

    /// Makes everything written so far durable or sent. Called on flush and shutdown.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Like [`flush`](Sink::flush), waiting at most `timeout`: the recorder's
    /// [`flush(timeout)`](crate::Blackbox::flush) passes its own. The
    /// recorder's sinks ([`OtlpSink`], [`JsonFileSink`]) honour it; by
    /// default it calls `flush`.
    fn flush_within(&mut self, timeout: std::time::Duration) -> Result<(), SinkError> {
        let _ = timeout;
        self.flush()
    }
}

/// Writes each window as a capture file (the dump format, see
/// `docs/dump-format.md`) into a directory: `capture-<unix ms>-<seq>.bbx`.
///
/// # Examples
///
/// ```
/// let dir = std::env::temp_dir().join("blackbox-doc-dirsink");
/// let sink = tokio_blackbox::DirSink::new(&dir);
/// assert_eq!(sink.dir(), dir.as_path());
/// ```
#[derive(Debug, Clone)]
pub struct DirSink {
    dir: PathBuf,
}

impl DirSink {
    /// A sink writing into `dir`, created on first write (mode 0700 on Unix).
    pub fn new(dir: impl Into<PathBuf>) -> DirSink {
        DirSink { dir: dir.into() }
    }

    /// The directory written to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Sink for DirSink {
    fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        crate::dump::create_private_dir(&self.dir)?;
        let name = format!(
            "capture-{}-{}.bbx",
            window.to_unix_ns / 1_000_000,
            window.sequence
        );
        crate::dump::write_window_file(&self.dir.join(name), window, crate::dump::FileKind::Capture)
            .map_err(SinkError::new)
    }
}
