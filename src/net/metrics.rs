//! The live counters behind `serve --admin`: one [`Metrics`] registry,
//! shared between serve's pipeline thread, its station threads and the
//! admin HTTP thread ([`super::admin`]).
//!
//! Writers update it per batch (the pipeline thread, from the deltas of
//! [`PipelineStats`]) or per decoded chunk (a station thread, through the
//! [`StationCell`] it took when its connection opened), never per frame:
//! a handful of relaxed atomic additions each time. The admin thread only
//! reads. Stations are keyed like serve's summary (HELLO name, or peer
//! address for a plain stream) and capped at
//! [`super::serve::MAX_STATION_ENTRIES`] entries, the last one being
//! [`super::serve::OTHER_STATIONS`]; the key is decided when a connection
//! opens, and the summary uses the same key.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::serve::{MAX_STATION_ENTRIES, OTHER_STATIONS};
use crate::batch::Batch;
use crate::decode::DecodeStats;
use crate::gaps::{GapLimits, GapReport, GapTotals, GapTracker};
use crate::pipeline::PipelineStats;

/// Upper bounds, in seconds, of `meridian_forward_latency_seconds`'s
/// buckets (`+Inf` comes on top).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`LATENCY_BUCKETS`] in microseconds, for comparing without floats.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// One station's live counters, over all its connections.
#[derive(Debug)]
pub struct StationCell {
    /// The key: HELLO name, peer address, or [`OTHER_STATIONS`].
    pub station: String,
    frames: AtomicU64,
    bytes: AtomicU64,
    crc_errors: AtomicU64,
    bad_header: AtomicU64,
    /// Connections open now.
    connected: AtomicU64,
    /// Unix milliseconds of the last chunk of frames; 0 = none yet.
    last_frame_ms: AtomicU64,
    /// Unix seconds at which the last connection opened.
    connected_since: AtomicU64,
    acked_bytes: AtomicU64,
    /// Frames of this station that were the copy kept (forwarded).
    first_copies: AtomicU64,
    /// Valid frames of this station that were not the copy kept.
    duplicates: AtomicU64,
    /// Frames for satellites the station may not send, dropped.
    unauthorized: AtomicU64,
    /// The last connection: a session (acked) or a plain stream.
    session: AtomicBool,
    /// The last connection's stream offset read so far.
    session_read: AtomicU64,
    /// The last connection's stream offset acked so far.
    session_acked: AtomicU64,
    /// (unix ms, frames) once a second, the last [`RATE_SAMPLES`], for the rates.
    samples: Mutex<VecDeque<(u64, u64)>>,
    peer: Mutex<String>,
}

/// Samples of each station's frame count kept for its rates (one a second).
const RATE_SAMPLES: usize = 62;

