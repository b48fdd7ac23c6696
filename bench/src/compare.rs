//! `compare`: every variant against plain, interleaved (plain, variant,
//! plain, variant, … each run its own process), then the table and
//! BENCHMARKS.md.

use std::collections::BTreeMap;
use std::process::Command;

use crate::flag;

type Fields = BTreeMap<String, String>;

/// One column of the comparison: a label, the binary and the variant it runs.
struct Runner {
    label: String,
    bin: String,
    variant: &'static str,
}

fn run_once(bin: &str, args: &[&str]) -> Fields {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT ")) else {
        eprintln!(
            "{bin} {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return Fields::new();
    };
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &Fields, k: &str) -> Option<f64> {
    f.get(k).and_then(|v| v.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

#[derive(Default)]
struct Cell {
    ratios: Vec<f64>,
    added_ns: Vec<f64>,
    cost: Vec<f64>,
    plain_cost: Vec<f64>,
    rss: Vec<f64>,
    plain_rss: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    rps: Vec<f64>,
    bytes: Vec<f64>,
    /// CPU of the recorder's own threads, as a share of one core.
    recorder_share: Vec<f64>,
    shed: Vec<f64>,
    buffer: f64,
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn compare(args: &[String]) {
    let rounds: usize = flag(args, "--rounds", 3);
    let secs: f64 = flag(args, "--secs", 3.0);
    let bytes_secs: f64 = flag(args, "--bytes-secs", 10.0);
    let out: String = flag(args, "--out", "BENCHMARKS.md".to_string());
    let console_bin: String = flag(args, "--console-bin", String::new());
    let callgrind: String = flag(args, "--callgrind", String::new());
    let command: String = flag(args, "--command", "blackbox-bench compare".to_string());
    let me = std::env::current_exe()
        .expect("current exe")
        .display()
        .to_string();
    let mut runners: Vec<Runner> = [
        "registry",
        "registry-layer",
        "hooks-only",
        "blackbox",
        "blackbox-storm",
        "tokio-metrics",
        "otel-all",
        "dial9",
    ]
    .into_iter()
    .map(|v| Runner {
        label: v.to_string(),
        bin: me.clone(),
        variant: v,
    })
    .collect();
    if !console_bin.is_empty() {
        runners.push(Runner {
            label: "plain, tokio `tracing` on".into(),
            bin: console_bin.clone(),
            variant: "plain",
        });
        runners.push(Runner {
            label: "console".into(),
            bin: console_bin.clone(),
            variant: "console",
        });
    }
    let workloads = ["polls", "polls-1k", "polls-100k", "requests", "http"];
    let index = |name: &str| {
        workloads
            .iter()
            .position(|w| *w == name)
            .unwrap_or(usize::MAX)
    };
    let secs_s = format!("{secs}");
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    let mut plain_rss: Vec<f64> = Vec::new();
    for round in 0..rounds {
        for (wi, w) in workloads.iter().enumerate() {
            for (ri, r) in runners.iter().enumerate() {
                // A B, then B A the next round, so neither always runs first.
                let run_plain = || run_once(&me, &["run", "plain", w, "--secs", &secs_s]);
                let run_variant = || run_once(&r.bin, &["run", r.variant, w, "--secs", &secs_s]);
                let (p, v) = if round % 2 == 0 {
                    let p = run_plain();
                    (p, run_variant())
                } else {
                    let v = run_variant();
                    (run_plain(), v)
                };
                let (Some(pc), Some(vc)) = (num(&p, "cost_ns"), num(&v, "cost_ns")) else {
                    continue;
                };
                eprintln!(
                    "round {} {w:9} {:28} plain {pc:10.1} ns  variant {vc:10.1} ns  ratio {:.3}",
                    round + 1,
                    r.label,
                    vc / pc
                );
                let c = cells.entry((wi, ri)).or_default();
                c.ratios.push(vc / pc);
                c.added_ns.push(vc - pc);
                c.cost.push(vc);
                c.plain_cost.push(pc);
                c.rss.push(num(&v, "rss").unwrap_or(0.0));
                c.plain_rss.push(num(&p, "rss").unwrap_or(0.0));
                plain_rss.push(num(&p, "rss").unwrap_or(0.0));
                for (k, dst) in [
                    ("p50_us", &mut c.p50),
                    ("p99_us", &mut c.p99),
                    ("p999_us", &mut c.p999),
                    ("rps", &mut c.rps),
                    ("bytes", &mut c.bytes),
                ] {
                    if let Some(x) = num(&v, k) {
                        dst.push(x);
                    }
                }
                c.buffer = num(&v, "buffer").unwrap_or(0.0);
                if let Some(ms) = num(&v, "recorder_threads_cpu_ms") {
                    c.recorder_share.push(ms / 1000.0 / secs);
                    c.shed.push(num(&v, "shed").unwrap_or(0.0));
                }
            }
        }
    }

    // Bytes per hour at 1,000 requests/s with 0.1% slow.
    let mut bytes_rows = Vec::new();
    for v in ["blackbox", "otel-all", "dial9"] {
        let f = run_once(&me, &["bytes", v, "--secs", &format!("{bytes_secs}")]);
        eprintln!("bytes {v}: {f:?}");
        bytes_rows.push((v, f));
    }

    let mut md = String::new();
    md += "# Benchmarks\n\n";
    md += "tokio-blackbox's overhead next to what a service would run instead, on the same\n";
    md += "workloads, in one program (`bench/`, issue 9). Every number is a ratio against\n";
    md += "`plain` (no subscriber, no hooks) from runs interleaved with it (plain, variant,\n";
    md += "then variant, plain the next round; each run is a fresh process).\n\n";
    md += &format!(
        "- Date: {}\n- Machine: {} ({} CPUs), {}, Linux {}\n- Toolchain: {}\n- Command: `{command}` ({rounds} rounds × {secs} s per variant and workload)\n\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
        sh("nproc"),
        sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
        sh("uname -r"),
        sh("rustc -V"),
    );
    md += "These numbers measure the recorder of the commit the script ran on.\n";
    md += "The machine is a shared 2-vCPU VM: wall-time ratios move by several percent\n";
    md += "between runs (see the min–max); the instruction counts below repeat.\n\n";
    md += "## Variants\n\n";
    md += "| variant | what it installs |\n|---|---|\n";
    md += "| plain | nothing: a 2-worker runtime, no subscriber, no hooks |\n";
    md += "| registry | a bare `tracing_subscriber::registry()` as the global subscriber. It never frees a closed span (tokio-rs/tracing#900: the close bookkeeping runs in `Layered`), so it does less per span than any subscriber with a layer, and its memory grows |\n";
    md += "| registry-layer | `registry().with(Identity::new())`: a layer that does nothing, so closed spans are freed; what any subscriber with a layer costs |\n";
    md += "| hooks-only | Tokio's four task hooks set to closures that read the task id and spawn location and do nothing: the floor under any recorder built on Tokio's hooks |\n";
    md += "| blackbox | `install_hooks` + `registry().with(blackbox.layer())`, threshold 1 h (nothing exports) |\n";
    md += "| blackbox-storm | the same, threshold 0: every request is slow (an incident); windows go over OTLP/gRPC to a local receiver, within the default CPU budget (2% of one core over 10 s; windows past it shed and counted) and the default 5 captures/s |\n";
    md += "| tokio-metrics | `RuntimeMonitor` sampled each second, and every task / request future `TaskMonitor::instrument`ed (one monitor shared by all, as its docs do per endpoint) |\n";
    md += "| otel-all | `tracing-opentelemetry` layer, SDK batch span processor exporting every span over OTLP/gRPC to a local receiver |\n";
    md += "| dial9 | dial9-tokio-telemetry 0.5.7 (through `dial9` 0.5.7): `recorder(DiskBuffer …)` + `attach_tokio_runtime` with task tracking, as its `production_use` example (CPU profiling off: its own feature) |\n";
    if !console_bin.is_empty() {
        md += "| plain, tokio `tracing` on | plain, but from the console build: Tokio's `tracing` feature makes every spawn create a span (no subscriber listens) |\n";
        md += "| console | `console_subscriber::ConsoleLayer` on 127.0.0.1, from its own build (`--features console`, target dir `target-bench-console`): Tokio's `tracing` feature is unified into every variant of a build, so it is built separately; its ratios are against the plain of the normal build |\n";
    } else {
        md += "| console | not run (no `--console-bin`) |\n";
    }
    md += "\nWorkloads: **polls**: 8 tasks in `yield_now` loops on 2 workers, cost = CPU time of the\n";
    md += "process per poll (every per-task cache hits). **polls-1k**, **polls-100k**: the same with 1,000\n";
    md += "and 100,000 tasks spawned from 8 call sites. **requests**: 32 clients in loops; each request is a root span around an\n";
    md += "mpsc + oneshot round trip to a server task, a yield, a little compute and a spawned child\n";
    md += "task in the request's span; cost = process CPU per request. **http**: an axum 0.8 service\n";
    md += "(`axum::serve`, default features) on the measured runtime with tower-http's `TraceLayer` (INFO spans)\n";
    md += "making the request spans, one route doing a little compute and a yield; a load generator on its own thread and runtime with 32 keep-alive connections;\n";
    md += "cost = 1 / throughput, latencies from the client. The OTLP receiver runs on its own thread:\n";
    md += "on 2 vCPUs its CPU is taken from the workload too, as a collector on the same host would.\n\n";

    let labels: Vec<String> = runners.iter().map(|r| r.label.clone()).collect();
    for (wi, w) in workloads.iter().enumerate() {
        md += &format!("## {w}\n\n");
        if *w == "http" {
            md += "| variant | cost ratio (median, min–max) | req/s | p50 | p99 | p99.9 | peak RSS (plain) | exported |\n|---|---|---|---|---|---|---|---|\n";
        } else {
            md += "| variant | ratio (median, min–max) | added per unit | cost (plain) | peak RSS (plain) | exported |\n|---|---|---|---|---|---|\n";
        }
        for (ri, label) in labels.iter().enumerate() {
            let Some(c) = cells.get_mut(&(wi, ri)) else {
                md += &format!("| {label} | failed to run | | | | |\n");
                continue;
            };
            let (lo, hi) = c
                .ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let ratio = format!("{:.3}× ({lo:.3}–{hi:.3})", median(&mut c.ratios));
            let rss = format!(
                "{} ({})",
                mib(median(&mut c.rss)),
                mib(median(&mut c.plain_rss))
            );
            let exported = if c.bytes.is_empty() || median(&mut c.bytes) == 0.0 {
                "-".to_string()
            } else {
                format!("{:.0} KiB/run", median(&mut c.bytes) / 1024.0)
            };
            let row = if *w == "http" {
                format!(
                    "| {label} | {ratio} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {rss} | {exported} |\n",
                    median(&mut c.rps),
                    median(&mut c.p50),
                    median(&mut c.p99),
                    median(&mut c.p999)
                )
            } else {
                let unit = if w.starts_with("polls") {
                    "poll"
                } else {
                    "request"
                };
                format!(
                    "| {label} | {ratio} | {:+.1} ns/{unit} | {:.1} ns ({:.1} ns) | {rss} | {exported} |\n",
                    median(&mut c.added_ns),
                    median(&mut c.cost),
                    median(&mut c.plain_cost)
                )
            };
            md += &row;
        }
        md += "\n";
    }
    // blackbox against registry on requests (the issue's target: ≤ 1.15×),
    // and against a registry with a no-op layer (a bare registry never frees
    // a closed span: tokio-rs/tracing#900).
    let bi = labels.iter().position(|l| l == "blackbox");
    for (base, why) in [
        ("registry", ""),
        (
            "registry-layer",
            " (a registry with a no-op layer, which frees closed spans as every real subscriber does)",
        ),
    ] {
        let gi = labels.iter().position(|l| l == base);
        if let (Some(bi), Some(gi)) = (bi, gi)
            && let (Some(b), Some(g)) = (
                cells.get(&(index("requests"), bi)),
                cells.get(&(index("requests"), gi)),
            )
        {
            let (mut b, mut g) = (b.cost.clone(), g.cost.clone());
            md += &format!(
                "On **requests**, blackbox against {base}{why} (medians): {:.3}×.\n\n",
                median(&mut b) / median(&mut g)
            );
        }
    }
    // An incident against the same service with nothing slow.
    let si = labels.iter().position(|l| l == "blackbox-storm");
    for w in ["http", "requests"] {
        if let (Some(bi), Some(si)) = (bi, si)
            && let (Some(b), Some(st)) = (cells.get(&(index(w), bi)), cells.get(&(index(w), si)))
        {
            let (mut b, mut share, mut shed) =
                (b.cost.clone(), st.recorder_share.clone(), st.shed.clone());
            let mut cost = st.cost.clone();
            md += &format!(
                "On **{w}**, every request slow (blackbox-storm) against nothing slow (blackbox), medians: {:.3}×; the recorder's threads used {:.1}% of one core, {:.0} windows shed a run.\n\n",
                median(&mut cost) / median(&mut b),
                100.0 * median(&mut share),
                median(&mut shed)
            );
        }
    }
    if let Some(bi) = bi
        && let Some(c) = cells.get(&(0, bi))
    {
        md += &format!(
            "Peak RSS budget of blackbox: plain + buffer memory ({}) + 2 MiB.\n\n",
            mib(c.buffer)
        );
    }
    md += "## Bytes exported per hour (1,000 requests/s, 0.1% slow)\n\n";
    md += &format!(
        "`blackbox-bench bytes <variant> --secs {bytes_secs}`: requests paced at 1,000/s, one in a thousand sleeps 100 ms\n"
    );
    md +=
        "(threshold 50 ms for blackbox); bytes are OTLP protobuf received by the local receiver\n";
    md += "(blackbox, otel-all) or trace files written (dial9), scaled to one hour.\n\n";
    md += "| variant | bytes per hour | spans per hour | what it keeps |\n|---|---|---|---|\n";
    for (v, f) in &bytes_rows {
        let keeps = match *v {
            "blackbox" => {
                "the window of runtime activity around each slow request (its tasks, polls, workers), in the request's trace; nothing for fast requests"
            }
            "otel-all" => "every request span, fast or slow; no runtime activity",
            _ => {
                "every poll, park/unpark, spawn and terminate of every task, always (binary, on local disk; its docs: 50–100 GB/day for an average service)"
            }
        };
        let (b, spans, secs) = (
            num(f, "bytes").unwrap_or(f64::NAN),
            num(f, "spans").unwrap_or(0.0),
            num(f, "secs").unwrap_or(f64::NAN),
        );
        let sph = if *v == "dial9" {
            "-".to_string()
        } else {
            format!("{:.0}", spans * 3600.0 / secs)
        };
        md += &format!(
            "| {v} | {:.1} MiB ({:.0} bytes in {secs:.1} s) | {sph} | {keeps} |\n",
            num(f, "bytes_per_hour").unwrap_or(f64::NAN) / (1024.0 * 1024.0),
            b
        );
    }
    md += "\n";
    if !callgrind.is_empty() {
        md += "## Instructions (callgrind)\n\n";
        match std::fs::read_to_string(&callgrind) {
            Ok(t) => md += &t,
            Err(e) => md += &format!("(could not read {callgrind}: {e})\n"),
        }
        md += "\n";
    }
    md += "## Against the issue's targets\n\n(Written by hand from the tables above after a run; update it when re-running.)\n";
    std::fs::write(&out, &md).unwrap_or_else(|e| panic!("writing {out}: {e}"));
    println!("{md}");
    eprintln!("wrote {out}");
}
