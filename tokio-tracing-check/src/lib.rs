//! Nothing here: the test in `tests/` runs tokio-blackbox with Tokio's
//! `tracing` feature on, which this package enables for its own build only
//! (a workspace member outside `default-members`, so the feature does not
//! unify into the library's other test builds).
