//! Capture: the hot path. Tokio's runtime hooks and the request layer append
//! events to the calling thread's current [segment](crate::segments).
//!
//! A thread finds its segment through a thread-local of plain `Cell`s, so a
//! recording touches only memory of its own: no shared atomic, no lock, no
//! allocation. The clock is read at most once per poll:
//!
//! | event | time it keeps |
//! |---|---|
//! | poll start, park, unpark, thread start/stop, request open/close | its own clock reading |
//! | poll end | no reading: the time of the thread's next timed event (the next poll start, a park, a request event outside a poll), within a few µs on workers, which park or poll next right away; on a current-thread runtime, work the `block_on` future does between tasks counts in the previous poll |
//! | request enter, task name, task spawn inside a poll | the poll's start |
//! | request exit, task terminate inside a poll | the poll's end (as a poll end) |
//! | any of these outside a poll | its own clock reading |
//!
//! A request span left inside a poll is not written when it is left: its
//! exit waits in the thread-local state and is written with the poll's end
//! (the time it would have had anyway), or before the next other event of the
//! poll, so that a task spawned after it is not the request's. Entering the
//! span again in the same poll (an `Instrumented` future polled, then dropped)
//! cancels the waiting exit, so an enter and exit pair is written once per
//! poll however often the poll enters the span. Readers see the events they
//! always did.
//!
//! Slow paths, taken about once per 4 KiB of events: sealing a full segment
//! and claiming the next (lock-free, see [`segments`](crate::segments)), a
//! clock delta too large for 27 bits (a `TimeBase` event). Once per thread
//! and recorder: registering the thread (one lock, one allocation for its
//! name). Once per spawn location and recorder: interning it (one lock).
//! A thread-local cache and a shared lock-free table find known locations.

use crate::clock::Clock;
use crate::event::{Event, EventKind, NO_STRING};
use crate::segments::codec::{self, DELTA_NEXT, head};
use crate::segments::{Claim, SEGMENT_WORDS, Segments, Words};
use crate::sync::lock;
pub(crate) use address_table::AddressTable;
use crossbeam_utils::CachePadded;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as StdOrdering};
use std::sync::{Arc, Mutex, Weak};

/// Entries in each thread's spawn-location cache (a power of two).
const LOCATION_CACHE: usize = 256;

/// Entries in each thread's cache of named tasks (a power of two).
const NAMED_CACHE: usize = 64;
/// Span ids of Tokio's own spans seen entered on a thread (direct-mapped).
const RUNTIME_SPAN_CACHE: usize = 16;

/// The most strings the table holds: indices are 16 bits and `u16::MAX` means none.
const MAX_STRINGS: usize = NO_STRING as usize;

/// A source of unique recorder ids, so a thread can tell whose segment it holds.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(1);

/// Segment memory of recorders that were dropped, kept for the next recorder
/// of the same size. Segments are `&'static` so the hot path can hold them in
/// plain `Cell`s; memory stays bounded by the largest set of live recorders.
/// A thread may still point at a pooled segment, but only under the old
/// recorder's id, which no hook can present any more.
static POOL: Mutex<Vec<&'static Segments>> = Mutex::new(Vec::new());

// === Strings ===

/// The interned strings (spawn locations, span names) of one recorder.
#[derive(Debug)]
pub(crate) struct Strings {
    inner: Mutex<StringsInner>,
    /// Unique per table (never reused, unlike an address): the key of the
    /// threads' caches of [`Strings::intern_cached`].
    id: u64,
}

impl Default for Strings {
    fn default() -> Strings {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Strings {
            inner: Mutex::default(),
            id: NEXT.fetch_add(1, StdOrdering::Relaxed),
        }
    }
}

/// Strings each thread cached from [`Strings::intern_cached`], per table.
const CACHED_PER_TABLE: usize = 256;

thread_local! {
    /// `(table id, string) -> index`, at most [`CACHED_PER_TABLE`] strings
    /// of the most recent table a thread asked (a thread seldom serves two
    /// recorders).
    static CACHED: std::cell::RefCell<(u64, HashMap<Box<str>, u16>)> =
        std::cell::RefCell::new((0, HashMap::new()));
}

#[derive(Debug, Default)]
struct StringsInner {
    /// Shared with [`Strings::all`]'s callers for as long as they copy it,
    /// so the copy (up to 65,535 strings, once per cut) is made outside the
    /// lock that a slow request's close takes to read its name. An intern
    /// racing such a copy copies the list first (`Arc::make_mut`): rare.
    list: Arc<Vec<String>>,
    index: HashMap<String, u16>,
}

impl Strings {
    /// The index of `s`, interning it if needed; [`NO_STRING`] when the table is full.
    pub(crate) fn intern(&self, s: &str) -> u16 {
        let mut inner = lock(&self.inner);
        if let Some(&i) = inner.index.get(s) {
            return i;
        }
        if inner.list.len() >= MAX_STRINGS {
            return NO_STRING;
        }
        let i = inner.list.len() as u16;
        Arc::make_mut(&mut inner.list).push(s.to_owned());
        inner.index.insert(s.to_owned(), i);
        i
    }

    /// [`intern`](Strings::intern) through the thread's cache: no lock
    /// when this thread interned `s` before (request names from `otel.name`
    /// values, a few routes read on every request open).
    pub(crate) fn intern_cached(&self, s: &str) -> u16 {
        let hit = CACHED
            .try_with(|c| {
                let c = c.borrow();
                (c.0 == self.id).then(|| c.1.get(s).copied()).flatten()
            })
            .ok()
            .flatten();
        if let Some(i) = hit {
            return i;
        }
        let i = self.intern(s);
        if i != NO_STRING {
            let _ = CACHED.try_with(|c| {
                let mut c = c.borrow_mut();
                if c.0 != self.id || c.1.len() >= CACHED_PER_TABLE {
                    c.0 = self.id;
                    c.1.clear();
                }
                c.1.insert(s.into(), i);
            });
        }
        i
    }

    /// The string at `i` (empty for [`NO_STRING`] or an unknown index).
    pub(crate) fn get(&self, i: u16) -> String {
        lock(&self.inner)
            .list
            .get(usize::from(i))
            .cloned()
            .unwrap_or_default()
    }

    /// The first string `accept` takes, searched outside the table's lock.
    pub(crate) fn find(&self, accept: &dyn Fn(&str) -> bool) -> Option<String> {
        let list = Arc::clone(&lock(&self.inner).list);
        list.iter().find(|s| accept(s)).cloned()
    }

    /// Every string, copied outside the table's lock.
    pub(crate) fn all(&self) -> Vec<String> {
        let list = Arc::clone(&lock(&self.inner).list);
        list.as_ref().clone()
    }
}

/// How a spawn location is written in the string table: `file:line:column`.
pub(crate) fn location_string(loc: &Location<'_>) -> String {
    format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
}

// === Threads ===

/// The threads that recorded: their number (the lane) and name, and the
/// request ids and counts they hand out (see [`Capture::new_request_id`]).
#[derive(Debug, Default)]
struct Threads {
    next: AtomicU32,
    names: Mutex<HashMap<u32, ThreadEntry>>,
    /// Request ids not yet handed to a thread's block.
    next_request_id: AtomicU64,
    /// Requests opened by threads that have ended or moved to another
    /// recorder (their counters folded in), and outside any block.
    opened_elsewhere: AtomicU64,
}

#[derive(Debug)]
struct ThreadEntry {
    name: String,
    exited: bool,
    /// The thread's count of requests opened, while it writes for this recorder.
    opened: Option<&'static Counter>,
}

/// Forgets the exited threads that hold no segment any more (no event of
/// theirs is left to name).
fn forget_exited(names: &mut HashMap<u32, ThreadEntry>, present: &HashSet<u32>) {
    names.retain(|n, t| !t.exited || present.contains(n));
}

impl Threads {
    fn register(&self) -> (u32, &'static Counter) {
        let n = self.next.fetch_add(1, StdOrdering::Relaxed);
        let current = std::thread::current();
        let name = current
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{:?}", current.id()));
        let counter = lock(&FREE_COUNTERS)
            .pop()
            .unwrap_or_else(|| Box::leak(Box::new(CachePadded::new(AtomicU64::new(0)))));
        counter.store(0, StdOrdering::Relaxed);
        lock(&self.names).insert(
            n,
            ThreadEntry {
                name,
                exited: false,
                opened: Some(counter),
            },
        );
        (n, counter)
    }

    /// Thread `n` ended or moved on: its count joins `opened_elsewhere`
    /// (under the lock [`opened`](Threads::opened) sums in, so no request
    /// is counted twice or not at all) and its counter goes back to the pool.
    fn retire(&self, n: u32) {
        let mut names = lock(&self.names);
        if let Some(t) = names.get_mut(&n) {
            t.exited = true;
            if let Some(c) = t.opened.take() {
                self.opened_elsewhere
                    .fetch_add(c.load(StdOrdering::Relaxed), StdOrdering::Relaxed);
                lock(&FREE_COUNTERS).push(c);
            }
        }
    }

