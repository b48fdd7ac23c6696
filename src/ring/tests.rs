//! Ring tests: unit, a property test against a `VecDeque` model, and loom
//! models of push vs. snapshot and overwrite vs. read.

use super::*;
use crate::event::{Event, EventKind};

fn ev(i: u64) -> Event {
    Event::new(i, EventKind::PollStart, i, (i % 7) as u16)
}

#[cfg(not(blackbox_loom))]
mod plain {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn capacity_rounds_up_to_power_of_two() {
        assert_eq!(Ring::new(0).capacity(), 2);
        assert_eq!(Ring::new(5).capacity(), 8);
        assert_eq!(Ring::new(1024).capacity(), 1024);
    }

    #[test]
    fn empty_snapshot() {
        let r = Ring::new(8);
        let s = r.snapshot(None);
        assert!(s.events.is_empty());
        assert_eq!((s.pushed, s.overwritten), (0, 0));
    }

    proptest! {
        /// Any sequence of pushes and snapshots matches a bounded `VecDeque`,
        /// keeping one slot of slack for the slot the writer may be touching.
        #[test]
        fn matches_vecdeque_model(cap in 2usize..64, ops in prop::collection::vec(0u8..8, 0..400),
                                  lo in 0u64..400, width in 0u64..400) {
            let ring = Ring::new(cap);
            let cap = ring.capacity();
            let mut model: VecDeque<Event> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                if op == 0 {
                    let s = ring.snapshot(None);
                    // With no concurrent writer, the oldest slot is still
                    // conservatively dropped once the ring has wrapped.
                    let expect: Vec<Event> = if model.len() == cap {
                        model.iter().skip(1).copied().collect()
                    } else {
                        model.iter().copied().collect()
                    };
                    prop_assert_eq!(&s.events, &expect);
                    prop_assert_eq!(s.pushed, next);
                    prop_assert_eq!(s.overwritten + s.events.len() as u64, next);
                    let ranged = ring.snapshot(Some((lo, lo + width)));
                    let expect_ranged: Vec<Event> =
                        expect.iter().filter(|e| e.ts >= lo && e.ts <= lo + width).copied().collect();
                    prop_assert_eq!(ranged.events, expect_ranged);
                } else {
                    let e = ev(next);
                    next += 1;
                    ring.push(e);
                    if model.len() == cap {
                        model.pop_front();
                    }
                    model.push_back(e);
                }
            }
        }
    }

    /// A real writer thread racing a reader: every event a snapshot returns is
    /// one that was pushed, in order, with no gaps inside the stable range.
    #[test]
    fn concurrent_snapshots_are_never_torn() {
        use std::sync::Arc;
        let ring = Arc::new(Ring::new(64));
        let writer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 1..=200_000u64 {
                    ring.push(Event { ts: i, word: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) });
                }
            })
        };
        let mut checked = 0;
        while !writer.is_finished() || checked == 0 {
            let s = ring.snapshot(None);
            for w in s.events.windows(2) {
                assert_eq!(w[1].ts, w[0].ts + 1, "gap or reorder in a snapshot");
            }
            for e in &s.events {
                assert_eq!(e.word, e.ts.wrapping_mul(0x9E37_79B9_7F4A_7C15), "torn event {e:?}");
            }
            if let Some(first) = s.events.first() {
                assert_eq!(first.ts, s.overwritten + 1);
            }
            checked += 1;
        }
        writer.join().unwrap();
    }
}

#[cfg(blackbox_loom)]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn check(s: &Snapshot) {
        for e in &s.events {
            // Every valid event is whole: its word was made from its timestamp.
            assert_eq!(e, &ev(e.ts), "torn event");
        }
        for w in s.events.windows(2) {
            assert_eq!(w[1].ts, w[0].ts + 1);
        }
    }

    /// A writer pushing into a ring that is not yet full, against a snapshot.
    #[test]
    fn push_vs_snapshot() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(4));
            let w = {
                let ring = ring.clone();
                thread::spawn(move || {
                    ring.push(ev(1));
                    ring.push(ev(2));
                })
            };
            let s = ring.snapshot(None);
            check(&s);
            assert!(s.events.len() as u64 <= s.pushed);
            w.join().unwrap();
            let s = ring.snapshot(None);
            assert_eq!(s.events, vec![ev(1), ev(2)]);
        });
    }

    /// A writer that wraps around and overwrites the slots a reader is copying.
    #[test]
    fn overwrite_vs_read() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            ring.push(ev(1));
            ring.push(ev(2));
            let w = {
                let ring = ring.clone();
                thread::spawn(move || {
                    ring.push(ev(3));
                    ring.push(ev(4));
                })
            };
            let s = ring.snapshot(None);
            check(&s);
            assert!(s.overwritten + s.events.len() as u64 <= s.pushed);
            w.join().unwrap();
        });
    }
}
