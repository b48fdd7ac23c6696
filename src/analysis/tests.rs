use super::*;
use crate::dump::{self, DumpReader, FileKind};
use proptest::prelude::*;

fn window(events: Vec<Event>) -> Window {
    Window {
        from_unix_ns: 100,
        to_unix_ns: 1_000,
        lanes: vec![Lane {
            index: 3,
            thread: "tokio-runtime-worker".into(),
            events,
            events_lost: 0,
        }],
        ..Window::default()
    }
}

fn ev(ts: u64, kind: EventKind, subject: u64) -> Event {
    Event::new(ts, kind, subject, NO_STRING)
}

#[test]
fn an_end_without_a_start_begins_where_the_lane_was_last_free() {
    use EventKind::*;
    let w = window(vec![
        ev(200, PollEnd, 1),
        ev(300, PollStart, 2),
        ev(350, PollEnd, 2),
        ev(500, PollEnd, 4), // its start was lost: the lane was free from 350
    ]);
    let tasks = w.tasks();
    let poll = |id: u64| tasks.iter().find(|t| t.id == id).map(|t| t.polls[0]);
    let first = poll(1).unwrap();
    assert_eq!(
        (first.start_ns, first.end_ns, first.complete),
        (100, 200, false)
    );
    let lost = poll(4).unwrap();
    assert_eq!(
        (lost.start_ns, lost.end_ns, lost.complete),
        (350, 500, false)
    );
    assert!(poll(2).unwrap().complete);
}

#[test]
fn a_start_without_an_end_is_cut_at_the_next_start_and_at_the_window_end() {
    use EventKind::*;
    let w = window(vec![ev(200, PollStart, 1), ev(300, PollStart, 2)]);
    let tasks = w.tasks();
    assert_eq!(
        (tasks[0].polls[0].end_ns, tasks[0].polls[0].complete),
        (300, false)
    );
    assert_eq!(
        (tasks[1].polls[0].end_ns, tasks[1].polls[0].complete),
        (1_000, false)
    );
    // The worker's busy time is the same polls: 100 + 700.
    assert_eq!(w.workers()[0].busy_ns, 800);
}

#[test]
fn an_end_of_another_task_closes_the_open_poll() {
    use EventKind::*;
    let w = window(vec![ev(200, PollStart, 1), ev(300, PollEnd, 2)]);
    let tasks = w.tasks();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].polls[0].duration_ns(), 100);
    assert_eq!(tasks[1].polls[0].duration_ns(), 0);
    assert_eq!(w.workers()[0].polls, 2);
}

#[test]
fn request_spans_open_at_the_edges_are_cut_there() {
    use EventKind::*;
    let w = window(vec![
        ev(150, RequestExit, 9),
        ev(400, RequestEnter, 10),
        ev(410, TaskSpawn, 77),
    ]);
    let spans = w.request_spans();
    assert_eq!(spans[0].entered, vec![(3, 100, 150)]);
    assert_eq!(spans[1].entered, vec![(3, 400, 1_000)]);
    assert_eq!(w.tasks()[0].requests, vec![10]);
}

#[test]
fn a_task_works_for_the_request_entered_in_its_poll() {
    use EventKind::*;
    let w = window(vec![
        ev(200, PollStart, 5),
        ev(210, RequestEnter, 42),
        ev(220, RequestExit, 42),
        ev(230, PollEnd, 5),
    ]);
    assert_eq!(w.tasks()[0].requests, vec![42]);
}