impl StationCell {
    fn new(station: &str) -> StationCell {
        StationCell {
            station: station.to_string(),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            crc_errors: AtomicU64::new(0),
            bad_header: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            last_frame_ms: AtomicU64::new(0),
            connected_since: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            first_copies: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            session: AtomicBool::new(false),
            session_read: AtomicU64::new(0),
            session_acked: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::with_capacity(RATE_SAMPLES)),
            peer: Mutex::new(String::new()),
        }
    }

    /// Adds what a connection's decoder counted since `before` (per chunk).
    pub fn decoded(&self, before: &DecodeStats, now: &DecodeStats, frames_now: bool) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let r = Ordering::Relaxed;
        self.frames
            .fetch_add(d(now.frames_decoded, before.frames_decoded), r);
        self.bytes
            .fetch_add(d(now.input_bytes, before.input_bytes), r);
        self.crc_errors
            .fetch_add(d(now.crc_errors, before.crc_errors), r);
        self.bad_header
            .fetch_add(d(now.bad_header, before.bad_header), r);
        if frames_now {
            self.last_frame_ms
                .store(unix_now().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Counts `bytes` more of this station's stream acked, up to `offset`
    /// of its current session.
    pub fn acked(&self, bytes: u64, offset: u64) {
        self.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.session_acked.store(offset, Ordering::Relaxed);
    }

    /// Records how far the current connection's stream has been read (per chunk).
    pub fn read_to(&self, offset: u64) {
        self.session_read.store(offset, Ordering::Relaxed);
    }

    /// Adds one batch's count of this station's frames kept (forwarded as
    /// the first copy) and of its valid frames not kept.
    pub fn kept(&self, first: u64, not_kept: u64) {
        if first > 0 {
            self.first_copies.fetch_add(first, Ordering::Relaxed);
        }
        if not_kept > 0 {
            self.duplicates.fetch_add(not_kept, Ordering::Relaxed);
        }
    }

    /// Counts `frames` more of this station's frames dropped for
    /// satellites it may not send.
    pub fn unauthorized(&self, frames: u64) {
        self.unauthorized.fetch_add(frames, Ordering::Relaxed);
    }

    /// Frames of this station that were the copy kept.
    pub fn first_copies(&self) -> u64 {
        self.first_copies.load(Ordering::Relaxed)
    }

    /// Valid frames of this station that were not the copy kept.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Frames of this station dropped as unauthorized.
    pub fn unauthorized_frames(&self) -> u64 {
        self.unauthorized.load(Ordering::Relaxed)
    }

    /// Frames per second over the last `secs` seconds of samples (`None`
    /// before two samples).
    fn rate(&self, secs: u64) -> Option<f64> {
        let s = self.samples.lock().ok()?;
        let &(t1, f1) = s.back()?;
        let &(t0, f0) = s
            .iter()
            .find(|(t, _)| t1.saturating_sub(*t) <= secs * 1000 + 500)?;
        (t1 > t0).then(|| f1.saturating_sub(f0) as f64 * 1000.0 / (t1 - t0) as f64)
    }

    /// Stream bytes acked to this station so far, over all its sessions.
    pub fn acked_bytes(&self) -> u64 {
        self.acked_bytes.load(Ordering::Relaxed)
    }

    /// Marks one more connection of this station open, from `peer`; a
    /// session when `session`.
    pub fn connect(&self, peer: &str, session: bool) {
        self.connected.fetch_add(1, Ordering::SeqCst);
        self.session.store(session, Ordering::Relaxed);
        self.session_read.store(0, Ordering::Relaxed);
        self.session_acked.store(0, Ordering::Relaxed);
        self.connected_since
            .store(unix_now().as_secs(), Ordering::Relaxed);
        if let Ok(mut p) = self.peer.lock() {
            p.clear();
            p.push_str(peer);
        }
    }

    /// Marks one of its connections closed.
    pub fn disconnect(&self) {
        let _ = self
            .connected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1));
    }
}

/// One entry of `GET /api/links`.
#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    /// HELLO name, peer address, or `(other)`.
    pub station: String,
    /// True while one of its connections is open.
    pub connected: bool,
    /// The last connection's peer address.
    pub peer: String,
    /// Unix seconds at which the last connection opened.
    pub connected_since: u64,
    /// Seconds since its last frame; `null` before the first.
    pub last_frame_age_s: Option<f64>,
    /// Frames decoded.
    pub frames: u64,
    /// Stream bytes read.
    pub bytes: u64,
    /// Frames whose CRC did not match.
    pub crc_errors: u64,
    /// Bad headers (wrong version or oversized length).
    pub bad_header: u64,
    /// Stream bytes acked, over its sessions.
    pub acked_bytes: u64,
    /// Frames it delivered first: the copy kept and forwarded.
    pub first_copies: u64,
    /// Valid frames it delivered that were not the copy kept (another
    /// station's, or its own earlier copy, was; with `--stale drop` or
    /// `--max-seq-jump`, also those dropped by rule).
    pub duplicates: u64,
    /// Frames per second over the last second (`null` until sampled twice).
    pub frames_per_s_1s: Option<f64>,
    /// Frames per second over the last minute (or since it was first sampled).
    pub frames_per_s_60s: Option<f64>,
    /// The last session's stream offset acked (`null` for a plain stream).
    pub acked_offset: Option<u64>,
    /// The last session's bytes read and not acked yet (`null` for a plain stream).
    pub ack_lag_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct Stations {
    index: HashMap<String, usize>,
    cells: Vec<Arc<StationCell>>,
}

