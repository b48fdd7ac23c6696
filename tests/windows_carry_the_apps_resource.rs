//! Windows and kept traces are exported under the application's identity:
//! the service name the app sets in code on its `Resource` (not
//! `unknown_service`), whether it gives the recorder its tracer provider
//! (the tail sampler receives the provider's resource when the provider is
//! built, after the recorder) or the `Resource` itself
//! (`Builder::resource`). Read back from the OTLP JSON file the recorder
//! writes with no endpoint set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::prelude::*;

/// The `service.name` of every resource in the recorder's OTLP JSON files.
fn services_in(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().contains("otlp.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).expect("read").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for a in rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if a["key"] == "service.name" {
                        out.push(a["value"]["stringValue"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_apps_resource_names_the_windows_from_its_provider_or_given() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::remove_var("OTEL_SERVICE_NAME") };
    for given in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let resource = Resource::builder().with_service_name("checkout").build();
        let mut builder = tokio_blackbox::Blackbox::builder()
            .latency_threshold(Duration::from_millis(20))
            .window(Duration::from_millis(50), Duration::from_millis(10))
            .dir(dir.path());
        if given {
            builder = builder.resource(resource.clone());
        }
        let (blackbox, guard) = builder.build().expect("recorder");
        // The app's provider, built after the recorder, with the sampler.
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(blackbox.tail_sampler())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")))
            .with(blackbox.layer());
        tracing::subscriber::with_default(subscriber, || {
            let _request = tracing::info_span!("GET /orders").entered();
            std::thread::sleep(Duration::from_millis(30));
        });
        assert!(blackbox.flush(Duration::from_secs(10)));
        let _ = provider.force_flush();
        assert!(blackbox.flush(Duration::from_secs(10)));
        drop(guard);
        let services = services_in(dir.path());
        assert!(!services.is_empty(), "given={given}: nothing written");
        assert!(
            services.iter().all(|s| s == "checkout"),
            "given={given}: {services:?}"
        );
    }
}