#[test]
fn a_task_is_named_after_the_first_request_it_entered_unless_it_has_a_name() {
    use EventKind::*;
    let mut w = window(vec![
        Event::new(150, RequestOpen, 42, 0),
        Event::new(160, RequestOpen, 43, 1),
        // Task 5 enters request 42, then 43: named after 42.
        ev(200, PollStart, 5),
        ev(200, RequestEnter, 42),
        ev(230, RequestExit, 42),
        ev(230, PollEnd, 5),
        ev(240, PollStart, 5),
        ev(240, RequestEnter, 43),
        ev(250, RequestExit, 43),
        ev(250, PollEnd, 5),
        // Task 6 has a name of its own, then enters request 42.
        ev(300, PollStart, 6),
        Event::new(300, TaskName, 6, 2),
        ev(300, RequestEnter, 42),
        ev(330, RequestExit, 42),
        ev(330, PollEnd, 6),
        // Task 7 is spawned inside request 42 but never enters it.
        ev(400, PollStart, 5),
        ev(400, RequestEnter, 42),
        Event::new(410, TaskSpawn, 7, NO_STRING),
        ev(420, RequestExit, 42),
        ev(420, PollEnd, 5),
        ev(430, PollStart, 7),
        ev(440, PollEnd, 7),
    ]);
    w.strings = vec!["GET /a".into(), "GET /b".into(), "backend".into()];
    let tasks = w.tasks();
    let name = |id: u64| tasks.iter().find(|t| t.id == id).map(|t| t.name());
    assert_eq!(name(5).as_deref(), Some("GET /a"));
    assert_eq!(name(6).as_deref(), Some("backend"));
    assert_eq!(name(7).as_deref(), Some("task 7"));
    assert_eq!(
        tasks.iter().find(|t| t.id == 7).map(|t| t.requests.clone()),
        Some(vec![42])
    );
}

fn arb_lane() -> impl Strategy<Value = Vec<Event>> {
    let kinds = prop::sample::select(vec![
        EventKind::PollStart,
        EventKind::PollEnd,
        EventKind::PollEnd,
        EventKind::TaskSpawn,
        EventKind::RequestEnter,
        EventKind::RequestExit,
        EventKind::Park,
        EventKind::Unpark,
    ]);
    prop::collection::vec((1u64..50, kinds, 1u64..6), 0..60).prop_map(|steps| {
        let mut ts = 100;
        steps
            .into_iter()
            .map(|(dt, kind, subject)| {
                ts += dt;
                ev(ts, kind, subject)
            })
            .collect()
    })
}

proptest! {
    /// Whatever the lane holds (lost starts and ends, odd orders), polls stay
    /// inside the window, never overlap on a lane, and a worker's busy time
    /// is the sum of the tasks' polls: the readers cannot disagree.
    #[test]
    fn polls_never_overlap_and_workers_agree_with_tasks(a in arb_lane(), b in arb_lane()) {
        let mut w = window(a);
        w.to_unix_ns = 5_000;
        w.lanes.push(Lane { index: 4, events: b, ..Lane::default() });
        let tasks = w.tasks();
        for lane in &w.lanes {
            let mut polls: Vec<Poll> = tasks
                .iter()
                .flat_map(|t| t.polls.iter().copied())
                .filter(|p| p.lane == lane.index)
                .collect();
            polls.sort_by_key(|p| (p.start_ns, p.end_ns));
            for p in &polls {
                prop_assert!(p.start_ns >= w.from_unix_ns && p.end_ns <= w.to_unix_ns);
            }
            for pair in polls.windows(2) {
                prop_assert!(pair[0].end_ns <= pair[1].start_ns, "{:?}", pair);
            }
            let busy: u64 = polls.iter().map(Poll::duration_ns).sum();
            let worker = w.workers().into_iter().find(|x| x.lane == lane.index).unwrap();
            prop_assert_eq!(worker.busy_ns, busy);
            prop_assert_eq!(worker.polls, polls.len() as u64);
        }
    }

    /// Streaming a file gives the same polls as the window in memory.
    #[test]
    fn streaming_a_file_pairs_as_the_window_does(a in arb_lane(), b in arb_lane()) {
        let mut w = window(a);
        w.to_unix_ns = 5_000;
        w.lanes.push(Lane { index: 4, events: b, ..Lane::default() });
        let mut bytes = Vec::new();
        dump::write_window(&mut bytes, &w, FileKind::Capture).unwrap();
        #[derive(Default)]
        struct All(Vec<Poll>);
        impl Visitor for All {
            fn poll(&mut self, p: &Poll) { self.0.push(*p) }
        }
        let (mut streamed, mut held) = (All::default(), All::default());
        scan_dump(&mut DumpReader::new(&bytes[..]).unwrap(), &mut streamed).unwrap();
        scan_window(&w, &mut held);
        prop_assert_eq!(streamed.0, held.0);
    }
}

