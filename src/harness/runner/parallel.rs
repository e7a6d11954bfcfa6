//! The data-parallel `--threads N` mode (soa only): every thread decodes,
//! and the output is byte for byte that of one thread.
//!
//! The runner goes through the capture in supersteps of about
//! [`REGION_FRAMES`] frames per thread (or a batch, if larger). Superstep
//! `k + 1` is decoded while superstep `k` is deduplicated, then `k` is
//! forwarded: two joins on the rayon pool per superstep.
//!
//! - **Decode, one region of bytes per task.** The region at the exact
//!   position where the last superstep stopped is decoded from there. Every
//!   other task starts [`ZONE`] bytes before its region and decodes that zone
//!   only to fall into step with the frames (resynchronising on a marker, as
//!   after garbage), then decodes its region. Each region ends where the next
//!   one starts, with `eof` false, so a task in step with its successor stops
//!   exactly where the successor's region starts. After the join the regions
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
//! Batches are cut from the chained regions afterwards, at multiples of the
//! batch size from the start of the pass, as one thread cuts them: a batch
//! inside a region is a [`View`] of it (no copy), a batch across two regions
//! has its columns copied, and the rows after the last whole batch wait in a
//! carry batch for the next superstep. Near the end of the input or of a
//! frame limit one task decodes a batch at a time from the exact position.

use std::io;
use std::time::Instant;

use rayon::prelude::*;

use super::{Limit, Meter, RunOptions, RunReport, StageClock, MAX_THREADS, WARMUP_BATCHES};
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

/// Frames per thread per superstep (or a batch, if larger): enough that two
/// joins per superstep cost little, few enough that a region's frames are
/// still in cache when they are forwarded.
const REGION_FRAMES: usize = 16_384;

/// The smallest region worth a task; a stretch of input with less per task
/// (the end of the input) is decoded a batch at a time. A zone is never
/// longer than a quarter of it.
const MIN_REGION: usize = 4 * ZONE;

/// Frames per task below which a frame limit's last stretch is decoded a
/// batch at a time.
const MIN_REGION_FRAMES: u64 = 1024;

/// Threads per satellite part: one dedup per this many threads (at least
/// one).
const THREADS_PER_PART: usize = 3;

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

struct State<'d> {
    data: &'d [u8],
    cfg: Config,
    /// Mean frame length of the capture (sizes the regions).
    mean_len: usize,
    /// Two sets of regions: one decoded while the other is processed.
    sets: [Vec<Region>; 2],
    /// Each task's share of a superstep's bytes.
    shares: Vec<f64>,
    parts: Vec<Part>,
    sinks: Vec<Sink>,
    carry: Batch,
    copied: Vec<Batch>,
    /// The batches of the set being processed, in stream order.
    batches: Vec<Src>,
    /// They start a replay of the input: reset the windows first.
    batches_new_pass: bool,
    /// The batch left open by [`State::cut_batches`]: the next carry.
    tail: Option<Src>,
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

