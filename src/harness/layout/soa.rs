//! The real pipeline as an [`Engine`]: SoA columns, SIMD validation.

use std::io;

use super::Engine;
use crate::batch::Batch;
use crate::decode::Decoder;
use crate::pipeline::{BatchProcessor, Config, Summary};
use crate::stage::Probe;
use crate::wire::OVERHEAD;

/// The SoA engine.
#[derive(Debug)]
pub struct Soa {
    decoder: Decoder,
    batch: Batch,
    stages: BatchProcessor,
}

impl Soa {
    /// A fresh engine.
    pub fn new(cfg: Config) -> Soa {
        Soa {
            decoder: Decoder::new(cfg.max_payload),
            batch: Batch::with_capacity(cfg.batch_size, OVERHEAD + 128),
            stages: BatchProcessor::new(cfg),
        }
    }
}

impl Engine for Soa {
    fn decode(&mut self, data: &[u8], limit: usize) -> usize {
        self.batch.clear();
        self.decoder.decode(data, true, &mut self.batch, limit)
    }
    fn row_count(&self) -> usize {
        self.batch.len()
    }
    fn process(&mut self, out: &mut Vec<u8>, probe: &mut dyn Probe) -> io::Result<()> {
        self.stages.process(&self.batch, out, probe)
    }
    fn reset_window(&mut self) {
        self.stages.reset_window();
    }
    fn summary(&self) -> Summary {
        Summary::new(self.decoder.stats(), self.stages.stats())
    }
}
