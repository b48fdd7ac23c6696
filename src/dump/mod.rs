//! Dump and capture files: a versioned, compact binary format holding rings
//! (or one captured window) with the string table and the slow requests.
//!
//! The format is specified in `docs/dump-format.md`. In short: a 32-byte
//! header (magic `BBXDUMP\0`, major and minor version, file kind, flags,
//! creation time, process id), then records `tag:u8 len:u32 payload`, all
//! little-endian, ending with an `END` record. Readers skip records with
//! unknown tags and refuse files with a major version they do not know.
//!
//! [`read_file`] loads a whole file; [`DumpReader`] streams records with
//! bounded memory for large dumps. Neither panics on any input: bad input is
//! a [`DumpError`] with the byte offset where reading stopped.

mod read;
mod write;

pub use read::{DumpReader, Part, Record, read_file, read_from};
pub use write::write_window;
pub(crate) use write::{
    create_private_dir, open_private, prune, write_cut_file, write_window_file,
};

use std::fmt;

/// The magic bytes every dump and capture file starts with.
pub const MAGIC: [u8; 8] = *b"BBXDUMP\0";

/// The format's major version. Bump it when a reader of the previous version
/// would misread a file of the new one (a changed record layout or meaning);
/// adding a record type with a new tag only bumps [`FORMAT_MINOR`].
pub const FORMAT_VERSION: u16 = 2;

/// The format's minor version: new optional records that old readers skip.
pub const FORMAT_MINOR: u16 = 0;

/// The oldest major version this reader still reads (16-byte events).
pub const OLDEST_READABLE_VERSION: u16 = 1;

/// The compact event encoding of format version 2, shared by the writer and
/// the reader: per event `kind:u8` (bit 7: the subject is omitted, being the
/// task of the lane's last poll start in the record), the time as a zigzag
/// varint delta in ns from the previous event of the record (from 0 for the
/// first), the subject as a varint unless omitted, and the argument as a
/// varint for the kinds that have one.
pub(crate) mod compact {
    use crate::event::EventKind;

    /// Bit 7 of the kind byte: the subject is the lane's current poll task.
    pub(crate) const SAME_TASK: u8 = 0x80;

    /// Whether events of this kind carry an argument.
    pub(crate) fn has_arg(kind: EventKind) -> bool {
        kind == EventKind::PollStart || kind.has_string_arg()
    }

    pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub(crate) fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    pub(crate) fn unzigzag(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }
}

/// Size of the fixed header.
pub const HEADER_LEN: usize = 32;

/// Record tags.
pub(crate) mod tag {
    pub(crate) const META: u8 = 1;
    pub(crate) const STRINGS: u8 = 2;
    pub(crate) const LANE: u8 = 3;
    pub(crate) const EVENTS: u8 = 4;
    pub(crate) const REQUEST: u8 = 5;
    pub(crate) const END: u8 = 0xff;
}

/// Whether a file is a full dump of the rings or one captured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// All rings, written by [`Blackbox::dump`](crate::Blackbox::dump).
    Dump,
    /// One window around slow requests, written by [`DirSink`](crate::DirSink).
    Capture,
}

/// The fixed header of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// Major format version.
    pub major: u16,
    /// Minor format version.
    pub minor: u16,
    /// Dump or capture.
    pub kind: FileKind,
    /// Tokio's task hooks were compiled in.
    pub task_hooks: bool,
    /// Scheduling delays were recorded.
    pub schedule_delay: bool,
    /// When the file was written, UNIX ns.
    pub created_unix_ns: u64,
    /// The writing process.
    pub pid: u32,
}

/// A whole file, as read by [`read_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DumpFile {
    /// Dump or capture.
    pub kind: FileKind,
    /// The header.
    pub header: Header,
    /// The rings' events, strings and requests.
    pub window: crate::Window,
}

/// Why a file could not be read or written.
///
/// # Examples
///
/// ```
/// let err = tokio_blackbox::dump::read_from(&b"not a dump"[..]).unwrap_err();
/// assert_eq!(err.offset(), Some(0));
/// assert!(err.to_string().contains("byte 0"));
/// ```
pub struct DumpError(Box<DumpErrorKind>);

/// The kinds of [`DumpError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum DumpErrorKind {
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The file does not start with the magic bytes: not a blackbox file.
    NotADump {
        /// Where the mismatch is.
        offset: u64,
    },
    /// Written by a newer major version of the format.
    UnsupportedVersion {
        /// The file's major version.
        major: u16,
        /// Where the version is.
        offset: u64,
    },
    /// The file ends before `expected`.
    Truncated {
        /// Where the file ends.
        offset: u64,
        /// What was expected there.
        expected: &'static str,
    },
    /// A record's content is invalid.
    Corrupt {
        /// Where the bad content starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

impl DumpError {
    pub(crate) fn new(kind: DumpErrorKind) -> DumpError {
        DumpError(Box::new(kind))
    }

    pub(crate) fn io(e: std::io::Error) -> DumpError {
        DumpError::new(DumpErrorKind::Io(e))
    }

    /// What went wrong.
    pub fn kind(&self) -> &DumpErrorKind {
        &self.0
    }

    /// Takes the kind out.
    pub fn into_kind(self) -> DumpErrorKind {
        *self.0
    }

    /// The byte offset in the file where reading stopped, when known.
    pub fn offset(&self) -> Option<u64> {
        match &*self.0 {
            DumpErrorKind::Io(_) => None,
            DumpErrorKind::NotADump { offset }
            | DumpErrorKind::UnsupportedVersion { offset, .. }
            | DumpErrorKind::Truncated { offset, .. }
            | DumpErrorKind::Corrupt { offset, .. } => Some(*offset),
        }
    }

    /// Whether it is an I/O error.
    pub fn is_io(&self) -> bool {
        matches!(&*self.0, DumpErrorKind::Io(_))
    }
}

impl fmt::Debug for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            DumpErrorKind::Io(e) => write!(f, "i/o error: {e}"),
            DumpErrorKind::NotADump { offset } => write!(
                f,
                "not a blackbox dump or capture file: at byte {offset}, expected the magic bytes \"BBXDUMP\\0\""
            ),
            DumpErrorKind::UnsupportedVersion { major, offset } => write!(
                f,
                "unsupported format version {major} at byte {offset}: expected version {OLDEST_READABLE_VERSION} to {FORMAT_VERSION} (upgrade tokio-blackbox to read it)"
            ),
            DumpErrorKind::Truncated { offset, expected } => {
                write!(f, "file truncated at byte {offset}: expected {expected}")
            }
            DumpErrorKind::Corrupt { offset, what } => {
                write!(f, "corrupt file at byte {offset}: {what}")
            }
        }
    }
}

impl std::error::Error for DumpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            DumpErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for DumpError {
    fn from(e: std::io::Error) -> DumpError {
        DumpError::io(e)
    }
}
