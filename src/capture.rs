//! Capture: the hot path. Tokio's runtime hooks and the request layer append
//! [`Event`]s to the calling thread's own ring.
//!
//! Every thread that records gets a *lane*: a ring plus the thread's name. A
//! thread finds its lane through a thread-local, so a recording touches only
//! memory of its own thread: no shared atomic, no lock, no allocation. The
//! first event of a thread takes the slow path once: it leases a lane from the
//! recorder (a free one left by a thread that exited, or a new one while fewer
//! than the configured maximum exist). A thread that finds no lane free drops
//! its events and counts them.
//!
//! Spawn locations are interned into the string table once; each thread keeps
//! a small direct-mapped cache from the `&'static Location` to its index.

use crate::clock::Clock;
use crate::event::{Event, EventKind, NO_STRING};
use crate::ring::{Ring, Snapshot};
use crate::sync::lock;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering as StdOrdering};
use std::sync::{Arc, Mutex, Weak};

/// Number of entries in each thread's spawn-location cache (a power of two).
const LOCATION_CACHE: usize = 64;

/// Number of entries in each thread's cache of named tasks (a power of two).
const NAMED_CACHE: usize = 64;

/// The most strings the table holds: indices are 16 bits and `u16::MAX` means none.
const MAX_STRINGS: usize = NO_STRING as usize;

/// A source of unique recorder ids, so a thread can tell whose lane it holds.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(1);

// === Lanes ===

/// The rings of one recorder and who is writing them.
#[derive(Debug)]
pub(crate) struct Lanes {
    id: u64,
    capacity: usize,
    max_lanes: usize,
    inner: Mutex<LanesInner>,
    /// Events dropped because the thread had no lane (all in use) or its
    /// thread-local storage was already torn down.
    pub(crate) dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct LanesInner {
    lanes: Vec<LaneEntry>,
    free: Vec<usize>,
}

#[derive(Debug)]
struct LaneEntry {
    ring: &'static Ring,
    thread: String,
}

/// Rings of recorders that were dropped, kept for the next recorder.
///
/// Rings are `&'static` so the hot path can hold them in a plain `Cell`. A
/// ring is only ever allocated while fewer than `max_threads` of its recorder
/// exist, and goes back to this pool when its recorder is dropped, so the
/// memory stays bounded by the largest set of live recorders. A thread may
/// still point at a pooled ring, but only under the old recorder's id, which
/// no hook can present any more: its hooks held the last references.
static POOL: Mutex<Vec<&'static Ring>> = Mutex::new(Vec::new());

/// What one lane held at a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct LaneSnapshot {
    pub(crate) lane: u32,
    pub(crate) thread: String,
    pub(crate) snapshot: Snapshot,
}

impl Lanes {
    pub(crate) fn new(capacity: usize, max_lanes: usize) -> Lanes {
        Lanes {
            id: NEXT_RECORDER.fetch_add(1, StdOrdering::Relaxed),
            capacity,
            max_lanes,
            inner: Mutex::new(LanesInner::default()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Leases a lane to the calling thread, or `None` when all are in use.
    fn lease(&self) -> Option<(usize, &'static Ring)> {
        let mut inner = lock(&self.inner);
        let name = std::thread::current()
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{:?}", std::thread::current().id()));
        if let Some(i) = inner.free.pop() {
            inner.lanes[i].thread = name;
            return Some((i, inner.lanes[i].ring));
        }
        if inner.lanes.len() >= self.max_lanes {
            return None;
        }
        let ring = {
            let mut pool = lock(&POOL);
            let capacity = self.capacity.max(2).next_power_of_two();
            match pool.iter().position(|r| r.capacity() == capacity) {
                Some(i) => {
                    let ring = pool.swap_remove(i);
                    ring.clear();
                    ring
                }
                None => &*Box::leak(Box::new(Ring::new(self.capacity))),
            }
        };
        inner.lanes.push(LaneEntry { ring, thread: name });
        Some((inner.lanes.len() - 1, ring))
    }

    fn release(&self, lane: usize) {
        let mut inner = lock(&self.inner);
        if !inner.free.contains(&lane) {
            inner.free.push(lane);
        }
    }

    /// Copies every lane (all events, or those in a raw-clock range).
    pub(crate) fn snapshot(&self, range: Option<(u64, u64)>) -> Vec<LaneSnapshot> {
        let lanes: Vec<(u32, String, &'static Ring)> = lock(&self.inner)
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l.thread.clone(), l.ring))
            .collect();
        lanes
            .into_iter()
            .map(|(lane, thread, ring)| LaneSnapshot {
                lane,
                thread,
                snapshot: ring.snapshot(range),
            })
            .collect()
    }

    /// (events ever pushed, events overwritten) over all lanes.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let inner = lock(&self.inner);
        inner.lanes.iter().fold((0, 0), |(p, o), l| {
            let pushed = l.ring.pushed();
            (
                p + pushed,
                o + pushed.saturating_sub(l.ring.capacity() as u64),
            )
        })
    }

    /// Bytes of event storage currently allocated, and the most it can reach.
    pub(crate) fn memory(&self) -> (usize, usize) {
        let n = lock(&self.inner).lanes.len();
        let per = self.capacity.max(2).next_power_of_two() * std::mem::size_of::<Event>();
        (n * per, self.max_lanes * per)
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        let inner = std::mem::take(&mut *lock(&self.inner));
        lock(&POOL).extend(inner.lanes.into_iter().map(|l| l.ring));
    }
}

// === Strings ===

/// The interned strings (spawn locations, span names) of one recorder.
#[derive(Debug, Default)]
pub(crate) struct Strings {
    inner: Mutex<StringsInner>,
}

#[derive(Debug, Default)]
struct StringsInner {
    list: Vec<String>,
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
        inner.list.push(s.to_owned());
        inner.index.insert(s.to_owned(), i);
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