    /// Requests opened so far, by every thread.
    fn opened(&self) -> u64 {
        let names = lock(&self.names);
        let live: u64 = names
            .values()
            .filter_map(|t| t.opened)
            .map(|c| c.load(StdOrdering::Relaxed))
            .sum();
        live + self.opened_elsewhere.load(StdOrdering::Relaxed)
    }
}

// === Request ids ===

/// Request ids a thread takes from its recorder at once: one shared
/// read-modify-write per 256 requests a thread opens, not one per request.
/// A power of two, so a block never straddles a multiple of 2^32 (the id
/// whose low 32 bits are 0 is skipped: events carry the low 32 bits).
const ID_BLOCK: u64 = 256;

/// A thread's count of requests opened, on a line of its own: written by
/// that thread alone (a load and a store, no read-modify-write), summed by
/// [`Capture::requests_opened`].
type Counter = CachePadded<AtomicU64>;

/// Counters of threads that ended, for new threads: each is leaked once and
/// reused, so churning thread pools do not grow memory.
static FREE_COUNTERS: Mutex<Vec<&'static Counter>> = Mutex::new(Vec::new());

/// What a thread points at before it writes for a recorder (never written:
/// a thread counts only while it is its recorder's).
static NO_COUNTER: Counter = CachePadded::new(AtomicU64::new(0));

// === Thread-local state ===

/// The hot path's view of this thread. Plain `Cell`s and no destructor, so
/// reaching it is a few instructions; the lease that seals the segment when
/// the thread exits lives in [`LEASE`].
///
/// Laid out by hand (`repr(C)`), aligned to a cache line: everything a
/// poll's start and end read or write (the segment, its fill, the owner, the
/// last time, the task key, the task, the deferred exit) is in the first 64
/// bytes, one line. With a service's thousands of tasks passing through a
/// worker's L1 between two polls, each line more the hooks touch is a miss
/// more (issue 25: 1,000 tasks).
#[repr(C, align(64))]
struct Local {
    // === The first cache line: every poll's. ===
    /// Word 0 of the current segment, [`words`](Local::words)' first (the
    /// published fill, `next word | events << 16`, the writer's only copy),
    /// or of [`NO_SEGMENT`] when none: never null, always readable.
    base: Cell<*const crate::sync::AtomicU32>,
    /// The last word index of the current segment (0: none). An event of
    /// `n` words fits when `next + n - 1 <= limit`: one compare.
    limit: Cell<u32>,
    /// The current segment's index.
    segment: Cell<u32>,
    /// Which recorder's segment this thread holds (0: none).
    owner: Cell<u64>,
    /// Raw time of the last timed event.
    last: Cell<u64>,
    /// The owner's id in the high 32 bits, the high 32 bits of the task ids
    /// written last in the low ones: a poll start checks both in one
    /// compare (see [`Capture::task_key`]).
    task_key: Cell<u64>,
    /// The task being polled on this thread (0: none), set by the poll hooks.
    task: Cell<u64>,
    /// `owner` while no request exit is deferred, else 0 (no recorder's
    /// id): a poll end checks both in one compare. Set with `owner` and
    /// `deferred` (see [`Local::set_owner`], [`Local::set_deferred`]).
    end_key: Cell<u64>,
    // === The rest: spans, spawns, segment changes. ===
    /// The current segment (empty: none): its published fill (word 0),
    /// then its event words.
    words: Cell<&'static [crate::sync::AtomicU32]>,
    /// `entered`'s span id when it has exited and its exit is not written
    /// yet (0: none): the poll's end writes it, or the next other event.
    /// See [`Capture::defer_exit`].
    deferred: Cell<u64>,
    /// The thread's number in its recorder.
    thread: Cell<u32>,
    /// Segments this thread claimed, and events it wrote before the current one.
    seq: Cell<u64>,
    events_before: Cell<u64>,
    /// `(location pointer, its string index)`, direct-mapped: a spawn's
    /// location without a lookup in the shared table.
    locations: [Cell<(usize, u32)>; LOCATION_CACHE],
    /// Tasks already named on this thread, direct-mapped by task id: a
    /// name written, or a request span entered first (the reader names the
    /// task after that request).
    named: [Cell<u64>; NAMED_CACHE],
    /// Span ids of Tokio's own spans (`runtime.spawn`, with its `tracing`
    /// feature) entered on this thread, direct-mapped by id: they name no
    /// task, so a task in one is left unnamed, and every poll would look the
    /// span up again to find that out. Best effort: a reused id only skips a
    /// name.
    runtime_spans: [Cell<u64>; RUNTIME_SPAN_CACHE],
    /// The request span whose enter this thread wrote last inside a poll
    /// (span id, 0: none), and `layer tag << 32 | request id` of it.
    entered: Cell<u64>,
    entered_word: Cell<u64>,
    /// The thread's block of request ids: the next one and the block's end
    /// (equal: none left). See [`Capture::new_request_id`].
    next_id: Cell<u64>,
    ids_end: Cell<u64>,
    /// [`Segments::freed`] + 1 when this thread's last claim failed (0:
    /// it did not): until that moves, no segment can have come free, and
    /// the thread drops its events (counted) without trying again.
    starved: Cell<u64>,
    /// The thread's count of requests opened for its recorder.
    opened: Cell<&'static Counter>,
}

// The poll path's fields fit the first line (loom's atomics are larger).
#[cfg(not(blackbox_loom))]
const _: () = assert!(std::mem::offset_of!(Local, end_key) + 8 <= 64);

/// What a thread without a segment points at: a fill whose next word (1)
/// is past its limit (0), so no write fits; never written.
#[cfg(not(blackbox_loom))]
static NO_SEGMENT: [crate::sync::AtomicU32; 1] = [crate::sync::AtomicU32::new(1)];

#[cfg(not(blackbox_loom))]
fn no_segment() -> *const crate::sync::AtomicU32 {
    NO_SEGMENT.as_ptr()
}

/// Under loom, atomics are made inside a model: one per thread state, leaked.
#[cfg(blackbox_loom)]
fn no_segment() -> *const crate::sync::AtomicU32 {
    Box::leak(Box::new([crate::sync::AtomicU32::new(1)])).as_ptr()
}

impl Local {
    /// The current segment's fill word (word 0), or [`NO_SEGMENT`]'s.
    #[allow(unsafe_code)]
    #[inline(always)]
    fn fill_word(&self) -> &'static crate::sync::AtomicU32 {
        // SAFETY: `base` is always the first word of a segment slice of a
        // `Segments` (leaked, never freed) or of `NO_SEGMENT` (a static, or
        // leaked under loom): see `set_segment` and `clear_segment`.
        unsafe { &*self.base.get() }
    }

    /// The current segment's published fill (`next | events << 16`).
    #[inline(always)]
    fn fill(&self) -> u32 {
        self.fill_word().load(crate::sync::Ordering::Relaxed)
    }

    /// Makes `words` (a segment: its fill, then its events) the current one.
    fn set_segment(&self, words: &'static [crate::sync::AtomicU32]) {
        debug_assert!(!words.is_empty() && words.len() <= 0xffff);
        self.words.set(words);
        self.base.set(words.as_ptr());
        self.limit.set(words.len() as u32 - 1);
    }

    /// The thread holds no segment.
    fn clear_segment(&self) {
        self.words.set(&[]);
        self.base.set(no_segment());
        self.limit.set(0);
    }

    /// Makes `id` the recorder this thread writes for.
    #[inline(always)]
    fn set_owner(&self, id: u64) {
        self.owner.set(id);
        self.end_key
            .set(if self.deferred.get() == 0 { id } else { 0 });
    }

    /// Defers the exit of span `span` (0: none deferred).
    #[inline(always)]
    fn set_deferred(&self, span: u64) {
        self.deferred.set(span);
        self.end_key
            .set(if span == 0 { self.owner.get() } else { 0 });
    }

    /// Hands out request id `id` of the thread's block and counts the open.
    #[inline(always)]
    fn hand_out(&self, id: u64) -> u64 {
        self.next_id.set(id + 1);
        let c = self.opened.get();
        c.store(c.load(StdOrdering::Relaxed) + 1, StdOrdering::Relaxed);
        id
    }

    /// Remembers the request span whose enter was just written in a poll.
    #[inline(always)]
    fn set_entered(&self, span: u64, tag: u16, request: u64) {
        self.entered.set(span);
        self.entered_word
            .set(u64::from(tag) << 32 | request & 0xffff_ffff);
    }

    /// Whether the span entered last belongs to the layer tagged `tag`.
    #[inline(always)]
    fn entered_by(&self, tag: u16) -> bool {
        (self.entered_word.get() >> 32) as u16 == tag
    }

    /// The deferred exit's two words (see [`Capture::defer_exit`]).
    #[inline(always)]
    fn deferred_exit_words(&self) -> [u32; 2] {
        [
            head(codec::K_REQ_EXIT, DELTA_NEXT),
            self.entered_word.get() as u32,
        ]
    }

    /// The deferred exit is written: nothing waits, no span is entered.
    #[inline(always)]
    fn exit_written(&self) {
        self.set_deferred(0);
        self.entered.set(0);
    }

    /// Writes the deferred exit, if any, on the fast path; `false` when it
    /// waits still (the segment is full).
    #[inline(always)]
    fn put_deferred_exit(&self) -> bool {
        if self.deferred.get() == 0 {
            return true;
        }
        let ok = put(self, self.deferred_exit_words());
        if ok {
            self.exit_written();
        }
        ok
    }

    /// Writes `words(delta)`, stamped at `now` (a clock reading of the
    /// event's own), when `now` is within a delta of the thread's last time
    /// and the words fit; `false` otherwise (the general path).
    #[inline(always)]
    fn put_at<const N: usize>(&self, now: u64, words: impl FnOnce(u64) -> [u32; N]) -> bool {
        let d = now.wrapping_sub(self.last.get());
        if d >= DELTA_NEXT || !put(self, words(d)) {
            return false;
        }
        self.last.set(now);
        true
    }

    /// High 32 bits of the task ids written last.
    #[inline(always)]
    fn task_high(&self) -> u32 {
        self.task_key.get() as u32
    }

    #[inline(always)]
    fn set_task_high(&self, high: u32) {
        self.task_key
            .set(self.task_key.get() & !0xffff_ffff | u64::from(high));
    }
}

