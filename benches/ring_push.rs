//! The cost of one ring push through the hot path (clock read, thread-local
//! lookup, two relaxed stores, head publish), single thread.
//!
//! ```text
//! cargo bench --bench ring_push
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_blackbox::Blackbox;

fn bench(c: &mut Criterion) {
    let (blackbox, _guard) = Blackbox::builder()
        .dir(std::env::temp_dir().join("blackbox-bench"))
        .build()
        .expect("build");
    let hooks = blackbox.hooks();
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(2));
    g.bench_function("park_unpark", |b| {
        b.iter(|| {
            hooks.on_thread_park();
            hooks.on_thread_unpark();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
