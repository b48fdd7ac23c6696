//! The CPU budget of the recorder's own threads: the capture thread and the
//! export thread together use at most a share of one core
//! (`BLACKBOX_CPU_BUDGET`, 2% by default), on average over
//! [`CpuBudget::PERIOD`].
//!
//! In an incident every request is slow, and without a bound the recorder's
//! threads would cut and map windows as fast as the trigger allows, taking
//! the CPU from the service at the moment it has least to spare. The budget
//! is what the threads spent over the last [`CpuBudget::PERIOD`] (ten
//! one-second slots), against the budget's share of that period: an
//! incident's first windows are paid at once (they are the ones a person
//! reads), and then at most the share over any ten seconds. Each thread
//! pays for what it used, measured with its own CPU clock; the export of a
//! window is reserved when the window is queued, at the cost per KiB
//! learned from the windows before, and settled when it is done. When the budget is spent the
//! capture thread sheds: a window due is not cut (counted in
//! `windows_shed`), and a window larger than what is left affords is cut to
//! its first request's span (the rest counted as lost events). Nothing is
//! shed silently.
//!
//! Imports nothing of the crate: the capture thread and the export thread
//! share one [`CpuBudget`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The CPU the recorder's own threads may use, and what they used.
#[derive(Debug)]
pub(crate) struct CpuBudget {
    /// Share of one core, in millionths (20,000: 2%).
    share_ppm: u64,
    spent: Mutex<Spent>,
    /// CPU the recorder's threads used, ns, in all.
    spent_ns: AtomicU64,
    /// Windows not cut because the budget was spent.
    windows_shed: AtomicU64,
    /// What mapping and sending a window cost, per KiB of its events as
    /// cut, ns (learned from each window; 0: nothing learned yet).
    ns_per_kib: AtomicU64,
}

/// CPU spent in each of the last [`SLOTS`] seconds.
#[derive(Debug)]
struct Spent {
    /// ns spent in second `second - i` at `(second - i) % SLOTS` (a
    /// settlement may make a slot negative: what a reservation overstated).
    slots: [i64; SLOTS],
    /// The second (since `start`) the newest slot is.
    second: u64,
    start: Instant,
}

/// Seconds the budget looks back over.
const SLOTS: usize = 10;

/// What a window costs per KiB of events before any was measured: about
/// what the export of a busy service's window costs (a cut of 16-byte
/// decoded events, planned twice and mapped).
const FIRST_GUESS_NS_PER_KIB: u64 = 40_000;

/// The smallest window a spent budget still cuts (when it affords one at
/// all): enough for the slow request's own polls on a busy runtime.
pub(crate) const MIN_WINDOW_BYTES: usize = 256 << 10;

impl CpuBudget {
    /// The span of time the budget is an average over: at most its share
    /// of this long is spent in any such span.
    pub(crate) const PERIOD: Duration = Duration::from_secs(SLOTS as u64);

    /// A budget of `share` of one core (0.02: 2%), at least one millionth.
    pub(crate) fn new(share: f64) -> CpuBudget {
        let share_ppm = ((share * 1e6).round() as u64).max(1);
        CpuBudget {
            share_ppm,
            spent: Mutex::new(Spent {
                slots: [0; SLOTS],
                second: 0,
                start: Instant::now(),
            }),
            spent_ns: AtomicU64::new(0),
            windows_shed: AtomicU64::new(0),
            ns_per_kib: AtomicU64::new(0),
        }
    }

    /// The most spent over one period: its share, ns.
    fn limit_ns(&self) -> i64 {
        let ns = Self::PERIOD.as_nanos() as u64 / 1_000_000 * self.share_ppm;
        i64::try_from(ns).unwrap_or(i64::MAX)
    }

    /// Adds `ns` (negative: gives back) to what was spent at `now`, and
    /// returns what may still be spent in the period ending then.
    fn spend_at(&self, now: Instant, ns: i64) -> i64 {
        let mut s = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let second = now.saturating_duration_since(s.start).as_secs();
        // The slots of the seconds past since the newest: emptied.
        let stale = second.saturating_sub(s.second).min(SLOTS as u64);
        for k in 1..=stale {
            let i = ((s.second + k) % SLOTS as u64) as usize;
            s.slots[i] = 0;
        }
        s.second = s.second.max(second);
        let at = (s.second % SLOTS as u64) as usize;
        s.slots[at] = s.slots[at].saturating_add(ns);
        let spent = s.slots.iter().fold(0i64, |a, &b| a.saturating_add(b));
        self.limit_ns().saturating_sub(spent)
    }

