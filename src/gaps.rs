//! Gaps: per satellite, the seqs between the lowest and the highest seq
//! forwarded that were never forwarded.
//!
//! [`GapTracker`] is fed the forwarded (sat, seq) keys once per batch
//! ([`GapTracker::observe`]; the forwarded rows of a batch come out in
//! (sat, seq) order, so a satellite costs one lookup per batch). It keeps
//! each satellite's lowest and highest seq, its frames, and its open
//! missing ranges: the last [`RECENT`] seqs as a ring of bits (continuing
//! the run or filling a recent gap costs a few bit operations, a run
//! without a hole a word at a time), older ones as a map of ranges they
//! move to as they leave the ring. A key that lands in an open range
//! *fills* it (a late frame), and is counted as filled.
//!
//! # Bounded memory
//! Hostile input can open a range per frame. The tracker keeps at most
//! [`GapLimits::per_sat_ranges`] ranges per satellite in the map (and at
//! most `RECENT / 2` more in its ring) and [`GapLimits::total_ranges`] in
//! all maps; beyond that it forgets the
//! satellite's lowest range (its seqs stay counted as missing: a later
//! frame there can no longer be told from a repeat, so it is not counted
//! as a fill) and counts it in `dropped_ranges`. At most
//! [`GapLimits::sats`] satellites are tracked; frames of later ones are
//! counted in `untracked_frames`. While nothing was dropped the counts are
//! exact (the property tests hold it to a naive twin, [`NaiveGaps`]).
//!
//! `missing` always equals `opened - filled`: `opened` counts every seq a
//! gap ever opened over, `filled` those forwarded later.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use serde::Serialize;

use std::io::{Read, Write};

use crate::batch::{Rows, View};
use crate::pipeline::{Config, ProcessError, Summary};

/// Ranges listed per satellite in a [`SatView`]: the highest ones.
pub const SHOWN_RANGES: usize = 64;

/// The tracker's memory bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapLimits {
    /// Open ranges kept per satellite.
    pub per_sat_ranges: usize,
    /// Open ranges kept over all satellites.
    pub total_ranges: usize,
    /// Satellites tracked.
    pub sats: usize,
    /// A seq more than this above the satellite's highest (or below its
    /// lowest) restarts its span there instead of opening a gap over the
    /// jump: a satellite whose counter was reset or re-anchored
    /// (`serve` sets it to `--max-seq-jump`). The open ranges are then
    /// forgotten (counted as dropped; their seqs stay counted as missing).
    /// 0 = off (`process`: the exact definition).
    pub restart_after_jump: u64,
}

impl Default for GapLimits {
    /// 4096 ranges per satellite, 262144 in all (about 16 MiB at worst),
    /// 65536 satellites.
    fn default() -> GapLimits {
        GapLimits {
            per_sat_ranges: 4096,
            total_ranges: 1 << 18,
            sats: 1 << 16,
            restart_after_jump: 0,
        }
    }
}

/// Seqs of a satellite's recent span kept as a bitmap: a frame that fills
/// a gap there, or continues the run, costs a few bit operations.
pub const RECENT: u64 = 1024;
const WORDS: usize = (RECENT / 64) as usize;

/// One satellite's state. Its span `[lo, hi]` is split in two: the last
/// [`RECENT`] seqs up to `hi` (the window, `[window_low, hi]`) as a ring of
/// bits, set for a seq forwarded or below `lo`, clear for a missing one; and
/// below the window, the missing ranges as a map (`ranges`), into which the
/// window's clear bits go as they leave it.
#[derive(Debug, Clone)]
struct SatGaps {
    sat: u32,
    lo: u64,
    hi: u64,
    frames: u64,
    missing: u64,
    opened: u64,
    filled: u64,
    dropped_ranges: u64,
    restarts: u64,
    /// Missing ranges below the window, inclusive: start -> end.
    ranges: BTreeMap<u64, u64>,
    /// The window's ring: bit `s % RECENT` of seq `s`.
    bits: [u64; WORDS],
}

