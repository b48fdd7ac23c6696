//! A slow request's window holds its own tasks' polls, the blocking
//! neighbour's long poll with its spawn location, and the workers' park and
//! unpark; a fast request produces nothing. Real multi-thread runtimes, real
//! capture files.

use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio_blackbox::dump::{self, FileKind};
use tokio_blackbox::{Blackbox, BlackboxGuard, DirSink, EventKind, Window};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

struct Service {
    blackbox: Blackbox,
    guard: Option<BlackboxGuard>,
    rt: tokio::runtime::Runtime,
    dispatch: tracing::Dispatch,
}

impl Service {
    fn start(dir: &Path, threshold: Duration) -> Service {
        let (blackbox, guard) = Blackbox::builder()
            .latency_threshold(threshold)
            .window(Duration::from_millis(500), Duration::from_millis(50))
            // The binary capture files (the default sink writes OTLP JSON).
            .sink(DirSink::new(dir))
            .build()
            .expect("build recorder");
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        blackbox.install_hooks(builder.worker_threads(2).enable_all());
        let rt = builder.build().expect("runtime");
        let dispatch =
            tracing::Dispatch::new(tracing_subscriber::registry().with(blackbox.layer()));
        Service {
            blackbox,
            guard: Some(guard),
            rt,
            dispatch,
        }
    }

    fn run<F: Future + Send + 'static>(&self, f: F) -> F::Output
    where
        F::Output: Send + 'static,
    {
        let d = self.dispatch.clone();
        self.rt
            .block_on(async move { tokio::spawn(f.with_subscriber(d)).await.expect("task") })
    }

    /// Flushes pending captures and reads every capture file written.
    fn captures(&mut self, dir: &Path) -> Vec<Window> {
        assert!(
            self.blackbox.flush(Duration::from_secs(10)),
            "flush timed out"
        );
        drop(self.guard.take());
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let file = dump::read_file(e.path()).expect("capture file reads back");
                assert_eq!(file.kind, FileKind::Capture);
                out.push(file.window);
            }
        }
        out.sort_by_key(|w| w.sequence);
        out
    }
}

async fn request(work: Duration) {
    let span = tracing::info_span!("request");
    async move {
        // The request's own task spawns a helper and waits on a timer.
        let helper = tokio::spawn(async { tokio::task::yield_now().await }.in_current_span());
        tokio::time::sleep(work).await;
        helper.await.expect("helper");
    }
    .instrument(span)
    .await
}

