//! The same algorithms as [`super::soa`] over an array of per-frame structs.
//! Validation takes the scalar rule (no columns to load as SIMD lanes); decode, dedup,
//! window and forward are the very same generic code.

use std::io;
use std::ops::Range;

use super::Engine;
use crate::batch::{DecodeTarget, Rows};
use crate::decode::Decoder;
use crate::pipeline::{BatchProcessor, Config, Summary};
use crate::stage::Probe;
use crate::wire::OVERHEAD;

/// One decoded frame's fields, side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRec {
    /// Satellite id.
    pub sat: u32,
    /// Sequence number.
    pub seq: u64,
    /// Station flags.
    pub flags: u8,
    /// Where the frame starts in the batch buffer.
    pub offset: usize,
    /// Whole frame length.
    pub len: u32,
}

/// A batch as an array of structs over one byte buffer.
#[derive(Debug, Default, Clone)]
pub struct AosBatch {
    /// The rows.
    pub recs: Vec<FrameRec>,
    /// The frames' bytes.
    pub buf: Vec<u8>,
}

impl Rows for AosBatch {
    #[inline]
    fn row_count(&self) -> usize {
        self.recs.len()
    }
    #[inline]
    fn sat(&self, i: usize) -> u32 {
        self.recs[i].sat
    }
    #[inline]
    fn seq(&self, i: usize) -> u64 {
        self.recs[i].seq
    }
    #[inline]
    fn flags(&self, i: usize) -> u8 {
        self.recs[i].flags
    }
    #[inline]
    fn span(&self, i: usize) -> Range<usize> {
        let r = &self.recs[i];
        r.offset..r.offset + r.len as usize
    }
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl DecodeTarget for AosBatch {
    #[inline]
    fn row_count(&self) -> usize {
        self.recs.len()
    }
    #[inline]
    fn push_frame(&mut self, sat: u32, seq: u64, flags: u8, frame: &[u8]) {
        self.recs.push(FrameRec {
            sat,
            seq,
            flags,
            offset: self.buf.len(),
            len: frame.len() as u32,
        });
        self.buf.extend_from_slice(frame);
    }
}

/// The AoS engine.
#[derive(Debug)]
pub struct Aos {
    decoder: Decoder,
    batch: AosBatch,
    stages: BatchProcessor,
}

impl Aos {
    /// A fresh engine.
    pub fn new(cfg: Config) -> Aos {
        Aos {
            decoder: Decoder::new(cfg.max_payload),
            batch: AosBatch {
                recs: Vec::with_capacity(cfg.batch_size),
                buf: Vec::with_capacity(cfg.batch_size * (OVERHEAD + 128)),
            },
            stages: BatchProcessor::new(cfg),
        }
    }
}

impl Engine for Aos {
    fn decode(&mut self, data: &[u8], limit: usize) -> usize {
        self.batch.recs.clear();
        self.batch.buf.clear();
        self.decoder.decode(data, true, &mut self.batch, limit)
    }
    fn row_count(&self) -> usize {
        self.batch.recs.len()
    }
    fn process(&mut self, out: &mut Vec<u8>, probe: &mut dyn Probe) -> io::Result<()> {
        // No columns: the validate chooser takes the scalar rule.
        self.stages.process(&self.batch, out, probe)
    }
    fn reset_window(&mut self) {
        self.stages.reset_window();
    }
    fn summary(&self) -> Summary {
        Summary::new(self.decoder.stats(), self.stages.stats())
    }
}
