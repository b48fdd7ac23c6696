//! What the recorder sees depends on `--cfg tokio_unstable`: with it, task
//! spawns and polls; without it, still request spans and worker park/unpark,
//! and the stats say which. This test runs in both builds (tools/test-all.sh).

use std::time::Duration;
use tokio_blackbox::{Blackbox, EventKind};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

#[test]
fn records_what_the_build_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, _guard) = Blackbox::builder().dir(dir.path()).build().expect("build");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(blackbox.layer()));
    rt.block_on(
        async {
            tokio::spawn(
                async {
                    let _span = tracing::info_span!("request").entered();
                    std::thread::sleep(Duration::from_millis(1));
                }
                .with_current_subscriber(),
            )
            .await
            .expect("task");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        .with_subscriber(dispatch),
    );
    let stats = blackbox.stats();
    assert_eq!(stats.task_hooks, cfg!(tokio_unstable));
    assert_eq!(stats.requests_seen, 1);
    let path = dir.path().join("all.bbx");
    blackbox.dump(&path).expect("dump");
    let file = tokio_blackbox::dump::read_file(&path).expect("read");
    let kinds: Vec<EventKind> = file
        .window
        .lanes
        .iter()
        .flat_map(|l| l.events.iter().filter_map(|e| e.kind()))
        .collect();
    assert!(kinds.contains(&EventKind::RequestOpen) && kinds.contains(&EventKind::RequestClose));
    assert!(kinds.contains(&EventKind::Park) && kinds.contains(&EventKind::Unpark));
    assert_eq!(kinds.contains(&EventKind::PollStart), cfg!(tokio_unstable));
    assert_eq!(file.header.task_hooks, cfg!(tokio_unstable));
}