#[test]
fn slow_request_window_holds_tasks_long_poll_and_parks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut svc = Service::start(dir.path(), Duration::from_millis(100));
    let neighbour_line = line!() + 4;
    svc.run(async {
        let req = tokio::spawn(request(Duration::from_millis(150)).with_current_subscriber());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let neighbour = tokio::spawn(async { std::thread::sleep(Duration::from_millis(60)) });
        neighbour.await.expect("neighbour");
        req.await.expect("request");
    });
    let windows = svc.captures(dir.path());
    assert_eq!(windows.len(), 1, "one slow request, one capture");
    let w = &windows[0];
    assert_eq!(w.requests.len(), 1);
    let slow = &w.requests[0];
    assert_eq!(slow.name, "request");
    assert!(slow.duration() >= Duration::from_millis(150));
    assert!(w.from_unix_ns <= slow.start_unix_ns - 500_000_000 + 1_000_000);
    // The window is cut on the monotonic clock and converted to UNIX time
    // with a fresh anchor, as the request's times were: within 10 µs.
    assert!(
        w.to_unix_ns + 10_000 >= slow.end_unix_ns + 50_000_000,
        "to {} end {}",
        w.to_unix_ns,
        slow.end_unix_ns
    );
    for lane in &w.lanes {
        for e in &lane.events {
            assert!(
                e.ts >= w.from_unix_ns && e.ts <= w.to_unix_ns,
                "event outside window: {e:?}"
            );
        }
    }

    let tasks = w.tasks();
    let here = file!();
    // The blocking neighbour: one long poll, named by its spawn location.
    let neighbour = tasks
        .iter()
        .find(|t| t.file_line() == Some((here, neighbour_line)))
        .unwrap_or_else(|| panic!("neighbour task at {here}:{neighbour_line} not in {tasks:#?}"));
    assert!(neighbour.longest_poll_ns() >= 60_000_000, "{neighbour:?}");
    assert!(neighbour.spawned_ns.is_some() && neighbour.terminated_ns.is_some());

    // The request's own task: polled, and known to work for the request.
    let own: Vec<_> = tasks
        .iter()
        .filter(|t| t.requests.contains(&slow.request_id))
        .collect();
    assert!(own.len() >= 2, "request task and its helper: {tasks:#?}");
    assert!(own.iter().all(|t| !t.polls.is_empty()));
    assert!(!neighbour.requests.contains(&slow.request_id));

    // Workers parked and unparked inside the window.
    let workers = w.workers();
    assert!(
        workers
            .iter()
            .any(|w| w.thread.starts_with("tokio-rt-worker")
                && !w.parks.is_empty()
                && !w.unparks.is_empty()),
        "{workers:#?}"
    );
    let spans = w.request_spans();
    assert!(
        spans.iter().any(|s| s.request_id == slow.request_id
            && s.open_ns.is_some()
            && s.close_ns.is_some())
    );

    let stats = svc.blackbox.stats();
    assert_eq!(
        (stats.slow_requests, stats.captures, stats.windows_written),
        (1, 1, 1)
    );
    assert!(stats.task_hooks);
    assert_eq!(
        w.lanes.iter().map(|l| l.events.len()).sum::<usize>(),
        w.events()
    );
    assert!(w.events() > 10);
    let _ = EventKind::PollStart;
}

#[test]
fn fast_requests_produce_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut svc = Service::start(dir.path(), Duration::from_millis(200));
    svc.run(async {
        for _ in 0..20 {
            request(Duration::from_millis(5)).await;
        }
    });
    let stats = svc.blackbox.stats();
    assert_eq!(stats.requests_seen, 20);
    assert_eq!(stats.slow_requests, 0);
    assert!(stats.events_recorded > 0);
    assert!(
        svc.captures(dir.path()).is_empty(),
        "no capture files for fast requests"
    );
}

#[test]
fn a_thousand_slow_requests_are_capped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(50))
        .window(Duration::from_millis(20), Duration::from_millis(20))
        .max_window(Duration::from_millis(60))
        .max_captures_per_sec(3)
        .sink(DirSink::new(dir.path()))
        .build()
        .expect("build");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(blackbox.layer()));
    rt.block_on(
        async {
            let handles: Vec<_> = (0..1000u64)
                .map(|i| {
                    tokio::spawn(
                        // Spread over ~400 ms so windows cannot all merge.
                        async move {
                            tokio::time::sleep(Duration::from_micros(i * 400)).await;
                            request(Duration::from_millis(55)).await
                        }
                        .with_current_subscriber(),
                    )
                })
                .collect();
            for h in handles {
                h.await.expect("request");
            }
        }
        .with_subscriber(dispatch),
    );
    assert!(blackbox.flush(Duration::from_secs(10)));
    let s = blackbox.stats();
    drop(guard);
    assert_eq!(s.slow_requests, 1000);
    assert!(
        s.captures >= 1 && s.captures <= 3 * 2,
        "captures {} over at most ~1 s: cap 3/s",
        s.captures
    );
    assert!(s.requests_skipped > 0, "{s:?}");
    assert_eq!(
        s.captures + s.requests_merged + s.requests_skipped + s.slow_requests_dropped,
        1000,
        "{s:?}"
    );
    assert_eq!(s.windows_written, s.captures);
    let files = std::fs::read_dir(dir.path()).expect("dir").count() as u64;
    assert_eq!(files, s.captures);
}