/// The registry: serve-wide counters as atomics, stations behind a mutex
/// taken once per connection (and by the admin thread when it reads).
#[derive(Debug)]
pub struct Metrics {
    forwarded: AtomicU64,
    duplicates: AtomicU64,
    invalid: AtomicU64,
    stale: AtomicU64,
    late: AtomicU64,
    suspect: AtomicU64,
    unacked_bytes: AtomicU64,
    /// Connections refused for who they are.
    auth_failures: AtomicU64,
    /// TLS connections closed for another TLS failure.
    tls_errors: AtomicU64,
    latency_buckets: [AtomicU64; 14],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// The downstream has connected at least once (a file: from the start).
    downstream_up: AtomicBool,
    stations: Mutex<Stations>,
    /// Per satellite gaps of what was forwarded, fed once per batch.
    gaps: Mutex<GapTracker>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            forwarded: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            late: AtomicU64::new(0),
            suspect: AtomicU64::new(0),
            unacked_bytes: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            tls_errors: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            downstream_up: AtomicBool::new(false),
            stations: Mutex::new(Stations::default()),
            gaps: Mutex::new(GapTracker::new()),
        }
    }
}

/// Latency observations of one batch, gathered before they are published.
#[derive(Debug, Default, Clone, Copy)]
pub struct LatencyBatch {
    buckets: [u64; 14],
    count: u64,
    sum_us: u64,
}

impl LatencyBatch {
    /// Records one frame's read-to-forward latency.
    #[inline]
    pub fn record(&mut self, us: u64) {
        // Buckets are cumulative when published; here each frame lands in
        // its first bucket only.
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_us += us;
    }
}

