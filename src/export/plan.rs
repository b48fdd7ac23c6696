//! The span budget's plan: which threads, tasks and polls of a [`Window`]
//! become spans, and what is only counted. Pure: no OTLP types, no ids, no
//! clock; [`super::otlp`] assembles the spans the plan names.
//!
//! The budget ([`Budget::max_spans`]) is shared out in this order: the spans
//! that carry the structure (the window, the references and the request
//! spans the recorder made), then the first request's own tasks (its
//! children included) and the culprits its verdict names, with all their
//! polls, then one span per thread, then the other tasks — by time spent on a
//! worker — and their polls, each task getting an equal share and a task
//! with fewer polls leaving the rest to the others. A task whose polls exceed its share keeps
//! its longest ones and the others are counted. When the other tasks do not
//! all fit, at most a quarter of what is left goes to their task spans (a
//! task span costs about five poll spans in bytes), so the busiest of them
//! show a few polls each, their longest, rather than many tasks one poll
//! each. What is left out is counted, never dropped silently.

use crate::analysis::{
    Explanation, LongestPolls, Source, TaskActivity, TaskDigest, WorkerActivity, digest,
    explain_from,
};
use crate::window::Window;
use std::collections::HashSet;

/// At most this many span events (park/unpark, woken) on one span: enough for
/// a busy worker over a 2 s window at 250 parks per second, and a cap so one
/// thread cannot grow an export request without bound. The rest is counted.
/// A worker span carries fewer under a smaller budget ([`Budget::worker_events`]).
pub const MAX_EVENTS_PER_SPAN: usize = 512;

/// How many spans one window may become, and so how many bytes it is
/// sent as.
///
/// The default tells the slow request's story: every poll of its own
/// tasks and of the culprits its verdict names, one span per thread, then
/// the busiest of the other tasks as far as the budget goes; the rest is
/// counted on the window span (`blackbox.window.tasks_omitted`,
/// `polls_omitted`, `polls_omitted_busy_ms`, `long_polls_omitted`). A
/// larger budget (`BLACKBOX_MAX_SPANS_PER_WINDOW`) shows more of the other
/// tasks: the whole picture, at a few hundred bytes a span.
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::plan::Budget;
/// let b = Budget::default();
/// assert_eq!(b.max_spans, Budget::DEFAULT_MAX_SPANS);
/// assert_eq!(b.worker_events(), 50);
/// // The whole picture: more spans, and every worker's park and unpark
/// // events up to the per-span cap.
/// assert_eq!(Budget::new(5_000).worker_events(), 512);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Most spans per window. By default, this is [`Budget::DEFAULT_MAX_SPANS`].
    pub max_spans: usize,
}

impl Budget {
    /// Spans per window: 200 (`BLACKBOX_MAX_SPANS_PER_WINDOW`). A window of
    /// that size encodes to at most about 64 KiB of OTLP protobuf (the
    /// median window of `blackbox-bench bytes` is well under it; see
    /// BENCHMARKS.md, "Bytes per window"), and the request's own story
    /// rarely needs more. Before issue 25 the default was 1,000 (about
    /// 350 KB a window).
    pub const DEFAULT_MAX_SPANS: usize = 200;

    /// A budget of `max_spans` spans per window.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::export::plan::Budget;
    /// assert_eq!(Budget::new(1_000).max_spans, 1_000);
    /// ```
    pub fn new(max_spans: usize) -> Budget {
        Budget { max_spans }
    }

    /// The park and unpark events each worker span carries: a quarter of
    /// `max_spans`, at most [`MAX_EVENTS_PER_SPAN`]
    /// (50 by default). Those nearest the slow request are kept (all of
    /// those during it when they fit); the rest are counted in
    /// `blackbox.worker.events_omitted`, and `blackbox.worker.parks` and
    /// `busy_fraction` summarise the whole window.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_blackbox::export::plan::Budget;
    /// assert_eq!(Budget::new(1_000).worker_events(), 250);
    /// ```
    pub fn worker_events(&self) -> usize {
        (self.max_spans / 4).min(MAX_EVENTS_PER_SPAN)
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(Budget::DEFAULT_MAX_SPANS)
    }
}

