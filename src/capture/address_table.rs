//! A lock-free map from a `'static` address to a small number, written once
//! per key and then only read: spawn locations to their index in the string
//! table (the capture), span callsites to what the layer decided for them.
//!
//! # Protocol
//!
//! Open addressing over `keys`/`values`, at most [`PROBES`] probes from the
//! key's hashed slot. A slot goes `key 0, value 0` (empty) → `key k, value 0`
//! (claimed: an inserter won the compare-exchange of `keys`) → `key k, value
//! i + 1` (published with Release). It never changes again, so after the
//! first miss per location the table's cache lines are only read and never
//! bounce between cores.
//!
//! - `insert` claims the first slot that is empty or already holds its key,
//!   then stores the value. Two inserters of one key claim the same slot and
//!   store the same index (the index comes from the string table, interned
//!   under its mutex, so it is one per location).
//! - `get` returns a value only when it read the key and then a non-zero
//!   value (Acquire, pairing with the Release store): never another key's
//!   value, never a torn one. A claimed slot without a value yet reads as a
//!   miss; the caller then takes the slow path (the string table's mutex),
//!   which is correct, only slower.
//! - A full probe run (16 slots of other keys) is a miss too: such a
//!   location always takes the slow path.
//!
//! The loom model `get_never_sees_another_keys_value` checks the claim and
//! publish against a racing reader.

use crate::sync::{AtomicU32, AtomicU64, Ordering, hash_slot};

/// Slots of the table (a power of two).
#[cfg(not(blackbox_loom))]
const SLOTS: usize = 4096;
#[cfg(blackbox_loom)]
const SLOTS: usize = 4;

/// Slots tried from the key's own.
const PROBES: usize = 16;

/// See the module's protocol.
#[derive(Debug)]
pub(crate) struct AddressTable {
    /// Fixed lengths, so that a masked index needs no bounds check.
    keys: Box<[AtomicU64; SLOTS]>,
    /// Value + 1 (0: claimed, not published yet).
    values: Box<[AtomicU32; SLOTS]>,
}

impl AddressTable {
    pub(crate) fn new() -> AddressTable {
        let keys: Box<[AtomicU64]> = (0..SLOTS).map(|_| AtomicU64::new(0)).collect();
        let values: Box<[AtomicU32]> = (0..SLOTS).map(|_| AtomicU32::new(0)).collect();
        AddressTable {
            keys: keys
                .try_into()
                .unwrap_or_else(|_| unreachable!("{SLOTS} slots")),
            values: values
                .try_into()
                .unwrap_or_else(|_| unreachable!("{SLOTS} slots")),
        }
    }

    /// The key's own slot ([`hash_slot`]: on every new span's callsite
    /// lookup), then the next ones.
    #[inline(always)]
    fn slot(key: u64, probe: usize) -> usize {
        hash_slot(key, SLOTS.trailing_zeros()).wrapping_add(probe) & (SLOTS - 1)
    }

    /// The value stored for `key` (never 0: an address), if published: the
    /// key's own slot inline, the other probes out of line.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<u32> {
        debug_assert!(key != 0, "0 marks an empty slot");
        let s = Self::slot(key, 0);
        if self.keys[s].load(Ordering::Acquire) == key {
            return self.values[s].load(Ordering::Acquire).checked_sub(1);
        }
        self.get_probing(key)
    }

    #[cold]
    #[inline(never)]
    fn get_probing(&self, key: u64) -> Option<u32> {
        for probe in 0..PROBES.min(SLOTS) {
            let s = Self::slot(key, probe);
            match self.keys[s].load(Ordering::Acquire) {
                0 => return None,
                k if k == key => {
                    let v = self.values[s].load(Ordering::Acquire);
                    return v.checked_sub(1);
                }
                _ => {}
            }
        }
        None
    }

    /// Stores `value` (below `u32::MAX`) for `key`; a table with no free
    /// slot in reach keeps nothing (the key always misses). A key's value
    /// never changes: a second insert must store the same value.
    pub(crate) fn insert(&self, key: u64, value: u32) {
        debug_assert!(value < u32::MAX, "values are stored plus one");
        debug_assert!(key != 0, "0 marks an empty slot");
        for probe in 0..PROBES.min(SLOTS) {
            let s = Self::slot(key, probe);
            match self.keys[s].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {}
                Err(k) if k == key => {}
                Err(_) => continue,
            }
            let before = self.values[s].swap(value + 1, Ordering::Release);
            debug_assert!(
                before == 0 || before == value + 1,
                "a key's value never changes"
            );
            return;
        }
    }
}

#[cfg(all(test, not(blackbox_loom)))]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_read_back_and_others_miss() {
        let t = AddressTable::new();
        for k in 1..=3_000u64 {
            t.insert(k * 64, (k % 60_000) as u32);
        }
        let found = (1..=3_000u64)
            .filter(|&k| t.get(k * 64) == Some((k % 60_000) as u32))
            .count();
        // At 73% load a few keys may find no slot in 16 probes; none reads wrong.
        assert!(found > 2_900, "{found}");
        for k in 1..=3_000u64 {
            if let Some(v) = t.get(k * 64) {
                assert_eq!(v, (k % 60_000) as u32, "key {k} read another's index");
            }
        }
        // Two inserts of one key agree; an unknown key misses.
        t.insert(64, 1);
        assert_eq!(t.get(64), Some(1));
        assert_eq!(t.get(7), None);
    }
}

#[cfg(all(test, blackbox_loom))]
mod models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two inserters of different keys (which may collide in the 4-slot
    /// table) race a reader: the reader sees a key's own index or a miss.
    #[test]
    fn get_never_sees_another_keys_value() {
        loom::model(|| {
            let t = Arc::new(AddressTable::new());
            let a = {
                let t = t.clone();
                thread::spawn(move || t.insert(8, 1))
            };
            let b = {
                let t = t.clone();
                thread::spawn(move || t.insert(16, 2))
            };
            for _ in 0..2 {
                assert!(matches!(t.get(8), None | Some(1)));
                assert!(matches!(t.get(16), None | Some(2)));
            }
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(t.get(8), Some(1));
            assert_eq!(t.get(16), Some(2));
        });
    }
}
