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

/// `tasks` tasks, each `yields` yield_now polls (or until `stop`); returns polls.
pub async fn polls(s: &Ctx, tasks: u64, yields: u64, stop: Option<Arc<AtomicBool>>) -> u64 {
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let count = count.clone();
            let stop = stop.clone();
            tokio::spawn(instrument_task(s, async move {
                let mut n = 0;
                while n < yields {
                    tokio::task::yield_now().await;
                    n += 1;
                    if n % 256 == 0 && stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                        break;
                    }
                }
                count.fetch_add(n + 1, Ordering::Relaxed);
            }))
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

async fn handle(
    s: Ctx,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    // The span tower-http's TraceLayer makes by default (DefaultMakeSpan).
    let span = tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %req.uri(),
        version = ?req.version(),
    );
    let fut = async move {
        let x = compute(req.uri().path().len() as u64);
        tokio::task::yield_now().await;
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
            "ok {x}\n"
        ))))
    }
    .instrument(span);
    let resp = match &s.task_monitor {
        Some(m) => m.instrument(fut).await,
        None => fut.await,
    };
    Ok(resp)
}

/// A hyper HTTP/1 server on the measured runtime, a load generator of
/// `HTTP_CONNECTIONS` keep-alive connections on a thread and runtime of its own.
pub fn http(rt: &tokio::runtime::Runtime, s: &Ctx, secs: f64) -> HttpResult {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s2 = s.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s3 = s2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(s3.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
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