impl Metrics {
    /// Counts a connection refused for who it is.
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::SeqCst);
    }

    /// Connections refused for who they are, so far.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::SeqCst)
    }

    /// Counts a TLS connection closed for another TLS failure.
    pub fn tls_error(&self) {
        self.tls_errors.fetch_add(1, Ordering::SeqCst);
    }

    /// TLS failures other than refusals, so far.
    pub fn tls_errors(&self) -> u64 {
        self.tls_errors.load(Ordering::SeqCst)
    }

    /// The entry for `station`, created if new: beyond
    /// [`MAX_STATION_ENTRIES`] new stations share [`OTHER_STATIONS`].
    pub fn station(&self, station: &str) -> Arc<StationCell> {
        let mut s = self
            .stations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if s.index.contains_key(station) || s.cells.len() + 1 < MAX_STATION_ENTRIES {
            station
        } else {
            OTHER_STATIONS
        };
        if let Some(&i) = s.index.get(key) {
            return Arc::clone(&s.cells[i]);
        }
        let cell = Arc::new(StationCell::new(key));
        s.cells.push(Arc::clone(&cell));
        let i = s.cells.len() - 1;
        s.index.insert(key.to_string(), i);
        cell
    }

    /// Adds the change of the pipeline's counters from `before` to `now`
    /// (once per batch).
    pub fn pipeline(&self, before: &PipelineStats, now: &PipelineStats) {
        let r = Ordering::Relaxed;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.duplicates
            .fetch_add(d(now.duplicates, before.duplicates), r);
        self.invalid.fetch_add(d(now.invalid, before.invalid), r);
        self.stale.fetch_add(d(now.stale, before.stale), r);
        self.late.fetch_add(d(now.late, before.late), r);
        self.suspect.fetch_add(d(now.suspect, before.suspect), r);
    }

    /// Starts the gap tracker afresh with these bounds.
    pub fn set_gap_limits(&self, limits: GapLimits) {
        if let Ok(mut g) = self.gaps.lock() {
            *g = GapTracker::with_limits(limits);
        }
    }

    /// Feeds one batch's forwarded rows to the gap tracker (once per batch).
    pub fn observe_gaps(&self, batch: &Batch, row_ids: &[u32]) {
        if let Ok(mut g) = self.gaps.lock() {
            g.observe(batch, row_ids);
        }
    }

    /// The gap totals now.
    pub fn gap_totals(&self) -> GapTotals {
        self.gaps.lock().map(|g| g.totals()).unwrap_or_default()
    }

    /// `GET /api/gaps`: every satellite when `all`, else those missing seqs now.
    pub fn gap_report(&self, all: bool) -> GapReport {
        let g = self
            .gaps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.report(all)
    }

    /// Samples every station's frame count for its rates (the admin thread,
    /// once a second).
    pub fn sample(&self) {
        let now = unix_now().as_millis() as u64;
        for c in self.cells() {
            let frames = c.frames.load(Ordering::Relaxed);
            if let Ok(mut s) = c.samples.lock() {
                if s.len() == RATE_SAMPLES {
                    s.pop_front();
                }
                s.push_back((now, frames));
            }
        }
    }

    /// Counts frames the downstream confirmed (as the summary's `forwarded` does).
    pub fn delivered(&self, frames: u64) {
        self.forwarded.fetch_add(frames, Ordering::Relaxed);
    }

    /// Sets the bytes handed to the downstream and not yet confirmed.
    pub fn set_unacked_bytes(&self, bytes: u64) {
        self.unacked_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Publishes one batch's latencies.
    pub fn latency(&self, b: &LatencyBatch) {
        if b.count == 0 {
            return;
        }
        let r = Ordering::Relaxed;
        for (cell, n) in self.latency_buckets.iter().zip(b.buckets) {
            if n > 0 {
                cell.fetch_add(n, r);
            }
        }
        self.latency_count.fetch_add(b.count, r);
        self.latency_sum_us.fetch_add(b.sum_us, r);
    }

    /// Records that the downstream is (or has been) connected.
    pub fn set_downstream_up(&self) {
        self.downstream_up.store(true, Ordering::SeqCst);
    }

    /// True once the downstream has connected at least once.
    pub fn downstream_up(&self) -> bool {
        self.downstream_up.load(Ordering::SeqCst)
    }

    fn cells(&self) -> Vec<Arc<StationCell>> {
        self.stations
            .lock()
            .map(|s| s.cells.clone())
            .unwrap_or_default()
    }

    /// The periodic stats event (`--stats-interval`): frames received over
    /// all stations, forwarded (confirmed), duplicates, invalid, seqs
    /// missing now, bytes awaiting the downstream, whether the downstream
    /// has ever connected, and log events suppressed by the rate limits.
    pub fn log_stats(&self, stopping: bool) {
        let r = Ordering::Relaxed;
        let received: u64 = self.cells().iter().map(|c| c.frames.load(r)).sum();
        tracing::info!(
            received,
            forwarded = self.forwarded.load(r),
            duplicates = self.duplicates.load(r),
            invalid = self.invalid.load(r),
            missing = self.gap_totals().missing,
            unacked_bytes = self.unacked_bytes.load(r),
            downstream_connected = self.downstream_up(),
            stopping,
            suppressed_logs = crate::log::suppressed_total(),
            "stats"
        );
    }

    /// `GET /api/links`: one entry per station, in the order they first connected.
    pub fn links(&self) -> Vec<LinkView> {
        let now_ms = unix_now().as_millis() as u64;
        let r = Ordering::Relaxed;
        self.cells()
            .iter()
            .map(|c| {
                let last = c.last_frame_ms.load(r);
                let session = c.session.load(r);
                let acked_at = c.session_acked.load(r);
                LinkView {
                    station: c.station.clone(),
                    connected: c.connected.load(Ordering::SeqCst) > 0,
                    peer: c.peer.lock().map(|p| p.clone()).unwrap_or_default(),
                    connected_since: c.connected_since.load(r),
                    last_frame_age_s: (last > 0)
                        .then(|| now_ms.saturating_sub(last) as f64 / 1000.0),
                    frames: c.frames.load(r),
                    bytes: c.bytes.load(r),
                    crc_errors: c.crc_errors.load(r),
                    bad_header: c.bad_header.load(r),
                    acked_bytes: c.acked_bytes.load(r),
                    first_copies: c.first_copies.load(r),
                    duplicates: c.duplicates.load(r),
                    frames_per_s_1s: c.rate(1),
                    frames_per_s_60s: c.rate(60),
                    acked_offset: session.then_some(acked_at),
                    ack_lag_bytes: session.then(|| c.session_read.load(r).saturating_sub(acked_at)),
                }
            })
            .collect()
    }

    /// `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let r = Ordering::Relaxed;
        let mut o = String::with_capacity(4096);
        let cells = self.cells();
        let per_station = |o: &mut String,
                           name: &str,
                           kind: &str,
                           help: &str,
                           value: &dyn Fn(&StationCell) -> String| {
            header(o, name, kind, help);
            for c in &cells {
                let _ = writeln!(
                    o,
                    "{name}{{station=\"{}\"}} {}",
                    escape_label(&c.station),
                    value(c)
                );
            }
        };
        per_station(
            &mut o,
            "meridian_frames_received_total",
            "counter",
            "Frames decoded from a station's stream.",
            &|c| c.frames.load(r).to_string(),
        );
        per_station(
            &mut o,
            "meridian_crc_errors_total",
            "counter",
            "Frames from a station whose CRC did not match.",
            &|c| c.crc_errors.load(r).to_string(),
        );
        per_station(
            &mut o,
            "meridian_bad_header_total",
            "counter",
            "Frame markers from a station followed by a wrong version or an oversized length.",
            &|c| c.bad_header.load(r).to_string(),
        );
        per_station(
            &mut o,
            "meridian_first_copies_total",
            "counter",
            "Frames a station delivered first: the copy kept and forwarded.",
            &|c| c.first_copies.load(r).to_string(),
        );
        per_station(
            &mut o,
            "meridian_frames_unauthorized_total",
            "counter",
            "Frames from a station for satellites it may not send ([stations] in the config), dropped.",
            &|c| c.unauthorized.load(r).to_string(),
        );
        per_station(
            &mut o,
            "meridian_station_connected",
            "gauge",
            "1 while a connection of the station is open, else 0.",
            &|c| u64::from(c.connected.load(Ordering::SeqCst) > 0).to_string(),
        );
        per_station(
            &mut o,
            "meridian_station_last_frame_timestamp_seconds",
            "gauge",
            "Unix time of the station's last frame (0 before the first).",
            &|c| format_f64(c.last_frame_ms.load(r) as f64 / 1000.0),
        );
        for (name, help, cell) in [
            (
                "meridian_frames_forwarded_total",
                "Frames forwarded and confirmed by the downstream.",
                &self.forwarded,
            ),
            (
                "meridian_frames_duplicate_total",
                "Copies dropped, within a batch or through the window.",
                &self.duplicates,
            ),
            (
                "meridian_frames_invalid_total",
                "Frames marked corrupt or with a satellite above --max-sat.",
                &self.invalid,
            ),
            (
                "meridian_frames_stale_total",
                "Frames at or below their satellite's window (forwarded unless --stale drop).",
                &self.stale,
            ),
            (
                "meridian_frames_late_total",
                "Frames below their satellite's highest seq, first seen, forwarded.",
                &self.late,
            ),
            (
                "meridian_frames_suspect_total",
                "Frames too far above their satellite's highest seq (--max-seq-jump), dropped.",
                &self.suspect,
            ),
            (
                "meridian_auth_failures_total",
                "Station connections refused for who they are: client certificate missing or not verified, HELLO name not the certificate's identity, station not in [stations].",
                &self.auth_failures,
            ),
            (
                "meridian_tls_errors_total",
                "TLS station connections closed for another TLS failure (broken or unfinished handshake).",
                &self.tls_errors,
            ),
        ] {
            header(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", cell.load(r));
        }
        let g = self.gap_totals();
        for (name, kind, help, v) in [
            (
                "meridian_frames_missing_total",
                "counter",
                "Seqs found missing: between a satellite's lowest and highest forwarded seq, not forwarded when a gap opened over them.",
                g.gaps_opened,
            ),
            (
                "meridian_frames_gap_filled_total",
                "counter",
                "Missing seqs forwarded later (late frames that filled a gap).",
                g.gaps_filled,
            ),
            (
                "meridian_gap_missing_seqs",
                "gauge",
                "Seqs missing now (missing_total - gap_filled_total).",
                g.missing,
            ),
            (
                "meridian_gap_ranges",
                "gauge",
                "Open missing ranges now, over all satellites.",
                g.gap_ranges,
            ),
        ] {
            header(&mut o, name, kind, help);
            let _ = writeln!(o, "{name} {v}");
        }
        header(
            &mut o,
            "meridian_unacked_bytes",
            "gauge",
            "Bytes handed to the downstream and not yet confirmed.",
        );
        let _ = writeln!(o, "meridian_unacked_bytes {}", self.unacked_bytes.load(r));
        let h = "meridian_forward_latency_seconds";
        header(
            &mut o,
            h,
            "histogram",
            "Time from reading a frame to handing its batch's output to the downstream.",
        );
        let mut cumulative = 0;
        for (le, cell) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += cell.load(r);
            let _ = writeln!(o, "{h}_bucket{{le=\"{}\"}} {cumulative}", format_f64(*le));
        }
        let count = self.latency_count.load(r);
        let _ = writeln!(o, "{h}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{h}_sum {}",
            format_f64(self.latency_sum_us.load(r) as f64 / 1e6)
        );
        let _ = writeln!(o, "{h}_count {count}");
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A float as Prometheus reads it (always with a decimal point or exponent).
fn format_f64(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['.', 'e', 'N', 'i']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// A label value escaped for the exposition format: `\`, `"` and newline.
pub fn escape_label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn station_cap_shares_other() {
        let m = Metrics::default();
        for i in 0..MAX_STATION_ENTRIES + 10 {
            m.station(&format!("s{i}"));
        }
        let links = m.links();
        assert_eq!(links.len(), MAX_STATION_ENTRIES);
        assert_eq!(links.last().unwrap().station, OTHER_STATIONS);
        assert_eq!(m.station("s0").station, "s0");
    }

    #[test]
    fn rates_over_one_and_sixty_seconds() {
        let m = Metrics::default();
        let c = m.station("gs-0");
        assert_eq!((c.rate(1), c.rate(60)), (None, None));
        {
            let mut s = c.samples.lock().unwrap();
            // 100 frames/s for a minute, then 1000 in the last second.
            for i in 0..61u64 {
                s.push_back((1_000_000 + i * 1000, i * 100));
            }
            s.push_back((1_061_000, 7_000));
        }
        assert_eq!(c.rate(1), Some(1000.0));
        // The oldest sample within 60 s (and half a second) of the last.
        assert_eq!(c.rate(60), Some((7_000.0 - 100.0) / 60.0));
    }

    #[test]
    fn first_copies_and_ack_lag_per_station() {
        let m = Metrics::default();
        let c = m.station("gs-0");
        c.connect("127.0.0.1:1", true);
        c.read_to(5000);
        c.acked(4000, 4000);
        c.kept(10, 3);
        c.kept(0, 2);
        let l = &m.links()[0];
        assert_eq!((l.first_copies, l.duplicates), (10, 5));
        assert_eq!((l.acked_offset, l.ack_lag_bytes), (Some(4000), Some(1000)));
        assert!(m
            .render()
            .contains("meridian_first_copies_total{station=\"gs-0\"} 10\n"));
        let p = m.station("10.0.0.1:9");
        p.connect("10.0.0.1:9", false);
        assert_eq!(m.links()[1].ack_lag_bytes, None);
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        let mut b = LatencyBatch::default();
        for us in [100, 700, 2_000_000, 60_000_000] {
            b.record(us);
        }
        m.latency(&b);
        let text = m.render();
        assert!(text.contains("meridian_forward_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("meridian_forward_latency_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(text.contains("meridian_forward_latency_seconds_bucket{le=\"10.0\"} 3\n"));
        assert!(text.contains("meridian_forward_latency_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("meridian_forward_latency_seconds_count 4\n"));
    }
}