/// Seals the thread's segment and marks it exited when the thread exits or
/// moves to another recorder.
struct Lease {
    shared: Weak<Shared>,
    thread: u32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let _ = LOCAL.try_with(|l| {
            if l.owner.get() == shared.id {
                if !l.words.get().is_empty() {
                    shared.segments.seal(l.segment.get(), l.last.get());
                    l.clear_segment();
                }
                // The thread writes for nobody now: an event after this
                // (from a thread-local destructor that runs later) goes
                // through `adopt`, which finds the lease gone and drops
                // it, counted, instead of claiming a segment no lease
                // would ever seal.
                l.set_owner(0);
                // Its counter goes back to the pool below: no more counting.
                l.opened.set(&NO_COUNTER);
                l.next_id.set(0);
                l.ids_end.set(0);
            }
        });
        shared.threads.retire(self.thread);
    }
}

/// A thread's state before its first event.
macro_rules! empty_local {
    ($no_segment:expr) => {
        Local {
            owner: Cell::new(0),
            end_key: Cell::new(0),
            words: Cell::new(&[]),
            base: Cell::new($no_segment),
            limit: Cell::new(0),
            segment: Cell::new(0),
            last: Cell::new(0),
            task_key: Cell::new(0),
            thread: Cell::new(0),
            seq: Cell::new(0),
            events_before: Cell::new(0),
            locations: [const { Cell::new((0, 0)) }; LOCATION_CACHE],
            task: Cell::new(0),
            named: [const { Cell::new(0) }; NAMED_CACHE],
            runtime_spans: [const { Cell::new(0) }; RUNTIME_SPAN_CACHE],
            entered: Cell::new(0),
            entered_word: Cell::new(0),
            deferred: Cell::new(0),
            next_id: Cell::new(0),
            ids_end: Cell::new(0),
            starved: Cell::new(0),
            opened: Cell::new(&NO_COUNTER),
        }
    };
}

#[cfg(not(blackbox_loom))]
thread_local! {
    static LOCAL: Local = const { empty_local!(NO_SEGMENT.as_ptr()) };
}

#[cfg(blackbox_loom)]
thread_local! {
    static LOCAL: Local = empty_local!(no_segment());
}

thread_local! {
    static LEASE: RefCell<Option<Lease>> = const { RefCell::new(None) };
}

/// Writes `w` at the thread's fill point, if it fits. Returns `false` when
/// the segment is full (or there is none).
#[allow(unsafe_code)]
#[inline(always)]
fn put<const N: usize>(l: &Local, w: [u32; N]) -> bool {
    let at = l.fill_word();
    let fill = at.load(crate::sync::Ordering::Relaxed);
    let pos = fill & 0xffff;
    // One compare, no bounds check per word (`get(pos..pos + N)` costs an
    // addition and, with `fill` kept in the thread-local, a store more).
    if pos + (N as u32 - 1) > l.limit.get() {
        return false;
    }
    let base = l.base.get();
    for (k, v) in w.into_iter().enumerate() {
        // SAFETY: `base` is word 0 of a segment of `limit + 1` words (see
        // `Local::set_segment`; with no segment, `limit` is 0 and `pos` is
        // 1, so nothing gets here), and `pos + k <= pos + N - 1 <= limit`.
        let word = unsafe { &*base.add(pos as usize + k) };
        word.store(v, crate::sync::Ordering::Relaxed);
    }
    // Published after the words (`Release`).
    at.store(fill + N as u32 + (1 << 16), crate::sync::Ordering::Release);
    true
}

/// Publishes `fill` in its segment's word 0 (`Release`, after the words).
#[inline(always)]
fn publish(segment: &[crate::sync::AtomicU32], fill: u32) {
    if let Some(at) = segment.first() {
        at.store(fill, crate::sync::Ordering::Release);
    }
}

/// When an event happened, as the writer knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    /// A clock reading.
    At(u64),
    /// At the previous timed event (inside a poll: its start).
    Prev,
    /// At the next timed event (inside a poll: its end).
    Next,
}

impl Stamp {
    fn time(self) -> u64 {
        match self {
            Stamp::At(t) => t,
            _ => 0,
        }
    }
}

/// An event for the slow path, packed in one word with its head:
/// `head | stamp << 32 | words << 34 | task << 36`.
struct Slow {
    head: u32,
    stamp: Stamp,
    words: usize,
    task: bool,
}

impl Slow {
    #[inline(always)]
    fn pack(head: u32, stamp: Stamp, words: usize, task: bool) -> u64 {
        let s = match stamp {
            Stamp::At(_) => 0u64,
            Stamp::Prev => 1,
            Stamp::Next => 2,
        };
        u64::from(head) | s << 32 | (words as u64) << 34 | u64::from(task) << 36
    }

    fn unpack(packed: u64, ts: u64) -> Slow {
        Slow {
            head: packed as u32,
            stamp: match (packed >> 32) & 3 {
                0 => Stamp::At(ts),
                1 => Stamp::Prev,
                _ => Stamp::Next,
            },
            words: (((packed >> 34) & 3) as usize).clamp(1, 3),
            task: packed >> 36 & 1 != 0,
        }
    }
}

/// A poll end's head: its kind and its location's key ([`codec::location_key`]).
#[inline(always)]
fn poll_end_head(loc: &'static Location<'static>) -> u32 {
    head(
        codec::K_POLL_END,
        codec::location_key(loc as *const Location<'static> as usize),
    )
}

/// The spawn locations a poll end names by their key
/// ([`codec::location_key`]), to their string index: registered when a
/// location is first interned (once per location and recorder), read when
/// segments are decoded. Two locations with one key (addresses a multiple
/// of 1 GiB apart: in different objects) resolve to no name, never to the
/// other's.
#[derive(Debug, Default)]
pub(crate) struct LocationKeys {
    /// `key -> (address, index)`; copied on write (rare), so a decoder
    /// takes the map with one lock and reads it without.
    map: Mutex<Arc<HashMap<u32, (usize, u16)>>>,
}

impl LocationKeys {
    fn insert(&self, addr: usize, index: u16) {
        let key = codec::location_key(addr) as u32;
        let mut map = lock(&self.map);
        match map.get(&key) {
            Some(&(a, i)) if a == addr && i == index => {}
            Some(&(a, _)) if a != addr => {
                Arc::make_mut(&mut map).insert(key, (a, NO_STRING));
            }
            Some(_) => {}
            None => {
                Arc::make_mut(&mut map).insert(key, (addr, index));
            }
        }
    }

    /// The map as it is now.
    fn snapshot(&self) -> Arc<HashMap<u32, (usize, u16)>> {
        Arc::clone(&lock(&self.map))
    }
}

// === Recording ===

/// What outlives a thread's lease check: the segments and the thread table.
#[derive(Debug)]
pub(crate) struct Shared {
    id: u64,
    pub(crate) segments: &'static Segments,
    threads: Threads,
    /// Events not recorded: no segment free, or thread-local storage gone.
    pub(crate) dropped: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        lock(&POOL).push(self.segments);
        // Threads still alive keep pointing at their counters, but write
        // them only for this recorder, which is gone.
        // (The names' lock first, then the pool's, as `Threads::retire`.)
        let mut names = lock(&self.threads.names);
        let mut free = lock(&FREE_COUNTERS);
        for t in names.values_mut() {
            free.extend(t.opened.take());
        }
    }
}

