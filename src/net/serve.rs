//! `serve`: many ground stations in, one downstream out, with end-to-end
//! acknowledgements.
//!
//! Each accepted station gets a thread. It reads the connection's opening:
//! a HELLO makes it a session (see [`super::session`]), anything else a
//! plain stream. It then reads and decodes the stream into small chunks and
//! hands them, with the stream offset each chunk ends at, over a bounded
//! channel. The pipeline thread gathers the chunks, in arrival order, into
//! batches that close at `batch_size` frames or `max_delay` after their first
//! frame, runs the stages (validate, dedup, window, (sat, seq) order) and
//! hands each batch's output to the [`Downstream`].
//!
//! # When a station is acked
//! A batch is *delivered* once the downstream has confirmed every byte of
//! its output (see [`super::downstream`]). Batches are delivered in order,
//! so once batch k is delivered every frame a station sent before the end
//! of any chunk whose last frame is in batch k or earlier was either
//! delivered, or dropped by rule (invalid, a copy, stale with `--stale
//! drop`, suspect) with the copy that was kept delivered in the same or an
//! earlier batch. That chunk's end offset is then *safe*, and the station
//! thread ACKs it within `ack_interval`. Plain streams get no ACKs.
//!
//! # Deadlines
//! After the first SIGINT/SIGTERM, stations are read until `grace`, then
//! everything read is delivered within `drain` more; then (or at a second
//! signal) the hard stop ends all retrying, and what is left is counted as
//! unacked. Idle stations (no frame for `idle_timeout`) are closed, and at
//! the connection limit the longest-idle connection makes room for a new one.
//!
//! # Live counters
//! Station threads (per decoded chunk) and the pipeline thread (per batch)
//! keep a [`Metrics`] registry up to date; with an [`AdminServer`]
//! ([`serve_with`], `serve --admin`) it is served over HTTP.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::admin::AdminServer;
use super::auth::Allowlist;
use super::downstream::{Downstream, DownstreamStats, Target};
use super::metrics::{LatencyBatch, Metrics, StationCell};
use super::session::{self, Opening};
use super::tls::{self, ClientTls, ServerTls, TlsConn, TlsReader};
use super::{ReadOptions, Shutdown};
use crate::batch::Batch;
use crate::decode::{DecodeStats, Decoder, FrameReader};
use crate::gaps::{GapLimits, GapTotals};
use crate::log::RateLimit;
use crate::pipeline::{BatchProcessor, Config, PipelineStats, Summary};
use crate::validate::scalar::is_valid;

/// Frames a station thread decodes before handing them over.
const CHUNK_FRAMES: usize = 256;
/// Chunks in flight between the stations and the pipeline: the bound on
/// buffered frames (with one chunk held by each blocked station thread).
const CHANNEL_CHUNKS: usize = 64;
/// How often idle threads look at the shutdown flag.
const POLL: Duration = Duration::from_millis(10);
/// Entries in the per-station table; later stations share one entry.
pub const MAX_STATION_ENTRIES: usize = 256;
/// The per-station entry that aggregates stations beyond the cap.
pub const OTHER_STATIONS: &str = "(other)";
// Each kind of event a station can cause is rate-limited (see crate::log).
static LOG_CONNECT: RateLimit = RateLimit::new(20, 10);
static LOG_DISCONNECT: RateLimit = RateLimit::new(20, 10);
static LOG_IDLE: RateLimit = RateLimit::new(20, 10);
static LOG_HELLO: RateLimit = RateLimit::new(10, 10);
static LOG_REJECTED: RateLimit = RateLimit::new(10, 10);
static LOG_SUSPECT: RateLimit = RateLimit::new(5, 10);
static LOG_REANCHOR: RateLimit = RateLimit::new(5, 10);
static LOG_EVICT: RateLimit = RateLimit::new(5, 10);
static LOG_AUTH: RateLimit = RateLimit::new(10, 10);
static LOG_TLS: RateLimit = RateLimit::new(10, 10);
static LOG_UNAUTHORIZED: RateLimit = RateLimit::new(5, 10);

/// Logs what the window did in one batch: suspect frames dropped,
/// satellites re-anchored, satellites' window state evicted (rate-limited).
fn log_window_events(before: &PipelineStats, now: &PipelineStats) {
    let suspect = now.suspect.saturating_sub(before.suspect);
    if suspect > 0 {
        if let Some(suppressed) = LOG_SUSPECT.allow() {
            tracing::warn!(
                frames = suspect,
                total = now.suspect,
                suppressed,
                "suspect frames dropped: too far above their satellite's highest seq (--max-seq-jump)"
            );
        }
    }
    let reanchors = now.reanchors.saturating_sub(before.reanchors);
    if reanchors > 0 {
        if let Some(suppressed) = LOG_REANCHOR.allow() {
            tracing::warn!(
                satellites = reanchors,
                total = now.reanchors,
                suppressed,
                "satellite windows re-anchored where their frames kept landing (--reanchor-after)"
            );
        }
    }
    let evicted = now.evicted_sats.saturating_sub(before.evicted_sats);
    if evicted > 0 {
        if let Some(suppressed) = LOG_EVICT.allow() {
            tracing::warn!(
                satellites = evicted,
                total = now.evicted_sats,
                suppressed,
                "satellite window state evicted to stay within --window-memory"
            );
        }
    }
}

