//! The one clock of the recorder, and its conversion to UNIX time.
//!
//! Hooks read [`Clock::raw`]: on x86-64 machines with an invariant TSC this is
//! one `rdtsc` through [`quanta`], calibrated once; elsewhere it falls back to
//! the OS monotonic clock. Raw readings are only comparable within a process.
//! When data leaves the process (a capture, a dump) each reading is turned into
//! UNIX nanoseconds with one [`TimeAnchor`], a pair of readings of the raw
//! clock and of the wall clock taken at the same moment. The anchor in force
//! is shared and re-taken every [`ANCHOR_LIFE`]: two windows cut within it
//! convert one raw reading to the same nanosecond, so a reader merging
//! overlapping windows sees one event once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one anchor converts readings: short enough that the raw clock's
/// rate error (a few parts in 10^6) moves UNIX times by microseconds only,
/// and a wall-clock step is followed within that time.
pub(crate) const ANCHOR_LIFE: Duration = Duration::from_secs(10);

/// The recorder's monotonic clock.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    inner: quanta::Clock,
    /// `quanta` reads the TSC itself: `raw` then reads it inline, with no call.
    tsc: bool,
    /// Nanoseconds in 2^32 raw ticks, for converting durations to ticks.
    ns_per_2_32_ticks: u64,
    /// The anchor in force (raw, UNIX ns), shared by every clone.
    anchor: Arc<Mutex<Option<(u64, u64)>>>,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let inner = quanta::Clock::new();
        // From a real reading: quanta scales readings relative to its own
        // reference point, so a delta from 0 would be wrong.
        let now = inner.raw();
        let ns_per_2_32_ticks = inner.delta_as_nanos(now, now + (1 << 32)).max(1);
        let tsc = quanta_reads_the_tsc(&inner);
        Clock {
            inner,
            tsc,
            ns_per_2_32_ticks,
            anchor: Arc::default(),
        }
    }

    /// A duration in raw ticks (saturating). Scheduling inside the recorder
    /// works in raw ticks: monotonic, unmoved by a wall-clock step.
    pub(crate) fn ticks(&self, d: Duration) -> u64 {
        let t = (d.as_nanos() << 32) / u128::from(self.ns_per_2_32_ticks);
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// An inline TSC reading, or `None` where `quanta` does not use the TSC
    /// (then call [`raw`](Clock::raw)). Lets the hooks keep calls off their fast path.
    #[inline(always)]
    pub(crate) fn tsc_now(&self) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            return Some(rdtsc());
        }
        None
    }

    /// Whether [`raw`](Clock::raw) is one `rdtsc` (then [`tsc`] reads it).
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    pub(crate) fn is_tsc(&self) -> bool {
        self.tsc
    }

    /// Raw ticks as a duration.
    pub(crate) fn duration(&self, ticks: u64) -> Duration {
        let ns = (u128::from(ticks) * u128::from(self.ns_per_2_32_ticks)) >> 32;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// A raw reading: cheap, monotonic within the process, not nanoseconds.
    ///
    /// Where `quanta` chose the invariant TSC, one inline `rdtsc` (no call,
    /// so the hooks stay leaf functions); elsewhere `quanta`'s own reading.
    #[inline(always)]
    pub(crate) fn raw(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            return rdtsc();
        }
        self.raw_other()
    }

    /// `quanta`'s reading; out of line where the TSC is the usual case, so
    /// its callers stay small.
    #[cfg_attr(target_arch = "x86_64", inline(never))]
    fn raw_other(&self) -> u64 {
        self.inner.raw()
    }

    /// The anchor in force, re-taken when older than [`ANCHOR_LIFE`].
    pub(crate) fn anchor(&self) -> TimeAnchor {
        let mut cached = crate::sync::lock(&self.anchor);
        let life = self.ticks(ANCHOR_LIFE);
        if let Some((raw, unix_ns)) = *cached
            && self.raw().saturating_sub(raw) < life
        {
            return TimeAnchor {
                raw,
                unix_ns,
                clock: self.clone(),
            };
        }
        let fresh = self.fresh_anchor();
        *cached = Some((fresh.raw, fresh.unix_ns));
        fresh
    }

    /// Takes an anchor: the raw clock and the wall clock, read back to back.
    fn fresh_anchor(&self) -> TimeAnchor {
        // Read the raw clock on both sides of the wall clock and keep the
        // midpoint, so the anchor's error is at most half the gap.
        let before = self.raw();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let after = self.raw();
        let raw = before + (after.saturating_sub(before)) / 2;
        TimeAnchor {
            raw,
            unix_ns: wall.as_nanos() as u64,
            clock: self.clone(),
        }
    }

    /// Nanoseconds between two raw readings (zero if `end` is not after `start`).
    pub(crate) fn delta_ns(&self, start: u64, end: u64) -> u64 {
        self.inner.delta_as_nanos(start, end)
    }
}

