//! The three layouts the throughput runner and the benchmarks compare. Each
//! runs the same pipeline semantics and forwards the same bytes (a test holds
//! them to that), so the comparison between them is honest:
//!
//! - [`soa`]: the real pipeline, struct-of-arrays columns, SIMD validation.
//! - [`aos`]: the same algorithms over a `Vec` of per-frame structs, scalar
//!   validation, so the effect of the layout shows alone.
//! - [`baseline`]: the pipeline as a first version would write it: an owned
//!   `Vec<u8>` per frame, a `HashSet` dedup rebuilt each batch, a `BTreeMap`
//!   window, a sort of the survivors, new `Vec`s each batch.

pub mod aos;
pub mod baseline;
pub mod first_dedup;
pub mod soa;

use std::io;

use crate::pipeline::{Config, Summary};
use crate::stage::Probe;

/// Which layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Layout {
    /// Struct-of-arrays, the real pipeline.
    Soa,
    /// Array-of-structs, the same algorithms.
    Aos,
    /// A first version.
    Baseline,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 3] = [Layout::Soa, Layout::Aos, Layout::Baseline];

    /// The layout's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Soa => "soa",
            Layout::Aos => "aos",
            Layout::Baseline => "baseline",
        }
    }

    /// A fresh engine of this layout. `cfg` must pass [`Config::check`].
    pub fn engine(self, cfg: Config) -> Box<dyn Engine + Send> {
        match self {
            Layout::Soa => Box::new(soa::Soa::new(cfg)),
            Layout::Aos => Box::new(aos::Aos::new(cfg)),
            Layout::Baseline => Box::new(baseline::Baseline::new(cfg)),
        }
    }
}

/// One layout's pipeline, driven a stage at a time over input held in memory.
pub trait Engine {
    /// Stage 1: replaces the current batch with up to `limit` frames decoded
    /// from the front of `data`, which runs to the end of the input. Returns
    /// the bytes consumed (all of `data` unless the batch filled up).
    fn decode(&mut self, data: &[u8], limit: usize) -> usize;
    /// Rows in the current batch.
    fn row_count(&self) -> usize;
    /// The stages after decode on the current batch, through the stage
    /// driver ([`crate::stage::drive`]), appending the forwarded frames to
    /// `out`, with `probe` around each stage.
    ///
    /// # Errors
    /// When writing to `out` fails.
    fn process(&mut self, out: &mut Vec<u8>, probe: &mut dyn Probe) -> io::Result<()>;
    /// [`Engine::decode`] for a caller that keeps `data` unchanged until the
    /// matching [`Engine::process_in`]: an engine may then leave the frames
    /// where they are instead of copying them into its batch. The default
    /// is [`Engine::decode`].
    fn decode_in_place(&mut self, data: &[u8], limit: usize) -> usize {
        self.decode(data, limit)
    }
    /// [`Engine::process`] after [`Engine::decode_in_place`], with the same
    /// `data`. The default is [`Engine::process`].
    ///
    /// # Errors
    /// When writing to `out` fails.
    fn process_in(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        probe: &mut dyn Probe,
    ) -> io::Result<()> {
        let _ = data;
        self.process(out, probe)
    }
    /// Forgets the dedup window, so the same input can be replayed as new.
    fn reset_window(&mut self);
    /// Counters so far.
    fn summary(&self) -> Summary;
}

/// Runs `data` once through `engine` in batches of `batch_size`, appending
/// the forwarded frames to `out`.
///
/// # Errors
/// When writing to `out` fails.
pub fn run_all(
    engine: &mut dyn Engine,
    data: &[u8],
    batch_size: usize,
    out: &mut Vec<u8>,
) -> io::Result<Summary> {
    let mut pos = 0;
    while pos < data.len() {
        let input = &data[pos..];
        pos += engine.decode_in_place(input, batch_size);
        if engine.row_count() == 0 {
            break;
        }
        engine.process_in(input, out, &mut ())?;
    }
    Ok(engine.summary())
}
