//! Formatting shared by the text subcommands: durations, offsets, UTC
//! times, and ANSI colour that switches itself off for pipes and `NO_COLOR`.

use std::io::IsTerminal;

/// A duration in the largest unit that keeps it readable: `850ns`, `12.3us`,
/// `412.3ms`, `1.204s`. ASCII only, so output survives any terminal.
pub(crate) fn dur(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

/// An offset from the start of the file: `+0.512s`.
pub(crate) fn offset(ns: u64, from: u64) -> String {
    format!("+{:.3}s", ns.saturating_sub(from) as f64 / 1e9)
}

/// UNIX nanoseconds as `2026-11-25 21:00:00.123 UTC`.
pub(crate) fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, valid for every u64 second count we can be given).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Thousands separators: `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether to colour stdout: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub(crate) fn colour_stdout() -> bool {
    colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    )
}

/// The rule behind [`colour_stdout`].
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// ANSI styles, or nothing when colour is off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paint {
    pub(crate) on: bool,
}

impl Paint {
    pub(crate) const RED: &'static str = "\x1b[31m";
    pub(crate) const GREEN: &'static str = "\x1b[32m";
    pub(crate) const YELLOW: &'static str = "\x1b[33m";
    pub(crate) const CYAN: &'static str = "\x1b[36m";
    pub(crate) const DIM: &'static str = "\x1b[2m";
    const RESET: &'static str = "\x1b[0m";

    /// `text` in `style`.
    pub(crate) fn paint(&self, style: &str, text: &str) -> String {
        if self.on && !text.is_empty() {
            format!("{style}{text}{}", Self::RESET)
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(dur(0), "0ns");
        assert_eq!(dur(850), "850ns");
        assert_eq!(dur(12_345), "12.3us");
        assert_eq!(dur(200_000_000), "200.0ms");
        assert_eq!(dur(1_204_000_000), "1.204s");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            utc(1_795_640_400_123_000_000),
            "2026-11-25 21:00:00.123 UTC"
        );
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
        let on = Paint { on: true };
        assert_eq!(on.paint(Paint::RED, "#"), "\x1b[31m#\x1b[0m");
        assert_eq!(Paint { on: false }.paint(Paint::RED, "#"), "#");
    }

    #[test]
    fn counts() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1234), "1,234");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
