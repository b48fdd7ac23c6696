//! The recorder's own health as OpenTelemetry metrics: the counters of
//! [`BlackboxStats`](crate::BlackboxStats) (captures, merges, skips, drops,
//! export failures, buffer use) sent over OTLP to the same endpoint as the
//! windows, where SREs already look.
//!
//! One thread, `blackbox-metrics`, owns a current-thread Tokio runtime (the
//! gRPC exporter needs one), a meter provider with a manual reader, and the
//! exporter. Every `OTEL_METRIC_EXPORT_INTERVAL` (60 s by default) it
//! takes one snapshot of the counters and collects the observable
//! instruments, each reading its counter from it, and exports them, waiting at most the export timeout; a failed
//! export is counted and the next interval tries again. At shutdown it
//! exports once more, within the guard's deadline. `OTEL_METRICS_EXPORTER=none`
//! turns it off. Nothing of it runs on an application thread.

use super::counters::add;
use super::endpoint::OtlpSettings;
use super::shared::{ExportShared, quietly};
use crate::error::BuildError;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// The default export interval (the OpenTelemetry specification's 60 s).
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// One metric: its name, description, whether it only grows (a counter)
/// or goes up and down (a gauge), and its value now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) monotonic: bool,
    pub(crate) value: u64,
}

/// What the metrics thread reads each interval.
pub(crate) type Source = Arc<dyn Fn() -> Vec<Metric> + Send + Sync>;

/// The metrics settings from the environment: `None` when turned off
/// (`OTEL_METRICS_EXPORTER=none`), else the interval.
///
/// # Errors
///
/// [`BuildError::InvalidEnv`] for a malformed `OTEL_METRIC_EXPORT_INTERVAL`
/// or an `OTEL_METRICS_EXPORTER` other than `otlp` or `none`.
pub(crate) fn interval_from(
    env: impl Fn(&'static str) -> Option<String>,
) -> Result<Option<Duration>, BuildError> {
    let value = |var| {
        env(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match value("OTEL_METRICS_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(BuildError::InvalidEnv {
                var: "OTEL_METRICS_EXPORTER",
                value: other.to_owned(),
                expected: "otlp or none",
            });
        }
    }
    match value("OTEL_METRIC_EXPORT_INTERVAL") {
        None => Ok(Some(DEFAULT_INTERVAL)),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|&ms| ms >= 1)
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or(BuildError::InvalidEnv {
                var: "OTEL_METRIC_EXPORT_INTERVAL",
                value: raw,
                expected: "a whole number of milliseconds, at least 1",
            }),
    }
}

