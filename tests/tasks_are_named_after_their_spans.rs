//! A task is named after the span it runs in (its `.instrument(..)` span, or
//! the request span it works in), else after its spawn location; the export
//! uses that name for the task's span.
//!
//! The subscriber is the process-wide default here, as in a real service:
//! tracing closes a parent span through the default subscriber of the thread
//! its last child closes on.

use std::time::Duration;
use tokio_blackbox::{Blackbox, DirSink};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

#[test]
fn tasks_are_named_after_their_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(50))
        .window(Duration::from_millis(200), Duration::from_millis(20))
        .sink(DirSink::new(dir.path()))
        .build()
        .expect("build");
    tracing_subscriber::registry().with(blackbox.layer()).init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(builder.worker_threads(2).enable_all());
    let rt = builder.build().expect("runtime");
    let neighbour_line = line!() + 11;
    rt.block_on(async {
        let request = async {
            let helper = tokio::spawn(
                async { tokio::time::sleep(Duration::from_millis(5)).await }
                    .instrument(tracing::info_span!("cache_refresh")),
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
            helper.await.expect("helper");
        };
        let req = tokio::spawn(request.instrument(tracing::info_span!("checkout")));
        let neighbour = tokio::spawn(async { tokio::task::yield_now().await });
        neighbour.await.expect("neighbour");
        req.await.expect("request");
    });
    assert!(blackbox.flush(Duration::from_secs(10)));
    drop(guard);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "one capture");
    let window = tokio_blackbox::dump::read_file(files[0].path())
        .expect("read")
        .window;
    let tasks = window.tasks();
    let name_of = |want: &str| tasks.iter().find(|t| t.name() == want);
    let request_task =
        name_of("checkout").unwrap_or_else(|| panic!("no task named checkout: {tasks:#?}"));
    let helper = name_of("cache_refresh")
        .unwrap_or_else(|| panic!("no task named cache_refresh: {tasks:#?}"));
    let slow = &window.requests[0];
    assert!(request_task.requests.contains(&slow.request_id));
    assert!(
        helper.requests.contains(&slow.request_id),
        "spawned inside the request"
    );
    let here = file!();
    let neighbour = tasks
        .iter()
        .find(|t| t.file_line() == Some((here, neighbour_line)))
        .unwrap_or_else(|| panic!("neighbour at line {neighbour_line}: {tasks:#?}"));
    assert_eq!(neighbour.span_name, None);
    assert_eq!(neighbour.name(), format!("task {here}:{neighbour_line}"));

    // The export names the task spans the same way.
    let (spans, _) = tokio_blackbox::export::otlp::window_spans(&window, Default::default());
    let task_span_names: Vec<&str> = spans
        .iter()
        .filter(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "tokio.task.id")
        })
        .map(|s| s.name.as_ref())
        .collect();
    for name in ["checkout", "cache_refresh"] {
        assert!(
            task_span_names.contains(&name),
            "no task span named {name}: {task_span_names:?}"
        );
    }
}
