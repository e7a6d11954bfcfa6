//! The pipeline: [`process_stream`] runs decode -> validate -> dedup ->
//! forward from any reader to any writer, and [`BatchProcessor`] holds the
//! state of the stages after decode (the validity mask, the dedup scratch
//! and window, the chosen row ids, the counters) and runs them on one
//! decoded batch through the one stage driver, [`crate::stage::drive`].
//! Once warm it allocates nothing per batch (the window allocates a ring the
//! first time it sees a satellite).
//!
//! # Embedding the stages after decode
//! ```
//! use meridian_pipeline::{Batch, BatchProcessor, Config};
//! use meridian_pipeline::wire::encode_frame;
//!
//! // Two stations delivered sat 7's frame 100; sat 3's frame 5 arrived once.
//! let mut bytes = Vec::new();
//! for (sat, seq) in [(7u32, 100u64), (3, 5), (7, 100)] {
//!     encode_frame(&mut bytes, sat, seq, 0, b"payload");
//! }
//! let mut batch = Batch::default();
//! let mut at = 0;
//! for (sat, seq) in [(7u32, 100u64), (3, 5), (7, 100)] {
//!     let n = meridian_pipeline::wire::OVERHEAD + 7;
//!     batch.push(sat, seq, 0, &bytes[at..at + n]);
//!     at += n;
//! }
//! let mut stages = BatchProcessor::new(Config::default());
//! let mut out = Vec::new();
//! stages.process(&batch, &mut out, &mut ()).unwrap();
//! assert_eq!(stages.row_ids(), &[1, 0]); // (3, 5) then (7, 100), one copy
//! assert_eq!(out.len(), 2 * 31);
//! assert_eq!(stages.stats().duplicates, 1);
//! stages.reset_window(); // forget what was seen, keep counters and memory
//! ```

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};

use serde::Serialize;

use crate::batch::{Batch, Rows, View};
use crate::decode::{DecodeStats, Decoder, FrameReader, DEFAULT_READ_CHUNK};
use crate::dedup::{Dedup, StalePolicy, WindowLimits, DEFAULT_WINDOW, MAX_WINDOW};
use crate::stage::{drive, BatchStages, Probe};
use crate::wire::DEFAULT_MAX_PAYLOAD;
use crate::{forward, validate};

/// Default `--batch-size`.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Largest `--batch-size`: a batch's columns and bytes are held at once.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Default `--max-sat`.
pub const DEFAULT_MAX_SAT: u32 = 4095;

/// The pipeline's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Frames per batch, 1 to [`MAX_BATCH_SIZE`].
    pub batch_size: usize,
    /// Dedup window per satellite, at most [`MAX_WINDOW`].
    pub window: u64,
    /// Highest valid satellite id.
    pub max_sat: u32,
    /// Longest payload the decoder accepts.
    pub max_payload: u16,
    /// What to do with stale keys.
    pub stale: StalePolicy,
    /// The window's defences against hostile or broken input and its memory
    /// budget. [`WindowLimits::OFF`] (the default, and `process`'s unless
    /// flags say otherwise) keeps the plain window semantics.
    pub limits: WindowLimits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            batch_size: DEFAULT_BATCH_SIZE,
            window: DEFAULT_WINDOW,
            max_sat: DEFAULT_MAX_SAT,
            max_payload: DEFAULT_MAX_PAYLOAD,
            stale: StalePolicy::Forward,
            limits: WindowLimits::OFF,
        }
    }
}

/// A [`Config`] the pipeline cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `batch_size` is 0 or above [`MAX_BATCH_SIZE`].
    #[error("batch size {0} is not between 1 and {MAX_BATCH_SIZE}")]
    BatchSize(usize),
    /// `window` is above [`MAX_WINDOW`].
    #[error("window {0} is above {MAX_WINDOW}")]
    Window(u64),
}

impl Config {
    /// Checks the ranges the pipeline relies on.
    ///
    /// # Errors
    /// The first option out of range.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(ConfigError::BatchSize(self.batch_size));
        }
        if self.window > MAX_WINDOW {
            return Err(ConfigError::Window(self.window));
        }
        Ok(())
    }
}

