//! Every command's arguments, their defaults and their parsers.

use clap::{Args, Parser, Subcommand};

use meridian_pipeline::dedup::{StalePolicy, WindowLimits, MAX_WINDOW};
use meridian_pipeline::harness::gen::GenConfig;
use meridian_pipeline::harness::layout::Layout;
use meridian_pipeline::log::LogFormat;
use meridian_pipeline::pipeline::{Config, DEFAULT_BATCH_SIZE, DEFAULT_MAX_SAT, MAX_BATCH_SIZE};
use meridian_pipeline::DEFAULT_WINDOW;

/// Meridian: decode, validate, deduplicate, sort and forward satellite
/// telemetry frames from several ground stations.
#[derive(Debug, Parser)]
#[command(name = "meridian-pipeline", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Measure throughput on synthetic traffic held in memory (the default command).
    Run(RunArgs),
    /// Run a capture file through the pipeline: frames to --out, summary to stderr.
    Process(ProcessArgs),
    /// Write a deterministic synthetic ground-station capture, or send it as stations over TCP.
    Gen(GenArgs),
    /// Take frames from ground stations over TCP and forward them downstream.
    Serve(Box<ServeArgs>),
    /// A checking downstream: count frames, check CRCs and that no key repeats.
    Sink(SinkArgs),
}

/// Options shared by every command that runs the pipeline.
#[derive(Debug, Args, Clone)]
pub(crate) struct PipelineArgs {
    /// Frames per batch (at most 1048576); dedup and sorting work within a batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_SIZE as u64))]
    pub(crate) batch_size: u64,
    /// Cross-batch dedup window per satellite, in sequence numbers (at most 16777216).
    #[arg(long, default_value_t = DEFAULT_WINDOW, value_name = "W",
          value_parser = clap::value_parser!(u64).range(0..=MAX_WINDOW))]
    pub(crate) window: u64,
    /// Highest valid satellite id; frames above it are invalid.
    #[arg(long, default_value_t = DEFAULT_MAX_SAT, value_name = "N")]
    pub(crate) max_sat: u32,
    /// Longest accepted payload in bytes (at most 65535); longer headers are bad headers.
    #[arg(long, default_value_t = meridian_pipeline::wire::DEFAULT_MAX_PAYLOAD, value_name = "N")]
    pub(crate) max_payload: u16,
    /// What to do with stale frames (older than the window): forward or drop.
    #[arg(long, value_enum, default_value_t = StalePolicy::Forward)]
    pub(crate) stale: StalePolicy,
    /// A frame more than N above its satellite's highest seq is counted suspect,
    /// dropped, and does not move the window; 0 = off [default: serve 1048576,
    /// process and run off].
    #[arg(long, value_name = "N")]
    pub(crate) max_seq_jump: Option<u64>,
    /// A satellite whose frames land outside its window N times in a row (and
    /// close to each other) re-anchors there; 0 = off [default: serve 64,
    /// process and run off].
    #[arg(long, value_name = "N")]
    pub(crate) reanchor_after: Option<u32>,
    /// Memory for the window's state, in MiB; beyond it the least recently
    /// active satellites are forgotten [default: serve 256, process and run
    /// unlimited].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub(crate) window_memory: Option<u64>,
}

impl PipelineArgs {
    /// The pipeline options, with the window limits of `defaults` where no
    /// flag was given.
    pub(crate) fn config_with(&self, defaults: WindowLimits) -> Config {
        let mut limits = defaults;
        if let Some(j) = self.max_seq_jump {
            limits.max_seq_jump = j;
        }
        if let Some(n) = self.reanchor_after {
            limits.reanchor_after = n;
        }
        if let Some(mib) = self.window_memory {
            limits.memory_budget = (mib as usize) << 20;
            limits.lazy_rings = true;
        }
        Config {
            batch_size: self.batch_size as usize,
            window: self.window,
            max_sat: self.max_sat,
            max_payload: self.max_payload,
            stale: self.stale,
            limits,
        }
    }

