//! The data-parallel `--threads N` mode (soa only): every thread decodes,
//! and the output is byte for byte that of one thread.
//!
//! The runner goes through the capture in supersteps of about
//! `REGION_FRAMES` (16k) frames per thread (or a batch, if larger). Superstep
//! `k + 1` is decoded while superstep `k` is deduplicated, then `k` is
//! forwarded: two phases on the rayon pool's threads per superstep.
//!
//! - **Decode, one region of bytes per task.** The region at the exact
//!   position where the last superstep stopped is decoded from there. Every
//!   other task starts [`ZONE`] bytes before its region and decodes that zone
//!   only to fall into step with the frames (resynchronising on a marker, as
//!   after garbage), then decodes its region. Each region ends where the next
//!   one starts, with `eof` false, so a task in step with its successor stops
//!   exactly where the successor's region starts. After the phase the regions
//!   are chained in order: region `t` is taken when its predecessor stopped
//!   exactly where it started. Decoding depends on nothing but the position
//!   (and a decoder that cannot decide at a byte with more input cannot with
//!   less), so the chained regions are what one decoder would have produced.
//!   A region that does not chain (the zone was too short, or a false marker
//!   held it out of step) is dropped with every region after it, and the
//!   next superstep starts where the chain ended.
//! - **Validate and dedup, in the same tasks.** The window is per satellite,
//!   so with `P` parts each keeps a [`Dedup`] for one range of satellites and
//!   runs every batch with the validity mask narrowed to them
//!   ([`validate::keep_sats`]); the parts' survivors, concatenated in range
//!   order, are the batch's (sat, seq) order. Each part reads every row, so
//!   parts pay only from about six threads on; below that one task dedups
//!   (as with a window memory budget, whose eviction is global). The tasks
//!   that dedup get smaller regions to decode: the region sizes follow the
//!   measured time of each task, so the tasks end together.
//! - **Forward, one run of batches per task**, each into its own sink and
//!   digest; the digests are combined in batch order.
//!
//! The phases run on the rayon pool's threads, each pinned to its task for
//! the whole run ([`rayon::ThreadPool::broadcast`]) and meeting at spinning
//! barriers: a rayon `join` per phase left the second task to a thread that
//! had gone to sleep, and waking a sleeping vCPU here takes a millisecond or
//! more (audit.md, section 13), as long as a phase. Thread 0 does the serial
//! steps (planning, chaining, cutting, the meter) while the others spin (and
//! yield, should there be more threads than cores).
//!
//! Batches are cut from the chained regions afterwards, at multiples of the
//! batch size from the start of the pass, as one thread cuts them: a batch
//! inside a region is a [`View`] of it (no copy), a batch across two regions
//! has its columns copied, and the rows after the last whole batch wait in a
//! carry batch for the next superstep. Near the end of the input or of a
//! frame limit one task decodes a batch at a time from the exact position.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Instant;

use super::{
    Limit, Meter, RunOptions, RunReport, StageClock, MAX_THREADS, PARALLEL_ZONE, WARMUP_BATCHES,
};
use crate::batch::{Batch, Placed, Rows, View};
use crate::decode::{DecodeStats, Decoder};
use crate::dedup::{Dedup, DedupCounts};
use crate::forward;
use crate::pipeline::{Config, PipelineStats, Summary};
use crate::stage::{Probe, Stage};
use crate::validate;
use crate::wire::OVERHEAD;

/// Bytes before its region a task decodes to fall into step, by default
/// (see [`super::PARALLEL_ZONE`]).
pub const ZONE: usize = 8 * 1024;

/// Frames per thread per superstep (or a batch, if larger): enough that the
/// two barriers per superstep cost little, few enough that a region's frames
/// are still in cache when they are forwarded.
const REGION_FRAMES: usize = 16_384;

/// The smallest region worth a task; a stretch of input with less per task
/// (the end of the input) is decoded a batch at a time. A zone is never
/// longer than a quarter of it. Regions are also at least two of the longest
/// frames (see `Driver::min_region`), so the first always gets past one.
const MIN_REGION: usize = 4 * ZONE;

/// Frames per task below which a frame limit's last stretch is decoded a
/// batch at a time.
const MIN_REGION_FRAMES: u64 = 1024;

/// Threads per satellite part: one dedup per this many threads (at least
/// one).
const THREADS_PER_PART: usize = 3;

/// Spins at a barrier before each yield to the OS.
const SPINS: u32 = 256;