    pub(crate) fn all(&self) -> Vec<String> {
        lock(&self.inner).list.clone()
    }
}

/// How a spawn location is written in the string table: `file:line:column`.
pub(crate) fn location_string(loc: &Location<'_>) -> String {
    format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
}

// === Thread-local state ===

/// The hot path's view of this thread: which recorder's lane it holds and a
/// spawn-location cache. Plain `Cell`s and no destructor, so reaching it is a
/// few instructions; the lease that returns the lane lives in [`LEASE`].
struct Local {
    /// Which recorder's lane this thread holds (0: none).
    owner: Cell<u64>,
    ring: Cell<Option<&'static Ring>>,
    locations: [Cell<(usize, u16)>; LOCATION_CACHE],
    /// The task being polled on this thread (0: none), set by the poll hooks.
    task: Cell<u64>,
    /// Tasks already named on this thread, direct-mapped by task id.
    named: [Cell<u64>; NAMED_CACHE],
}

/// Returns a lane to its recorder when the thread exits or moves to another recorder.
struct Lease {
    lanes: Weak<Lanes>,
    lane: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(lanes) = self.lanes.upgrade() {
            lanes.release(self.lane);
        }
    }
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            owner: Cell::new(0),
            ring: Cell::new(None),
            locations: [const { Cell::new((0, 0)) }; LOCATION_CACHE],
            task: Cell::new(0),
            named: [const { Cell::new(0) }; NAMED_CACHE],
        }
    };
    static LEASE: RefCell<Option<Lease>> = const { RefCell::new(None) };
}

// === Recording ===

/// Everything the hot path needs: shared, read-only after build.
#[derive(Debug)]
pub(crate) struct Capture {
    /// The recorder's id (a copy of `lanes.id`, one pointer hop closer).
    pub(crate) id: u64,
    pub(crate) clock: Clock,
    pub(crate) lanes: Arc<Lanes>,
    pub(crate) strings: Strings,
    pub(crate) enabled: bool,
}

impl Capture {
    pub(crate) fn new(clock: Clock, lanes: Lanes, enabled: bool) -> Capture {
        Capture {
            id: lanes.id,
            clock,
            lanes: Arc::new(lanes),
            strings: Strings::default(),
            enabled,
        }
    }

    /// Records one event on the calling thread's lane.
    #[inline(always)]
    pub(crate) fn record(&self, kind: EventKind, subject: u64, arg: u16) {
        if !self.enabled {
            return;
        }
        let event = Event::new(self.clock.raw(), kind, subject, arg);
        let done = LOCAL.try_with(|local| match local.ring.get() {
            Some(ring) if local.owner.get() == self.id => {
                ring.push(event);
                true
            }
            _ => false,
        });
        if done != Ok(true) {
            self.record_slow(event);
        }
    }