pub(super) fn run(data: &[u8], opts: &RunOptions) -> io::Result<RunReport> {
    let cfg = opts.cfg;
    let threads = opts.threads;
    let b = cfg.batch_size;
    let parts = if cfg.limits.memory_budget == usize::MAX {
        (threads / THREADS_PER_PART).max(1)
    } else {
        1
    };
    let mean_len = mean_frame_len(data, cfg.max_payload);
    let region_rows = REGION_FRAMES.max(b);
    // Batches of a superstep: its regions can hold more than region_rows
    // each (the shares move, frames vary); `chain_and_cut` adds room when a
    // superstep has more.
    let max_batches = (2 * threads * region_rows).div_ceil(b) + threads + 2;
    let new_set = || -> Vec<Region> {
        (0..threads)
            .map(|_| Region {
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
            .collect()
    };
    let mut st = State {
        data,
        cfg,
        mean_len,
        sets: [new_set(), new_set()],
        shares: vec![1.0 / threads as f64; threads],
        parts: (0..parts)
            .map(|_| Part {
                lo: 0,
                hi: u64::from(cfg.max_sat) + 1,
                mask: Vec::with_capacity(validate::mask_words(b)),
                dedup: Dedup::new(cfg.window, cfg.stale, cfg.limits),
                ids: (0..max_batches).map(|_| Vec::with_capacity(b)).collect(),
                counts: DedupCounts::default(),
                valid: 0,
            })
            .collect(),
        sinks: (0..threads)
            .map(|_| Sink {
                out: Vec::new(),
                digest: None,
                forwarded: 0,
                bytes: 0,
                clock: StageClock::new(),
            })
            .collect(),
        carry: Batch::with_capacity(b, 0),
        copied: (0..threads).map(|_| Batch::with_capacity(b, 0)).collect(),
        batches: Vec::with_capacity(max_batches),
        batches_new_pass: false,
        tail: None,
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
    };
    let mut meter = Meter::new(opts);
    // Every buffer has been used at full size by the fourth superstep.
    meter.warmup = WARMUP_BATCHES.max(4 * (threads * region_rows).div_ceil(b) as u64 + 2);
    // The first superstep is decoded alone.
    let mut cur = 0;
    let plan = st.plan(region_rows);
    st.decode(cur, plan, false, &mut meter);
    st.chain_and_cut(cur, plan);
    loop {
        let plan = if meter.done() {
            Plan::Stop
        } else {
            st.plan(region_rows)
        };
        if st.batches.is_empty() && matches!(plan, Plan::Stop) {
            break;
        }
        let next = 1 - cur;
        st.decode(next, plan, true, &mut meter);
        st.forward(cur, &mut meter)?;
        st.keep_tail();
        st.chain_and_cut(next, plan);
        cur = next;
    }
    if !st.carry.is_empty() {
        // Stopped by time or a signal with rows decoded: one last batch.
        st.batches.clear();
        st.batches.push(Src::Carry);
        st.batches_new_pass = st.pass_unstarted;
        st.decode(1 - cur, Plan::Stop, true, &mut meter);
        st.forward(cur, &mut meter)?;
    }
    let summary = Summary::new(st.decoded, st.pipeline);
    let passes = st.passes;
    Ok(meter.finish(opts, summary, passes))
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

impl State<'_> {
    fn len_of(&self, src: Src) -> usize {
        match src {
            Src::Region(_, _, len) => len,
            Src::Carry => self.carry.len(),
            Src::Copied(k) => self.copied[k].len(),
        }
    }

    fn view(&self, src: Src, set: usize) -> View<'_> {
        view(&self.sets[set], &self.carry, &self.copied, self.data, src)
    }

    /// What the next superstep decodes, from the position and the limit.
    fn plan(&mut self, region_rows: usize) -> Plan {
        if self.queued >= self.most {
            return Plan::Stop;
        }
        if self.pos >= self.data.len() {
            self.pos = 0;
            self.passes += 1;
            self.decoded_new_pass = true;
        } else {
            self.decoded_new_pass = false;
        }
        let n = self.sets[0].len();
        // Rows that may still be decoded beyond the carry's: `cut_batches`
        // has put the last superstep's tail in the carry by the time this
        // decode's rows are cut, and it came from the rows counted in queued.
        let budget = self.most - self.queued;
        let span = (self.data.len() - self.pos) / n;
        if n > 1 && span >= MIN_REGION && budget / n as u64 >= MIN_REGION_FRAMES {
            let bytes = span.min(region_rows * self.mean_len);
            Plan::Regions(bytes, (budget / n as u64).min(1 << 20) as usize)
        } else {
            Plan::Batch(budget.min(self.cfg.batch_size as u64) as usize)
        }
    }

    /// Decodes the plan into set `set` while, when `dedup`, the batches of
    /// the other set are validated and deduplicated in the same tasks.
    fn decode(&mut self, set: usize, plan: Plan, dedup: bool, meter: &mut Meter) {
        let (data, pos, n) = (self.data, self.pos, self.sets[set].len());
        let count_allocs = meter.clock.count_allocs;
        // Each task's region, by its share of the superstep's bytes.
        let mut bounds = [0usize; MAX_THREADS + 1];
        let regions = match plan {
            Plan::Stop => 0,
            Plan::Batch(_) => 1,
            Plan::Regions(bytes, _) => {
                let total = bytes * n;
                let last = if data.len() - pos < total + bytes {
                    data.len()
                } else {
                    pos + total
                };
                let mut acc = 0.0;
                for (bound, share) in bounds.iter_mut().zip(&self.shares) {
                    *bound = pos + (acc * (last - pos) as f64) as usize;
                    acc += share;
                }
                bounds[n] = last;
                // Every region at least MIN_REGION (the zone fits in it).
                for t in 1..n {
                    bounds[t] = bounds[t].max(bounds[t - 1] + MIN_REGION);
                }
                for t in (1..n).rev() {
                    bounds[t] = bounds[t].min(bounds[t + 1] - MIN_REGION);
                }
                n
            }
        };
        let (sets, parts) = (&mut self.sets, &mut self.parts);
        let (a, b) = sets.split_at_mut(1);
        let (mine, other) = if set == 0 {
            (&mut a[0], &b[0])
        } else {
            (&mut b[0], &a[0])
        };
        let work = Work {
            data,
            other,
            carry: &self.carry,
            copied: &self.copied,
            batches: if dedup { &self.batches } else { &[] },
            new_pass: self.batches_new_pass,
            max_sat: self.cfg.max_sat,
            whole: parts.len() == 1,
        };
        let mut parts_iter = parts.iter_mut();
        let mut tasks: [Option<&mut Part>; MAX_THREADS] = std::array::from_fn(|_| None);
        for slot in tasks.iter_mut().take(n) {
            *slot = parts_iter.next();
        }
        mine.par_iter_mut()
            .zip(tasks[..n].par_iter_mut())
            .enumerate()
            .for_each(|(t, (r, part))| {
                r.clock = StageClock::new();
                r.clock.count_allocs = count_allocs;
                let t0 = Instant::now();
                if let Some(part) = part {
                    work.dedup(t, part, &mut r.clock);
                }
                let t1 = Instant::now();
                r.rows.clear();
                r.stats = DecodeStats::default();
                r.full = false;
                if t < regions {
                    r.clock.before(Stage::Decode);
                    match plan {
                        Plan::Batch(limit) => {
                            let input = &data[pos..];
                            let before = r.decoder.stats();
                            let mut target = Placed::new(&mut r.rows, input, pos);
                            r.start = pos;
                            r.end = pos + r.decoder.decode(input, true, &mut target, limit);
                            r.stats = r.decoder.stats().since(&before);
                        }
                        Plan::Regions(_, limit) => r.decode_region(data, &bounds, t, limit),
                        Plan::Stop => {}
                    }
                    r.clock.after(Stage::Decode);
                }
                r.dedup_ns = (t1 - t0).as_nanos() as f64;
                r.decode_ns = t1.elapsed().as_nanos() as f64;
            });
        for r in mine.iter() {
            meter.clock.merge(&r.clock);
        }
        if let Plan::Regions(..) = plan {
            self.rebalance(set, &bounds);
        }
        if dedup {
            self.count_dedup();
        }
    }

    /// Moves each task's share of the next superstep's bytes so that the
    /// tasks, deduplicating and decoding, end together.
    fn rebalance(&mut self, set: usize, bounds: &[usize; MAX_THREADS + 1]) {
        let regions = &self.sets[set];
        let n = regions.len();
        let (mut bytes, mut decode_ns) = (0.0, 0.0);
        for (t, r) in regions.iter().enumerate() {
            bytes += (bounds[t + 1] - bounds[t]) as f64;
            decode_ns += r.decode_ns;
        }
        if bytes <= 0.0 || decode_ns <= 0.0 {
            return;
        }
        let per_byte = decode_ns / bytes;
        let dedup: f64 = regions.iter().map(|r| r.dedup_ns).sum();
        let target = (per_byte * bytes + dedup) / n as f64;
        let wanted: Vec<f64> = regions
            .iter()
            .map(|r| ((target - r.dedup_ns) / per_byte).max(MIN_REGION as f64))
            .collect();
        let sum: f64 = wanted.iter().sum();
        for (share, w) in self.shares.iter_mut().zip(&wanted) {
            *share = 0.5 * *share + 0.5 * w / sum;
        }
    }

    /// Folds the parts' counters of the batches just deduplicated into the
    /// totals.
    fn count_dedup(&mut self) {
        let rows: usize = self.batches.iter().map(|&s| self.len_of(s)).sum();
        let s = &mut self.pipeline;
        for part in &mut self.parts {
            let c = std::mem::take(&mut part.counts);
            s.duplicates += c.duplicates;
            s.stale += c.stale;
            s.late += c.late;
            s.suspect += c.suspect;
            s.provisional += c.provisional;
            s.reanchors += c.reanchors;
            s.evicted_sats += c.evicted_sats;
        }
        s.invalid += rows as u64 - std::mem::take(&mut self.parts[0].valid);
        s.batches += self.batches.len() as u64;
    }

    /// Chains the regions of set `set` decoded by `plan` (see the module
    /// notes) and cuts them into batches.
    fn chain_and_cut(&mut self, set: usize, plan: Plan) {
        let data = self.data;
        let regions = &self.sets[set];
        let mut chained = 0;
        match plan {
            Plan::Stop => {}
            Plan::Batch(_) => chained = 1,
            Plan::Regions(..) => {
                // Both decoded up to the same bound with `eof` false: in
                // step, they stop at the same byte. Out of step, region t's
                // frames are not the stream's (a predecessor that stopped
                // earlier could not decide there with more input either, so
                // no bytes in between can be decoded to close a gap).
                chained = 1;
                while chained < regions.len() {
                    let (prev, r) = (&regions[chained - 1], &regions[chained]);
                    if prev.full || prev.end != r.start {
                        break;
                    }
                    chained += 1;
                }
            }
        }
        for r in &regions[..chained] {
            self.decoded.add(&r.stats);
            self.queued += r.rows.len() as u64;
            self.pos = r.end;
        }
        let at_end = self.pos >= data.len() || self.queued >= self.most;
        self.cut_batches(set, chained, at_end);
        // A replay's first rows can all wait in the carry: the reset goes
        // with the first batch of the pass.
        self.pass_unstarted |= std::mem::take(&mut self.decoded_new_pass);
        self.batches_new_pass = self.pass_unstarted && !self.batches.is_empty();
        self.pass_unstarted &= self.batches.is_empty();
        let (b, batches) = (self.cfg.batch_size, self.batches.len());
        for part in &mut self.parts {
            if part.ids.len() < batches {
                part.ids.resize_with(batches, || Vec::with_capacity(b));
            }
        }
        if !self.split {
            self.split_satellites(set);
        }
    }

    /// Cuts the carry and the first `chained` regions of set `set` into
    /// batches of the batch size, in stream order. The rows after the last
    /// whole batch are a batch too when `at_end` (the pass or the frame limit
    /// ends there); otherwise they are left open in `tail`, for the next
    /// superstep.
    fn cut_batches(&mut self, set: usize, chained: usize, at_end: bool) {
        let b = self.cfg.batch_size;
        self.batches.clear();
        let mut open = Some(Src::Carry);
        let mut copies = 0;
        let regions = &self.sets[set];
        for (t, region) in regions.iter().enumerate().take(chained) {
            let (n, mut i) = (region.rows.len(), 0);
            if let Some(src) = open {
                let target = match src {
                    Src::Carry => &mut self.carry,
                    Src::Copied(k) => &mut self.copied[k],
                    Src::Region(..) => unreachable!("an open batch is a copy"),
                };
                i = (b - target.len()).min(n);
                target.extend_rows(&region.rows, 0..i);
                if target.len() == b {
                    self.batches.push(src);
                    open = None;
                }
            }
            while n - i >= b {
                self.batches.push(Src::Region(t, i, b));
                i += b;
            }
            if i < n {
                self.copied[copies].clear();
                self.copied[copies].extend_rows(&region.rows, i..n);
                open = Some(Src::Copied(copies));
                copies += 1;
            }
        }
        self.tail = None;
        if let Some(src) = open {
            let len = self.len_of(src);
            if !at_end && len < b {
                self.tail = Some(src);
            } else if len > 0 {
                self.batches.push(src);
            }
        }
    }

    /// After forwarding: the open batch becomes the carry.
    fn keep_tail(&mut self) {
        match self.tail.take() {
            Some(Src::Carry) => {}
            Some(Src::Copied(k)) => {
                self.carry.clear();
                std::mem::swap(&mut self.carry, &mut self.copied[k]);
            }
            _ => self.carry.clear(),
        }
    }

    /// Cuts the satellite ranges at quantiles of the valid satellites of the
    /// first batches.
    fn split_satellites(&mut self, set: usize) {
        let max_sat = self.cfg.max_sat;
        let mut sample: Vec<u32> = Vec::new();
        for &src in &self.batches {
            let v = self.view(src, set);
            let (sat, _) = v.key_columns().expect("a view has columns");
            sample.extend(sat.iter().copied().filter(|&s| s <= max_sat));
        }
        if sample.is_empty() {
            return;
        }
        self.split = true;
        sample.sort_unstable();
        let n = self.parts.len();
        let cut = |p: usize| match p {
            0 => 0,
            p if p == n => u64::from(max_sat) + 1,
            p => u64::from(sample[p * sample.len() / n]),
        };
        for (p, part) in self.parts.iter_mut().enumerate() {
            part.lo = cut(p);
            part.hi = cut(p + 1);
        }
    }

    /// Forwards the batches of set `set` (already deduplicated), each task a
    /// run of batches of about equal rows, and counts them.
    fn forward(&mut self, set: usize, meter: &mut Meter) -> io::Result<()> {
        let count_allocs = meter.clock.count_allocs;
        let digest = meter.digest.is_some();
        let total: usize = self.batches.iter().map(|&s| self.len_of(s)).sum();
        let mut sinks = std::mem::take(&mut self.sinks);
        let n = sinks.len();
        let this = &*self;
        let forwarded = sinks.par_iter_mut().enumerate().try_for_each(|(g, sink)| {
            sink.clock = StageClock::new();
            sink.clock.count_allocs = count_allocs;
            sink.digest = digest.then(crc32fast::Hasher::new);
            let mut seen = 0;
            for (i, &src) in this.batches.iter().enumerate() {
                let group = (seen * n / total.max(1)).min(n - 1);
                seen += this.len_of(src);
                if group != g {
                    continue;
                }
                let rows = this.view(src, set);
                sink.clock.before(Stage::Forward);
                sink.out.clear();
                for part in &this.parts {
                    sink.bytes += forward::write_rows(&rows, &part.ids[i], &mut sink.out)?;
                    sink.forwarded += part.ids[i].len() as u64;
                }
                sink.clock.after(Stage::Forward);
                if let Some(h) = &mut sink.digest {
                    h.update(&sink.out);
                }
            }
            Ok::<(), io::Error>(())
        });
        for sink in &mut sinks {
            meter.clock.merge(&sink.clock);
            self.pipeline.forwarded += std::mem::take(&mut sink.forwarded);
            self.pipeline.forwarded_bytes += std::mem::take(&mut sink.bytes);
            if let (Some(all), Some(h)) = (&mut meter.digest, &sink.digest) {
                all.combine(h);
            }
        }
        self.sinks = sinks;
        for &src in &self.batches {
            meter.batch_counted(self.len_of(src));
        }
        forwarded
    }
}

/// A batch of a set, read with the capture.
fn view<'a>(
    regions: &'a [Region],
    carry: &'a Batch,
    copied: &'a [Batch],
    data: &'a [u8],
    src: Src,
) -> View<'a> {
    match src {
        Src::Region(t, start, len) => View::new(&regions[t].rows, start..start + len, data),
        Src::Carry => View::new(carry, 0..carry.len(), data),
        Src::Copied(k) => View::new(&copied[k], 0..copied[k].len(), data),
    }
}