/// One task's decoding side.
struct Region {
    decoder: Decoder,
    /// Decodes the zone; its counters are never read.
    zone: Decoder,
    zone_rows: Batch,
    /// The region's frames (columns only, offsets into the capture).
    rows: Batch,
    /// Where the region's frames start, where decoding stopped.
    start: usize,
    end: usize,
    /// The region's decode stopped at its frame limit, not at its end.
    full: bool,
    /// What decoding the region counted.
    stats: DecodeStats,
    /// Nanoseconds the task spent decoding, and deduplicating first.
    decode_ns: f64,
    dedup_ns: f64,
    clock: StageClock,
}

/// One satellite range and its window.
struct Part {
    /// Satellites `lo..hi`.
    lo: u64,
    hi: u64,
    mask: Vec<u64>,
    dedup: Dedup,
    /// Rows to forward, per batch of the superstep, in (sat, seq) order.
    ids: Vec<Vec<u32>>,
    counts: DedupCounts,
    /// Rows valid for any satellite (counted by the first part only).
    valid: u64,
}

/// One task's forwarding side.
struct Sink {
    out: Vec<u8>,
    digest: Option<crc32fast::Hasher>,
    forwarded: u64,
    bytes: u64,
    clock: StageClock,
}

/// Where a batch is.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// Rows `start .. start + len` of region `t` of the set being processed.
    Region(usize, usize, usize),
    /// The carry batch.
    Carry,
    /// A batch across regions, copied.
    Copied(usize),
}

/// What the next decode does.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Nothing: the limit is reached.
    Stop,
    /// One task, from the exact position, with `eof`, up to this many rows.
    Batch(usize),
    /// Every task a region: the bytes of each, the most rows each.
    Regions(usize, usize),
}

/// The batches of the set being processed, and where they are.
struct Cut {
    carry: Batch,
    copied: Vec<Batch>,
    batches: Vec<Src>,
    /// They start a replay of the input: reset the windows first.
    new_pass: bool,
    /// The batch left open by `cut_batches`: the next carry.
    tail: Option<Src>,
}

/// What the tasks of the next phase do.
#[derive(Debug, Clone, Copy)]
struct Job {
    plan: Plan,
    /// Region t is `bounds[t] .. bounds[t + 1]` (with `Plan::Regions`).
    bounds: [usize; MAX_THREADS + 1],
    /// The set decoded into, and the set whose batches are processed.
    decode_set: usize,
    process_set: usize,
    /// Deduplicate the processed set's batches in phase A.
    dedup: bool,
    count_allocs: bool,
    digest: bool,
    /// Position the exact region starts at.
    pos: usize,
}

/// The phase the crew runs next.
const PHASE_DECODE: u8 = 0;
const PHASE_FORWARD: u8 = 1;
const PHASE_EXIT: u8 = 2;

/// What every thread reads: the per-task state behind locks (each task
/// takes its own; thread 0 takes them all between phases, when no task
/// holds any) and the barrier.
struct Shared<'d> {
    data: &'d [u8],
    cfg: Config,
    sets: [Vec<RwLock<Region>>; 2],
    parts: Vec<RwLock<Part>>,
    sinks: Vec<Mutex<Sink>>,
    cut: RwLock<Cut>,
    job: RwLock<Job>,
    phase: AtomicU8,
    barrier: SpinBarrier,
    /// A task panicked: the run is abandoned.
    failed: AtomicBool,
    /// The first forwarding error of the phase.
    error: Mutex<Option<io::Error>>,
}

/// A barrier whose waiters spin (yielding now and then): the threads stay
/// awake between phases.
struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    threads: usize,
}