proptest! {
    // Many generated windows poll one task on two lanes at once, and are
    // rejected (see below).
    #![proptest_config(ProptestConfig { max_global_rejects: 50_000, ..ProptestConfig::default() })]

    /// The verdict keeps only the polls near its request (`digest`): it
    /// says what it would say with every poll of the window at hand.
    #[test]
    fn the_verdict_needs_only_the_polls_near_its_request(
        a in arb_lane(),
        b in arb_lane(),
        request in 1u64..6,
        start in 100u64..3_000,
        len in 0u64..2_000,
    ) {
        // Microseconds apart, so some polls are far from the request
        // (`ADJACENT_NS` is 200 µs) and some are long (1 ms and more).
        let us = |mut events: Vec<Event>| {
            for e in &mut events {
                e.ts *= 20_000;
            }
            events
        };
        let mut w = window(us(a));
        (w.from_unix_ns, w.to_unix_ns) = (100 * 20_000, 5_000 * 20_000);
        // Lane 4 polls tasks 3 to 8: only some are shared with lane 3.
        let b = b
            .into_iter()
            .map(|e| match e.kind() {
                Some(k @ (EventKind::PollStart | EventKind::PollEnd)) => {
                    Event::new(e.ts, k, e.subject() + 2, e.arg())
                }
                _ => e,
            })
            .collect();
        w.lanes.push(Lane { index: 4, events: us(b), ..Lane::default() });
        w.task_hooks = true;
        w.long_poll = std::time::Duration::from_millis(1);
        // A task runs on one worker at a time: polls of one task that
        // overlap (on two lanes) are damaged data, where "the poll before"
        // has no one meaning.
        let tasks = w.tasks();
        prop_assume!(tasks.iter().all(|t| t.polls.windows(2).all(|p| p[0].end_ns <= p[1].start_ns)));
        let r = crate::window::SlowRequest::new(
            request,
            "r",
            opentelemetry::trace::TraceId::from(1u128),
            opentelemetry::trace::SpanId::from(1u64),
            start * 20_000,
            (start + len) * 20_000,
        );
        let (focused, workers) = verdict::digest(&w, &r);
        let everything = verdict::tasks_in(&w, (0, u64::MAX));
        prop_assert_eq!(
            explain_from(&w, &r, &focused, &workers),
            explain_from(&w, &r, &everything, &workers)
        );
    }
}

mod verdicts {
    use super::*;
    use crate::window::SlowRequest;
    use opentelemetry::trace::{SpanId, TraceId};

    const MS: u64 = 1_000_000;

    fn request(start: u64, end: u64) -> SlowRequest {
        SlowRequest::new(1, "r", TraceId::from(1u128), SpanId::from(1u64), start, end)
    }

    /// Task 7 is the request's (it enters the span); it polls over `own`.
    fn lane_with(own: (u64, u64), lost: u64) -> Window {
        Window {
            from_unix_ns: 0,
            to_unix_ns: 1_000 * MS,
            task_hooks: true,
            long_poll: std::time::Duration::from_millis(10),
            lanes: vec![Lane {
                index: 0,
                thread: "tokio-runtime-worker".into(),
                events: vec![
                    ev(own.0, EventKind::PollStart, 7),
                    ev(own.0, EventKind::RequestEnter, 1),
                    ev(own.1, EventKind::RequestExit, 1),
                    ev(own.1, EventKind::PollEnd, 7),
                ],
                events_lost: lost,
            }],
            ..Window::default()
        }
    }

    /// A second worker (lane 1) that polls `task` once, over `poll`.
    fn second_worker(task: u64, poll: (u64, u64)) -> Lane {
        Lane {
            index: 1,
            thread: "tokio-runtime-worker".into(),
            events: vec![
                ev(poll.0, EventKind::PollStart, task),
                ev(poll.1, EventKind::PollEnd, task),
            ],
            events_lost: 0,
        }
    }

