//! The pipeline as a first version would write it: decoded frames as structs
//! that own their bytes, a new `Vec` at every step, a `HashSet` dedup rebuilt
//! each batch and a `BTreeMap` window ([`NaiveDedup`]), a sort of the
//! survivors, and one `write_all` per frame. It uses the same decoder rules
//! (and crates: memchr, crc32fast) so that its only differences are the
//! layout and the allocation habits.

use std::io::{self, Write};

use super::Engine;
use crate::batch::FrameSink;
use crate::decode::Decoder;
use crate::dedup::naive::NaiveDedup;
use crate::dedup::WindowLimits;
use crate::pipeline::{Config, PipelineStats, Summary};
use crate::validate::scalar::is_valid;

/// A frame that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    /// Satellite id.
    pub sat: u32,
    /// Sequence number.
    pub seq: u64,
    /// Station flags.
    pub flags: u8,
    /// The whole frame.
    pub bytes: Vec<u8>,
}

/// A batch of owned frames.
#[derive(Debug, Default)]
struct OwnedBatch(Vec<OwnedFrame>);

impl FrameSink for OwnedBatch {
    fn rows(&self) -> usize {
        self.0.len()
    }
    fn push_frame(&mut self, sat: u32, seq: u64, flags: u8, frame: &[u8]) {
        self.0.push(OwnedFrame {
            sat,
            seq,
            flags,
            bytes: frame.to_vec(),
        });
    }
}

/// The baseline engine.
#[derive(Debug)]
pub struct Baseline {
    cfg: Config,
    decoder: Decoder,
    batch: Vec<OwnedFrame>,
    valid: Vec<(u32, u32, u64)>,
    forward: Vec<OwnedFrame>,
    dedup: NaiveDedup,
    stats: PipelineStats,
}

impl Baseline {
    /// A fresh engine.
    pub fn new(cfg: Config) -> Baseline {
        Baseline {
            cfg,
            decoder: Decoder::new(cfg.max_payload),
            batch: Vec::new(),
            valid: Vec::new(),
            forward: Vec::new(),
            dedup: NaiveDedup::new(cfg.window, cfg.stale, WindowLimits::OFF),
            stats: PipelineStats::default(),
        }
    }
}

impl Engine for Baseline {
    fn decode(&mut self, data: &[u8], limit: usize) -> usize {
        let mut batch = OwnedBatch::default();
        let used = self.decoder.decode(data, true, &mut batch, limit);
        self.batch = batch.0;
        used
    }
    fn rows(&self) -> usize {
        self.batch.len()
    }
    fn validate(&mut self) {
        self.stats.batches += 1;
        self.valid = self
            .batch
            .iter()
            .enumerate()
            .filter(|(_, f)| is_valid(f.sat, f.flags, self.cfg.max_sat))
            .map(|(row, f)| (row as u32, f.sat, f.seq))
            .collect();
        self.stats.invalid += (self.batch.len() - self.valid.len()) as u64;
    }
    fn dedup(&mut self) {
        let (rows, counts) = self.dedup.run(&self.valid);
        self.stats.duplicates += counts.duplicates;
        self.stats.stale += counts.stale;
        self.stats.late += counts.late;
        // NaiveDedup hands back the survivors sorted by (sat, seq).
        self.forward = rows
            .iter()
            .map(|&r| self.batch[r as usize].clone())
            .collect();
    }
    fn forward(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        for f in &self.forward {
            out.write_all(&f.bytes)?;
            self.stats.forwarded += 1;
            self.stats.forwarded_bytes += f.bytes.len() as u64;
        }
        Ok(())
    }
    fn reset_window(&mut self) {
        self.dedup = NaiveDedup::new(self.cfg.window, self.cfg.stale, WindowLimits::OFF);
    }
    fn summary(&self) -> Summary {
        Summary::new(self.decoder.stats(), self.stats)
    }
}