/// The totals over all satellites; the keys the summaries gain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GapTotals {
    /// Seqs missing now (at the end of input, in a summary).
    pub missing: u64,
    /// Open missing ranges now.
    pub gap_ranges: u64,
    /// Seqs a gap ever opened over.
    pub gaps_opened: u64,
    /// Of those, seqs forwarded later (late frames that filled a gap).
    pub gaps_filled: u64,
    /// Ranges forgotten to stay within the memory bounds (their seqs stay
    /// counted as missing).
    pub gap_ranges_dropped: u64,
    /// Frames of satellites beyond the tracked count.
    pub gap_untracked_frames: u64,
    /// Satellites' spans restarted after a jump
    /// ([`GapLimits::restart_after_jump`]).
    pub gap_restarts: u64,
}

/// One satellite in [`GapReport`] (`process --gaps`, `GET /api/gaps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SatView {
    /// Satellite id.
    pub sat: u32,
    /// Lowest seq forwarded.
    pub lowest_seq: u64,
    /// Highest seq forwarded.
    pub highest_seq: u64,
    /// Frames forwarded.
    pub frames: u64,
    /// Seqs between the lowest and the highest not forwarded (yet).
    pub missing: u64,
    /// Seqs that were missing and were forwarded later.
    pub filled: u64,
    /// Open missing ranges.
    pub range_count: u64,
    /// The highest [`SHOWN_RANGES`] open ranges, `[first, last]` inclusive, ascending.
    pub ranges: Vec<[u64; 2]>,
    /// True when `ranges` lists fewer than `range_count`.
    pub ranges_truncated: bool,
    /// Ranges forgotten for memory (their seqs still count in `missing`).
    pub dropped_ranges: u64,
}

/// What `process --gaps` writes and `GET /api/gaps` answers.
#[derive(Debug, Clone, Serialize)]
pub struct GapReport {
    /// The totals.
    #[serde(flatten)]
    pub totals: GapTotals,
    /// Per satellite, by id; only satellites missing seqs now, unless all were asked for.
    pub satellites: Vec<SatView>,
}

/// The fast tracker.
#[derive(Debug, Default)]
pub struct GapTracker {
    limits: GapLimits,
    index: FxHashMap<u32, usize>,
    sats: Vec<SatGaps>,
    total_ranges: usize,
    untracked_frames: u64,
}

#[inline]
fn slot(s: u64) -> (usize, u64) {
    let i = (s % RECENT) as usize;
    (i / 64, 1u64 << (i % 64))
}

impl SatGaps {
    fn new(sat: u32) -> SatGaps {
        SatGaps {
            sat,
            lo: 0,
            hi: 0,
            frames: 0,
            missing: 0,
            opened: 0,
            filled: 0,
            dropped_ranges: 0,
            restarts: 0,
            ranges: BTreeMap::new(),
            bits: [0; WORDS],
        }
    }

    /// The lowest seq of the window.
    #[inline]
    fn window_low(&self) -> u64 {
        self.hi.saturating_sub(RECENT - 1)
    }

    #[inline]
    fn bit(&self, s: u64) -> bool {
        let (w, m) = slot(s);
        self.bits[w] & m != 0
    }

    #[inline]
    fn set(&mut self, s: u64) {
        let (w, m) = slot(s);
        self.bits[w] |= m;
    }

    #[inline]
    fn clear(&mut self, s: u64) {
        let (w, m) = slot(s);
        self.bits[w] &= !m;
    }

    /// Starts the span at `seq`: every other seq of the window is below `lo`.
    fn start(&mut self, seq: u64) {
        self.lo = seq;
        self.hi = seq;
        self.bits = [u64::MAX; WORDS];
    }

    /// Feeds one key.
    #[inline]
    fn add(&mut self, seq: u64, limits: &GapLimits, total: &mut usize) {
        self.add_all(std::iter::once(seq), limits, total);
    }

