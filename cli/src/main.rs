//! `blackbox`: look at the dump and capture files of tokio-blackbox.
//!
//! Each subcommand streams its input through [`scan::scan`] and renders what
//! it sees; none holds a whole file in memory. Bad input exits with status 2
//! and one line naming the file, the byte offset and what was expected.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod fmt;
mod html;
mod merge;
mod otlp_json;
mod perfetto;
mod replay;
mod scan;
mod select;
mod summary;
mod timeline;
mod verdict;

use scan::ReadError;

/// Look at the dump and capture files tokio-blackbox writes: after a crash, on
/// a signal, or when no OTLP endpoint was configured (binary `.bbx` files and
/// OTLP JSON `traces.otlp.jsonl`), or replay them to an OTLP endpoint.
#[derive(Debug, Parser)]
#[command(name = "blackbox", version, max_term_width = 100)]
#[deny(missing_docs)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
enum Command {
    /// What a file holds: time span, threads, tasks, requests, which were
    /// slow, events lost to overwrite, and per slow request the tasks that held
    /// workers longest.
    Summary {
        /// A dump (`blackbox.dump()`), a capture file (`DirSink`) or an OTLP
        /// JSON capture file (`traces.otlp.jsonl`, `JsonFileSink`).
        file: PathBuf,
    },
    /// A timeline in the terminal: one lane per worker, polls drawn to scale,
    /// long polls and the request's own tasks marked.
    ///
    /// Colour is used when stdout is a terminal and `NO_COLOR` is not set.
    Timeline {
        /// A dump, a capture file or an OTLP JSON capture file.
        file: PathBuf,
        #[command(flatten)]
        range: select::RangeArgs,
        /// Width of the drawing in columns.
        #[arg(long, short, default_value_t = 100, value_parser = clap::value_parser!(u16).range(10..=1000))]
        width: u16,
    },
    /// One self-contained HTML page with an interactive timeline: lanes per
    /// worker and per task, zoom and pan, details on hover.
    ///
    /// The page fetches nothing from the network and works from `file://`.
    Html {
        /// A dump, a capture file or an OTLP JSON capture file.
        file: PathBuf,
        #[command(flatten)]
        range: select::RangeArgs,
        /// Where to write the page.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Chrome trace-event JSON for ui.perfetto.dev and chrome://tracing: a
    /// track per worker, a slice per poll, flow arrows from spawn to first
    /// poll, and the slow requests on their own track.
    Perfetto {
        /// A dump, a capture file or an OTLP JSON capture file.
        file: PathBuf,
        #[command(flatten)]
        range: select::RangeArgs,
        /// Where to write the JSON.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Send a file's windows to an OTLP endpoint (Jaeger, Tempo, a
    /// Collector), in the traces of the slow requests they recorded.
    ///
    /// A capture file is one window. A dump becomes one window per slow
    /// request, cut to [start - before, end + after] (or, with --all, one
    /// window under a new trace). An OTLP JSON file is resent as it is, one
    /// export request per line. Exits with 1 when the endpoint cannot be reached.
    Replay(replay::ReplayArgs),
}

/// A failure and the exit status it earns.
#[derive(Debug)]
enum Failure {
    /// The input could not be read or is not a valid file: status 2.
    Input(PathBuf, ReadError),
    /// The arguments do not fit the input (an unknown trace id): status 2.
    Usage(String),
    /// Anything else, such as an output that cannot be written: status 1.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

/// Attaches the input file's name to a read error.
pub(crate) trait InputContext<T> {
    fn input(self, path: &Path) -> Result<T, Failure>;
}

impl<T, E: Into<ReadError>> InputContext<T> for Result<T, E> {
    fn input(self, path: &Path) -> Result<T, Failure> {
        self.map_err(|e| Failure::Input(path.to_path_buf(), e.into()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(path, e)) => {
            eprintln!("blackbox: {}: {e}", path.display());
            ExitCode::from(2)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("blackbox: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("blackbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Summary { file } => {
            let mut s = summary::Summary::default();
            let meta = scan::scan(&file, &mut s).input(&file)?;
            let slowest = verdict::slowest(&meta, verdict::SHOWN);
            s.verdicts = verdict::explain(&file, &meta, &slowest).input(&file)?;
            print(&s.render(&file.display().to_string()))
        }
        Command::Timeline { file, range, width } => {
            let text = timeline::run(&file, &range, usize::from(width), fmt::colour_stdout())?;
            print(&text)
        }
        Command::Html {
            file,
            range,
            output,
        } => {
            let range = resolve(&file, &range)?;
            let mut out = create(&output)?;
            html::run(&file, range, &mut out)?;
            finish(out, &output)
        }
        Command::Perfetto {
            file,
            range,
            output,
        } => {
            let range = resolve(&file, &range)?;
            let mut out = create(&output)?;
            perfetto::run(&file, range, &mut out)?;
            finish(out, &output)
        }
        Command::Replay(args) => replay::run(&args),
    }
}

/// Reads the head of `file` and resolves the range arguments against it,
/// before any output file is created.
fn resolve(file: &Path, args: &select::RangeArgs) -> Result<select::Range, Failure> {
    let meta = scan::read_meta(file).input(file)?;
    args.resolve(&meta)
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`blackbox summary f | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.context("writing to stdout")?),
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, Failure> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 16, file))
}

fn finish(out: BufWriter<File>, path: &Path) -> Result<(), Failure> {
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
