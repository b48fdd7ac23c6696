//! The trigger: which slow requests become captures, when each capture is cut,
//! and what is merged or skipped under load.
//!
//! Pure logic: no clock, no threads, no I/O. Times are nanoseconds of the
//! recorder's monotonic clock given by the caller (never the wall clock, so
//! a clock step cannot stall captures), and the rules are tested without a runtime.
//!
//! - A slow request asks for the window `[start - before, end + after]`.
//! - If that window overlaps a capture that is still pending (not yet cut),
//!   the request joins it and the window grows to cover both, up to
//!   `max_window`: one capture then covers several slow requests.
//! - Otherwise a new capture starts, unless `max_per_sec` captures already
//!   started in the last second: then the request is skipped and counted.
//! - A capture is due once the clock passes its window's end.
//! - A capture links at most [`MAX_LINKED`] slow requests in full; the
//!   others that merge into it are only counted and do not grow its window,
//!   so in an incident (every request slow) a capture ends soon after its
//!   64th request instead of growing to `max_window`: its window stays
//!   within its span budget, and is exported while the incident is young.

/// Slow requests one capture carries in full.
pub(crate) const MAX_LINKED: usize = 64;

use crate::window::SlowRequest;
use std::collections::VecDeque;
#[cfg(test)]
use std::time::Duration;

/// What became of one slow request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// It starts a new capture.
    Started,
    /// It joined a pending capture.
    Merged,
    /// The per-second cap was reached: not captured.
    Skipped,
}

/// A capture waiting for its window to end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub(crate) from_ns: u64,
    pub(crate) to_ns: u64,
    pub(crate) requests: Vec<SlowRequest>,
    /// Slow requests merged beyond [`MAX_LINKED`]: counted, not carried.
    pub(crate) omitted: u64,
    /// When the request that started it began and ended.
    pub(crate) first_ns: (u64, u64),
}

impl Pending {
    /// The part of the window a cut keeps when it cannot afford all of
    /// it: the first request's own span, with `context` before it and
    /// `after` past it, within the window.
    pub(crate) fn narrowed(&mut self, context: u64, after: u64) {
        let (start, end) = self.first_ns;
        self.from_ns = self.from_ns.max(start.saturating_sub(context));
        self.to_ns = self.to_ns.min(end.saturating_add(after)).max(self.from_ns);
    }
}

/// The trigger's rules and state.
#[derive(Debug)]
pub(crate) struct Trigger {
    before_ns: u64,
    after_ns: u64,
    max_window_ns: u64,
    max_per_sec: u32,
    /// One second in the caller's time unit.
    second: u64,
    /// Start times of the captures started in the last second.
    recent: VecDeque<u64>,
    pending: Vec<Pending>,
}

impl Trigger {
    /// A trigger whose times are nanoseconds.
    #[cfg(test)]
    pub(crate) fn new(
        before: Duration,
        after: Duration,
        max_window: Duration,
        max_per_sec: u32,
    ) -> Trigger {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Trigger::new_ticks(
            ns(before),
            ns(after),
            ns(max_window),
            1_000_000_000,
            max_per_sec,
        )
    }