    /// Feeds keys in order. The two common cases (a short step up; a recent
    /// gap filled or a recent seq repeated) run on copies of the counters
    /// in registers; the rest goes out of line with them written back.
    #[inline]
    fn add_all(&mut self, seqs: impl Iterator<Item = u64>, limits: &GapLimits, total: &mut usize) {
        let jump = limits.restart_after_jump;
        let (mut lo, mut hi, mut frames) = (self.lo, self.hi, self.frames);
        let (mut missing, mut opened, mut filled) = (self.missing, self.opened, self.filled);
        for seq in seqs {
            if frames > 0 {
                if seq > hi {
                    let d = seq - hi;
                    if d <= 8 && (jump == 0 || d <= jump) {
                        // Each new seq takes the slot of one leaving the
                        // window, whose gap goes to the map.
                        for s in hi + 1..=seq {
                            let (w, m) = slot(s);
                            if self.bits[w] & m == 0 && s >= RECENT && s - RECENT >= lo {
                                self.put(s - RECENT, s - RECENT, limits, total);
                            }
                            if s == seq {
                                self.bits[w] |= m;
                            } else {
                                self.bits[w] &= !m;
                            }
                        }
                        frames += 1;
                        opened = opened.saturating_add(d - 1);
                        missing = missing.saturating_add(d - 1);
                        hi = seq;
                        continue;
                    }
                } else if seq >= lo && seq >= hi.saturating_sub(RECENT - 1) {
                    frames += 1;
                    let (w, m) = slot(seq);
                    if self.bits[w] & m == 0 {
                        self.bits[w] |= m;
                        filled += 1;
                        missing -= 1;
                    }
                    continue;
                }
            }
            (self.lo, self.hi, self.frames) = (lo, hi, frames);
            (self.missing, self.opened, self.filled) = (missing, opened, filled);
            self.add_slow(seq, limits, total);
            (lo, hi, frames) = (self.lo, self.hi, self.frames);
            (missing, opened, filled) = (self.missing, self.opened, self.filled);
        }
        (self.lo, self.hi, self.frames) = (lo, hi, frames);
        (self.missing, self.opened, self.filled) = (missing, opened, filled);
    }

    #[inline(never)]
    fn add_slow(&mut self, seq: u64, limits: &GapLimits, total: &mut usize) {
        if self.frames == 0 {
            self.start(seq);
            self.frames = 1;
            return;
        }
        self.frames += 1;
        let jump = limits.restart_after_jump;
        if jump > 0 && (seq.saturating_sub(self.hi) > jump || self.lo.saturating_sub(seq) > jump) {
            // Every open range is forgotten (its seqs still counted).
            self.dropped_ranges += self.open_ranges().len() as u64;
            *total -= self.ranges.len();
            self.ranges.clear();
            self.restarts += 1;
            self.start(seq);
            return;
        }
        if seq > self.hi {
            self.advance(seq, limits, total);
        } else if seq < self.lo {
            self.extend_down(seq, limits, total);
        } else if seq >= self.window_low() {
            if !self.bit(seq) {
                self.set(seq);
                self.filled += 1;
                self.missing -= 1;
            }
        } else if !self.ranges.is_empty() {
            self.fill(seq, limits, total);
        }
    }

    /// Forwards every seq `hi + 1 ..= last` (a run with no hole), `first`
    /// being `hi + 1`: the seqs leaving the window take their gaps along.
    fn extend_run(&mut self, first: u64, last: u64, limits: &GapLimits, total: &mut usize) {
        let mut s = first;
        loop {
            let (w, m) = slot(s);
            if s.is_multiple_of(64) && last - s >= 63 && self.bits[w] == u64::MAX {
                // A whole word whose leaving seqs were all forwarded.
                if last - s == 63 {
                    break;
                }
                s += 64;
                continue;
            }
            if self.bits[w] & m == 0 {
                if s >= RECENT && s - RECENT >= self.lo {
                    self.put(s - RECENT, s - RECENT, limits, total);
                }
                self.bits[w] |= m;
            }
            if s == last {
                break;
            }
            s += 1;
        }
        self.frames += last - first + 1;
        self.hi = last;
    }

