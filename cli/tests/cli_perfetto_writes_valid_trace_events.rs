//! `blackbox perfetto` writes JSON in the Chrome trace-event format that
//! ui.perfetto.dev and chrome://tracing accept: the fields each event type
//! requires, matched begin/end and flow pairs, time order on each track, and
//! slices that nest.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::fixtures;

fn trace_of(fixture: &str) -> Value {
    trace_with(fixture, &[])
}

fn trace_with(fixture: &str, args: &[&str]) -> Value {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{fixture}{}.trace.json", args.join("")));
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(fixture);
    let status = Command::new(env!("CARGO_BIN_EXE_blackbox"))
        .arg("perfetto")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("valid JSON")
}

/// Checks the trace-event format rules; returns the events.
#[track_caller]
fn check_format(trace: &Value) -> Vec<Value> {
    let events = trace["traceEvents"]
        .as_array()
        .expect("a traceEvents array")
        .clone();
    assert!(!events.is_empty());
    let mut last_ts: HashMap<(u64, u64), f64> = HashMap::new();
    let mut open: HashMap<(u64, u64), Vec<(String, f64)>> = HashMap::new(); // B/E
    let mut nest: HashMap<(u64, u64), Vec<f64>> = HashMap::new(); // X ends
    let mut flows: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for e in &events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        assert!(e["name"].is_string(), "no name: {e}");
        let pid = e["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {e}"));
        let tid = e["tid"].as_u64().unwrap_or_else(|| panic!("no tid: {e}"));
        let track = (pid, tid);
        if ph == "M" {
            let name = e["name"].as_str().unwrap();
            assert!(
                [
                    "process_name",
                    "thread_name",
                    "process_sort_index",
                    "thread_sort_index"
                ]
                .contains(&name),
                "unknown metadata {e}"
            );
            assert!(e["args"].is_object(), "metadata without args: {e}");
            continue;
        }
        let ts = e["ts"].as_f64().unwrap_or_else(|| panic!("no ts: {e}"));
        assert!(ts >= 0.0, "negative ts: {e}");
        let last = last_ts.entry(track).or_insert(ts);
        assert!(ts >= *last, "ts goes back on track {track:?}: {e}");
        *last = ts;
        match ph {
            "X" => {
                let dur = e["dur"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("X without dur: {e}"));
                assert!(dur >= 0.0, "negative dur: {e}");
                let stack = nest.entry(track).or_default();
                while stack.last().is_some_and(|&end| end <= ts) {
                    stack.pop();
                }
                if let Some(&end) = stack.last() {
                    assert!(
                        ts + dur <= end + 1e-6,
                        "slice overlaps its parent without nesting: {e}"
                    );
                }
                stack.push(ts + dur);
            }
            "B" => open
                .entry(track)
                .or_default()
                .push((e["name"].as_str().unwrap().into(), ts)),
            "E" => {
                let (_, begin) = open
                    .get_mut(&track)
                    .and_then(Vec::pop)
                    .unwrap_or_else(|| panic!("E without B: {e}"));
                assert!(ts >= begin);
            }
            "s" | "f" => {
                let id = e["id"].to_string();
                assert!(e["cat"].is_string(), "flow without cat: {e}");
                let pair = flows.entry(id).or_default();
                if ph == "s" {
                    pair.0.push(ts);
                } else {
                    assert_eq!(
                        e["bp"], "e",
                        "flow end must bind to its enclosing slice: {e}"
                    );
                    pair.1.push(ts);
                }
            }
            "i" | "I" => {}
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    for (track, stack) in open {
        assert!(stack.is_empty(), "unmatched B on {track:?}");
    }
    for (id, (starts, ends)) in &flows {
        assert_eq!(
            (starts.len(), ends.len()),
            (1, 1),
            "flow {id} is not one start and one end"
        );
        assert!(starts[0] <= ends[0], "flow {id} goes back in time");
    }
    events
}

#[test]
fn small_fixture_is_a_valid_trace() {
    let trace = trace_of("small.bbx");
    let events = check_format(&trace);
    let named =
        |name: &str| -> Vec<&Value> { events.iter().filter(|e| e["name"] == name).collect() };

    // A track per worker.
    let threads: Vec<&str> = named("thread_name")
        .iter()
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(
        threads
            .iter()
            .filter(|n| n.contains("tokio-runtime-worker"))
            .count(),
        3,
        "{threads:?}"
    );
    // A slice per poll: 31 polls in the fixture.
    let polls: Vec<&Value> = events.iter().filter(|e| e["cat"] == "poll").collect();
    assert_eq!(polls.len(), 31);
    // The blocking neighbour's long poll.
    let long: Vec<&&Value> = polls.iter().filter(|e| e["args"]["long"] == true).collect();
    assert_eq!(long.len(), 1);
    assert_eq!(long[0]["args"]["task"], fixtures::TASK_CACHE);
    assert_eq!(long[0]["dur"].as_f64(), Some(200_000.0));
    assert_eq!(long[0]["args"]["location"], "src/cache.rs:77:13");
    // The slow request on its own track.
    let req: Vec<&Value> = named("GET /orders")
        .into_iter()
        .filter(|e| e["cat"] == "request" && e["pid"] == 2)
        .collect();
    assert_eq!(req.len(), 1);
    assert_eq!(req[0]["dur"].as_f64(), Some(280_000.0));
    assert_eq!(req[0]["args"]["trace_id"], fixtures::TRACE_ID);
    // Flows from a spawn to the first poll: handler (spawned by the accept
    // loop), query (spawned by the handler) and the health check.
    let flow_ids: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "f")
        .filter_map(|e| e["id"].as_u64())
        .collect();
    for task in [
        fixtures::TASK_HANDLER,
        fixtures::TASK_QUERY,
        fixtures::TASK_HEALTH,
    ] {
        assert!(
            flow_ids.contains(&task),
            "no flow to task {task}: {flow_ids:?}"
        );
    }
}

#[test]
fn golden_dump_is_a_valid_trace() {
    check_format(&trace_of("golden.bbx"));
}

#[test]
fn a_range_is_a_valid_trace_of_its_part() {
    let events = check_format(&trace_with(
        "small.bbx",
        &["--from", "340ms", "--to", "560ms"],
    ));
    let polls: Vec<&Value> = events.iter().filter(|e| e["cat"] == "poll").collect();
    // The long poll (+0.35 s to +0.55 s), the query's and the handler's, cut at +0.56 s,
    // and worker 2's polls at +0.355, +0.400, +0.445, +0.490 and +0.535 s.
    assert_eq!(polls.len(), 8, "{polls:#?}");
    assert!(polls.iter().all(|p| p["ts"].as_f64().unwrap() >= 0.0));
    let end = 220_000.0;
    assert!(
        polls
            .iter()
            .all(|p| p["ts"].as_f64().unwrap() + p["dur"].as_f64().unwrap() <= end + 1e-6)
    );
    let traced = check_format(&trace_with("small.bbx", &["--trace", fixtures::TRACE_ID]));
    assert!(
        traced
            .iter()
            .any(|e| e["name"] == "GET /orders" && e["pid"] == 2)
    );
}
