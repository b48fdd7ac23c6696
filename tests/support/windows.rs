//! A sink that keeps every window in memory, for tests that look at what the
//! recorder captured without going through an exporter.

use std::sync::{Arc, Mutex};
use tokio_blackbox::{Sink, SinkError, Window};

#[derive(Clone, Default)]
pub struct Collect(pub Arc<Mutex<Vec<Window>>>);

impl Collect {
    pub fn windows(&self) -> Vec<Window> {
        self.0.lock().unwrap().clone()
    }
}

impl Sink for Collect {
    fn write(&mut self, window: &Window) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(window.clone());
        Ok(())
    }
}

/// Peak resident memory of this process (VmHWM), bytes.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// Resident memory of this process now (VmRSS), bytes.
pub fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// A `/proc/self/status` line's value in KiB (0 when unreadable).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// A recorder built from `builder` with a [`Collect`] sink, its layer in the
/// global subscriber (one per test binary, as in a real service), and a
/// multi-thread runtime of `workers` workers with its hooks.
pub fn recorder(
    builder: tokio_blackbox::Builder,
    workers: usize,
) -> (
    tokio_blackbox::Blackbox,
    tokio_blackbox::BlackboxGuard,
    tokio::runtime::Runtime,
    Collect,
) {
    use tracing_subscriber::prelude::*;
    let sink = Collect::default();
    let (blackbox, guard) = builder.sink(sink.clone()).build().expect("recorder");
    tracing_subscriber::registry().with(blackbox.layer()).init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    blackbox.install_hooks(rt.worker_threads(workers).enable_all());
    let rt = rt.build().expect("runtime");
    (blackbox, guard, rt, sink)
}
