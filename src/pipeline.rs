//! The batch pipeline: decode -> validate -> dedup -> forward, over reusable
//! SoA columns and scratch space. Once warm it allocates nothing per batch
//! (the window allocates one ring the first time it sees a satellite).

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::batch::{Batch, Rows};
use crate::decode::{DecodeStats, Decoder, FrameReader, DEFAULT_READ_CHUNK};
use crate::dedup::{Dedup, StalePolicy, WindowLimits, DEFAULT_WINDOW};
use crate::wire::{DEFAULT_MAX_PAYLOAD, OVERHEAD};
use crate::{forward, validate};

/// Default `--batch-size`.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Default `--max-sat`.
pub const DEFAULT_MAX_SAT: u32 = 4095;

/// The pipeline's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Frames per batch, at least 1.
    pub batch_size: usize,
    /// Dedup window per satellite, at most [`crate::dedup::window::MAX_WINDOW`].
    pub window: u64,
    /// Highest valid satellite id.
    pub max_sat: u32,
    /// Longest payload the decoder accepts.
    pub max_payload: u16,
    /// What to do with stale keys.
    pub stale: StalePolicy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            batch_size: DEFAULT_BATCH_SIZE,
            window: DEFAULT_WINDOW,
            max_sat: DEFAULT_MAX_SAT,
            max_payload: DEFAULT_MAX_PAYLOAD,
            stale: StalePolicy::Forward,
        }
    }
}

/// What the stages after decode counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStats {
    /// Batches processed.
    pub batches: u64,
    /// Rows marked corrupt or with a sat above `max_sat`.
    pub invalid: u64,
    /// Copies dropped, in the batch or through the window.
    pub duplicates: u64,
    /// Keys at or below the window's low edge.
    pub stale: u64,
    /// Keys below the window's high mark, first seen, forwarded.
    pub late: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Bytes forwarded.
    pub forwarded_bytes: u64,
}

/// The summary `process` prints: decode and pipeline counters together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Bytes read from the input.
    pub input_bytes: u64,
    /// Bytes not inside any decoded frame.
    pub skipped_bytes: u64,
    /// Frames decoded.
    pub frames_decoded: u64,
    /// Markers with a bad version or length.
    pub bad_header: u64,
    /// Complete frames with a wrong CRC.
    pub crc_errors: u64,
    /// Frames the input ended inside.
    pub truncated: u64,
    /// Invalid frames.
    pub invalid: u64,
    /// Copies dropped.
    pub duplicates: u64,
    /// Stale keys (forwarded unless `--stale drop`).
    pub stale: u64,
    /// Late keys (forwarded).
    pub late: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Bytes forwarded.
    pub forwarded_bytes: u64,
    /// Batches processed.
    pub batches: u64,
}

impl Summary {
    /// Puts the two halves together.
    pub fn new(d: DecodeStats, p: PipelineStats) -> Summary {
        Summary {
            input_bytes: d.input_bytes,
            skipped_bytes: d.skipped_bytes,
            frames_decoded: d.frames_decoded,
            bad_header: d.bad_header,
            crc_errors: d.crc_errors,
            truncated: d.truncated,
            invalid: p.invalid,
            duplicates: p.duplicates,
            stale: p.stale,
            late: p.late,
            forwarded: p.forwarded,
            forwarded_bytes: p.forwarded_bytes,
            batches: p.batches,
        }
    }
}

/// The stages after decode, with their scratch space and window state.
#[derive(Debug)]
pub struct Pipeline {
    cfg: Config,
    mask: Vec<u64>,
    dedup: Dedup,
    forward: Vec<u32>,
    stats: PipelineStats,
}

impl Pipeline {
    /// A pipeline with an empty window.
    pub fn new(cfg: Config) -> Pipeline {
        Pipeline {
            cfg,
            mask: Vec::with_capacity(validate::mask_words(cfg.batch_size)),
            dedup: Dedup::new(cfg.window, cfg.stale, WindowLimits::OFF),
            forward: Vec::with_capacity(cfg.batch_size),
            stats: PipelineStats::default(),
        }
    }

    /// The options.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Stage 2 on one batch: fills the validity mask.
    #[inline(never)]
    pub fn validate(&mut self, batch: &Batch) {
        let valid = validate::valid_mask(batch, self.cfg.max_sat, &mut self.mask);
        self.stats.invalid += (batch.len() - valid) as u64;
        self.stats.batches += 1;
    }

    /// Stage 2 through the scalar rule, for any layout.
    pub fn validate_scalar<R: Rows + ?Sized>(&mut self, rows: &R) {
        let valid = validate::scalar::valid_mask_rows(rows, self.cfg.max_sat, &mut self.mask);
        self.stats.invalid += (rows.rows() - valid) as u64;
        self.stats.batches += 1;
    }

    /// Forgets the dedup window (a replayed input starts afresh), keeping
    /// counters and memory.
    pub fn reset_window(&mut self) {
        self.dedup.reset();
    }

    /// Stage 3 on one batch: fills the forward list from the validity mask.
    pub fn dedup<R: Rows + ?Sized>(&mut self, batch: &R) {
        let counts = self.dedup.run(batch, &self.mask, &mut self.forward);
        self.stats.duplicates += counts.duplicates;
        self.stats.stale += counts.stale;
        self.stats.late += counts.late;
    }

    /// Stage 4 on one batch: writes the forward list's frames to `out`.
    pub fn forward<R: Rows + ?Sized, W: Write + ?Sized>(
        &mut self,
        batch: &R,
        out: &mut W,
    ) -> io::Result<()> {
        let bytes = forward::write_rows(batch, &self.forward, out)?;
        self.stats.forwarded += self.forward.len() as u64;
        self.stats.forwarded_bytes += bytes;
        Ok(())
    }

    /// The rows the last [`Pipeline::dedup`] chose, in forwarding order.
    pub fn forward_rows(&self) -> &[u32] {
        &self.forward
    }

    /// Validate, dedup and forward one decoded batch.
    pub fn process_batch<W: Write + ?Sized>(
        &mut self,
        batch: &Batch,
        out: &mut W,
    ) -> io::Result<()> {
        self.validate(batch);
        self.dedup(batch);
        self.forward(batch, out)
    }
}

/// Runs the whole pipeline from `input` to `out` and returns the summary.
/// `out` is flushed at the end.
pub fn process_stream<R: Read, W: Write>(
    input: R,
    out: &mut W,
    cfg: Config,
) -> io::Result<Summary> {
    assert!(cfg.batch_size > 0, "batch size must be at least 1");
    let decoder = Decoder::new(cfg.max_payload);
    let mut reader = FrameReader::new(input, decoder, DEFAULT_READ_CHUNK);
    let mut pipeline = Pipeline::new(cfg);
    let mut batch = Batch::with_capacity(cfg.batch_size, OVERHEAD + 64);
    while reader.fill(&mut batch, cfg.batch_size)? > 0 {
        pipeline.process_batch(&batch, out)?;
    }
    out.flush()?;
    Ok(Summary::new(reader.stats(), pipeline.stats()))
}
