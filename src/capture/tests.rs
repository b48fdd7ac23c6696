use super::*;
use crate::event::EventKind;

fn lanes(c: &Capture) -> Vec<RawLane> {
    c.lanes(None)
}

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
fn events_read_back_in_order_across_segments() {
    // 16-word segments: a segment switch every few events.
    let c = Capture::with_segment_words(Clock::new(), 128, 16, true);
    // The spawn registers its location (a poll end carries only its key):
    // registered here, as the tasks' spawns are not recorded.
    let here = Location::caller();
    c.location_index(here, 0);
    for i in 1..=200u64 {
        c.poll_start(i, 0);
        c.record_in_poll(EventKind::RequestEnter, 7, 0, false);
        c.record_in_poll(EventKind::RequestExit, 7, 0, true);
        c.poll_end(here);
    }
    c.record(EventKind::Park, 0, 0);
    let l = lanes(&c);
    assert_eq!(l.len(), 1);
    let ev = &l[0].events;
    assert_eq!(ev.len(), 801);
    assert_eq!(l[0].events_lost, 0);
    for (i, chunk) in ev.chunks(4).take(200).enumerate() {
        let task = i as u64 + 1;
        assert_eq!(chunk[0].kind(), Some(EventKind::PollStart));
        assert_eq!(chunk[0].subject(), task);
        assert_eq!(
            chunk[1].ts, chunk[0].ts,
            "enter inside a poll takes its start"
        );
        assert_eq!(chunk[3].kind(), Some(EventKind::PollEnd));
        assert_eq!(
            chunk[3].subject(),
            task,
            "a poll end belongs to the last start"
        );
        assert_eq!(chunk[3].arg(), 0, "a poll end names its location");
        assert_eq!(chunk[2].ts, chunk[3].ts, "exit inside a poll takes its end");
        assert!(chunk[3].ts >= chunk[0].ts);
    }
    for w in ev.windows(2) {
        assert!(w[0].ts <= w[1].ts, "time never goes back");
    }
    assert_eq!(c.segments().recorded(), 801);
    assert_eq!(c.strings.all().len(), 1, "the location was interned once");
}

#[test]
fn history_is_overwritten_oldest_first_and_counted() {
    let c = Capture::with_segment_words(Clock::new(), 4, 16, true);
    for i in 1..=1000u64 {
        c.record(EventKind::TaskTerminate, i, 0);
    }
    let l = lanes(&c);
    let ev = &l[0].events;
    let last = ev.last().unwrap().subject();
    assert_eq!(last, 1000);
    // What is held is the newest suffix, without gaps.
    for w in ev.windows(2) {
        assert_eq!(w[0].subject() + 1, w[1].subject());
    }
    let s = c.segments();
    assert_eq!(s.recorded(), 1000);
    assert_eq!(s.overwritten() + ev.len() as u64, 1000);
    assert_eq!(c.dropped(), 0);
}

#[test]
fn large_clock_gaps_and_task_ids_past_32_bits_survive() {
    let c = Capture::with_segment_words(Clock::new(), 8, 64, true);
    let t0 = c.clock.raw();
    let big = (3u64 << 32) | 5;
    c.record_at_time(EventKind::TaskSpawn, big, 0, t0);
    c.record_at_time(EventKind::Unpark, 0, 0, t0 + (1 << 40));
    c.record_at_time(EventKind::TaskTerminate, 9, 0, t0 + (1 << 40) + 3);
    let ev = &lanes(&c)[0].events;
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0].ts, t0);
    assert_eq!(ev[0].subject(), big & crate::event::MAX_SUBJECT);
    assert_eq!(ev[1].ts, t0 + (1 << 40));
    assert_eq!(ev[2].ts, t0 + (1 << 40) + 3);
    assert_eq!(ev[2].subject(), 9);
}

