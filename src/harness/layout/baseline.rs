//! The pipeline as a first version would write it: decoded frames as structs
//! that own their bytes, a new `Vec` at every step, a `HashSet` dedup rebuilt
//! each batch and a `BTreeMap` window ([`FirstDedup`]), a sort of the
//! survivors, and one `write_all` per frame. It uses the same decoder rules
//! (and crates: memchr, crc32fast) so that its only differences are the
//! layout and the allocation habits.

use std::io::{self, Write};

use super::first_dedup::FirstDedup;
use super::Engine;
use crate::batch::DecodeTarget;
use crate::decode::Decoder;
use crate::pipeline::{Config, PipelineStats, Summary};
use crate::stage::{drive, BatchStages, Probe};
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

impl DecodeTarget for OwnedBatch {
    fn row_count(&self) -> usize {
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
    dedup: FirstDedup,
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
            dedup: FirstDedup::new(cfg.window, cfg.stale),
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
    fn row_count(&self) -> usize {
        self.batch.len()
    }
    fn process(&mut self, out: &mut Vec<u8>, probe: &mut dyn Probe) -> io::Result<()> {
        drive(&mut BaselineBatch { engine: self, out }, probe)
    }
    fn reset_window(&mut self) {
        self.dedup = FirstDedup::new(self.cfg.window, self.cfg.stale);
    }
    fn summary(&self) -> Summary {
        Summary::new(self.decoder.stats(), self.stats)
    }
}

/// The baseline engine bound to its current batch and output.
struct BaselineBatch<'a> {
    engine: &'a mut Baseline,
    out: &'a mut Vec<u8>,
}

impl BatchStages for BaselineBatch<'_> {
    fn count_batch(&mut self) {
        self.engine.stats.batches += 1;
    }
    fn validate(&mut self) {
        let e = &mut *self.engine;
        e.valid = e
            .batch
            .iter()
            .enumerate()
            .filter(|(_, f)| is_valid(f.sat, f.flags, e.cfg.max_sat))
            .map(|(row, f)| (row as u32, f.sat, f.seq))
            .collect();
        e.stats.invalid += (e.batch.len() - e.valid.len()) as u64;
    }
    fn dedup(&mut self) {
        let e = &mut *self.engine;
        let (rows, counts) = e.dedup.run(&e.valid);
        e.stats.duplicates += counts.duplicates;
        e.stats.stale += counts.stale;
        e.stats.late += counts.late;
        // FirstDedup hands back the survivors sorted by (sat, seq).
        e.forward = rows.iter().map(|&r| e.batch[r as usize].clone()).collect();
    }
    fn forward(&mut self) -> io::Result<()> {
        let e = &mut *self.engine;
        for f in &e.forward {
            self.out.write_all(&f.bytes)?;
            e.stats.forwarded += 1;
            e.stats.forwarded_bytes += f.bytes.len() as u64;
        }
        Ok(())
    }
}
