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
    for i in 1..=200u64 {
        c.poll_start(i, 0);
        c.record_in_poll(EventKind::RequestEnter, 7, 0, false);
        c.record_in_poll(EventKind::RequestExit, 7, 0, true);
        c.poll_end(Location::caller());
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