    /// The pipeline options of `process` and `run`: today's exact window
    /// semantics unless a limit flag is given.
    pub(crate) fn config(&self) -> Config {
        self.config_with(WindowLimits::OFF)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ProcessArgs {
    /// Input capture, or - for standard input.
    #[arg(long = "in", value_name = "PATH")]
    pub(crate) input: String,
    /// Where forwarded frames go, or - for standard output.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: String,
    /// Also write each satellite's missing seq ranges (between its lowest
    /// and highest forwarded seq, never forwarded) to PATH as JSON.
    #[arg(long, value_name = "PATH")]
    pub(crate) gaps: Option<String>,
    /// Threads: with 2, one thread reads, decodes and deduplicates while the
    /// other writes and tracks gaps (same output, same summary). Taken for a
    /// regular file only; standard input, a FIFO or a pipe is read on one
    /// thread. Default: 2 when the machine has two cores or more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=2))]
    pub(crate) threads: Option<u64>,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// Print the summary as one JSON object (the last line of stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("dest").required(true).args(["out", "connect"])))]
pub(crate) struct GenArgs {
    /// Output file, or - for standard output.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<String>,
    /// Instead of a file: connect one TCP socket per station to ADDR and send
    /// each station's stream (the same bytes `--out` would interleave).
    #[arg(long, value_name = "ADDR")]
    pub(crate) connect: Option<String>,
    /// With --connect: frames per second per station (default: as fast as possible).
    #[arg(long, value_name = "FRAMES_PER_S", requires = "connect", value_parser = parse_positive)]
    pub(crate) rate: Option<f64>,
    /// With --connect: station i sends the HELLO name PREFIXi.
    #[arg(
        long,
        default_value = "station-",
        value_name = "PREFIX",
        requires = "connect"
    )]
    pub(crate) station_name: String,
    /// With --connect: plain streams, no HELLO and no ACKs (at-most-once:
    /// a frame counts as sent once written).
    #[arg(long, requires = "connect")]
    pub(crate) raw: bool,
    /// With --connect: give up when no ACK has come for this long while
    /// frames are outstanding (the exit is then 1, with the count).
    #[arg(
        long,
        default_value_t = 30_000,
        value_name = "MS",
        requires = "connect"
    )]
    pub(crate) give_up_ms: u64,
    /// With --connect: TLS, trusting the server certificate's CA in this PEM file.
    #[arg(long, value_name = "PATH", requires = "connect")]
    pub(crate) tls_ca: Option<String>,
    /// With --tls-ca: present this client certificate chain (PEM) for mutual TLS.
    #[arg(long, value_name = "PATH", requires_all = ["tls_ca", "tls_key"])]
    pub(crate) tls_cert: Option<String>,
    /// With --tls-cert: the client certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub(crate) tls_key: Option<String>,
    /// With --tls-ca: the name the server certificate must carry
    /// [default: the host of --connect].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub(crate) tls_server_name: Option<String>,
    /// Frames in the capture, copies included.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub(crate) frames: u64,
    #[command(flatten)]
    pub(crate) workload: WorkloadArgs,
}

pub(crate) fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

// One of --forward, --forward-raw, --out is required, on the command line
// or in --config (checked once the file is applied); a flag given twice
// takes its last value (the file's flags come first).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").args(["forward", "forward_raw", "out"])))]
#[command(args_override_self = true)]
pub(crate) struct ServeArgs {
    /// Read options from this TOML file (keys as the flags, with _ for -;
    /// see examples/meridian.toml); flags given here override it.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<String>,
    /// Address to accept ground-station connections on.
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "ADDR")]
    pub(crate) listen: String,
    /// Forward to the session downstream at HOST:PORT (HELLO and ACKs; every
    /// byte kept until acked, resent after a reconnect).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) forward: Option<String>,
    /// Forward to a plain TCP consumer at HOST:PORT (no ACKs: stations are
    /// acked once the bytes are written into the socket).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) forward_raw: Option<String>,
    /// Forward into this file, appended to; stations are acked once it is fdatasync'd.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<String>,
    /// With --out: start the file empty instead of appending.
    #[arg(long)]
    pub(crate) truncate: bool,
    /// The HELLO name sent to a session downstream.
    #[arg(long, default_value = "meridian", value_name = "NAME")]
    pub(crate) name: String,
    /// Serve live counters over HTTP on ADDR (e.g. 127.0.0.1:7780):
    /// /metrics (Prometheus), /api/links, /healthz, /readyz [default: off].
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: Option<String>,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// A batch closes at the latest this many milliseconds after its first frame.
    #[arg(long, default_value_t = 5, value_name = "D")]
    pub(crate) max_delay_ms: u64,
    /// Station connections beyond this are closed at once (and counted).
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) max_connections: u64,
    /// Log a stats event (received, forwarded, duplicates, invalid, missing,
    /// unacked bytes) this often [default: none].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) stats_interval: Option<f64>,
    /// After SIGINT/SIGTERM: how long connected stations may go on sending.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub(crate) grace_ms: u64,
    /// After the grace period: how long to deliver what was read (a second
    /// signal exits at once).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub(crate) drain_ms: u64,
    /// A session station is acked within this long of its frames becoming safe.
    #[arg(long, default_value_t = 20, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) ack_interval_ms: u64,
    /// A station that sends no frame for this long is closed.
    #[arg(long, default_value_t = 60_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) idle_timeout_ms: u64,
    /// A downstream write that makes no progress this long is a failure (reconnect).
    #[arg(long, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) downstream_timeout_ms: u64,
    /// Output bytes kept until the downstream acks them; when full, stations are pushed back.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(4096..=1 << 40))]
    pub(crate) unacked_bytes: u64,
    /// With --out: fdatasync at most this often.
    #[arg(long, default_value_t = 50, value_name = "MS")]
    pub(crate) sync_ms: u64,
    /// TLS on station connections: this server certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_cert: Option<String>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_key: Option<String>,
    /// Mutual TLS: stations must present a certificate signed by this CA
    /// (PEM); a station's identity is its certificate's common name (or
    /// first DNS name), and a HELLO naming another station is refused.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_client_ca: Option<String>,
    /// Refuse to start (exit 2) when stations would connect over plain TCP
    /// on an address other than loopback (no --tls-cert).
    #[arg(long)]
    pub(crate) require_tls: bool,
    /// TLS to the downstream (--forward, --forward-raw), trusting its
    /// certificate's CA in this PEM file; its certificate must name the
    /// host of the downstream address.
    #[arg(long, value_name = "PATH")]
    pub(crate) forward_tls_ca: Option<String>,
    /// With --forward-tls-ca: present this client certificate chain (PEM)
    /// to the downstream; needs --forward-tls-key.
    #[arg(long, value_name = "PATH")]
    pub(crate) forward_tls_cert: Option<String>,
    /// The private key (PEM) of --forward-tls-cert.
    #[arg(long, value_name = "PATH")]
    pub(crate) forward_tls_key: Option<String>,
    /// The summary as one JSON object, the last line of stderr.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// How `serve` and `sink` log.
