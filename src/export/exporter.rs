//! The one exporter trait of the pipeline, object safe: any
//! [`SpanExporter`] (the OTLP network exporters, [`JsonFileExporter`](super::json::JsonFileExporter),
//! one of the application's) runs on the export thread through it.

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// [`SpanExporter`] is not object safe (its `export` returns `impl Future`);
/// this is, so the builder can take any exporter.
pub(crate) trait DynExporter: Send + Sync + fmt::Debug {
    fn export_dyn(
        &self,
        batch: Vec<SpanData>,
    ) -> Pin<Box<dyn Future<Output = OTelSdkResult> + Send + '_>>;
    fn set_resource_dyn(&mut self, resource: &Resource);
    fn shutdown_dyn(&self) -> OTelSdkResult;
}

impl<E: SpanExporter + 'static> DynExporter for E {
    fn export_dyn(
        &self,
        batch: Vec<SpanData>,
    ) -> Pin<Box<dyn Future<Output = OTelSdkResult> + Send + '_>> {
        Box::pin(self.export(batch))
    }
    fn set_resource_dyn(&mut self, resource: &Resource) {
        self.set_resource(resource);
    }
    fn shutdown_dyn(&self) -> OTelSdkResult {
        self.shutdown()
    }
}
