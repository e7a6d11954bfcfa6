//! `serve`: many ground stations in, one downstream out.
//!
//! Each accepted station gets a thread that reads and decodes its own stream
//! into small chunks and sends them over a bounded channel. The pipeline
//! thread gathers the chunks, in the order they arrive, into batches that
//! close at `batch_size` frames or `max_delay` after their first frame,
//! whichever comes first, and runs the same validate, dedup, window and
//! ordering as `process`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::downstream::{Downstream, DownstreamStats};
use super::Shutdown;
use crate::batch::Batch;
use crate::decode::{DecodeStats, Decoder};
use crate::pipeline::{BatchProcessor, Config, Summary};

/// Frames a station thread decodes before handing them over.
const CHUNK_FRAMES: usize = 256;
/// Chunks in flight between the stations and the pipeline: the bound on
/// buffered frames (with one chunk held by each blocked station thread).
const CHANNEL_CHUNKS: usize = 64;
/// How often idle threads look at the shutdown flag.
const POLL: Duration = Duration::from_millis(20);

/// Where forwarded frames go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TCP consumer at HOST:PORT.
    Forward(String),
    /// A file.
    Out(PathBuf),
}

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The pipeline's options.
    pub pipeline: Config,
    /// Where frames go.
    pub target: Target,
    /// A batch closes this long after its first frame at the latest.
    pub max_delay: Duration,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Print a stats line this often.
    pub stats_interval: Option<Duration>,
    /// After a stop is asked for: how long stations may go on sending, and
    /// how long an absent downstream is retried, each.
    pub grace: Duration,
}

/// One station connection's counters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StationStats {
    /// Peer address.
    pub peer: String,
    /// What its decoder counted.
    #[serde(flatten)]
    pub decode: DecodeStats,
}

/// Read-to-forward latency percentiles, in microseconds.
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

/// What `serve` prints at the end.
#[derive(Debug, Clone, Serialize)]
pub struct ServeSummary {
    /// The `process` counters, over all stations.
    #[serde(flatten)]
    pub summary: Summary,
    /// Station connections taken.
    pub connections_accepted: u64,
    /// Connections closed at once for being over `--max-connections`.
    pub connections_rejected: u64,
    /// Frames sent to the downstream again after a reconnect.
    pub resent_frames: u64,
    /// Downstream reconnects.
    pub downstream_reconnects: u64,
    /// Failed attempts to connect to the downstream.
    pub connect_failures: u64,
    /// Frames that could not be delivered before exit (downstream gone at shutdown).
    pub unsent_frames: u64,
    /// Read-to-forward latency.
    pub latency_us: Latency,
    /// Per station, in the order they connected.
    pub stations: Vec<StationStats>,
}

enum Msg {
    Frames {
        batch: Batch,
        read_at: Instant,
    },
    Closed {
        station: usize,
        peer: SocketAddr,
        stats: DecodeStats,
    },
}

/// A bound listener, ready to [`serve`].
pub fn bind(listen: &str) -> io::Result<TcpListener> {
    let l = TcpListener::bind(listen)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs until `stop` is triggered and every station has closed or the grace
/// period has passed, then flushes every batch and closes the downstream.
pub fn serve(
    listener: TcpListener,
    cfg: &ServeConfig,
    stop: Arc<Shutdown>,
) -> io::Result<ServeSummary> {
    let mut downstream = match &cfg.target {
        Target::Forward(addr) => Downstream::tcp(addr),
        Target::Out(path) => Downstream::file(path)?,
    };
    let (tx, rx) = sync_channel::<Msg>(CHANNEL_CHUNKS);
    let live = Arc::new(AtomicUsize::new(0));
    let acceptor = {
        let (stop, live, cfg) = (Arc::clone(&stop), Arc::clone(&live), cfg.clone());
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(listener, tx, &cfg, &stop, &live))?
    };
    let result = pipeline_loop(rx, cfg, &stop, &mut downstream);
    let (accepted, rejected) = acceptor.join().expect("the accept thread does not panic");
    let (summary, stations, latency, unsent) = result?;
    downstream.finish()?;
    let d: DownstreamStats = downstream.stats();
    Ok(ServeSummary {
        summary,
        connections_accepted: accepted,
        connections_rejected: rejected,
        resent_frames: d.resent_frames,
        downstream_reconnects: d.reconnects,
        connect_failures: d.connect_failures,
        unsent_frames: unsent,
        latency_us: latency,
        stations,
    })
}

