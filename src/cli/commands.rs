//! What each command does, from parsed arguments to a result.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use meridian_pipeline::dedup::{StalePolicy, WindowLimits};
use meridian_pipeline::gaps::{process_stream_gaps, GapTotals};
use meridian_pipeline::harness::gen;
use meridian_pipeline::harness::runner::{self, Limit, Progress, RunError, RunOptions};
use meridian_pipeline::net::admin::AdminServer;
use meridian_pipeline::net::client::ClientOptions;
use meridian_pipeline::net::downstream::Target;
use meridian_pipeline::net::send::{send_stations_with, SendOptions};
use meridian_pipeline::net::serve::{self, ServeConfig};
use meridian_pipeline::net::sink::{sink_with, SinkOptions};
use meridian_pipeline::net::tls::{ClientTls, ServerTls};
use meridian_pipeline::net::Shutdown;
use meridian_pipeline::pipeline::ProcessError;
use meridian_pipeline::Summary;

use super::args::{GenArgs, LogArgs, ProcessArgs, RunArgs, ServeArgs, SinkArgs};
use super::report;
use super::CliError;

/// Frames of synthetic capture held in memory by `run` at most; longer runs
/// replay it (with the dedup window reset, so it stays new traffic).
const RUN_CAPTURE_FRAMES: u64 = 1_000_000;
/// Output buffer of `process` and `gen --out`.
const OUT_BUF: usize = 1 << 20;

fn open_input(path: &str) -> Result<Box<dyn Read + Send>, CliError> {
    if path == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let file = File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot open input '{path}': {e}")))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(CliError::Usage(format!(
            "cannot read input '{path}': it is a directory"
        )));
    }
    Ok(Box::new(file))
}

fn open_output(path: &str) -> Result<Box<dyn Write>, CliError> {
    if path == "-" {
        return Ok(Box::new(BufWriter::with_capacity(
            OUT_BUF,
            io::stdout().lock(),
        )));
    }
    let file = File::create(path)
        .map_err(|e| CliError::Usage(format!("cannot create output '{path}': {e}")))?;
    Ok(Box::new(BufWriter::with_capacity(OUT_BUF, file)))
}

/// True when `a` and `b` name the same existing file (same device and inode).
fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == "-" || b == "-" {
        return false;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// A flag that SIGINT and SIGTERM raise, for commands that stop between batches.
fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .map_err(|e| CliError::runtime("signal setup failed", e))?;
    }
    Ok(flag)
}

/// `process`'s JSON summary: the pipeline's counters and the gap totals.
#[derive(serde::Serialize)]
struct ProcessSummary {
    #[serde(flatten)]
    summary: Summary,
    #[serde(flatten)]
    gaps: GapTotals,
}

/// `process`: a capture through the pipeline.
pub(crate) fn process(args: &ProcessArgs) -> Result<(), CliError> {
    if same_file(&args.input, &args.out) {
        return Err(CliError::Usage(format!(
            "--in and --out are the same file ('{}'); writing would destroy the input",
            args.out
        )));
    }
    let cfg = args.pipeline.config();
    cfg.check().map_err(|e| CliError::Usage(e.to_string()))?;
    let input = open_input(&args.input)?;
    let mut out = open_output(&args.out)?;
    let gaps_out = match &args.gaps {
        Some(path) => Some(
            File::create(path)
                .map_err(|e| CliError::Usage(format!("cannot create --gaps '{path}': {e}")))?,
        ),
        None => None,
    };
    let stop = stop_flag()?;
    // A pipe (standard input, a FIFO, a process substitution) may stay
    // idle: only a regular file's reads are sure to end, which the
    // two-thread path needs to stop promptly after a write error.
    let regular =
        args.input != "-" && std::fs::metadata(&args.input).is_ok_and(|m| m.file_type().is_file());
    let threads = match args.threads {
        _ if !regular => 1,
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
    };
    let (summary, stopped, gaps) = process_stream_gaps(
        BufReader::with_capacity(0, input),
        &mut out,
        cfg,
        &|| stop.load(Ordering::Relaxed),
        threads,
    )
    .map_err(|e| match e {
        ProcessError::Config(c) => CliError::Usage(c.to_string()),
        other => CliError::Runtime(format!("processing failed: {other}")),
    })?;
    if stopped {
        eprintln!("interrupted: the output holds the whole batches processed so far");
    }
    if let (Some(f), Some(path)) = (gaps_out, &args.gaps) {
        let mut w = BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, &gaps.report(false))
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n"))
            .and_then(|()| w.flush())
            .map_err(|e| CliError::runtime(&format!("writing --gaps '{path}' failed"), e))?;
    }
    let totals = gaps.totals();
    if args.json {
        report::json_line(&ProcessSummary {
            summary,
            gaps: totals,
        });
    } else {
        report::print_summary(&summary, cfg.stale == StalePolicy::Drop);
        report::print_gaps(&totals);
    }
    if stopped {
        return Err(CliError::Interrupted);
    }
    Ok(())
}

