//! `tests/fixtures/golden.bbx` is a real dump, written by a real multi-thread
//! runtime with the recorder's hooks and layer (see [`generate_golden_dump`]).
//! Reading it with today's reader must give what was recorded, so a change to
//! the format that breaks old files is caught here.
//!
//! Regenerate it (only after an intended, versioned format change) with
//! `cargo test --test cli_golden_dump_reads_as_recorded -- --ignored`, then
//! update the numbers below and the trycmd snapshots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_blackbox::dump::{self, FileKind};
use tokio_blackbox::{Blackbox, RequestSpans, Window};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden.bbx")
}

/// The story: a request handler spawns a query and waits for it, while a
/// neighbour task blocks its worker for 200 ms with `std::thread::sleep`.
#[test]
#[ignore = "writes tests/fixtures/golden.bbx; run after a format change"]
fn generate_golden_dump() {
    let scratch = tempfile::tempdir().unwrap();
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(100))
        .long_poll(Duration::from_millis(20))
        .schedule_delay(true)
        .request_spans("request".parse::<RequestSpans>().unwrap())
        .dir(scratch.path())
        .build()
        .unwrap();
    use tracing_subscriber::layer::SubscriberExt as _;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(blackbox.layer()))
        .unwrap();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    blackbox.install_hooks(&mut builder);
    let rt = builder.build().unwrap();
    rt.block_on(async {
        use tracing::Instrument as _;
        // Warm up: some short tasks.
        for i in 0..8u64 {
            tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(i)).await })
                .await
                .unwrap();
        }
        let span = tracing::info_span!("request", method = "GET", path = "/orders");
        let handler = tokio::spawn(
            async {
                let query = tokio::spawn(
                    async {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        42u32
                    }
                    .in_current_span(),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                let rows = query.await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
                rows
            }
            .instrument(span),
        );
        // The blocking neighbour.
        let neighbour = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            std::thread::sleep(Duration::from_millis(200));
        });
        assert_eq!(handler.await.unwrap(), 42);
        neighbour.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    assert!(blackbox.flush(Duration::from_secs(5)));
    blackbox.dump(golden()).unwrap();
    drop(rt);
    drop(guard);
    let file = dump::read_file(golden()).unwrap();
    eprintln!(
        "{} events in {} lanes",
        file.window.events(),
        file.window.lanes.len()
    );
}

#[test]
fn golden_dump_reads_as_recorded() {
    let file = dump::read_file(golden()).unwrap();
    let h = file.header;
    assert_eq!((h.major, h.minor), (1, 0));
    assert_eq!(file.kind, FileKind::Dump);
    assert!(h.task_hooks && h.schedule_delay);
    let w: &Window = &file.window;
    assert_eq!(w.threshold, Duration::from_millis(100));
    assert_eq!(w.long_poll, Duration::from_millis(20));
    assert!(w.from_unix_ns < w.to_unix_ns);

    // Two workers and the thread that ran `block_on`.
    let workers = w
        .lanes
        .iter()
        .filter(|l| l.thread.contains("worker"))
        .count();
    assert_eq!(
        workers,
        2,
        "{:?}",
        w.lanes.iter().map(|l| &l.thread).collect::<Vec<_>>()
    );
    assert_eq!(w.events_lost(), 0);
    for lane in &w.lanes {
        assert!(
            lane.events.windows(2).all(|p| p[0].ts <= p[1].ts),
            "lane {} out of order",
            lane.index
        );
    }

    // The slow request, with a trace id of its own.
    assert_eq!(w.requests.len(), 1);
    let req = &w.requests[0];
    assert_eq!(req.name, "request");
    assert!(
        req.duration() >= Duration::from_millis(100),
        "{:?}",
        req.duration()
    );
    assert!(req.own_span);
    let spans = w.request_spans();
    let span = spans
        .iter()
        .find(|s| s.request_id == req.request_id)
        .expect("the request's span events");
    let open = span.open_ns.expect("the request's open event");
    assert!(
        open.abs_diff(req.start_unix_ns) < 1_000_000,
        "{open} vs {}",
        req.start_unix_ns
    );
    assert!(!span.entered.is_empty());

    // The tasks: spawned here, the request's own, and the blocking neighbour.
    let tasks = w.tasks();
    let here: Vec<_> = tasks
        .iter()
        .filter(|t| {
            t.location
                .as_deref()
                .is_some_and(|l| l.contains("cli_golden_dump_reads_as_recorded.rs"))
        })
        .collect();
    assert!(
        here.len() >= 11,
        "{} tasks spawned by the generator",
        here.len()
    );
    let own: Vec<_> = tasks
        .iter()
        .filter(|t| t.requests.contains(&req.request_id))
        .collect();
    assert_eq!(own.len(), 2, "handler and query: {own:?}");
    let blocking: Vec<_> = tasks
        .iter()
        .filter(|t| t.longest_poll_ns() >= 200_000_000)
        .collect();
    assert_eq!(blocking.len(), 1, "the neighbour's 200 ms poll");
    assert!(blocking[0].longest_poll_ns() < 400_000_000);
    assert!(
        w.workers()
            .iter()
            .any(|wk| !wk.parks.is_empty() && !wk.unparks.is_empty())
    );
}