    /// Moves `hi` up to `h`: the seqs leaving the window keep their gaps in
    /// the map; the seqs between the old `hi` and `h` are missing.
    fn advance(&mut self, h: u64, limits: &GapLimits, total: &mut usize) {
        let (hi, d) = (self.hi, h - self.hi);
        if d >= RECENT {
            // The whole window leaves, and the seqs up to h's window never enter it.
            self.materialize_window(self.window_low(), hi, limits, total);
            let below = h - (RECENT - 1); // h's window_low
            if below > hi + 1 {
                self.put(hi + 1, below - 1, limits, total);
            }
            self.bits = [0; WORDS];
        } else {
            // Seqs hi+1 ..= h take the slots of hi+1-RECENT ..= h-RECENT.
            if h >= RECENT {
                let from = (hi + 1).saturating_sub(RECENT);
                self.materialize_window(from, h - RECENT, limits, total);
            }
            for s in hi + 1..h {
                self.clear(s);
            }
        }
        self.hi = h;
        self.set(h);
        self.opened = self.opened.saturating_add(d - 1);
        self.missing = self.missing.saturating_add(d - 1);
    }

    /// Moves `lo` down to `k`: the seqs between are missing.
    fn extend_down(&mut self, k: u64, limits: &GapLimits, total: &mut usize) {
        let lo = self.lo;
        let n = lo - k - 1;
        let wl = self.window_low();
        // In the window: clear (they were set as below lo).
        for s in (k + 1).max(wl)..lo {
            self.clear(s);
        }
        // Below it: one range at the bottom of the map.
        if k + 1 < wl && k < lo - 1 {
            self.put(k + 1, (lo - 1).min(wl - 1), limits, total);
        }
        self.lo = k;
        self.opened = self.opened.saturating_add(n);
        self.missing = self.missing.saturating_add(n);
    }

    /// Puts the clear bits of seqs `a ..= b` (in the window) into the map.
    fn materialize_window(&mut self, a: u64, b: u64, limits: &GapLimits, total: &mut usize) {
        let mut s = a.max(self.lo);
        if s > b {
            return;
        }
        loop {
            let (w, _) = slot(s);
            if s.is_multiple_of(64) && b - s >= 63 && self.bits[w] == u64::MAX {
                // A whole word forwarded.
                if b - s == 63 {
                    break;
                }
                s += 64;
                continue;
            }
            if !self.bit(s) {
                let start = s;
                while s < b && !self.bit(s + 1) {
                    s += 1;
                }
                self.put(start, s, limits, total);
            }
            if s == b {
                break;
            }
            s += 1;
        }
    }

    /// Adds the missing range `a ..= b` (above every range in the map, or
    /// below every one) to the map, merging it with the highest when they touch.
    #[inline(never)]
    fn put(&mut self, a: u64, b: u64, limits: &GapLimits, total: &mut usize) {
        if let Some(mut last) = self.ranges.last_entry() {
            if *last.get() + 1 == a {
                *last.get_mut() = b;
                return;
            }
        }
        self.ranges.insert(a, b);
        *total += 1;
        self.enforce(limits, total);
    }

    fn fill(&mut self, seq: u64, limits: &GapLimits, total: &mut usize) {
        let Some((&a, &b)) = self.ranges.range(..=seq).next_back() else {
            return;
        };
        if b < seq {
            return; // a repeat (or a seq of a forgotten range)
        }
        self.ranges.remove(&a);
        *total -= 1;
        self.filled += 1;
        self.missing -= 1;
        if a < seq {
            self.ranges.insert(a, seq - 1);
            *total += 1;
        }
        if seq < b {
            self.ranges.insert(seq + 1, b);
            *total += 1;
        }
        self.enforce(limits, total);
    }

    /// Forgets the lowest ranges while over a bound.
    fn enforce(&mut self, limits: &GapLimits, total: &mut usize) {
        while self.ranges.len() > limits.per_sat_ranges || *total > limits.total_ranges {
            if self.ranges.pop_first().is_none() {
                break;
            }
            *total -= 1;
            self.dropped_ranges += 1;
        }
    }

