//! The capture thread (`blackbox-capture`): receives slow requests from the
//! layer through the bounded queue of [`Shared`], asks the
//! [`trigger`](crate::trigger) what to do, finds requests slow or stuck
//! while open, cuts each due window from the buffer and hands it to the sink.
//!
//! It imports nothing of the recorder's handle: it gets the shared state,
//! its counters and the settings.

use crate::config::Settings;
use crate::cpu_budget::{CpuBudget, ThreadCpu};
use crate::export::Sink;
use crate::export::shared::quietly;
use crate::segments::Pinner;
use crate::shared::{Msg, Shared};
use crate::stats::Counters;
use crate::trigger::{Decision, Pending, Trigger};
use crate::window::{Cut, SlowRequest, Window};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// What the capture thread (and a dump) cut windows from.
#[derive(Debug, Clone)]
pub(crate) struct Cutter {
    pub(crate) shared: Arc<Shared>,
    pub(crate) settings: Settings,
}

impl Cutter {
    fn base_window(&self) -> Window {
        let c = &self.settings;
        Window {
            strings: self.shared.capture.strings.all(),
            threshold: c.latency_threshold,
            long_poll: c.long_poll,
            schedule_delay: c.schedule_delay && cfg!(tokio_unstable),
            task_hooks: cfg!(tokio_unstable),
            ..Window::default()
        }
    }

    /// Everything in the buffer, for a dump: the file's bounds, settings,
    /// strings and slow requests (no lanes), and the cut of every lane,
    /// its sealed segments held in place (the rest copied, as for a
    /// capture: at most half the buffer), to be written as it is decoded
    /// ([`crate::dump::write_cut_file`]). Never the whole buffer decoded:
    /// a dump runs in the panic hook and on SIGUSR1, where memory may be short.
    pub(crate) fn snapshot_all(&self) -> (Window, Cut) {
        let capture = &self.shared.capture;
        let now = crate::clock::unix_now_ns();
        let all = Window {
            from_unix_ns: 0,
            to_unix_ns: u64::MAX,
            ..Window::default()
        };
        let cut = Cut::new(
            all,
            capture.segment_lanes(None, None, true),
            capture.clock.anchor(),
        );
        let from = (0..cut.header().lanes.len())
            .filter_map(|i| cut.first_event_ts(i))
            .min()
            .unwrap_or(now);
        let head = Window {
            from_unix_ns: from,
            to_unix_ns: now,
            requests: self.shared.recent_slow(),
            ..self.base_window()
        };
        (head, cut)
    }

    /// Cuts a due capture (its bounds in raw clock ticks) from the buffer:
    /// its segments held in place (or copied past the holds' bound), not
    /// decoded, at most `limit` bytes (half the buffer memory,
    /// [`Cut::BUFFER_SHARE`], or what the CPU budget affords): a window
    /// larger than that (a storm's merged requests) keeps its oldest part,
    /// where its first request is, and counts the rest in `events_lost`.
    fn cut(&self, p: Pending, sequence: u64, limit: usize) -> Cut {
        let capture = &self.shared.capture;
        let anchor = capture.clock.anchor();
        let lanes = capture.segment_lanes(Some((p.from_ns, p.to_ns)), Some(limit), true);
        let (from, to) = (anchor.to_unix_ns(p.from_ns), anchor.to_unix_ns(p.to_ns));
        debug_assert!(from <= to, "a capture ends after it starts");
        let header = Window {
            sequence,
            from_unix_ns: from,
            to_unix_ns: to,
            requests: p.requests,
            requests_omitted: p.omitted,
            ..self.base_window()
        };
        Cut::new(header, lanes, anchor)
    }
}

/// Messages the capture thread reads in one turn, at most, before it cuts
/// the next due window.
const MESSAGES_PER_TURN: usize = 4096;

/// How often the capture thread looks for requests that are slow while open:
/// a quarter of the threshold, between 20 ms and 100 ms. (Each look also
/// updates the pins, a pass over the segment headers: at a 5 ms floor a
/// low threshold cost an incident 1% of a core in looks alone.)
fn scan_interval(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_millis(20), Duration::from_millis(100))
}

