//! Every subcommand on arbitrary and on damaged input: an error naming the
//! byte offset, or output, and never a panic. The number of cases is
//! bounded (`PROPTEST_CASES` overrides it) so CI time stays fixed.

use std::io::Write as _;

use proptest::prelude::*;

use crate::Failure;
use crate::select::RangeArgs;

const SMALL: &[u8] = include_bytes!("../../tests/fixtures/small.bbx");
const GOLDEN: &[u8] = include_bytes!("../../tests/fixtures/golden.bbx");
const JSON: &[u8] = include_bytes!("../../tests/fixtures/small.otlp.jsonl");

/// Runs every subcommand on `bytes`; checks each failure is a read error with an offset.
fn every_subcommand(bytes: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let path = file.path();
    let check = |r: Result<(), Failure>| match r {
        Ok(()) | Err(Failure::Usage(_)) => {}
        Err(Failure::Input(_, e)) => {
            let text = e.to_string();
            assert!(text.contains("byte "), "no offset in {text:?}");
        }
        Err(Failure::Other(e)) => panic!("unexpected failure {e:#}"),
    };
    let mut s = crate::summary::Summary::default();
    check(
        crate::scan::scan(path, &mut s)
            .map(|_| ())
            .map_err(|e| Failure::Input(path.into(), e)),
    );
    let _ = s.render("fuzz");
    let range = RangeArgs {
        trace: None,
        from: None,
        to: None,
    };
    check(crate::timeline::run(path, &range, 40, true).map(|_| ()));
    check(crate::resolve(path, &range).and_then(|r| crate::html::run(path, r, &mut Vec::new())));
    check(
        crate::resolve(path, &range).and_then(|r| crate::perfetto::run(path, r, &mut Vec::new())),
    );
    let around = RangeArgs {
        trace: None,
        from: Some(std::time::Duration::from_millis(1)),
        to: Some(std::time::Duration::from_millis(300)),
    };
    check(crate::resolve(path, &around).and_then(|r| crate::html::run(path, r, &mut Vec::new())));
    check(
        crate::resolve(path, &around).and_then(|r| crate::perfetto::run(path, r, &mut Vec::new())),
    );
}

/// `PROPTEST_CASES` if set, else `default`: a fixed, small number in CI.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_subcommand(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = SMALL[..32].to_vec();
        bytes.extend_from_slice(&tail);
        every_subcommand(&bytes);
    }

    #[test]
    fn damaged_fixtures(
        golden in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = if golden { GOLDEN.to_vec() } else { SMALL.to_vec() };
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        every_subcommand(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_brace(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"{".to_vec();
        bytes.extend_from_slice(&tail);
        every_subcommand(&bytes);
    }

    #[test]
    fn damaged_json(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = JSON.to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            // Digits for digits, so some edits keep the line valid JSON.
            bytes[i] = if bytes[i].is_ascii_digit() { b'0' + value % 10 } else { value };
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        every_subcommand(&bytes);
    }
}

#[test]
fn fixtures_are_read_without_error() {
    for bytes in [SMALL, GOLDEN, JSON] {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        let mut s = crate::summary::Summary::default();
        crate::scan::scan(file.path(), &mut s).unwrap();
        assert!(s.render("x").contains("slow"));
    }
}

#[test]
fn timeline_colours_only_when_asked() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small.bbx");
    let range = RangeArgs {
        trace: None,
        from: None,
        to: None,
    };
    let plain = crate::timeline::run(&path, &range, 60, false)
        .map_err(|_| ())
        .unwrap();
    let coloured = crate::timeline::run(&path, &range, 60, true)
        .map_err(|_| ())
        .unwrap();
    assert!(!plain.contains('\x1b'));
    assert!(coloured.contains("\x1b[31m#"), "long poll in red");
    assert!(
        coloured.contains("\x1b[32m="),
        "the request's own tasks in green"
    );
}

/// The OTLP JSON fixture reads back as the window it was exported from:
/// the same polls (lane, task, bounds, delay, location), parks and request.
#[test]
fn json_reads_back_as_the_binary_window() {
    #[derive(Default)]
    struct All(Vec<String>);
    impl crate::scan::View for All {}
    impl tokio_blackbox::analysis::Visitor for All {
        fn poll(&mut self, p: &tokio_blackbox::Poll) {
            self.0.push(format!("{p:?}"));
        }
        fn park(&mut self, lane: u32, ts: u64, parked: bool) {
            self.0.push(format!("park {lane} {ts} {parked}"));
        }
        fn spawn(&mut self, _lane: u32, task: u64, location: u16, ts: u64) {
            self.0.push(format!("spawn {task} {location} {ts}"));
        }
        fn terminate(&mut self, _lane: u32, task: u64, ts: u64) {
            self.0.push(format!("terminate {task} {ts}"));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let (mut bin, mut json) = (All::default(), All::default());
    let bm = crate::scan::scan(&dir.join("small.bbx"), &mut bin).unwrap();
    let jm = crate::scan::scan(&dir.join("small.otlp.jsonl"), &mut json).unwrap();
    let loc = |m: &crate::scan::Meta, s: &str| -> String {
        // String indices differ between the files: compare the strings.
        s.split("location: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|i| i.parse::<u16>().ok())
            .map_or(s.to_owned(), |i| {
                s.replace(
                    &format!("location: {i},"),
                    &format!("location: {:?},", m.string(i)),
                )
            })
    };
    let mut b: Vec<String> = bin.0.iter().map(|s| loc(&bm, s)).collect();
    let mut j: Vec<String> = json.0.iter().map(|s| loc(&jm, s)).collect();
    // Spawn locations are string indices too; drop them from the comparison.
    for v in [&mut b, &mut j] {
        for s in v.iter_mut() {
            if s.starts_with("spawn ") {
                let parts: Vec<&str> = s.split(' ').collect();
                *s = format!("spawn {} {}", parts[1], parts[3]);
            }
        }
        v.sort();
    }
    assert_eq!(b, j);
    // Request ids are the recorder's own and not exported: numbered afresh.
    let mut requests = jm.requests.clone();
    requests[0].request_id = bm.requests[0].request_id;
    assert_eq!(bm.requests, requests);
    assert_eq!((bm.from_ns, bm.to_ns), (jm.from_ns, jm.to_ns));
    assert_eq!(jm.json_windows, Some(1));
}