    /// The open ranges, ascending: the map's, then the window's clear runs
    /// (the two merged where they touch).
    fn open_ranges(&self) -> Vec<[u64; 2]> {
        let mut out: Vec<[u64; 2]> = self.ranges.iter().map(|(&a, &b)| [a, b]).collect();
        if self.frames == 0 {
            return out;
        }
        let mut s = self.window_low().max(self.lo);
        loop {
            if !self.bit(s) {
                let start = s;
                while s < self.hi && !self.bit(s + 1) {
                    s += 1;
                }
                match out.last_mut() {
                    Some(last) if last[1] + 1 == start => last[1] = s,
                    _ => out.push([start, s]),
                }
            }
            if s >= self.hi {
                break;
            }
            s += 1;
        }
        out
    }

    fn view(&self) -> SatView {
        let ranges = self.open_ranges();
        let skip = ranges.len().saturating_sub(SHOWN_RANGES);
        SatView {
            sat: self.sat,
            lowest_seq: self.lo,
            highest_seq: self.hi,
            frames: self.frames,
            missing: self.missing,
            filled: self.filled,
            range_count: ranges.len() as u64,
            ranges: ranges[skip..].to_vec(),
            ranges_truncated: skip > 0,
            dropped_ranges: self.dropped_ranges,
        }
    }
}

impl GapTracker {
    /// An empty tracker with the default [`GapLimits`].
    pub fn new() -> GapTracker {
        GapTracker::with_limits(GapLimits::default())
    }

    /// An empty tracker with these bounds.
    pub fn with_limits(limits: GapLimits) -> GapTracker {
        GapTracker {
            limits,
            ..GapTracker::default()
        }
    }

    /// Feeds the rows `row_ids` of `batch` (what the pipeline forwarded
    /// from it, in (sat, seq) order; any order is correct, that order is fast).
    pub fn observe<R: Rows + ?Sized>(&mut self, batch: &R, row_ids: &[u32]) {
        let mut i = 0;
        while i < row_ids.len() {
            let sat = batch.sat(row_ids[i] as usize);
            let mut j = i + 1;
            while j < row_ids.len() && batch.sat(row_ids[j] as usize) == sat {
                j += 1;
            }
            match self.slot(sat) {
                Some(k) => {
                    let st = &mut self.sats[k];
                    let run = &row_ids[i..j];
                    let first = batch.seq(run[0] as usize);
                    let last = batch.seq(run[run.len() - 1] as usize);
                    if st.frames > 0
                        && st.hi.checked_add(1) == Some(first)
                        && last.checked_sub(first) == Some(run.len() as u64 - 1)
                    {
                        // The common case: the batch's keys continue the
                        // satellite's run without a hole (they are unique
                        // and ascending, so first and last tell).
                        st.extend_run(first, last, &self.limits, &mut self.total_ranges);
                    } else {
                        let seqs = run.iter().map(|&r| batch.seq(r as usize));
                        st.add_all(seqs, &self.limits, &mut self.total_ranges);
                    }
                }
                None => self.untracked_frames += (j - i) as u64,
            }
            i = j;
        }
    }

    /// Feeds single keys (tests, and callers without a batch).
    pub fn observe_keys(&mut self, keys: &[(u32, u64)]) {
        for &(sat, seq) in keys {
            match self.slot(sat) {
                Some(k) => self.sats[k].add(seq, &self.limits, &mut self.total_ranges),
                None => self.untracked_frames += 1,
            }
        }
    }

    fn slot(&mut self, sat: u32) -> Option<usize> {
        if let Some(&k) = self.index.get(&sat) {
            return Some(k);
        }
        if self.sats.len() >= self.limits.sats {
            return None;
        }
        self.sats.push(SatGaps::new(sat));
        self.index.insert(sat, self.sats.len() - 1);
        Some(self.sats.len() - 1)
    }

    /// The totals now.
    pub fn totals(&self) -> GapTotals {
        let mut t = GapTotals {
            gap_untracked_frames: self.untracked_frames,
            ..GapTotals::default()
        };
        for s in &self.sats {
            t.missing = t.missing.saturating_add(s.missing);
            t.gap_ranges += s.open_ranges().len() as u64;
            t.gaps_opened = t.gaps_opened.saturating_add(s.opened);
            t.gaps_filled += s.filled;
            t.gap_ranges_dropped += s.dropped_ranges;
            t.gap_restarts += s.restarts;
        }
        t
    }

