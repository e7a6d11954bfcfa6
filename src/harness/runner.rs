//! The throughput runner behind `meridian-pipeline run` (and a bare
//! `cargo run --release`): synthetic ground-station traffic, wire-encoded in
//! memory ahead of time, pushed through decode -> validate -> dedup ->
//! forward (into a reused in-memory sink) for a duration or a frame count.
//!
//! Time is taken per batch at each stage boundary (five clock reads per
//! batch, not per frame), and allocations with the counting allocator's
//! per-thread counters around each stage. When the input runs out it is
//! replayed with the dedup window reset, so every pass sees the workload as
//! new traffic rather than as copies of the last pass.
//!
//! # Parallel mode (`--threads N`, N > 1, soa only)
//! Every thread decodes a stretch of the input, the dedup runs in the same
//! tasks (by satellite range from six threads on) and every thread forwards
//! a run of batches; the output is the sequential output byte for byte. See
//! [`parallel`].

pub mod parallel;

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::alloc_count::{thread_count, AllocCount};
use super::layout::Layout;
use crate::batch::Batch;
use crate::decode::Decoder;
use crate::pipeline::{Config, Summary};
use crate::stage::{PerStage, Probe, Stage};

/// Set to end every run early, after the batch in flight (the command line
/// sets it on SIGINT and SIGTERM, then prints the partial report). A run
/// that sees it reports what it did up to then.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Batches at the start of a run left out of the allocation figures: the
/// columns, the sink and the window rings grow to size in these.
pub const WARMUP_BATCHES: u64 = 8;

/// Bytes each task of the data-parallel mode (`--threads` above 1) decodes
/// before its region to fall into step with the frames: [`parallel::ZONE`]
/// by default, at most that. Every value gives the same output, only the
/// speed differs: a zone too short to hold a frame leaves the regions out of
/// step, and they are dropped and decoded again (the tests set short zones
/// to make that happen).
pub static PARALLEL_ZONE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(parallel::ZONE);

/// The most threads a run takes.
pub const MAX_THREADS: usize = 64;

/// How long to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// For this long.
    Duration(Duration),
    /// Until this many frames have been decoded.
    Frames(u64),
}

/// How to show progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A live bar (indicatif) when stderr is a terminal, plain lines otherwise.
    Auto,
    /// Nothing.
    Quiet,
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Which layout.
    pub layout: Layout,
    /// Threads; above 1 only for [`Layout::Soa`].
    pub threads: usize,
    /// Pipeline options.
    pub cfg: Config,
    /// When to stop.
    pub limit: Limit,
    /// Progress display.
    pub progress: Progress,
    /// Also take a CRC-32 of the whole forwarded stream (outside the stage
    /// timings), so runs can be compared byte for byte.
    pub digest: bool,
}

/// One stage's share of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct StageReport {
    /// Time in the stage per frame, in nanoseconds.
    pub ns_per_frame: f64,
    /// Share of the time of all stages.
    pub share: f64,
    /// Allocations per batch after warm-up.
    pub allocs_per_batch: f64,
    /// Bytes allocated per batch after warm-up.
    pub alloc_bytes_per_batch: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Layout name.
    pub layout: &'static str,
    /// Frames per batch.
    pub batch_size: usize,
    /// Threads used.
    pub threads: usize,
    /// Frames decoded.
    pub frames: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Wall-clock seconds of the timed loop.
    pub elapsed_s: f64,
    /// Frames decoded per second.
    pub frames_per_s: f64,
    /// Wire bytes decoded per second.
    pub bytes_per_s: f64,
    /// Wire bytes decoded.
    pub wire_bytes: u64,
    /// Batches run.
    pub batches: u64,
    /// Times the input was replayed from its start, the first included.
    pub passes: u64,
    /// Batches left out of the allocation figures.
    pub warmup_batches: u64,
    /// Per stage, keyed by stage name.
    pub stages: PerStage<StageReport>,
    /// The pipeline's counters over the whole run.
    pub summary: Summary,
    /// CRC-32 of everything forwarded, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_crc32: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct StageTotals {
    nanos: u128,
    allocs: AllocCount,
}

/// The probe that times each stage and counts its allocations on this
/// thread: two clock reads and two counter reads per stage per batch.
#[derive(Debug)]
struct StageClock {
    totals: PerStage<StageTotals>,
    t0: Instant,
    a0: AllocCount,
    /// False during warm-up: time counts, allocations do not.
    count_allocs: bool,
}

impl StageClock {
    fn new() -> StageClock {
        StageClock {
            totals: PerStage::default(),
            t0: Instant::now(),
            a0: AllocCount::default(),
            count_allocs: false,
        }
    }

