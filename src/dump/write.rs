//! Writing dump and capture files.

use super::{FORMAT_MINOR, FORMAT_VERSION, FileKind, MAGIC, tag};
use crate::error::DumpError;
use crate::window::{Cut, Lane, Window};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Events per `EVENTS` record, so a reader can stream with bounded memory.
const EVENTS_PER_RECORD: usize = 16 * 1024;

/// Creates `dir` (and parents) readable by its owner only, if missing; an
/// existing directory that other users may write into is refused (they
/// could place links or files where the recorder writes), with an error
/// that says so.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is writable by other users (mode {:o}): give the recorder a private directory (BLACKBOX_DIR), or chmod go-w it",
                    dir.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Opens `path` for writing, following no symbolic link at its last
/// component, and makes its mode 0600 on Unix (also when it existed with
/// another mode). `create_new` opens only a file that did not exist.
pub(crate) fn open_private(
    path: &Path,
    append: bool,
    create_new: bool,
) -> io::Result<std::fs::File> {
    if !create_new
        && let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_symlink()
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link: the recorder does not write through links",
                path.display()
            ),
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(!create_new);
    }
    if create_new {
        // O_CREAT | O_EXCL: fails on any existing file, a link included.
        options.create_new(true);
    } else {
        options.create(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

/// Removes the oldest `prefix-<ms>-<n>.bbx` files of `dir` (captures,
/// dumps) past the newest `keep`, so a directory of them stays bounded on
/// disk. Oldest by the time in the name, then the number after it; files
/// of other names (temporary ones, the JSON traces, a user's) are left
/// alone, and a file someone else removed first is no error.
pub(crate) fn prune(dir: &Path, prefix: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<((u64, u64), std::ffi::OsString)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let key = name
                .to_str()?
                .strip_prefix(prefix)?
                .strip_prefix('-')?
                .strip_suffix(".bbx")
                .and_then(|rest| {
                    let (ms, n) = rest.split_once('-')?;
                    Some((ms.parse().ok()?, n.parse().ok()?))
                })?;
            Some((key, name))
        })
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for (_, name) in &files[..files.len() - keep] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// A temporary name beside `path` that no other writer guesses: the
/// process, a counter and the time.
fn temporary_name(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = path
        .file_name()
        .map_or_else(|| "blackbox".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{name}.{}.{}.{nanos:x}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `window` as a file at `path`, created with mode 0600 on Unix. The
/// file is written under a temporary name no one can guess or pre-place
/// (created exclusively, never through a link) and renamed, so a reader
/// never sees half a file.
pub(crate) fn write_window_file(
    path: &Path,
    window: &Window,
    kind: FileKind,
) -> Result<(), DumpError> {
    write_file(path, |out| write_window(out, window, kind))
}

/// Writes a dump of `cut` (everything in the buffer) as a file at `path`,
/// as [`write_window_file`] does, streaming: each lane is decoded as it is
/// written, a record at a time, so the file's events are never all in
/// memory. `head` gives the bounds, settings, strings and requests.
pub(crate) fn write_cut_file(
    path: &Path,
    head: &Window,
    cut: &Cut,
    kind: FileKind,
) -> Result<(), DumpError> {
    write_file(path, |out| write_cut(out, head, cut, kind))
}

/// Writes a file at `path` through `write`, under a temporary name renamed
/// once complete (see [`write_window_file`]).
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<(), DumpError>,
) -> Result<(), DumpError> {
    let tmp = temporary_name(path);
    let file = open_private(&tmp, false, true)?;
    let written = (|| {
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok::<(), DumpError>(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A string as the file holds it: at most 65,535 bytes (a 16-bit length),
/// cut at the last whole UTF-8 character, so the reader reads it back.
fn cut(s: &str) -> &[u8] {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// Writes `window` in the dump format to any writer.
///
/// # Errors
///
/// The writer's I/O error.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{Window, dump::{self, FileKind}};
/// let mut bytes = Vec::new();
/// dump::write_window(&mut bytes, &Window::default(), FileKind::Capture)?;
/// let back = dump::read_from(&bytes[..])?;
/// assert_eq!(back.window, Window::default());
/// # Ok::<(), tokio_blackbox::DumpError>(())
/// ```
pub fn write_window<W: Write>(
    out: &mut W,
    window: &Window,
    kind: FileKind,
) -> Result<(), DumpError> {
    write_head(out, window, kind)?;
    let mut payload = Vec::new();
    for lane in &window.lanes {
        lane_record(out, lane)?;
        for chunk in lane.events.chunks(EVENTS_PER_RECORD) {
            events_record(out, lane.index, chunk, &mut payload)?;
        }
    }
    record(out, tag::END, &[])?;
    out.flush()?;
    Ok(())
}

/// Writes `head` (its lanes left out) and then `cut`'s lanes, each decoded
/// as it is written: at most [`EVENTS_PER_RECORD`] events in memory.
fn write_cut<W: Write>(
    out: &mut W,
    head: &Window,
    cut: &Cut,
    kind: FileKind,
) -> Result<(), DumpError> {
    write_head(out, head, kind)?;
    let mut chunk = Vec::with_capacity(EVENTS_PER_RECORD);
    let mut payload = Vec::new();
    for (i, lane) in cut.header().lanes.iter().enumerate() {
        lane_record(out, lane)?;
        let mut failed = None;
        cut.lane_events(i, |e| {
            if failed.is_some() {
                return;
            }
            chunk.push(*e);
            if chunk.len() == EVENTS_PER_RECORD {
                failed = events_record(out, lane.index, &chunk, &mut payload).err();
                chunk.clear();
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        if !chunk.is_empty() {
            events_record(out, lane.index, &chunk, &mut payload)?;
            chunk.clear();
        }
    }
    record(out, tag::END, &[])?;
    out.flush()?;
    Ok(())
}

/// The file's header and the records before its lanes: META, STRINGS and
/// one REQUEST per slow request of `window`.
fn write_head<W: Write>(out: &mut W, window: &Window, kind: FileKind) -> Result<(), DumpError> {
    let mut header = Vec::with_capacity(super::HEADER_LEN);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
    header.push(match kind {
        FileKind::Dump => 1,
        FileKind::Capture => 2,
    });
    header.push(u8::from(window.task_hooks) | u8::from(window.schedule_delay) << 1);
    header.extend_from_slice(&[0, 0]);
    header.extend_from_slice(&crate::clock::unix_now_ns().to_le_bytes());
    header.extend_from_slice(&std::process::id().to_le_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    out.write_all(&header)?;

    let mut meta = Vec::new();
    for v in [
        window.sequence,
        window.from_unix_ns,
        window.to_unix_ns,
        window.threshold.as_nanos() as u64,
        window.long_poll.as_nanos() as u64,
    ] {
        meta.extend_from_slice(&v.to_le_bytes());
    }
    record(out, tag::META, &meta)?;

    let mut strings = Vec::new();
    strings.extend_from_slice(&(window.strings.len() as u32).to_le_bytes());
    for s in &window.strings {
        let bytes = cut(s);
        strings.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        strings.extend_from_slice(bytes);
    }
    record(out, tag::STRINGS, &strings)?;

    for r in &window.requests {
        let mut p = Vec::new();
        p.extend_from_slice(&r.request_id.to_le_bytes());
        p.extend_from_slice(&r.trace_id.to_bytes());
        p.extend_from_slice(&r.span_id.to_bytes());
        p.push(u8::from(r.own_span) | u8::from(r.error) << 1 | u8::from(r.open) << 2);
        p.extend_from_slice(&r.start_unix_ns.to_le_bytes());
        p.extend_from_slice(&r.end_unix_ns.to_le_bytes());
        let name = cut(&r.name);
        p.extend_from_slice(&(name.len() as u16).to_le_bytes());
        p.extend_from_slice(name);
        record(out, tag::REQUEST, &p)?;
    }
    Ok(())
}

/// A lane's `LANE` record (its events follow in `EVENTS` records).
fn lane_record<W: Write>(out: &mut W, lane: &Lane) -> io::Result<()> {
    let mut p = Vec::new();
    p.extend_from_slice(&lane.index.to_le_bytes());
    p.extend_from_slice(&lane.events_lost.to_le_bytes());
    let name = cut(&lane.thread);
    p.extend_from_slice(&(name.len() as u16).to_le_bytes());
    p.extend_from_slice(name);
    record(out, tag::LANE, &p)
}

/// An `EVENTS` record in the compact encoding (see [`super::compact`]),
/// built in `p` (reused from record to record).
fn events_record<W: Write>(
    out: &mut W,
    lane: u32,
    events: &[crate::event::Event],
    p: &mut Vec<u8>,
) -> io::Result<()> {
    use super::compact::{SAME_TASK, has_arg, put_varint, zigzag};
    use crate::event::EventKind;
    p.clear();
    p.reserve(8 + events.len() * 6);
    p.extend_from_slice(&lane.to_le_bytes());
    p.extend_from_slice(&(events.len() as u32).to_le_bytes());
    let (mut last_ts, mut task) = (0u64, None);
    for e in events {
        let raw_kind = (e.word >> 56) as u8;
        let kind = e.kind();
        let same = kind == Some(EventKind::PollEnd) && task == Some(e.subject());
        p.push(raw_kind | if same { SAME_TASK } else { 0 });
        put_varint(p, zigzag(e.ts.wrapping_sub(last_ts) as i64));
        last_ts = e.ts;
        if !same {
            put_varint(p, e.subject());
        }
        // Unknown kinds keep their argument too, so nothing is lost.
        if kind.is_none_or(has_arg) {
            put_varint(p, u64::from(e.arg()));
        }
        if kind == Some(EventKind::PollStart) {
            task = Some(e.subject());
        }
    }
    record(out, tag::EVENTS, p)
}

fn record<W: Write>(out: &mut W, tag: u8, payload: &[u8]) -> io::Result<()> {
    out.write_all(&[tag])?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(payload)
}
