//! The workloads: polls (scheduler cost), requests (a root span per request
//! around channel round trips, a yield, compute and a child task) and http (a
//! hyper server under a fixed-concurrency load generator).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::variants::Ctx;

pub const POLL_TASKS: u64 = 8;
pub const REQUEST_CLIENTS: u64 = 32;
pub const HTTP_CONNECTIONS: usize = 32;

/// CPU time of the whole process (all threads: what the variant costs the host).
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes to it.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Peak resident set size of this process, bytes.
pub fn peak_rss() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as u64 * 1024
}

/// CPU time of this process's threads whose name starts with `prefix`
/// (`/proc/self/task/*/stat`, utime + stime), in ms: what the recorder's own
/// threads (`blackbox-capture`, `blackbox-export`) spent.
pub fn threads_cpu_ms(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut ticks = 0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: state is the 3rd
        // field of the line, utime the 14th and stime the 15th.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += n(11) + n(12);
        }
    }
    ticks * 1000 / hz
}

#[inline(never)]
pub fn compute(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

fn instrument_task<F>(s: &Ctx, f: F) -> std::pin::Pin<Box<dyn Future<Output = F::Output> + Send>>
where
    F: Future + Send + 'static,
{
    match &s.task_monitor {
        Some(m) => Box::pin(m.instrument(f)),
        None => Box::pin(f),
    }
}

/// Spawn sites the many-task poll workloads spread their tasks over: a
/// service's tasks come from many places (its accept loop, handlers,
/// background jobs), and a per-location cache must not get them for free.
pub const SPAWN_SITES: u64 = 8;

/// Spawns `f` from call site `site % SPAWN_SITES`: eight `tokio::spawn`
/// calls on eight lines, so eight spawn locations.
#[rustfmt::skip]
fn spawn_at<F>(site: u64, f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match site % SPAWN_SITES {
        0 => tokio::spawn(f),
        1 => tokio::spawn(f),
        2 => tokio::spawn(f),
        3 => tokio::spawn(f),
        4 => tokio::spawn(f),
        5 => tokio::spawn(f),
        6 => tokio::spawn(f),
        _ => tokio::spawn(f),
    }
}

/// A poll workload's shape: how many tasks, from how many spawn sites.
#[derive(Clone, Copy, Debug)]
pub struct PollShape {
    pub tasks: u64,
    pub sites: u64,
}

impl PollShape {
    /// `polls` (8 tasks, one site: every per-task cache hits), `polls-1k`
    /// (1,000 tasks) and `polls-100k` (100,000 tasks), the last two from
    /// [`SPAWN_SITES`] sites.
    pub fn of(workload: &str) -> Option<PollShape> {
        let (tasks, sites) = match workload {
            "polls" => (POLL_TASKS, 1),
            "polls-1k" => (1_000, SPAWN_SITES),
            "polls-100k" => (100_000, SPAWN_SITES),
            _ => return None,
        };
        Some(PollShape { tasks, sites })
    }
}

/// `shape.tasks` tasks, each `yields` yield_now polls (or until `stop`); returns polls.
pub async fn polls(s: &Ctx, shape: PollShape, yields: u64, stop: Option<Arc<AtomicBool>>) -> u64 {
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..shape.tasks)
        .map(|i| {
            let count = count.clone();
            let stop = stop.clone();
            spawn_at(
                i % shape.sites,
                instrument_task(s, async move {
                    let mut n = 0;
                    while n < yields {
                        tokio::task::yield_now().await;
                        n += 1;
                        // Often enough that 100,000 tasks see the stop soon.
                        if n % 16 == 0 && stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                            break;
                        }
                    }
                    count.fetch_add(n + 1, Ordering::Relaxed);
                }),
            )
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    count.load(Ordering::Relaxed)
}

pub type Server = mpsc::Sender<(u64, oneshot::Sender<u64>)>;

/// The downstream the requests talk to: a task answering on a oneshot.
pub fn spawn_server() -> Server {
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
    tokio::spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            let _ = reply.send(v.wrapping_mul(31));
        }
    });
    tx
}

/// One request: a root span around an mpsc + oneshot round trip, a yield, a
/// little compute and a spawned child task (in the request's span).
pub async fn request(s: &Ctx, server: &Server, i: u64, slow: Option<Duration>) {
    let span = tracing::info_span!("request", request.id = i);
    let server = server.clone();
    let fut = async move {
        let (tx, rx) = oneshot::channel();
        server.send((i, tx)).await.expect("server");
        let v = rx.await.expect("reply");
        tokio::task::yield_now().await;
        let x = compute(v);
        let child = tokio::spawn(async move { compute(x) }.in_current_span());
        std::hint::black_box(child.await.expect("child"));
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
    }
    .instrument(span);
    match &s.task_monitor {
        Some(m) => m.instrument(fut).await,
        None => fut.await,
    }
}

