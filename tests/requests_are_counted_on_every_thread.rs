//! Each thread takes request ids from its recorder in blocks and counts the
//! requests it opens on a line of its own (no shared read-modify-write per
//! request). What a user sees must not change: `requests_seen` is exact
//! while threads are alive, after they exit, across blocks, on runtime
//! workers, blocking threads and plain threads; ids are unique; a thread
//! that outlives its recorder counts for the next one from zero.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;
use tracing_subscriber::prelude::*;

/// Opens `fast` request spans that end at once, and one slow one.
fn requests(fast: usize, slow: Duration) {
    for i in 0..fast {
        let _e = tracing::info_span!("GET /fast", i).entered();
    }
    let _e = tracing::info_span!("GET /slow").entered();
    std::thread::sleep(slow);
}

#[test]
fn requests_seen_is_exact_on_every_kind_of_thread_and_ids_are_unique() {
    let (blackbox, _guard, rt, sink) = support::windows::recorder(
        tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(20))
            .window(Duration::from_millis(50), Duration::from_millis(10)),
        4,
    );
    let slow = Duration::from_millis(25);
    // Plain threads: 300 requests each (past one block of ids), one slow,
    // then they wait, alive, while the count is read.
    const THREADS: usize = 6;
    let alive = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (alive, done) = (alive.clone(), done.clone());
            std::thread::spawn(move || {
                requests(299, slow);
                alive.wait();
                done.wait();
            })
        })
        .collect();
    alive.wait();
    let per_thread = 300u64;
    assert_eq!(
        blackbox.stats().requests_seen,
        THREADS as u64 * per_thread,
        "counted while the threads live"
    );
    done.wait();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        blackbox.stats().requests_seen,
        THREADS as u64 * per_thread,
        "and after they exit"
    );

    // Runtime workers and blocking threads.
    rt.block_on(async {
        let tasks: Vec<_> = (0..400)
            .map(|_| tokio::spawn(async { requests(0, Duration::ZERO) }))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let blocking: Vec<_> = (0..8)
            .map(|_| tokio::task::spawn_blocking(move || requests(49, slow)))
            .collect();
        for t in blocking {
            t.await.unwrap();
        }
    });
    let expected = THREADS as u64 * per_thread + 400 + 8 * 50;
    assert_eq!(blackbox.stats().requests_seen, expected);

    assert!(blackbox.flush(Duration::from_secs(10)));
    let ids: Vec<u64> = sink
        .windows()
        .iter()
        .flat_map(|w| w.requests.iter().map(|r| r.request_id))
        .collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert!(
        unique.len() >= THREADS + 8,
        "the slow requests of every thread: {ids:?}"
    );
    assert!(ids.iter().all(|&id| id as u32 != 0), "{ids:?}");
    let stats = blackbox.stats();
    assert_eq!(stats.slow_requests, (THREADS + 8) as u64, "{stats:?}");
    assert_eq!(stats.requests_seen, expected, "{stats:?}");
}

#[test]
fn a_thread_that_outlives_its_recorder_counts_for_the_next_from_zero() {
    // One long-lived thread runs each batch of requests under the
    // subscriber it is given.
    type Job = Box<dyn FnOnce() + Send>;
    let (tx, rx) = mpsc::channel::<Job>();
    let worker = std::thread::spawn(move || {
        for job in rx {
            job();
        }
    });
    let run_on_worker = |job: Job| {
        let (done_tx, done_rx) = mpsc::channel();
        tx.send(Box::new(move || {
            job();
            done_tx.send(()).unwrap();
        }))
        .unwrap();
        done_rx.recv().unwrap();
    };
    let build = |name: &str| {
        tokio_blackbox::Blackbox::builder()
            .dir(std::env::temp_dir().join(format!("blackbox-ids-{name}-{}", std::process::id())))
            .build()
            .unwrap()
    };

    let (a, guard_a) = build("a");
    let layer_a = a.layer();
    run_on_worker(Box::new(move || {
        let subscriber = tracing_subscriber::registry().with(layer_a);
        tracing::subscriber::with_default(subscriber, || requests(4, Duration::ZERO));
    }));
    assert_eq!(a.stats().requests_seen, 5);
    drop((a, guard_a));

    let (b, _guard_b) = build("b");
    let layer_b = b.layer();
    run_on_worker(Box::new(move || {
        let subscriber = tracing_subscriber::registry().with(layer_b);
        tracing::subscriber::with_default(subscriber, || requests(2, Duration::ZERO));
    }));
    assert_eq!(
        b.stats().requests_seen,
        3,
        "the old recorder's count is not carried over"
    );
    // Another thread, with the first one's old counter perhaps: counts its own.
    let layer_b = b.layer();
    std::thread::spawn(move || {
        let subscriber = tracing_subscriber::registry().with(layer_b);
        tracing::subscriber::with_default(subscriber, || requests(1, Duration::ZERO));
    })
    .join()
    .unwrap();
    assert_eq!(b.stats().requests_seen, 5);
    drop(tx);
    worker.join().unwrap();
    assert_eq!(
        b.stats().requests_seen,
        5,
        "the worker's count is kept when it exits"
    );
}
