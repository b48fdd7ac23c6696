//! Real workloads, one per cause of a slow request, on multi-thread
//! runtimes with the recorder's hooks: each runs one slow request named
//! after the case, and returns the explanation of it from its window. Two
//! test binaries run them, with Tokio's scheduling delay recorded and not.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_blackbox::analysis::{self, Explanation};
use tokio_blackbox::{Blackbox, BlackboxGuard};
use tracing::Instrument;

use super::windows::Collect;

/// The recorder of this test binary (one global subscriber per binary).
pub struct Recorder {
    blackbox: Blackbox,
    _guard: BlackboxGuard,
    sink: Collect,
    /// Cases run one at a time: they measure time on a 2-core machine.
    serial: Mutex<()>,
}

/// The binary's recorder, with or without the scheduling delay recorded.
pub fn recorder(schedule_delay: bool) -> &'static Recorder {
    static REC: OnceLock<Recorder> = OnceLock::new();
    REC.get_or_init(|| {
        use tracing_subscriber::prelude::*;
        let sink = Collect::default();
        let (blackbox, guard) = Blackbox::builder()
            .latency_threshold(Duration::from_millis(150))
            .window(Duration::from_millis(400), Duration::from_millis(50))
            .schedule_delay(schedule_delay)
            .sink(sink.clone())
            .build()
            .expect("recorder");
        tracing_subscriber::registry().with(blackbox.layer()).init();
        Recorder {
            blackbox,
            _guard: guard,
            sink,
            serial: Mutex::new(()),
        }
    })
}

