//! Hand-made files with huge counts and lengths: each is refused with a
//! typed error and its byte offset, and reading costs time and memory in
//! proportion to the file, not to the numbers it claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_blackbox::dump::{self, FileKind};
use tokio_blackbox::{DumpErrorKind, Window};

/// Counts live heap bytes and their peak: an allocation sized by a crafted
/// length is seen even when its pages are never touched (resident memory,
/// which this file measured before, never grew for one: issue 27, a test
/// that could not fail).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` with the caller's arguments; the
// counters are only arithmetic on the sizes the caller passed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The most heap `f` had live at once beyond what was live before it
/// (other tests of this binary run beside it: a bound, not an exact count).
fn peak_heap_of(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(before)
}

/// A valid empty capture without its END record, to append records to.
fn head() -> Vec<u8> {
    let mut bytes = Vec::new();
    dump::write_window(&mut bytes, &Window::default(), FileKind::Capture).unwrap();
    // The END record is the last 5 bytes: tag 0xff, length 0.
    assert_eq!(&bytes[bytes.len() - 5..], &[0xff, 0, 0, 0, 0]);
    bytes.truncate(bytes.len() - 5);
    bytes
}

fn record(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

fn end(out: &mut Vec<u8>) {
    record(out, 0xff, &[]);
}

fn refused(bytes: &[u8]) -> (DumpErrorKind, u64) {
    let e = dump::read_from(bytes).expect_err("a crafted file is refused");
    let offset = e.offset().expect("an offset");
    assert!(offset <= bytes.len() as u64, "{e}");
    assert!(e.to_string().contains(&format!("byte {offset}")), "{e}");
    (e.into_kind(), offset)
}

#[test]
fn a_record_claiming_64_mib_in_a_small_file_is_truncated_without_taking_64_mib() {
    let grew = peak_heap_of(|| {
        for _ in 0..50 {
            let mut f = head();
            f.push(2); // STRINGS
            f.extend_from_slice(&(64u32 << 20).to_le_bytes());
            f.extend_from_slice(&[0; 100]);
            let (kind, _) = refused(&f);
            assert!(matches!(kind, DumpErrorKind::Truncated { .. }), "{kind:?}");
        }
    });
    assert!(
        grew < 16 << 20,
        "reading 50 such files took {grew} bytes of heap"
    );
}

#[test]
fn a_string_table_past_65535_strings_is_refused() {
    // 70,000 empty strings: 2 bytes each.
    let n: u32 = 70_000;
    let mut body = n.to_le_bytes().to_vec();
    body.extend(std::iter::repeat_n(0u8, n as usize * 2));
    let mut f = head();
    record(&mut f, 2, &body);
    end(&mut f);
    let (kind, _) = refused(&f);
    assert!(matches!(kind, DumpErrorKind::Corrupt { .. }), "{kind:?}");
    // A count larger than the record could hold.
    let mut f = head();
    record(&mut f, 2, &u32::MAX.to_le_bytes());
    end(&mut f);
    assert!(matches!(refused(&f).0, DumpErrorKind::Corrupt { .. }));
}

#[test]
fn an_event_count_larger_than_the_record_is_refused() {
    let mut lane = 0u32.to_le_bytes().to_vec();
    lane.extend_from_slice(&0u64.to_le_bytes());
    lane.extend_from_slice(&1u16.to_le_bytes());
    lane.push(b't');
    let mut events = 0u32.to_le_bytes().to_vec(); // lane 0
    events.extend_from_slice(&u32::MAX.to_le_bytes()); // events promised
    events.extend_from_slice(&[2, 0, 1, 0]);
    let mut f = head();
    record(&mut f, 3, &lane);
    record(&mut f, 4, &events);
    end(&mut f);
    assert!(matches!(refused(&f).0, DumpErrorKind::Corrupt { .. }));
}

#[test]
fn a_million_lanes_read_in_linear_time() {
    // 1,000,000 LANE records, each followed by its own one-event EVENTS
    // record: finding a lane is no search, so this reads in about a second.
    let mut f = head();
    for i in 0..1_000_000u32 {
        let mut lane = i.to_le_bytes().to_vec();
        lane.extend_from_slice(&0u64.to_le_bytes());
        lane.extend_from_slice(&0u16.to_le_bytes());
        record(&mut f, 3, &lane);
        let mut events = i.to_le_bytes().to_vec();
        events.extend_from_slice(&1u32.to_le_bytes());
        events.extend_from_slice(&[6, 2]); // an unpark, 1 ns after 0
        events.push(0); // subject
        record(&mut f, 4, &events);
    }
    end(&mut f);
    let started = Instant::now();
    let file = dump::read_from(&f[..]).expect("a valid file");
    assert_eq!(file.window.lanes.len(), 1_000_000);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?} for {} bytes",
        started.elapsed(),
        f.len()
    );
    // Events of a lane declared earlier, after another lane: refused.
    let mut f = head();
    for i in 0..2u32 {
        let mut lane = i.to_le_bytes().to_vec();
        lane.extend_from_slice(&0u64.to_le_bytes());
        lane.extend_from_slice(&0u16.to_le_bytes());
        record(&mut f, 3, &lane);
    }
    let mut events = 0u32.to_le_bytes().to_vec();
    events.extend_from_slice(&0u32.to_le_bytes());
    record(&mut f, 4, &events);
    end(&mut f);
    assert!(matches!(refused(&f).0, DumpErrorKind::Corrupt { .. }));
}
