//! The std-or-loom facade: the only module that names `std::sync::atomic`.
//!
//! Under `--cfg blackbox_loom` the ring is model-checked with loom's atomics,
//! which explore every interleaving the memory model allows. Tokio compiles its
//! task hooks out under `cfg(loom)`, which is why the cfg has our own name.

#[cfg(not(blackbox_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

#[cfg(blackbox_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, ignoring poisoning.
///
/// Telemetry must not crash the application because some unrelated thread
/// panicked while holding one of our locks: the data behind our locks stays
/// consistent at every await-free step, so the poison flag carries no meaning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
