//! The real pipeline as an [`Engine`]: SoA columns, SIMD validation.

use std::io;

use super::Engine;
use crate::batch::{Batch, Placed, View};
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
    /// The last decode left the frames in its input ([`Engine::decode_in_place`]).
    placed: bool,
}

impl Soa {
    /// A fresh engine.
    pub fn new(cfg: Config) -> Soa {
        Soa {
            decoder: Decoder::new(cfg.max_payload),
            batch: Batch::with_capacity(cfg.batch_size, OVERHEAD + 128),
            stages: BatchProcessor::new(cfg),
            placed: false,
        }
    }
}

impl Engine for Soa {
    fn decode(&mut self, data: &[u8], limit: usize) -> usize {
        self.batch.clear();
        self.placed = false;
        self.decoder.decode(data, true, &mut self.batch, limit)
    }
    /// Columns only: the frames stay in `data` ([`Placed`]).
    fn decode_in_place(&mut self, data: &[u8], limit: usize) -> usize {
        self.batch.clear();
        self.placed = true;
        let mut target = Placed::new(&mut self.batch, data, 0);
        self.decoder.decode(data, true, &mut target, limit)
    }
    fn row_count(&self) -> usize {
        self.batch.len()
    }
    fn process(&mut self, out: &mut Vec<u8>, probe: &mut dyn Probe) -> io::Result<()> {
        assert!(
            !self.placed,
            "a batch decoded in place is processed with its input"
        );
        self.stages.process(&self.batch, out, probe)
    }
    fn process_in(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        probe: &mut dyn Probe,
    ) -> io::Result<()> {
        if !self.placed {
            return self.stages.process(&self.batch, out, probe);
        }
        let rows = View::all(&self.batch, data);
        self.stages.process(&rows, out, probe)
    }
    fn reset_window(&mut self) {
        self.stages.reset_window();
    }
    fn summary(&self) -> Summary {
        Summary::new(self.decoder.stats(), self.stages.stats())
    }
}
