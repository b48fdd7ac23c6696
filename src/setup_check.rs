//! What the recorder tells the application's log, once, about a setup that
//! leaves it blind: request spans that the subscriber's filter disables
//! (tower-http's `TraceLayer` makes its spans at `DEBUG`, below the usual
//! `info` default), and a build without `--cfg tokio_unstable` (no task hooks).
//!
//! A global filter (`registry().with(EnvFilter)`) disables a callsite for
//! every layer: the recorder's layer never sees those spans. Two checks:
//! - a callsite below the filter's maximum level is never even registered
//!   (tracing's macros compare the level first): when no request span was
//!   seen, Tokio's hooks saw tasks spawned by an HTTP or gRPC server crate
//!   (axum, hyper, tonic, ...), and the subscriber disables a span shaped
//!   like tower-http's (`request`, target `tower_http::trace::make_span`,
//!   `DEBUG`), that is said, with the fix;
//! - a callsite that is registered (the recorder's layer is asked first
//!   when it is registered after the filter, as the README shows) and
//!   looks like a request is kept here (a few, under a lock, once each),
//!   and the capture thread asks the whole subscriber whether it enables
//!   it (`Dispatch::enabled`).
//!
//! Each finding is one `WARN` event (target `tokio_blackbox`).
//!
//! Nothing here runs on the hot path: callsite registration happens once
//! per callsite, and the check runs on the capture thread about once a second.

use crate::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing::dispatcher::WeakDispatch;
use tracing_core::callsite::Callsite;
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::{Interest, Level, Metadata};

/// A callsite shaped like tower-http 0.6's request span (its
/// `DefaultMakeSpan`), only ever shown to the subscriber's filter.
struct TowerHttpRequest;

static TOWER_HTTP_REQUEST: TowerHttpRequest = TowerHttpRequest;

static TOWER_HTTP_REQUEST_META: Metadata<'static> = Metadata::new(
    "request",
    "tower_http::trace::make_span",
    Level::DEBUG,
    None,
    None,
    None,
    FieldSet::new(
        &["method", "uri", "version"],
        tracing_core::identify_callsite!(&TOWER_HTTP_REQUEST),
    ),
    Kind::SPAN,
);

impl Callsite for TowerHttpRequest {
    fn set_interest(&self, _: Interest) {}
    fn metadata(&self) -> &Metadata<'_> {
        &TOWER_HTTP_REQUEST_META
    }
}

/// Parts of spawn locations that say the process serves HTTP or gRPC:
/// the server crates' own task spawns.
const SERVER_CRATES: &[&str] = &[
    "/axum-",
    "/hyper-util-",
    "/hyper-",
    "/tonic-",
    "/actix-",
    "/poem-",
    "/warp-",
    "/salvo",
];

/// Finds the first interned string (a spawn location) a predicate accepts.
pub(crate) type FindLocation<'a> = dyn Fn(&dyn Fn(&str) -> bool) -> Option<String> + 'a;

/// What the capture thread knows when it runs the checks.
pub(crate) struct Seen<'a> {
    /// Request spans opened so far.
    pub(crate) requests: u64,
    /// The first spawn location (or other interned string) so far that
    /// the predicate accepts.
    pub(crate) find_location: &'a FindLocation<'a>,
}

/// Callsites kept for the check at most (a service has a handful of
/// request callsites).
const MAX_CANDIDATES: usize = 64;

/// How request spans are marked in the ecosystem: a callsite with any of
/// these fields is a server request span (OpenTelemetry's semantic
/// conventions, as axum-tracing-opentelemetry, tonic's and others' spans
/// carry them).
const REQUEST_FIELDS: &[&str] = &["otel.kind", "http.request.method", "rpc.system"];

/// Whether a span callsite looks like a request span of the ecosystem:
/// tower-http's `TraceLayer` (target `tower_http::trace`), or a span
/// with a field of [`REQUEST_FIELDS`].
pub(crate) fn looks_like_request(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("tower_http::trace")
        || meta
            .fields()
            .iter()
            .any(|f| REQUEST_FIELDS.contains(&f.name()))
}

