//! The real pipeline as an [`Engine`]: SoA columns, SIMD validation.

use std::io;

use super::Engine;
use crate::batch::Batch;
use crate::decode::Decoder;
use crate::pipeline::{Config, Pipeline, Summary};
use crate::wire::OVERHEAD;

/// The SoA engine.
#[derive(Debug)]
pub struct Soa {
    decoder: Decoder,
    batch: Batch,
    pipeline: Pipeline,
}

impl Soa {
    /// A fresh engine.
    pub fn new(cfg: Config) -> Soa {
        Soa {
            decoder: Decoder::new(cfg.max_payload),
            batch: Batch::with_capacity(cfg.batch_size, OVERHEAD + 128),
            pipeline: Pipeline::new(cfg),
        }
    }
}

impl Engine for Soa {
    fn decode(&mut self, data: &[u8], limit: usize) -> usize {
        self.batch.clear();
        self.decoder.decode(data, true, &mut self.batch, limit)
    }
    fn rows(&self) -> usize {
        self.batch.len()
    }
    fn validate(&mut self) {
        self.pipeline.validate(&self.batch);
    }
    fn dedup(&mut self) {
        self.pipeline.dedup(&self.batch);
    }
    fn forward(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.pipeline.forward(&self.batch, out)
    }
    fn reset_window(&mut self) {
        self.pipeline.reset_window();
    }
    fn summary(&self) -> Summary {
        Summary::new(self.decoder.stats(), self.pipeline.stats())
    }
}