/// Why [`process_stream`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The options are out of range; nothing was read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading the input failed.
    #[error("reading the input failed: {0}")]
    Read(#[source] io::Error),
    /// Writing the output failed.
    #[error("writing the output failed: {0}")]
    Write(#[source] io::Error),
}

/// What the stages after decode counted. Its fields are JSON keys of every
/// summary that includes it: a new counter is one field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    /// Rows marked corrupt or with a sat above `max_sat`.
    pub invalid: u64,
    /// Copies dropped, in the batch or through the window.
    pub duplicates: u64,
    /// Keys at or below the window's low edge (forwarded unless `--stale drop`).
    pub stale: u64,
    /// Keys below the window's high mark, first seen, forwarded.
    pub late: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Bytes forwarded.
    pub forwarded_bytes: u64,
    /// Batches processed (counted by the stage driver).
    pub batches: u64,
    /// Keys too far above their satellite's highest seq (`--max-seq-jump`):
    /// dropped, the window not moved.
    pub suspect: u64,
    /// Keys outside their satellite's window forwarded because it was
    /// provisional (fewer than `--reanchor-after` keys accepted since it was
    /// anchored): the window not moved.
    pub provisional: u64,
    /// Satellites whose window moved to where their keys kept landing
    /// (`--reanchor-after`).
    pub reanchors: u64,
    /// Satellites whose window state was forgotten to stay within `--window-memory`.
    pub evicted_sats: u64,
}

/// The summary `process` prints: decode and pipeline counters together,
/// flattened into one JSON object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Decode's counters.
    #[serde(flatten)]
    pub decode: DecodeStats,
    /// The later stages' counters.
    #[serde(flatten)]
    pub pipeline: PipelineStats,
}

impl Summary {
    /// Puts the two halves together.
    pub fn new(decode: DecodeStats, pipeline: PipelineStats) -> Summary {
        Summary { decode, pipeline }
    }
}

/// The stages after decode, with their scratch space and window state.
#[derive(Debug)]
pub struct BatchProcessor {
    cfg: Config,
    mask: Vec<u64>,
    dedup: Dedup,
    row_ids: Vec<u32>,
    stats: PipelineStats,
}

impl BatchProcessor {
    /// Stages with an empty window.
    pub fn new(cfg: Config) -> BatchProcessor {
        BatchProcessor {
            cfg,
            mask: Vec::with_capacity(validate::mask_words(cfg.batch_size)),
            dedup: Dedup::new(cfg.window, cfg.stale, cfg.limits),
            row_ids: Vec::with_capacity(cfg.batch_size),
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

    /// Forgets the dedup window (a replayed input starts afresh), keeping
    /// counters and memory.
    pub fn reset_window(&mut self) {
        self.dedup.reset();
    }

    /// Validates, deduplicates and forwards one decoded batch of any layout
    /// into `out`, with `probe` called around each stage (`&mut ()` for none).
    ///
    /// # Errors
    /// When writing to `out` fails; the counters then do not include the
    /// batch's forwarded frames.
    pub fn process<R, W, P>(&mut self, rows: &R, out: &mut W, probe: &mut P) -> io::Result<()>
    where
        R: Rows + ?Sized,
        W: Write + ?Sized,
        P: Probe + ?Sized,
    {
        drive(
            &mut Bound {
                stages: self,
                rows,
                out,
            },
            probe,
        )
    }

    /// Feeds frames that were already delivered (e.g. read back from an
    /// output file after a restart) into the window as if forwarded now,
    /// without counting them or writing them anywhere.
    pub fn remember<R: Rows + ?Sized>(&mut self, rows: &R) {
        let counted = self.stats;
        // Writing into io::sink cannot fail.
        let _ = self.process(rows, &mut io::sink(), &mut ());
        self.stats = counted;
    }

    /// The rows the last [`BatchProcessor::process`] forwarded, in order.
    pub fn row_ids(&self) -> &[u32] {
        &self.row_ids
    }
}

/// A [`BatchProcessor`] bound to one batch and its output.
struct Bound<'a, R: ?Sized, W: ?Sized> {
    stages: &'a mut BatchProcessor,
    rows: &'a R,
    out: &'a mut W,
}

impl<R: Rows + ?Sized, W: Write + ?Sized> BatchStages for Bound<'_, R, W> {
    #[inline]
    fn count_batch(&mut self) {
        self.stages.stats.batches += 1;
    }

    #[inline(never)]
    fn validate(&mut self) {
        let s = &mut *self.stages;
        let valid = validate::valid_mask(self.rows, s.cfg.max_sat, &mut s.mask);
        s.stats.invalid += (self.rows.row_count() - valid) as u64;
    }

    #[inline(never)]
    fn dedup(&mut self) {
        let s = &mut *self.stages;
        let counts = s.dedup.run(self.rows, &s.mask, &mut s.row_ids);
        s.stats.duplicates += counts.duplicates;
        s.stats.stale += counts.stale;
        s.stats.late += counts.late;
        s.stats.suspect += counts.suspect;
        s.stats.provisional += counts.provisional;
        s.stats.reanchors += counts.reanchors;
        s.stats.evicted_sats += counts.evicted_sats;
    }