/// A task the plan shows, with the polls it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownTask {
    /// The task's activity in the window, with only the polls shown, in
    /// time order: all of them, or the longest that fit the task's share.
    pub task: TaskActivity,
    /// `true` when the task worked for one of the window's slow requests.
    pub in_request: bool,
    /// All its polls in the window, shown or not.
    pub polls_total: u64,
    /// Time it spent being polled, all polls.
    pub busy_ns: u64,
    /// Its longest poll.
    pub longest_poll_ns: u64,
    /// Its polls longer than the window's `long_poll`.
    pub long_polls: u64,
    /// Its total recorded scheduling delay.
    pub sched_delay_ns: u64,
    /// When its first poll in the window started and its last one ended.
    pub polled: Option<(u64, u64)>,
}

impl ShownTask {
    /// Busy time of the polls left out, ns.
    pub fn omitted_busy_ns(&self) -> u64 {
        self.busy_ns.saturating_sub(self.task.busy_ns())
    }

    /// Polls left out.
    pub fn polls_omitted(&self) -> u64 {
        self.polls_total
            .saturating_sub(self.task.polls.len() as u64)
    }
}

/// What a window becomes under a budget: what is shown and what is counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Spans that carry the structure: the recorder's own request spans and
    /// one reference span per slow request after the first (the window span
    /// not included).
    pub structure_spans: usize,
    /// The threads shown, one span each, in lane order.
    pub workers: Vec<WorkerActivity>,
    /// Threads left out.
    pub workers_omitted: usize,
    /// The tasks shown, in export order (the primary request's first).
    pub tasks: Vec<ShownTask>,
    /// Tasks that ran in the window, shown or not.
    pub tasks_total: usize,
    /// Polls left out, over all tasks (shown or not).
    pub polls_omitted: u64,
    /// Time on a worker of the polls left out, over all tasks (shown or
    /// not), ns.
    pub polls_omitted_busy_ns: u64,
    /// Long polls (over the window's `long_poll`) left out, over all tasks.
    pub long_polls_omitted: u64,
    /// Why the window's first request was slow; its own tasks and culprits
    /// are shown first.
    pub verdict: Explanation,
}

impl Plan {
    /// Spans the plan makes, the window span included (none for a window
    /// without a slow request).
    pub fn spans(&self) -> usize {
        1 + self.structure_spans
            + self.workers.len()
            + self
                .tasks
                .iter()
                .map(|t| 1 + t.task.polls.len())
                .sum::<usize>()
    }

    /// Tasks left out.
    pub fn tasks_omitted(&self) -> usize {
        self.tasks_total - self.tasks.len()
    }
}

/// Plans `window` under `budget`: `None` for a window with no slow request
/// (which maps to nothing).
///
/// # Examples
///
/// ```
/// use tokio_blackbox::export::plan::{Budget, plan};
/// assert!(plan(&tokio_blackbox::Window::default(), Budget::default()).is_none());
/// ```
pub fn plan(window: &Window, budget: Budget) -> Option<Plan> {
    plan_of(window, budget)
}

