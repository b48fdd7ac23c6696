//! What receives windows: the [`Sink`] trait, and [`DirSink`] (binary
//! capture files).

use crate::error::SinkError;
use crate::window::{Cut, Window};
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

    /// Writes one window as the recorder cut it, before it is decoded: the
    /// recorder calls this, not [`write`](Sink::write). By default it decodes
    /// the cut ([`Cut::to_window`], 16 bytes an event) and calls `write`. A
    /// sink that reads the events as it goes ([`Cut::header`], and
    /// [`analysis::scan_cut`](crate::analysis::scan_cut)) holds only the
    /// cut's compact form: the recorder's [`OtlpSink`](super::OtlpSink) and
    /// [`JsonFileSink`](super::JsonFileSink) do, on their export thread.
    ///
    /// A cut holds its segments out of the buffer's rotation until it is
    /// dropped (see [`Cut::BUFFER_SHARE`]): drop it once written. A sink that
    /// keeps cuts makes later ones copy their segments instead (at most half
    /// the buffer is held), and the held part records no new history.
    fn write_cut(&mut self, cut: Cut) -> Result<(), SinkError> {
        self.write(&cut.to_window())
    }

    /// Makes everything written so far durable or sent. Called on flush and shutdown.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Like [`flush`](Sink::flush), waiting at most `timeout`: the recorder's
    /// [`flush(timeout)`](crate::Blackbox::flush) passes its own. The
    /// recorder's sinks ([`OtlpSink`](super::OtlpSink), [`JsonFileSink`](super::JsonFileSink)) honour it; by
    /// default it calls `flush`.
    fn flush_within(&mut self, timeout: std::time::Duration) -> Result<(), SinkError> {
        let _ = timeout;
        self.flush()
    }
}

/// Writes each window as a capture file (the dump format, see
/// `docs/dump-format.md`) into a directory: `capture-<unix ms>-<seq>.bbx`,
/// keeping the newest [`DEFAULT_MAX_FILES`](DirSink::DEFAULT_MAX_FILES)
/// (or [`with_max_files`](DirSink::with_max_files)).
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
    max_files: usize,
}

impl DirSink {
    /// Capture files a [`DirSink`] keeps by default: the newest 64 (a
    /// capture is at most the buffer memory, 16 MiB by default).
    pub const DEFAULT_MAX_FILES: usize = 64;

    /// A sink writing into `dir`, created on first write (mode 0700 on
    /// Unix), keeping the newest [`DEFAULT_MAX_FILES`](DirSink::DEFAULT_MAX_FILES)
    /// capture files.
    pub fn new(dir: impl Into<PathBuf>) -> DirSink {
        DirSink {
            dir: dir.into(),
            max_files: Self::DEFAULT_MAX_FILES,
        }
    }

    /// Keeps the newest `files` capture files (at least one): after each
    /// write, older `capture-*.bbx` files of the directory are removed.
    ///
    /// # Examples
    ///
    /// ```
    /// let sink = tokio_blackbox::DirSink::new("/var/lib/blackbox").with_max_files(8);
    /// # let _ = sink;
    /// ```
    pub fn with_max_files(mut self, files: usize) -> DirSink {
        self.max_files = files.max(1);
        self
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
        crate::dump::write_window_file(
            &self.dir.join(name),
            window,
            crate::dump::FileKind::Capture,
        )
        .map_err(SinkError::new)?;
        crate::dump::prune(&self.dir, "capture", self.max_files);
        Ok(())
    }
}
