//! The analyzer over a dump or capture file, streamed: memory is one record
//! and one lane's pairing state, whatever the file's size.

use super::{Bounds, LaneScan, Visitor};
use crate::DumpError;
use crate::dump::{DumpReader, Part};
use crate::window::{Lane, Window};
use std::io::Read;

/// Runs every lane of a dump or capture file through the pairing rules
/// without reading the file into memory, and returns the part of the file
/// before its lanes (bounds, settings, strings, requests; no lanes).
///
/// # Errors
///
/// A [`DumpError`] with the byte offset for truncated or corrupt input.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::analysis::{self, Visitor};
/// use tokio_blackbox::dump::{self, DumpReader, FileKind};
/// use tokio_blackbox::{Event, EventKind, Lane, Poll, Window};
///
/// let mut lane = Lane::default();
/// lane.events = vec![Event::new(1, EventKind::PollStart, 3, 0), Event::new(5, EventKind::PollEnd, 3, 0)];
/// let mut w = Window::default();
/// w.to_unix_ns = 10;
/// w.lanes.push(lane);
/// let mut bytes = Vec::new();
/// dump::write_window(&mut bytes, &w, FileKind::Capture)?;
///
/// struct Busy(u64);
/// impl Visitor for Busy {
///     fn poll(&mut self, p: &Poll) { self.0 += p.duration_ns() }
/// }
/// let mut busy = Busy(0);
/// analysis::scan_dump(&mut DumpReader::new(&bytes[..])?, &mut busy)?;
/// assert_eq!(busy.0, 4);
/// # Ok::<(), tokio_blackbox::DumpError>(())
/// ```
pub fn scan_dump<R: Read>(
    reader: &mut DumpReader<R>,
    v: &mut dyn Visitor,
) -> Result<Window, DumpError> {
    let mut bounds = Bounds::default();
    let mut lane: Option<LaneScan> = None;
    let meta = reader.stream(|part| {
        match part {
            Part::Begin(meta) => {
                bounds = Bounds::of(meta);
                v.begin(meta);
            }
            Part::Lane {
                index,
                thread,
                events_lost,
            } => {
                if let Some(done) = lane.take() {
                    done.finish(v);
                }
                v.lane(&Lane {
                    index,
                    thread: thread.to_owned(),
                    events: Vec::new(),
                    events_lost,
                });
                lane = Some(LaneScan::new(index, &bounds));
            }
            Part::Events { events, .. } => {
                if let Some(scan) = lane.as_mut() {
                    for e in events {
                        scan.step(e, v);
                    }
                }
            }
        }
        Ok::<(), DumpError>(())
    })?;
    if let Some(done) = lane.take() {
        done.finish(v);
    }
    Ok(meta)
}