/// A connection idle at least this long may be closed to admit a new one
/// when `max_connections` is reached.
const EVICT_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How long after the hard stop `serve` waits for a blocked call before it
/// exits anyway.
const HARD_EXIT_AFTER: Duration = Duration::from_secs(5);
/// Bytes of an existing `--out` file read back to rebuild the window.
pub const REBUILD_TAIL_BYTES: u64 = 64 << 20;

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The pipeline's options.
    pub pipeline: Config,
    /// Where frames go.
    pub target: Target,
    /// The HELLO name sent to a session downstream.
    pub name: String,
    /// A batch closes this long after its first frame at the latest.
    pub max_delay: Duration,
    /// Connections beyond this are closed at once (after trying to make room).
    pub max_connections: usize,
    /// Print a stats line this often.
    pub stats_interval: Option<Duration>,
    /// After a stop is asked for: how long stations may go on sending.
    pub grace: Duration,
    /// After `grace`: how long to deliver what was read.
    pub drain: Duration,
    /// An ACK goes out within this long of a station's safe offset advancing.
    pub ack_interval: Duration,
    /// A station that sends no frame for this long is closed.
    pub idle_timeout: Duration,
    /// A downstream write that makes no progress this long is a failure.
    pub downstream_timeout: Duration,
    /// Output bytes kept until the downstream acks them; when full, no new
    /// batch is taken (TCP pushes back on the stations).
    pub unacked_bytes: usize,
    /// `--out`: fdatasync at most this often.
    pub sync_every: Duration,
    /// How long a new connection may take to send its opening bytes.
    pub hello_timeout: Duration,
    /// TLS on station connections (`--tls-cert/--tls-key`), mutual when
    /// it has a client CA; `None`: plain TCP.
    pub tls: Option<ServerTls>,
    /// The `[stations]` tables of the config file: which station may send
    /// which satellites; `None`: everything is allowed.
    pub allow: Option<Arc<Allowlist>>,
    /// TLS to a TCP downstream (`--forward-tls-ca`, ...); `None`: plain TCP.
    pub forward_tls: Option<ClientTls>,
}

impl ServeConfig {
    /// Defaults for everything but the pipeline and the target.
    pub fn new(pipeline: Config, target: Target) -> ServeConfig {
        ServeConfig {
            pipeline,
            target,
            name: "meridian".into(),
            max_delay: Duration::from_millis(5),
            max_connections: 64,
            stats_interval: None,
            grace: Duration::from_millis(2000),
            drain: Duration::from_millis(5000),
            ack_interval: session::DEFAULT_ACK_INTERVAL,
            idle_timeout: Duration::from_secs(60),
            downstream_timeout: Duration::from_secs(10),
            unacked_bytes: 256 << 20,
            sync_every: Duration::from_millis(50),
            hello_timeout: Duration::from_secs(2),
            tls: None,
            allow: None,
            forward_tls: None,
        }
    }
}

/// One station's counters, over all its connections. A station is its
/// HELLO name, or its peer address for a plain stream.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StationStats {
    /// HELLO name, peer address, or [`OTHER_STATIONS`].
    pub station: String,
    /// The last connection's peer address.
    pub peer: String,
    /// Connections made.
    pub connections: u64,
    /// Connections that opened a session.
    pub sessions: u64,
    /// Stream bytes acked, summed over its sessions.
    pub acked_bytes: u64,
    /// Connections closed for being idle.
    pub idle_closed: u64,
    /// Frames it delivered first: the copy kept and forwarded (handed to
    /// the downstream; the summary's `forwarded` counts confirmed ones).
    pub first_copies: u64,
    /// Valid frames it delivered that were not the copy kept.
    pub duplicates: u64,
    /// Frames for satellites it is not allowed to send (`[stations]` in
    /// the config file): dropped before the pipeline, never forwarded.
    pub unauthorized: u64,
    /// What its decoders counted.
    #[serde(flatten)]
    pub decode: DecodeStats,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Frames measured.
    pub frames: u64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            frames: h.len(),
        }
    }
}

/// What `serve` prints at the end.
#[derive(Debug, Clone, Serialize)]
pub struct ServeSummary {
    /// The `process` counters, over all stations; `forwarded` counts only
    /// frames the downstream confirmed.
    #[serde(flatten)]
    pub summary: Summary,
    /// Per satellite gaps of what was forwarded, at exit: `missing` seqs in
    /// `gap_ranges` ranges (see [`crate::gaps`]).
    #[serde(flatten)]
    pub gaps: GapTotals,
    /// Station connections taken.
    pub connections_accepted: u64,
    /// Connections closed at once for being over `--max-connections`.
    pub connections_rejected: u64,
    /// Errors from `accept` (each followed by a backoff).
    pub accept_errors: u64,
    /// Connections that opened with a bad HELLO, closed.
    pub hello_errors: u64,
    /// Connections refused for who they are: no client certificate or one
    /// that does not verify (with `--tls-client-ca`), a HELLO name that
    /// differs from the certificate's identity, a station not listed in
    /// the config's `[stations]`.
    pub auth_failures: u64,
    /// TLS connections closed for another TLS failure: a handshake that
    /// broke, or did not finish within `--idle-timeout-ms`.
    pub tls_errors: u64,
    /// Frames dropped for a satellite their station may not send, over all
    /// stations (each station's count is in `stations`).
    pub unauthorized: u64,
    /// Station connections closed for being idle (or to make room for a new one).
    pub idle_closed: u64,
    /// Station stream bytes acked, over all sessions.
    pub acked_bytes: u64,
    /// Bytes sent to the downstream again after a reconnect.
    pub resent_bytes: u64,
    /// Downstream reconnects.
    pub downstream_reconnects: u64,
    /// Failed attempts to connect to the downstream.
    pub connect_failures: u64,
    /// Failures of the downstream: resets, stalled writes, write or sync errors.
    pub downstream_failures: u64,
    /// Frames forwarded that the downstream never confirmed (unsent ones included).
    pub unacked_frames: u64,
    /// Of those, frames never even handed to the downstream.
    pub unsent_frames: u64,
    /// Read-to-forward latency (until the batch's output is handed over).
    pub latency_us: Latency,
    /// Read-to-delivered latency: until the downstream confirmed the frame,
    /// which is when its station can be acked.
    pub ack_latency_us: Latency,
    /// Per station, in the order they first connected.
    pub stations: Vec<StationStats>,
}

/// A station connection as the pipeline sees it: the offset that is safe
/// to ACK, and the socket to ACK it on. Only the pipeline thread writes
/// ACKs (so a station thread blocked on a full channel does not hold them
/// back); the station thread waits on `sent` for its last one.
#[derive(Debug)]
struct StationLink {
    /// A session's socket (a clone of the station thread's, or its TLS
    /// state); `None` for a plain stream, which gets no ACKs.
    stream: Option<AckOut>,
    ack: Mutex<AckState>,
    /// The offset of the last ACK written, read by the station thread.
    sent: AtomicU64,
    /// The station's live counters (acked bytes).
    cell: Arc<StationCell>,
}

