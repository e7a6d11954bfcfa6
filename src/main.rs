//! The `meridian-pipeline` command line.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use meridian_pipeline::dedup::{StalePolicy, MAX_WINDOW};
use meridian_pipeline::gen::{self, GenConfig};
use meridian_pipeline::pipeline::{Config, Summary, DEFAULT_BATCH_SIZE, DEFAULT_MAX_SAT};
use meridian_pipeline::{process_stream, DEFAULT_WINDOW};

/// Meridian: decode, validate, deduplicate, sort and forward satellite
/// telemetry frames from several ground stations.
#[derive(Debug, Parser)]
#[command(name = "meridian-pipeline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a capture file through the pipeline: frames to --out, summary to stderr.
    Process(ProcessArgs),
    /// Write a deterministic synthetic ground-station capture.
    Gen(GenArgs),
}

/// Options shared by every command that runs the pipeline.
#[derive(Debug, Args, Clone)]
struct PipelineArgs {
    /// Frames per batch; dedup and sorting work within a batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    batch_size: u64,
    /// Cross-batch dedup window per satellite, in sequence numbers (at most 16777216).
    #[arg(long, default_value_t = DEFAULT_WINDOW, value_name = "W",
          value_parser = clap::value_parser!(u64).range(0..=MAX_WINDOW))]
    window: u64,
    /// Highest valid satellite id; frames above it are invalid.
    #[arg(long, default_value_t = DEFAULT_MAX_SAT, value_name = "N")]
    max_sat: u32,
    /// Longest accepted payload in bytes (at most 65535); longer headers are bad headers.
    #[arg(long, default_value_t = meridian_pipeline::wire::DEFAULT_MAX_PAYLOAD, value_name = "N")]
    max_payload: u16,
    /// What to do with stale frames (older than the window): forward or drop.
    #[arg(long, value_enum, default_value_t = Stale::Forward)]
    stale: Stale,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Stale {
    Forward,
    Drop,
}

impl PipelineArgs {
    fn config(&self) -> Config {
        Config {
            batch_size: self.batch_size as usize,
            window: self.window,
            max_sat: self.max_sat,
            max_payload: self.max_payload,
            stale: match self.stale {
                Stale::Forward => StalePolicy::Forward,
                Stale::Drop => StalePolicy::Drop,
            },
        }
    }
}

#[derive(Debug, Args)]
struct ProcessArgs {
    /// Input capture, or - for standard input.
    #[arg(long = "in", value_name = "PATH")]
    input: String,
    /// Where forwarded frames go, or - for standard output.
    #[arg(long, value_name = "PATH")]
    out: String,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Print the summary as one JSON object (the last line of stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Output file, or - for standard output.
    #[arg(long, value_name = "PATH")]
    out: String,
    #[command(flatten)]
    workload: WorkloadArgs,
}

/// The synthetic workload's shape.
#[derive(Debug, Args, Clone)]
struct WorkloadArgs {
    /// Frames in the capture, copies included.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    frames: u64,
    /// Number of satellites.
    #[arg(long, default_value_t = 48, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    sats: u32,
    /// Number of ground stations (overlapping coverage makes copies).
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    stations: u32,
    /// RNG seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 1, value_name = "S")]
    seed: u64,
    /// Chance that a received copy is invalid (corrupt or out-of-range sat).
    #[arg(long, default_value_t = 0.01, value_name = "R", value_parser = parse_rate)]
    invalid_rate: f64,
    /// Payload length range in bytes, MIN..MAX (or one length).
    #[arg(long, default_value = "16..128", value_name = "MIN..MAX", value_parser = parse_payload)]
    payload: (u16, u16),
}

impl WorkloadArgs {
    fn config(&self) -> GenConfig {
        GenConfig {
            frames: self.frames,
            sats: self.sats,
            stations: self.stations,
            seed: self.seed,
            invalid_rate: self.invalid_rate,
            payload_min: self.payload.0,
            payload_max: self.payload.1,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not between 0 and 1"))
    }
}

fn parse_payload(s: &str) -> Result<(u16, u16), String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| format!("'{t}' is not a length from 0 to 65535"))
    };
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
        None => (num(s)?, num(s)?),
    };
    if lo > hi {
        return Err(format!("MIN {lo} is above MAX {hi}"));
    }
    Ok((lo, hi))
}

/// An error for the user: its message and the exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad arguments or unusable files: exit 2.
    fn usage(message: String) -> Failure {
        Failure { code: 2, message }
    }

    /// A failure while running: exit 1.
    fn runtime(what: &str, e: io::Error) -> Failure {
        Failure {
            code: 1,
            message: format!("{what}: {e}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line naming the problem, not clap's usage block.
            let text = e.render().to_string();
            // Clap's first paragraph, folded onto one line.
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", first.join(" "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Process(args)) => process(&args),
        Some(Command::Gen(args)) => generate(&args),
        None => demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn open_input(path: &str) -> Result<Box<dyn Read>, Failure> {
    if path == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file =
        File::open(path).map_err(|e| Failure::usage(format!("cannot open input '{path}': {e}")))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Failure::usage(format!(
            "cannot read input '{path}': it is a directory"
        )));
    }
    Ok(Box::new(file))
}

fn open_output(path: &str) -> Result<Box<dyn Write>, Failure> {
    const CAP: usize = 1 << 20;
    if path == "-" {
        return Ok(Box::new(BufWriter::with_capacity(CAP, io::stdout().lock())));
    }
    let file = File::create(path)
        .map_err(|e| Failure::usage(format!("cannot create output '{path}': {e}")))?;
    Ok(Box::new(BufWriter::with_capacity(CAP, file)))
}

fn process(args: &ProcessArgs) -> Result<(), Failure> {
    let input = open_input(&args.input)?;
    let mut out = open_output(&args.out)?;
    let summary = process_stream(
        BufReader::with_capacity(0, input),
        &mut out,
        args.pipeline.config(),
    )
    .map_err(|e| Failure::runtime("processing failed", e))?;
    print_summary(&summary, args.json);
    Ok(())
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        eprintln!(
            "{}",
            serde_json::to_string(s).expect("a summary serialises")
        );
        return;
    }
    eprintln!(
        "decoded {} frames from {} bytes ({} skipped: {} bad headers, {} CRC errors, {} truncated)",
        s.frames_decoded, s.input_bytes, s.skipped_bytes, s.bad_header, s.crc_errors, s.truncated
    );
    eprintln!(
        "forwarded {} frames ({} bytes) in {} batches; {} invalid, {} duplicates, {} stale, {} late",
        s.forwarded, s.forwarded_bytes, s.batches, s.invalid, s.duplicates, s.stale, s.late
    );
}

fn generate(args: &GenArgs) -> Result<(), Failure> {
    let bytes = gen::capture(&args.workload.config());
    let mut out = open_output(&args.out)?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::runtime("writing the capture failed", e))?;
    eprintln!("wrote {} bytes of capture to {}", bytes.len(), args.out);
    Ok(())
}

/// With no command: generate the default workload and run it through the
/// pipeline in memory.
fn demo() -> Result<(), Failure> {
    let cfg = GenConfig::default();
    let data = gen::capture(&cfg);
    let mut sink = io::sink();
    let start = std::time::Instant::now();
    let summary = process_stream(&data[..], &mut sink, Config::default())
        .map_err(|e| Failure::runtime("processing failed", e))?;
    let secs = start.elapsed().as_secs_f64();
    print_summary(&summary, false);
    eprintln!("{:.0} frames/s", summary.frames_decoded as f64 / secs);
    Ok(())
}
