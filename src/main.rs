//! The `meridian-pipeline` command line.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use meridian_pipeline::alloc_count::CountingAlloc;
use meridian_pipeline::dedup::{StalePolicy, MAX_WINDOW};
use meridian_pipeline::gen::{self, GenConfig};
use meridian_pipeline::layout::Layout;
use meridian_pipeline::pipeline::{Config, Summary, DEFAULT_BATCH_SIZE, DEFAULT_MAX_SAT};
use meridian_pipeline::runner::{self, Limit, Progress, RunOptions, RunReport};
use meridian_pipeline::{process_stream, DEFAULT_WINDOW};

/// Counts allocations so `run` can report them per stage; in steady state
/// there are none, so the counting costs nothing.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

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
    /// Measure throughput on synthetic traffic held in memory (the default command).
    Run(RunArgs),
    /// Run a capture file through the pipeline: frames to --out, summary to stderr.
    Process(ProcessArgs),
    /// Write a deterministic synthetic ground-station capture, or send it as stations over TCP.
    Gen(GenArgs),
    /// Take frames from ground stations over TCP and forward them downstream.
    Serve(ServeArgs),
    /// A checking downstream: count frames, check CRCs and that no key repeats.
    Sink(SinkArgs),
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
#[command(group(clap::ArgGroup::new("dest").required(true).args(["out", "connect"])))]
struct GenArgs {
    /// Output file, or - for standard output.
    #[arg(long, value_name = "PATH")]
    out: Option<String>,
    /// Instead of a file: connect one TCP socket per station to ADDR and send
    /// each station's stream (the same bytes `--out` would interleave).
    #[arg(long, value_name = "ADDR")]
    connect: Option<String>,
    /// With --connect: frames per second per station (default: as fast as possible).
    #[arg(long, value_name = "FRAMES_PER_S", requires = "connect", value_parser = parse_positive)]
    rate: Option<f64>,
    /// Frames in the capture, copies included.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    frames: u64,
    #[command(flatten)]
    workload: WorkloadArgs,
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["forward", "out"])))]
struct ServeArgs {
    /// Address to accept ground-station connections on.
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "ADDR")]
    listen: String,
    /// Forward to the TCP consumer at HOST:PORT (reconnected with backoff).
    #[arg(long, value_name = "HOST:PORT")]
    forward: Option<String>,
    /// Forward into this file instead.
    #[arg(long, value_name = "PATH")]
    out: Option<String>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// A batch closes at the latest this many milliseconds after its first frame.
    #[arg(long, default_value_t = 5, value_name = "D")]
    max_delay_ms: u64,
    /// Station connections beyond this are closed at once (and counted).
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_connections: u64,
    /// Print a stats line to stderr this often.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    stats_interval: Option<f64>,
    /// After SIGINT/SIGTERM: how long connected stations may go on sending,
    /// and how long an absent downstream is retried.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    grace_ms: u64,
    /// The summary as one JSON object, the last line of stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// Address to accept the one downstream connection on.
    #[arg(long, default_value = "127.0.0.1:7701", value_name = "ADDR")]
    listen: String,
    /// Also write the received frames to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<String>,
    /// Take this many connections (1 for a serve downstream; one per station behind a relay).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
    /// The summary as one JSON object, the last line of stderr.
    #[arg(long)]
    json: bool,
}