    /// Open ranges held in the map now (below each satellite's last
    /// [`RECENT`] seqs, which a bitmap holds), over all satellites: at most
    /// [`GapLimits::total_ranges`].
    pub fn ranges_held(&self) -> usize {
        self.total_ranges
    }

    /// The report: satellites by id, all of them or only those missing seqs now.
    pub fn report(&self, all: bool) -> GapReport {
        let mut satellites: Vec<SatView> = self
            .sats
            .iter()
            .filter(|s| all || s.missing > 0)
            .map(SatGaps::view)
            .collect();
        satellites.sort_by_key(|v| v.sat);
        GapReport {
            totals: self.totals(),
            satellites,
        }
    }
}

/// [`crate::pipeline::process_stream_until`] that also feeds every batch's
/// forwarded keys to a [`GapTracker`] (`process --gaps`, and the `missing`
/// and `gap_ranges` of `process`'s summary). Returns the summary, whether
/// it stopped early, and the tracker. With `threads` above 1, reading,
/// decoding and dedup run on a thread of their own
/// ([`crate::pipeline::process_stream_each_split`]); the output and the
/// summary are the same.
///
/// # Errors
/// As [`crate::pipeline::process_stream`].
pub fn process_stream_gaps<R: Read + Send, W: Write>(
    input: R,
    out: &mut W,
    cfg: Config,
    stop: &dyn Fn() -> bool,
    threads: usize,
) -> Result<(Summary, bool, GapTracker), ProcessError> {
    let mut gaps = GapTracker::new();
    let each = |rows: &View<'_>, row_ids: &[u32]| gaps.observe(rows, row_ids);
    let (summary, stopped) = if threads > 1 {
        crate::pipeline::process_stream_each_split(input, out, cfg, stop, each)?
    } else {
        crate::pipeline::process_stream_each(input, out, cfg, stop, each)?
    };
    Ok((summary, stopped, gaps))
}

/// The naive twin: every forwarded seq in a `BTreeSet` per satellite.
/// Unbounded; for tests.
#[derive(Debug, Default, Clone)]
pub struct NaiveGaps {
    sats: BTreeMap<u32, (BTreeSet<u64>, u64, u64)>,
}

impl NaiveGaps {
    /// Feeds keys in order.
    pub fn observe_keys(&mut self, keys: &[(u32, u64)]) {
        for &(sat, seq) in keys {
            let (set, frames, filled) = self.sats.entry(sat).or_default();
            *frames += 1;
            if let (Some(&lo), Some(&hi)) = (set.first(), set.last()) {
                if lo < seq && seq < hi && !set.contains(&seq) {
                    *filled += 1;
                }
            }
            set.insert(seq);
        }
    }