/// What the dedup side of a task reads: the batches of the set not being
/// decoded.
struct Work<'a> {
    data: &'a [u8],
    other: &'a [Region],
    carry: &'a Batch,
    copied: &'a [Batch],
    batches: &'a [Src],
    new_pass: bool,
    max_sat: u32,
    /// One part: no narrowing.
    whole: bool,
}

impl Work<'_> {
    /// Validates and deduplicates every batch for `part`'s satellites.
    fn dedup(&self, t: usize, part: &mut Part, clock: &mut StageClock) {
        if self.new_pass && !self.batches.is_empty() {
            part.dedup.reset();
        }
        for (i, &src) in self.batches.iter().enumerate() {
            let rows = view(self.other, self.carry, self.copied, self.data, src);
            clock.before(Stage::Validate);
            let valid = validate::valid_mask(&rows, self.max_sat, &mut part.mask);
            if t == 0 {
                part.valid += valid as u64;
            }
            if !self.whole {
                let (sat, _) = rows.key_columns().expect("a view has columns");
                validate::keep_sats(sat, part.lo, part.hi, &mut part.mask);
            }
            clock.after(Stage::Validate);
            clock.before(Stage::Dedup);
            part.counts
                .add(part.dedup.run(&rows, &part.mask, &mut part.ids[i]));
            clock.after(Stage::Dedup);
        }
    }
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
        self.start = if t == 0 {
            bounds[0]
        } else {
            let zone = super::PARALLEL_ZONE.load(std::sync::atomic::Ordering::Relaxed);
            let from = bounds[t] - zone.min(ZONE);
            let zone = &data[from..bounds[t]];
            self.zone_rows.clear();
            let mut target = Placed::new(&mut self.zone_rows, zone, from);
            from + self.zone.decode(zone, false, &mut target, usize::MAX)
        };
        let end = bounds[t + 1];
        let input = &data[self.start..end];
        let before = self.decoder.stats();
        let mut target = Placed::new(&mut self.rows, input, self.start);
        self.end = self.start
            + self
                .decoder
                .decode(input, end == data.len(), &mut target, limit);
        self.full = self.rows.len() == limit;
        self.stats = self.decoder.stats().since(&before);
    }
}