#[derive(Debug)]
struct AckState {
    safe: u64,
    sent: u64,
    at: Instant,
    broken: bool,
}

/// Where a session's ACKs are written: its socket, or its TLS connection.
#[derive(Debug)]
enum AckOut {
    Plain(TcpStream),
    Tls(Arc<TlsConn>),
}

impl AckOut {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            AckOut::Plain(s) => {
                let mut w = s;
                w.write_all(bytes)
            }
            AckOut::Tls(t) => t.write_all(bytes),
        }
    }

    fn shutdown(&self) {
        let s = match self {
            AckOut::Plain(s) => s,
            AckOut::Tls(t) => t.socket(),
        };
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

impl StationLink {
    fn new(stream: Option<AckOut>, cell: Arc<StationCell>) -> StationLink {
        StationLink {
            stream,
            cell,
            ack: Mutex::new(AckState {
                safe: 0,
                sent: 0,
                at: Instant::now(),
                broken: false,
            }),
            sent: AtomicU64::new(0),
        }
    }

    /// Records that everything before `to` is safe.
    fn advance(&self, to: u64) {
        if let Ok(mut a) = self.ack.lock() {
            a.safe = a.safe.max(to);
        }
    }

    /// Writes an ACK when the safe offset moved and the last one is at least
    /// `every` old (or `force`). True while an ACK is still owed.
    fn flush(&self, every: Duration, force: bool) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        let Ok(mut a) = self.ack.lock() else {
            return false;
        };
        if a.broken || a.safe <= a.sent {
            return false;
        }
        if !force && a.at.elapsed() < every {
            return true;
        }
        if stream.write_all(&session::encode_ack(a.safe)).is_err() {
            // Perhaps half an ACK went out: close, so the station reconnects
            // and resends from its last ACK instead of waiting forever.
            a.broken = true;
            stream.shutdown();
            return false;
        }
        self.cell.acked(a.safe - a.sent, a.safe);
        a.sent = a.safe;
        a.at = Instant::now();
        self.sent.store(a.sent, Ordering::SeqCst);
        false
    }

    fn broken(&self) -> bool {
        self.ack.lock().map(|a| a.broken).unwrap_or(true)
    }
}

enum Msg {
    Frames {
        batch: Batch,
        read_at: Instant,
        /// The connection, and the offset this chunk ends at.
        link: Arc<StationLink>,
        end: u64,
    },
    Closed(Box<ClosedConn>),
}

struct ClosedConn {
    /// The station's key in the registry (its name, or [`OTHER_STATIONS`]).
    station: String,
    peer: SocketAddr,
    session: bool,
    stats: DecodeStats,
    /// The station's live counters; its acked bytes are read at the end.
    cell: Arc<StationCell>,
    idle_closed: bool,
}

/// A bound listener, ready to [`serve`].
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(listen: &str) -> io::Result<TcpListener> {
    let l = TcpListener::bind(listen)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Tells systemd (a `Type=notify` unit) that serve is ready: `READY=1` as
/// one datagram to the socket named by `NOTIFY_SOCKET` (a path, or an
/// abstract name after `@`). Returns false when the variable is unset.
///
/// # Errors
/// When the socket cannot be reached.
pub fn notify_ready() -> io::Result<bool> {
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(b"READY=1", &addr)?;
    } else {
        sock.send_to(b"READY=1", &target)?;
    }
    Ok(true)
}

/// Feeds the frames of the last [`REBUILD_TAIL_BYTES`] of `path` into the
/// window, as already forwarded, so a restart appending to it adds no copy
/// of what it holds. Returns the frames read back.
fn rebuild_window(path: &Path, stages: &mut BatchProcessor) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(0);
    };
    let len = f.metadata()?.len();
    if !f.metadata()?.is_file() || len == 0 {
        return Ok(0);
    }
    f.seek(SeekFrom::Start(len.saturating_sub(REBUILD_TAIL_BYTES)))?;
    let cfg = *stages.config();
    let mut reader = FrameReader::new(
        f.take(REBUILD_TAIL_BYTES),
        Decoder::new(cfg.max_payload),
        1 << 20,
    );
    let mut batch = Batch::default();
    let mut frames = 0;
    while reader.fill(&mut batch, cfg.batch_size)? > 0 {
        frames += batch.len() as u64;
        stages.remember(&batch);
    }
    Ok(frames)
}

/// Runs until `stop` is triggered, then reads stations until `grace`,
/// delivers what was read within `drain`, and closes the downstream.
///
/// # Errors
/// When the downstream (a file) cannot be opened or a thread cannot start.
pub fn serve(
    listener: TcpListener,
    cfg: &ServeConfig,
    stop: Arc<Shutdown>,
) -> io::Result<ServeSummary> {
    serve_with(listener, cfg, stop, None)
}