    #[test]
    fn without_task_hooks_the_verdict_is_unclear() {
        let mut w = lane_with((100 * MS, 150 * MS), 0);
        w.task_hooks = false;
        let e = explain(&w, &request(100 * MS, 400 * MS));
        assert_eq!(e.cause, Cause::Unclear);
        assert!(e.sentence.contains("no task hooks"), "{}", e.sentence);
        // The span's entered time is still known to be its own.
        assert_eq!(e.own_cpu_ns, 50 * MS);
        assert_eq!(e.unknown_ns, 250 * MS);
    }

    #[test]
    fn an_incomplete_window_is_unclear() {
        // The lane lost events: nothing is known before its first kept event.
        let w = lane_with((350 * MS, 380 * MS), 1_000);
        let e = explain(&w, &request(100 * MS, 400 * MS));
        assert_eq!(e.cause, Cause::Unclear);
        assert_eq!(e.unknown_ns, 250 * MS);
        assert!(
            e.sentence.starts_with("unclear: incomplete window"),
            "{}",
            e.sentence
        );
    }

    #[test]
    fn close_shares_are_unclear() {
        // 150 ms of own CPU, 150 ms waiting.
        let w = lane_with((100 * MS, 250 * MS), 0);
        let e = explain(&w, &request(100 * MS, 400 * MS));
        assert_eq!(e.cause, Cause::Unclear);
        assert!(e.sentence.contains("shares too close"), "{}", e.sentence);
        let total: u64 = e.shares().iter().map(|s| s.ns).sum();
        assert_eq!(total, 300 * MS);
    }

    #[test]
    fn a_poll_right_after_a_neighbours_long_poll_was_waiting_for_it() {
        // Task 7 (the request's) polls at 100-110 ms, then on the same worker
        // task 9 polls 110-400 ms and task 7 runs right after it.
        let mut w = lane_with((100 * MS, 110 * MS), 0);
        w.lanes[0].events.extend([
            ev(110 * MS + 1_000, EventKind::PollStart, 9),
            ev(400 * MS, EventKind::PollEnd, 9),
            ev(400 * MS + 5_000, EventKind::PollStart, 7),
            ev(401 * MS, EventKind::PollEnd, 7),
        ]);
        w.strings = vec!["src/jobs.rs:88:5".into()];
        w.lanes[0]
            .events
            .push(Event::new(402 * MS, EventKind::TaskSpawn, 9, 0));
        let e = explain(&w, &request(100 * MS, 401 * MS));
        assert_eq!(e.cause, Cause::BlockedWorker, "{e:?}");
        assert_eq!(e.confidence, Confidence::Inferred);
        assert_eq!(e.culprits[0].task, 9);
        assert_eq!(
            e.sentence,
            "blocked worker: task src/jobs.rs:88 held worker 0 for 290 ms of this 301 ms request"
        );
    }

    #[test]
    fn a_lost_poll_start_at_a_neighbours_long_poll_does_not_hide_it() {
        // Task 5 polls from 120 ms; task 12's poll end at 150 ms has no
        // start (rule 3: task 5's poll is cut there, and task 12 gets a
        // zero-length poll); task 9's poll end at 400 ms has no start
        // either, so it ran 150-400 ms. Task 7 runs right after it: the
        // poll before task 7's is task 9's, not the zero-length one that
        // begins at the same instant.
        let mut w = lane_with((100 * MS, 110 * MS), 0);
        w.lanes[0].events.extend([
            ev(120 * MS, EventKind::PollStart, 5),
            ev(150 * MS, EventKind::PollEnd, 12),
            ev(400 * MS, EventKind::PollEnd, 9),
            ev(400 * MS, EventKind::PollStart, 7),
            ev(401 * MS, EventKind::PollEnd, 7),
        ]);
        // Another worker is active meanwhile, so not every worker is held.
        w.lanes.push(second_worker(20, (200 * MS, 201 * MS)));
        let e = explain(&w, &request(100 * MS, 401 * MS));
        assert_eq!(e.cause, Cause::BlockedWorker, "{e:?}");
        assert_eq!(e.culprits[0].task, 9, "{e:?}");
        assert_eq!(e.culprits[0].blocked_ns, 250 * MS, "{e:?}");
    }