/// The fix for a hidden request callsite, in words a user can act on.
fn fix_for(meta: &Metadata<'_>) -> String {
    let target = meta.target();
    let module = target.split("::").next().unwrap_or(target);
    let level = meta.level().as_str().to_ascii_lowercase();
    let mut fix =
        format!("add `{module}={level}` to the filter (RUST_LOG or the EnvFilter's default)");
    if target.starts_with("tower_http::trace") {
        fix.push_str(
            ", or make the spans at INFO: `TraceLayer::new_for_http().make_span_with(\
             tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO))`",
        );
    }
    fix
}

/// The checks' state, one per recorder (in its shared state).
#[derive(Debug, Default)]
pub(crate) struct SetupCheck {
    /// Request-like callsites, and whether each was checked.
    candidates: Mutex<Vec<(&'static Metadata<'static>, bool)>>,
    /// The subscriber the recorder's layer is part of.
    dispatch: OnceLock<WeakDispatch>,
    /// Request callsites found disabled by the subscriber's filter.
    hidden: AtomicU64,
    /// The `tokio_unstable` line was written.
    told_unstable: AtomicBool,
    /// The "server without request spans" line was written.
    told_server: AtomicBool,
}

impl SetupCheck {
    /// The subscriber the layer became part of.
    pub(crate) fn set_dispatch(&self, dispatch: WeakDispatch) {
        let _ = self.dispatch.set(dispatch);
    }

    /// A span callsite was registered: kept for the check when it is a
    /// request candidate (it [`looks_like_request`], or the configured rule
    /// says it is one).
    #[cold]
    pub(crate) fn note_callsite(&self, meta: &'static Metadata<'static>, candidate: bool) {
        if !candidate {
            return;
        }
        let mut c = lock(&self.candidates);
        if c.len() < MAX_CANDIDATES && !c.iter().any(|(m, _)| std::ptr::eq(*m, meta)) {
            c.push((meta, false));
        }
    }

    /// Request callsites found disabled by the subscriber's filter so far.
    pub(crate) fn hidden(&self) -> u64 {
        self.hidden.load(Ordering::Relaxed)
    }

    /// Runs the checks (on the capture thread): each kept callsite once,
    /// and the `tokio_unstable` line once. Each finding is one `WARN` event.
    pub(crate) fn check(&self, seen: &Seen<'_>) {
        if !cfg!(tokio_unstable) && !self.told_unstable.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "tokio_blackbox",
                "tokio-blackbox was built without `--cfg tokio_unstable`: Tokio's task hooks are off, \
                 so windows show request spans and worker park/unpark but no task, poll or spawn. \
                 Build with RUSTFLAGS=\"--cfg tokio_unstable\" (or `[build] rustflags = [\"--cfg\", \
                 \"tokio_unstable\"]` in .cargo/config.toml) to record them"
            );
        }
        if seen.requests == 0 && !self.told_server.load(Ordering::Relaxed) {
            self.check_server(seen);
        }
        let pending: Vec<&'static Metadata<'static>> = lock(&self.candidates)
            .iter()
            .filter(|(_, checked)| !checked)
            .map(|(m, _)| *m)
            .collect();
        if pending.is_empty() {
            return;
        }
        // Not part of a subscriber yet: checked next time.
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        for (_, checked) in lock(&self.candidates).iter_mut() {
            *checked = true;
        }
        for meta in pending {
            if dispatch.enabled(meta) {
                continue;
            }
            self.hidden.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "tokio_blackbox",
                "request spans `{}` (target {}, level {}) are disabled by the subscriber's filter, so \
                 tokio-blackbox never sees these requests and captures none of them: {}",
                meta.name(),
                meta.target(),
                meta.level(),
                fix_for(meta)
            );
        }
    }
}

impl SetupCheck {
    /// No request seen: if the process serves HTTP or gRPC and the
    /// subscriber disables tower-http's request spans, says so once.
    fn check_server(&self, seen: &Seen<'_>) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        if dispatch.enabled(&TOWER_HTTP_REQUEST_META) {
            return;
        }
        let Some(server) = (seen.find_location)(&|l| SERVER_CRATES.iter().any(|c| l.contains(c)))
        else {
            return;
        };
        if self.told_server.swap(true, Ordering::Relaxed) {
            return;
        }
        self.hidden.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "tokio_blackbox",
            "no request span seen, although this process serves requests (a task spawned at {server}): \
             tower-http's TraceLayer makes its request spans at DEBUG (target tower_http::trace::make_span), \
             and the subscriber's filter disables them, so tokio-blackbox never sees a request and \
             captures none: {}",
            fix_for(&TOWER_HTTP_REQUEST_META)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;