impl SpinBarrier {
    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            spins += 1;
            if spins.is_multiple_of(SPINS) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Read guards of every lock of `locks` (at most [`MAX_THREADS`]), on the
/// stack.
fn read_all<T>(locks: &[RwLock<T>]) -> [Option<RwLockReadGuard<'_, T>>; MAX_THREADS] {
    std::array::from_fn(|i| locks.get(i).map(read))
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Thread 0's own state: the position, the counters, the meter.
struct Driver<'s, 'd> {
    sh: &'s Shared<'d>,
    /// Mean frame length of the capture (sizes the regions).
    mean_len: usize,
    region_rows: usize,
    /// The shortest region: [`MIN_REGION`], or two of the longest frames.
    min_region: usize,
    /// Nanoseconds to decode a byte, to deduplicate a row in one part
    /// (moving averages): the region sizes follow them.
    decode_per_byte: f64,
    dedup_per_row: f64,
    /// Decoder position: everything before it is counted in `decoded`.
    pos: usize,
    /// The set decoded last starts a replay of the input.
    decoded_new_pass: bool,
    /// A replay started and none of its batches was cut yet.
    pass_unstarted: bool,
    decoded: DecodeStats,
    /// Frames decoded, processed or not.
    queued: u64,
    /// Frames to decode in all.
    most: u64,
    passes: u64,
    pipeline: PipelineStats,
    /// The satellite ranges are cut (after the first superstep's decode).
    split: bool,
}

pub(super) fn run(
    data: &[u8],
    opts: &RunOptions,
    pool: &rayon::ThreadPool,
) -> io::Result<RunReport> {
    let cfg = opts.cfg;
    let threads = opts.threads;
    let b = cfg.batch_size;
    let parts = if cfg.limits.memory_budget == usize::MAX {
        (threads / THREADS_PER_PART).max(1)
    } else {
        1
    };
    let region_rows = REGION_FRAMES.max(b);
    // Batches of a superstep: its regions can hold more than region_rows
    // each (the shares move, frames vary); `chain_and_cut` adds room when a
    // superstep has more.
    let max_batches = (2 * threads * region_rows).div_ceil(b) + threads + 2;
    let new_set = || -> Vec<RwLock<Region>> {
        (0..threads)
            .map(|_| {
                RwLock::new(Region {
                    decoder: Decoder::new(cfg.max_payload),
                    zone: Decoder::new(cfg.max_payload),
                    zone_rows: Batch::with_capacity(ZONE / OVERHEAD + 1, 0),
                    rows: Batch::with_capacity(2 * region_rows, 0),
                    start: 0,
                    end: 0,
                    full: false,
                    stats: DecodeStats::default(),
                    decode_ns: 0.0,
                    dedup_ns: 0.0,
                    clock: StageClock::new(),
                })
            })
            .collect()
    };
    let sh = Shared {
        data,
        cfg,
        sets: [new_set(), new_set()],
        parts: (0..parts)
            .map(|_| {
                RwLock::new(Part {
                    lo: 0,
                    hi: u64::from(cfg.max_sat) + 1,
                    mask: Vec::with_capacity(validate::mask_words(b)),
                    dedup: Dedup::new(cfg.window, cfg.stale, cfg.limits),
                    ids: (0..max_batches).map(|_| Vec::with_capacity(b)).collect(),
                    counts: DedupCounts::default(),
                    valid: 0,
                })
            })
            .collect(),
        sinks: (0..threads)
            .map(|_| {
                Mutex::new(Sink {
                    out: Vec::new(),
                    digest: None,
                    forwarded: 0,
                    bytes: 0,
                    clock: StageClock::new(),
                })
            })
            .collect(),
        cut: RwLock::new(Cut {
            carry: Batch::with_capacity(b, 0),
            copied: (0..threads).map(|_| Batch::with_capacity(b, 0)).collect(),
            batches: Vec::with_capacity(max_batches),
            new_pass: false,
            tail: None,
        }),
        job: RwLock::new(Job {
            plan: Plan::Stop,
            bounds: [0; MAX_THREADS + 1],
            decode_set: 0,
            process_set: 1,
            dedup: false,
            count_allocs: false,
            digest: opts.digest,
            pos: 0,
        }),
        phase: AtomicU8::new(PHASE_EXIT),
        barrier: SpinBarrier {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            threads,
        },
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let driver = Mutex::new(Driver {
        sh: &sh,
        mean_len: mean_frame_len(data, cfg.max_payload),
        region_rows,
        min_region: MIN_REGION.max(2 * (OVERHEAD + usize::from(cfg.max_payload))),
        decode_per_byte: 0.0,
        dedup_per_row: 0.0,
        pos: 0,
        decoded_new_pass: false,
        pass_unstarted: false,
        decoded: DecodeStats::default(),
        queued: 0,
        most: match opts.limit {
            Limit::Frames(n) => n,
            Limit::Duration(_) => u64::MAX,
        },
        passes: 1,
        pipeline: PipelineStats::default(),
        split: parts == 1,
    });
    let mut report = None;
    let report_slot = Mutex::new(&mut report);
    pool.broadcast(|ctx| {
        if ctx.index() == 0 {
            let mut driver = driver.lock().unwrap_or_else(PoisonError::into_inner);
            let result = panic::catch_unwind(AssertUnwindSafe(|| driver.drive(opts)));
            // Whatever happened, release the crew.
            sh.phase.store(PHASE_EXIT, Ordering::Release);
            sh.barrier.wait();
            **report_slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        } else {
            sh.crew(ctx.index());
        }
    });
    match report.expect("thread 0 reports") {
        Ok(result) => result,
        Err(panic) => panic::resume_unwind(panic),
    }
}

/// The mean frame length in the capture's first 64 KiB, at least the
/// shortest frame.
fn mean_frame_len(data: &[u8], max_payload: u16) -> usize {
    let mut sample = Batch::default();
    let mut decoder = Decoder::new(max_payload);
    let head = &data[..data.len().min(64 * 1024)];
    let used = decoder.decode(
        head,
        true,
        &mut Placed::new(&mut sample, head, 0),
        usize::MAX,
    );
    (used / sample.len().max(1)).max(OVERHEAD)
}

impl Shared<'_> {
    /// The loop of threads 1.. : each phase's task, between barriers.
    fn crew(&self, t: usize) {
        loop {
            self.barrier.wait();
            match self.phase.load(Ordering::Acquire) {
                PHASE_DECODE => self.guarded(|| self.decode_task(t)),
                PHASE_FORWARD => self.guarded(|| self.forward_task(t)),
                _ => return,
            }
            self.barrier.wait();
        }
    }

    /// Runs a task; a panic marks the run failed instead of leaving the
    /// other threads at the barrier.
    fn guarded(&self, task: impl FnOnce()) {
        if panic::catch_unwind(AssertUnwindSafe(task)).is_err() {
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Runs one phase on every thread, thread 0's task included.
    fn phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
        self.barrier.wait();
        match phase {
            PHASE_DECODE => self.guarded(|| self.decode_task(0)),
            _ => self.guarded(|| self.forward_task(0)),
        }
        self.barrier.wait();
        assert!(
            !self.failed.load(Ordering::Acquire),
            "a task of the parallel runner panicked"
        );
    }

    fn len_of(cut: &Cut, src: Src) -> usize {
        match src {
            Src::Region(_, _, len) => len,
            Src::Carry => cut.carry.len(),
            Src::Copied(k) => cut.copied[k].len(),
        }
    }

    /// Phase A, task `t`: validate and dedup the processed set's batches
    /// for part `t` (if there is one), then decode region `t`.
    fn decode_task(&self, t: usize) {
        let job = *read(&self.job);
        let cut = read(&self.cut);
        let mut r = write(&self.sets[job.decode_set][t]);
        r.clock = StageClock::new();
        r.clock.count_allocs = job.count_allocs;
        let t0 = Instant::now();
        if job.dedup && t < self.parts.len() {
            let mut part = write(&self.parts[t]);
            let others = read_all(&self.sets[job.process_set]);
            self.dedup(t, &mut part, &cut, &others, &mut r.clock);
        }
        let t1 = Instant::now();
        r.rows.clear();
        r.stats = DecodeStats::default();
        r.full = false;
        let data = self.data;
        match job.plan {
            Plan::Batch(limit) if t == 0 => {
                r.clock.before(Stage::Decode);
                r.decode_span(data, job.pos, data.len(), limit);
                r.clock.after(Stage::Decode);
            }
            Plan::Regions(_, limit) => {
                r.clock.before(Stage::Decode);
                r.decode_region(data, &job.bounds, t, limit);
                r.clock.after(Stage::Decode);
            }
            _ => {}
        }
        r.dedup_ns = (t1 - t0).as_nanos() as f64;
        r.decode_ns = t1.elapsed().as_nanos() as f64;
    }

    /// Validates and deduplicates every batch for `part`'s satellites.
    fn dedup(
        &self,
        t: usize,
        part: &mut Part,
        cut: &Cut,
        regions: &[Option<RwLockReadGuard<'_, Region>>; MAX_THREADS],
        clock: &mut StageClock,
    ) {
        if cut.new_pass && !cut.batches.is_empty() {
            part.dedup.reset();
        }
        let whole = self.parts.len() == 1;
        for (i, &src) in cut.batches.iter().enumerate() {
            let rows = view(regions, cut, self.data, src);
            clock.before(Stage::Validate);
            let valid = validate::valid_mask(&rows, self.cfg.max_sat, &mut part.mask);
            if t == 0 {
                part.valid += valid as u64;
            }
            if !whole {
                let (sat, _) = rows.key_columns().expect("a view has columns");
                validate::keep_sats(sat, part.lo, part.hi, &mut part.mask);
            }
            clock.after(Stage::Validate);
            clock.before(Stage::Dedup);
            let counts = part.dedup.run(&rows, &part.mask, &mut part.ids[i]);
            part.counts.add(counts);
            clock.after(Stage::Dedup);
        }
    }

    /// Phase B, task `t`: forwards its run of the processed set's batches
    /// (about equal rows per task) into its sink and digest.
    fn forward_task(&self, t: usize) {
        let job = *read(&self.job);
        let cut = read(&self.cut);
        let mut sink = self.sinks[t].lock().unwrap_or_else(PoisonError::into_inner);
        let sink = &mut *sink;
        sink.clock = StageClock::new();
        sink.clock.count_allocs = job.count_allocs;
        sink.digest = job.digest.then(crc32fast::Hasher::new);
        let regions = read_all(&self.sets[job.process_set]);
        let parts = read_all(&self.parts);
        let n = self.sinks.len();
        let total: usize = cut.batches.iter().map(|&s| Self::len_of(&cut, s)).sum();
        let mut seen = 0;
        for (i, &src) in cut.batches.iter().enumerate() {
            let group = (seen * n / total.max(1)).min(n - 1);
            seen += Self::len_of(&cut, src);
            if group != t {
                continue;
            }
            let rows = view(&regions, &cut, self.data, src);
            sink.clock.before(Stage::Forward);
            sink.out.clear();
            for part in parts.iter().flatten() {
                match forward::write_rows(&rows, &part.ids[i], &mut sink.out) {
                    Ok(bytes) => sink.bytes += bytes,
                    Err(e) => {
                        let mut first = self.error.lock().unwrap_or_else(PoisonError::into_inner);
                        first.get_or_insert(e);
                        return;
                    }
                }
                sink.forwarded += part.ids[i].len() as u64;
            }
            sink.clock.after(Stage::Forward);
            if let Some(h) = &mut sink.digest {
                h.update(&sink.out);
            }
        }
    }
}

/// A batch of the processed set, read with the capture.
fn view<'a>(
    regions: &'a [Option<RwLockReadGuard<'_, Region>>; MAX_THREADS],
    cut: &'a Cut,
    data: &'a [u8],
    src: Src,
) -> View<'a> {
    match src {
        Src::Region(t, start, len) => {
            let region = regions[t].as_ref().expect("a batch's region exists");
            View::new(&region.rows, start..start + len, data)
        }
        Src::Carry => View::new(&cut.carry, 0..cut.carry.len(), data),
        Src::Copied(k) => View::new(&cut.copied[k], 0..cut.copied[k].len(), data),
    }
}

impl Driver<'_, '_> {
    /// The run, on thread 0: the serial steps, and a task of each phase.
    fn drive(&mut self, opts: &RunOptions) -> io::Result<RunReport> {
        let sh = self.sh;
        let threads = sh.sets[0].len();
        let mut meter = Meter::new(opts);
        // Every buffer has been used at full size by the fourth superstep.
        meter.warmup = WARMUP_BATCHES
            .max(4 * (threads * self.region_rows).div_ceil(sh.cfg.batch_size) as u64 + 2);
        // The first superstep is decoded alone.
        let mut cur = 0;
        let plan = self.plan();
        self.decode(cur, 1 - cur, plan, false, &mut meter);
        self.chain_and_cut(cur, plan);
        loop {
            let plan = if meter.done() {
                Plan::Stop
            } else {
                self.plan()
            };
            if read(&sh.cut).batches.is_empty() && matches!(plan, Plan::Stop) {
                break;
            }
            let next = 1 - cur;
            self.decode(next, cur, plan, true, &mut meter);
            self.forward(&mut meter)?;
            self.keep_tail();
            // Chaining and cutting (column copies of the batches across
            // regions) are decoding work, on this thread.
            meter.clock.before(Stage::Decode);
            self.chain_and_cut(next, plan);
            meter.clock.after(Stage::Decode);
            cur = next;
        }
        let carried = {
            let mut cut = write(&sh.cut);
            if cut.carry.is_empty() {
                false
            } else {
                // Stopped by time or a signal with rows decoded: one last
                // batch.
                cut.batches.clear();
                cut.batches.push(Src::Carry);
                cut.new_pass = self.pass_unstarted;
                true
            }
        };
        if carried {
            self.decode(1 - cur, cur, Plan::Stop, true, &mut meter);
            self.forward(&mut meter)?;
        }
        Ok(meter.finish(opts, Summary::new(self.decoded, self.pipeline), self.passes))
    }