    /// A trigger whose times are in any monotonic unit, of which `second` make a second.
    pub(crate) fn new_ticks(
        before: u64,
        after: u64,
        max_window: u64,
        second: u64,
        max_per_sec: u32,
    ) -> Trigger {
        Trigger {
            before_ns: before,
            after_ns: after,
            max_window_ns: max_window,
            max_per_sec,
            second,
            recent: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    /// Offers a slow request that ran over `[start_ns, end_ns]`, at time
    /// `now_ns`; `req` makes it, called only when the capture carries it (it
    /// starts one, or is linked in one): in an incident, the requests merged
    /// past [`MAX_LINKED`] cost a count, not a name copied.
    pub(crate) fn offer(
        &mut self,
        start_ns: u64,
        end_ns: u64,
        now_ns: u64,
        req: impl FnOnce() -> SlowRequest,
    ) -> Decision {
        let from = start_ns.saturating_sub(self.before_ns);
        let to = end_ns.saturating_add(self.after_ns);
        for p in &mut self.pending {
            let overlaps = from <= p.to_ns && to >= p.from_ns;
            let grown = (to.max(p.to_ns)).saturating_sub(from.min(p.from_ns));
            if overlaps && grown <= self.max_window_ns {
                if p.requests.len() < MAX_LINKED {
                    p.from_ns = p.from_ns.min(from);
                    p.to_ns = p.to_ns.max(to);
                    p.requests.push(req());
                } else {
                    p.omitted += 1;
                }
                return Decision::Merged;
            }
        }
        while let Some(&t) = self.recent.front() {
            if now_ns.saturating_sub(t) >= self.second {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max_per_sec as usize {
            return Decision::Skipped;
        }
        self.recent.push_back(now_ns);
        self.pending.push(Pending {
            from_ns: from,
            to_ns: to,
            requests: vec![req()],
            omitted: 0,
            first_ns: (start_ns, end_ns),
        });
        Decision::Started
    }

    /// Removes and returns the captures whose windows have ended by `now_ns`.
    #[cfg(test)]
    pub(crate) fn due(&mut self, now_ns: u64) -> Vec<Pending> {
        let (due, keep) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.to_ns <= now_ns);
        self.pending = keep;
        due
    }

    /// The latest end among the pending captures that link all the
    /// requests they can: a slow request ending before it merges into one
    /// of them and is only counted (0: none is full).
    pub(crate) fn absorbing_until(&self) -> u64 {
        self.pending
            .iter()
            .filter(|p| p.requests.len() >= MAX_LINKED)
            .map(|p| p.to_ns)
            .max()
            .unwrap_or(0)
    }

    /// Removes and returns the due capture that ended first, if any: the
    /// capture thread cuts one at a time, reading its messages in between.
    pub(crate) fn next(&mut self, now_ns: u64) -> Option<Pending> {
        let i = (0..self.pending.len())
            .filter(|&i| self.pending[i].to_ns <= now_ns)
            .min_by_key(|&i| self.pending[i].to_ns)?;
        Some(self.pending.remove(i))
    }

    /// Puts back captures taken out and not written (a flush past its deadline).
    pub(crate) fn restore(&mut self, captures: Vec<Pending>) {
        self.pending.extend(captures);
    }

    /// Removes and returns every pending capture (shutdown, flush).
    pub(crate) fn drain(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.pending)
    }

    /// The earliest moment a pending capture still needs, if any.
    pub(crate) fn earliest_from(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.from_ns).min()
    }

    /// When the next pending capture is due, if any.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.to_ns).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};

    const MS: u64 = 1_000_000;

    /// Offers request `id` that ran from `start_ms` to `end_ms`, at `now`.
    fn offer(t: &mut Trigger, id: u64, start_ms: u64, end_ms: u64, now: u64) -> Decision {
        let r = SlowRequest::new(
            id,
            "request",
            TraceId::from(u128::from(id)),
            SpanId::from(id),
            start_ms * MS,
            end_ms * MS,
        );
        t.offer(start_ms * MS, end_ms * MS, now, || r)
    }

    fn trigger(cap: u32) -> Trigger {
        Trigger::new(
            Duration::from_millis(100),
            Duration::from_millis(50),
            Duration::from_secs(10),
            cap,
        )
    }

    #[test]
    fn a_slow_request_is_due_after_its_window() {
        let mut t = trigger(10);
        assert_eq!(offer(&mut t, 1, 1000, 1300, 1300 * MS), Decision::Started);
        assert_eq!(t.next_due(), Some(1350 * MS));
        assert!(t.due(1349 * MS).is_empty());
        let due = t.due(1350 * MS);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].from_ns, due[0].to_ns), (900 * MS, 1350 * MS));
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn overlapping_windows_merge_and_grow() {
        let mut t = trigger(10);
        offer(&mut t, 1, 1000, 1300, 1300 * MS);
        assert_eq!(offer(&mut t, 2, 1200, 1400, 1400 * MS), Decision::Merged);
        // Its window [1400, 1650] overlaps the grown pending window [900, 1450].
        assert_eq!(offer(&mut t, 3, 1500, 1600, 1600 * MS), Decision::Merged);
        assert_eq!(offer(&mut t, 4, 5000, 5100, 5100 * MS), Decision::Started);
        let due = t.due(10_000 * MS);
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].requests.len(), 3);
        assert_eq!((due[0].from_ns, due[0].to_ns), (900 * MS, 1650 * MS));
    }

    #[test]
    fn the_cap_skips_and_recovers_after_a_second() {
        let mut t = Trigger::new(Duration::ZERO, Duration::ZERO, Duration::from_secs(1), 2);
        let now = 10_000 * MS;
        let decisions: Vec<_> = (0..5)
            .map(|i| offer(&mut t, i, 1000 * i, 1000 * i + 1, now))
            .collect();
        assert_eq!(
            decisions,
            [
                Decision::Started,
                Decision::Started,
                Decision::Skipped,
                Decision::Skipped,
                Decision::Skipped
            ]
        );
        assert_eq!(
            offer(&mut t, 9, 20_000, 20_001, now + 1000 * MS),
            Decision::Started
        );
    }

    #[test]
    fn a_storm_links_64_requests_and_counts_the_rest() {
        let mut t = trigger(10);
        assert_eq!(offer(&mut t, 0, 1000, 1300, 1300 * MS), Decision::Started);
        for i in 1..1000 {
            assert_eq!(offer(&mut t, i, 1000, 1300, 1300 * MS), Decision::Merged);
        }
        let due = t.drain();
        assert_eq!(due[0].requests.len(), MAX_LINKED);
        assert_eq!(due[0].omitted, 1000 - MAX_LINKED as u64);
    }

    #[test]
    fn an_incidents_capture_stops_growing_at_its_64th_request() {
        // Every request slow, one ending each millisecond: a capture that
        // grew with every one would stay pending up to the 10 s limit.
        let mut t = trigger(10);
        offer(&mut t, 0, 1000, 1300, 1300 * MS);
        for i in 1..300 {
            let end = 1300 + i;
            let decision = offer(&mut t, i, end - 300, end, end * MS);
            assert_eq!(decision, Decision::Merged, "request {i}");
        }
        // Its window ends `after` past its 64th request, not its 300th.
        let last_linked_end = 1300 + MAX_LINKED as u64 - 1;
        assert_eq!(t.next_due(), Some((last_linked_end + 50) * MS));
        let due = t.drain();
        assert_eq!(
            (due[0].requests.len(), due[0].omitted),
            (MAX_LINKED, 300 - MAX_LINKED as u64)
        );
    }

    #[test]
    fn a_narrowed_capture_keeps_its_first_requests_span() {
        let mut t = trigger(10);
        offer(&mut t, 1, 1000, 1300, 1300 * MS);
        offer(&mut t, 2, 1200, 2000, 2000 * MS);
        let mut p = t.drain().remove(0);
        assert_eq!((p.from_ns, p.to_ns), (900 * MS, 2050 * MS));
        p.narrowed(20 * MS, 50 * MS);
        assert_eq!((p.from_ns, p.to_ns), (980 * MS, 1350 * MS));
    }

    #[test]
    fn merging_stops_at_the_window_limit() {
        let mut t = Trigger::new(
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_millis(500),
            10,
        );
        offer(&mut t, 1, 0, 400, 400 * MS);
        assert_eq!(offer(&mut t, 2, 300, 600, 600 * MS), Decision::Started);
    }
}