/// Everything the hot path needs: shared, read-only after build.
#[derive(Debug)]
pub(crate) struct Capture {
    /// The recorder's id (a copy of `shared.id`, one pointer hop closer).
    pub(crate) id: u64,
    /// `id << 32`, the high half of a thread's `task_key` for this recorder.
    key: u64,
    pub(crate) clock: Clock,
    pub(crate) shared: Arc<Shared>,
    pub(crate) strings: Strings,
    locations: AddressTable,
    /// The keys poll ends carry, to string indices (shared with the lanes).
    location_keys: Arc<LocationKeys>,
    pub(crate) enabled: bool,
}

/// What the two poll hooks' closures hold: the values their fast paths
/// compare, in the closure itself (no pointer hop to the capture before
/// the thread-local checks), and the capture for the slow paths.
#[derive(Clone, Debug)]
pub(crate) struct PollHooks {
    /// The capture's `key` (see [`Capture::task_key`]).
    key: u64,
    /// The capture's `id`.
    id: u64,
    capture: Arc<Capture>,
}

impl PollHooks {
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    pub(crate) fn new(capture: Arc<Capture>) -> PollHooks {
        PollHooks {
            key: capture.key,
            id: capture.id,
            capture,
        }
    }

    /// A poll start where the clock is the TSC ([`Clock::is_tsc`]), with no delay.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn start_tsc(&self, task: u64) {
        let now = crate::clock::tsc();
        if !Capture::poll_start_fast(self.key, now, task, 0) {
            self.capture.poll_start_slow(now, task, 0);
        }
    }

    /// A poll start where the clock is not the TSC, with no delay.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn start_other_clock(&self, task: u64) {
        self.capture.poll_start_other_clock(task, 0);
    }

    /// A poll end (see [`Capture::poll_end`]).
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn end(&self, loc: &'static Location<'static>) {
        if !Capture::poll_end_fast(self.id, loc) {
            self.capture.poll_end_other(loc);
        }
    }
}

/// One thread's events in a snapshot, decoded, raw clock (the tests'
/// view: the recorder reads a [`SegmentLane`] as it goes).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLane {
    pub(crate) lane: u32,
    pub(crate) thread: String,
    pub(crate) events: Vec<Event>,
    /// Events of the requested range that were overwritten before the copy.
    pub(crate) events_lost: u64,
}

impl Capture {
    /// A capture into `segments` segments of the standard size.
    pub(crate) fn new(clock: Clock, segments: usize, enabled: bool) -> Capture {
        Self::with_segment_words(clock, segments, SEGMENT_WORDS, enabled)
    }

    pub(crate) fn with_segment_words(
        clock: Clock,
        segments: usize,
        seg_words: usize,
        enabled: bool,
    ) -> Capture {
        // A disabled recorder holds no memory.
        let count = if enabled { segments.max(1) } else { 1 };
        let pooled = {
            let mut pool = lock(&POOL);
            pool.iter()
                .position(|s| s.count() == count && s.seg_words() == seg_words)
                .map(|i| pool.swap_remove(i))
        };
        let segments = match pooled {
            Some(s) => {
                s.reset();
                s
            }
            None => &*Box::leak(Box::new(Segments::new(count, seg_words))),
        };
        let id = NEXT_RECORDER.fetch_add(1, StdOrdering::Relaxed);
        Capture {
            id,
            key: id << 32,
            clock,
            shared: Arc::new(Shared {
                id,
                segments,
                threads: Threads::default(),
                dropped: AtomicU64::new(0),
            }),
            strings: Strings::default(),
            locations: AddressTable::new(),
            location_keys: Arc::default(),
            enabled,
        }
    }

    /// What a thread's `task_key` is when it writes for this recorder and
    /// last wrote a task id with the high bits of `task`.
    #[inline(always)]
    fn task_key(&self, task: u64) -> u64 {
        self.key | task >> 32
    }

    /// A task event inside a poll, stamped at the poll's start or end (in
    /// `w`'s head), on the fast path: the thread is this recorder's (which
    /// implies it is enabled), in a poll, and `task`'s high bits are those
    /// written last. A deferred request exit is written first. `false`: take
    /// the general path.
    #[inline(always)]
    fn task_event_in_poll<const N: usize>(&self, l: &Local, task: u64, w: [u32; N]) -> bool {
        // A deferred request exit goes first (a task ends in the poll that
        // left its span: the `Instrumented` future's drop).
        l.task_key.get() == self.task_key(task)
            && l.task.get() != 0
            && l.put_deferred_exit()
            && put(l, w)
    }

    /// Records that task `task` terminated (inside its last poll: at the
    /// poll's end).
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn terminate(&self, task: u64) {
        let words = [head(codec::K_TERMINATE, DELTA_NEXT), task as u32];
        if LOCAL.try_with(|l| self.task_event_in_poll(l, task, words)) != Ok(true) {
            self.terminate_slow(task);
        }
    }

    #[cold]
    #[inline(never)]
    fn terminate_slow(&self, task: u64) {
        self.record_in_poll(EventKind::TaskTerminate, task, 0, true);
    }

