//! A bounded ring of [`Event`]s with one writer and any number of readers.
//!
//! Each thread that records owns one ring and is its only writer. A push never
//! blocks, never allocates and never fails: when the ring is full the oldest
//! event is overwritten. Snapshots copy the ring while the writer keeps
//! writing, and keep only the events that cannot have been overwritten during
//! the copy, so a reader never returns a torn event.
//!
//! The protocol is a sequence lock spread over the slots:
//!
//! - `head` counts the events ever pushed (a `u64`, so it never wraps and there
//!   is no ABA). Event `i` lives in slot `i % capacity`.
//! - The writer publishes event `i` by storing its two words and then
//!   `head = i + 1` with `Release`. Before it touches the slot of event `i`,
//!   which held event `i - capacity`, it issues a `Release` fence, so that a
//!   reader who sees any word of event `i` also sees `head >= i`.
//! - A reader loads `head` (`Acquire`) as `h1`, copies slots, issues an
//!   `Acquire` fence and loads `head` again as `h2`. Event `j` was stable
//!   during the copy only if no write of event `j + capacity` had started,
//!   which is what `j + capacity > h2` guarantees.
//!
//! The slots are atomics written with `Relaxed` stores, which compile to plain
//! moves on x86-64 and AArch64; the fences are compiler barriers on x86-64.
//! No `unsafe` is needed, and the protocol is checked by loom models and a
//! property test against a `VecDeque` model (see `tests.rs`).

use crate::event::Event;
use crate::sync::{AtomicU64, Ordering, fence};
use crossbeam_utils::CachePadded;

#[cfg(test)]
mod tests;

/// One event's storage: the two words of an [`Event`].
#[derive(Debug)]
struct Slot {
    ts: AtomicU64,
    word: AtomicU64,
}

/// A fixed-capacity, overwrite-oldest ring with a single writer.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Number of events ever pushed. Only the owning thread stores to it.
    head: CachePadded<AtomicU64>,
    /// `slots.len()` is a power of two; `mask == slots.len() - 1`.
    slots: Box<[Slot]>,
    mask: u64,
}

/// What a snapshot found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The events that were stable during the copy, oldest first.
    pub(crate) events: Vec<Event>,
    /// Events ever pushed when the snapshot ended.
    pub(crate) pushed: u64,
    /// Events that had been pushed but were overwritten (before or during the copy).
    pub(crate) overwritten: u64,
}

impl Ring {
    /// A ring holding `capacity` events, rounded up to a power of two (at least 2).
    pub(crate) fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity)
            .map(|_| Slot {
                ts: AtomicU64::new(0),
                word: AtomicU64::new(0),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            mask: capacity as u64 - 1,
            slots,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Appends an event, overwriting the oldest one when full.
    ///
    /// Must only be called by the ring's single writer: the owning thread.
    #[inline(always)]
    pub(crate) fn push(&self, event: Event) {
        // The writer is the only thread that stores `head`, so a relaxed load
        // reads its own last store.
        let i = self.head.load(Ordering::Relaxed);
        let slot = &self.slots[(i & self.mask) as usize];
        // Announce, before overwriting event `i - capacity`, that `head` is
        // already `i`: pairs with the reader's Acquire fence.
        fence(Ordering::Release);
        slot.ts.store(event.ts, Ordering::Relaxed);
        slot.word.store(event.word, Ordering::Relaxed);
        self.head.store(i + 1, Ordering::Release);
    }

    /// Forgets every event (only for a ring no thread writes: one taken from
    /// the pool for a new recorder).
    pub(crate) fn clear(&self) {
        self.head.store(0, Ordering::Release);
    }

    /// Events ever pushed.
    pub(crate) fn pushed(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Copies the events whose timestamps fall in `[from, to]` (raw clock), or all
    /// events with `None`, without stopping the writer.
    pub(crate) fn snapshot(&self, range: Option<(u64, u64)>) -> Snapshot {
        let cap = self.slots.len() as u64;
        let h1 = self.head.load(Ordering::Acquire);
        let first = h1.saturating_sub(cap);
        let mut copied = Vec::with_capacity((h1 - first) as usize);
        for i in first..h1 {
            let slot = &self.slots[(i & self.mask) as usize];
            let ts = slot.ts.load(Ordering::Relaxed);
            let word = slot.word.load(Ordering::Relaxed);
            copied.push((i, Event { ts, word }));
        }
        fence(Ordering::Acquire);
        let h2 = self.head.load(Ordering::Relaxed);
        // Event j is valid when no write of event j + cap had begun: j + cap > h2.
        let stable_from = (h2 + 1).saturating_sub(cap);
        let mut events = Vec::with_capacity(copied.len());
        for (i, e) in copied {
            if i < stable_from {
                continue;
            }
            if let Some((from, to)) = range
                && (e.ts < from || e.ts > to)
            {
                continue;
            }
            events.push(e);
        }
        Snapshot {
            events,
            pushed: h2,
            overwritten: stable_from.min(h2),
        }
    }
}