/// `gen`: a capture to a file, or stations over TCP.
pub(crate) fn generate(args: &GenArgs) -> Result<(), CliError> {
    if let Some(addr) = &args.connect {
        return connect(args, addr);
    }
    let path = args
        .out
        .as_deref()
        .expect("clap requires --out or --connect");
    let bytes = gen::capture(&args.workload.config(args.frames));
    let mut out = open_output(path)?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::runtime("writing the capture failed", e))?;
    eprintln!("wrote {} bytes of capture to {path}", bytes.len());
    Ok(())
}

/// `gen --connect`: one station per connection; sessions unless `--raw`.
fn connect(args: &GenArgs, addr: &str) -> Result<(), CliError> {
    let stop = Shutdown::on_signals().map_err(|e| CliError::runtime("signal setup failed", e))?;
    let mut client = ClientOptions::default();
    if let Some(ca) = &args.tls_ca {
        let mut tls = ClientTls::load(
            Path::new(ca),
            args.tls_cert.as_deref().map(Path::new),
            args.tls_key.as_deref().map(Path::new),
        )
        .map_err(CliError::Usage)?;
        tls.server_name.clone_from(&args.tls_server_name);
        client.tls = Some(tls);
    }
    let opts = SendOptions {
        client,
        rate: args.rate,
        name_prefix: args.station_name.clone(),
        raw: args.raw,
        ack_timeout: Duration::from_millis(args.give_up_ms),
        reconnect_deadline: Duration::from_millis(args.give_up_ms),
    };
    let r = send_stations_with(addr, &args.workload.config(args.frames), &opts, stop)
        .map_err(|e| CliError::runtime(&format!("sending to {addr} failed"), e))?;
    let stations = args.workload.stations;
    if args.raw {
        eprintln!(
            "sent {} frames ({} bytes) from {stations} stations to {addr} as plain streams (no receipt)",
            r.frames, r.bytes
        );
    } else {
        eprintln!(
            "{} of {} frames acked by {addr} ({} bytes; {} reconnects, {} bytes resent)",
            r.acked_frames, r.frames, r.acked_bytes, r.reconnects, r.resent_bytes
        );
    }
    if !r.all_acked() {
        let why = r
            .stations
            .iter()
            .find_map(|s| s.error.clone())
            .unwrap_or_else(|| "not acked".into());
        return Err(CliError::Runtime(format!(
            "{} of {} frames were not acked: {why}",
            r.unacked_frames, r.frames
        )));
    }
    Ok(())
}

/// Resolves a `HOST:PORT` at startup, so a typo fails now, not at the first batch.
fn resolve(flag: &str, addr: &str) -> Result<std::net::SocketAddr, CliError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| CliError::Usage(format!("{flag} {addr}: {e}")))?
        .next()
        .ok_or_else(|| CliError::Usage(format!("{flag} {addr}: resolves to no address")))
}

/// Installs the log subscriber `args` ask for.
fn init_log(args: &LogArgs) -> Result<(), CliError> {
    meridian_pipeline::log::init(args.log_format, args.log_filter.as_deref())
        .map_err(CliError::Usage)
}