impl Recorder {
    /// Runs `case` on a fresh runtime of `workers` workers (blocking pool of
    /// `blocking` threads) and explains the slow request named `name`.
    pub fn explain<F, Fut>(
        &self,
        name: &str,
        workers: usize,
        blocking: usize,
        case: F,
    ) -> Explanation
    where
        F: FnOnce(tokio::runtime::Handle) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let _one = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.worker_threads(workers)
            .max_blocking_threads(blocking)
            .enable_all();
        self.blackbox.install_hooks(&mut rt);
        let rt = rt.build().expect("runtime");
        let handle = rt.handle().clone();
        rt.block_on(case(handle));
        // Let the window's `after` pass, then wait for its capture.
        std::thread::sleep(Duration::from_millis(100));
        assert!(self.blackbox.flush(Duration::from_secs(10)));
        drop(rt);
        let windows = self.sink.windows();
        let (w, r) = windows
            .iter()
            .rev()
            .find_map(|w| w.requests.iter().find(|r| r.name == name).map(|r| (w, r)))
            .unwrap_or_else(|| panic!("no window holds the slow request {name}"));
        let e = analysis::explain(w, r);
        eprintln!(
            "{name}: {} [{:?}] {:?}",
            e.sentence,
            e.confidence,
            e.shares()
        );
        let total: u64 = e.shares().iter().map(|s| s.ns).sum();
        assert_eq!(
            total, e.duration_ns,
            "the shares add up to the duration: {e:?}"
        );
        e
    }
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A neighbour blocks each worker with `std::thread::sleep` for 300 ms
/// while the request awaits a short timer.
pub fn blocked_worker(rec: &Recorder) -> Explanation {
    rec.explain("blocked", 2, 8, |h| async move {
        let request = h.spawn(
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            .instrument(tracing::info_span!("blocked")),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let neighbours: Vec<_> = (0..2)
            .map(|_| h.spawn(async { std::thread::sleep(Duration::from_millis(300)) }))
            .collect();
        let _ = request.await;
        for n in neighbours {
            let _ = n.await;
        }
    })
}

/// Every worker busy with many tasks doing 1 ms polls; the request yields
/// a few times and queues behind them each time.
pub fn saturated_runtime(rec: &Recorder) -> Explanation {
    rec.explain("saturated", 2, 8, |h| async move {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..100)
            .map(|_| {
                let stop = stop.clone();
                h.spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        spin(Duration::from_millis(1));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let request = h.spawn(
            async {
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
            }
            .instrument(tracing::info_span!("saturated")),
        );
        let _ = request.await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in load {
            let _ = t.await;
        }
    })
}

/// The request computes for 300 ms itself, in 5 ms polls.
pub fn own_cpu(rec: &Recorder) -> Explanation {
    rec.explain("own", 2, 8, |h| async move {
        let request = h.spawn(
            async {
                for _ in 0..60 {
                    spin(Duration::from_millis(5));
                    tokio::task::yield_now().await;
                }
            }
            .instrument(tracing::info_span!("own")),
        );
        let _ = request.await;
    })
}

/// A fan-out: the request spawns a child that does the CPU work (300 ms in
/// 31 polls) and awaits it.
pub fn fan_out(rec: &Recorder) -> Explanation {
    rec.explain("fanout", 2, 8, |h| async move {
        let request = h.spawn(
            async {
                let child = tokio::spawn(async {
                    for _ in 0..31 {
                        spin(Duration::from_micros(9_700));
                        tokio::task::yield_now().await;
                    }
                });
                let _ = child.await;
            }
            .instrument(tracing::info_span!("fanout")),
        );
        let _ = request.await;
    })
}

/// A slow downstream: the request awaits a 300 ms timer on an idle runtime.
pub fn downstream(rec: &Recorder) -> Explanation {
    rec.explain("downstream", 2, 8, |h| async move {
        let request = h.spawn(
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            .instrument(tracing::info_span!("downstream")),
        );
        let _ = request.await;
    })
}

/// Another request holds a `tokio::sync::Mutex` across a 300 ms await; the
/// request waits for the lock.
pub fn mutex(rec: &Recorder) -> Explanation {
    rec.explain("locked", 2, 8, |h| async move {
        let lock = Arc::new(tokio::sync::Mutex::new(0u64));
        let holder = {
            let lock = lock.clone();
            h.spawn(
                async move {
                    let mut g = lock.lock().await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    *g += 1;
                }
                .instrument(tracing::info_span!("holder")),
            )
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let request = h.spawn(
            async move {
                *lock.lock().await += 1;
            }
            .instrument(tracing::info_span!("locked")),
        );
        let _ = request.await;
        let _ = holder.await;
    })
}

/// The blocking pool (one thread) is busy for 300 ms; the request's own
/// `spawn_blocking` job waits for it.
pub fn blocking_pool(rec: &Recorder) -> Explanation {
    rec.explain("blocking", 2, 1, |h| async move {
        let busy = h.spawn_blocking(|| std::thread::sleep(Duration::from_millis(300)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let request = h.spawn(
            async {
                let _ = tokio::task::spawn_blocking(|| 1 + 1).await;
            }
            .instrument(tracing::info_span!("blocking")),
        );
        let _ = request.await;
        let _ = busy.await;
    })
}

/// Mixed: 120 ms of its own CPU, then a 250 ms downstream wait.
pub fn mixed(rec: &Recorder) -> Explanation {
    rec.explain("mixed", 2, 8, |h| async move {
        let request = h.spawn(
            async {
                for _ in 0..24 {
                    spin(Duration::from_millis(5));
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            .instrument(tracing::info_span!("mixed")),
        );
        let _ = request.await;
    })
}

/// The tests of one binary: every case with the recorder of `$delay`
/// (scheduling delay recorded or not), expecting confidence `$conf`.
#[macro_export]
macro_rules! verdict_tests {
    ($delay:expr, $conf:expr) => {
        fn rec() -> &'static $crate::support::verdicts::Recorder {
            $crate::support::verdicts::recorder($delay)
        }
        #[test]
        fn blocked_worker() {
            let e = $crate::support::verdicts::blocked_worker(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::BlockedWorker,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
            assert!(e.sentence.starts_with("blocked worker: "), "{}", e.sentence);
            assert!(!e.culprits.is_empty());
            assert!(e.blocked_ns > e.duration_ns / 2, "{e:?}");
        }

        #[test]
        fn saturated_runtime() {
            let e = $crate::support::verdicts::saturated_runtime(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::SaturatedRuntime,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
            assert!(
                e.culprits.is_empty() || e.saturated_ns > e.blocked_ns,
                "{e:?}"
            );
        }

        #[test]
        fn own_cpu() {
            let e = $crate::support::verdicts::own_cpu(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::OwnCpu,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
            assert!(e.own_cpu_ns > e.duration_ns / 2, "{e:?}");
        }

        #[test]
        fn fan_out() {
            let e = $crate::support::verdicts::fan_out(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::OwnCpu,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
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
            let e = $crate::support::verdicts::downstream(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::Waiting,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
            assert!(e.waiting_ns > e.duration_ns * 8 / 10, "{e:?}");
        }

        #[test]
        fn mutex() {
            let e = $crate::support::verdicts::mutex(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::Waiting,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
            assert!(e.waiting_ns > e.duration_ns * 7 / 10, "{e:?}");
        }

        #[test]
        fn blocking_pool() {
            let e = $crate::support::verdicts::blocking_pool(rec());
            assert_eq!(
                e.cause,
                tokio_blackbox::analysis::Cause::Waiting,
                "{}",
                e.sentence
            );
            assert_eq!(e.confidence, $conf);
            assert!(e.waiting_ns > e.duration_ns * 7 / 10, "{e:?}");
        }

        #[test]
        fn mixed_causes_are_ranked() {
            let e = $crate::support::verdicts::mixed(rec());
            let ranked: Vec<tokio_blackbox::analysis::Cause> =
                e.ranking.iter().map(|&(c, _)| c).collect();
            assert_eq!(
                &ranked[..2],
                &[
                    tokio_blackbox::analysis::Cause::Waiting,
                    tokio_blackbox::analysis::Cause::OwnCpu
                ],
                "{e:?}"
            );
        }
    };
}