    fn merge(&mut self, other: &StageClock) {
        for s in Stage::ALL {
            self.totals[s].nanos += other.totals[s].nanos;
            self.totals[s].allocs.add(other.totals[s].allocs);
        }
    }
}

impl Probe for StageClock {
    #[inline]
    fn before(&mut self, _: Stage) {
        self.a0 = thread_count();
        self.t0 = Instant::now();
    }
    #[inline]
    fn after(&mut self, stage: Stage) {
        let nanos = self.t0.elapsed().as_nanos();
        let allocs = thread_count().since(self.a0);
        let t = &mut self.totals[stage];
        t.nanos += nanos;
        if self.count_allocs {
            t.allocs.add(allocs);
        }
    }
}

/// Accumulates per-stage figures and drives the progress display.
struct Meter {
    clock: StageClock,
    frames: u64,
    batches: u64,
    start: Instant,
    limit: Limit,
    progress: Option<Display>,
    digest: Option<crc32fast::Hasher>,
    /// Batches before allocations are counted: [`WARMUP_BATCHES`], or more
    /// in the data-parallel mode, where each of its buffers is first used later.
    warmup: u64,
}

enum Display {
    Bar(indicatif::ProgressBar, Instant, u64),
    Lines(Instant, u64),
}

const LINE_EVERY: Duration = Duration::from_secs(2);
const BAR_EVERY: Duration = Duration::from_millis(200);

impl Meter {
    fn new(opts: &RunOptions) -> Meter {
        let (limit, progress) = (opts.limit, opts.progress);
        let start = Instant::now();
        let progress = match progress {
            Progress::Quiet => None,
            Progress::Auto if io::stderr().is_terminal() => {
                let len = match limit {
                    Limit::Duration(d) => d.as_millis() as u64,
                    Limit::Frames(n) => n,
                };
                let bar = indicatif::ProgressBar::new(len);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] [{bar:30}] {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                Some(Display::Bar(bar, start, 0))
            }
            Progress::Auto => Some(Display::Lines(start, 0)),
        };
        Meter {
            warmup: WARMUP_BATCHES,
            clock: StageClock::new(),
            frames: 0,
            batches: 0,
            start,
            limit,
            progress,
            digest: opts.digest.then(crc32fast::Hasher::new),
        }
    }

    fn done(&self) -> bool {
        if STOP.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        match self.limit {
            Limit::Duration(d) => self.start.elapsed() >= d,
            Limit::Frames(n) => self.frames >= n,
        }
    }

    /// Frames the next batch may hold.
    fn next_limit(&self, batch_size: usize) -> usize {
        match self.limit {
            Limit::Duration(_) => batch_size,
            Limit::Frames(n) => (n - self.frames).min(batch_size as u64) as usize,
        }
    }

    fn batch_done(&mut self, rows: usize, forwarded: &[u8]) {
        if let Some(h) = &mut self.digest {
            h.update(forwarded);
        }
        self.batch_counted(rows);
    }

    /// [`Meter::batch_done`] for a batch whose bytes are already in the
    /// digest.
    fn batch_counted(&mut self, rows: usize) {
        self.frames += rows as u64;
        self.batches += 1;
        self.clock.count_allocs = self.batches >= self.warmup;
        let now = Instant::now();
        let (frames, start, limit) = (self.frames, self.start, self.limit);
        let eta = |rate: f64| match limit {
            Limit::Duration(d) => d.saturating_sub(now - start).as_secs_f64(),
            Limit::Frames(n) => (n - frames) as f64 / rate.max(1.0),
        };
        match &mut self.progress {
            Some(Display::Bar(bar, last, last_frames)) if now - *last >= BAR_EVERY => {
                let rate = (frames - *last_frames) as f64 / (now - *last).as_secs_f64();
                bar.set_position(match limit {
                    Limit::Duration(_) => (now - start).as_millis() as u64,
                    Limit::Frames(_) => frames,
                });
                bar.set_message(format!(
                    "{:.1} M frames/s now, ETA {:.0} s",
                    rate / 1e6,
                    eta(rate)
                ));
                (*last, *last_frames) = (now, frames);
            }
            Some(Display::Lines(last, last_frames)) if now - *last >= LINE_EVERY => {
                let rate = (frames - *last_frames) as f64 / (now - *last).as_secs_f64();
                eprintln!(
                    "run: {:.1} s elapsed, {:.1} M frames/s now, {} frames, ETA {:.0} s",
                    (now - start).as_secs_f64(),
                    rate / 1e6,
                    frames,
                    eta(rate)
                );
                (*last, *last_frames) = (now, frames);
            }
            _ => {}
        }
    }

