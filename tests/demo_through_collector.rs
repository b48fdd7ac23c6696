//! End to end with everything real, on loopback: the demo service
//! (examples/demo.rs, release build, a child process) exports every trace
//! over OTLP/gRPC (`BLACKBOX_BASELINE_RATIO=1`: the recorder's own tail
//! sampling off) to an OpenTelemetry Collector running
//! collector-config/otelcol.yaml, whose tail_sampling (random baseline 0 %)
//! keeps the slow and captured traces for a Jaeger (and a second Jaeger
//! standing in for Tempo). Jaeger's query API then shows each slow request
//! with its `blackbox.window`, the blocking neighbour's long poll, and no
//! fast request.
//!
//! Needs the peers built once (`tools/build-peers.sh`); builds the demo with
//! `cargo build --release --example demo` (minutes the first time).

mod support;

use std::time::{Duration, Instant};

use support::demo::{
    SERVICE, as_refs, assert_kept_traces_whole, check_jaeger, run_demo, sampling_env,
    tail_sampling_counts, wait_settled,
};
use support::peers::{Collector, Jaeger, collector_config};

const DECISION_WAIT: Duration = Duration::from_secs(3);

#[test]
fn demo_through_the_collector_into_jaeger() {
    support::demo::demo_exe(); // build first, so the timings below are the run's
    let started = Instant::now();
    let jaeger = Jaeger::start();
    let tempo = Jaeger::start();
    let env = sampling_env(&jaeger, &tempo, DECISION_WAIT);
    let collector = Collector::start(collector_config("otelcol.yaml"), &as_refs(&env));

    let run = run_demo(&collector.otlp_grpc_endpoint(), "6s");
    wait_settled(&jaeger, &run, DECISION_WAIT);
    let checked = check_jaeger(&jaeger, &run);

    // The Collector saw every request's trace and dropped all but the kept ones.
    let sampled = tail_sampling_counts(&collector.metrics());
    println!("the Collector's tail_sampling: {sampled:?}");
    assert_eq!(
        sampled.traces, run.stats.traces_kept as f64,
        "the Collector saw {} traces, the demo exported {}",
        sampled.traces, run.stats.traces_kept
    );
    assert_eq!(
        sampled.sampled, checked.traces as f64,
        "the Collector sampled {} traces, jaeger holds {}",
        sampled.sampled, checked.traces
    );
    assert_kept_traces_whole(&run, &checked, sampled.not_sampled);
    // The Tempo stand-in got the same traces.
    let in_tempo = tempo.search_limit(SERVICE, "", "1h", 100_000)["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        in_tempo, checked.traces,
        "the Tempo exporter should carry the same kept traces as the Jaeger one"
    );
    println!(
        "demo through the Collector: {} requests, {} traces seen by the Collector, {} kept in \
         jaeger ({} slow); {:.1?} in all (demo {:.1?})",
        run.stats.served,
        sampled.traces,
        checked.traces,
        checked.slow_traces,
        started.elapsed(),
        run.took
    );
}