    /// What the next superstep decodes, from the position and the limit.
    fn plan(&mut self) -> Plan {
        let data = self.sh.data;
        if self.queued >= self.most {
            return Plan::Stop;
        }
        self.decoded_new_pass = self.pos >= data.len();
        if self.decoded_new_pass {
            self.pos = 0;
            self.passes += 1;
        }
        let n = self.sh.sets[0].len();
        let budget = self.most - self.queued;
        let span = (data.len() - self.pos) / n;
        if n > 1 && span >= self.min_region && budget / n as u64 >= MIN_REGION_FRAMES {
            let bytes = span.min(self.region_rows * self.mean_len);
            Plan::Regions(bytes, (budget / n as u64).min(1 << 20) as usize)
        } else {
            Plan::Batch(budget.min(self.sh.cfg.batch_size as u64) as usize)
        }
    }

    /// Phase A: decodes the plan into set `set` while, when `dedup`, the
    /// batches of set `process` are validated and deduplicated in the same
    /// tasks.
    fn decode(&mut self, set: usize, process: usize, plan: Plan, dedup: bool, meter: &mut Meter) {
        let sh = self.sh;
        let (data, pos, n) = (sh.data, self.pos, sh.sets[set].len());
        let rows = if dedup { self.processed_rows() } else { 0 };
        // Each task's region, by its share of the superstep's bytes.
        let mut bounds = [0usize; MAX_THREADS + 1];
        if let Plan::Regions(bytes, _) = plan {
            let total = bytes * n;
            let last = if data.len() - pos < total + bytes {
                data.len()
            } else {
                pos + total
            };
            let shares = self.shares(last - pos, rows, n);
            let mut acc = 0.0;
            for (bound, share) in bounds.iter_mut().zip(&shares[..n]) {
                *bound = pos + (acc * (last - pos) as f64) as usize;
                acc += share;
            }
            bounds[n] = last;
            // Every region at least min_region: the zone fits in it, and the
            // first region, decoded with `eof` false, decodes or skips
            // something (a region shorter than a frame at its start would
            // leave the position where it was).
            let min = self.min_region;
            for t in 1..n {
                bounds[t] = bounds[t].max(bounds[t - 1] + min);
            }
            for t in (1..n).rev() {
                bounds[t] = bounds[t].min(bounds[t + 1] - min);
            }
        }
        *write(&sh.job) = Job {
            plan,
            bounds,
            decode_set: set,
            process_set: process,
            dedup,
            count_allocs: meter.clock.count_allocs,
            digest: meter.digest.is_some(),
            pos,
        };
        sh.phase(PHASE_DECODE);
        for r in &sh.sets[set] {
            meter.clock.merge(&read(r).clock);
        }
        if let Plan::Regions(..) = plan {
            self.measure(set, &bounds, rows);
        }
        if dedup {
            self.count_dedup(rows);
        }
    }

