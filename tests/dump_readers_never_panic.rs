//! The dump readers on arbitrary and on damaged bytes: a `DumpError` with
//! the byte offset, or a file, and never a panic. Bounded to a fixed number
//! of cases (`PROPTEST_CASES` overrides it) so it can run in CI.

use proptest::prelude::*;
use tokio_blackbox::dump::{self, DumpReader};

const SMALL: &[u8] = include_bytes!("fixtures/small.bbx");
const GOLDEN: &[u8] = include_bytes!("fixtures/golden.bbx");

fn read(bytes: &[u8]) {
    match dump::read_from(bytes) {
        // Analysing what was read: see `analysis_of_damaged_files`.
        Ok(_) => {}
        Err(e) => {
            let offset = e.offset().expect("a byte offset");
            assert!(
                offset <= bytes.len() as u64,
                "{e}: offset past the end ({})",
                bytes.len()
            );
            assert!(e.to_string().contains(&format!("byte {offset}")), "{e}");
        }
    }
    // The streaming reader agrees.
    if let Ok(mut r) = DumpReader::new(bytes) {
        while let Ok(Some(_)) = r.next_record() {}
    }
}

/// `PROPTEST_CASES` if set, else `default`: a fixed, small number in CI.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        read(&bytes);
    }

    #[test]
    fn arbitrary_records_after_a_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut bytes = SMALL[..32].to_vec();
        bytes.extend_from_slice(&tail);
        read(&bytes);
    }

    // This found an overflow in `Window::workers` on damaged timestamps (fixed
    // with saturating sums).
    #[test]
    fn analysis_of_damaged_files(
        golden in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = if golden { GOLDEN.to_vec() } else { SMALL.to_vec() };
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(file) = dump::read_from(&bytes[..]) {
            let _ = (file.window.tasks(), file.window.workers(), file.window.request_spans());
        }
    }

    #[test]
    fn damaged_files(
        golden in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = if golden { GOLDEN.to_vec() } else { SMALL.to_vec() };
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        read(&bytes);
        read(&bytes[..cut.index(bytes.len())]);
    }
}
