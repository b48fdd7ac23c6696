//! Shared helpers for the integration tests: `mod support;` in a test file.
#![allow(dead_code)]

pub mod demo;
pub mod fixtures;
pub mod peers;
pub mod service;
pub mod verdicts;
pub mod windows;