/// [`serve`], with the live counters served by `admin` (when given) until
/// it returns.
///
/// # Errors
/// When the downstream (a file) cannot be opened or a thread cannot start.
pub fn serve_with(
    listener: TcpListener,
    cfg: &ServeConfig,
    stop: Arc<Shutdown>,
    admin: Option<AdminServer>,
) -> io::Result<ServeSummary> {
    let hard = Arc::new(Shutdown::default());
    let mut downstream = Downstream::open(
        &cfg.target,
        &cfg.name,
        cfg.unacked_bytes,
        cfg.downstream_timeout,
        cfg.sync_every,
        cfg.forward_tls.clone(),
        Arc::clone(&hard),
    )?;
    let mut stages = BatchProcessor::new(cfg.pipeline);
    if let Target::Out {
        path,
        truncate: false,
    } = &cfg.target
    {
        let n = rebuild_window(path, &mut stages)?;
        if n > 0 {
            tracing::info!(
                frames = n,
                path = %path.display(),
                "window rebuilt from the last {n} frames of {}",
                path.display()
            );
        }
    }
    let metrics = Arc::new(Metrics::default());
    // A satellite that jumps past --max-seq-jump and re-anchors there
    // restarts its gap span rather than opening a gap over the jump.
    metrics.set_gap_limits(GapLimits {
        restart_after_jump: cfg.pipeline.limits.max_seq_jump,
        ..GapLimits::default()
    });
    if downstream.connected_once() {
        metrics.set_downstream_up();
    }
    let done = Arc::new(AtomicBool::new(false));
    let admin = match admin {
        Some(a) => Some(a.spawn(Arc::clone(&metrics), Arc::clone(&done))?),
        None => None,
    };
    // The stats event has a thread of its own, so it goes on ticking while
    // the pipeline is blocked on a slow or absent downstream.
    let ticker = match cfg.stats_interval {
        Some(every) => {
            let (metrics, done, stop) =
                (Arc::clone(&metrics), Arc::clone(&done), Arc::clone(&stop));
            Some(thread::Builder::new().name("stats".into()).spawn(move || {
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    if last.elapsed() >= every {
                        last = Instant::now();
                        metrics.log_stats(stop.requested());
                    }
                    thread::sleep(POLL);
                }
            })?)
        }
        None => None,
    };
    let watchdog = {
        let (stop, hard, done) = (Arc::clone(&stop), Arc::clone(&hard), Arc::clone(&done));
        let limit = cfg.grace + cfg.drain;
        thread::Builder::new()
            .name("deadline".into())
            .spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if stop.hurried() || stop.past(limit) {
                        tracing::warn!(
                            second_signal = stop.hurried(),
                            "hard stop: retrying ends; what is not delivered now is counted unacked"
                        );
                        hard.trigger();
                        break;
                    }
                    thread::sleep(POLL);
                }
                // Past the hard stop every wait gives up within moments; a
                // call that cannot be interrupted (a hung disk or resolver)
                // must not keep the process alive for ever.
                let since = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    if since.elapsed() >= HARD_EXIT_AFTER {
                        tracing::error!(
                            "still blocked {} s after the hard stop; exiting without a summary",
                            HARD_EXIT_AFTER.as_secs()
                        );
                        std::process::exit(1);
                    }
                    thread::sleep(POLL);
                }
            })?
    };
    let (tx, rx) = sync_channel::<Msg>(CHANNEL_CHUNKS);
    let finished = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (stop, hard, cfg) = (Arc::clone(&stop), Arc::clone(&hard), cfg.clone());
        let finished = Arc::clone(&finished);
        let metrics = Arc::clone(&metrics);
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(listener, tx, &cfg, &stop, &hard, &finished, &metrics))?
    };
    let out = pipeline_loop(rx, cfg, &hard, stages, &mut downstream, &metrics);
    // The last ACKs are out: whatever still waits on a delivery, it is not coming.
    finished.store(true, Ordering::SeqCst);
    hard.trigger();
    let conns = acceptor.join().unwrap_or_default();
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if let Some(a) = admin {
        let _ = a.join();
    }
    let d: DownstreamStats = downstream.stats();
    let mut summary = out.summary;
    summary.pipeline.forwarded -= out.unacked_frames;
    summary.pipeline.forwarded_bytes -= out.unacked_bytes;
    let mut stations = out.stations;
    let mut acked_bytes = 0;
    for (st, cell) in stations.iter_mut().zip(&out.cells) {
        st.acked_bytes = cell.acked_bytes();
        st.first_copies = cell.first_copies();
        st.duplicates = cell.duplicates();
        st.unauthorized = cell.unauthorized_frames();
        acked_bytes += st.acked_bytes;
    }
    let unauthorized = stations.iter().map(|s| s.unauthorized).sum();
    Ok(ServeSummary {
        summary,
        gaps: metrics.gap_totals(),
        connections_accepted: conns.accepted,
        connections_rejected: conns.rejected,
        accept_errors: conns.accept_errors,
        hello_errors: conns.hello_errors.load(Ordering::SeqCst),
        auth_failures: metrics.auth_failures(),
        tls_errors: metrics.tls_errors(),
        unauthorized,
        idle_closed: out.idle_closed + conns.evicted,
        acked_bytes,
        resent_bytes: d.resent_bytes,
        downstream_reconnects: d.reconnects,
        connect_failures: d.connect_failures,
        downstream_failures: d.failures,
        unacked_frames: out.unacked_frames,
        unsent_frames: out.unsent_frames,
        latency_us: out.latency,
        ack_latency_us: out.ack_latency,
        stations,
    })
}

#[derive(Debug, Default)]
struct ConnCounts {
    accepted: u64,
    rejected: u64,
    accept_errors: u64,
    evicted: u64,
    hello_errors: Arc<AtomicU64>,
}

/// A live connection as the acceptor sees it: when it last delivered a
/// frame, and a handle to close it.
struct Live {
    last_frame: Arc<Mutex<Instant>>,
    closer: TcpStream,
    gone: Arc<AtomicBool>,
}