/// `serve`: stations in, one downstream out; with `--config`, the file's
/// options under the command line's.
pub(crate) fn serve(args: &ServeArgs) -> Result<(), CliError> {
    let merged;
    let mut allow = None;
    let args = match &args.config {
        Some(path) => {
            // What followed `serve` on the command line.
            let cli: Vec<std::ffi::OsString> = std::env::args_os()
                .skip_while(|a| a != "serve")
                .skip(1)
                .collect();
            let (a, list) = super::config::merged_serve_args(path, &cli)?;
            merged = a;
            allow = list;
            &merged
        }
        None => args,
    };
    init_log(&args.log)?;
    if args.truncate && args.out.is_none() {
        return Err(CliError::Usage("--truncate needs --out".into()));
    }
    let target = match (&args.forward, &args.forward_raw, &args.out) {
        (Some(addr), _, _) => Target::Forward(addr.clone()),
        (None, Some(addr), _) => Target::ForwardRaw(addr.clone()),
        (None, None, Some(path)) => Target::Out {
            path: path.into(),
            truncate: args.truncate,
        },
        _ => {
            return Err(CliError::Usage(
                "serve needs one of --forward, --forward-raw, --out (on the command line or in --config)"
                    .into(),
            ))
        }
    };
    let pipeline = args.pipeline.config_with(WindowLimits::SERVICE);
    pipeline
        .check()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let most = pipeline.batch_size as u64
        * (meridian_pipeline::wire::OVERHEAD as u64 + u64::from(pipeline.max_payload));
    if most > args.unacked_bytes {
        return Err(CliError::Usage(format!(
            "--batch-size {} of frames up to {} bytes can need {most} bytes, above --unacked-bytes {}",
            pipeline.batch_size,
            meridian_pipeline::wire::OVERHEAD + usize::from(pipeline.max_payload),
            args.unacked_bytes
        )));
    }
    if let Some(path) = &args.out {
        let p = Path::new(path);
        if p.is_dir() {
            return Err(CliError::Usage(format!("--out '{path}' is a directory")));
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| CliError::Usage(format!("cannot open --out '{path}': {e}")))?;
    }
    let downstream_addr = match (&args.forward, &args.forward_raw) {
        (Some(a), _) => Some(("--forward", a)),
        (None, Some(a)) => Some(("--forward-raw", a)),
        _ => None,
    };
    let downstream = match downstream_addr {
        Some((flag, a)) => Some((flag, resolve(flag, a)?)),
        None => None,
    };
    let mut cfg = ServeConfig::new(pipeline, target);
    cfg.name.clone_from(&args.name);
    cfg.max_delay = Duration::from_millis(args.max_delay_ms);
    cfg.max_connections = args.max_connections as usize;
    cfg.stats_interval = args.stats_interval.map(Duration::from_secs_f64);
    cfg.grace = Duration::from_millis(args.grace_ms);
    cfg.drain = Duration::from_millis(args.drain_ms);
    cfg.ack_interval = Duration::from_millis(args.ack_interval_ms);
    cfg.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    cfg.downstream_timeout = Duration::from_millis(args.downstream_timeout_ms);
    cfg.unacked_bytes = args.unacked_bytes as usize;
    cfg.sync_every = Duration::from_millis(args.sync_ms);
    cfg.tls = server_tls(&args.tls_cert, &args.tls_key, &args.tls_client_ca)?;
    cfg.allow = allow.map(Arc::new);
    if let Some(ca) = &args.forward_tls_ca {
        if args.out.is_some() && args.forward.is_none() && args.forward_raw.is_none() {
            return Err(CliError::Usage(
                "--forward-tls-ca needs --forward or --forward-raw".into(),
            ));
        }
        cfg.forward_tls = Some(
            ClientTls::load(
                Path::new(ca),
                args.forward_tls_cert.as_deref().map(Path::new),
                args.forward_tls_key.as_deref().map(Path::new),
            )
            .map_err(|e| CliError::Usage(e.replace("--tls-", "--forward-tls-")))?,
        );
    } else if args.forward_tls_cert.is_some() || args.forward_tls_key.is_some() {
        return Err(CliError::Usage(
            "--forward-tls-cert and --forward-tls-key need --forward-tls-ca".into(),
        ));
    }
    let stop = Shutdown::on_signals().map_err(|e| CliError::runtime("signal setup failed", e))?;
    let listener = serve::bind(&args.listen)
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::runtime("listener", e))?;
    if cfg.tls.is_none() && !local.ip().is_loopback() {
        if args.require_tls {
            return Err(CliError::Usage(format!(
                "--require-tls: stations would connect to {local} over plain TCP; give --tls-cert and --tls-key, or listen on loopback"
            )));
        }
        tracing::warn!(
            listen = %local,
            "plain TCP on a non-loopback address: anyone who can reach {local} can send frames for any satellite (a forged copy sent first suppresses the genuine one) and read ACKs; use --tls-cert/--tls-key with --tls-client-ca, or --require-tls to refuse this"
        );
    }
    if let Some((flag, d)) = downstream {
        let same_port = d.port() == local.port();
        if same_port && (d.ip() == local.ip() || local.ip().is_unspecified()) {
            return Err(CliError::Usage(format!(
                "{flag} {d} is serve's own --listen address: it would forward to itself"
            )));
        }
    }
    let admin = match &args.admin {
        Some(a) => {
            // Bound before serving, so a busy address is a usage error
            // (exit 2) and nothing was accepted.
            let server = AdminServer::bind(a)
                .map_err(|e| CliError::Usage(format!("cannot serve --admin on {a}: {e}")))?;
            Some(server)
        }
        None => None,
    };
    eprintln!("meridian: listening on {local}");
    if let Some(at) = admin.as_ref().and_then(AdminServer::local_addr) {
        eprintln!("meridian: admin on {at}");
    }
    // Under systemd (Type=notify): listening, and the admin server bound.
    if let Err(e) = serve::notify_ready() {
        tracing::warn!(error = %e, "could not notify systemd (NOTIFY_SOCKET)");
    }
    let s = serve::serve_with(listener, &cfg, stop, admin)
        .map_err(|e| CliError::runtime("serve failed", e))?;
    if args.json {
        report::json_line(&s);
    } else {
        report::print_serve_summary(&s, cfg.pipeline.stale == StalePolicy::Drop);
    }
    if s.unacked_frames > 0 {
        return Err(CliError::Runtime(format!(
            "{} forwarded frames were not confirmed by the downstream ({} never handed to it)",
            s.unacked_frames, s.unsent_frames
        )));
    }
    Ok(())
}

