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
//!
//! Results (2026-12-02, the request state in the open-request table): enter
//! and exit 12.0 ns with the registry alone, 32.9 ns with the layer. A
//! `debug!` event that a fmt layer at INFO filters out: 0.34 ns alone,
//! 27.2 ns beside the plain layer (it asks for every callsite), 0.89 ns
//! beside `filtered_layer`, whose request enter and exit cost 199 ns
//! (tracing-subscriber's per-layer filtering on each span callback).

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

/// A `debug!` event that the application's own layer filters out (a fmt
/// layer at INFO with a per-layer filter), alone, beside the plain layer
/// (which asks for every callsite, so the event is dispatched) and beside
/// the filtered layer (which does not); and a request span's enter + exit
/// through the filtered layer.
fn disabled_events(c: &mut Criterion) {
    use tracing_subscriber::filter::LevelFilter;
    let mut g = c.benchmark_group("disabled_debug_event");
    g.measurement_time(Duration::from_secs(3));
    let fmt = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(LevelFilter::INFO)
    };
    let (blackbox, _guard) = Blackbox::builder()
        .dir(std::env::temp_dir().join("blackbox-bench"))
        .build()
        .expect("build");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt()), || {
        g.bench_function("fmt_info_only", |b| b.iter(|| tracing::debug!(n = 1, "x")));
    });
    let plain = tracing_subscriber::registry()
        .with(fmt())
        .with(blackbox.layer());
    tracing::subscriber::with_default(plain, || {
        g.bench_function("with_blackbox_layer", |b| {
            b.iter(|| tracing::debug!(n = 1, "x"))
        });
    });
    let filtered = tracing_subscriber::registry()
        .with(fmt())
        .with(blackbox.filtered_layer());
    tracing::subscriber::with_default(filtered, || {
        g.bench_function("with_blackbox_filtered_layer", |b| {
            b.iter(|| tracing::debug!(n = 1, "x"))
        });
        let span = tracing::info_span!("request");
        g.bench_function("request_enter_exit/with_blackbox_filtered_layer", |b| {
            b.iter(|| {
                let _e = span.enter();
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench, disabled_events);
criterion_main!(benches);