/// Frees a connection slot however its thread ends (a panic included).
struct SlotGuard {
    live: Arc<AtomicUsize>,
    gone: Arc<AtomicBool>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    tx: SyncSender<Msg>,
    cfg: &ServeConfig,
    stop: &Arc<Shutdown>,
    hard: &Arc<Shutdown>,
    finished: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
) -> ConnCounts {
    let mut c = ConnCounts::default();
    let live = Arc::new(AtomicUsize::new(0));
    let mut conns: Vec<Live> = Vec::new();
    let mut threads = Vec::new();
    let mut backoff = POLL;
    while !stop.requested() {
        conns.retain(|l| !l.gone.load(Ordering::SeqCst));
        threads.retain(|h: &thread::JoinHandle<()>| !h.is_finished());
        let (stream, peer) = match listener.accept() {
            Ok(x) => {
                backoff = POLL;
                x
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(POLL / 2);
                continue;
            }
            Err(_) => {
                // Out of descriptors, or the like: back off, go on.
                c.accept_errors += 1;
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if live.load(Ordering::SeqCst) >= cfg.max_connections && !make_room(&conns) {
            c.rejected += 1;
            if let Some(suppressed) = LOG_REJECTED.allow() {
                tracing::warn!(
                    %peer,
                    max_connections = cfg.max_connections,
                    suppressed,
                    "connection rejected: at --max-connections and none idle"
                );
            }
            drop(stream); // closed at once; the others are unaffected
            continue;
        } else if live.load(Ordering::SeqCst) >= cfg.max_connections {
            c.evicted += 1;
            if let Some(suppressed) = LOG_IDLE.allow() {
                tracing::info!(
                    %peer,
                    suppressed,
                    "closed the longest-idle connection to make room (--max-connections)"
                );
            }
        }
        let (Ok(closer), Ok(())) = (stream.try_clone(), stream.set_nonblocking(false)) else {
            c.accept_errors += 1;
            continue;
        };
        live.fetch_add(1, Ordering::SeqCst);
        let id = c.accepted;
        c.accepted += 1;
        let last_frame = Arc::new(Mutex::new(Instant::now()));
        let gone = Arc::new(AtomicBool::new(false));
        conns.push(Live {
            last_frame: Arc::clone(&last_frame),
            closer,
            gone: Arc::clone(&gone),
        });
        let guard = SlotGuard {
            live: Arc::clone(&live),
            gone,
        };
        let conn = Conn {
            stream,
            peer,
            tx: tx.clone(),
            cfg: cfg.clone(),
            stop: Arc::clone(stop),
            hard: Arc::clone(hard),
            last_frame,
            hello_errors: Arc::clone(&c.hello_errors),
            finished: Arc::clone(finished),
            metrics: Arc::clone(metrics),
        };
        let spawned = thread::Builder::new()
            .name(format!("station-{id}"))
            .spawn(move || {
                let _guard = guard;
                conn.run();
            });
        match spawned {
            Ok(h) => threads.push(h),
            Err(_) => c.accept_errors += 1, // the guard went with the closure
        }
    }
    tracing::info!(
        grace_ms = cfg.grace.as_millis() as u64,
        drain_ms = cfg.drain.as_millis() as u64,
        "stopping: stations may send for grace_ms, then what was read is delivered within drain_ms"
    );
    drop(listener); // stop accepting
    drop(tx);
    for h in threads {
        let _ = h.join();
    }
    c
}

/// Closes the connection idle the longest, if any has been idle at least
/// [`EVICT_IDLE_AFTER`]. True when one was closed.
fn make_room(conns: &[Live]) -> bool {
    let idlest = conns
        .iter()
        .filter(|l| !l.gone.load(Ordering::SeqCst))
        .map(|l| {
            (
                l.last_frame.lock().map(|t| t.elapsed()).unwrap_or_default(),
                l,
            )
        })
        .max_by_key(|(idle, _)| *idle);
    match idlest {
        Some((idle, l)) if idle >= EVICT_IDLE_AFTER => {
            let _ = l.closer.shutdown(std::net::Shutdown::Both);
            l.gone.store(true, Ordering::SeqCst);
            true
        }
        _ => false,
    }
}

/// One station connection and what its thread needs.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    tx: SyncSender<Msg>,
    cfg: ServeConfig,
    stop: Arc<Shutdown>,
    hard: Arc<Shutdown>,
    last_frame: Arc<Mutex<Instant>>,
    hello_errors: Arc<AtomicU64>,
    /// Set once the pipeline has written its last ACKs.
    finished: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Conn {
    /// Refuses the connection for who it is: counted in `auth_failures`, logged, closed.
    fn refuse(&self, station: &str, why: &str) {
        self.metrics.auth_failure();
        if let Some(suppressed) = LOG_AUTH.allow() {
            tracing::warn!(
                peer = %self.peer,
                station = %crate::log::printable(station),
                suppressed,
                "station refused: {why}"
            );
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The TLS handshake, within `--idle-timeout-ms` (reads time out every
    /// [`POLL`], so a stop is seen). Returns the TLS stream and, with mutual
    /// TLS, the client's identity; `None` when the connection was closed.
    fn tls_accept(&self, server: &ServerTls) -> Option<(TlsReader, Option<String>)> {
        let sock = self.stream.try_clone().ok()?;
        sock.set_read_timeout(Some(POLL)).ok()?;
        sock.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut r = server.accept(sock).ok()?;
        let deadline = Instant::now() + self.cfg.idle_timeout;
        if let Err(e) = r.handshake(deadline, &self.stop) {
            if tls::is_certificate_error(&e) {
                self.refuse("", &format!("client certificate not accepted: {e}"));
                return None;
            }
            if !self.stop.requested() {
                self.metrics.tls_error();
                if let Some(suppressed) = LOG_TLS.allow() {
                    tracing::warn!(peer = %self.peer, error = %e, suppressed, "TLS handshake failed; closed");
                }
            }
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            return None;
        }
        let identity = if server.mutual() {
            match r.conn().peer_identity() {
                Some(id) => Some(id),
                None => {
                    self.refuse(
                        "",
                        "client certificate has no subject common name or DNS name",
                    );
                    return None;
                }
            }
        } else {
            None
        };
        Some((r, identity))
    }

    fn run(mut self) {
        let _ = set_keepalive(&self.stream);
        let (mut tls, identity) = match &self.cfg.tls {
            Some(server) => match self.tls_accept(server) {
                Some((r, id)) => (Some(r), id),
                None => return,
            },
            None => (None, None),
        };
        let cfg = &self.cfg;
        let deadline = Instant::now() + cfg.hello_timeout;
        let opening = match &mut tls {
            Some(r) => session::read_opening_from(r, deadline, &self.stop),
            None => session::read_opening(&mut self.stream, deadline, &self.stop),
        };
        let (opening, leftover) = match opening {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.hello_errors.fetch_add(1, Ordering::SeqCst);
                if let Some(suppressed) = LOG_HELLO.allow() {
                    tracing::warn!(peer = %self.peer, error = %e, suppressed, "bad HELLO; closed");
                }
                return;
            }
            Err(_) => return, // reset before a byte: nothing to count
        };
        if matches!(opening, Opening::NeedMore) && !leftover.is_empty() {
            // Part of a HELLO and no more: a session that would never be acked
            // if taken as a plain stream.
            self.hello_errors.fetch_add(1, Ordering::SeqCst);
            if let Some(suppressed) = LOG_HELLO.allow() {
                tracing::warn!(peer = %self.peer, suppressed, "incomplete HELLO; closed");
            }
            return;
        }
        if let (Some(id), Opening::Session { hello, .. }) = (&identity, &opening) {
            if hello.name != *id {
                self.refuse(
                    &hello.name,
                    &format!("HELLO name differs from its certificate's identity '{id}'"),
                );
                return;
            }
        }
        let session = matches!(opening, Opening::Session { .. });
        // A HELLO name, else the certificate's identity, else the peer address.
        let station = match &opening {
            Opening::Session { hello, .. } if !hello.name.is_empty() => hello.name.clone(),
            _ => identity.clone().unwrap_or_else(|| self.peer.to_string()),
        };
        let allowed = match &cfg.allow {
            Some(list) => match list.get(&station) {
                Some(sats) => Some(sats),
                None => {
                    self.refuse(&station, "not listed in the config file's [stations]");
                    return;
                }
            },
            None => None,
        };
        // From here on the station is known by its registry key.
        let cell = self.metrics.station(&station);
        let station = cell.station.clone();
        cell.connect(&self.peer.to_string(), session);
        if let Some(suppressed) = LOG_CONNECT.allow() {
            tracing::info!(station = %crate::log::printable(&station), peer = %self.peer, session, suppressed, "station connected");
        }
        // ACKs are small and written by the pipeline thread: never let one
        // block it for long on a station that does not read.
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(50)));
        let ack_out = match (&tls, session) {
            (_, false) => None,
            (Some(r), true) => Some(AckOut::Tls(Arc::clone(r.conn()))),
            (None, true) => self.stream.try_clone().ok().map(AckOut::Plain),
        };
        let link = Arc::new(StationLink::new(ack_out, Arc::clone(&cell)));
        let mut counted = DecodeStats::default();
        let mut end = 0u64;
        let idle_closed = std::cell::Cell::new(false);
        let last_frame = Arc::clone(&self.last_frame);
        let (hard, idle_timeout) = (Arc::clone(&self.hard), cfg.idle_timeout);
        let idle_link = Arc::clone(&link);
        let mut idle = || {
            if idle_link.broken() {
                return false;
            }
            let since = last_frame.lock().map(|t| t.elapsed()).unwrap_or_default();
            if since >= idle_timeout {
                idle_closed.set(true);
                return false;
            }
            !hard.requested()
        };
        let opts = ReadOptions {
            decoder: Decoder::new(cfg.pipeline.max_payload),
            chunk: CHUNK_FRAMES,
            grace: cfg.grace,
            poll: POLL * 2,
        };
        let tx = self.tx.clone();
        let mut plain = &self.stream;
        let src: &mut dyn io::Read = match &mut tls {
            Some(r) => r,
            None => &mut plain,
        };
        let mut scratch = Batch::default();
        let read = super::read_frames_after(
            &self.stream,
            src,
            leftover,
            opts,
            &self.stop,
            Some(&mut idle),
            |batch, decoded, read_at| {
                if let Ok(mut t) = self.last_frame.lock() {
                    *t = Instant::now();
                }
                let consumed = decoded.input_bytes;
                end = consumed;
                cell.decoded(&counted, decoded, !batch.is_empty());
                cell.read_to(consumed);
                counted = *decoded;
                if let Some(sats) = &allowed {
                    // Before the pipeline: never forwarded, never in the window.
                    let dropped = sats.retain(batch, &mut scratch);
                    if dropped > 0 {
                        cell.unauthorized(dropped);
                        if let Some(suppressed) = LOG_UNAUTHORIZED.allow() {
                            tracing::warn!(
                                station = %crate::log::printable(&cell.station),
                                frames = dropped,
                                suppressed,
                                "frames for satellites the station may not send dropped (unauthorized)"
                            );
                        }
                    }
                }
                // Blocks while the pipeline pushes back; the pipeline thread
                // goes on ACKing meanwhile.
                let sent = tx
                    .send(Msg::Frames {
                        batch: std::mem::take(batch),
                        read_at,
                        link: Arc::clone(&link),
                        end: consumed,
                    })
                    .is_ok();
                // Time spent pushed back is not idleness.
                if let Ok(mut t) = self.last_frame.lock() {
                    *t = Instant::now();
                }
                sent
            },
        );
        // A socket that cannot be set up ends like a reset, with nothing decoded.
        let (stats, reset) = match read {
            Ok((_, stats)) => (stats, None),
            Err(e) => (DecodeStats::default(), Some(e)),
        };
        match (&reset, idle_closed.get()) {
            (Some(e), _) => {
                if let Some(suppressed) = LOG_DISCONNECT.allow() {
                    tracing::warn!(station = %crate::log::printable(&station), peer = %self.peer, error = %e, suppressed, "station connection reset");
                }
            }
            (None, true) => {
                if let Some(suppressed) = LOG_IDLE.allow() {
                    tracing::info!(
                        station = %crate::log::printable(&station),
                        peer = %self.peer,
                        idle_ms = cfg.idle_timeout.as_millis() as u64,
                        suppressed,
                        "station closed: idle"
                    );
                }
            }
            (None, false) => {
                if let Some(suppressed) = LOG_DISCONNECT.allow() {
                    tracing::info!(
                        station = %crate::log::printable(&station),
                        peer = %self.peer,
                        frames = stats.frames_decoded,
                        bytes = stats.input_bytes,
                        suppressed,
                        "station disconnected"
                    );
                }
            }
        }
        // What was decoded after the last chunk (bad headers, say).
        cell.decoded(&counted, &stats, false);
        let _ = tx.send(Msg::Closed(Box::new(ClosedConn {
            station,
            peer: self.peer,
            session,
            stats,
            cell: Arc::clone(&cell),
            idle_closed: idle_closed.get(),
        })));
        // Let the pipeline see the end of input while this connection waits
        // for its last frames to be delivered and acked.
        drop(tx);
        drop(self.tx);
        if session {
            // Until the pipeline has written its last ACKs (it goes on past
            // the hard stop just long enough to force them out).
            while link.sent.load(Ordering::SeqCst) < end
                && !link.broken()
                && !self.finished.load(Ordering::SeqCst)
            {
                thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        cell.disconnect();
    }
}

/// TCP keepalive, so a peer that vanished without a FIN is noticed.
fn set_keepalive(s: &TcpStream) -> io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    socket2::SockRef::from(s).set_tcp_keepalive(&ka)
}

/// A batch handed to the downstream and not yet confirmed.
struct Pending {
    /// The downstream's logical position at the end of its output.
    end: u64,
    frames: u64,
    bytes: u64,
    /// Station connections' offsets that become safe with it.
    acks: Vec<(Arc<StationLink>, u64)>,
    /// When its forwarded frames were read.
    read_at: Vec<Instant>,
}

struct Outcome {
    summary: Summary,
    stations: Vec<StationStats>,
    /// Per station entry, its registry cell (for the acked bytes).
    cells: Vec<Arc<StationCell>>,
    idle_closed: u64,
    latency: Latency,
    ack_latency: Latency,
    unacked_frames: u64,
    unacked_bytes: u64,
    unsent_frames: u64,
}

/// The batch being gathered and everything needed to forward it.
struct Forwarder<'a> {
    cfg: &'a ServeConfig,
    downstream: &'a mut Downstream,
    stages: BatchProcessor,
    batch: Batch,
    /// When each row's bytes were read.
    read_at: Vec<Instant>,
    /// Each row's station: an index into `origins`.
    origin: Vec<u16>,
    /// The stations of the batch's rows.
    origins: Vec<Arc<StationCell>>,
    /// Per origin: (frames kept, valid frames), counted once per batch.
    tally: Vec<(u64, u64)>,
    first_at: Option<Instant>,
    acks: Vec<(Arc<StationLink>, u64)>,
    /// Links whose safe offset moved and that still owe an ACK.
    owed: Vec<Arc<StationLink>>,
    out: Vec<u8>,
    pending: VecDeque<Pending>,
    hist: hdrhistogram::Histogram<u64>,
    ack_hist: hdrhistogram::Histogram<u64>,
    unsent_frames: u64,
    unsent_bytes: u64,
    reported: bool,
    metrics: &'a Metrics,
    /// The pipeline's counters as last published to `metrics`.
    published: PipelineStats,
}

impl Forwarder<'_> {
    fn push(&mut self, chunk: &Batch, at: Instant, link: Arc<StationLink>, end: u64) {
        let n = chunk.len();
        if n == 0 {
            // Every frame of the chunk was dropped before the pipeline
            // (unauthorized): its end is safe with whatever came before it.
            if !self.batch.is_empty() {
                self.acks.push((link, end));
            } else if let Some(last) = self.pending.back_mut() {
                last.acks.push((link, end));
            } else {
                link.advance(end);
                if !self.owed.iter().any(|l| Arc::ptr_eq(l, &link)) {
                    self.owed.push(link);
                }
            }
            return;
        }
        let mut origin = None;
        for i in 0..n {
            if self.batch.is_empty() {
                self.first_at = Some(at);
                origin = None; // a flush forgot the origins
            }
            let o = match origin {
                Some(o) => o,
                None => {
                    let o = self.origin_of(&link.cell);
                    origin = Some(o);
                    o
                }
            };
            self.origin.push(o);
            self.batch
                .push(chunk.sat[i], chunk.seq[i], chunk.flags[i], chunk.frame(i));
            self.read_at.push(at);
            if i + 1 == n {
                // The chunk's end is safe once the batch with its last frame is.
                self.acks.push((Arc::clone(&link), end));
            }
            if self.batch.len() >= self.cfg.pipeline.batch_size {
                self.flush();
            }
        }
    }

    /// The index of `cell` among this batch's origins.
    fn origin_of(&mut self, cell: &Arc<StationCell>) -> u16 {
        if let Some(i) = self.origins.iter().rposition(|c| Arc::ptr_eq(c, cell)) {
            return i as u16;
        }
        self.origins.push(Arc::clone(cell));
        (self.origins.len() - 1) as u16
    }

    /// Per station of the batch: frames kept (first copies) and valid
    /// frames not kept, published once per batch.
    fn tally_origins(&mut self) {
        self.tally.clear();
        self.tally.resize(self.origins.len(), (0, 0));
        for &r in self.stages.row_ids() {
            self.tally[self.origin[r as usize] as usize].0 += 1;
        }
        let max_sat = self.cfg.pipeline.max_sat;
        for (i, &o) in self.origin.iter().enumerate() {
            if is_valid(self.batch.sat[i], self.batch.flags[i], max_sat) {
                self.tally[o as usize].1 += 1;
            }
        }
        for (cell, &(kept, valid)) in self.origins.iter().zip(&self.tally) {
            cell.kept(kept, valid.saturating_sub(kept));
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.out.clear();
        self.stages
            .process(&self.batch, &mut self.out, &mut ())
            .expect("writing into a Vec cannot fail");
        self.metrics
            .observe_gaps(&self.batch, self.stages.row_ids());
        self.tally_origins();
        let now_stats = self.stages.stats();
        log_window_events(&self.published, &now_stats);
        self.metrics.pipeline(&self.published, &now_stats);
        self.published = now_stats;
        let frames = self.stages.row_ids().len() as u64;
        let bytes = self.out.len() as u64;
        let read_at: Vec<Instant> = self
            .stages
            .row_ids()
            .iter()
            .map(|&r| self.read_at[r as usize])
            .collect();
        match self.downstream.send(&self.out) {
            Ok(()) => {
                let now = Instant::now();
                let mut lat = LatencyBatch::default();
                for t in &read_at {
                    let us = now.duration_since(*t).as_micros() as u64;
                    self.hist.saturating_record(us.max(1));
                    lat.record(us);
                }
                self.metrics.latency(&lat);
                let end = self.downstream.sent();
                match self.pending.back_mut() {
                    // Nothing new went out (all copies, say): its offsets
                    // become safe with the batch before, and the queue does
                    // not grow while the downstream is slow to ACK.
                    Some(last) if last.end == end => {
                        last.frames += frames;
                        last.bytes += bytes;
                        last.acks.append(&mut self.acks);
                        last.acks
                            .sort_by_key(|(l, off)| (Arc::as_ptr(l), std::cmp::Reverse(*off)));
                        last.acks.dedup_by(|a, b| Arc::ptr_eq(&a.0, &b.0));
                        last.read_at.extend(read_at);
                    }
                    _ => self.pending.push_back(Pending {
                        end,
                        frames,
                        bytes,
                        acks: std::mem::take(&mut self.acks),
                        read_at,
                    }),
                }
            }
            Err(e) => {
                // Only after the hard stop: these frames and their stations'
                // offsets are never confirmed.
                self.unsent_frames += frames;
                self.unsent_bytes += bytes;
                self.acks.clear();
                if !self.reported {
                    tracing::error!(error = %e, "giving up on the downstream");
                    self.reported = true;
                }
            }
        }
        self.batch.clear();
        self.read_at.clear();
        self.origin.clear();
        self.origins.clear();
        self.first_at = None;
    }

    /// Takes the downstream's confirmations (polling it first, unless it is
    /// closed) and makes station offsets safe.
    fn release(&mut self, poll: bool) {
        if poll {
            let _ = self.downstream.poll();
        }
        let delivered = self.downstream.delivered();
        let now = Instant::now();
        while self.pending.front().is_some_and(|p| p.end <= delivered) {
            let p = self.pending.pop_front().expect("looked at above");
            self.metrics.delivered(p.frames);
            for (link, off) in &p.acks {
                link.advance(*off);
                if !self.owed.iter().any(|l| Arc::ptr_eq(l, link)) {
                    self.owed.push(Arc::clone(link));
                }
            }
            for t in &p.read_at {
                let us = now.duration_since(*t).as_micros() as u64;
                self.ack_hist.saturating_record(us.max(1));
            }
        }
        self.metrics
            .set_unacked_bytes(self.downstream.sent().saturating_sub(delivered));
        if !self.metrics.downstream_up() && self.downstream.connected_once() {
            self.metrics.set_downstream_up();
        }
        let (every, force) = (self.cfg.ack_interval / 2, !poll);
        self.owed.retain(|l| l.flush(every, force));
    }
}

/// Per-station counters keyed by station. The keys come from the
/// [`Metrics`] registry, which caps them at [`MAX_STATION_ENTRIES`].
#[derive(Default)]
struct StationTable {
    index: HashMap<String, usize>,
    entries: Vec<StationStats>,
    /// Each entry's registry cell, which counts its ACKed bytes as they are
    /// written (one per station, however often it reconnects).
    cells: Vec<Arc<StationCell>>,
    idle_closed: u64,
}

impl StationTable {
    fn add(&mut self, c: &ClosedConn) {
        let key = c.station.as_str();
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                self.entries.push(StationStats {
                    station: key.to_string(),
                    ..StationStats::default()
                });
                self.cells.push(Arc::clone(&c.cell));
                self.index.insert(key.to_string(), self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        let e = &mut self.entries[i];
        e.peer = c.peer.to_string();
        e.connections += 1;
        e.sessions += u64::from(c.session);
        e.idle_closed += u64::from(c.idle_closed);
        self.idle_closed += u64::from(c.idle_closed);
        e.decode.add(&c.stats);
    }
}

fn pipeline_loop(
    rx: Receiver<Msg>,
    cfg: &ServeConfig,
    hard: &Shutdown,
    stages: BatchProcessor,
    downstream: &mut Downstream,
    metrics: &Metrics,
) -> Outcome {
    let pc = cfg.pipeline;
    let new_hist =
        || hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let mut f = Forwarder {
        cfg,
        downstream,
        stages,
        batch: Batch::with_capacity(pc.batch_size, 64),
        read_at: Vec::with_capacity(pc.batch_size),
        origin: Vec::with_capacity(pc.batch_size),
        origins: Vec::new(),
        tally: Vec::new(),
        first_at: None,
        acks: Vec::new(),
        owed: Vec::new(),
        out: Vec::new(),
        pending: VecDeque::new(),
        hist: new_hist(),
        ack_hist: new_hist(),
        unsent_frames: 0,
        unsent_bytes: 0,
        reported: false,
        metrics,
        published: PipelineStats::default(),
    };
    let mut decode = DecodeStats::default();
    let mut table = StationTable::default();
    let tick = (cfg.ack_interval / 2).clamp(Duration::from_millis(1), POLL);
    loop {
        let timeout = match f.first_at {
            Some(t) => (t + cfg.max_delay)
                .saturating_duration_since(Instant::now())
                .min(tick),
            None => tick,
        };
        match rx.recv_timeout(timeout) {
            Ok(Msg::Frames {
                batch,
                read_at,
                link,
                end,
            }) => f.push(&batch, read_at, link, end),
            Ok(Msg::Closed(c)) => {
                decode.add(&c.stats);
                table.add(&c);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // While chunks keep coming, recv never times out: enforce the delay here.
        if f.first_at.is_some_and(|t| t.elapsed() >= cfg.max_delay) {
            f.flush();
        }
        f.release(true);
    }
    f.flush();
    // Drain: deliver what was read, until the hard stop.
    while !f.pending.is_empty() && !hard.requested() {
        f.release(true);
        if !f.pending.is_empty() {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = if hard.requested() {
        Instant::now()
    } else {
        Instant::now() + Duration::from_millis(500)
    };
    f.downstream.finish(deadline);
    f.release(false);
    let unacked_frames = f.unsent_frames + f.pending.iter().map(|p| p.frames).sum::<u64>();
    let unacked_bytes = f.unsent_bytes + f.pending.iter().map(|p| p.bytes).sum::<u64>();
    Outcome {
        summary: Summary::new(decode, f.stages.stats()),
        stations: table.entries,
        cells: table.cells,
        idle_closed: table.idle_closed,
        latency: Latency::of(&f.hist),
        ack_latency: Latency::of(&f.ack_hist),
        unacked_frames,
        unacked_bytes,
        unsent_frames: f.unsent_frames,
    }
}