fn accept_loop(
    listener: TcpListener,
    tx: SyncSender<Msg>,
    cfg: &ServeConfig,
    stop: &Arc<Shutdown>,
    live: &Arc<AtomicUsize>,
) -> (u64, u64) {
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut threads = Vec::new();
    while !stop.requested() {
        match listener.accept() {
            Ok((stream, peer)) => {
                if live.load(Ordering::SeqCst) >= cfg.max_connections {
                    rejected += 1;
                    drop(stream); // closed at once; the others are unaffected
                    continue;
                }
                live.fetch_add(1, Ordering::SeqCst);
                let id = accepted as usize;
                accepted += 1;
                let (tx, stop, mine) = (tx.clone(), Arc::clone(stop), Arc::clone(live));
                let (max_payload, grace) = (cfg.pipeline.max_payload, cfg.grace);
                let spawned =
                    thread::Builder::new()
                        .name(format!("station-{id}"))
                        .spawn(move || {
                            station(id, stream, peer, &tx, max_payload, &stop, grace);
                            mine.fetch_sub(1, Ordering::SeqCst);
                        });
                match spawned {
                    Ok(h) => threads.push(h),
                    Err(_) => {
                        live.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL / 4),
            Err(_) => thread::sleep(POLL / 4),
        }
        threads.retain(|h| !h.is_finished());
    }
    drop(listener); // stop accepting
    drop(tx);
    for h in threads {
        let _ = h.join();
    }
    (accepted, rejected)
}

/// One station: read, decode, hand over chunks; at the end, its counters.
fn station(
    id: usize,
    mut stream: TcpStream,
    peer: SocketAddr,
    tx: &SyncSender<Msg>,
    max_payload: u16,
    stop: &Shutdown,
    grace: Duration,
) {
    let decoder = Decoder::new(max_payload);
    let read = super::read_frames(
        &mut stream,
        decoder,
        CHUNK_FRAMES,
        stop,
        grace,
        |batch, read_at| {
            // The pipeline owns the chunk from here; the reader starts a new one.
            let batch = std::mem::take(batch);
            tx.send(Msg::Frames { batch, read_at }).is_ok()
        },
    );
    // A socket that cannot be set up ends like a reset, with nothing decoded.
    let stats = read.map(|(_, stats)| stats).unwrap_or_default();
    let _ = tx.send(Msg::Closed {
        station: id,
        peer,
        stats,
    });
}

type Outcome = (Summary, Vec<StationStats>, Latency, u64);

/// The batch being gathered and everything needed to forward it.
struct Forwarder<'a> {
    cfg: &'a ServeConfig,
    stop: &'a Shutdown,
    downstream: &'a mut Downstream,
    stages: BatchProcessor,
    batch: Batch,
    /// When each row's bytes were read.
    read_at: Vec<Instant>,
    first_at: Option<Instant>,
    out: Vec<u8>,
    hist: hdrhistogram::Histogram<u64>,
    unsent: u64,
}

impl Forwarder<'_> {
    fn push(&mut self, chunk: &Batch, at: Instant) -> io::Result<()> {
        for i in 0..chunk.len() {
            if self.batch.is_empty() {
                self.first_at = Some(at);
            }
            self.batch
                .push(chunk.sat[i], chunk.seq[i], chunk.flags[i], chunk.frame(i));
            self.read_at.push(at);
            if self.batch.len() >= self.cfg.pipeline.batch_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.out.clear();
        self.stages.process(&self.batch, &mut self.out, &mut ())?;
        let frames = self.stages.row_ids().len() as u64;
        match self
            .downstream
            .send(&self.out, frames, self.stop, self.cfg.grace)
        {
            Ok(()) => {
                let now = Instant::now();
                for &r in self.stages.row_ids() {
                    let us = now.duration_since(self.read_at[r as usize]).as_micros() as u64;
                    self.hist.saturating_record(us.max(1));
                }
            }
            Err(e) => {
                self.unsent += frames;
                eprintln!("error: {e}; {frames} frames not delivered");
            }
        }
        self.batch.clear();
        self.read_at.clear();
        self.first_at = None;
        Ok(())
    }
}

fn pipeline_loop(
    rx: Receiver<Msg>,
    cfg: &ServeConfig,
    stop: &Shutdown,
    downstream: &mut Downstream,
) -> io::Result<Outcome> {
    let pc = cfg.pipeline;
    let mut f = Forwarder {
        cfg,
        stop,
        downstream,
        stages: BatchProcessor::new(pc),
        batch: Batch::with_capacity(pc.batch_size, 64),
        read_at: Vec::with_capacity(pc.batch_size),
        first_at: None,
        out: Vec::new(),
        hist: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        unsent: 0,
    };
    let mut decode = DecodeStats::default();
    let mut stations: Vec<StationStats> = Vec::new();
    let mut last_stats = Instant::now();
    loop {
        let timeout = match f.first_at {
            Some(t) => (t + cfg.max_delay).saturating_duration_since(Instant::now()),
            None => POLL,
        };
        match rx.recv_timeout(timeout) {
            Ok(Msg::Frames { batch, read_at }) => {
                f.push(&batch, read_at)?;
                // While chunks keep coming, recv never times out: enforce
                // the delay here too.
                if f.first_at.is_some_and(|t| t.elapsed() >= cfg.max_delay) {
                    f.flush()?;
                }
            }
            Ok(Msg::Closed {
                station,
                peer,
                stats,
            }) => {
                decode.add(&stats);
                if stations.len() <= station {
                    stations.resize(station + 1, StationStats::default());
                }
                stations[station] = StationStats {
                    peer: peer.to_string(),
                    decode: stats,
                };
            }
            Err(RecvTimeoutError::Timeout) => {
                if f.first_at.is_some_and(|t| t.elapsed() >= cfg.max_delay) {
                    f.flush()?;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(every) = cfg.stats_interval {
            if last_stats.elapsed() >= every {
                last_stats = Instant::now();
                let s = f.stages.stats();
                eprintln!(
                    "serve: {} forwarded, {} duplicates, {} invalid, {} batches, p99 {} us",
                    s.forwarded,
                    s.duplicates,
                    s.invalid,
                    s.batches,
                    f.hist.value_at_quantile(0.99)
                );
            }
        }
    }
    f.flush()?;
    let latency = Latency {
        p50: f.hist.value_at_quantile(0.50),
        p99: f.hist.value_at_quantile(0.99),
        p999: f.hist.value_at_quantile(0.999),
        frames: f.hist.len(),
    };
    Ok((
        Summary::new(decode, f.stages.stats()),
        stations,
        latency,
        f.unsent,
    ))
}
