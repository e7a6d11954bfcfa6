//! The naive reference model of the whole pipeline: one obvious step at a
//! time, whole input in memory, a `Vec` of structs, a byte-by-byte marker
//! scan and the naive dedup. It shares no code with the fast path but the
//! wire constants and the naive twins, and exists to be compared against.

use crate::decode::DecodeStats;
use crate::dedup::naive::NaiveDedup;
use crate::dedup::WindowLimits;
use crate::pipeline::{Config, PipelineStats, Summary};
use crate::validate::scalar::is_valid;
use crate::wire::{Header, HEADER_LEN, SYNC, VERSION};

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
pub fn decode_all(data: &[u8], max_payload: u16) -> (Vec<Frame>, DecodeStats) {
    let mut stats = DecodeStats {
        input_bytes: data.len() as u64,
        ..DecodeStats::default()
    };
    let mut frames = Vec::new();
    let mut p = 0;
    while p < data.len() {
        if !data[p..].starts_with(&SYNC) {
            stats.skipped_bytes += 1;
            p += 1;
            continue;
        }
        if data.len() - p < HEADER_LEN {
            stats.truncated += 1;
            stats.skipped_bytes += 1;
            p += 1;
            continue;
        }
        let h = Header::read(&data[p..]);
        let n = h.frame_len();
        if h.version != VERSION || h.len > max_payload {
            stats.bad_header += 1;
        } else if data.len() - p < n {
            stats.truncated += 1;
        } else if crc32fast::hash(&data[p + 4..p + n - 4])
            != u32::from_le_bytes(data[p + n - 4..p + n].try_into().unwrap())
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

/// Runs the whole pipeline the slow way. Returns the forwarded bytes, the
/// summary, and the forwarded frames batch by batch.
pub fn run(data: &[u8], cfg: &Config) -> (Vec<u8>, Summary, Vec<Vec<Frame>>) {
    let (frames, dstats) = decode_all(data, cfg.max_payload);
    let mut dedup = NaiveDedup::new(cfg.window, cfg.stale, WindowLimits::OFF);
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    let mut batches = Vec::new();
    for batch in frames.chunks(cfg.batch_size.max(1)) {
        stats.batches += 1;
        let mut valid = Vec::new();
        for (row, f) in batch.iter().enumerate() {
            if is_valid(f.sat, f.flags, cfg.max_sat) {
                valid.push((row as u32, f.sat, f.seq));
            } else {
                stats.invalid += 1;
            }
        }
        let (rows, counts) = dedup.run(&valid);
        stats.duplicates += counts.duplicates;
        stats.stale += counts.stale;
        stats.late += counts.late;
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