    #[inline(never)]
    fn forward(&mut self) -> io::Result<()> {
        let s = &mut *self.stages;
        let bytes = forward::write_rows(self.rows, &s.row_ids, self.out)?;
        s.stats.forwarded += s.row_ids.len() as u64;
        s.stats.forwarded_bytes += bytes;
        Ok(())
    }
}

/// Runs the whole pipeline from `input` to `out` and returns the summary.
/// `out` is flushed at the end.
///
/// # Errors
/// A [`ConfigError`] before anything is read, or the first read or write
/// error; what was forwarded before it stays written.
pub fn process_stream<R: Read, W: Write>(
    input: R,
    out: &mut W,
    cfg: Config,
) -> Result<Summary, ProcessError> {
    process_stream_until(input, out, cfg, &|| false).map(|(s, _)| s)
}

/// [`process_stream`] that also stops between batches once `stop` returns
/// true. Returns the summary and whether it stopped early; the output then
/// holds whole batches only.
///
/// # Errors
/// As [`process_stream`].
pub fn process_stream_until<R: Read, W: Write>(
    input: R,
    out: &mut W,
    cfg: Config,
    stop: &dyn Fn() -> bool,
) -> Result<(Summary, bool), ProcessError> {
    process_stream_each(input, out, cfg, stop, |_, _| {})
}

