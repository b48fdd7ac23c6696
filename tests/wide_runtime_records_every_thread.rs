//! A wide runtime on this small machine: 64 workers and 512 blocking threads
//! all record with the default buffer memory. No event is dropped for lack of
//! a segment, and the window of a slow request shows every worker.

mod support;

use std::time::Duration;
use support::windows::Collect;
use tracing_subscriber::prelude::*;

#[test]
fn sixty_four_workers_and_512_blocking_threads_record() {
    let sink = Collect::default();
    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(300))
        .window(Duration::from_millis(500), Duration::from_millis(200))
        .request_spans("request".parse().unwrap())
        .sink(sink.clone())
        .build()
        .unwrap();
    tracing_subscriber::registry().with(blackbox.layer()).init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(rt.worker_threads(64).max_blocking_threads(512).enable_all());
    let rt = rt.build().unwrap();
    rt.block_on(async {
        // 512 blocking threads at once.
        let blocking: Vec<_> = (0..512)
            .map(|_| {
                tokio::task::spawn_blocking(|| {
                    let _s = tracing::info_span!("blocking job").entered();
                    std::thread::sleep(Duration::from_millis(400));
                })
            })
            .collect();
        let span = tracing::info_span!("request");
        tracing::Instrument::instrument(
            async {
                // Work on every worker during the request.
                for _ in 0..20 {
                    let tasks: Vec<_> = (0..256)
                        .map(|_| tokio::spawn(async { tokio::task::yield_now().await }))
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            span,
        )
        .await;
        for b in blocking {
            let _ = b.await;
        }
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    let stats = blackbox.stats();
    drop(rt);
    drop(guard);
    assert_eq!(stats.events_dropped, 0, "{stats:?}");
    assert!(stats.buffer_bytes <= stats.buffer_bytes_limit);
    let windows = sink.windows();
    let w = windows
        .iter()
        .find(|w| w.requests.iter().any(|r| r.name == "request"))
        .expect("the slow request's window");
    // Workers park and poll; blocking threads (also named tokio-rt-worker) do neither.
    use tokio_blackbox::EventKind::{Park, PollStart};
    let is_worker = |l: &&tokio_blackbox::Lane| {
        l.events
            .iter()
            .any(|e| matches!(e.kind(), Some(Park | PollStart)))
    };
    let workers = w.lanes.iter().filter(is_worker).count();
    assert_eq!(workers, 64, "every worker is in the window");
    assert_eq!(w.events_lost(), 0);
    // Every blocking thread recorded too (its start, at least).
    let blocking_lanes = w.lanes.len() - workers;
    assert!(blocking_lanes >= 512, "{blocking_lanes} blocking lanes");
}
