//! Request span enter + exit through the recorder's layer, against the same
//! subscriber without it, in the same run.
//!
//! ```text
//! cargo bench --bench layer_overhead
//! ```
//!
//! Results (2 vCPUs, rustc 1.95, 2026-11-25): enter + exit of a request span
//! 9.2 ns with the registry alone, 38.5 ns with the recorder's layer: +29 ns
//! (budget 50 ns). Creating, entering, exiting and closing a request span:
//! 200 ns → 375 ns.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;
use tokio_blackbox::Blackbox;
use tracing_subscriber::prelude::*;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_span");
    g.measurement_time(Duration::from_secs(4));

    let plain = tracing_subscriber::registry();
    tracing::subscriber::with_default(plain, || {
        let span = tracing::info_span!("request");
        g.bench_function("enter_exit/registry_only", |b| {
            b.iter(|| {
                let _e = span.enter();
            })
        });
    });

    let (blackbox, _guard) = Blackbox::builder()
        .dir(std::env::temp_dir().join("blackbox-bench"))
        .build()
        .expect("build");
    let with_layer = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(with_layer, || {
        let span = tracing::info_span!("request");
        g.bench_function("enter_exit/with_blackbox", |b| {
            b.iter(|| {
                let _e = span.enter();
            })
        });
        g.bench_function("new_enter_exit_close/with_blackbox", |b| {
            b.iter(|| {
                let _e = tracing::info_span!("request").entered();
            })
        });
    });
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        g.bench_function("new_enter_exit_close/registry_only", |b| {
            b.iter(|| {
                let _e = tracing::info_span!("request").entered();
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