    /// Updates the costs the region sizes follow from the phase just run:
    /// decoding per byte, deduplicating per row (per part).
    fn measure(&mut self, set: usize, bounds: &[usize; MAX_THREADS + 1], rows: usize) {
        let regions = &self.sh.sets[set];
        let (mut bytes, mut decode_ns, mut dedup_ns) = (0.0, 0.0, 0.0);
        for (t, r) in regions.iter().enumerate() {
            let r = read(r);
            bytes += (bounds[t + 1] - bounds[t]) as f64;
            decode_ns += r.decode_ns;
            dedup_ns += r.dedup_ns;
        }
        let ema = |old: f64, new: f64| {
            if old > 0.0 {
                0.8 * old + 0.2 * new
            } else {
                new
            }
        };
        if bytes > 0.0 && decode_ns > 0.0 {
            self.decode_per_byte = ema(self.decode_per_byte, decode_ns / bytes);
        }
        if rows > 0 && dedup_ns > 0.0 {
            let per_row = dedup_ns / (rows * self.sh.parts.len()) as f64;
            self.dedup_per_row = ema(self.dedup_per_row, per_row);
        }
    }

    /// Each task's share of `bytes` to decode so that the tasks end
    /// together, the first `parts` tasks deduplicating `rows` rows first.
    fn shares(&self, bytes: usize, rows: usize, n: usize) -> [f64; MAX_THREADS] {
        let mut shares = [1.0 / n as f64; MAX_THREADS];
        if self.decode_per_byte <= 0.0 {
            return shares;
        }
        let dedup = self.dedup_per_row * rows as f64;
        let parts = self.sh.parts.len();
        let total = self.decode_per_byte * bytes as f64 + dedup * parts as f64;
        let each = total / n as f64;
        let mut sum = 0.0;
        for (t, share) in shares[..n].iter_mut().enumerate() {
            let busy = if t < parts { dedup } else { 0.0 };
            *share = ((each - busy) / self.decode_per_byte).max(self.min_region as f64);
            sum += *share;
        }
        for share in &mut shares[..n] {
            *share /= sum;
        }
        shares
    }