    pub(crate) fn segments(&self) -> &'static Segments {
        self.shared.segments
    }

    /// Events dropped: no segment was free, or the thread was exiting.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(StdOrdering::Relaxed)
    }

    /// Records a timed event of the calling thread (a clock reading of its own).
    #[inline(always)]
    pub(crate) fn record(&self, kind: EventKind, subject: u64, arg: u16) {
        if !self.enabled {
            return;
        }
        let now = self.clock.raw();
        self.write(kind, Stamp::At(now), subject, arg);
    }

    /// Records a timed event with a clock reading the caller already took.
    #[inline(always)]
    pub(crate) fn record_at_time(&self, kind: EventKind, subject: u64, arg: u16, now: u64) {
        if !self.enabled {
            return;
        }
        self.write(kind, Stamp::At(now), subject, arg);
    }

    /// Records an event that, inside a poll, reuses the poll's time: its
    /// start (`at_end == false`) or its end. Outside a poll it reads the clock.
    #[inline(always)]
    pub(crate) fn record_in_poll(&self, kind: EventKind, subject: u64, arg: u16, at_end: bool) {
        if !self.enabled {
            return;
        }
        let in_poll = LOCAL
            .try_with(|l| l.owner.get() == self.id && l.task.get() != 0)
            .unwrap_or(false);
        let stamp = match (in_poll, at_end) {
            (true, false) => Stamp::Prev,
            (true, true) => Stamp::Next,
            (false, _) => Stamp::At(self.clock.raw()),
        };
        self.write(kind, stamp, subject, arg);
    }

    #[inline(always)]
    fn write(&self, kind: EventKind, stamp: Stamp, subject: u64, arg: u16) {
        self.flush_deferred_exit();
        let (code, a, b, words) = encode(kind, subject, arg);
        let high = (subject >> 32) as u32;
        let task = is_task_kind(kind);
        let done = LOCAL.try_with(|l| {
            if l.owner.get() != self.id || task && high != l.task_high() {
                return false;
            }
            let field = match stamp {
                Stamp::At(now) => {
                    let d = now.wrapping_sub(l.last.get());
                    if d >= DELTA_NEXT {
                        return false;
                    }
                    d
                }
                Stamp::Prev => 0,
                Stamp::Next => DELTA_NEXT,
            };
            let h = head(code, field);
            let ok = match words {
                1 => put(l, [h]),
                2 => put(l, [h, a]),
                _ => put(l, [h, a, b]),
            };
            if ok && let Stamp::At(now) = stamp {
                l.last.set(now);
            }
            ok
        });
        if done != Ok(true) {
            self.write_slow(
                stamp.time(),
                Slow::pack(head(code, 0), stamp, words, task),
                u64::from(a) | u64::from(b) << 32,
                high,
            );
        }
    }

    /// Records that the thread entered request `request` (the poll's start
    /// time inside a poll), and marks the task being polled as named on this
    /// thread: a task whose first span is a request's is named after the
    /// request by the reader (its enter links them), so no name is written.
    /// `span` and `tag` (the request's span id and its layer's tag) let the
    /// span's exit in the same poll be deferred ([`defer_exit`](Self::defer_exit)).
    #[inline(always)]
    pub(crate) fn request_enter(&self, request: u64, span: u64, tag: u16) {
        // A thread owned by this recorder implies it is enabled (threads are
        // adopted on the general path, which checks).
        let done = LOCAL
            .try_with(|l| {
                if l.owner.get() != self.id {
                    return false;
                }
                let task = l.task.get();
                if task == 0 {
                    return self.edge_now(l, codec::K_REQ_ENTER, request);
                }
                if l.deferred.get() != 0 || !put(l, [head(codec::K_REQ_ENTER, 0), request as u32]) {
                    return false;
                }
                l.set_entered(span, tag, request);
                l.named[(task as usize) & (NAMED_CACHE - 1)].set(task);
                true
            })
            .unwrap_or(false);
        if !done {
            self.request_enter_slow(request, span, tag);
        }
    }

    /// A request enter off the fast path (a full segment, a thread new to
    /// the recorder, a deferred exit to write first: through `write`).
    #[cold]
    #[inline(never)]
    fn request_enter_slow(&self, request: u64, span: u64, tag: u16) {
        self.record_in_poll(EventKind::RequestEnter, request, 0, false);
        let _ = LOCAL.try_with(|l| {
            let task = l.task.get();
            if l.owner.get() == self.id && task != 0 {
                l.set_entered(span, tag, request);
                l.named[(task as usize) & (NAMED_CACHE - 1)].set(task);
            }
        });
    }

    /// A request span entered again inside the poll whose exit of it is
    /// deferred (an `Instrumented` future polled, then dropped, in one poll):
    /// the exit is dropped and nothing is written. `true` when so.
    #[inline(always)]
    pub(crate) fn reenter(&self, span: u64, tag: u16) -> bool {
        LOCAL
            .try_with(|l| {
                let again =
                    l.deferred.get() == span && l.owner.get() == self.id && l.entered_by(tag);
                if again {
                    l.set_deferred(0);
                }
                again
            })
            .unwrap_or(false)
    }

    /// The exit of the request span this thread entered last inside the
    /// current poll: not written now but with the poll's end (or before the
    /// next other event on this thread, so a spawn after it is not the
    /// request's), with the same time it would have had (the poll's end).
    /// `true` when deferred; `false`: record it with
    /// [`request_exit`](Self::request_exit).
    ///
    /// The events a reader sees are the same as when every exit is written at
    /// once, save that an enter and exit pair repeated within one poll is
    /// written once: an exit inside a poll has always been stamped at the
    /// poll's end, so the repeated pair covered the same time.
    #[inline(always)]
    pub(crate) fn defer_exit(&self, span: u64, tag: u16) -> bool {
        LOCAL
            .try_with(|l| {
                let defer = l.entered.get() == span
                    && l.task.get() != 0
                    && l.owner.get() == self.id
                    && l.entered_by(tag);
                if defer {
                    l.set_deferred(span);
                }
                defer
            })
            .unwrap_or(false)
    }

    /// Writes a deferred request exit, if any, before another event.
    #[inline(always)]
    fn flush_deferred_exit(&self) {
        let done = LOCAL.try_with(|l| {
            l.deferred.get() == 0 || l.owner.get() == self.id && l.put_deferred_exit()
        });
        if done == Ok(false) {
            self.write_deferred_exit();
        }
    }

    #[cold]
    #[inline(never)]
    fn write_deferred_exit(&self) {
        let request = LOCAL
            .try_with(|l| {
                // Another recorder's deferred exit stays: this thread moving
                // to this recorder (`adopt`) drops it.
                if l.owner.get() != self.id || l.deferred.get() == 0 {
                    return None;
                }
                let [_, request] = l.deferred_exit_words();
                l.exit_written();
                Some(u64::from(request))
            })
            .ok()
            .flatten();
        if let Some(request) = request {
            self.write_slow(
                0,
                Slow::pack(head(codec::K_REQ_EXIT, 0), Stamp::Next, 2, false),
                request,
                0,
            );
        }
    }

    /// Records that the thread left request `request` (at the poll's end
    /// inside a poll), when [`defer_exit`](Self::defer_exit) did not take
    /// it: two words. One thread-local check; a full segment or a thread new
    /// to the recorder takes [`record_in_poll`](Capture::record_in_poll)'s
    /// general path.
    #[inline(always)]
    pub(crate) fn request_exit(&self, request: u64) {
        // No `enabled` check: an owned thread implies it (see `request_enter`).
        let done = LOCAL.try_with(|l| {
            if l.owner.get() != self.id {
                return false;
            }
            if l.task.get() == 0 {
                return self.edge_now(l, codec::K_REQ_EXIT, request);
            }
            put(l, [head(codec::K_REQ_EXIT, DELTA_NEXT), request as u32])
        });
        if done != Ok(true) {
            self.request_edge_slow(EventKind::RequestExit, request, true);
        }
    }

    /// A new request id, counted in [`requests_opened`](Self::requests_opened):
    /// 32 bits in events, never 0 there. It comes from the thread's block
    /// (a thread takes [`ID_BLOCK`] ids from the recorder at once), and the
    /// count is the thread's own: an open touches no line another thread
    /// writes. Ids stay unique until 2^32 of them were handed out.
    ///
    /// A thread not yet writing for this recorder is adopted first; one
    /// that cannot be (the recorder is disabled, or the thread is exiting)
    /// takes one id from the recorder's counter.
    #[inline(always)]
    pub(crate) fn new_request_id(&self) -> u64 {
        LOCAL
            .try_with(|l| {
                let id = l.next_id.get();
                if l.owner.get() != self.id || id == l.ids_end.get() {
                    return None;
                }
                Some(l.hand_out(id))
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| self.new_request_id_slow())
    }

    #[cold]
    #[inline(never)]
    fn new_request_id_slow(&self) -> u64 {
        let threads = &self.shared.threads;
        let from_block = LOCAL.try_with(|l| {
            if !self.enabled || l.owner.get() != self.id && !self.adopt(l) {
                return None;
            }
            // Exiting: the thread's lease (and its counter) is already gone.
            if std::ptr::eq(l.opened.get(), &NO_COUNTER) {
                return None;
            }
            let start = threads
                .next_request_id
                .fetch_add(ID_BLOCK, StdOrdering::Relaxed);
            l.ids_end.set(start + ID_BLOCK);
            Some(l.hand_out(start + u64::from(start as u32 == 0)))
        });
        if let Ok(Some(id)) = from_block {
            return id;
        }
        // A whole block for one id, so that blocks stay aligned (rare: a
        // disabled recorder records nothing keyed by these ids).
        threads.opened_elsewhere.fetch_add(1, StdOrdering::Relaxed);
        let start = threads
            .next_request_id
            .fetch_add(ID_BLOCK, StdOrdering::Relaxed);
        start + u64::from(start as u32 == 0)
    }

    /// Forgets the names of exited threads whose events are all gone from
    /// the buffer: run by the capture thread about once a second, so a
    /// blocking pool that churns threads does not grow the table (which
    /// `stats()` and thread start and exit walk under one lock). What is
    /// left is bounded by the live threads plus the buffer's segments.
    pub(crate) fn forget_exited_threads(&self) {
        if !lock(&self.shared.threads.names).values().any(|t| t.exited) {
            return;
        }
        let present = self.shared.segments.threads_present();
        forget_exited(&mut lock(&self.shared.threads.names), &present);
    }

    /// Threads in the table: live ones, and exited ones with events left.
    pub(crate) fn threads_known(&self) -> usize {
        lock(&self.shared.threads.names).len()
    }

    /// Request ids handed out so far ([`new_request_id`](Self::new_request_id)).
    pub(crate) fn requests_opened(&self) -> u64 {
        self.shared.threads.opened()
    }

    /// Records that request `request`, named `name`, opened at `now` (the
    /// clock reading the layer took for the request's duration).
    #[inline(always)]
    pub(crate) fn request_open(&self, request: u64, name: u16, now: u64) {
        let tail = [request as u32, u32::from(name)];
        if !self.put_timed(now, |d| [head(codec::K_REQ_OPEN, d), tail[0], tail[1]]) {
            self.timed_slow(EventKind::RequestOpen, request, name, now);
        }
    }

    /// Records that request `request` closed at `now` (the layer's reading).
    #[inline(always)]
    pub(crate) fn request_close(&self, request: u64, now: u64) {
        if !self.put_timed(now, |d| [head(codec::K_REQ_CLOSE, d), request as u32]) {
            self.timed_slow(EventKind::RequestClose, request, 0, now);
        }
    }

    /// Writes the words `words(delta)` at time `now` in one thread-local
    /// access (a deferred request exit first), when the thread is this
    /// recorder's (which implies it is enabled) and `now` is within a delta
    /// of the thread's last time. `false`: take the general path.
    #[inline(always)]
    fn put_timed<const N: usize>(&self, now: u64, words: impl FnOnce(u64) -> [u32; N]) -> bool {
        // A deferred request exit goes first (a request closed or opened in
        // the poll that left another), stamped as this.
        LOCAL
            .try_with(|l| l.owner.get() == self.id && l.put_deferred_exit() && l.put_at(now, words))
            .unwrap_or(false)
    }

    #[cold]
    #[inline(never)]
    fn timed_slow(&self, kind: EventKind, subject: u64, arg: u16, now: u64) {
        self.record_at_time(kind, subject, arg, now);
    }

    /// A request enter or exit outside a poll, on the thread's own segment:
    /// two words at a clock reading of its own.
    #[inline(always)]
    fn edge_now(&self, l: &Local, code: u32, request: u64) -> bool {
        l.put_at(self.clock.raw(), |d| [head(code, d), request as u32])
    }

    #[cold]
    #[inline(never)]
    fn request_edge_slow(&self, kind: EventKind, request: u64, at_end: bool) {
        self.record_in_poll(kind, request, 0, at_end);
    }

    /// Records a poll start and remembers the task as this thread's current one.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn poll_start(&self, task: u64, delay: u16) {
        match self.clock.tsc_now() {
            Some(now) => self.poll_start_at(now, task, delay),
            None => self.poll_start_other_clock(task, delay),
        }
    }

    /// A poll start where the clock is not the TSC: read it out of line.
    #[cold]
    #[inline(never)]
    pub(crate) fn poll_start_other_clock(&self, task: u64, delay: u16) {
        self.poll_start_at(self.clock.raw(), task, delay)
    }

    /// A poll start at `now`: the fast path, then the slow path.
    #[inline(always)]
    fn poll_start_at(&self, now: u64, task: u64, delay: u16) {
        if !Self::poll_start_fast(self.key, now, task, delay) {
            self.poll_start_slow(now, task, delay);
        }
    }

    /// The fast path of a poll start, for the recorder whose `key` is given
    /// (the hooks hold it: no pointer hop to the capture on this path).
    #[inline(always)]
    fn poll_start_fast(key: u64, now: u64, task: u64, delay: u16) -> bool {
        LOCAL
            .try_with(|l| {
                if l.task_key.get() != key | task >> 32 {
                    return false;
                }
                let d = now.wrapping_sub(l.last.get());
                if d >= DELTA_NEXT {
                    return false;
                }
                let ok = if delay == 0 {
                    put(l, [head(codec::K_POLL_START, d), task as u32])
                } else {
                    put(
                        l,
                        [
                            head(codec::K_POLL_START_DELAY, d),
                            task as u32,
                            u32::from(delay),
                        ],
                    )
                };
                if ok {
                    l.last.set(now);
                    l.task.set(task);
                }
                ok
            })
            .unwrap_or(false)
    }

    /// A poll start off the fast path: packed for [`write_slow`](Self::write_slow)
    /// here, so the hooks reach it with a tail call.
    #[inline(always)]
    fn poll_start_slow(&self, now: u64, task: u64, delay: u16) {
        let (code, words) = if delay == 0 {
            (codec::K_POLL_START, 2)
        } else {
            (codec::K_POLL_START_DELAY, 3)
        };
        self.write_slow(
            now,
            Slow::pack(head(code, 0), Stamp::At(now), words, true),
            task & 0xffff_ffff | u64::from(delay) << 32,
            (task >> 32) as u32,
        );
    }

    /// Records the end of the current poll: one word, no clock reading.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn poll_end(&self, loc: &'static Location<'static>) {
        if !Self::poll_end_fast(self.id, loc) {
            self.poll_end_other(loc);
        }
    }

    /// The fast path of a poll end, for the recorder `id` (the hooks hold
    /// it): the thread is the recorder's and no request exit waits (one
    /// compare, see [`Local::end_key`]). The location goes as its key
    /// ([`codec::location_key`]), registered by the task's spawn: no lookup.
    #[inline(always)]
    fn poll_end_fast(id: u64, loc: &'static Location<'static>) -> bool {
        let end = poll_end_head(loc);
        LOCAL
            .try_with(|l| {
                if l.end_key.get() != id {
                    return false;
                }
                l.task.set(0);
                put(l, [end])
            })
            .unwrap_or(false)
    }

    /// A poll end off the fast path: after a deferred request exit (most
    /// polls enter no request span), both in one write when they fit; else
    /// the slow path.
    #[cold]
    #[inline(never)]
    fn poll_end_other(&self, loc: &'static Location<'static>) {
        let end = poll_end_head(loc);
        let done = LOCAL.try_with(|l| {
            if l.owner.get() != self.id || l.deferred.get() == 0 {
                return false;
            }
            let [exit, request] = l.deferred_exit_words();
            let ok = put(l, [exit, request, end]);
            if ok {
                l.task.set(0);
                l.exit_written();
            }
            ok
        });
        if done != Ok(true) {
            self.poll_end_slow(loc);
        }
    }

    /// A poll end off the fast path (a full segment, a thread new to the
    /// recorder). The location is registered here too, for a task whose
    /// spawn this recorder did not see (hooks called by hand).
    #[cold]
    #[inline(never)]
    fn poll_end_slow(&self, loc: &'static Location<'static>) {
        self.flush_deferred_exit();
        if !self.enabled {
            return;
        }
        let slot = (loc as *const Location<'static> as usize >> 3) & (LOCATION_CACHE - 1);
        self.location_index(loc, slot);
        self.write_slow(
            0,
            Slow::pack(poll_end_head(loc), Stamp::Next, 1, false),
            0,
            0,
        );
    }

    /// Records a task spawn with its location (the poll's start time inside a poll).
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline]
    pub(crate) fn spawn(&self, task: u64, loc: &'static Location<'static>) {
        let key = loc as *const Location<'static> as usize;
        let slot = (key >> 3) & (LOCATION_CACHE - 1);
        let done = LOCAL.try_with(|l| {
            let (k, index) = l.locations[slot].get();
            k == key
                && self.task_event_in_poll(l, task, [head(codec::K_SPAWN, 0), task as u32, index])
        });
        if done != Ok(true) {
            self.spawn_slow(task, loc, slot);
        }
    }

    /// A spawn outside a poll, from a location not in the thread's cache, or
    /// off the fast path otherwise.
    #[cold]
    #[inline(never)]
    fn spawn_slow(&self, task: u64, loc: &'static Location<'static>, slot: usize) {
        if !self.enabled {
            return;
        }
        let key = loc as *const Location<'static> as usize;
        // Outside a poll (a task spawned from `block_on`, or from a thread
        // of the service's own) from a cached location: one thread-local
        // access and a clock reading, as `put_timed` does for requests.
        let now = self.clock.raw();
        let cached = LOCAL
            .try_with(|l| {
                let (k, index) = l.locations[slot].get();
                if l.owner.get() != self.id || k != key {
                    return None;
                }
                let written = l.task.get() == 0
                    && l.task_key.get() == self.task_key(task)
                    && l.put_deferred_exit()
                    && l.put_at(now, |d| [head(codec::K_SPAWN, d), task as u32, index]);
                Some((written, index as u16))
            })
            .ok()
            .flatten();
        let i = match cached {
            Some((true, _)) => return,
            Some((false, i)) => i,
            None => self.location_index(loc, slot),
        };
        self.record_in_poll(EventKind::TaskSpawn, task, i, false);
    }

    /// The string index of a spawn location: the thread's cache, the shared
    /// table, or (once per location) the string table.
    #[cold]
    #[inline(never)]
    fn location_index(&self, loc: &'static Location<'static>, slot: usize) -> u16 {
        let key = loc as *const Location<'static> as usize;
        let i = match self.locations.get(key as u64) {
            Some(i) => i as u16,
            None => {
                let i = self.strings.intern(&location_string(loc));
                // The key first: a thread that finds the location in the
                // shared table may write poll ends carrying its key at once,
                // and a cut decoding them must find it (or a colliding
                // key's owner would lend them its name).
                self.location_keys.insert(key, i);
                self.locations.insert(key as u64, u32::from(i));
                i
            }
        };
        let _ = LOCAL.try_with(|l| {
            if l.owner.get() == self.id {
                l.locations[slot].set((key, u32::from(i)));
            }
        });
        i
    }

    /// The task this thread is polling, when it has not been named on this
    /// thread yet and `span` (being entered) is not one of Tokio's known
    /// ones: the layer then names it after the span.
    #[inline]
    pub(crate) fn unnamed_task(&self, span: u64) -> Option<u64> {
        LOCAL
            .try_with(|l| {
                let task = l.task.get();
                (task != 0
                    && l.owner.get() == self.id
                    && l.named[(task as usize) & (NAMED_CACHE - 1)].get() != task
                    && l.runtime_spans[(span as usize) & (RUNTIME_SPAN_CACHE - 1)].get() != span)
                    .then_some(task)
            })
            .ok()
            .flatten()
    }

    /// Remembers that span `span` is one of Tokio's own (see
    /// [`unnamed_task`](Self::unnamed_task)).
    #[cold]
    pub(crate) fn remember_runtime_span(&self, span: u64) {
        let _ = LOCAL.try_with(|l| {
            if l.owner.get() == self.id {
                l.runtime_spans[(span as usize) & (RUNTIME_SPAN_CACHE - 1)].set(span);
            }
        });
    }

    /// Records the span name a task runs in, once per task and thread.
    pub(crate) fn name_task(&self, task: u64, name: u16) {
        let words = [head(codec::K_TASK_NAME, 0), task as u32, u32::from(name)];
        let done = LOCAL.try_with(|l| {
            l.named[(task as usize) & (NAMED_CACHE - 1)].set(task);
            self.task_event_in_poll(l, task, words)
        });
        if done != Ok(true) {
            self.record_in_poll(EventKind::TaskName, task, name, false);
        }
    }

    /// Everything that does not fit the fast path: a thread new to this
    /// recorder, a full segment, a clock delta past 27 bits, new task-id high
    /// bits. The event comes packed (see [`Slow`]) so that the fast paths
    /// reach here with a tail call. Takes no lock and allocates nothing
    /// except when the thread is new to the recorder.
    #[cold]
    #[inline(never)]
    fn write_slow(&self, ts: u64, packed: u64, ab: u64, high: u32) {
        if !self.enabled {
            return;
        }
        let slow = Slow::unpack(packed, ts);
        let event = [slow.head, ab as u32, (ab >> 32) as u32];
        let event = &event[..slow.words];
        let stamp = slow.stamp;
        let task_high = slow.task.then_some(high);
        let code = slow.head & 0x1f;
        let written = LOCAL.try_with(|l| {
            if l.owner.get() != self.id && !self.adopt(l) {
                return false;
            }
            // A thread that never had a segment starts its first at this event.
            let fresh = l.words.get().is_empty() && l.seq.get() == 0;
            let at = match stamp {
                Stamp::At(t) => Some(t),
                _ if fresh => Some(self.clock.raw()),
                _ => None,
            };
            let mut buf = [0u32; 8];
            let mut n = 0;
            let mut push = |w: u32| {
                buf[n] = w;
                n += 1;
            };
            let field = match stamp {
                Stamp::Prev => 0,
                Stamp::Next => DELTA_NEXT,
                Stamp::At(_) if fresh => 0,
                Stamp::At(t) => {
                    let d = t.wrapping_sub(l.last.get());
                    if d >= DELTA_NEXT {
                        push(head(codec::K_TIME_BASE, 0));
                        push(t as u32);
                        push((t >> 32) as u32);
                        0
                    } else {
                        d
                    }
                }
            };
            if let Some(h) = task_high
                && h != l.task_high()
            {
                push(head(codec::K_TASK_HIGH, 0));
                push(h);
            }
            // A poll end's head holds its location, not a time.
            push(if code == codec::K_POLL_END {
                event[0]
            } else {
                event[0] | (field as u32) << 5
            });
            for &w in &event[1..] {
                push(w);
            }
            let pos = (l.fill() & 0xffff) as usize;
            if pos + n > l.words.get().len() {
                let base = if fresh { at.unwrap_or(0) } else { l.last.get() };
                if !self.next_segment(l, base) {
                    return false;
                }
            }
            let fill = l.fill();
            let pos = (fill & 0xffff) as usize;
            let segment = l.words.get();
            let Some(dst) = segment.get(pos..pos + n) else {
                return false;
            };
            for (d, w) in dst.iter().zip(&buf[..n]) {
                d.store(*w, crate::sync::Ordering::Relaxed);
            }
            // The time base and task high bits are not events: one event counted.
            let fill = fill + n as u32 + (1 << 16);
            publish(segment, fill);
            if let Some(t) = at {
                l.last.set(t);
            }
            if let Some(h) = task_high {
                l.set_task_high(h);
            }
            match code {
                codec::K_POLL_START | codec::K_POLL_START_DELAY => {
                    l.task.set(u64::from(high) << 32 | (ab & 0xffff_ffff))
                }
                codec::K_POLL_END => l.task.set(0),
                _ => {}
            }
            true
        });
        if written != Ok(true) {
            self.shared.dropped.fetch_add(1, StdOrdering::Relaxed);
        }
    }

    /// Makes the calling thread write for this recorder: gives back what it
    /// held for another one and registers it.
    fn adopt(&self, l: &Local) -> bool {
        let leased = LEASE.try_with(|lease| {
            // Seals the segment of the recorder the thread wrote for before (if alive).
            drop(lease.borrow_mut().take());
            let (thread, opened) = self.shared.threads.register();
            *lease.borrow_mut() = Some(Lease {
                shared: Arc::downgrade(&self.shared),
                thread,
            });
            (thread, opened)
        });
        let Ok((thread, opened)) = leased else {
            // The thread is exiting (its lease is gone): nobody would seal
            // a segment, so the event is dropped (counted) and the thread
            // is not registered (it would be again at each event).
            return false;
        };
        l.deferred.set(0);
        l.set_owner(self.id);
        l.clear_segment();
        l.last.set(0);
        l.task_key.set(self.task_key(0));
        l.thread.set(thread);
        l.seq.set(0);
        l.events_before.set(0);
        l.task.set(0);
        for slot in &l.locations {
            slot.set((0, 0));
        }
        for slot in l.named.iter().chain(&l.runtime_spans) {
            slot.set(0);
        }
        l.entered.set(0);
        l.entered_word.set(0);
        l.next_id.set(0);
        l.ids_end.set(0);
        l.starved.set(0);
        l.opened.set(opened);
        true
    }

    /// Seals the current segment (if any) and claims the next.
    fn next_segment(&self, l: &Local, base: u64) -> bool {
        let segments = self.shared.segments;
        if !l.words.get().is_empty() {
            // Its count read before the seal: once sealed, the segment is
            // back in the queue and another writer may claim it and reset
            // its fill (word 0, where the count lives).
            let events = u64::from(l.fill() >> 16);
            segments.seal(l.segment.get(), l.last.get());
            l.events_before.set(l.events_before.get() + events);
            l.seq.set(l.seq.get() + 1);
            l.clear_segment();
        }
        // Read before the claim: a segment freed after this read raises it,
        // so the next event tries again.
        let freed = segments.freed();
        if l.starved.get() == freed.wrapping_add(1) {
            // Nothing came free since the last failed claim.
            return false;
        }
        let Some(i) = segments.claim(Claim {
            thread: l.thread.get(),
            seq: l.seq.get(),
            base,
            events_before: l.events_before.get(),
            task_high: l.task_high(),
        }) else {
            l.starved.set(freed.wrapping_add(1));
            return false;
        };
        l.starved.set(0);
        l.segment.set(i);
        let words = segments.segment_with_fill(i);
        // Word 0 is the fill: the events start at 1 (0 and 1 both read as
        // no event; the writer reads its fill from here).
        if let Some(fill) = words.first() {
            fill.store(1, crate::sync::Ordering::Relaxed);
        }
        l.set_segment(words);
        l.last.set(base);
        true
    }

    /// Copies and decodes the segments with events in `[from, to]` (raw
    /// clock), or all of them, into one lane per thread, oldest event first.
    #[cfg(test)]
    pub(crate) fn lanes(&self, range: Option<(u64, u64)>) -> Vec<RawLane> {
        self.segment_lanes(range, None, false)
            .into_iter()
            .map(SegmentLane::decode)
            .collect()
    }

    /// Copies the segments with events in `[from, to]` (raw clock), or all
    /// of them, into one lane per thread, not decoded: the copy is the
    /// buffer's compact form (a few bytes an event, against 16 decoded).
    /// With a `limit`, about that many bytes at most: the range's oldest
    /// segments, the rest left out and counted as lost. With `hold`, sealed
    /// segments are held in place instead of copied, while the holds last
    /// (half the buffer, see the segments' protocol), and released when the
    /// lane is dropped.
    pub(crate) fn segment_lanes(
        &self,
        range: Option<(u64, u64)>,
        limit: Option<usize>,
        hold: bool,
    ) -> Vec<SegmentLane> {
        let now = self.clock.raw();
        let segments = self.shared.segments;
        let snapshot = segments.snapshot(range, now, limit, hold);
        let mut by_thread: BTreeMap<u32, Vec<crate::segments::SegmentCopy>> = BTreeMap::new();
        let mut left_out: HashMap<u32, u64> = HashMap::new();
        for s in snapshot.segments {
            by_thread.entry(s.claim.thread).or_default().push(s);
        }
        for (thread, events) in snapshot.left_out {
            by_thread.entry(thread).or_default();
            *left_out.entry(thread).or_default() += events.max(1);
        }
        let names = {
            let mut names = lock(&self.shared.threads.names);
            if range.is_none() {
                forget_exited(&mut names, &self.shared.segments.threads_present());
            }
            by_thread
                .keys()
                .map(|n| (*n, names.get(n).map(|t| t.name.clone()).unwrap_or_default()))
                .collect::<HashMap<u32, String>>()
        };
        by_thread
            .into_iter()
            .map(|(thread, mut segs)| {
                segs.sort_by_key(|s| s.claim.seq);
                SegmentLane {
                    lane: thread,
                    thread: names.get(&thread).cloned().unwrap_or_default(),
                    segments,
                    locations: Arc::clone(&self.location_keys),
                    segs,
                    left_out: left_out.get(&thread).copied().unwrap_or(0),
                    range,
                    now,
                }
            })
            .collect()
    }
}

