//! Every subcommand on arbitrary and on damaged input: an error naming the
//! byte offset, or output, and never a panic. The number of cases is
//! bounded (`PROPTEST_CASES` overrides it) so CI time stays fixed.

use std::io::Write as _;

use proptest::prelude::*;

use crate::Failure;
use crate::select::RangeArgs;

const SMALL: &[u8] = include_bytes!("../../../tests/fixtures/small.bbx");
const GOLDEN: &[u8] = include_bytes!("../../../tests/fixtures/golden.bbx");

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
}

#[test]
fn fixtures_are_read_without_error() {
    for bytes in [SMALL, GOLDEN] {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        let mut s = crate::summary::Summary::default();
        crate::scan::scan(file.path(), &mut s).unwrap();
        assert!(s.render("x").contains("slow"));
    }
}

#[test]
fn timeline_colours_only_when_asked() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.bbx");
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

/// Collects the polls the stream pairs, to compare with `Window::tasks`.
#[derive(Default)]
struct Polls(Vec<(u64, u32, u64, u64, Option<u64>, bool)>);

impl crate::scan::Visitor for Polls {
    fn poll(&mut self, p: &crate::scan::PollItem) {
        self.0
            .push((p.task, p.lane, p.start_ns, p.end_ns, p.delay_ns, p.complete));
    }
}

/// The streaming pairing and the library's `Window::tasks` agree on `bytes`
/// whenever the library reads them.
fn pairing_agrees(bytes: &[u8]) {
    let Ok(file) = tokio_blackbox::dump::read_from(bytes) else {
        return;
    };
    let mut library: Vec<_> = file
        .window
        .tasks()
        .iter()
        .flat_map(|t| {
            t.polls
                .iter()
                // The stream never lets a poll end before it starts (timestamps
                // out of order in a damaged file); the library keeps the raw end.
                .map(|p| {
                    (
                        t.id,
                        p.lane,
                        p.start_ns,
                        p.end_ns.max(p.start_ns),
                        p.sched_delay_ns,
                        p.complete,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut reader = tokio_blackbox::dump::DumpReader::new(bytes).unwrap();
    let mut ours = Polls::default();
    crate::scan::scan_reader(&mut reader, &mut ours).unwrap();
    library.sort_unstable();
    ours.0.sort_unstable();
    assert_eq!(ours.0, library);
}

#[test]
fn streamed_polls_match_the_library_on_the_fixtures() {
    pairing_agrees(SMALL);
    pairing_agrees(GOLDEN);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn streamed_polls_match_the_library_on_damaged_files(
        golden in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = if golden { GOLDEN.to_vec() } else { SMALL.to_vec() };
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        pairing_agrees(&bytes);
    }
}
