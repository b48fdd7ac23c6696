//! The std-or-loom facade for the lock-free structures.
//!
//! Every lock-free structure takes its atomics from here, and writes its
//! protocol at its top: the segments (`segments/mod.rs`, with the
//! [`Queue`] below), the open-request table (`requests.rs`) and the shared
//! spawn-location and callsite table (`capture/address_table.rs`). Under
//! `--cfg blackbox_loom` they are model-checked with loom's atomics, which
//! explore every interleaving the memory model allows (the models are in
//! `segments/tests.rs`, `requests.rs` and `capture/address_table.rs`). Plain counters elsewhere use
//! `std`'s atomics directly: they order nothing. Tokio compiles its task hooks out under `cfg(loom)`,
//! which is why the cfg has our own name.

#[cfg(not(blackbox_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(blackbox_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The slot of `key` in a lock-free table of `2^bits` slots: the top bits
/// of a multiplicative (Fibonacci) hash, which depend on every bit of the
/// key (so span ids that share their low bits, and aligned addresses,
/// spread out), in three instructions on the hooks' paths.
#[inline(always)]
pub(crate) fn hash_slot(key: u64, bits: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

/// Locks a mutex, ignoring poisoning.
///
/// Telemetry must not crash the application because some unrelated thread
/// panicked while holding one of our locks: the data behind our locks stays
/// consistent at every await-free step, so the poison flag carries no meaning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bounded multi-producer multi-consumer FIFO of segment indices: lock-free
/// and allocation-free ([`crossbeam_queue::ArrayQueue`]); under loom, a mutex
/// around a `VecDeque` (the queue's own correctness is crossbeam's, the
/// model checks the segment protocol around it).
#[derive(Debug)]
pub(crate) struct Queue {
    #[cfg(not(blackbox_loom))]
    inner: crossbeam_queue::ArrayQueue<u32>,
    #[cfg(blackbox_loom)]
    inner: loom::sync::Mutex<std::collections::VecDeque<u32>>,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            #[cfg(not(blackbox_loom))]
            inner: crossbeam_queue::ArrayQueue::new(capacity.max(1)),
            #[cfg(blackbox_loom)]
            inner: loom::sync::Mutex::new(std::collections::VecDeque::with_capacity(capacity)),
        }
    }

    /// Appends; the queue never holds an index twice, so it is never full.
    pub(crate) fn push(&self, i: u32) {
        #[cfg(not(blackbox_loom))]
        {
            let pushed = self.inner.push(i);
            debug_assert!(pushed.is_ok(), "segment FIFO overflow");
        }
        #[cfg(blackbox_loom)]
        self.inner.lock().unwrap().push_back(i);
    }

    pub(crate) fn pop(&self) -> Option<u32> {
        #[cfg(not(blackbox_loom))]
        return self.inner.pop();
        #[cfg(blackbox_loom)]
        return self.inner.lock().unwrap().pop_front();
    }
}