/// A manual reader shared between the meter provider (which owns its
/// reader) and the metrics thread (which collects from it).
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The metrics thread, stopped (after a last export) when dropped.
#[derive(Debug)]
pub(crate) struct MetricsExport {
    stop: Arc<(Mutex<Option<Instant>>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsExport {
    /// Starts the thread exporting `source` every `interval` with `settings`.
    ///
    /// # Errors
    ///
    /// [`BuildError::Exporter`] when the exporter cannot be built, or the
    /// thread or its runtime cannot start.
    pub(crate) fn start(
        settings: &OtlpSettings,
        resource: Resource,
        interval: Duration,
        source: Source,
        shared: Arc<ExportShared>,
    ) -> Result<MetricsExport, BuildError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::Exporter(Box::new(e)))?;
        let exporter = {
            let _in = rt.enter();
            settings.build_metric_exporter()?
        };
        let timeout = settings.timeout.unwrap_or(Duration::from_secs(10));
        let stop: Arc<(Mutex<Option<Instant>>, Condvar)> = Arc::default();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("blackbox-metrics".into())
                .spawn(move || {
                    // The exporter's own tracing (tonic, hyper) never reaches
                    // the application's subscriber or the recorder: each
                    // collection and export runs `quietly`.
                    let _suppressed = opentelemetry::Context::enter_telemetry_suppressed_scope();
                    let (reader, provider, instruments, snapshot) = quietly(|| {
                        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
                        let provider = SdkMeterProvider::builder()
                            .with_reader(reader.clone())
                            .with_resource(resource)
                            .build();
                        let meter = provider.meter("tokio-blackbox");
                        let mut instruments = Vec::new();
                        // One snapshot of the counters per collection, read by
                        // every instrument's callback.
                        let snapshot: Arc<Mutex<Vec<Metric>>> = Arc::new(Mutex::new(source()));
                        let first = crate::sync::lock(&snapshot).clone();
                        for (i, m) in first.into_iter().enumerate() {
                            let read = {
                                let snapshot = snapshot.clone();
                                move || crate::sync::lock(&snapshot).get(i).map_or(0, |m| m.value)
                            };
                            if m.monotonic {
                                instruments.push(Box::new(
                                    meter
                                        .u64_observable_counter(m.name)
                                        .with_description(m.description)
                                        .with_callback(move |o| o.observe(read(), &[]))
                                        .build(),
                                )
                                    as Box<dyn std::any::Any>);
                            } else {
                                instruments.push(Box::new(
                                    meter
                                        .u64_observable_gauge(m.name)
                                        .with_description(m.description)
                                        .with_callback(move |o| o.observe(read(), &[]))
                                        .build(),
                                ));
                            }
                        }
                        (reader, provider, instruments, snapshot)
                    });
                    let export = || {
                        let mut rm = ResourceMetrics::default();
                        let counters = &shared.counters;
                        *crate::sync::lock(&snapshot) = source();
                        if quietly(|| reader.collect(&mut rm)).is_err() {
                            add(&counters.metrics_failures, 1);
                            return;
                        }
                        let sent = quietly(|| {
                            rt.block_on(async {
                                tokio::time::timeout(timeout, exporter.export(&rm)).await
                            })
                        });
                        match sent {
                            Ok(Ok(())) => add(&counters.metrics_exported, 1),
                            _ => add(&counters.metrics_failures, 1),
                        }
                    };
                    let (lock, cv) = &*stop;
                    let mut next = crate::clock::deadline_after(interval);
                    loop {
                        let guard = crate::sync::lock(lock);
                        let (guard, _) = cv
                            .wait_timeout_while(
                                guard,
                                next.saturating_duration_since(Instant::now()),
                                |s| s.is_none(),
                            )
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let stopping = *guard;
                        drop(guard);
                        if stopping.is_some() {
                            export();
                            break;
                        }
                        if Instant::now() >= next {
                            export();
                            next = next.checked_add(interval).unwrap_or(next);
                            if next <= Instant::now() {
                                next = crate::clock::deadline_after(interval);
                            }
                        }
                    }
                    quietly(move || {
                        drop(instruments);
                        let _ = exporter.shutdown_with_timeout(Duration::from_millis(100));
                        let _ = provider.shutdown_with_timeout(Duration::from_millis(100));
                        drop(rt);
                    });
                })
                .map_err(|e| BuildError::Exporter(Box::new(e)))?
        };
        Ok(MetricsExport {
            stop,
            thread: Some(thread),
        })
    }

    /// Exports once more and stops the thread, waiting at most until `deadline`.
    pub(crate) fn shutdown(&mut self, deadline: Instant) {
        let (lock, cv) = &*self.stop;
        *crate::sync::lock(lock) = Some(deadline);
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for MetricsExport {
    fn drop(&mut self) {
        self.shutdown(Instant::now() + Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_turns_metrics_off_or_sets_the_interval() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |v: &'static str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| x.to_string())
            }
        };
        assert_eq!(interval_from(env(&[])).unwrap(), Some(DEFAULT_INTERVAL));
        assert_eq!(
            interval_from(env(&[("OTEL_METRICS_EXPORTER", "none")])).unwrap(),
            None
        );
        assert_eq!(
            interval_from(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "1500")])).unwrap(),
            Some(Duration::from_millis(1500))
        );
        for bad in ["0", "-1", "1s", "99999999999999999999999"] {
            let leaked: &'static str = Box::leak(bad.to_owned().into_boxed_str());
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(vec![("OTEL_METRIC_EXPORT_INTERVAL", leaked)].into_boxed_slice());
            let e = interval_from(env(pairs)).unwrap_err();
            assert!(e.to_string().contains("OTEL_METRIC_EXPORT_INTERVAL"), "{e}");
        }
        let e = interval_from(env(&[("OTEL_METRICS_EXPORTER", "prometheus")])).unwrap_err();
        assert!(e.to_string().contains("OTEL_METRICS_EXPORTER"), "{e}");
    }
}
