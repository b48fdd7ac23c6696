//! tokio-blackbox's overhead side by side with what users would run instead
//! (issue 9). One binary, a variant argument:
//!
//! ```text
//! blackbox-bench run <variant> <polls|polls-1k|polls-100k|requests|http|opens> [--secs S]   one measurement, one RESULT line
//! blackbox-bench count <variant> <polls|polls-1k|requests|clients> [--n N] the fixed workload for callgrind
//! blackbox-bench bytes <blackbox|otel-all|dial9> [--secs S]       bytes exported at 1,000 req/s, 0.1% slow
//! blackbox-bench compare [--rounds R] [--secs S] [--console-bin PATH] [--out FILE]
//! ```
//!
//! Variants: plain, registry, blackbox, blackbox-storm, tokio-metrics,
//! otel-all, dial9, console (only in a `--features console` build).
//! `tools/bench.sh` builds both binaries and runs `compare`; `tools/bench.sh
//! --ci` counts instructions under callgrind against `bench/baseline.toml`.

mod compare;
mod receiver;
mod variants;
mod workloads;

use std::time::{Duration, Instant};

use variants::{Setup, Variant, setup};

const WORKERS: usize = 2;

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn usage() -> ! {
    eprintln!(
        "usage: blackbox-bench run <variant> <polls|polls-1k|polls-100k|requests|http|opens> [--secs S]\n       \
         blackbox-bench count <variant> <polls|polls-1k|requests|clients> [--n N]\n       \
         blackbox-bench bytes <blackbox|otel-all|dial9> [--secs S]\n       \
         blackbox-bench compare [--rounds R] [--secs S] [--console-bin PATH] [--out FILE]\n\
         variants: plain registry blackbox blackbox-storm tokio-metrics otel-all dial9 console"
    );
    std::process::exit(2)
}

fn variant_arg(args: &[String]) -> Variant {
    args.get(2)
        .and_then(|v| Variant::parse(v))
        .unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => {
            let v = variant_arg(&args);
            let w = args.get(3).cloned().unwrap_or_else(|| usage());
            run(v, &w, flag(&args, "--secs", 3.0));
        }
        Some("count") => {
            let v = variant_arg(&args);
            let w = args.get(3).cloned().unwrap_or_else(|| usage());
            count(v, &w, flag(&args, "--n", 20_000));
        }
        Some("bytes") => bytes(variant_arg(&args), flag(&args, "--secs", 10.0)),
        Some("compare") => compare::compare(&args),
        _ => usage(),
    }
}

/// What a variant exported or wrote during the run, and its buffer memory.
fn exported(s: &Setup) -> (u64, u64, usize) {
    let (mut bytes, mut spans) = (0, 0);
    if let Some(r) = &s.receiver {
        bytes = r.bytes();
        spans = r.spans();
    }
    if let Some(d) = &s.dial9_dir {
        bytes = variants::dir_bytes(d);
    }
    let buffer = s
        .blackbox
        .as_ref()
        .map_or(0, variants::blackbox_buffer_bytes);
    (bytes, spans, buffer)
}

