#![doc = include_str!("../README.md")]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    clippy::undocumented_unsafe_blocks
)]
#![deny(unused_must_use, unsafe_op_in_unsafe_fn, unsafe_code)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod analysis;
mod builder;
mod capture;
mod clock;
mod config;
mod cpu_budget;
pub mod dump;
mod error;
pub mod event;
pub mod export;
mod hooks;
mod layer;
mod recorder;
mod requests;
mod segments;
mod setup_check;
mod shared;
mod stats;
mod sync;
mod trigger;
pub mod window;

pub use analysis::{Poll, RequestSpan, TaskActivity, WorkerActivity};
pub use builder::Builder;
pub use config::{ENV_VARS, RequestSpans, parse_duration, parse_size};
pub use error::{BuildError, DumpError, DumpErrorKind, SinkError};
pub use event::{Event, EventKind};
pub use export::{DirSink, JsonFileSink, OtlpSink, Sink, TailSampler};
pub use hooks::BlackboxHooks;
pub use layer::{BlackboxFilter, BlackboxLayer};
pub use recorder::{Blackbox, BlackboxGuard};
pub use stats::BlackboxStats;
pub use window::{Cut, Lane, SlowRequest, Window};
