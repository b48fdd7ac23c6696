//! Errors, one type per concern.

use std::fmt;

pub use crate::dump::{DumpError, DumpErrorKind};

/// Building the recorder failed. Each variant says what to change.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::{Blackbox, BuildError};
/// let err = Blackbox::builder().buffer_memory(0).build().unwrap_err();
/// assert!(matches!(err, BuildError::InvalidSetting { .. }));
/// assert!(err.to_string().contains("buffer_memory"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An environment variable holds a value the recorder cannot use.
    #[error("environment variable {var}={value:?} is invalid: expected {expected}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// The value found.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An environment variable of an older version is set; it no longer has
    /// an effect, and another one replaces it.
    #[error("environment variable {var}={value:?} is no longer read: use {instead}")]
    RemovedEnv {
        /// The old variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What to set instead.
        instead: &'static str,
    },
    /// A value set in code is out of range.
    #[error("setting {setting} = {value} is invalid: expected {expected}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A thread of the recorder could not be started.
    #[error("could not start the {thread} thread: {source}")]
    Thread {
        /// The thread's name.
        thread: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A setting asks for something this build of the crate leaves out:
    /// turn on the feature named (`tokio-blackbox = { version = "…",
    /// features = ["…"] }`) or change the setting.
    #[error(
        "{what} needs tokio-blackbox's `{feature}` feature, which this build does not have: {fix}"
    )]
    MissingFeature {
        /// What was asked for, with the variable that asked.
        what: String,
        /// The crate feature that provides it.
        feature: &'static str,
        /// What to do instead.
        fix: &'static str,
    },
    /// The exporter could not be built (see the source for why).
    #[error("could not build the span exporter: {0}")]
    Exporter(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A sink failed to write a window. The recorder counts it and goes on.
#[derive(Debug)]
pub struct SinkError(Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    /// Wraps any error.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = tokio_blackbox::SinkError::new(std::io::Error::other("disk full"));
    /// assert_eq!(e.to_string(), "disk full");
    /// ```
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SinkError {
        SinkError(e.into())
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<std::io::Error> for SinkError {
    fn from(e: std::io::Error) -> SinkError {
        SinkError::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_variants() {
        let e = BuildError::InvalidEnv {
            var: "BLACKBOX_DIR",
            value: "".into(),
            expected: "a directory path",
        };
        assert_eq!(
            e.to_string(),
            "environment variable BLACKBOX_DIR=\"\" is invalid: expected a directory path"
        );
        let e = BuildError::InvalidSetting {
            setting: "events_per_thread",
            value: "0".into(),
            expected: "at least 2",
        };
        assert_eq!(
            e.to_string(),
            "setting events_per_thread = 0 is invalid: expected at least 2"
        );
    }
}