/// One measurement: prints `RESULT key=value ...`. `cost_ns` is the cost of
/// one unit: CPU ns of the whole process per poll / per request, and for
/// http wall ns per request (1 / throughput).
fn run(v: Variant, workload: &str, secs: f64) {
    // `BENCH_WORKERS` (default 2): one worker takes the cores' shared cache
    // lines out of the comparison.
    let workers = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .filter(|&w| w > 0)
        .unwrap_or(WORKERS);
    let s = setup(v, workers, None);
    let ctx = s.ctx.clone();
    let mut line = format!("RESULT variant={} workload={workload}", v.name());
    match workload {
        w if let Some(shape) = workloads::PollShape::of(w) => {
            let (n, wall, cpu) = workloads::timed(&s.rt, secs, async |stop| {
                workloads::polls(&ctx, shape, u64::MAX, Some(stop)).await
            });
            line += &format!(
                " units={n} cost_ns={:.2} wall_ns={:.2}",
                cpu.as_nanos() as f64 / n as f64,
                wall.as_nanos() as f64 / n as f64
            );
        }
        "requests" => {
            let (n, wall, cpu) = workloads::timed(&s.rt, secs, async |stop| {
                workloads::requests(&ctx, workloads::REQUEST_CLIENTS, u64::MAX, Some(stop)).await
            });
            line += &format!(
                " units={n} cost_ns={:.1} wall_ns={:.1}",
                cpu.as_nanos() as f64 / n as f64,
                wall.as_nanos() as f64 / n as f64
            );
        }
        "opens" => {
            // Request spans opened and closed back to back on `workers`
            // plain threads at once: what every request open shares with
            // the other threads shows here.
            let (n, wall, cpu) = workloads::opens(workers, secs);
            line += &format!(
                " units={n} cost_ns={:.1} wall_ns={:.1}",
                cpu.as_nanos() as f64 / n as f64,
                wall.as_nanos() as f64 / n as f64
            );
        }
        "http" => {
            let (cpu0, t0) = (workloads::process_cpu(), Instant::now());
            let r = workloads::http(&s.rt, &ctx, secs);
            // Process CPU (service, load generator, recorder) over the whole
            // run, warm-up included, scaled to the measured part.
            let cpu = (workloads::process_cpu() - cpu0).as_nanos() as f64 * r.wall.as_secs_f64()
                / t0.elapsed().as_secs_f64();
            let l = &r.latencies_us;
            line += &format!(
                " units={} cost_ns={:.1} cpu_ns={:.1} rps={:.0} p50_us={} p99_us={} p999_us={}",
                r.requests,
                r.wall.as_nanos() as f64 / r.requests.max(1) as f64,
                cpu / r.requests.max(1) as f64,
                r.requests as f64 / r.wall.as_secs_f64(),
                workloads::percentile(l, 0.5),
                workloads::percentile(l, 0.99),
                workloads::percentile(l, 0.999),
            );
        }
        _ => usage(),
    }
    if let Some(bb) = &s.blackbox {
        // Let the export thread finish what it started (storm) before counting.
        bb.flush(Duration::from_secs(2));
    }
    let (bytes, spans, buffer) = exported(&s);
    line += &format!(
        " rss={} bytes={bytes} spans={spans} buffer={buffer}",
        workloads::peak_rss()
    );
    if let Some(bb) = &s.blackbox {
        let st = bb.stats();
        line += &format!(
            " captures={} windows={} shed={} skipped={} events={} recorder_threads_cpu_ms={}",
            st.captures,
            st.windows_exported,
            st.windows_shed,
            st.requests_skipped,
            st.events_recorded,
            // The recorder's own threads (not this program's main thread,
            // `blackbox-bench`, which a prefix of "blackbox-" would match).
            ["blackbox-captu", "blackbox-expor", "blackbox-metri"]
                .iter()
                .map(|t| workloads::threads_cpu_ms(t))
                .sum::<u64>()
        );
        line += &format!(
            " capture_cpu_ms={} export_cpu_ms={}",
            workloads::threads_cpu_ms("blackbox-captu"),
            workloads::threads_cpu_ms("blackbox-expor")
        );
    }
    println!("{line}");
    remove_trace_files(&s);
    // Exit without tearing down subscribers, runtimes and exporters: their
    // shutdown is not what is measured.
    std::process::exit(0);
}

/// Removes what a run wrote to disk once it is counted: dial9 writes
/// hundreds of MiB a run, and a full comparison left gigabytes in the
/// temporary directory.
fn remove_trace_files(s: &Setup) {
    if let Some(d) = &s.dial9_dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The region callgrind collects in (`--toggle-collect=bench_measured_region`):
/// the workload on a current-thread runtime, so every poll, hook and layer call
/// runs on this thread, and the variant's own background threads (export,
/// flush) stay out of the count.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn bench_measured_region(s: &Setup, workload: &str, n: u64) -> u64 {
    let ctx = s.ctx.clone();
    match workload {
        "polls" => s.rt.block_on(workloads::polls(
            &ctx,
            workloads::PollShape { tasks: 4, sites: 1 },
            n,
            None,
        )),
        // 1,000 tasks from 8 spawn sites, `n` polls in all: what a per-task
        // or per-location cache costs once it stops hitting.
        "polls-1k" => s.rt.block_on(workloads::polls(
            &ctx,
            workloads::PollShape::of("polls-1k").expect("shape"),
            n / 1_000,
            None,
        )),
        // The timed workload's clients (spawned tasks, so every request
        // span is entered inside a task's poll), on this one thread.
        "clients" => s.rt.block_on(workloads::requests(
            &ctx,
            workloads::REQUEST_CLIENTS,
            n / workloads::REQUEST_CLIENTS,
            None,
        )),
        // Requests driven by `block_on` itself: their spans are entered
        // outside any task's poll (with a clock reading each).
        "requests" => s.rt.block_on(async {
            let server = workloads::spawn_server();
            for i in 0..n {
                workloads::request(&ctx, &server, i, None).await;
            }
            n
        }),
        _ => usage(),
    }
}