/// One thread's segments from a snapshot (sorted by sequence), copied or
/// held in place, decoded each time they are read. Dropping it releases its
/// holds; a clone copies the held segments.
pub(crate) struct SegmentLane {
    pub(crate) lane: u32,
    pub(crate) thread: String,
    segments: &'static Segments,
    /// What the poll ends' location keys name.
    locations: Arc<LocationKeys>,
    segs: Vec<crate::segments::SegmentCopy>,
    /// Events of the range left out of the copy (the snapshot's limit).
    left_out: u64,
    range: Option<(u64, u64)>,
    now: u64,
}

impl std::fmt::Debug for SegmentLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLane")
            .field("lane", &self.lane)
            .field("thread", &self.thread)
            .field("segs", &self.segs)
            .field("left_out", &self.left_out)
            .field("range", &self.range)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Drop for SegmentLane {
    fn drop(&mut self) {
        for s in &self.segs {
            if let Words::Held(_) = s.words {
                self.segments.release(s.index, s.generation);
            }
        }
    }
}

impl Clone for SegmentLane {
    fn clone(&self) -> SegmentLane {
        let mut scratch = Vec::new();
        let segs = self
            .segs
            .iter()
            .map(|s| {
                let mut copy = s.clone();
                if let Words::Held(_) = s.words {
                    // Read now; a segment a reset recycled reads as empty.
                    let words = self.words_of(s, &mut scratch).map(<[u32]>::to_vec);
                    copy.events = if words.is_some() { s.events } else { 0 };
                    copy.words = Words::Copied(words.unwrap_or_default());
                }
                copy
            })
            .collect();
        SegmentLane {
            lane: self.lane,
            thread: self.thread.clone(),
            segments: self.segments,
            locations: Arc::clone(&self.locations),
            segs,
            left_out: self.left_out,
            range: self.range,
            now: self.now,
        }
    }
}

