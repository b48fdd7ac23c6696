//! Export: where captured windows go, off the application's threads.
//!
//! Windows are cut and handed to a [`Sink`] on the recorder's own thread
//! (`blackbox-capture`), fed by a bounded queue: a slow sink delays captures,
//! never the application, and a full queue is counted, never waited on.
//!
//! The sinks of this crate:
//!
//! - [`OtlpSink`]: the window as OTLP spans in the slow request's trace
//!   ([`otlp`]), sent by `opentelemetry-otlp` (gRPC or HTTP/protobuf, built
//!   from the settings of [`endpoint`]) or any [`SpanExporter`] on the
//!   `blackbox-export` thread. The default when an
//!   `OTEL_EXPORTER_OTLP_*ENDPOINT` is set.
//! - [`JsonFileSink`]: the same spans appended as OTLP JSON lines under the
//!   recorder's directory by [`JsonFileExporter`] ([`json`]), on the same
//!   kind of thread. The default otherwise.
//! - [`DirSink`]: binary capture files in the dump format.
//!
//! With an endpoint set, the recorder's own counters also leave as OTLP
//! metrics on the `blackbox-metrics` thread (`metrics`).
//!
//! [`TailSampler`] ([`sampling`]) keeps the application's own slow and
//! failed traces and sends them through the same export thread.
//!
//! Inside, one job per file, each importing only those before it:
//! `counters` (the stats), `split` (memory and request sizes), `queue` (the
//! bounded job queue), `shared` (what the recorder, sinks and sampler share),
//! `exporter` (the one object-safe exporter trait), `gzip` (gzip until the
//! endpoint refuses it), `resource`, `endpoint`,
//! `json`, `pipeline` (the export thread: map, split, retry), `sink` (the
//! [`Sink`] trait, [`DirSink`]) and `export_sink` (the sinks running a pipeline).
//!
//! [`SpanExporter`]: opentelemetry_sdk::trace::SpanExporter

mod counters;
pub mod endpoint;
mod export_sink;
pub(crate) mod exporter;
mod gzip;
mod http_client;
pub mod json;
pub(crate) mod metrics;
pub mod names;
pub mod otlp;
pub(crate) mod pipeline;
pub mod plan;
mod queue;
mod resource;
pub mod sampling;
pub(crate) mod shared;
mod sink;
mod split;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod tls;

pub use endpoint::{OtlpSettings, Protocol};
pub use export_sink::{JsonFileSink, OtlpSink};
pub use json::JsonFileExporter;
pub use pipeline::RETRIES;
pub use queue::{QUEUE_CAPACITY, QUEUE_MAX_BYTES};
pub use resource::resource;
pub use sampling::TailSampler;
pub use sink::{DirSink, Sink};
pub use split::MAX_REQUEST_BYTES;