    /// Rows of the batches being processed.
    fn processed_rows(&self) -> usize {
        let cut = read(&self.sh.cut);
        cut.batches.iter().map(|&s| Shared::len_of(&cut, s)).sum()
    }

    /// Folds the parts' counters of the batches just deduplicated (`rows`
    /// rows) into the totals.
    fn count_dedup(&mut self, rows: usize) {
        let cut = read(&self.sh.cut);
        let s = &mut self.pipeline;
        for (p, part) in self.sh.parts.iter().enumerate() {
            let mut part = write(part);
            let c = std::mem::take(&mut part.counts);
            s.duplicates += c.duplicates;
            s.stale += c.stale;
            s.late += c.late;
            s.suspect += c.suspect;
            s.provisional += c.provisional;
            s.reanchors += c.reanchors;
            s.evicted_sats += c.evicted_sats;
            if p == 0 {
                s.invalid += rows as u64 - std::mem::take(&mut part.valid);
            }
        }
        s.batches += cut.batches.len() as u64;
    }

    /// Chains the regions of set `set` decoded by `plan` (see the module
    /// notes) and cuts them into batches.
    fn chain_and_cut(&mut self, set: usize, plan: Plan) {
        let sh = self.sh;
        let regions = read_all(&sh.sets[set]);
        let n = sh.sets[set].len();
        let region = |t: usize| regions[t].as_ref().expect("a region per task");
        let chained = match plan {
            Plan::Stop => 0,
            Plan::Batch(_) => 1,
            Plan::Regions(..) => {
                // Both decoded up to the same bound with `eof` false: in
                // step, they stop at the same byte. Out of step, region t's
                // frames are not the stream's (a predecessor that stopped
                // earlier could not decide there with more input either, so
                // no bytes in between can be decoded to close a gap).
                let mut chained = 1;
                while chained < n {
                    let (prev, r) = (region(chained - 1), region(chained));
                    if prev.full || prev.end != r.start {
                        break;
                    }
                    chained += 1;
                }
                chained
            }
        };
        for t in 0..chained {
            let r = region(t);
            self.decoded.add(&r.stats);
            self.queued += r.rows.len() as u64;
            self.pos = r.end;
        }
        let at_end = self.pos >= sh.data.len() || self.queued >= self.most;
        let mut cut = write(&sh.cut);
        cut_batches(&mut cut, &regions[..chained], sh.cfg.batch_size, at_end);
        // A replay's first rows can all wait in the carry: the reset goes
        // with the first batch of the pass.
        self.pass_unstarted |= std::mem::take(&mut self.decoded_new_pass);
        cut.new_pass = self.pass_unstarted && !cut.batches.is_empty();
        self.pass_unstarted &= cut.batches.is_empty();
        let (b, batches) = (sh.cfg.batch_size, cut.batches.len());
        for part in &sh.parts {
            let mut part = write(part);
            if part.ids.len() < batches {
                part.ids.resize_with(batches, || Vec::with_capacity(b));
            }
        }
        if !self.split {
            self.split = split_satellites(sh, &cut, &regions);
        }
    }

