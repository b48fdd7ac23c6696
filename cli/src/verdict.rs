//! The library's verdict ([`analysis::explain`]) for the slow requests a
//! subcommand shows: the headline of `summary`, `timeline` and the page.
//!
//! A binary file is streamed once to cut each explained request's window
//! (its interval and [`BEFORE_NS`] before it, inside the file's bounds), so
//! memory is those windows; at most [`SHOWN`] requests are explained. The
//! recorder's JSON file is read as its timelines ([`scan::json_timelines`])
//! and each request is explained on the one that holds it.

use std::path::Path;

use tokio_blackbox::Window;
use tokio_blackbox::analysis::{self, Explanation};

use crate::fmt::dur;
use crate::scan::{self, Meta, ReadError};

/// How many requests a subcommand explains: the slowest.
pub(crate) const SHOWN: usize = 5;

/// How much of the time before a request its window holds: enough to see
/// who held the workers when it started, as the recorder's windows do.
pub(crate) const BEFORE_NS: u64 = 1_000_000_000;

/// The indexes in `meta.requests` of its `n` slowest requests, slowest first.
pub(crate) fn slowest(meta: &Meta, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..meta.requests.len()).collect();
    order.sort_by_key(|&i| {
        let r = &meta.requests[i];
        (
            std::cmp::Reverse(r.end_unix_ns.saturating_sub(r.start_unix_ns)),
            r.start_unix_ns,
        )
    });
    order.truncate(n);
    order
}

/// The explanations of requests `which` (indexes in `meta.requests`) of
/// the file at `path`, in the same order.
pub(crate) fn explain(
    path: &Path,
    meta: &Meta,
    which: &[usize],
) -> Result<Vec<(usize, Explanation)>, ReadError> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    if meta.json_windows.is_some() {
        let timelines = scan::json_timelines(path)?;
        return Ok(which
            .iter()
            .filter_map(|&i| {
                let r = &meta.requests[i];
                // The timeline with the request in it (its own window's).
                let t = timelines
                    .iter()
                    .find(|t| t.requests.iter().any(|x| x.request_id == r.request_id))?;
                Some((i, analysis::explain(t, r)))
            })
            .collect());
    }
    let mut windows: Vec<Window> = which
        .iter()
        .map(|&i| {
            let r = &meta.requests[i];
            let from = r
                .start_unix_ns
                .saturating_sub(BEFORE_NS)
                .max(meta.file_from_ns);
            let to = r.end_unix_ns.min(meta.to_ns).max(from);
            scan::request_window(meta, r, meta.sequence, from, to)
        })
        .collect();
    scan::cut_windows(path, meta.file_from_ns, &mut windows)?;
    Ok(which
        .iter()
        .zip(&windows)
        .map(|(&i, w)| (i, analysis::explain(w, &meta.requests[i])))
        .collect())
}

/// The cause, the confidence and the shares on one line:
/// `blocked_worker (inferred): own_cpu 1.0ms 0%, blocked_worker 310.0ms 91%, ...`.
pub(crate) fn shares_line(x: &Explanation) -> String {
    let shares: Vec<String> = x
        .shares()
        .iter()
        .map(|s| format!("{} {} {:.0}%", s.name, dur(s.ns), s.fraction * 100.0))
        .collect();
    format!(
        "{} ({}): {}",
        x.cause.as_str(),
        x.confidence.as_str(),
        shares.join(", ")
    )
}

/// The verdict as JSON for the page.
pub(crate) fn json(x: &Explanation) -> serde_json::Value {
    let shares: Vec<serde_json::Value> = x
        .shares()
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "ns": s.ns, "fraction": s.fraction}))
        .collect();
    serde_json::json!({
        "sentence": x.sentence,
        "cause": x.cause.as_str(),
        "confidence": x.confidence.as_str(),
        "shares": shares,
    })
}
