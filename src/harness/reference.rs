//! The naive reference model of the whole pipeline: one obvious step at a
//! time, whole input in memory, a `Vec` of structs, a byte-by-byte marker
//! scan and the naive dedup. It reads the wire format and applies the
//! validity rule itself, from the format's description (README, "Wire
//! format"), sharing no code with the fast path but the counters' types and
//! the naive dedup twin, and exists to be compared against.

use crate::decode::DecodeStats;
use crate::dedup::naive::NaiveDedup;
use crate::pipeline::{Config, PipelineStats, Summary};

/// The sync marker, as the format description gives it.
const MARKER: [u8; 4] = [0x1A, 0xCF, 0xFC, 0x1D];
/// Sync marker, sat, seq, flags, version and length.
const HEADER: usize = 20;

/// The header fields, read byte by byte at `p`.
struct Fields {
    sat: u32,
    seq: u64,
    flags: u8,
    version: u8,
    len: usize,
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
}

fn fields(h: &[u8]) -> Fields {
    Fields {
        sat: le(&h[4..8]) as u32,
        seq: le(&h[8..16]),
        flags: h[16],
        version: h[17],
        len: le(&h[18..20]) as usize,
    }
}

/// The validity rule as stated: not marked corrupt by the station (bit 7 of
/// the flags clear) and a satellite id no higher than `max_sat`.
fn is_valid_rule(sat: u32, flags: u8, max_sat: u32) -> bool {
    flags < 0x80 && sat <= max_sat
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Satellite id.
    pub sat: u32,
    /// Sequence number.
    pub seq: u64,
    /// Station flags.
    pub flags: u8,
    /// The frame's whole wire bytes.
    pub bytes: Vec<u8>,
}

/// Decodes a whole input the slow way.
///
/// # Panics
/// Never on any input (every slice is bounds-checked against `data.len()` first).
pub fn decode_all(data: &[u8], max_payload: u16) -> (Vec<Frame>, DecodeStats) {
    let mut stats = DecodeStats {
        input_bytes: data.len() as u64,
        ..DecodeStats::default()
    };
    let mut frames = Vec::new();
    let mut p = 0;
    while p < data.len() {
        if !data[p..].starts_with(&MARKER) {
            stats.skipped_bytes += 1;
            p += 1;
            continue;
        }
        if data.len() - p < HEADER {
            stats.truncated += 1;
            stats.skipped_bytes += 1;
            p += 1;
            continue;
        }
        let h = fields(&data[p..p + HEADER]);
        let n = HEADER + h.len + 4;
        if h.version != 1 || h.len > usize::from(max_payload) {
            stats.bad_header += 1;
        } else if data.len() - p < n {
            stats.truncated += 1;
        } else if u64::from(crc32fast::hash(&data[p + 4..p + n - 4])) != le(&data[p + n - 4..p + n])
        {
            stats.crc_errors += 1;
        } else {
            frames.push(Frame {
                sat: h.sat,
                seq: h.seq,
                flags: h.flags,
                bytes: data[p..p + n].to_vec(),
            });
            stats.frames_decoded += 1;
            stats.frame_bytes += n as u64;
            p += n;
            continue;
        }
        stats.skipped_bytes += 1;
        p += 1;
    }
    (frames, stats)
}

/// Runs the whole pipeline the slow way (`cfg.batch_size` 0 is taken as 1). Returns the forwarded bytes, the
/// summary, and the forwarded frames batch by batch.
pub fn run(data: &[u8], cfg: &Config) -> (Vec<u8>, Summary, Vec<Vec<Frame>>) {
    let (frames, dstats) = decode_all(data, cfg.max_payload);
    let mut dedup = NaiveDedup::new(cfg.window, cfg.stale, cfg.limits);
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    let mut batches = Vec::new();
    for batch in frames.chunks(cfg.batch_size.max(1)) {
        stats.batches += 1;
        let mut valid = Vec::new();
        for (row, f) in batch.iter().enumerate() {
            if is_valid_rule(f.sat, f.flags, cfg.max_sat) {
                valid.push((row as u32, f.sat, f.seq));
            } else {
                stats.invalid += 1;
            }
        }
        let (rows, counts) = dedup.run(&valid);
        stats.duplicates += counts.duplicates;
        stats.stale += counts.stale;
        stats.late += counts.late;
        stats.suspect += counts.suspect;
        stats.provisional += counts.provisional;
        stats.reanchors += counts.reanchors;
        stats.evicted_sats += counts.evicted_sats;
        let mut forwarded = Vec::new();
        for r in rows {
            let f = &batch[r as usize];
            out.extend_from_slice(&f.bytes);
            stats.forwarded += 1;
            stats.forwarded_bytes += f.bytes.len() as u64;
            forwarded.push(f.clone());
        }
        batches.push(forwarded);
    }
    (out, Summary::new(dstats, stats), batches)
}
