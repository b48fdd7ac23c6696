//! The two-tier Collector layout with the real demo, on loopback:
//!
//! ```text
//! demo ──► load-balancing Collector ──traceID──► tail-sampling Collector A ──► Jaeger (+ Tempo stand-in)
//!          (otelcol-loadbalancing.yaml)      └─► tail-sampling Collector B ──┘
//!                                                (otelcol-tailsampling-tier.yaml)
//! ```
//!
//! The recorder sends a trace's spans in separate export requests (the
//! request span when it ends, the window's spans later from its exporter), so
//! only routing by trace id brings them to the same sampler. Checked: each
//! trace was seen by exactly one sampler (their trace counts add up to the
//! requests served, and both got some), every kept trace is whole in Jaeger
//! (request span, `blackbox.window` with all its task and poll spans, no
//! orphan; Jaeger holds every span the demo exported for the kept traces),
//! and the fast traces were dropped, as with one Collector.
//!
//! Needs the peers built once (`tools/build-peers.sh`); builds the demo with
//! `cargo build --release --example demo` (minutes the first time).

mod support;

use std::time::{Duration, Instant};

use support::demo::{
    as_refs, assert_kept_traces_whole, check_jaeger, run_demo, sampling_env, tail_sampling_counts,
    wait_settled,
};
use support::peers::{Collector, Jaeger, collector_config};

const DECISION_WAIT: Duration = Duration::from_secs(3);

#[test]
fn demo_through_two_collector_tiers_keeps_whole_traces() {
    support::demo::demo_exe(); // build first, so the timings below are the run's
    let started = Instant::now();
    let jaeger = Jaeger::start();
    let tempo = Jaeger::start();
    let env = sampling_env(&jaeger, &tempo, DECISION_WAIT);
    let tier2 = [
        Collector::start(
            collector_config("otelcol-tailsampling-tier.yaml"),
            &as_refs(&env),
        ),
        Collector::start(
            collector_config("otelcol-tailsampling-tier.yaml"),
            &as_refs(&env),
        ),
    ];
    let backends = format!(
        "[{}, {}]",
        tier2[0].otlp_grpc_hostport, tier2[1].otlp_grpc_hostport
    );
    let lb = Collector::start(
        collector_config("otelcol-loadbalancing.yaml"),
        &[("OTELCOL_LB_BACKENDS", &backends)],
    );

    let run = run_demo(&lb.otlp_grpc_endpoint(), "6s");
    wait_settled(&jaeger, &run, DECISION_WAIT);
    let checked = check_jaeger(&jaeger, &run);

    // Each trace went to exactly one sampler, and both samplers got traces.
    let counts: Vec<_> = tier2
        .iter()
        .map(|c| tail_sampling_counts(&c.metrics()))
        .collect();
    println!("tail_sampling of the two tier-2 Collectors: {counts:?}");
    let seen: f64 = counts.iter().map(|c| c.traces).sum();
    assert_eq!(
        seen, run.stats.traces_kept as f64,
        "the two samplers saw {seen} traces in all for the {} traces the demo exported: more \
         means a trace was split between them by the load-balancing tier, fewer that traces \
         were lost ({counts:?})",
        run.stats.traces_kept
    );
    assert!(
        counts.iter().all(|c| c.traces > 0.0 && c.sampled > 0.0),
        "both samplers should have received, and kept, some traces: {counts:?}"
    );
    let sampled: f64 = counts.iter().map(|c| c.sampled).sum();
    let not_sampled: f64 = counts.iter().map(|c| c.not_sampled).sum();
    assert_eq!(
        sampled, checked.traces as f64,
        "the samplers kept {sampled} traces, jaeger holds {}",
        checked.traces
    );
    assert_kept_traces_whole(&run, &checked, not_sampled);
    println!(
        "demo through two Collector tiers: {} requests, {} traces kept in jaeger ({} slow, {} \
         windows), split {:.0}/{:.0} between the samplers; {:.1?} in all (demo {:.1?})",
        run.stats.served,
        checked.traces,
        checked.slow_traces,
        checked.windows,
        counts[0].traces,
        counts[1].traces,
        started.elapsed(),
        run.took
    );
}