    #[test]
    fn a_task_from_before_the_window_waits_from_its_workers_run() {
        // Task 7 (the request's) was neither spawned nor polled in the
        // window before 500 ms: it existed before the window. Its worker ran
        // task 3's short polls back to back from 150 ms, so task 7 may have
        // waited since then: 10 ms of the request (100-160 ms) is queued.
        let mut w = lane_with((500 * MS, 510 * MS), 0);
        let run = (0..70).flat_map(|i| {
            let at = (150 + 5 * i) * MS;
            [
                ev(at, EventKind::PollStart, 3),
                ev(at + 5 * MS, EventKind::PollEnd, 3),
            ]
        });
        w.lanes[0].events.splice(0..0, run);
        let e = explain(&w, &request(100 * MS, 160 * MS));
        assert_eq!(e.saturated_ns, 10 * MS, "{e:?}");
        assert_eq!(e.waiting_ns, 50 * MS, "{e:?}");
        assert_eq!(e.cause, Cause::Waiting, "{e:?}");
    }

    #[test]
    fn every_worker_held_at_once_is_charged_to_the_lower_lane_on_a_tie() {
        // Task 7 (the request's) ran 100-110 ms, then waited; from 200 ms
        // both workers ran a long poll of another task, begun at once.
        let mut w = lane_with((100 * MS, 110 * MS), 0);
        w.lanes[0].events.extend([
            ev(200 * MS, EventKind::PollStart, 9),
            ev(400 * MS, EventKind::PollEnd, 9),
        ]);
        w.lanes.push(second_worker(8, (200 * MS, 400 * MS)));
        let e = explain(&w, &request(100 * MS, 400 * MS));
        assert_eq!(e.cause, Cause::BlockedWorker, "{e:?}");
        assert_eq!(e.blocked_ns, 200 * MS);
        assert_eq!(e.culprits.len(), 1, "{e:?}");
        assert_eq!((e.culprits[0].task, e.culprits[0].lane), (9, 0), "{e:?}");
    }
}

#[test]
fn merged_overlapping_windows_hold_each_poll_once_with_their_strings() {
    use EventKind::*;
    let mut a = window(vec![
        Event::new(200, PollStart, 1, 0),
        Event::new(300, PollEnd, 1, 0),
    ]);
    a.strings = vec!["src/a.rs:1:1".into()];
    a.to_unix_ns = 500;
    let mut b = window(vec![
        Event::new(300, PollEnd, 1, 1),
        Event::new(400, PollStart, 2, 0),
        Event::new(450, PollEnd, 2, 0),
    ]);
    // The same poll end, with its location at another index of b's table.
    b.lanes[0]
        .events
        .insert(0, Event::new(200, PollStart, 1, 0));
    b.strings = vec!["src/b.rs:2:2".into(), "src/a.rs:1:1".into()];
    b.from_unix_ns = 150;
    assert!(a.merge(&b));
    let tasks = a.tasks();
    assert_eq!(tasks[0].polls.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].location.as_deref(), Some("src/a.rs:1:1"));
    assert_eq!(tasks[1].location.as_deref(), Some("src/b.rs:2:2"));
    assert_eq!(a.lanes.len(), 1);
    // A window after a gap is not merged.
    let mut far = window(Vec::new());
    far.from_unix_ns = 10_000;
    far.to_unix_ns = 20_000;
    assert!(!a.merge(&far));
}

#[test]
fn merging_drops_repeats_of_one_instant_that_are_not_adjacent() {
    use EventKind::*;
    // At t=300: an end and a start; the other window has the same two.
    let mut a = window(vec![
        Event::new(300, PollEnd, 1, NO_STRING),
        Event::new(300, PollStart, 2, 0),
    ]);
    a.to_unix_ns = 500;
    let b = window(vec![
        Event::new(300, PollEnd, 1, NO_STRING),
        Event::new(300, PollStart, 2, 0),
    ]);
    assert!(a.merge(&b));
    assert_eq!(a.lanes[0].events.len(), 2, "{:?}", a.lanes[0].events);
    assert_eq!(
        a.lanes[0].events[0].kind(),
        Some(PollEnd),
        "ends stay first"
    );
}