    /// Records a poll start and remembers the task as this thread's current one.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn poll_start(&self, task: u64, delay: u16) {
        if !self.enabled {
            return;
        }
        let event = Event::new(self.clock.raw(), EventKind::PollStart, task, delay);
        let done = LOCAL.try_with(|local| match local.ring.get() {
            Some(ring) if local.owner.get() == self.id => {
                local.task.set(task);
                ring.push(event);
                true
            }
            _ => false,
        });
        if done != Ok(true) {
            self.record_slow(event);
            let _ = LOCAL.try_with(|local| {
                if local.owner.get() == self.id {
                    local.task.set(task);
                }
            });
        }
    }

    /// The task this thread is polling, when it has not been named on this
    /// thread yet: the layer then names it after the span being entered.
    #[inline]
    pub(crate) fn unnamed_task(&self) -> Option<u64> {
        LOCAL
            .try_with(|local| {
                let task = local.task.get();
                (task != 0
                    && local.owner.get() == self.id
                    && local.named[(task as usize) & (NAMED_CACHE - 1)].get() != task)
                    .then_some(task)
            })
            .ok()
            .flatten()
    }

    /// Records the span name a task runs in, once per task and thread.
    pub(crate) fn name_task(&self, task: u64, name: u16) {
        let _ = LOCAL.try_with(|local| {
            local.named[(task as usize) & (NAMED_CACHE - 1)].set(task);
        });
        self.record(EventKind::TaskName, task, name);
    }

    #[cold]
    #[inline(never)]
    fn record_slow(&self, event: Event) {
        let pushed = LOCAL.try_with(|local| {
            if local.owner.get() != self.id {
                // This thread held a lane of another recorder (tests and
                // programs that build several): give it back first.
                let _ = LEASE.try_with(|l| l.borrow_mut().take());
                local.ring.set(None);
                for slot in &local.locations {
                    slot.set((0, 0));
                }
                for slot in &local.named {
                    slot.set(0);
                }
                local.owner.set(self.id);
            }
            if local.ring.get().is_none() {
                let Some((lane, ring)) = self.lanes.lease() else {
                    return false;
                };
                let leased = LEASE.try_with(|l| {
                    *l.borrow_mut() = Some(Lease {
                        lanes: Arc::downgrade(&self.lanes),
                        lane,
                    })
                });
                if leased.is_err() {
                    // The thread is exiting: nobody would return the lane.
                    self.lanes.release(lane);
                    return false;
                }
                local.ring.set(Some(ring));
            }
            match local.ring.get() {
                Some(ring) => {
                    ring.push(event);
                    true
                }
                None => false,
            }
        });
        if pushed != Ok(true) {
            self.lanes.dropped.fetch_add(1, StdOrdering::Relaxed);
        }
    }

    /// Records an event whose argument is a spawn location, interned through
    /// the thread's cache: one thread-local access in the common case.
    #[inline(always)]
    pub(crate) fn record_at(&self, kind: EventKind, subject: u64, loc: &'static Location<'static>) {
        if !self.enabled {
            return;
        }
        let key = loc as *const Location<'static> as usize;
        let slot = (key >> 3) & (LOCATION_CACHE - 1);
        let ts = self.clock.raw();
        let done = LOCAL.try_with(|local| match local.ring.get() {
            Some(ring) if local.owner.get() == self.id => {
                let (k, i) = local.locations[slot].get();
                if k != key {
                    return false;
                }
                if kind == EventKind::PollEnd {
                    local.task.set(0);
                }
                ring.push(Event::new(ts, kind, subject, i));
                true
            }
            _ => false,
        });
        if done != Ok(true) {
            let i = self.strings.intern(&location_string(loc));
            self.record_slow(Event::new(ts, kind, subject, i));
            let _ = LOCAL.try_with(|local| {
                if local.owner.get() == self.id {
                    local.locations[slot].set((key, i));
                    if kind == EventKind::PollEnd {
                        local.task.set(0);
                    }
                }
            });
        }
    }
}

/// Turns Tokio's opaque task id into a number, without formatting it.
///
/// `tokio::task::Id` wraps a `NonZeroU64` and derives `Hash`, which writes that
/// one integer; a hasher that keeps the last integer written recovers it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_recovered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let h = rt.spawn(async {});
        let id = h.id();
        assert_eq!(task_id_u64(&id).to_string(), id.to_string());
    }

    #[test]
    fn lanes_are_reused_after_threads_exit_and_capped() {
        let capture = Arc::new(Capture::new(Clock::new(), Lanes::new(16, 2), true));
        for _ in 0..5 {
            let c = capture.clone();
            std::thread::spawn(move || c.record(EventKind::Park, 0, 0))
                .join()
                .unwrap();
        }
        assert_eq!(capture.lanes.snapshot(None).len(), 1, "one lane reused");
        let c1 = capture.clone();
        let c2 = capture.clone();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let (b1, b2) = (barrier.clone(), barrier.clone());
        let t1 = std::thread::spawn(move || {
            c1.record(EventKind::Park, 0, 0);
            b1.wait();
        });
        let t2 = std::thread::spawn(move || {
            c2.record(EventKind::Park, 0, 0);
            b2.wait();
        });
        // Wait until both threads hold their lanes, then record a third thread.
        while capture.lanes.totals().0 < 7 {
            std::thread::yield_now();
        }
        capture.record(EventKind::Unpark, 0, 0);
        barrier.wait();
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(capture.lanes.snapshot(None).len(), 2);
        assert_eq!(capture.lanes.dropped.load(StdOrdering::Relaxed), 1);
    }
}
