//! `gen --connect`: play the ground stations. One connection per station,
//! each sending exactly that station's stream from `gen` with the same seed
//! and options, optionally paced.
//!
//! [`send_stations_with`] runs each station as a session
//! ([`super::client::SessionClient`]): every frame is kept until the server
//! ACKs it, and a fault means a reconnect and a resend from the last ACK.
//! Its [`SendReport`] says how many frames and bytes were acked; the command
//! succeeds only when all were. [`send_stations`] is the plain stream of
//! before (no HELLO, no ACKs), for servers that do not speak sessions.

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{ClientOptions, ClientStats, SessionClient};
use super::Shutdown;
use crate::harness::gen::{station_streams, GenConfig};

/// Frames written per push when not paced.
const BURST: usize = 64;

/// Options of [`send_stations_with`].
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Frames per second per station; `None`: as fast as the server takes
    /// them.
    pub rate: Option<f64>,
    /// Station `i` sends HELLO name `<name_prefix><i>` (`station-0`, ...).
    pub name_prefix: String,
    /// Plain streams: no HELLO, no ACKs; a frame counts as delivered once
    /// written (at-most-once).
    pub raw: bool,
    /// After a station's last frame is pushed, how long to wait for the
    /// last ACK before giving up.
    pub ack_timeout: Duration,
    /// Give up on a station when its acked position has not advanced for
    /// this long while frames are outstanding (no server, a server that
    /// closes every connection, one that never reads or never ACKs).
    pub reconnect_deadline: Duration,
    /// The rest of the client's options (`name`, `raw` and `give_up` are set
    /// from the fields above).
    pub client: ClientOptions,
}

impl Default for SendOptions {
    fn default() -> SendOptions {
        SendOptions {
            rate: None,
            name_prefix: "station-".into(),
            raw: false,
            ack_timeout: Duration::from_secs(30),
            reconnect_deadline: Duration::from_secs(30),
            client: ClientOptions::default(),
        }
    }
}

/// How one station's stream went.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StationReport {
    /// The HELLO name.
    pub name: String,
    /// Frames in its stream.
    pub frames: u64,
    /// Bytes in its stream.
    pub bytes: u64,
    /// Frames acked (all of their bytes before the acked position).
    pub acked_frames: u64,
    /// Bytes acked.
    pub acked_bytes: u64,
    /// Why it ended early, if it did.
    pub error: Option<String>,
    /// The client's counters.
    pub client: ClientStats,
}

/// How all stations went.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SendReport {
    /// Frames in all streams.
    pub frames: u64,
    /// Bytes in all streams.
    pub bytes: u64,
    /// Frames acked.
    pub acked_frames: u64,
    /// Bytes acked.
    pub acked_bytes: u64,
    /// Frames not acked: `frames - acked_frames`.
    pub unacked_frames: u64,
    /// Bytes not acked.
    pub unacked_bytes: u64,
    /// Reconnects, summed over the stations.
    pub reconnects: u64,
    /// Bytes written again after faults, summed.
    pub resent_bytes: u64,
    /// Failed connection attempts, summed.
    pub connect_failures: u64,
    /// Each station.
    pub stations: Vec<StationReport>,
}

impl SendReport {
    /// True when every frame was acked: exit 0 only then.
    pub fn all_acked(&self) -> bool {
        self.unacked_frames == 0
    }
}

/// Sends each station's stream over its own session to `addr`, at
/// `opts.rate` frames per second per station when given, keeping every
/// frame until it is acked, reconnecting and resending after faults. Every
/// station ends: all acked, `ack_timeout` after its last push,
/// `reconnect_deadline` without progress, or a stop. Errors only when a
/// station thread could not run; delivery failures are in the report.
///
/// # Errors
/// When a station thread cannot be started or panicked.
pub fn send_stations_with(
    addr: &str,
    cfg: &GenConfig,
    opts: &SendOptions,
    stop: Arc<Shutdown>,
) -> io::Result<SendReport> {
    let streams = station_streams(cfg);
    let mut handles = Vec::with_capacity(streams.len());
    for (i, s) in streams.into_iter().enumerate() {
        let addr = addr.to_string();
        let mut copts = opts.client.clone();
        copts.name = format!("{}{i}", opts.name_prefix);
        copts.raw = opts.raw;
        copts.give_up = Some(opts.reconnect_deadline);
        let (rate, ack_timeout, stop) = (opts.rate, opts.ack_timeout, Arc::clone(&stop));
        let h = thread::Builder::new()
            .name(format!("station-{i}"))
            .spawn(move || {
                let name = copts.name.clone();
                let mut client = SessionClient::new(&addr, copts, stop);
                let error = run_station(&mut client, &s.bytes, &s.ends, rate, ack_timeout)
                    .err()
                    .map(|e| e.to_string());
                let acked = client.acked();
                StationReport {
                    name,
                    frames: s.ends.len() as u64,
                    bytes: s.bytes.len() as u64,
                    acked_frames: s.ends.partition_point(|&e| e as u64 <= acked) as u64,
                    acked_bytes: acked,
                    error,
                    client: client.stats(),
                }
            })?;
        handles.push(h);
    }
    let mut report = SendReport::default();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| io::Error::other("a station thread panicked"))?;
        report.frames += s.frames;
        report.bytes += s.bytes;
        report.acked_frames += s.acked_frames;
        report.acked_bytes += s.acked_bytes;
        report.reconnects += s.client.reconnects;
        report.resent_bytes += s.client.resent_bytes;
        report.connect_failures += s.client.connect_failures;
        report.stations.push(s);
    }
    report.unacked_frames = report.frames - report.acked_frames;
    report.unacked_bytes = report.bytes - report.acked_bytes;
    Ok(report)
}

/// Pushes one station's frames, paced, then waits for the last ACK and
/// closes.
fn run_station(
    client: &mut SessionClient,
    bytes: &[u8],
    ends: &[usize],
    rate: Option<f64>,
    ack_timeout: Duration,
) -> io::Result<()> {
    let start = Instant::now();
    let mut from = 0usize;
    // Paced: one push per millisecond's worth of frames, each sent when it
    // is due, so pacing costs no busy loop.
    let per_push = rate.map_or(BURST, |r| ((r / 1000.0) as usize).max(1));
    let mut sent = 0usize;
    for chunk in ends.chunks(per_push) {
        let Some(&to) = chunk.last() else { continue };
        client.push(&bytes[from..to])?;
        from = to;
        sent += chunk.len();
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
    }
    let done = client.wait_acked(Instant::now() + ack_timeout);
    client.close(Duration::from_secs(1));
    done
}

/// Connects one plain stream per station to `addr` (retrying for up to
/// 5 s) and sends each station's stream, at `rate` frames per second per
/// station when given. Returns the bytes sent. No HELLO and no ACKs: what
/// a server had not read when it failed is lost; see [`send_stations_with`]
/// for sessions.
///
/// # Errors
/// The first connect or write error of any station.
pub fn send_stations(addr: &str, cfg: &GenConfig, rate: Option<f64>) -> io::Result<u64> {
    let opts = SendOptions {
        rate,
        raw: true,
        reconnect_deadline: Duration::from_secs(5),
        ..SendOptions::default()
    };
    let report = send_stations_with(addr, cfg, &opts, Arc::new(Shutdown::default()))?;
    if let Some(e) = report.stations.iter().find_map(|s| s.error.as_ref()) {
        return Err(io::Error::other(format!(
            "{} of {} frames not sent: {e}",
            report.unacked_frames, report.frames
        )));
    }
    Ok(report.acked_bytes)
}