#[test]
fn every_thread_records_and_idle_threads_hold_one_segment() {
    let c = Arc::new(Capture::with_segment_words(Clock::new(), 700, 64, true));
    let threads: Vec<_> = (0..600)
        .map(|i| {
            let c = c.clone();
            std::thread::Builder::new()
                .name(format!("t{i}"))
                .spawn(move || {
                    c.record(EventKind::ThreadStart, 0, 0);
                    c.record(EventKind::Park, 0, 0);
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.dropped(), 0);
    let l = lanes(&c);
    assert_eq!(l.len(), 600);
    assert!(
        l.iter()
            .all(|l| l.events.len() == 2 && l.thread.starts_with('t'))
    );
    // Exited threads sealed their segments: all can be reused.
    let more = Arc::new(Capture::with_segment_words(Clock::new(), 2, 64, true));
    for _ in 0..50 {
        let m = more.clone();
        std::thread::spawn(move || m.record(EventKind::Park, 0, 0))
            .join()
            .unwrap();
    }
    assert_eq!(more.dropped(), 0, "segments of exited threads are reused");
}

#[test]
fn a_thread_writing_for_two_recorders_keeps_both() {
    let a = Capture::with_segment_words(Clock::new(), 8, 64, true);
    let b = Capture::with_segment_words(Clock::new(), 8, 64, true);
    a.record(EventKind::Park, 1, 0);
    b.record(EventKind::Park, 2, 0);
    a.record(EventKind::Unpark, 3, 0);
    assert_eq!(lanes(&a).iter().map(|l| l.events.len()).sum::<usize>(), 2);
    assert_eq!(lanes(&b)[0].events.len(), 1);
}

mod cuts {
    use super::*;
    use crate::analysis::{Poll, Visitor, scan_cut, scan_window};
    use crate::window::{Cut, Window};
    use proptest::prelude::*;

    #[derive(Default)]
    struct Polls(Vec<Poll>);
    impl Visitor for Polls {
        fn poll(&mut self, p: &Poll) {
            self.0.push(*p);
        }
    }

    proptest! {
        /// A cut read as it goes (one segment decoded at a time, events
        /// waiting for a later segment's time held back), its segments
        /// copied or held in place, holds what the same segments decoded
        /// at once hold: the same events, losses, first times, polls and
        /// export plan, over overwrites and any range. Dropped, it releases
        /// every hold.
        #[test]
        fn a_cut_streams_what_decoding_at_once_gives(
            steps in prop::collection::vec((0u8..4, 1u64..50), 1..400),
            segments in 3usize..12,
            from_pct in 0u64..100,
            len_pct in 0u64..100,
            hold in any::<bool>(),
        ) {
            // 16-word segments: a switch every few events, so a request
            // exit waiting for its poll's end crosses segments often.
            let c = Capture::with_segment_words(Clock::new(), segments, 16, true);
            for (what, task) in steps {
                match what {
                    0 => {
                        c.poll_start(task, 0);
                        c.record_in_poll(EventKind::RequestEnter, 7, 0, false);
                        c.record_in_poll(EventKind::RequestExit, 7, 0, true);
                        c.poll_end(Location::caller());
                    }
                    1 => c.poll_start(task, 0),
                    2 => c.poll_end(Location::caller()),
                    _ => c.record(EventKind::TaskSpawn, task, 0),
                }
            }
            // A timed event last: events still waiting for one would take
            // the time of each read.
            c.record(EventKind::Park, 0, 0);
            let anchor = c.clock.anchor();
            let all = c.lanes(None);
            let (first, last) = all
                .iter()
                .flat_map(|l| l.events.iter().map(|e| e.ts))
                .fold((u64::MAX, 0), |(a, b), t| (a.min(t), b.max(t)));
            prop_assume!(first <= last);
            let span = last - first;
            let from = first + span * from_pct / 100;
            let to = from + span * len_pct / 100;
            let (from_ns, to_ns) = (anchor.to_unix_ns(from), anchor.to_unix_ns(to));
            let request = crate::window::SlowRequest::new(
                7,
                "r",
                opentelemetry::trace::TraceId::from(1u128),
                opentelemetry::trace::SpanId::from(1u64),
                from_ns,
                to_ns,
            );
            let header = Window {
                from_unix_ns: from_ns,
                to_unix_ns: to_ns,
                requests: vec![request],
                task_hooks: true,
                ..Window::default()
            };
            // The model: every lane decoded at once, in UNIX time, cut to
            // the range; a lane stays when it has events there or lost some.
            let lanes = c
                .lanes(Some((from, to)))
                .into_iter()
                .filter_map(|l| {
                    let events: Vec<Event> = l
                        .events
                        .into_iter()
                        .map(|mut e| {
                            e.ts = anchor.to_unix_ns(e.ts);
                            e
                        })
                        .filter(|e| e.ts >= from_ns && e.ts <= to_ns)
                        .collect();
                    (!events.is_empty() || l.events_lost > 0).then_some(crate::window::Lane {
                        index: l.lane,
                        thread: l.thread,
                        events,
                        events_lost: l.events_lost,
                    })
                })
                .collect();
            let decoded = Window {
                lanes,
                ..header.clone()
            };
            let lanes = c.segment_lanes(Some((from, to)), None, hold);
            let held_segments: usize = lanes.iter().map(SegmentLane::held).sum();
            prop_assert_eq!(held_segments as u64, c.segments().held());
            prop_assert!(held_segments <= segments / crate::segments::HOLD_SHARE);
            prop_assert!(hold || held_segments == 0);
            let cut = Cut::new(header, lanes, anchor);
            let window = cut.to_window();
            prop_assert_eq!(&window, &decoded);
            prop_assert_eq!(cut.events(), decoded.events());
            for (i, lane) in decoded.lanes.iter().enumerate() {
                prop_assert_eq!(cut.first_event_ts(i), lane.events.first().map(|e| e.ts));
                prop_assert!(cut.header().lanes[i].events.is_empty());
            }
            let (mut streamed, mut held) = (Polls::default(), Polls::default());
            scan_cut(&cut, &mut streamed);
            scan_window(&decoded, &mut held);
            prop_assert_eq!(streamed.0, held.0);
            // And the export plan, verdict included, is the same.
            let budget = crate::export::plan::Budget::new(40);
            prop_assert_eq!(
                crate::export::plan::plan_of(&cut, budget),
                crate::export::plan::plan(&decoded, budget)
            );
            // A clone reads its own copy of what the cut holds.
            let copy = cut.clone();
            drop(cut);
            prop_assert_eq!(c.segments().held(), 0);
            prop_assert_eq!(&copy.to_window(), &decoded);
        }
    }
}

/// A cut's copy is bounded: with a byte limit it keeps the oldest segments
/// of the range, on every thread up to one moment, and counts the events
/// it leaves out as lost.
#[test]
fn a_limited_copy_keeps_the_oldest_part_and_counts_the_rest() {
    let c = Arc::new(Capture::with_segment_words(Clock::new(), 256, 16, true));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..150u64 {
                    c.record(EventKind::TaskSpawn, t * 1000 + i, 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = c.segment_lanes(None, None, false);
    let everything: usize = all.iter().map(SegmentLane::bytes).sum();
    let recorded: u64 = c.lanes(None).iter().map(|l| l.events.len() as u64).sum();
    assert_eq!(recorded, 450);
    let limit = everything / 3;
    let some = c.segment_lanes(Some((0, u64::MAX)), Some(limit), false);
    let kept: usize = some.iter().map(SegmentLane::bytes).sum();
    assert!(kept <= limit, "{kept} bytes copied, limit {limit}");
    assert!(
        kept + 3 * 16 * 4 > limit,
        "as much as fits is kept: {kept} of {limit}"
    );
    let (mut events, mut lost, mut newest_kept) = (0u64, 0u64, 0u64);
    for lane in some {
        lost += lane.decode_with(|e| {
            events += 1;
            newest_kept = newest_kept.max(e.ts);
        });
    }
    assert_eq!(events + lost, 450, "every event is kept or counted lost");
    assert!(lost > 0);
    // What is kept is everything up to one moment, on every thread.
    let oldest_left: u64 = c
        .lanes(None)
        .iter()
        .flat_map(|l| l.events.iter().map(|e| e.ts))
        .filter(|&t| t > newest_kept)
        .min()
        .unwrap();
    for lane in c.lanes(None) {
        for e in &lane.events {
            assert!(
                e.ts > newest_kept || e.ts < oldest_left,
                "an event before the moment kept was left out"
            );
        }
    }
}

/// The kinds and subjects of a lane's events, for comparing sequences.
fn kinds(events: &[Event]) -> Vec<(EventKind, u64)> {
    events
        .iter()
        .map(|e| (e.kind().expect("known kind"), e.subject()))
        .collect()
}

#[test]
fn a_request_exit_inside_a_poll_is_written_with_the_polls_end() {
    use EventKind::*;
    let c = Capture::with_segment_words(Clock::new(), 64, 1024, true);
    let here = Location::caller();
    let (span, tag) = (0x4000_0001, 3);
    // Poll 1: an `Instrumented` future polled, then dropped: enter, exit,
    // enter, exit. One pair is written, its exit with the poll's end.
    c.poll_start(1, 0);
    c.request_enter(7, span, tag);
    assert!(c.defer_exit(span, tag));
    assert!(!c.reenter(span, tag + 1), "another layer's span");
    assert!(c.reenter(span, tag));
    assert!(c.defer_exit(span, tag));
    c.poll_end(here);
    // Poll 2: a spawn after the exit is not the request's: the exit goes first.
    c.poll_start(2, 0);
    c.request_enter(7, span, tag);
    c.spawn(3, here);
    assert!(c.defer_exit(span, tag));
    c.spawn(4, here);
    c.poll_end(here);
    // Poll 3: another request entered after the exit: the exit goes first.
    c.poll_start(1, 0);
    c.request_enter(7, span, tag);
    assert!(c.defer_exit(span, tag));
    c.request_enter(8, span + 1, tag);
    assert!(!c.defer_exit(span, tag), "not the span entered last");
    assert!(c.defer_exit(span + 1, tag));
    c.poll_end(here);
    // Outside a poll an exit is never deferred.
    c.request_enter(9, span + 2, tag);
    assert!(!c.defer_exit(span + 2, tag));
    c.request_exit(9);

    let l = lanes(&c);
    let ev = &l[0].events;
    assert_eq!(
        kinds(ev),
        vec![
            (PollStart, 1),
            (RequestEnter, 7),
            (RequestExit, 7),
            (PollEnd, 1),
            (PollStart, 2),
            (RequestEnter, 7),
            (TaskSpawn, 3),
            (RequestExit, 7),
            (TaskSpawn, 4),
            (PollEnd, 2),
            (PollStart, 1),
            (RequestEnter, 7),
            (RequestExit, 7),
            (RequestEnter, 8),
            (RequestExit, 8),
            (PollEnd, 1),
            (RequestEnter, 9),
            (RequestExit, 9),
        ]
    );
    // Every exit inside a poll has the time of the poll's end, as before.
    for (i, e) in ev.iter().enumerate() {
        if e.kind() == Some(RequestExit) && e.subject() != 9 {
            let end = ev[i..].iter().find(|e| e.kind() == Some(PollEnd));
            assert_eq!(Some(e.ts), end.map(|e| e.ts), "exit {i}");
        }
    }
}

#[test]
fn a_known_runtime_span_leaves_the_task_unnamed_without_asking_again() {
    let c = Capture::with_segment_words(Clock::new(), 64, 1024, true);
    let here = Location::caller();
    let (tokio_span, own_span) = (0x4000_0011, 0x4000_0012);
    c.poll_start(5, 0);
    // The thread is adopted by its first event: the poll start.
    assert_eq!(
        c.unnamed_task(tokio_span),
        Some(5),
        "not known yet: the layer looks"
    );
    c.remember_runtime_span(tokio_span);
    assert_eq!(
        c.unnamed_task(tokio_span),
        None,
        "known: nothing to look up"
    );
    assert_eq!(
        c.unnamed_task(own_span),
        Some(5),
        "the task's own span still names it"
    );
    c.name_task(5, 0);
    assert_eq!(c.unnamed_task(own_span), None, "named");
    c.poll_end(here);
}

/// Issue 27, finding 6: a writer left without a segment (every other one
/// pinned or held, as when windows wait for a stuck exporter and slow
/// requests are pinned) tried to claim one on every event, and each try
/// popped and pushed back every pinned segment: O(segments) shared
/// atomics per event, a CPU cliff in the incident. Now it tries again only
/// once a segment may have become free (a seal, a release or an unpin).
#[test]
fn a_writer_without_a_segment_does_not_retry_on_every_event() {
    let c = Capture::with_segment_words(Clock::new(), 64, 16, true);
    // Every segment written and sealed at least once.
    for i in 1..=2_000u64 {
        c.record(EventKind::TaskTerminate, i, 0);
    }
    let s = c.segments();
    let snap = s.snapshot(None, c.clock.raw(), None, false);
    let mut pinned = Vec::new();
    // Every segment, the one being written too: once full, it is sealed
    // pinned, and nothing is left to claim.
    for seg in &snap.segments {
        if s.pin(seg.index, seg.generation) {
            pinned.push(seg.index);
        }
    }
    assert_eq!(pinned.len(), 64);
    let dropped = c.dropped();
    let tries = s.claim_pops();
    for i in 0..10_000u64 {
        c.record(EventKind::TaskTerminate, i, 0);
    }
    let lost = c.dropped() - dropped;
    assert!(
        lost > 9_000,
        "the writer ran out of segments: {lost} dropped"
    );
    let pops = s.claim_pops() - tries;
    assert!(
        pops <= 2 * 63,
        "{pops} segments popped and pushed back for {lost} events dropped: the claim was retried on every event"
    );
    // A segment freed: the writer takes it at its next event.
    s.unpin(pinned[0]);
    let dropped = c.dropped();
    c.record(EventKind::TaskTerminate, 1, 0);
    assert_eq!(c.dropped(), dropped, "the freed segment was claimed");
}

#[test]
fn location_keys_name_a_location_and_never_another() {
    let keys = LocationKeys::default();
    keys.insert(0x1000, 3);
    keys.insert(0x1000, 3);
    let key = |addr: usize| codec::location_key(addr) as u32;
    assert_eq!(keys.snapshot().get(&key(0x1000)).map(|e| e.1), Some(3));
    // Another address with the same key (1 GiB away): neither is named.
    keys.insert(0x1000 + (1 << 30), 4);
    assert_eq!(key(0x1000 + (1 << 30)), key(0x1000));
    assert_eq!(
        keys.snapshot().get(&key(0x1000)).map(|e| e.1),
        Some(NO_STRING)
    );
    keys.insert(0x1000, 3);
    assert_eq!(
        keys.snapshot().get(&key(0x1000)).map(|e| e.1),
        Some(NO_STRING)
    );
}