    /// What may still be spent now.
    fn left_ns(&self) -> i64 {
        self.spend_at(Instant::now(), 0)
    }

    /// One of the recorder's threads used `ns` of CPU.
    pub(crate) fn charge(&self, ns: u64) {
        self.settle(0, ns);
    }

    /// Reserves what mapping and sending a window of `bytes` of events
    /// will cost (at the cost learned so far), before it is spent: the
    /// capture thread may cut the next window meanwhile. Returns the
    /// reservation, to [`settle`](Self::settle) once the cost is known.
    pub(crate) fn reserve(&self, bytes: usize) -> u64 {
        let ns = (bytes as u64 / 1024).saturating_mul(self.ns_per_kib());
        self.spend_at(Instant::now(), i64::try_from(ns).unwrap_or(i64::MAX));
        ns
    }

    /// Work for which `reserved` ns were reserved used `used` ns: the
    /// difference is paid (or given back).
    pub(crate) fn settle(&self, reserved: u64, used: u64) {
        self.spent_ns.fetch_add(used, Ordering::Relaxed);
        let owed =
            i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(reserved).unwrap_or(i64::MAX);
        self.spend_at(Instant::now(), owed);
    }

    /// The cost learned so far, or the first guess.
    fn ns_per_kib(&self) -> u64 {
        match self.ns_per_kib.load(Ordering::Relaxed) {
            0 => FIRST_GUESS_NS_PER_KIB,
            n => n,
        }
    }

    /// The bytes of events a window may be cut with now, at most `limit`:
    /// what is left of the budget affords at the cost learned so far, and
    /// at least [`MIN_WINDOW_BYTES`]. `None` when the budget is spent: the
    /// window is shed (and counted).
    pub(crate) fn window_bytes(&self, limit: usize) -> Option<usize> {
        let tokens = self.left_ns();
        if tokens <= 0 {
            self.windows_shed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let affordable = (tokens as u64 / self.ns_per_kib()).saturating_mul(1024);
        let affordable = usize::try_from(affordable).unwrap_or(usize::MAX);
        Some(affordable.clamp(MIN_WINDOW_BYTES.min(limit), limit))
    }

    /// A window of `bytes` of events cost `ns` to map and send: the cost
    /// per KiB the next windows are sized by (up at once, down by a moving
    /// average: a cost underestimated overspends the budget).
    pub(crate) fn learn_window(&self, bytes: usize, ns: u64) {
        let kib = (bytes as u64 / 1024).max(1);
        let this = (ns / kib).max(1);
        let before = self.ns_per_kib.load(Ordering::Relaxed);
        let next = if this >= before {
            this
        } else {
            (before * 3 + this) / 4
        };
        self.ns_per_kib.store(next.max(1), Ordering::Relaxed);
    }

    /// CPU the recorder's threads used, in all.
    pub(crate) fn spent(&self) -> Duration {
        Duration::from_nanos(self.spent_ns.load(Ordering::Relaxed))
    }

    /// Windows not cut because the budget was spent.
    pub(crate) fn windows_shed(&self) -> u64 {
        self.windows_shed.load(Ordering::Relaxed)
    }
}

/// The calling thread's CPU clock, read at each [`lap`](ThreadCpu::lap):
/// what the thread used in between. On Linux, the scheduler's own count of
/// the thread's time on a CPU (`/proc/thread-self/schedstat`, nanoseconds;
/// one read a lap, no unsafe code); elsewhere, or where that file is
/// missing, wall time (an upper bound).
#[derive(Debug)]
pub(crate) struct ThreadCpu {
    /// The thread's schedstat, opened on the thread itself.
    schedstat: Option<std::fs::File>,
    last: u64,
}

impl ThreadCpu {
    /// Starts measuring the calling thread.
    pub(crate) fn start() -> ThreadCpu {
        let schedstat = if cfg!(target_os = "linux") {
            std::fs::File::open("/proc/thread-self/schedstat").ok()
        } else {
            None
        };
        let mut t = ThreadCpu { schedstat, last: 0 };
        t.last = t.now_ns();
        t
    }