/// [`plan`] for a window in memory or a [`Cut`](crate::Cut) decoded as it is read.
pub(crate) fn plan_of(source: &dyn Source, budget: Budget) -> Option<Plan> {
    let window = source.window();
    let primary = window.requests.first()?;
    let captured: Vec<u64> = window.requests.iter().map(|r| r.request_id).collect();
    let structure_spans = window.requests.iter().filter(|r| r.own_span).count()
        + window.requests.len().saturating_sub(1);
    // The window span itself counts too.
    let mut left = budget.max_spans.saturating_sub(structure_spans + 1);

    // Polls are not kept, except those near the primary request (for its
    // verdict) and, in a second pass, those shown: a storm's window has
    // millions.
    let (digests, mut workers) = digest(source, primary);
    // The slow request's own story first: every poll of its own tasks and
    // of the culprits its verdict names, then the rest.
    let verdict = explain_from(source, primary, &digests, &workers);

    let first: HashSet<u64> = verdict
        .own_tasks
        .iter()
        .map(|&(id, _)| id)
        .chain(verdict.culprits.iter().map(|c| c.task))
        .collect();
    // Ranked in place, and only as far as can be shown (at most `left`
    // of each part): a storm's window has tens of thousands of tasks, and a
    // full sort would cache a key for each, or copy their digests.
    let mut tasks = digests;
    let tasks_total = tasks.len();
    let busy_total = tasks.iter().map(|t| t.busy_ns).fold(0, u64::saturating_add);
    let long_total: u64 = tasks.iter().map(|t| u64::from(t.long_polls)).sum();
    let split = partition(&mut tasks, |t| first.contains(&t.id));
    let rank = |t: &TaskDigest| task_rank(t, &first, &captured);
    rank_prefix(&mut tasks[..split], left, rank);
    rank_prefix(&mut tasks[split..], left, rank);
    let mut polls_omitted = 0u64;
    let mut shown = show(&tasks[..split], 0, 2, &mut left, &mut polls_omitted);
    // The threads after the story (a big host's window has a hundred
    // threads or more: they must not crowd out the request's own polls),
    // before the other tasks.
    let workers_shown = workers.len().min(left);
    left -= workers_shown;
    let workers_omitted = workers.len() - workers_shown;
    workers.truncate(workers_shown);
    shown.extend(show(
        &tasks[split..],
        split,
        4,
        &mut left,
        &mut polls_omitted,
    ));
    // The second pass: each shown task's longest polls, as many as its share.
    let mut longest = LongestPolls::new(shown.iter().map(|&(i, share)| (tasks[i].id, share)));
    source.scan(&mut longest);
    let mut kept = longest.finish();
    let long_poll_ns = window.long_poll.as_nanos() as u64;
    let (mut busy_shown, mut long_shown) = (0u64, 0u64);
    let tasks: Vec<ShownTask> = shown
        .into_iter()
        .map(|(i, _)| {
            let d = &tasks[i];
            let mut task = d.activity(&window.strings);
            task.polls = kept.remove(&task.id).unwrap_or_default();
            busy_shown = busy_shown.saturating_add(task.busy_ns());
            long_shown += task
                .polls
                .iter()
                .filter(|p| p.is_long(long_poll_ns))
                .count() as u64;
            ShownTask {
                in_request: task.requests.iter().any(|r| captured.contains(r)),
                task,
                polls_total: d.polls,
                busy_ns: d.busy_ns,
                longest_poll_ns: d.longest_ns,
                long_polls: u64::from(d.long_polls),
                sched_delay_ns: d.sched_delay_ns,
                polled: d.polled(),
            }
        })
        .collect();
    Some(Plan {
        structure_spans,
        workers,
        workers_omitted,
        tasks,
        tasks_total,
        polls_omitted,
        polls_omitted_busy_ns: busy_total.saturating_sub(busy_shown),
        long_polls_omitted: long_total.saturating_sub(long_shown),
        verdict,
    })
}

/// Takes as many of `tasks` (in order) as `left` spans allow, each with
/// its share of poll spans, counting in `polls_omitted` what is left out.
/// When they do not all fit, at most `1 / task_part` of `left` goes to
/// task spans (at least one task). Returns the indexes taken (`offset` plus
/// the index in `tasks`) with their shares.
fn show(
    tasks: &[TaskDigest],
    offset: usize,
    task_part: usize,
    left: &mut usize,
    polls_omitted: &mut u64,
) -> Vec<(usize, usize)> {
    let polls = |t: &TaskDigest| usize::try_from(t.polls).unwrap_or(usize::MAX);
    let total_polls = tasks.iter().map(polls).fold(0, usize::saturating_add);
    let tasks_shown = if tasks.len().saturating_add(total_polls) <= *left {
        tasks.len()
    } else {
        // A part of the remaining budget at most for task spans, so polls
        // (where the blocking shows) keep room; at least one task.
        tasks.len().min((*left / task_part).max((*left).min(1)))
    };
    let poll_budget = *left - tasks_shown;
    *polls_omitted += tasks[tasks_shown..].iter().map(|t| t.polls).sum::<u64>();
    let tasks = &tasks[..tasks_shown];
    let wants: Vec<usize> = tasks.iter().map(polls).collect();
    let shares = share_polls(&wants, poll_budget);
    *left -= tasks_shown + shares.iter().sum::<usize>();
    tasks
        .iter()
        .zip(shares)
        .enumerate()
        .map(|(i, (task, share))| {
            *polls_omitted += task.polls - share as u64;
            (offset + i, share)
        })
        .collect()
}

/// Moves the tasks `first` holds to the front, returning how many there are.
fn partition(tasks: &mut [TaskDigest], first: impl Fn(&TaskDigest) -> bool) -> usize {
    let mut split = 0;
    for i in 0..tasks.len() {
        if first(&tasks[i]) {
            tasks.swap(split, i);
            split += 1;
        }
    }
    split
}

