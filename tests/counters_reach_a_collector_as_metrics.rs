//! The recorder's own counters leave as OpenTelemetry metrics through the
//! same OTLP endpoint as its windows: a real Collector (built from the Go
//! module proxy by `tools/build-peers.sh`) receives them and prints them
//! with its `debug` exporter, and `stats()` keeps returning the same counts.

mod support;

use std::time::{Duration, Instant};
use support::peers::{Collector, TempDir};

const CONFIG: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:OTELCOL_OTLP_GRPC_ENDPOINT}
      http:
        endpoint: ${env:OTELCOL_OTLP_HTTP_ENDPOINT}
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [debug]
    traces:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: ${env:OTELCOL_METRICS_HOST}
                port: ${env:OTELCOL_METRICS_PORT}
"#;

#[test]
fn counters_reach_a_real_collector_as_otlp_metrics() {
    let dir = TempDir::new("metrics-config");
    let config = dir.path().join("otelcol.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let collector = Collector::start(&config, &[]);
    let endpoint = collector.otlp_grpc_endpoint();

    let (blackbox, guard) = tokio_blackbox::Blackbox::builder()
        .latency_threshold(Duration::from_millis(50))
        .window(Duration::from_millis(100), Duration::from_millis(20))
        .with_env(move |var| match var {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            "OTEL_METRIC_EXPORT_INTERVAL" => Some("300".into()),
            _ => None,
        })
        .build()
        .expect("recorder");
    {
        use tracing_subscriber::prelude::*;
        let _default = tracing_subscriber::registry()
            .with(blackbox.layer())
            .set_default();
        for _ in 0..2 {
            let span = tracing::info_span!("slow request");
            let _e = span.enter();
            std::thread::sleep(Duration::from_millis(70));
        }
    }
    assert!(blackbox.flush(Duration::from_secs(10)));
    let captures = blackbox.stats().captures;
    assert!(captures >= 1, "{:?}", blackbox.stats());

    // The Collector prints each metric it receives: wait for the captures
    // counter with the value stats() gives.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while Instant::now() < deadline {
        log = collector.log();
        if log.contains("-> Name: blackbox.captures")
            && log.contains("-> Name: blackbox.export.spans")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        log.contains("-> Name: blackbox.captures"),
        "the Collector received no blackbox.captures metric; log:\n{}",
        collector.log_tail()
    );
    for name in [
        "blackbox.events.recorded",
        "blackbox.requests.slow",
        "blackbox.export.failures",
        "blackbox.buffer.bytes",
    ] {
        assert!(log.contains(&format!("-> Name: {name}")), "{name} missing");
    }
    // The captures counter is a monotonic sum whose latest value is what
    // stats() says.
    let after = &log[log.rfind("-> Name: blackbox.captures").unwrap()..];
    let value_line = after
        .lines()
        .find(|l| l.contains("Value:"))
        .expect("a data point");
    assert!(
        value_line.trim().ends_with(&format!("Value: {captures}")),
        "{value_line} (stats: {captures})"
    );
    assert!(after.contains("-> IsMonotonic: true"), "a counter");
    let stats = blackbox.stats();
    assert!(stats.metrics_exported >= 1, "{stats:?}");
    drop(guard);
}