    /// No location is ever found.
    fn nowhere(_: &dyn Fn(&str) -> bool) -> Option<String> {
        None
    }

    /// tower-http's request span's callsite (as `TraceLayer` makes it).
    fn tower_http_request() -> &'static Metadata<'static> {
        let span =
            tracing::debug_span!(target: "tower_http::trace::make_span", "request", method = "GET");
        span.metadata().expect("a disabled span keeps its metadata")
    }

    #[test]
    fn a_filter_that_hides_request_spans_is_named_with_its_fix() {
        let meta = tower_http_request();
        assert!(looks_like_request(meta));
        let fix = fix_for(meta);
        assert!(fix.contains("`tower_http=debug`"), "{fix}");
        assert!(fix.contains("level(tracing::Level::INFO)"), "{fix}");
        for (filter, hidden) in [(LevelFilter::INFO, 1), (LevelFilter::DEBUG, 0)] {
            let check = SetupCheck::default();
            let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(filter));
            check.set_dispatch(dispatch.downgrade());
            check.note_callsite(meta, looks_like_request(meta));
            check.check(&Seen {
                requests: 1,
                find_location: &nowhere,
            });
            assert_eq!(check.hidden(), hidden, "{filter}");
        }
    }

    #[test]
    fn plain_spans_are_not_request_candidates() {
        let span = tracing::info_span!("cache_refresh");
        let meta = span.metadata().expect("metadata");
        assert!(!looks_like_request(meta));
        let check = SetupCheck::default();
        check.note_callsite(meta, looks_like_request(meta));
        assert!(lock(&check.candidates).is_empty());
        let meta = tower_http_request();
        check.note_callsite(meta, looks_like_request(meta));
        check.note_callsite(meta, looks_like_request(meta));
        assert_eq!(lock(&check.candidates).len(), 1, "each callsite once");
    }

    /// A build without `--cfg tokio_unstable` says so once, in a `WARN`
    /// naming the cfg (this test runs in both builds: CI runs the library's
    /// tests without the cfg too).
    #[test]
    fn a_build_without_task_hooks_says_so_once() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                struct Message(String);
                impl tracing::field::Visit for Message {
                    fn record_debug(&mut self, _: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        self.0 = format!("{v:?}");
                    }
                }
                let mut m = Message(String::new());
                event.record(&mut m);
                if *event.metadata().level() == tracing::Level::WARN {
                    lock(&self.0).push(m.0);
                }
            }
        }
        let lines = Lines::default();
        let check = SetupCheck::default();
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(lines.clone()),
            || {
                let seen = Seen {
                    requests: 1,
                    find_location: &nowhere,
                };
                check.check(&seen);
                check.check(&seen);
            },
        );
        let said = lock(&lines.0);
        if cfg!(tokio_unstable) {
            assert!(said.is_empty(), "{said:?}");
        } else {
            assert_eq!(said.len(), 1, "{said:?}");
            assert!(said[0].contains("--cfg tokio_unstable"), "{said:?}");
        }
    }

    /// A DEBUG request span is never registered under an INFO filter
    /// (tracing compares the level first): with no request seen and an HTTP
    /// server's tasks spawned, the shape of tower-http's span is checked.
    #[test]
    fn a_server_with_no_request_seen_under_an_info_filter_is_told() {
        let axum = |accept: &dyn Fn(&str) -> bool| {
            let l = "/home/u/.cargo/registry/src/x/axum-0.8.9/src/serve/mod.rs:321";
            accept(l).then(|| l.to_owned())
        };
        for (filter, requests, find, hidden) in [
            (LevelFilter::INFO, 0, &axum as &FindLocation<'_>, 1),
            (LevelFilter::INFO, 0, &nowhere, 0),
            (LevelFilter::INFO, 5, &axum, 0),
            (LevelFilter::DEBUG, 0, &axum, 0),
        ] {
            let check = SetupCheck::default();
            let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(filter));
            check.set_dispatch(dispatch.downgrade());
            let seen = Seen {
                requests,
                find_location: find,
            };
            check.check(&seen);
            check.check(&seen);
            assert_eq!(check.hidden(), hidden, "{filter} {requests}");
        }
    }
}