#[derive(Debug, Args, Clone)]
pub(crate) struct LogArgs {
    /// Log events (connects, disconnects, downstream failures, suspect
    /// frames, ...) on stderr as text lines or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Which events to log, in RUST_LOG syntax (e.g. warn, or
    /// info,meridian_pipeline::net=debug) [default: $RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_filter: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SinkArgs {
    /// Address to accept the one downstream connection on.
    #[arg(long, default_value = "127.0.0.1:7701", value_name = "ADDR")]
    pub(crate) listen: String,
    /// Also write the received frames to this file (sessions are acked once it is fdatasync'd).
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<String>,
    /// With --out: append instead of truncating (a torn last frame is cut first).
    #[arg(long, requires = "out")]
    pub(crate) append: bool,
    /// End after this many connections have ended [default: run until SIGINT/SIGTERM].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) connections: Option<u64>,
    /// With --out: fdatasync (and so ACK) at most this often.
    #[arg(long, default_value_t = 50, value_name = "MS")]
    pub(crate) sync_ms: u64,
    /// TLS on the downstream connection: this server certificate chain
    /// (PEM); needs --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub(crate) tls_cert: Option<String>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub(crate) tls_key: Option<String>,
    /// With --tls-cert: require a client certificate signed by this CA (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<String>,
    /// The summary as one JSON object, the last line of stderr.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// The synthetic workload's shape, shared by `gen` and `run`.
#[derive(Debug, Args, Clone)]
pub(crate) struct WorkloadArgs {
    /// Number of satellites.
    #[arg(long, default_value_t = 48, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) sats: u32,
    /// Number of ground stations (overlapping coverage makes copies).
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) stations: u32,
    /// RNG seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub(crate) seed: u64,
    /// Chance that a received copy is invalid (corrupt or out-of-range sat).
    #[arg(long, default_value_t = 0.01, value_name = "R", value_parser = parse_rate)]
    pub(crate) invalid_rate: f64,
    /// Payload length range in bytes, MIN..MAX (or one length).
    #[arg(long, default_value = "16..128", value_name = "MIN..MAX", value_parser = parse_payload)]
    pub(crate) payload: (u16, u16),
}

impl WorkloadArgs {
    pub(crate) fn config(&self, frames: u64) -> GenConfig {
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

pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not between 0 and 1"))
    }
}

pub(crate) fn parse_payload(s: &str) -> Result<(u16, u16), String> {
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

#[derive(Debug, Parser)]
#[command(no_binary_name = false)]
pub(crate) struct RunArgs {
    /// Run for this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", conflicts_with = "frames",
          value_parser = parse_secs)]
    pub(crate) duration: f64,
    /// Run exactly this many frames instead of for a duration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) frames: Option<u64>,
    /// Pipeline layout: soa (the real one), aos (same algorithms over structs), baseline (a first version).
    #[arg(long, value_enum, default_value_t = Layout::Soa)]
    pub(crate) layout: Layout,
    /// Threads (soa only, at most 64); above 1 every thread decodes its own stretch of the input, dedups and forwards, with output identical to one thread's.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub(crate) threads: u64,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    #[command(flatten)]
    pub(crate) workload: WorkloadArgs,
    /// Print the report as exactly one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress display.
    #[arg(long)]
    pub(crate) quiet: bool,
}

pub(crate) fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} seconds is out of range: give more than 0 and at most 86400"
        ))
    }
}