fn count(v: Variant, workload: &str, n: u64) {
    // Every variant counts in a process with more than one thread, as every
    // service (and every timed run here, on 2 workers) is: libc takes
    // single-thread shortcuts (malloc without its arena lock, syscalls
    // without the cancellation wrappers) while a process has one thread, and
    // a variant that starts a thread of its own (the recorder's capture
    // thread) would be charged for libc losing them. An idle thread turns
    // them off for all alike; it stays parked, outside the region.
    let _idle = std::thread::Builder::new()
        .name("bench-idle".into())
        .spawn(std::thread::park)
        .expect("idle thread");
    let s = setup(v, 0, None);
    // Warm up outside the region: first-touch allocations, lazy statics, rings.
    bench_warmup(&s, workload);
    let units = bench_measured_region(&s, workload, n);
    println!(
        "COUNT variant={} workload={workload} units={units}",
        v.name()
    );
    std::process::exit(0);
}

#[inline(never)]
fn bench_warmup(s: &Setup, workload: &str) {
    let ctx = s.ctx.clone();
    match workload {
        "polls" | "polls-1k" => {
            s.rt.block_on(workloads::polls(
                &ctx,
                workloads::PollShape::of(workload).expect("shape"),
                100,
                None,
            ));
        }
        _ => s.rt.block_on(async {
            let server = workloads::spawn_server();
            for i in 0..1000 {
                workloads::request(&ctx, &server, i, None).await;
            }
        }),
    }
}

/// Bytes exported (blackbox, otel-all: received by the local OTLP receiver,
/// decoded and as sent; dial9: written to its trace directory) at 1,000
/// requests/s with 0.1% of them slow (100 ms against a 50 ms threshold),
/// scaled to an hour.
fn bytes(v: Variant, secs: f64) {
    let threshold = Duration::from_millis(50);
    let mut s = setup(
        if v == Variant::Blackbox {
            Variant::BlackboxStorm // the storm setup exports; threshold set below
        } else {
            v
        },
        WORKERS,
        Some(threshold),
    );
    let ctx = s.ctx.clone();
    let total = (secs * 1000.0) as u64;
    let t0 = Instant::now();
    s.rt.block_on(async {
        let server = workloads::spawn_server();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut handles = Vec::with_capacity(total as usize);
        for i in 0..total {
            tick.tick().await;
            let (ctx, server) = (ctx.clone(), server.clone());
            let slow = (i % 1000 == 500).then_some(Duration::from_millis(100));
            handles.push(tokio::spawn(async move {
                workloads::request(&ctx, &server, i, slow).await
            }));
        }
        for h in handles {
            h.await.expect("request");
        }
    });
    let elapsed = t0.elapsed();
    if let Some(bb) = &s.blackbox {
        bb.flush(Duration::from_secs(10));
    }
    if let Some(p) = &s.otel {
        let _ = p.force_flush();
    }
    let rt = std::mem::replace(
        &mut s.rt,
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt"),
    );
    rt.shutdown_timeout(Duration::from_secs(5));
    // dial9 writes its buffers out when the recorder drops.
    s.keep.clear();
    std::thread::sleep(Duration::from_millis(500));
    let (bytes, spans, _) = exported(&s);
    let per_hour = bytes as f64 * 3600.0 / elapsed.as_secs_f64();
    let name = if v == Variant::Blackbox {
        "blackbox"
    } else {
        v.name()
    };
    // Over OTLP/gRPC: the bytes as sent (`wire_bytes`, compressed when the
    // exporter compresses) beside the decoded protobuf (`bytes`), and per
    // window (the trace of each `blackbox.window` span) their medians.
    let wire = s.receiver.as_ref().map(|r| {
        let (median_wire, median_decoded) = r.median_window_bytes();
        format!(
            " wire_bytes={} wire_bytes_per_hour={:.0} windows={} median_window_wire_bytes={median_wire} median_window_bytes={median_decoded}",
            r.wire_bytes(),
            r.wire_bytes() as f64 * 3600.0 / elapsed.as_secs_f64(),
            r.windows()
        )
    });
    println!(
        "RESULT variant={name} workload=bytes units={total} secs={:.1} bytes={bytes} spans={spans} bytes_per_hour={per_hour:.0} slow={}{}",
        elapsed.as_secs_f64(),
        total / 1000,
        wire.unwrap_or_default()
    );
    remove_trace_files(&s);
    std::process::exit(0);
}
