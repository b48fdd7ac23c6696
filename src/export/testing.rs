//! Synthetic windows for tests, benches and doc examples: no runtime needed.
//! Behind the `testing` feature: not part of what a service needs.

use crate::event::{Event, EventKind};
use crate::window::{Lane, SlowRequest, Window};
use opentelemetry::trace::{SpanId, TraceId};
use std::time::Duration;

/// Window start of [`window`], UNIX ns (2023-11-14).
pub const FROM: u64 = 1_700_000_000_000_000_000;

/// A slow request with fixed ids, from `start` to `end` (UNIX ns).
pub fn slow_request(request_id: u64, name: &str, start: u64, end: u64) -> SlowRequest {
    SlowRequest {
        request_id,
        name: name.to_owned(),
        trace_id: TraceId::from(
            0x0102_0304_0506_0708_090a_0b0c_0d0e_0f00_u128 + u128::from(request_id),
        ),
        span_id: SpanId::from(0x1000_u64 + request_id),
        own_span: false,
        error: false,
        start_unix_ns: start,
        end_unix_ns: end,
        open: false,
    }
}

/// A 2-second window with `tasks` tasks of `polls` 10 µs polls each on
/// two workers, park/unpark moments, and `requests` slow requests (the
/// first one entered by task 1's first poll). The last task's first poll
/// runs 15 ms on a third thread: a long poll.
pub fn window(tasks: usize, polls: usize, requests: usize) -> Window {
    let mut lanes: Vec<Vec<Event>> = vec![Vec::new(); 3];
    let mut strings = Vec::new();
    let mut t_next = FROM + 1_000_000;
    for i in 0..tasks {
        let id = i as u64 + 1;
        strings.push(format!("src/service/task_{i}.rs:{}:9", 10 + i));
        let loc = (strings.len() - 1) as u16;
        lanes[0].push(Event::new(
            FROM + 1_000 + i as u64,
            EventKind::TaskSpawn,
            id,
            loc,
        ));
        for j in 0..polls {
            let long = i + 1 == tasks && j == 0;
            let lane = if long { 2 } else { (i + j) % 2 };
            let (start, len) = if long {
                (FROM + 500_000, 15_000_000)
            } else {
                (t_next, 10_000)
            };
            if !long {
                t_next += 20_000;
            }
            lanes[lane].push(Event::new(start, EventKind::PollStart, id, 0));
            if i == 0 && j == 0 && requests > 0 {
                lanes[lane].push(Event::new(start + 1_000, EventKind::RequestEnter, 1, 0));
                lanes[lane].push(Event::new(start + 2_000, EventKind::RequestExit, 1, 0));
            }
            lanes[lane].push(Event::new(start + len, EventKind::PollEnd, id, loc));
        }
    }
    for (k, lane) in lanes.iter_mut().enumerate().take(2) {
        for n in 0..4u64 {
            lane.push(Event::new(
                FROM + 100_000_000 * (n + 1) + k as u64,
                EventKind::Park,
                0,
                0,
            ));
            lane.push(Event::new(
                FROM + 100_000_000 * (n + 1) + 50_000_000,
                EventKind::Unpark,
                0,
                0,
            ));
        }
    }
    let names = [
        "tokio-runtime-worker",
        "tokio-runtime-worker",
        "blocking-neighbour",
    ];
    let lanes = lanes
        .into_iter()
        .enumerate()
        .map(|(i, mut events)| {
            events.sort_by_key(|e| e.ts);
            Lane {
                index: i as u32,
                thread: names[i].to_owned(),
                events,
                ..Lane::default()
            }
        })
        .collect();
    Window {
        sequence: 1,
        from_unix_ns: FROM,
        to_unix_ns: FROM + 2_000_000_000,
        requests: (1..=requests as u64)
            .map(|r| slow_request(r, "GET /slow", FROM + 400_000_000, FROM + 1_800_000_000))
            .collect(),
        lanes,
        strings,
        threshold: Duration::from_millis(250),
        long_poll: Duration::from_millis(10),
        task_hooks: true,
        ..Window::default()
    }
}