impl SegmentLane {
    /// Bytes the copies hold (held segments are the buffer's own).
    pub(crate) fn bytes(&self) -> usize {
        self.segs
            .iter()
            .map(|s| match &s.words {
                Words::Copied(w) => w.len() * 4,
                Words::Held(_) => 0,
            })
            .sum()
    }

    /// The words of `s`: its copy, or the held segment read into
    /// `scratch`; `None` when a reset recycled it.
    fn words_of<'a>(
        &self,
        s: &'a crate::segments::SegmentCopy,
        scratch: &'a mut Vec<u32>,
    ) -> Option<&'a [u32]> {
        match &s.words {
            Words::Copied(w) => Some(w),
            Words::Held(len) => self
                .segments
                .read_held(s.index, s.generation, *len, scratch)
                .then_some(&scratch[..]),
        }
    }

    /// Segments the lane spans, held or copied.
    pub(crate) fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Segments held in place.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.segs
            .iter()
            .filter(|s| matches!(s.words, Words::Held(_)))
            .count()
    }

    /// At most how many events the copies decode to.
    pub(crate) fn events_hint(&self) -> usize {
        // The settling of a poll at each gap may add one more.
        self.segs
            .iter()
            .map(|s| s.events as usize + 1)
            .sum::<usize>()
            + 1
    }

    /// Decodes the lane into memory.
    #[cfg(test)]
    pub(crate) fn decode(mut self) -> RawLane {
        // Sized once: a storm's window is millions of events, and growing by
        // doubling would hold two copies while moving.
        let mut events = Vec::with_capacity(self.events_hint());
        let events_lost = self.decode_with(|e| events.push(e));
        RawLane {
            lane: self.lane,
            thread: std::mem::take(&mut self.thread),
            events,
            events_lost,
        }
    }

    /// Decodes the copies one at a time, calling `f` with each event in
    /// order (raw clock), and counts the events of the range that are
    /// missing: exactly for a gap between two copies, estimated from the
    /// lane's rate when the range starts before the oldest copy and the
    /// thread's earlier segments reached into it. Holds one segment's
    /// events at a time, and those waiting for a later segment's time.
    pub(crate) fn decode_with(&self, mut f: impl FnMut(Event)) -> u64 {
        let (segs, range) = (&self.segs, self.range);
        // Decoded events not yet handed out: those at and after the first
        // one waiting for the next timed event's time.
        let mut held: Vec<Event> = Vec::new();
        let mut release = |held: &mut Vec<Event>, state: &mut codec::LaneState, all: bool| {
            let keep_from = if all {
                held.len()
            } else {
                state.waiting.first().copied().unwrap_or(held.len())
            };
            for w in &mut state.waiting {
                *w -= keep_from;
            }
            for e in held.drain(..keep_from) {
                f(e);
            }
        };
        let (mut count, mut newest) = (0u64, None::<u64>);
        let mut lost = 0u64;
        let mut head_lost = false;
        let mut state = codec::LaneState::default();
        let mut prev: Option<&crate::segments::SegmentCopy> = None;
        let mut scratch = Vec::new();
        // Taken now, after the copies: every poll end in them is of a task
        // whose spawn registered its location before.
        let keys = self.locations.snapshot();
        let location = |key: u32| keys.get(&key).map_or(NO_STRING, |&(_, i)| i);
        // The segment before was recycled: counted already, no gap to add.
        let mut gone = false;
        for s in segs {
            let Some(words) = self.words_of(s, &mut scratch) else {
                // Recycled by a reset (a new recorder on this memory): its
                // events are lost, and the next segment starts afresh.
                lost += u64::from(s.events);
                state.settle(&mut held, s.claim.base);
                release(&mut held, &mut state, true);
                (prev, gone) = (None, true);
                continue;
            };
            let follows = prev.is_some_and(|p| p.claim.seq + 1 == s.claim.seq);
            if !follows {
                // The segment before this one ended at `base` (the thread's last
                // timed event then): a gap matters when that is inside the range.
                let in_range = range.is_some_and(|(from, _)| s.claim.base >= from);
                if in_range && s.claim.seq > 0 && !gone {
                    match prev {
                        Some(p) => {
                            lost += s
                                .claim
                                .events_before
                                .saturating_sub(p.claim.events_before + u64::from(p.events))
                                .max(1)
                        }
                        None => head_lost = true,
                    }
                }
                state.settle(&mut held, s.claim.base);
                release(&mut held, &mut state, true);
                state = codec::LaneState::fresh(s.claim.base, u64::from(s.claim.task_high));
            }
            let before = held.len();
            codec::decode(words, &mut state, &mut held, location);
            count += (held.len() - before) as u64;
            newest = held.last().map(|e| e.ts).or(newest);
            release(&mut held, &mut state, false);
            (prev, gone) = (Some(s), false);
        }
        state.settle(&mut held, self.now);
        newest = held.last().map(|e| e.ts).or(newest);
        release(&mut held, &mut state, true);
        if head_lost && let (Some((from, _)), Some(first)) = (range, segs.first()) {
            let oldest = first.claim.base;
            let newest = newest.unwrap_or(oldest);
            let rate = count as f64 / newest.saturating_sub(oldest).max(1) as f64;
            lost += ((rate * oldest.saturating_sub(from) as f64) as u64).max(1);
        }
        lost + self.left_out
    }
}