    /// After forwarding: the open batch becomes the carry.
    fn keep_tail(&mut self) {
        let mut cut = write(&self.sh.cut);
        let cut = &mut *cut;
        match cut.tail.take() {
            Some(Src::Carry) => {}
            Some(Src::Copied(k)) => {
                cut.carry.clear();
                std::mem::swap(&mut cut.carry, &mut cut.copied[k]);
            }
            _ => cut.carry.clear(),
        }
    }

    /// Phase B: forwards the batches phase A deduplicated (of the set it
    /// named `process_set`), and counts them.
    fn forward(&mut self, meter: &mut Meter) -> io::Result<()> {
        let sh = self.sh;
        sh.phase(PHASE_FORWARD);
        for sink in &sh.sinks {
            let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
            meter.clock.merge(&sink.clock);
            self.pipeline.forwarded += std::mem::take(&mut sink.forwarded);
            self.pipeline.forwarded_bytes += std::mem::take(&mut sink.bytes);
            if let (Some(all), Some(h)) = (&mut meter.digest, &sink.digest) {
                all.combine(h);
            }
        }
        if let Some(e) = sh
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        let cut = read(&sh.cut);
        for &src in &cut.batches {
            meter.batch_counted(Shared::len_of(&cut, src));
        }
        Ok(())
    }
}

/// Cuts the carry and `regions` into batches of `b` rows, in stream order.
/// The rows after the last whole batch are a batch too when `at_end` (the
/// pass or the frame limit ends there); otherwise they are left open in
/// `tail`, for the next superstep.
fn cut_batches(
    cut: &mut Cut,
    regions: &[Option<RwLockReadGuard<'_, Region>>],
    b: usize,
    at_end: bool,
) {
    cut.batches.clear();
    let mut open = Some(Src::Carry);
    let mut copies = 0;
    for (t, region) in regions.iter().enumerate() {
        let rows = &region.as_ref().expect("a chained region exists").rows;
        let (n, mut i) = (rows.len(), 0);
        if let Some(src) = open {
            let target = match src {
                Src::Carry => &mut cut.carry,
                Src::Copied(k) => &mut cut.copied[k],
                Src::Region(..) => unreachable!("an open batch is a copy"),
            };
            i = (b - target.len()).min(n);
            target.extend_rows(rows, 0..i);
            if target.len() == b {
                cut.batches.push(src);
                open = None;
            }
        }
        while n - i >= b {
            cut.batches.push(Src::Region(t, i, b));
            i += b;
        }
        if i < n {
            cut.copied[copies].clear();
            cut.copied[copies].extend_rows(rows, i..n);
            open = Some(Src::Copied(copies));
            copies += 1;
        }
    }
    cut.tail = None;
    if let Some(src) = open {
        let len = Shared::len_of(cut, src);
        if !at_end && len < b {
            cut.tail = Some(src);
        } else if len > 0 {
            cut.batches.push(src);
        }
    }
}

/// Cuts the satellite ranges at quantiles of the valid satellites of the
/// first batches; false when there were none.
fn split_satellites(
    sh: &Shared<'_>,
    cut: &Cut,
    regions: &[Option<RwLockReadGuard<'_, Region>>; MAX_THREADS],
) -> bool {
    let max_sat = sh.cfg.max_sat;
    let mut sample: Vec<u32> = Vec::new();
    for &src in &cut.batches {
        let v = view(regions, cut, sh.data, src);
        let (sat, _) = v.key_columns().expect("a view has columns");
        sample.extend(sat.iter().copied().filter(|&s| s <= max_sat));
    }
    if sample.is_empty() {
        return false;
    }
    sample.sort_unstable();
    let n = sh.parts.len();
    let cut_at = |p: usize| match p {
        0 => 0,
        p if p == n => u64::from(max_sat) + 1,
        p => u64::from(sample[p * sample.len() / n]),
    };
    for (p, part) in sh.parts.iter().enumerate() {
        let mut part = write(part);
        part.lo = cut_at(p);
        part.hi = cut_at(p + 1);
    }
    true
}

impl Region {
    /// Decodes region `t`, `bounds[t] .. bounds[t + 1]`, at most `limit`
    /// frames: the first from the exact position, the others after falling
    /// into step in the zone before.
    fn decode_region(
        &mut self,
        data: &[u8],
        bounds: &[usize; MAX_THREADS + 1],
        t: usize,
        limit: usize,
    ) {
        let start = if t == 0 {
            bounds[0]
        } else {
            let zone = PARALLEL_ZONE.load(Ordering::Relaxed).min(ZONE);
            let from = bounds[t] - zone;
            let input = &data[from..bounds[t]];
            self.zone_rows.clear();
            let mut target = Placed::new(&mut self.zone_rows, input, from);
            from + self.zone.decode(input, false, &mut target, usize::MAX)
        };
        self.decode_span(data, start, bounds[t + 1], limit);
    }

    /// Decodes `data[start..end]` (to the end of the stream when `end` is
    /// its end, else stopping before what needs more input), at most `limit`
    /// frames, into the region's rows, and counts it.
    fn decode_span(&mut self, data: &[u8], start: usize, end: usize, limit: usize) {
        let input = &data[start..end];
        let before = self.decoder.stats();
        let mut target = Placed::new(&mut self.rows, input, start);
        self.start = start;
        self.end = start
            + self
                .decoder
                .decode(input, end == data.len(), &mut target, limit);
        self.full = self.rows.len() == limit;
        self.stats = self.decoder.stats().since(&before);
    }
}
