//! One real workload per cause of a slow request, with Tokio's scheduling delay recorded (`BLACKBOX_SCHEDULE_DELAY`): `exact`.
//! Each asserts the verdict and that the shares add up to the duration
//! (in `support::verdicts`).

mod support;

use support::verdicts::{self, Recorder};
use tokio_blackbox::analysis::{Cause, Confidence};

fn rec() -> &'static Recorder {
    verdicts::recorder(true)
}

#[test]
fn blocked_worker() {
    let e = verdicts::blocked_worker(rec());
    assert_eq!(e.cause, Cause::BlockedWorker, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(e.sentence.starts_with("blocked worker: "), "{}", e.sentence);
    assert!(!e.culprits.is_empty());
    assert!(e.blocked_ns > e.duration_ns / 2, "{e:?}");
}

#[test]
fn saturated_runtime() {
    let e = verdicts::saturated_runtime(rec());
    assert_eq!(e.cause, Cause::SaturatedRuntime, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(
        e.culprits.is_empty() || e.saturated_ns > e.blocked_ns,
        "{e:?}"
    );
}

#[test]
fn own_cpu() {
    let e = verdicts::own_cpu(rec());
    assert_eq!(e.cause, Cause::OwnCpu, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(e.own_cpu_ns > e.duration_ns / 2, "{e:?}");
}

#[test]
fn fan_out() {
    let e = verdicts::fan_out(rec());
    assert_eq!(e.cause, Cause::OwnCpu, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(
        e.own_tasks.len() >= 2,
        "the child is one of its own tasks: {e:?}"
    );
    assert!(
        e.own_tasks[0].1 > e.duration_ns / 2,
        "the child did the work: {e:?}"
    );
}

#[test]
fn downstream() {
    let e = verdicts::downstream(rec());
    assert_eq!(e.cause, Cause::Waiting, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(e.waiting_ns > e.duration_ns * 8 / 10, "{e:?}");
}

#[test]
fn mutex() {
    let e = verdicts::mutex(rec());
    assert_eq!(e.cause, Cause::Waiting, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(e.waiting_ns > e.duration_ns * 7 / 10, "{e:?}");
}

#[test]
fn blocking_pool() {
    let e = verdicts::blocking_pool(rec());
    assert_eq!(e.cause, Cause::Waiting, "{}", e.sentence);
    assert_eq!(e.confidence, Confidence::Exact);
    assert!(e.waiting_ns > e.duration_ns * 7 / 10, "{e:?}");
}

#[test]
fn mixed_causes_are_ranked() {
    let e = verdicts::mixed(rec());
    let ranked: Vec<Cause> = e.ranking.iter().map(|&(c, _)| c).collect();
    assert_eq!(&ranked[..2], &[Cause::Waiting, Cause::OwnCpu], "{e:?}");
}