/// The code, payload words and word count of an event kind.
#[inline(always)]
fn encode(kind: EventKind, subject: u64, arg: u16) -> (u32, u32, u32, usize) {
    let s = subject as u32;
    let a = u32::from(arg);
    match kind {
        EventKind::TaskSpawn => (codec::K_SPAWN, s, a, 3),
        EventKind::PollStart if arg != 0 => (codec::K_POLL_START_DELAY, s, a, 3),
        EventKind::PollStart => (codec::K_POLL_START, s, 0, 2),
        EventKind::PollEnd => (codec::K_POLL_END, 0, 0, 1),
        EventKind::TaskTerminate => (codec::K_TERMINATE, s, 0, 2),
        EventKind::Park => (codec::K_PARK, 0, 0, 1),
        EventKind::Unpark => (codec::K_UNPARK, 0, 0, 1),
        EventKind::ThreadStart => (codec::K_THREAD_START, 0, 0, 1),
        EventKind::ThreadStop => (codec::K_THREAD_STOP, 0, 0, 1),
        EventKind::RequestOpen => (codec::K_REQ_OPEN, s, a, 3),
        EventKind::RequestEnter => (codec::K_REQ_ENTER, s, 0, 2),
        EventKind::RequestExit => (codec::K_REQ_EXIT, s, 0, 2),
        EventKind::RequestClose => (codec::K_REQ_CLOSE, s, 0, 2),
        EventKind::TaskName => (codec::K_TASK_NAME, s, a, 3),
    }
}

fn is_task_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::TaskSpawn
            | EventKind::PollStart
            | EventKind::TaskTerminate
            | EventKind::TaskName
    )
}

/// Turns Tokio's opaque task id into a number, without formatting it.
///
/// `tokio::task::Id` wraps a `NonZeroU64` and derives `Hash`, which writes that
/// one integer; a hasher that keeps the last integer written recovers it.
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
#[inline(always)]
pub(crate) fn task_id_u64<T: Hash>(id: &T) -> u64 {
    struct Keep(u64);
    impl Hasher for Keep {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 << 8) | u64::from(b);
            }
        }
        fn write_u64(&mut self, v: u64) {
            self.0 = v;
        }
    }
    let mut h = Keep(0);
    id.hash(&mut h);
    h.0
}

mod address_table;

#[cfg(test)]
mod tests;
