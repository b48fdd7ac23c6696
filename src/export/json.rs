//! The OTLP JSON file: captures as OTLP JSON lines, rotated by size.
//!
//! With no OTLP endpoint configured, each capture (and each trace kept by the
//! tail sampler) is appended to `<BLACKBOX_DIR>/traces.otlp.jsonl` as one
//! `ExportTraceServiceRequest` per line, in the standard protobuf JSON mapping
//! (`opentelemetry-proto`'s `with-serde` types: hex ids, 64-bit integers as
//! strings, camelCase names). The Collector's `otlpjsonfile` receiver reads
//! such files; so does any OTLP/HTTP receiver, line by line, as
//! `application/json`. [`JsonFileExporter`] writes them, a [`SpanExporter`]
//! like the network ones, run by the export thread (`blackbox-export`) for
//! [`JsonFileSink`](super::JsonFileSink),
//! never on an application thread.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The name of the OTLP JSON file written into the directory.
pub const JSON_FILE_NAME: &str = "traces.otlp.jsonl";

/// The size at which the OTLP JSON file is rotated: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// How many OTLP JSON files are kept, the current one included: 4
/// (`traces.otlp.jsonl` and `.1` to `.3`), so at most 256 MiB by default.
pub const DEFAULT_MAX_FILES: usize = 4;

/// Where the JSON lines go and how the file is rotated.
#[derive(Debug, Clone)]
struct JsonFile {
    path: PathBuf,
    /// A file is rotated before a line would take it past this size.
    max_file_bytes: u64,
    /// Files kept, the current one included (at least 1).
    max_files: usize,
}

impl JsonFile {
    /// `<path>.<n>`, the `n`-th most recent rotated file.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Rotates when appending `incoming` bytes would take the current file
    /// past the limit: `.N-1` is removed, `.k` becomes `.k+1`, the current
    /// file becomes `.1`. A line longer than the limit goes alone into a
    /// fresh file, so each file is at most `max(max_file_bytes, one line)`.
    fn rotate_for(&self, incoming: u64) -> std::io::Result<()> {
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if len == 0 || len.saturating_add(incoming) <= self.max_file_bytes {
            return Ok(());
        }
        let ignore_missing = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if self.max_files <= 1 {
            return ignore_missing(std::fs::remove_file(&self.path));
        }
        ignore_missing(std::fs::remove_file(self.rotated(self.max_files - 1)))?;
        for n in (1..self.max_files - 1).rev() {
            ignore_missing(std::fs::rename(self.rotated(n), self.rotated(n + 1)))?;
        }
        ignore_missing(std::fs::rename(&self.path, self.rotated(1)))
    }

    /// Appends one `ExportTraceServiceRequest` as one line of OTLP JSON,
    /// rotating the file first when the line would take it past its limit.
    fn write_line(
        &self,
        spans: Vec<SpanData>,
        resource: &ResourceAttributesWithSchema,
    ) -> std::io::Result<()> {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, resource),
        };
        let mut line = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            crate::dump::create_private_dir(dir)?;
        }
        self.rotate_for(line.len() as u64)?;
        // One write per line, so lines of concurrent writers do not interleave.
        let mut file = crate::dump::open_private(&self.path, true, false)?;
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&line) {
            // A partial append (a full disk, a file size limit) would leave a
            // line without its end, and the next line glued to it: one torn
            // line that spoils two. Take it back; if that fails too, end it,
            // so only this line is bad (the command skips and reports it).
            if file.set_len(before).is_err() {
                let _ = file.write_all(b"\n");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// A [`SpanExporter`] appending each batch to an OTLP JSON file as one
/// `ExportTraceServiceRequest` line, rotated by size: what [`JsonFileSink`](super::JsonFileSink)
/// runs on the export thread, like the network exporters of
/// `opentelemetry-otlp`.
///
/// The file is created with mode 0600 (its directory 0700) on Unix. Each
/// batch is one `write` of one whole line; an I/O error fails the export
/// ([`OTelSdkError::InternalFailure`]), and a line written in part (a full
/// disk) is cut off again, so the file holds whole lines only. The resource written is the one
/// given by [`SpanExporter::set_resource`] (the export thread gives
/// [`resource()`](crate::export::resource)); none before that.
///
/// # Examples
///
/// ```
/// use opentelemetry_sdk::trace::SpanExporter;
/// use tokio_blackbox::export::json::JsonFileExporter;
///
/// let dir = std::env::temp_dir().join(format!("blackbox-doc-jsonexp-{}", std::process::id()));
/// let exporter = JsonFileExporter::new(&dir);
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// rt.block_on(exporter.export(Vec::new()))?;
/// let text = std::fs::read_to_string(exporter.path())?;
/// assert_eq!(text.lines().count(), 1);
/// assert!(text.starts_with("{\"resourceSpans\":"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonFileExporter {
    file: JsonFile,
    resource: ResourceAttributesWithSchema,
}

impl JsonFileExporter {
    /// An exporter appending to `dir/traces.otlp.jsonl`, rotated at
    /// [`DEFAULT_MAX_FILE_BYTES`], keeping [`DEFAULT_MAX_FILES`] files.
    pub fn new(dir: impl AsRef<Path>) -> JsonFileExporter {
        JsonFileExporter::with_rotation(dir, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES)
    }

    /// An exporter appending to `dir/traces.otlp.jsonl`, rotated once it
    /// would grow past `max_file_bytes`, keeping `max_files` files (at least
    /// 1 byte and 1 file).
    pub fn with_rotation(
        dir: impl AsRef<Path>,
        max_file_bytes: u64,
        max_files: usize,
    ) -> JsonFileExporter {
        JsonFileExporter {
            file: JsonFile {
                path: dir.as_ref().join(JSON_FILE_NAME),
                max_file_bytes: max_file_bytes.max(1),
                max_files: max_files.max(1),
            },
            resource: ResourceAttributesWithSchema::default(),
        }
    }

    /// The file written (the current one; rotated ones add `.1`, `.2`, ...).
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

impl SpanExporter for JsonFileExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Written here, not in the future: a file append does not wait on
        // anything the runtime could run meanwhile.
        let result = self
            .file
            .write_line(batch, &self.resource)
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()));
        std::future::ready(result)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}
