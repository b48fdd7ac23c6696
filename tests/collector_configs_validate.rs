//! Every Collector config in collector-config/ is accepted by a real
//! Collector of the release the configs are written for (`validate`
//! resolves the ${env:...} variables, builds every component's config and
//! checks the pipelines, without binding any port).
//!
//! Needs the peers built once: `tools/build-peers.sh`.

mod support;

use std::path::PathBuf;

use support::peers::{Collector, repo_root};

fn configs() -> Vec<PathBuf> {
    let dir = repo_root().join("collector-config");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    v.sort();
    v
}

/// Values like the ones the tests and docker-compose set.
const TEST_ENV: &[(&str, &str)] = &[
    ("OTELCOL_OTLP_GRPC_ENDPOINT", "127.0.0.1:14317"),
    ("OTELCOL_OTLP_HTTP_ENDPOINT", "127.0.0.1:14318"),
    ("OTELCOL_METRICS_HOST", "127.0.0.1"),
    ("OTELCOL_METRICS_PORT", "18888"),
    ("OTELCOL_JAEGER_ENDPOINT", "127.0.0.1:24317"),
    ("OTELCOL_TEMPO_ENDPOINT", "127.0.0.1:34317"),
    ("OTELCOL_LB_BACKENDS", "[127.0.0.1:44317, 127.0.0.1:45317]"),
    ("OTELCOL_DECISION_WAIT", "1s"),
    ("OTELCOL_NUM_TRACES", "1000"),
    ("OTELCOL_LATENCY_THRESHOLD_MS", "100"),
    ("OTELCOL_BASELINE_PERCENT", "0"),
    ("OTELCOL_BATCH_TIMEOUT", "100ms"),
    ("OTELCOL_DEBUG_VERBOSITY", "detailed"),
    ("OTELCOL_MEMORY_LIMIT_MIB", "256"),
    ("OTELCOL_MEMORY_SPIKE_LIMIT_MIB", "64"),
];

fn check(env: &[(&str, &str)], what: &str) {
    let configs = configs();
    for name in [
        "otelcol.yaml",
        "otelcol-loadbalancing.yaml",
        "otelcol-tailsampling-tier.yaml",
    ] {
        assert!(
            configs.iter().any(|p| p.file_name().unwrap() == name),
            "collector-config/{name} is missing"
        );
    }
    let mut failures = Vec::new();
    for config in &configs {
        let out = Collector::validate_with_env(config, env);
        if !out.status.success() {
            failures.push(format!(
                "{} ({what}): {}\n{}{}",
                config.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "otelcol-blackbox validate failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_collector_config_validates_with_test_env() {
    check(TEST_ENV, "test environment");
}

#[test]
fn every_collector_config_validates_with_its_defaults() {
    // validate_with_env drops inherited OTELCOL_* variables, so this checks
    // the defaults written in the files (the docker-compose values).
    check(&[], "defaults");
}

#[test]
fn validate_rejects_a_broken_config() {
    // The validator really decodes every component's settings: a misspelt
    // key fails. (It does not check everything: an unknown tail_sampling
    // policy type only fails when the Collector starts, which
    // tests/peers_smoke.rs does with the real configs.)
    let dir = support::peers::TempDir::new("bad-config");
    let bad = dir.path().join("bad.yaml");
    let good = std::fs::read_to_string(repo_root().join("collector-config/otelcol.yaml")).unwrap();
    assert!(good.contains("decision_wait:"));
    std::fs::write(&bad, good.replace("decision_wait:", "decision_wayt:")).unwrap();
    let out = Collector::validate(&bad);
    assert!(!out.status.success(), "a broken config passed validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("decision_wayt"),
        "validate did not name the bad key: {stderr}"
    );
}