/// Runs the setup checks with what they read: requests seen, and the
/// spawn locations (searched in place, not copied).
fn check_setup(shared: &Shared) {
    let find = |accept: &dyn Fn(&str) -> bool| shared.capture.strings.find(accept);
    shared.setup.check(&crate::setup_check::Seen {
        requests: shared.capture.requests_opened(),
        find_location: &find,
    });
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Runs a call into the sink (ours or the user's): `quietly`, and with a
/// panic caught and turned into an error, so a failing custom sink costs
/// the window it failed on (counted in `sink_errors`), not the capture
/// thread. The sink is called again for the next window.
fn guarded(f: impl FnOnce() -> Result<(), crate::error::SinkError>) -> Result<(), ()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| quietly(f))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

/// Tells the requests' threads until when a full pending capture takes
/// their slow closes as a count (see `Shared::absorb_until`).
fn publish_absorbing(shared: &Shared, trigger: &Trigger) {
    let until = trigger.absorbing_until();
    if shared.absorb_until.load(Ordering::Relaxed) != until {
        shared.absorb_until.store(until, Ordering::Relaxed);
    }
}

/// Offers a slow request that ran over `[start, end]` to the trigger and
/// counts what it decided; `req` makes the request if a capture carries it.
fn offer(
    counters: &Counters,
    trigger: &mut Trigger,
    (start, end): (u64, u64),
    now: u64,
    req: impl FnOnce() -> SlowRequest,
) {
    let counter = match trigger.offer(start, end, now, req) {
        Decision::Started => &counters.captures,
        Decision::Merged => &counters.merged,
        Decision::Skipped => &counters.skipped,
    };
    bump(counter, 1);
}

/// The capture thread. Its clock is the recorder's raw monotonic clock (the
/// trigger's "nanoseconds" are raw ticks here): a wall-clock step moves nothing.
pub(crate) fn run(
    cutter: Cutter,
    counters: Arc<Counters>,
    rx: Receiver<Msg>,
    mut sink: Box<dyn Sink>,
    budget: Arc<CpuBudget>,
) {
    // The recorder's own work must never be recorded or traced: the sink
    // (ours or the user's) runs `quietly`; nothing else here uses tracing.
    let shared = cutter.shared.clone();
    let c = &cutter.settings;
    let clock = shared.capture.clock.clone();
    let ticks = |d: Duration| clock.ticks(d);
    let mut trigger = Trigger::new_ticks(
        ticks(c.window_before),
        ticks(c.window_after),
        ticks(c.max_window),
        ticks(Duration::from_secs(1)),
        c.max_captures_per_sec,
    );
    let (before, after, threshold, stuck) = (
        ticks(c.window_before),
        ticks(c.window_after),
        ticks(c.latency_threshold),
        ticks(c.stuck_after),
    );
    let interval = scan_interval(c.latency_threshold);
    let segments = shared.capture.segments();
    let mut pinner = Pinner::new(segments.count() / 4);
    let mut sequence = 0u64;
    let mut last_scan = clock.raw();
    let interval_ticks = ticks(interval);
    // The setup checks (a filter hiding request spans, no task hooks) and
    // the thread table's pruning run about once a second, the first a
    // second after the start.
    let setup_every = ticks(Duration::from_secs(1));
    let mut last_setup_check = clock.raw();
    // Each window is paid from the CPU budget: cut no larger than it
    // affords, or shed (counted) when it is spent.
    let buffer_share = c.buffer_memory / Cut::BUFFER_SHARE;
    let mut cpu = ThreadCpu::start();
    // Requests their own threads counted into a full capture (see
    // `Shared::absorb_until`), told to the next window cut.
    let mut absorbed_told = 0u64;
    // Writes `pending` (each window is cut and mapped here); with a deadline
    // (a flush's or the shutdown's), what is not written by then is
    // returned.
    let mut write = |pending: Vec<Pending>, sink: &mut Box<dyn Sink>, until: Option<Instant>| {
        let mut left = Vec::new();
        for mut p in pending {
            if until.is_some_and(|t| Instant::now() >= t) {
                left.push(p);
                continue;
            }
            let absorbed = shared.slow_absorbed.load(Ordering::Relaxed);
            p.omitted += absorbed - absorbed_told;
            absorbed_told = absorbed;
            let Some(limit) = budget.window_bytes(buffer_share) else {
                continue;
            };
            if limit < buffer_share && segments.bytes_in((p.from_ns, p.to_ns), clock.raw()) > limit
            {
                // The budget affords part of the window: the first
                // request's own span, with a tenth of the context before.
                p.narrowed(before / 10, after);
            }
            sequence += 1;
            let cut = cutter.cut(p, sequence, limit);
            match guarded(|| sink.write_cut(cut)) {
                Ok(()) => bump(&counters.windows_written, 1),
                Err(_) => bump(&counters.sink_errors, 1),
            };
        }
        left
    };
    'run: loop {
        let now = clock.raw();
        let timeout = match trigger.next_due() {
            Some(due) => clock.duration(due.saturating_sub(now)).min(interval),
            None => interval,
        };
        // A slow request's close does not wake this thread (in an
        // incident every request is slow: one wake-up each cost the service
        // a context switch a request). It wakes every turn on its own; a
        // flush, the shutdown and a half-full queue unpark it.
        std::thread::park_timeout(timeout);
        shared.slow_queued.store(0, Ordering::Relaxed);
        // The last turn's work (a cut, the offers, the scans) is paid for.
        budget.charge(cpu.lap());
        let first = match rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => break,
        };
        // Every message waiting is read before the next window is cut (a
        // cut and its mapping take milliseconds; an offer, nanoseconds), so
        // a flush or the shutdown never waits behind a backlog.
        let waiting = std::iter::from_fn(|| rx.try_recv().ok()).take(MESSAGES_PER_TURN);
        for msg in first.into_iter().chain(waiting) {
            let now = clock.raw();
            match msg {
                // Made (and remembered for dumps) only when a capture carries it.
                Msg::Slow(close) => offer(
                    &counters,
                    &mut trigger,
                    (close.start, close.end),
                    now,
                    || {
                        let req = shared.slow_request_of(&close);
                        shared.remember(&req);
                        req
                    },
                ),
                Msg::Flush(ack, deadline) => {
                    // Past the deadline the rest waits for the next turns.
                    let left = write(trigger.drain(), &mut sink, Some(deadline));
                    trigger.restore(left);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if guarded(|| sink.flush_within(left)).is_err() {
                        bump(&counters.sink_errors, 1);
                    }
                    let _ = ack.try_send(());
                }
                Msg::Shutdown(ack, deadline) => {
                    // From now on slow closes are counted as dropped; those
                    // queued already are counted below, as the thread ends.
                    shared.closed.store(true, Ordering::SeqCst);
                    // A service shorter than a check's second still hears it.
                    check_setup(&shared);
                    // A shutdown ends in time: what it could not cut is counted.
                    let left = write(trigger.drain(), &mut sink, Some(deadline));
                    bump(&counters.sink_errors, left.len() as u64);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if guarded(|| sink.flush_within(left)).is_err() {
                        bump(&counters.sink_errors, 1);
                    }
                    pinner.release(segments);
                    // Slow requests queued behind the shutdown: dropped, counted.
                    for msg in rx.try_iter() {
                        if let Msg::Slow(_) = msg {
                            bump(&shared.slow_dropped, 1);
                        }
                    }
                    let _ = ack.try_send(());
                    break 'run;
                }
            }
        }
        publish_absorbing(&shared, &trigger);
        let now = clock.raw();
        // Once per interval (not per message: a storm sends thousands a
        // second): requests slow while still open keep their history from
        // now on, and those open past `stuck_after` are captured without waiting.
        let due_now = trigger.next_due().is_some_and(|d| d <= now);
        if now.saturating_sub(last_scan) < interval_ticks && !due_now {
            continue;
        }
        last_scan = now;
        if now.saturating_sub(last_setup_check) >= setup_every {
            last_setup_check = now;
            check_setup(&shared);
            shared.capture.forget_exited_threads();
        }
        let mut open_needed: Option<u64> = None;
        if shared.capture.enabled {
            for r in shared.requests.scan(now, threshold, stuck) {
                let from = r.start_raw.saturating_sub(before);
                open_needed = Some(open_needed.map_or(from, |n| n.min(from)));
                if r.stuck {
                    let ids = shared.requests.ids_or_own(&r);
                    let mut req = shared.slow_request(r.request_id, r.name, ids, r.start_raw, now);
                    req.open = true;
                    bump(&shared.slow_requests, 1);
                    bump(&counters.captured_open, 1);
                    shared.remember(&req);
                    offer(&counters, &mut trigger, (r.start_raw, now), now, || req);
                }
            }
        }
        // One window a turn: messages (a flush, the shutdown, slow
        // requests) are read between two cuts.
        if let Some(p) = trigger.next(now) {
            write(vec![p], &mut sink, None);
            publish_absorbing(&shared, &trigger);
        }
        let needed = match (trigger.earliest_from(), open_needed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let refused = pinner.update(segments, needed);
        bump(&counters.pins_refused, refused);
    }
}