/// `clients` loops of sequential requests until `stop` (or `per_client` each).
pub async fn requests(
    s: &Ctx,
    clients: u64,
    per_client: u64,
    stop: Option<Arc<AtomicBool>>,
) -> u64 {
    let server = spawn_server();
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (s, server, count, stop) = (s.clone(), server.clone(), count.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while n < per_client {
                    request(&s, &server, c << 32 | n, None).await;
                    n += 1;
                    if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                        break;
                    }
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.await.expect("client");
    }
    count.load(Ordering::Relaxed)
}

/// Runs `f` with a stop flag raised after `secs`; returns (result, wall, cpu).
pub fn timed<T>(
    rt: &tokio::runtime::Runtime,
    secs: f64,
    f: impl AsyncFnOnce(Arc<AtomicBool>) -> T,
) -> (T, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let d = Duration::from_secs_f64(secs);
    std::thread::spawn(move || {
        std::thread::sleep(d);
        st.store(true, Ordering::Relaxed);
    });
    let (w0, c0) = (Instant::now(), process_cpu());
    let r = rt.block_on(f(stop));
    (r, w0.elapsed(), process_cpu() - c0)
}

pub struct HttpResult {
    pub requests: u64,
    pub wall: Duration,
    pub latencies_us: Vec<u32>,
}

/// The service's one endpoint: a little compute, a yield (a downstream
/// call's await), a small body.
async fn item(
    axum::extract::State(s): axum::extract::State<Ctx>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> String {
    let fut = async move {
        let x = compute(id);
        tokio::task::yield_now().await;
        format!("ok {x}\n")
    };
    match &s.task_monitor {
        Some(m) => m.instrument(fut).await,
        None => fut.await,
    }
}

/// The service as the ecosystem writes one: an axum `Router` with
/// tower-http's `TraceLayer` making each request's span (at INFO, as a
/// service that wants its request spans under an `info` filter sets it).
fn router(s: &Ctx) -> axum::Router {
    use tower_http::trace::{DefaultMakeSpan, TraceLayer};
    axum::Router::new()
        .route("/api/items/{id}", axum::routing::get(item))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)),
        )
        .with_state(s.clone())
}

/// An axum service (`axum::serve`, tower-http's `TraceLayer`) on the measured
/// runtime, a load generator of `HTTP_CONNECTIONS` keep-alive connections on a
/// thread and runtime of its own.
pub fn http(rt: &tokio::runtime::Runtime, s: &Ctx, secs: f64) -> HttpResult {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(s);
    rt.spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });
    let warmup = Duration::from_millis(300);
    let run = Duration::from_secs_f64(secs);
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client rt");
        rt.block_on(async move {
            let start = Instant::now();
            let (measure_from, end) = (start + warmup, start + warmup + run);
            let handles: Vec<_> = (0..HTTP_CONNECTIONS)
                .map(|_| {
                    tokio::spawn(async move {
                        use http_body_util::BodyExt;
                        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                        let _ = stream.set_nodelay(true);
                        let (mut sender, conn) = hyper::client::conn::http1::handshake(
                            hyper_util::rt::TokioIo::new(stream),
                        )
                        .await
                        .expect("handshake");
                        tokio::spawn(conn);
                        let mut lat = Vec::new();
                        loop {
                            let t0 = Instant::now();
                            if t0 >= end {
                                break;
                            }
                            let req = hyper::Request::get("/api/items/42")
                                .header("host", "127.0.0.1")
                                .body(http_body_util::Empty::<bytes::Bytes>::new())
                                .expect("request");
                            let resp = sender.send_request(req).await.expect("send");
                            let _ = resp.into_body().collect().await.expect("body");
                            if t0 >= measure_from {
                                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            }
                        }
                        lat
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.expect("client task"));
            }
            all
        })
    });
    let mut latencies_us = client.join().expect("client thread");
    latencies_us.sort_unstable();
    HttpResult {
        requests: latencies_us.len() as u64,
        wall: run,
        latencies_us,
    }
}

/// `threads` threads open and close root spans (requests, to the
/// recorder) for `secs`: spans opened, wall time, process CPU time.
pub fn opens(threads: usize, secs: f64) -> (u64, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let (t0, cpu0) = (Instant::now(), process_cpu());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, total) = (stop.clone(), total.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        let _span = tracing::info_span!("GET /open").entered();
                    }
                    n += 1000;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("thread");
    }
    (
        total.load(Ordering::Relaxed),
        t0.elapsed(),
        process_cpu().saturating_sub(cpu0),
    )
}

pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