/// `sink`: a checking downstream.
pub(crate) fn sink(args: &SinkArgs) -> Result<(), CliError> {
    init_log(&args.log)?;
    let stop = Shutdown::on_signals().map_err(|e| CliError::runtime("signal setup failed", e))?;
    let listener = std::net::TcpListener::bind(&args.listen)
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::runtime("listener", e))?;
    let tls = server_tls(&args.tls_cert, &args.tls_key, &args.tls_client_ca)?;
    let opts = SinkOptions {
        out: args.out.as_ref().map(Into::into),
        append: args.append,
        connections: args.connections.map(|n| n as usize),
        sync_interval: Duration::from_millis(args.sync_ms),
        tls,
        ..SinkOptions::default()
    };
    eprintln!("sink: listening on {local}");
    let s = sink_with(listener, &opts, &stop).map_err(|e| CliError::runtime("sink failed", e))?;
    if args.json {
        report::json_line(&s);
    } else {
        report::print_sink_summary(&s);
    }
    Ok(())
}

/// `run` with every default: what a bare `cargo run --release` does.
pub(crate) fn run_default() -> Result<(), CliError> {
    run(&RunArgs::parse_from(["run"]))
}

/// `run`: the throughput runner on synthetic traffic.
pub(crate) fn run(args: &RunArgs) -> Result<(), CliError> {
    let cfg = args.pipeline.config();
    let (frames, limit) = match args.frames {
        Some(n) => (n.min(RUN_CAPTURE_FRAMES), Limit::Frames(n)),
        None => (
            RUN_CAPTURE_FRAMES,
            Limit::Duration(Duration::from_secs_f64(args.duration)),
        ),
    };
    if args.threads > 1 && args.layout != meridian_pipeline::harness::layout::Layout::Soa {
        return Err(CliError::Usage(RunError::ThreadsNeedSoa.to_string()));
    }
    // Before generating: a signal while the capture is built still ends
    // with a (empty) report and exit 130, not the default kill.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe; it allocates, locks and prints nothing.
        unsafe {
            signal_hook::low_level::register(sig, || {
                runner::STOP.store(true, Ordering::Relaxed);
            })
        }
        .map_err(|e| CliError::runtime("signal setup failed", e))?;
    }
    let gen_cfg = args.workload.config(frames);
    if !args.quiet {
        eprintln!("generating {frames} frames of synthetic traffic (not timed)...");
    }
    let data = gen::capture(&gen_cfg);
    let opts = RunOptions {
        layout: args.layout,
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
    let report = runner::run(&data, &opts).map_err(|e| match e {
        RunError::Io(e) => CliError::runtime("run failed", e),
        other => CliError::Usage(other.to_string()),
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
    } else {
        report::print_report(
            &report,
            &gen_cfg,
            data.len(),
            cfg.stale == StalePolicy::Drop,
        );
    }
    if runner::STOP.load(Ordering::Relaxed) {
        eprintln!("interrupted: the report covers the run up to the signal");
        return Err(CliError::Interrupted);
    }
    Ok(())
}

/// The TLS server side of `serve` and `sink` from their `--tls-cert`,
/// `--tls-key` and `--tls-client-ca`: none without a certificate, or a
/// one-line usage error for an incomplete or unusable set.
fn server_tls(
    cert: &Option<String>,
    key: &Option<String>,
    client_ca: &Option<String>,
) -> Result<Option<ServerTls>, CliError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(
            ServerTls::load(
                Path::new(cert),
                Path::new(key),
                client_ca.as_deref().map(Path::new),
            )
            .map_err(CliError::Usage)?,
        )),
        (None, None) if client_ca.is_some() => Err(CliError::Usage(
            "--tls-client-ca needs --tls-cert and --tls-key".into(),
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CliError::Usage("--tls-cert needs --tls-key".into())),
        (None, Some(_)) => Err(CliError::Usage("--tls-key needs --tls-cert".into())),
    }
}