/// [`process_stream_until`] that also hands each batch and the rows it
/// forwarded ([`BatchProcessor::row_ids`], in (sat, seq) order) to `each`,
/// once per batch after it is written (the gap tracker of `process`).
///
/// # Errors
/// As [`process_stream`].
pub fn process_stream_each<R: Read, W: Write>(
    input: R,
    out: &mut W,
    cfg: Config,
    stop: &dyn Fn() -> bool,
    mut each: impl FnMut(&View<'_>, &[u32]),
) -> Result<(Summary, bool), ProcessError> {
    cfg.check()?;
    let decoder = Decoder::new(cfg.max_payload);
    let mut reader = FrameReader::new(input, decoder, DEFAULT_READ_CHUNK);
    let mut stages = BatchProcessor::new(cfg);
    // The frames stay in the reader's buffer: the batch holds columns only.
    let mut batch = Batch::with_capacity(cfg.batch_size, 0);
    let mut stopped = false;
    while reader
        .fill_placed(&mut batch, cfg.batch_size)
        .map_err(ProcessError::Read)?
        > 0
    {
        let rows = View::all(&batch, reader.bytes());
        stages
            .process(&rows, out, &mut ())
            .map_err(ProcessError::Write)?;
        each(&rows, stages.row_ids());
        if stop() {
            stopped = true;
            break;
        }
    }
    out.flush().map_err(ProcessError::Write)?;
    Ok((Summary::new(reader.stats(), stages.stats()), stopped))
}

/// Batches in flight between [`process_stream_each_split`]'s two threads:
/// at most this many...
const IN_FLIGHT: usize = 8;

/// ...and at least two (one filled while the other is written), within
/// about this many bytes of frames at 128 bytes a frame: a batch of a
/// million frames keeps two in flight, not eight.
const IN_FLIGHT_BYTES: usize = 64 << 20;

/// Batches in flight for batches of `batch_size` frames.
fn in_flight(batch_size: usize) -> usize {
    (IN_FLIGHT_BYTES / batch_size.saturating_mul(128).max(1)).clamp(2, IN_FLIGHT)
}

/// Spins of every 16th round of a handover wait; the other rounds yield.
const HANDOVER_SPINS: u32 = 64;

/// Yields after which a handover wait blocks instead: the other side is
/// stalled (a slow disk or pipe), not merely a batch behind.
const HANDOVER_YIELDS: u32 = 20_000;

/// Round `round` of a handover wait that found the queue empty or full:
/// a short spin every 16th round, a yield to the OS in the others.
#[inline]
fn back_off(round: u32) {
    if round.is_multiple_of(16) {
        for _ in 0..HANDOVER_SPINS {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// Receives from `rx`, spinning and yielding first: on this kind of VM a
/// thread that blocks takes up to a millisecond to wake, as long as dozens
/// of batches. `None` once the sender is gone.
fn handover_recv<T>(rx: &Receiver<T>) -> Option<T> {
    for round in 0..HANDOVER_YIELDS {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => back_off(round),
        }
    }
    rx.recv().ok()
}

/// Sends `v` on `tx` as [`handover_recv`] receives. False once the
/// receiver is gone.
fn handover_send<T>(tx: &SyncSender<T>, mut v: T) -> bool {
    for round in 0..HANDOVER_YIELDS {
        match tx.try_send(v) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                v = back;
                back_off(round);
            }
        }
    }
    tx.send(v).is_ok()
}

/// A batch handed from [`process_stream_each_split`]'s first thread to the
/// second: its frames, the rows to forward, and the counters up to it.
struct Handed {
    batch: Batch,
    row_ids: Vec<u32>,
    decoded: DecodeStats,
    counted: PipelineStats,
}

/// [`process_stream_each`] on two threads: one reads, decodes (each frame
/// copied into its batch, [`FrameReader::fill`]), validates and
/// deduplicates batches; the other writes each batch's rows and calls
/// `each`, in batch order. The batches, the output and the summary are
/// those of [`process_stream_each`]; up to [`IN_FLIGHT`] batches (fewer
/// when they are large, see [`IN_FLIGHT_BYTES`]) are decoded ahead.
///
/// The writing side returns as soon as it stops (a write error, `stop`):
/// it then waits for the first thread's current read, so the input should
/// be one whose reads end (a file), not a pipe that may stay idle.
///
/// # Errors
/// As [`process_stream`]. A read error is reported after the batches
/// decoded before it are written.
pub fn process_stream_each_split<R: Read + Send, W: Write>(
    input: R,
    out: &mut W,
    cfg: Config,
    stop: &dyn Fn() -> bool,
    mut each: impl FnMut(&View<'_>, &[u32]),
) -> Result<(Summary, bool), ProcessError> {
    cfg.check()?;
    let batches = in_flight(cfg.batch_size);
    let (full_tx, full_rx) = sync_channel::<io::Result<Handed>>(batches);
    let (empty_tx, empty_rx) = sync_channel::<Handed>(batches);
    for _ in 0..batches {
        let sent = empty_tx.try_send(Handed {
            batch: Batch::with_capacity(cfg.batch_size, 128),
            row_ids: Vec::with_capacity(cfg.batch_size),
            decoded: DecodeStats::default(),
            counted: PipelineStats::default(),
        });
        debug_assert!(sent.is_ok(), "the queue holds every batch");
    }
    std::thread::scope(|s| {
        let decoding = s.spawn(move || {
            let decoder = Decoder::new(cfg.max_payload);
            let mut reader = FrameReader::new(input, decoder, DEFAULT_READ_CHUNK);
            let mut stages = BatchProcessor::new(cfg);
            // Until the input ends, a read fails, or the writing side hangs
            // up (its receiver and the empty batches' sender gone).
            while let Some(mut h) = handover_recv(&empty_rx) {
                let sent = match reader.fill(&mut h.batch, cfg.batch_size) {
                    Ok(0) => break,
                    Ok(_) => {
                        // The rows are chosen and counted here; the other
                        // thread writes them (io::sink cannot fail).
                        let rows = View::all(&h.batch, &h.batch.buf);
                        let _ = stages.process(&rows, &mut io::sink(), &mut ());
                        h.row_ids.clear();
                        h.row_ids.extend_from_slice(stages.row_ids());
                        (h.decoded, h.counted) = (reader.stats(), stages.stats());
                        handover_send(&full_tx, Ok(h))
                    }
                    Err(e) => {
                        handover_send(&full_tx, Err(e));
                        break;
                    }
                };
                if !sent {
                    break;
                }
            }
            Summary::new(reader.stats(), stages.stats())
        });
        let (mut stopped, mut failed) = (false, None);
        // The counters up to the last batch written.
        let mut written = Summary::default();
        while let Some(next) = handover_recv(&full_rx) {
            let h = match next {
                Ok(h) => h,
                Err(e) => {
                    failed = Some(ProcessError::Read(e));
                    break;
                }
            };
            let rows = View::all(&h.batch, &h.batch.buf);
            if let Err(e) = forward::write_rows(&rows, &h.row_ids, out) {
                failed = Some(ProcessError::Write(e));
                break;
            }
            each(&rows, &h.row_ids);
            written = Summary::new(h.decoded, h.counted);
            // Never waits: the queue has room for every batch.
            let _ = empty_tx.try_send(h);
            if stop() {
                stopped = true;
                break;
            }
        }
        // Hang up, so a first thread waiting on either queue returns.
        drop(full_rx);
        drop(empty_tx);
        let whole = match decoding.join() {
            Ok(summary) => summary,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Some(e) = failed {
            return Err(e);
        }
        out.flush().map_err(ProcessError::Write)?;
        // Stopped early: the batches decoded ahead and never written are
        // not counted, as one thread would not have decoded them.
        Ok((if stopped { written } else { whole }, stopped))
    })
}