    /// CPU the thread used since the last lap (or the start), ns.
    pub(crate) fn lap(&mut self) -> u64 {
        let now = self.now_ns();
        let used = now.saturating_sub(self.last);
        self.last = now;
        used
    }

    fn now_ns(&mut self) -> u64 {
        match self.schedstat.as_ref().and_then(read_run_time) {
            Some(ns) => ns,
            None => {
                // The file went away (or never was): wall time from now on.
                self.schedstat = None;
                wall_ns()
            }
        }
    }
}

/// The first field of a schedstat file: time spent on a CPU, ns.
#[cfg(unix)]
fn read_run_time(f: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 96];
    let n = f.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(not(unix))]
fn read_run_time(_: &std::fs::File) -> Option<u64> {
    None
}

/// Wall time since the first call, ns: the fallback CPU clock.
fn wall_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_starts_full_and_sheds_once_spent() {
        let b = CpuBudget::new(0.02);
        // 2% of 10 s: 200 ms.
        assert_eq!(b.limit_ns(), 200_000_000);
        assert!(b.window_bytes(8 << 20).is_some());
        b.charge(300_000_000);
        assert_eq!(b.window_bytes(8 << 20), None);
        assert_eq!(b.windows_shed(), 1);
        assert_eq!(b.spent(), Duration::from_millis(300));
    }

    #[test]
    fn a_reservation_is_paid_before_the_work_and_settled_after() {
        let b = CpuBudget::new(0.02);
        b.learn_window(1 << 20, 100_000_000); // ~100 µs a KiB
        // 3 MiB: ~300 ms reserved, more than the budget: the next window waits.
        let reserved = b.reserve(3 << 20);
        assert!(reserved >= 290_000_000, "{reserved}");
        assert_eq!(b.window_bytes(8 << 20), None);
        // It cost a third: the rest comes back.
        b.settle(reserved, reserved / 3);
        assert!(b.window_bytes(8 << 20).is_some());
        assert_eq!(b.spent().as_nanos() as u64, reserved / 3);
    }

    #[test]
    fn a_window_is_sized_by_what_is_left_of_the_budget() {
        let b = CpuBudget::new(0.02);
        // 1 ms per KiB learned: 200 ms afford ~200 KiB, under the floor.
        b.learn_window(1 << 20, 1_024_000_000);
        assert_eq!(b.window_bytes(8 << 20), Some(MIN_WINDOW_BYTES));
        // 1 µs per KiB: the whole limit.
        let cheap = CpuBudget::new(0.02);
        cheap.learn_window(1 << 20, 1_024_000);
        assert_eq!(cheap.window_bytes(8 << 20), Some(8 << 20));
        // A limit under the floor is kept.
        assert_eq!(cheap.window_bytes(64 << 10), Some(64 << 10));
    }

    #[test]
    fn what_was_spent_counts_for_ten_seconds_then_is_forgotten() {
        let b = CpuBudget::new(0.02);
        let t0 = Instant::now();
        // 150 ms now, 100 ms five seconds later: over the 200 ms.
        assert_eq!(b.spend_at(t0, 150_000_000), 50_000_000);
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(b.spend_at(t5, 100_000_000), -50_000_000);
        // Ten seconds after the first: only the second counts.
        let t10 = t0 + Duration::from_millis(10_500);
        assert_eq!(b.spend_at(t10, 0), 100_000_000);
        // Fifteen and a half: nothing counts.
        assert_eq!(
            b.spend_at(t0 + Duration::from_millis(15_500), 0),
            200_000_000
        );
        // Never more than the share of one period, however long it waits.
        assert_eq!(b.spend_at(t0 + Duration::from_secs(3600), 0), b.limit_ns());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let mut t = ThreadCpu::start();
        std::thread::sleep(Duration::from_millis(50));
        let slept = t.lap();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let worked = t.lap();
        // On a loaded machine the spin gets less than its 50 ms of CPU;
        // the sleep gets next to none on any.
        assert!(slept < 5_000_000, "slept {slept} ns");
        assert!(worked > slept, "worked {worked} ns, slept {slept} ns");
    }
}