    fn finish(self, opts: &RunOptions, summary: Summary, passes: u64) -> RunReport {
        let elapsed = self.start.elapsed().as_secs_f64();
        if let Some(Display::Bar(bar, ..)) = &self.progress {
            bar.finish_and_clear();
        }
        let totals = &self.clock.totals;
        let total_nanos: u128 = totals.0.iter().map(|s| s.nanos).sum::<u128>().max(1);
        let counted = self.batches.saturating_sub(self.warmup).max(1) as f64;
        let report = |s: &StageTotals| StageReport {
            ns_per_frame: s.nanos as f64 / self.frames.max(1) as f64,
            share: s.nanos as f64 / total_nanos as f64,
            allocs_per_batch: s.allocs.allocs as f64 / counted,
            alloc_bytes_per_batch: s.allocs.bytes as f64 / counted,
        };
        RunReport {
            layout: opts.layout.name(),
            batch_size: opts.cfg.batch_size,
            threads: opts.threads,
            frames: self.frames,
            forwarded: summary.pipeline.forwarded,
            elapsed_s: elapsed,
            frames_per_s: self.frames as f64 / elapsed,
            bytes_per_s: summary.decode.input_bytes as f64 / elapsed,
            wire_bytes: summary.decode.input_bytes,
            batches: self.batches,
            passes,
            warmup_batches: self.warmup.min(self.batches),
            stages: PerStage(Stage::ALL.map(|s| report(&totals[s]))),
            summary,
            forwarded_crc32: self.digest.map(crc32fast::Hasher::finalize),
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options are out of range.
    #[error(transparent)]
    Config(#[from] crate::pipeline::ConfigError),
    /// More than one thread asked of a layout other than soa.
    #[error("--threads above 1 is only for --layout soa")]
    ThreadsNeedSoa,
    /// Window limits asked of the baseline, which has the plain window only.
    #[error("--layout baseline has the plain window only: drop --max-seq-jump, --reanchor-after and --window-memory")]
    BaselineHasNoLimits,
    /// The decoder finds no frame in the input (with the limit that rejected them).
    #[error("the workload holds no frame the decoder accepts (--max-payload is {max_payload}: is the workload's payload longer?)")]
    NoFrame {
        /// The decoder's `max_payload`.
        max_payload: u16,
    },
    /// The thread pool could not start.
    #[error("cannot start {threads} threads: {message}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Rayon's reason.
        message: String,
    },
    /// The in-memory sink failed (it cannot; kept for the `Write` contract).
    #[error("forwarding failed: {0}")]
    Io(#[from] io::Error),
}

/// Runs `data` (a whole capture) through the chosen layout until the limit.
///
/// # Errors
/// See [`RunError`].
pub fn run(data: &[u8], opts: &RunOptions) -> Result<RunReport, RunError> {
    opts.cfg.check()?;
    if opts.threads > 1 && opts.layout != Layout::Soa {
        return Err(RunError::ThreadsNeedSoa);
    }
    if opts.threads > MAX_THREADS {
        return Err(RunError::Threads {
            threads: opts.threads,
            message: format!("at most {MAX_THREADS}"),
        });
    }
    if opts.layout == Layout::Baseline && opts.cfg.limits != crate::dedup::WindowLimits::OFF {
        return Err(RunError::BaselineHasNoLimits);
    }
    let mut first = Batch::default();
    Decoder::new(opts.cfg.max_payload).decode(data, true, &mut first, 1);
    if first.is_empty() {
        return Err(RunError::NoFrame {
            max_payload: opts.cfg.max_payload,
        });
    }
    if opts.threads > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| RunError::Threads {
                threads: opts.threads,
                message: e.to_string(),
            })?;
        Ok(parallel::run(data, opts, &pool)?)
    } else {
        Ok(run_sequential(data, opts)?)
    }
}

fn run_sequential(data: &[u8], opts: &RunOptions) -> io::Result<RunReport> {
    let mut engine = opts.layout.engine(opts.cfg);
    let mut out = Vec::new();
    let mut meter = Meter::new(opts);
    let (mut pos, mut passes) = (0usize, 1u64);
    while !meter.done() {
        if pos >= data.len() {
            engine.reset_window();
            pos = 0;
            passes += 1;
        }
        let limit = meter.next_limit(opts.cfg.batch_size);
        meter.clock.before(Stage::Decode);
        let input = &data[pos..];
        pos += engine.decode_in_place(input, limit);
        meter.clock.after(Stage::Decode);
        let rows = engine.row_count();
        if rows == 0 {
            pos = data.len();
            continue;
        }
        out.clear();
        engine.process_in(input, &mut out, &mut meter.clock)?;
        meter.batch_done(rows, &out);
    }
    Ok(meter.finish(opts, engine.summary(), passes))
}