/// The instant `after` from now, for a deadline or a timer: a duration too
/// large to add (`Duration::MAX`: "as long as it takes") is a century.
pub(crate) fn deadline_after(after: std::time::Duration) -> std::time::Instant {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    let now = std::time::Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// A raw reading of a clock whose [`Clock::is_tsc`] is true, for hooks
/// that chose their clock when they were installed: one `rdtsc`. Elsewhere
/// than x86-64 no clock is the TSC and this is never called.
#[cfg_attr(not(tokio_unstable), allow(dead_code))]
#[inline(always)]
pub(crate) fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    return rdtsc();
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no clock reads the TSC here")
}

/// One `rdtsc`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86-64 CPU and only reads the time
    // stamp counter: no memory is touched, no precondition to uphold. Used
    // only when `quanta` found the TSC invariant and reads it the same way.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether `quanta`'s raw readings are TSC readings: an `rdtsc` taken
/// between two of them falls between them, several times over.
fn quanta_reads_the_tsc(clock: &quanta::Clock) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (0..5).all(|_| {
            let a = clock.raw();
            let t = rdtsc();
            let b = clock.raw();
            a <= t && t <= b && b - a < 1_000_000
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = clock;
        false
    }
}

/// A raw clock reading paired with the UNIX time of the same moment.
#[derive(Clone, Debug)]
pub(crate) struct TimeAnchor {
    raw: u64,
    unix_ns: u64,
    clock: Clock,
}

impl TimeAnchor {
    /// Converts a raw reading to UNIX nanoseconds.
    pub(crate) fn to_unix_ns(&self, raw: u64) -> u64 {
        if raw >= self.raw {
            self.unix_ns + self.clock.delta_ns(self.raw, raw)
        } else {
            self.unix_ns
                .saturating_sub(self.clock.delta_ns(raw, self.raw))
        }
    }
}

/// The current UNIX time in nanoseconds.
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inline_tsc_agrees_with_quanta() {
        let clock = Clock::new();
        let a = clock.inner.raw();
        let r = clock.raw();
        let b = clock.inner.raw();
        assert!(a <= r && r <= b, "{a} {r} {b} (tsc: {})", clock.tsc);
    }

    #[test]
    fn ticks_match_the_clock() {
        let clock = Clock::new();
        let a = clock.raw();
        std::thread::sleep(Duration::from_millis(50));
        let b = clock.raw();
        let measured = clock.delta_ns(a, b);
        let converted = clock.duration(b - a).as_nanos() as u64;
        assert!(
            measured.abs_diff(converted) < 1_000_000,
            "{measured} vs {converted}"
        );
    }

    #[test]
    fn ticks_and_durations_round_trip() {
        let clock = Clock::new();
        let d = Duration::from_millis(1500);
        let back = clock.duration(clock.ticks(d));
        assert!(back.abs_diff(d) < Duration::from_micros(10), "{back:?}");
        assert_eq!(clock.ticks(Duration::ZERO), 0);
        assert_eq!(clock.ticks(Duration::MAX), u64::MAX);
    }

    #[test]
    fn anchor_converts_to_unix_time() {
        let clock = Clock::new();
        let anchor = clock.anchor();
        let r1 = clock.raw();
        std::thread::sleep(Duration::from_millis(20));
        let r2 = clock.raw();
        let (u1, u2) = (anchor.to_unix_ns(r1), anchor.to_unix_ns(r2));
        let gap = u2 - u1;
        assert!((15_000_000..2_000_000_000).contains(&gap), "gap {gap}");
        assert!(u1.abs_diff(unix_now_ns()) < 5_000_000_000);
    }

    #[test]
    fn anchors_taken_within_their_life_convert_alike() {
        let clock = Clock::new();
        let r = clock.raw();
        let a = clock.anchor().to_unix_ns(r);
        std::thread::sleep(Duration::from_millis(5));
        // A clone (as the capture thread and the layer hold) shares it.
        assert_eq!(clock.clone().anchor().to_unix_ns(r), a);
    }
}
