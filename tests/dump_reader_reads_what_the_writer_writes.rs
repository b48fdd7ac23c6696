//! Issue 27, finding 13: the dump reader refused what the writer writes: a
//! full string table (65,535 strings: indices 0..=65,534, `u16::MAX` meaning
//! none), and a string longer than 65,535 bytes cut inside a UTF-8
//! character. Written by `dump::write_window`, read back by `dump::read_from`.

use tokio_blackbox::Window;
use tokio_blackbox::dump::{self, FileKind};

#[test]
fn a_full_string_table_and_a_long_multibyte_string_read_back() {
    let mut window = Window::default();
    window.strings = (0..65_535).map(|i| format!("s{i}")).collect();
    // 65,534 ASCII bytes, then 'é' (2 bytes) across the 65,535-byte cut.
    window.strings[7] = format!("{}é tail", "a".repeat(65_534));
    let mut bytes = Vec::new();
    dump::write_window(&mut bytes, &window, FileKind::Dump).expect("write");
    let file = dump::read_from(&bytes[..]).expect("the reader takes what the writer wrote");
    let strings = &file.window.strings;
    assert_eq!(strings.len(), 65_535);
    assert_eq!(strings[65_534], "s65534");
    // Cut at the last whole character within 65,535 bytes.
    assert_eq!(strings[7], "a".repeat(65_534));
}
