//! The former home of the export pipeline, now split by job (counters,
//! exporter, endpoint, resource, split, queue, pipeline, sink): these
//! re-exports keep the old paths compiling for the crate's other modules and
//! the command until they use the new ones. Nothing is defined here.
#![doc(hidden)]

pub use super::export_sink::OtlpSink;
pub use super::pipeline::RETRIES;
pub use super::queue::{QUEUE_CAPACITY, QUEUE_MAX_BYTES};
pub use super::resource::resource;
pub use super::split::MAX_REQUEST_BYTES;