/// Puts the `k` first of `tasks` by `rank` at the front, in order; the
/// rest follow in no order. Linear in `tasks` plus a sort of `k`.
fn rank_prefix<K: Ord>(tasks: &mut [TaskDigest], k: usize, rank: impl Fn(&TaskDigest) -> K + Copy) {
    let k = k.min(tasks.len());
    if k == 0 {
        return;
    }
    if k < tasks.len() {
        tasks.select_nth_unstable_by_key(k - 1, rank);
    }
    tasks[..k].sort_unstable_by_key(rank);
}

/// A task's place in the export order: the primary request's own tasks and
/// its verdict's culprits (`first`), then the other captured requests'
/// tasks, then the rest; ties by busy time, longest first.
fn task_rank(
    d: &TaskDigest,
    first: &HashSet<u64>,
    captured: &[u64],
) -> (u8, std::cmp::Reverse<u64>, u64) {
    let class = if first.contains(&d.id) {
        0
    } else if d.requests().any(|r| captured.contains(&r)) {
        1
    } else {
        2
    };
    (class, std::cmp::Reverse(d.busy_ns), d.id)
}

/// Shares `budget` poll spans among tasks wanting `wants[i]` polls: equal
/// shares, and what a task does not need goes to the others (water-filling).
fn share_polls(wants: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i]);
    let mut out = vec![0; wants.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (wants.len() - k);
        let give = wants[i].min(share);
        out[i] = give;
        left -= give;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testing;

    #[test]
    fn ranking_a_prefix_shows_what_a_full_sort_shows() {
        // Busy times with ties (the id breaks them), a few tasks first.
        let mut x = 7u64;
        let digests: Vec<TaskDigest> = (1..=500)
            .map(|id| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut d = TaskDigest::new(id);
                d.busy_ns = (x >> 33) % 50;
                d
            })
            .collect();
        let first: HashSet<u64> = (1..=500).filter(|id| id % 37 == 0).collect();
        let rank = |t: &TaskDigest| task_rank(t, &first, &[]);
        let mut sorted = digests.clone();
        sorted.sort_by_key(rank);
        let ids = |t: &[TaskDigest]| t.iter().map(|d| d.id).collect::<Vec<_>>();
        for k in [0, 1, 5, 13, 100, 499, 500, 600] {
            let mut tasks = digests.clone();
            let split = partition(&mut tasks, |t| first.contains(&t.id));
            assert_eq!(split, first.len());
            rank_prefix(&mut tasks[..split], k, rank);
            rank_prefix(&mut tasks[split..], k, rank);
            let (a, b) = (k.min(split), k.min(tasks.len() - split));
            assert_eq!(ids(&tasks[..a]), ids(&sorted[..a]), "first part, k {k}");
            assert_eq!(
                ids(&tasks[split..split + b]),
                ids(&sorted[split..split + b]),
                "the rest, k {k}"
            );
        }
    }

    #[test]
    fn poll_shares_fill_like_water() {
        assert_eq!(share_polls(&[1, 10, 10], 9), vec![1, 4, 4]);
        assert_eq!(share_polls(&[0, 3], 100), vec![0, 3]);
        assert_eq!(share_polls(&[5, 5, 5], 2), vec![0, 1, 1]);
        assert_eq!(share_polls(&[], 5), Vec::<usize>::new());
    }

    #[test]
    fn everything_fits_a_large_budget() {
        let w = testing::window(3, 4, 1);
        let p = plan(&w, Budget::default()).unwrap();
        assert_eq!(p.structure_spans, 0);
        assert_eq!((p.workers.len(), p.workers_omitted), (3, 0));
        assert_eq!((p.tasks.len(), p.tasks_total, p.polls_omitted), (3, 3, 0));
        assert!(
            p.tasks
                .iter()
                .all(|t| t.task.polls.len() == 4 && t.polls_total == 4)
        );
        // The request's own task first, then by busy time (the long poll's task).
        assert!(p.tasks[0].in_request && p.tasks[0].task.id == 1);
        assert_eq!(p.tasks[1].task.id, 3);
        assert_eq!(p.spans(), 1 + 3 + 3 * 5);
    }

    #[test]
    fn a_small_budget_is_kept_and_the_rest_is_counted() {
        let w = testing::window(300, 10, 1);
        let p = plan(&w, Budget::new(100)).unwrap();
        assert!(p.spans() <= 100, "{}", p.spans());
        assert_eq!(p.spans(), 100, "the budget is used up");
        assert_eq!(p.tasks_total, 300);
        assert_eq!(p.tasks.len() + p.tasks_omitted(), 300);
        let shown: u64 = p.tasks.iter().map(|t| t.task.polls.len() as u64).sum();
        assert_eq!(shown + p.polls_omitted, 3000);
        assert_eq!(p.tasks[0].task.id, 1, "the request's task is kept");
        // The task with the 15 ms poll keeps that poll, its longest.
        let long = p.tasks.iter().find(|t| t.task.id == 300).unwrap();
        assert!(
            long.task
                .polls
                .iter()
                .any(|p| p.duration_ns() == long.longest_poll_ns),
            "its longest poll is shown"
        );
        assert!(long.omitted_busy_ns() > 0);
        // The window's summary of what is left out: its busy time, and no
        // long poll among it.
        let busy_all: u64 = w.tasks().iter().map(|t| t.busy_ns()).sum();
        let busy_shown: u64 = p.tasks.iter().map(|t| t.task.busy_ns()).sum();
        assert_eq!(p.polls_omitted_busy_ns, busy_all - busy_shown);
        assert!(p.polls_omitted_busy_ns > 0);
        assert_eq!(p.long_polls_omitted, 0, "the one long poll is shown");
        for t in &p.tasks {
            assert!(
                t.task
                    .polls
                    .windows(2)
                    .all(|w| w[0].start_ns <= w[1].start_ns)
            );
            assert_eq!(t.polls_omitted() + t.task.polls.len() as u64, t.polls_total);
        }
    }

    #[test]
    fn the_default_budget_tells_the_requests_story_first() {
        // 2,000 busy tasks beside the request: its own task keeps every
        // poll, the long poll is shown, the rest is counted.
        let w = testing::window(2_000, 3, 1);
        let p = plan(&w, Budget::default()).unwrap();
        assert!(p.spans() <= Budget::DEFAULT_MAX_SPANS, "{}", p.spans());
        let own = &p.tasks[0];
        assert!(own.in_request && own.task.id == 1);
        assert_eq!(own.task.polls.len(), 3, "every poll of the request's task");
        assert_eq!(p.long_polls_omitted, 0, "the long poll is shown");
        assert!(p.tasks.iter().any(|t| t.task.id == 2_000));
        assert_eq!(p.tasks.len() + p.tasks_omitted(), 2_000);
        assert!(p.tasks_omitted() > 1_800);
    }

    #[test]
    fn the_requests_polls_come_before_the_threads() {
        // 3 threads, and room for 3 spans after the window's: the request's
        // task and its poll first, then one thread; the rest counted.
        let w = testing::window(3, 1, 1);
        let p = plan(&w, Budget::new(4)).unwrap();
        assert_eq!(p.spans(), 4);
        assert_eq!(p.tasks.len(), 1);
        assert!(p.tasks[0].in_request && p.tasks[0].task.polls.len() == 1);
        assert_eq!((p.workers.len(), p.workers_omitted), (1, 2));
        assert_eq!((p.tasks_omitted(), p.polls_omitted), (2, 2));
    }

    #[test]
    fn the_structure_comes_first() {
        let mut w = testing::window(2, 2, 3);
        w.requests[2].own_span = true;
        let p = plan(&w, Budget::new(4)).unwrap();
        // 2 references, 1 recorder-made request span, the window: 4.
        assert_eq!(p.structure_spans, 3);
        assert!(p.workers.is_empty() && p.tasks.is_empty());
        assert_eq!(
            (p.workers_omitted, p.tasks_total, p.polls_omitted),
            (3, 2, 4)
        );
        // Nothing shown: all the busy time and the long poll are counted.
        let busy_all: u64 = w.tasks().iter().map(|t| t.busy_ns()).sum();
        assert_eq!(
            (p.polls_omitted_busy_ns, p.long_polls_omitted),
            (busy_all, 1)
        );
        let p = plan(&testing::window(0, 0, 1), Budget::new(1)).unwrap();
        assert_eq!(p.spans(), 1, "only the window span");
    }
}