/// The synthetic workload's shape, shared by `gen` and `run`.
#[derive(Debug, Args, Clone)]
struct WorkloadArgs {
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
    fn config(&self, frames: u64) -> GenConfig {
        GenConfig {
            frames,
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
        Some(Command::Run(args)) => run(&args),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Sink(args)) => sink(&args),
        None => run(&RunArgs::parse_from(["run"])),
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
    if let Some(addr) = &args.connect {
        let sent = meridian_pipeline::net::send::send_stations(
            addr,
            &args.workload.config(args.frames),
            args.rate,
        )
        .map_err(|e| Failure::runtime(&format!("sending to {addr} failed"), e))?;
        eprintln!(
            "sent {sent} bytes from {} stations to {addr}",
            args.workload.stations
        );
        return Ok(());
    }
    let path = args
        .out
        .as_deref()
        .expect("clap requires --out or --connect");
    let bytes = gen::capture(&args.workload.config(args.frames));
    let mut out = open_output(path)?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::runtime("writing the capture failed", e))?;
    eprintln!("wrote {} bytes of capture to {path}", bytes.len());
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<(), Failure> {
    use meridian_pipeline::net::serve::{self, ServeConfig, Target};
    let target = match (&args.forward, &args.out) {
        (Some(addr), _) => Target::Forward(addr.clone()),
        (None, Some(path)) => Target::Out(path.into()),
        (None, None) => unreachable!("clap requires --forward or --out"),
    };
    let cfg = ServeConfig {
        pipeline: args.pipeline.config(),
        target,
        max_delay: std::time::Duration::from_millis(args.max_delay_ms),
        max_connections: args.max_connections as usize,
        stats_interval: args.stats_interval.map(std::time::Duration::from_secs_f64),
        grace: std::time::Duration::from_millis(args.grace_ms),
    };
    let stop = meridian_pipeline::net::Shutdown::on_signals()
        .map_err(|e| Failure::runtime("signal setup failed", e))?;
    let listener = serve::bind(&args.listen)
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::runtime("listener", e))?;
    eprintln!("meridian: listening on {local}");
    let s = serve::serve(listener, &cfg, stop).map_err(|e| Failure::runtime("serve failed", e))?;
    if args.json {
        eprintln!(
            "{}",
            serde_json::to_string(&s).expect("a summary serialises")
        );
    } else {
        print_summary(&s.summary, false);
        eprintln!(
            "connections: {} accepted, {} rejected; downstream: {} reconnects, {} frames resent, {} undelivered",
            s.connections_accepted, s.connections_rejected, s.downstream_reconnects, s.resent_frames, s.unsent_frames
        );
        eprintln!(
            "read-to-forward latency: p50 {} us, p99 {} us, p99.9 {} us ({} frames)",
            s.latency_us.p50, s.latency_us.p99, s.latency_us.p999, s.latency_us.frames
        );
    }
    if s.unsent_frames > 0 {
        return Err(Failure {
            code: 1,
            message: format!("{} frames could not be delivered", s.unsent_frames),
        });
    }
    Ok(())
}

fn sink(args: &SinkArgs) -> Result<(), Failure> {
    let stop = meridian_pipeline::net::Shutdown::on_signals()
        .map_err(|e| Failure::runtime("signal setup failed", e))?;
    let listener = std::net::TcpListener::bind(&args.listen)
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::runtime("listener", e))?;
    eprintln!("sink: listening on {local}");
    let out = args.out.as_deref().map(std::path::Path::new);
    let s = meridian_pipeline::net::sink::sink(listener, out, &stop, args.connections as usize)
        .map_err(|e| Failure::runtime("sink failed", e))?;
    if args.json {
        eprintln!(
            "{}",
            serde_json::to_string(&s).expect("a summary serialises")
        );
    } else {
        eprintln!(
            "sink: {} frames, {} bytes, {} unique keys, {} repeated, {} CRC errors, {} skipped bytes{}",
            s.frames,
            s.bytes,
            s.unique_keys,
            s.repeated_keys,
            s.crc_errors,
            s.skipped_bytes,
            if s.eof { "" } else { " (stopped before end of stream)" }
        );
    }
    Ok(())
}

/// Frames of synthetic capture held in memory by `run` at most; longer runs
/// replay it (with the dedup window reset, so it stays new traffic).
const RUN_CAPTURE_FRAMES: u64 = 1_000_000;