    /// The report with every satellite, computed from the sets.
    pub fn report(&self, all: bool) -> Vec<SatView> {
        let mut out = Vec::new();
        for (&sat, (set, frames, filled)) in &self.sats {
            let mut ranges = Vec::new();
            let mut prev: Option<u64> = None;
            for &s in set {
                if let Some(p) = prev {
                    if s > p + 1 {
                        ranges.push([p + 1, s - 1]);
                    }
                }
                prev = Some(s);
            }
            let missing = ranges.iter().map(|[a, b]| b - a + 1).sum();
            if !all && missing == 0 {
                continue;
            }
            let skip = ranges.len().saturating_sub(SHOWN_RANGES);
            out.push(SatView {
                sat,
                lowest_seq: *set.first().unwrap_or(&0),
                highest_seq: *set.last().unwrap_or(&0),
                frames: *frames,
                missing,
                filled: *filled,
                range_count: ranges.len() as u64,
                ranges: ranges[skip..].to_vec(),
                ranges_truncated: skip > 0,
                dropped_ranges: 0,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_opens_and_a_late_frame_fills_it() {
        let mut t = GapTracker::new();
        t.observe_keys(&[(7, 10), (7, 11), (7, 15), (3, 1)]);
        let r = t.report(false);
        assert_eq!(r.totals.missing, 3);
        assert_eq!(r.totals.gap_ranges, 1);
        assert_eq!(r.satellites.len(), 1);
        assert_eq!(r.satellites[0].ranges, vec![[12, 14]]);
        t.observe_keys(&[(7, 13)]);
        let r = t.report(false);
        assert_eq!(r.satellites[0].ranges, vec![[12, 12], [14, 14]]);
        assert_eq!((r.totals.missing, r.totals.gaps_filled), (2, 1));
        // A repeat fills nothing; a lower seq extends the span downwards.
        t.observe_keys(&[(7, 13), (7, 8)]);
        let r = t.report(false);
        assert_eq!(r.satellites[0].ranges, vec![[9, 9], [12, 12], [14, 14]]);
        assert_eq!(r.totals.missing, 3);
        assert_eq!(r.totals.gaps_opened, 4);
    }

    #[test]
    fn a_jump_restarts_the_span_when_asked() {
        let limits = GapLimits {
            restart_after_jump: 1000,
            ..GapLimits::default()
        };
        let mut t = GapTracker::with_limits(limits);
        // A gap, then the satellite's counter resets to 0, then a small gap.
        t.observe_keys(&[(1, 5000), (1, 5002), (1, 0), (1, 1), (1, 3)]);
        let r = t.report(true);
        let s = &r.satellites[0];
        assert_eq!((s.lowest_seq, s.highest_seq), (0, 3));
        assert_eq!(s.ranges, vec![[2, 2]]);
        assert_eq!((s.missing, s.dropped_ranges), (2, 1));
        assert_eq!(r.totals.gap_restarts, 1);
        assert_eq!(t.ranges_held(), 0); // [2, 2] is in the recent window
                                        // Off (the default): the reset opens a gap over everything between.
        let mut t = GapTracker::new();
        t.observe_keys(&[(1, 5000), (1, 5002), (1, 0)]);
        assert_eq!(t.totals().missing, 1 + 4999);
    }

    #[test]
    fn gaps_leave_the_recent_window_and_are_still_filled() {
        let mut t = GapTracker::new();
        t.observe_keys(&[(1, 0), (1, 5), (1, 3000)]);
        // [1, 4] and [6, 1976] went to the map; [1977, 2999] is in the window.
        assert_eq!(t.ranges_held(), 2);
        let r = t.report(false);
        assert_eq!(r.satellites[0].ranges, vec![[1, 4], [6, 2999]]);
        t.observe_keys(&[(1, 100), (1, 2000)]);
        let r = t.report(false);
        assert_eq!(
            r.satellites[0].ranges,
            vec![[1, 4], [6, 99], [101, 1999], [2001, 2999]]
        );
        assert_eq!(t.ranges_held(), 3);
        assert_eq!((r.totals.missing, r.totals.gaps_filled), (4 + 2994 - 2, 2));
        assert_eq!(r.totals.gap_ranges, 4);
    }

    #[test]
    fn extreme_seqs_do_not_overflow() {
        let mut t = GapTracker::new();
        t.observe_keys(&[(1, 0), (1, u64::MAX), (1, u64::MAX - 1), (1, 0)]);
        let r = t.report(false);
        assert_eq!(r.totals.missing, u64::MAX - 2);
        assert_eq!(r.satellites[0].ranges, vec![[1, u64::MAX - 2]]);
    }

    #[test]
    fn hostile_input_stays_within_the_bounds() {
        let limits = GapLimits {
            per_sat_ranges: 8,
            total_ranges: 20,
            sats: 3,
            restart_after_jump: 0,
        };
        let mut t = GapTracker::with_limits(limits);
        let keys: Vec<(u32, u64)> = (0..10_000u64).map(|i| ((i % 5) as u32, i * 2)).collect();
        t.observe_keys(&keys);
        assert!(t.ranges_held() <= 20);
        let r = t.report(true);
        assert_eq!(r.satellites.len(), 3);
        // 8 below the recent window, and at most one in two of its seqs.
        assert!(r.satellites.iter().all(|s| s.range_count <= 8 + RECENT / 2));
        assert_eq!(r.totals.gap_untracked_frames, 4000);
        assert!(r.totals.gap_ranges_dropped > 0);
        assert_eq!(
            r.totals.missing,
            r.totals.gaps_opened - r.totals.gaps_filled
        );
    }
}