#[derive(Debug, Parser)]
#[command(no_binary_name = false)]
struct RunArgs {
    /// Run for this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", conflicts_with = "frames",
          value_parser = parse_secs)]
    duration: f64,
    /// Run exactly this many frames instead of for a duration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    frames: Option<u64>,
    /// Pipeline layout: soa (the real one), aos (same algorithms over structs), baseline (a first version).
    #[arg(long, value_enum, default_value_t = LayoutArg::Soa)]
    layout: LayoutArg,
    /// Threads; above 1 overlaps decoding the next batch with processing this one (soa only).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Print the report as exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LayoutArg {
    Soa,
    Aos,
    Baseline,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 86400 seconds"))
    }
}

fn run(args: &RunArgs) -> Result<(), Failure> {
    let cfg = args.pipeline.config();
    let layout = match args.layout {
        LayoutArg::Soa => Layout::Soa,
        LayoutArg::Aos => Layout::Aos,
        LayoutArg::Baseline => Layout::Baseline,
    };
    if args.threads > 1 && layout != Layout::Soa {
        return Err(Failure::usage(
            "--threads above 1 is only for --layout soa".into(),
        ));
    }
    let (frames, limit) = match args.frames {
        Some(n) => (n.min(RUN_CAPTURE_FRAMES), Limit::Frames(n)),
        None => (
            RUN_CAPTURE_FRAMES,
            Limit::Duration(std::time::Duration::from_secs_f64(args.duration)),
        ),
    };
    let gen_cfg = args.workload.config(frames);
    if !args.quiet {
        eprintln!("generating {frames} frames of synthetic traffic (not timed)...");
    }
    let data = gen::capture(&gen_cfg);
    let opts = RunOptions {
        layout,
        threads: args.threads as usize,
        cfg,
        limit,
        progress: if args.quiet {
            Progress::Quiet
        } else {
            Progress::Auto
        },
        digest: false,
    };
    let report = runner::run(&data, &opts).map_err(|e| Failure::usage(e.to_string()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
    } else {
        print_report(&report, &gen_cfg, data.len());
    }
    Ok(())
}

fn print_report(r: &RunReport, g: &GenConfig, capture_bytes: usize) {
    let s = &r.summary;
    println!(
        "Meridian throughput: layout {}, batch {}, {} thread{}, {:.2} s",
        r.layout,
        r.batch_size,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.elapsed_s
    );
    println!(
        "workload: {} sats, {} stations, payload {}..{} B, seed {}; {} frames ({:.1} MB) in memory, {} pass{}",
        g.sats,
        g.stations,
        g.payload_min,
        g.payload_max,
        g.seed,
        g.frames,
        capture_bytes as f64 / 1e6,
        r.passes,
        if r.passes == 1 { "" } else { "es" }
    );
    println!();
    println!(
        "frames in    {:>14}   {:>8.2} M frames/s   {:>8.1} MB/s of wire bytes",
        r.frames,
        r.frames_per_s / 1e6,
        r.bytes_per_s / 1e6
    );
    println!(
        "forwarded    {:>14}   ({} bytes)",
        r.forwarded, s.forwarded_bytes
    );
    println!(
        "dropped      {:>14} duplicates, {} invalid; {} stale, {} late",
        s.duplicates, s.invalid, s.stale, s.late
    );
    println!();
    println!(
        "stage        ns/frame    share   allocs/batch   bytes/batch   (allocations after {} warm-up batches)",
        r.warmup_batches
    );
    let st = &r.stages;
    for (name, x) in [
        ("decode", &st.decode),
        ("validate", &st.validate),
        ("dedup", &st.dedup),
        ("forward", &st.forward),
    ] {
        println!(
            "{name:<10} {:>10.2} {:>7.1}% {:>14.2} {:>13.1}",
            x.ns_per_frame,
            x.share * 100.0,
            x.allocs_per_batch,
            x.alloc_bytes_per_batch
        );
    }
    let after_decode = st.validate.ns_per_frame + st.dedup.ns_per_frame + st.forward.ns_per_frame;
    println!();
    println!(
        "validate+dedup+forward: {:.1} M frames/s; decode: {:.2} GB/s of wire bytes",
        1e3 / after_decode.max(1e-9),
        (s.input_bytes as f64 / r.frames.max(1) as f64) / st.decode.ns_per_frame.max(1e-9)
    );
}
