//! In-batch dedup by sort-and-unique over packed keys, not a hash set.
//!
//! Both key layouts sort exactly as the tuple (sat, seq, row) does, so after
//! the sort the first key of each run of equal (sat, seq) is the copy that
//! came first in the stream. The layout is chosen once per batch.
//!
//! # Radix layout (every realistic batch)
//! ```text
//! u64: bits 63..32  (sat - min_sat) << Q | (seq - base(sat))   S + Q <= 32 bits
//!      bits 31..0   row
//! ```
//! `S` and `Q` are the bits the batch needs: `S` for its span of satellite
//! ids, `Q` for the largest `seq - base(sat)`. `base(sat)` is the smallest
//! seq of that satellite in the batch when the batch's ids span at most
//! [`SAT_TABLE`] values (a table, one entry per id), otherwise the smallest
//! seq of the batch. Within one satellite the base is constant, so the high
//! half orders rows as (sat, seq) does. Worked example: sats 3 and 7, seqs
//! 1000..1003 on sat 3 and 50..51 on sat 7 give S = 3 bits (7 - 3 = 4) and
//! Q = 2 bits, so sat 7's seq 51 sorts as `(4 << 2 | 1)` = 17 above sat 3's
//! seq 1003 at `(0 << 2 | 3)` = 3.
//!
//! The keys are sorted by a stable LSD radix sort over the high half only,
//! 8 bits a pass, skipping passes whose digit is the same in every key. Being
//! stable, it keeps the rows of equal (sat, seq) in stream order, which the
//! low half already is. A batch of 1000 rows from 48 satellites needs 2 or 3
//! passes over 8 KB instead of the ~10 compare rounds of a comparison sort.
//!
//! # Direct layout (most batches: no sort at all)
//! When each satellite's seqs in the batch span few values, the sort becomes
//! a counting sort. Satellite `s` gets a block of whole 64-slot words in a
//! table, one slot per seq from `base(s)` rounded down to a multiple of 64 up
//! to `top(s)` (its largest seq), blocks in ascending satellite order, so a
//! seq's slot has the seq's own bit position `seq % 64` in its word. The
//! valid rows are written in reverse stream order, each into its slot, and
//! set the slot's bit in an occupancy bitmap: the last write to a slot is
//! the first copy in stream order, so it wins without a load or a branch.
//! Reading the occupied slots in order, through the bitmap's set bits, gives
//! the survivors in (sat, seq) order. Because the words line up with seqs,
//! the window can also classify a satellite's keys 64 at a time against its
//! ring bitmap straight from the occupancy words (`DirectBlocks`, used by
//! [`crate::dedup::Dedup`] when the window has no limits). Taken when the
//! batch's satellite ids span at most [`SAT_TABLE`] values and the table
//! needs at most [`DIRECT_SLOTS_PER_ROW`] slots per valid row (plus
//! [`DIRECT_SLACK`], at most [`DIRECT_MAX_SLOTS`]): late frames widen a
//! satellite's span, and the bitmap keeps the scan cheap when most slots are
//! empty. The bitmap is left clear after each batch, so it is never cleared
//! whole, and the table needs no clearing at all (only occupied slots are read).
//! Worked example: sat 3 with seqs 1000, 1002 and sat 7 with seq 50 give
//! sat 3 the word of seqs 960..1023 (slots 0..63) and sat 7 the word of seqs
//! 0..63 (slots 64..127): (3, 1000) -> 40, (3, 1002) -> 42, (7, 50) -> 114.
//!
//! # Wide layout (the fallback)
//! ```text
//! u128: bits 127..96 sat | bits 95..32 seq | bits 31..0 row
//! ```
//! The high 96 bits are the `sat << 64 | seq` key. Used when a batch's keys
//! do not fit in 32 bits (sparse or hostile sequence numbers); sorted with
//! `sort_unstable`, which needs no stability because the row breaks ties.

use super::extract::Extract;
use crate::batch::Rows;
use crate::validate::set_bits;

/// Largest span of satellite ids for which each satellite gets its own seq base.
pub const SAT_TABLE: u32 = 4096;

/// Words of the direct table's sink (see [`SortUnique::fill_columns`]).
const SINK_WORDS: usize = 8;
/// Slots of the sink, at the end of the table.
const SINK_SLOTS: usize = SINK_WORDS * 64;
/// A direct table slot without a row, when the fill scatters
/// ([`Extract::is_avx512`]): every slot before the sink holds it between
/// batches.
pub(super) const EMPTY: u32 = u32::MAX;
/// The direct layout is taken when its table needs at most this many slots
/// per valid row of the batch, plus [`DIRECT_SLACK`], and at most
/// [`DIRECT_MAX_SLOTS`] in all.
pub const DIRECT_SLOTS_PER_ROW: usize = 32;
/// Slots the direct layout may use beyond [`DIRECT_SLOTS_PER_ROW`] per row.
pub const DIRECT_SLACK: usize = 4096;
/// The most slots a direct table has: 16 MiB of table, 512 KiB of bitmap.
pub const DIRECT_MAX_SLOTS: usize = 1 << 22;

/// The most slots the direct layout may use for `rows` valid rows.
#[inline]
fn direct_budget(rows: usize) -> usize {
    rows.saturating_mul(DIRECT_SLOTS_PER_ROW)
        .saturating_add(DIRECT_SLACK)
        .min(DIRECT_MAX_SLOTS)
}

/// Number of bits needed to hold `x`.
#[inline]
fn bit_width(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// The packing chosen for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// A counting sort through a table of `slots` slots, one per possible
    /// (sat, seq) of the batch.
    Direct {
        /// Slots in the table.
        slots: usize,
    },
    /// u64 keys, radix sorted on the high 32 bits.
    Radix {
        /// Bits of `sat - min_sat` plus bits of `seq - base(sat)`: at most 32.
        key_bits: u32,
        /// Bits of `seq - base(sat)`.
        seq_bits: u32,
        /// True when each satellite has its own base.
        per_sat_base: bool,
    },
    /// u128 keys.
    Wide,
}

/// Reusable buffers for [`SortUnique::run`].
#[derive(Debug, Default, Clone)]
pub struct SortUnique {
    rows: Vec<u32>,
    /// `sat` and `seq` of each of `rows`, gathered once so the later passes
    /// read two columns front to back instead of indexing the batch.
    sats: Vec<u32>,
    seqs: Vec<u64>,
    /// The smallest satellite id of the batch: slot 0 of the per-satellite
    /// vectors below.
    min_sat: u32,
    /// Valid rows of the batch.
    valid: usize,
    base: Vec<u64>,
    /// Per satellite slot: the largest seq of the batch.
    top: Vec<u64>,
    /// Per satellite slot from `regions_min_sat`: where its rows go in the
    /// direct table. After a direct batch, the guess for the next one.
    regions: Vec<Region>,
    regions_min_sat: u32,
    /// Slots of all of `regions`.
    regions_slots: usize,
    /// True when `regions` is a guess made from the last batch.
    guessed: bool,
    /// The last direct batch's occupied words, per satellite.
    blocks: Vec<Block>,
    /// The blocks of the direct batch before it: how far each satellite's
    /// highest seq moved, for the guess.
    prev_blocks: Vec<Block>,
    /// The direct layout's table: slot -> row, read only where `occupied`
    /// has its bit set.
    table: Vec<u32>,
    /// One bit per slot of `table`: set while the slot holds a row (all
    /// clear between batches).
    occupied: Vec<u64>,
    /// After a direct fill: one bit per word of `occupied`, set where the
    /// word has a row (and one spare word, so a two-word read stays in).
    nonzero: Vec<u64>,
    /// After a direct fill: the set bits of `occupied`, one per kept row.
    kept: u64,
    /// True: never take the direct layout (see [`SortUnique::radix_only`]).
    radix_only: bool,
    /// How the direct layout appends a word's occupied rows, and whether
    /// its fill scatters (AVX-512F): the table then holds [`EMPTY`] where
    /// no row is, and the occupancy words are built from it after the fill.
    extract: Extract,
    /// The regions as columns, for the scattering fill's gathers.
    region_lo: Vec<u64>,
    region_first: Vec<u32>,
    region_slots: Vec<u32>,
    keys: Vec<u64>,
    scratch: Vec<u64>,
    wide: Vec<u128>,
    /// The packing of the last batch run, for tests and reports.
    pub last_packing: Option<Packing>,
}

impl SortUnique {
    /// Scratch that never takes the direct layout: the radix and wide paths
    /// alone, for their tests and benchmarks.
    pub fn radix_only() -> SortUnique {
        SortUnique {
            radix_only: true,
            ..SortUnique::default()
        }
    }

    /// Scratch whose direct layout takes the scalar fill and extraction on
    /// any CPU: the twin of the default's AVX-512 kernels, for tests.
    pub fn scalar() -> SortUnique {
        SortUnique {
            extract: Extract::SCALAR,
            ..SortUnique::default()
        }
    }

    /// True when the direct table's fill scatters ([`SortUnique::scalar`]
    /// is false).
    pub fn scatters(&self) -> bool {
        self.extract.is_avx512()
    }

    /// Writes into `survivors` the first row of each (sat, seq) among the set
    /// bits of `mask`, in ascending (sat, seq) order, and returns how many
    /// later copies were dropped.
    ///
    /// # Panics
    /// When the batch holds more than `u32::MAX` rows (the
    /// CLI caps batches at 1048576).
    pub fn run<R: Rows + ?Sized>(
        &mut self,
        rows: &R,
        mask: &[u64],
        survivors: &mut Vec<u32>,
    ) -> u64 {
        survivors.clear();
        match self.prepare(rows, mask) {
            Some(packing) => self.finish(packing, survivors),
            None => 0,
        }
    }

    /// Gathers the valid rows (set bits of `mask`) and chooses the packing;
    /// for the direct layout also fills the table and its bitmap, which must
    /// then be read by [`SortUnique::finish`] or [`SortUnique::direct`].
    /// `None` when no row is valid.
    ///
    /// # Panics
    /// When the batch holds more than `u32::MAX` rows.
    pub(super) fn prepare<R: Rows + ?Sized>(&mut self, rows: &R, mask: &[u64]) -> Option<Packing> {
        assert!(
            rows.row_count() <= u32::MAX as usize,
            "a batch holds fewer than 2^32 rows"
        );
        if let Some((sat, seq)) = rows.key_columns() {
            if !self.radix_only {
                if let Some(packing) = self.prepare_direct_columns(sat, seq, mask) {
                    return packing;
                }
            }
        }
        self.guessed = false;
        self.gather(rows, mask);
        self.valid = self.rows.len();
        if self.rows.is_empty() {
            self.last_packing = None;
            return None;
        }
        let min_sat = self.sats.iter().copied().min().unwrap_or(u32::MAX);
        let max_sat = self.sats.iter().copied().max().unwrap_or(0);
        self.min_sat = min_sat;
        let packing = self.choose(min_sat, max_sat);
        self.last_packing = Some(packing);
        if let Packing::Direct { .. } = packing {
            self.grow_direct_table(rows.row_count());
            let (table, occupied) = (&mut self.table[..], &mut self.occupied[..]);
            let regions = &self.regions;
            // Reverse stream order: the last write to a slot, the one kept,
            // is the first copy.
            let gathered = self.rows.iter().zip(&self.sats).zip(&self.seqs);
            for ((&r, &sat), &seq) in gathered.rev() {
                let region = regions[(sat - min_sat) as usize];
                let slot = (region.first + (seq - region.lo)) as usize;
                table[slot] = r;
                occupied[slot / 64] |= 1 << (slot % 64);
            }
            return Some(self.end_direct_fill());
        }
        Some(packing)
    }

    /// [`SortUnique::prepare`] straight from a layout's `sat` and `seq`
    /// columns, without gathering the valid rows first: the direct layout
    /// when the batch takes it, `Some(None)` when no row is valid, `None`
    /// (nothing decided) when the batch needs the gathered path.
    ///
    /// First it tries the guess the last batch left (each satellite's seqs
    /// from its lowest, less 32, up to its highest plus one and a half times
    /// what its highest moved since the batch before: see [`guess`]): every
    /// valid row that lands inside its satellite's guessed region is the
    /// whole fill, with no pass to find the satellites' seq ranges. When a
    /// valid row misses, the table is cleared and the exact regions are
    /// computed from the rows and filled again.
    fn prepare_direct_columns(
        &mut self,
        sat: &[u32],
        seq: &[u64],
        mask: &[u64],
    ) -> Option<Option<Packing>> {
        let n = sat.len().min(seq.len());
        let valid: usize = mask.iter().map(|w| w.count_ones() as usize).sum();
        if valid == 0 {
            self.valid = 0;
            self.last_packing = None;
            return Some(None);
        }
        self.valid = valid;
        // A guess larger than this batch's budget (a small batch after a
        // wide one) would make the bitmap scans cost more than the rows:
        // the exact regions are planned instead.
        if self.guessed
            && self.regions_slots <= direct_budget(valid)
            && self.regions_slots + SINK_SLOTS <= self.table.len()
        {
            if self.fill_columns(sat, seq, mask, n) {
                return Some(Some(self.end_direct_fill()));
            }
            if self.scatters() {
                self.table[..self.regions_slots].fill(EMPTY);
            } else {
                self.occupied[..self.regions_slots / 64].fill(0);
            }
        }
        self.guessed = false;
        let (min_sat, max_sat) = valid_sat_range(sat, mask, n);
        if max_sat - min_sat >= SAT_TABLE {
            return None;
        }
        // One more satellite slot past the batch's: invalid rows go there,
        // so every row takes the same branch-free step.
        let sats = (max_sat - min_sat) as usize + 1;
        self.base.clear();
        self.base.resize(sats + 1, u64::MAX);
        self.top.clear();
        self.top.resize(sats + 1, 0);
        let (base, top) = (&mut self.base[..], &mut self.top[..]);
        for_each_row(mask, n, |i, valid| {
            let s = if valid {
                sat[i].wrapping_sub(min_sat) as usize
            } else {
                sats
            };
            base[s] = base[s].min(seq[i]);
            top[s] = top[s].max(seq[i]);
        });
        self.base.truncate(sats);
        self.top.truncate(sats);
        if !self.plan_regions(min_sat, valid) {
            return None;
        }
        self.min_sat = min_sat;
        self.grow_direct_table(n);
        let all = self.fill_columns(sat, seq, mask, n);
        debug_assert!(all, "the exact regions hold every valid row");
        Some(Some(self.end_direct_fill()))
    }

    /// Writes each valid row, in reverse stream order, into its slot of
    /// `self.regions` and sets the slot's bit (the last write to a slot, the
    /// one kept, is the first copy). Invalid rows, and valid rows outside
    /// their satellite's region, write to the table's last words, a sink
    /// cleared afterwards, so every row takes the same branch-free step.
    /// Returns false when a valid row was outside its region.
    fn fill_columns(&mut self, sat: &[u32], seq: &[u64], mask: &[u64], n: usize) -> bool {
        let sink = self.table.len() - SINK_SLOTS;
        debug_assert!(self.regions_slots <= sink);
        // A satellite past the regions reads an empty region at the end.
        self.regions.push(Region::default());
        #[cfg(target_arch = "x86_64")]
        if self.scatters() {
            self.region_lo.clear();
            self.region_first.clear();
            self.region_slots.clear();
            for r in &self.regions {
                // Each region lies within the table, which has fewer than
                // 2^32 slots (`DIRECT_MAX_SLOTS`).
                self.region_lo.push(r.lo);
                self.region_first.push(r.first as u32);
                self.region_slots.push(r.slots as u32);
            }
            self.regions.pop();
            let regions = Columns {
                lo: &self.region_lo,
                first: &self.region_first,
                slots: &self.region_slots,
                min_sat: self.regions_min_sat,
            };
            // SAFETY: `scatters` is true only where `Extract::detect` found
            // AVX-512F; every region lies below `sink`, which leaves
            // `SINK_SLOTS` slots to the table's end.
            return unsafe { x86::fill_rows(sat, seq, mask, n, regions, &mut self.table, sink) };
        }
        let (table, occupied) = (&mut self.table[..], &mut self.occupied[..]);
        let (regions, min_sat) = (&self.regions[..], self.regions_min_sat);
        // Nearly every row valid (one dedup for all satellites): a branch on
        // the row's slot is predicted and costs less than a select. Many
        // rows invalid (a dedup for one satellite range of the batch): the
        // branch would follow the satellites' order, which is none.
        let all = if self.valid * 8 >= n * 7 {
            fill_rows::<false>(sat, seq, mask, n, regions, min_sat, table, occupied, sink)
        } else {
            fill_rows::<true>(sat, seq, mask, n, regions, min_sat, table, occupied, sink)
        };
        occupied[sink / 64..].fill(0);
        self.regions.pop();
        all
    }

    /// After a direct fill: records each satellite's occupied words as a
    /// [`Block`], makes the guess of the next batch's regions, and returns
    /// the packing.
    fn end_direct_fill(&mut self) -> Packing {
        let slots = self.regions_slots;
        std::mem::swap(&mut self.blocks, &mut self.prev_blocks);
        self.blocks.clear();
        #[cfg(target_arch = "x86_64")]
        if self.extract.is_avx512() {
            // The regions tile slots 0..slots: their words at once.
            // SAFETY: `is_avx512` only where AVX-512F was detected; the
            // table holds `slots` slots.
            unsafe { x86::occupancy(&self.table[..slots], &mut self.occupied[..slots / 64]) };
        }
        self.kept = nonzero_words(&self.occupied[..slots / 64], &mut self.nonzero);
        for (s, region) in self.regions.iter().enumerate() {
            let first = (region.first / 64) as usize;
            let n = (region.slots / 64) as usize;
            let Some((a, b)) = occupied_span(&self.nonzero, &self.occupied, first, n) else {
                continue;
            };
            let words = &self.occupied[first..first + n];
            self.blocks.push(Block {
                sat: self.regions_min_sat + s as u32,
                first_word: first + a,
                words: b - a + 1,
                low: region.lo + a as u64 * 64 + u64::from(words[a].trailing_zeros()),
                high: region.lo + b as u64 * 64 + 63 - u64::from(words[b].leading_zeros()),
            });
        }
        // The guess: each satellite of this batch, from 32 below its
        // lowest seq up to what its highest seq moved since the last
        // batch, half as much again, a tenth of its span and 16 (its span
        // when it had no block then). Tight, so the table scans stay small;
        // a batch whose row misses is planned exactly (see `guess`). A
        // satellite between this batch's first and last that had a block in
        // the batch before but none in this one keeps a region guessed from
        // that block: with many satellites, a few are missing from each
        // batch, and each would otherwise make the next batch miss.
        self.regions.clear();
        let mut next = 0u64;
        if let (Some(first), Some(last)) = (self.blocks.first(), self.blocks.last()) {
            self.regions_min_sat = first.sat;
            self.regions
                .resize((last.sat - first.sat) as usize + 1, Region::default());
            let regions = &mut self.regions;
            let mut place = |sat: u32, (lo, hi): (u64, u64)| {
                let slots = (hi - lo + 1) * 64;
                regions[(sat - first.sat) as usize] = Region {
                    lo: lo * 64,
                    slots,
                    first: next,
                };
                next = next.saturating_add(slots);
            };
            let mut prev = self.prev_blocks.iter().peekable();
            for b in &self.blocks {
                while let Some(p) = prev.next_if(|p| p.sat < b.sat) {
                    if p.sat > first.sat {
                        place(p.sat, guess(p.low, p.high, p.high - p.low));
                    }
                }
                let moved = match prev.next_if(|p| p.sat == b.sat) {
                    Some(p) => b.high.saturating_sub(p.high),
                    None => b.high - b.low,
                };
                place(b.sat, guess(b.low, b.high, moved));
            }
        }
        self.regions_slots = usize::try_from(next).unwrap_or(usize::MAX);
        self.guessed = true;
        let packing = Packing::Direct { slots };
        self.last_packing = Some(packing);
        packing
    }

    /// Grows the direct table and its bitmap to the largest table a batch of
    /// `rows` rows may take (sized by all rows, valid or not, so a batch
    /// with more valid rows than any before does not grow it again), and
    /// the per-satellite scratch to [`SAT_TABLE`] satellites: once batches
    /// reach full size, a direct batch allocates nothing.
    fn grow_direct_table(&mut self, rows: usize) {
        // The sink of [`SortUnique::fill_columns`] after the regions.
        let most = direct_budget(rows).next_multiple_of(64) + SINK_SLOTS;
        if self.table.len() < most {
            // The old sink becomes slots of regions: every slot empty again.
            self.table.clear();
            self.table.resize(most, EMPTY);
            self.occupied.resize(most / 64, 0);
        }
        let nonzero = (self.table.len() / 64).div_ceil(64) + 1;
        self.nonzero
            .reserve(nonzero.saturating_sub(self.nonzero.len()));
        for v in [&mut self.region_first, &mut self.region_slots] {
            v.reserve((SAT_TABLE as usize + 2).saturating_sub(v.len()));
        }
        self.region_lo
            .reserve((SAT_TABLE as usize + 2).saturating_sub(self.region_lo.len()));
        let sats = SAT_TABLE as usize + 1;
        for v in [&mut self.base, &mut self.top] {
            v.reserve(sats.saturating_sub(v.len()));
        }
        self.regions
            .reserve(sats.saturating_sub(self.regions.len()));
        self.blocks.reserve(sats.saturating_sub(self.blocks.len()));
        self.prev_blocks
            .reserve(sats.saturating_sub(self.prev_blocks.len()));
    }

    /// The direct table [`SortUnique::prepare`] just filled, to be read once
    /// (its bitmap must be left clear).
    pub(super) fn direct(&mut self) -> DirectBlocks<'_> {
        let Some(Packing::Direct { slots }) = self.last_packing else {
            unreachable!("direct() follows a prepare() that chose the direct layout")
        };
        let occupied = &mut self.occupied[..slots / 64];
        DirectBlocks {
            copies: self.valid as u64 - self.kept,
            blocks: &self.blocks,
            table: &mut self.table[..slots],
            occupied,
            extract: self.extract,
        }
    }

    /// Writes the survivors of the batch [`SortUnique::prepare`] chose
    /// `packing` for into `survivors` (cleared), in (sat, seq) order, and
    /// returns how many later copies were dropped.
    pub(super) fn finish(&mut self, packing: Packing, survivors: &mut Vec<u32>) -> u64 {
        survivors.clear();
        let min_sat = self.min_sat;
        match packing {
            Packing::Direct { slots } => {
                // Only the occupied slots are read: the scan costs a word per
                // 64 slots plus one step per survivor, and leaves the bitmap clear.
                let table = self.table[..slots].chunks_exact_mut(64);
                for (word, slots) in self.occupied[..slots / 64].iter_mut().zip(table) {
                    let bits = std::mem::take(word);
                    if bits != 0 {
                        let words: &mut [u32; 64] = slots.try_into().expect("chunks of 64");
                        self.extract.take(words, bits, survivors);
                    }
                }
            }
            Packing::Radix {
                key_bits,
                seq_bits,
                per_sat_base,
            } => {
                let min_seq = self.seqs.iter().copied().min().unwrap_or(u64::MAX);
                self.keys.clear();
                let base = &self.base;
                let gathered = self.rows.iter().zip(&self.sats).zip(&self.seqs);
                self.keys.extend(gathered.map(|((&r, &sat), &seq)| {
                    let b = if per_sat_base {
                        base[(sat - min_sat) as usize]
                    } else {
                        min_seq
                    };
                    let high = (u64::from(sat - min_sat) << seq_bits) | (seq - b);
                    (high << 32) | u64::from(r)
                }));
                radix_sort_high32(&mut self.keys, &mut self.scratch, key_bits);
                // Branch-free unique: copies are ~45% of a real batch, in no
                // pattern, so write every row and advance only past firsts.
                survivors.resize(self.keys.len(), 0);
                let mut kept = 0;
                let mut prev = u64::MAX;
                for &k in &self.keys {
                    survivors[kept] = k as u32;
                    kept += usize::from(k >> 32 != prev);
                    prev = k >> 32;
                }
                survivors.truncate(kept);
            }
            Packing::Wide => {
                self.wide.clear();
                let gathered = self.rows.iter().zip(&self.sats).zip(&self.seqs);
                self.wide.extend(gathered.map(|((&r, &sat), &seq)| {
                    (u128::from(sat) << 96) | (u128::from(seq) << 32) | u128::from(r)
                }));
                self.wide.sort_unstable();
                let mut prev: Option<u128> = None;
                for &k in &self.wide {
                    if prev != Some(k >> 32) {
                        survivors.push(k as u32);
                        prev = Some(k >> 32);
                    }
                }
            }
        }
        (self.valid - survivors.len()) as u64
    }

    /// Gathers the row, sat and seq of every set bit of `mask` into
    /// `self.rows`, `self.sats`, `self.seqs`. A layout with columns copies
    /// each 64 rows that are all valid (the common case) as three slices.
    fn gather<R: Rows + ?Sized>(&mut self, rows: &R, mask: &[u64]) {
        let n = rows.row_count();
        self.rows.clear();
        self.sats.clear();
        self.seqs.clear();
        if let Some((sat, seq)) = rows.key_columns() {
            for (w, &word) in mask.iter().enumerate() {
                let at = w * 64;
                if word == u64::MAX && at + 64 <= n {
                    self.rows.extend(at as u32..at as u32 + 64);
                    self.sats.extend_from_slice(&sat[at..at + 64]);
                    self.seqs.extend_from_slice(&seq[at..at + 64]);
                    continue;
                }
                let mut bits = word;
                while bits != 0 {
                    let i = at + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.rows.push(i as u32);
                    self.sats.push(sat[i]);
                    self.seqs.push(seq[i]);
                }
            }
            return;
        }
        for i in set_bits(mask) {
            self.rows.push(i as u32);
            self.sats.push(rows.sat(i));
            self.seqs.push(rows.seq(i));
        }
    }

    /// Chooses the layout; with per-satellite bases fills `self.base` and
    /// `self.top`, and for the direct layout `self.regions`.
    fn choose(&mut self, min_sat: u32, max_sat: u32) -> Packing {
        let sat_bits = bit_width(u64::from(max_sat - min_sat));
        let per_sat_base = max_sat - min_sat < SAT_TABLE;
        let seq_bits = if per_sat_base {
            let sats = (max_sat - min_sat) as usize + 1;
            self.base.clear();
            self.base.resize(sats, u64::MAX);
            self.top.clear();
            self.top.resize(sats, 0);
            for (&sat, &seq) in self.sats.iter().zip(&self.seqs) {
                let s = (sat - min_sat) as usize;
                self.base[s] = self.base[s].min(seq);
                self.top[s] = self.top[s].max(seq);
            }
            if self.plan_regions(min_sat, self.rows.len()) && !self.radix_only {
                return Packing::Direct {
                    slots: self.regions_slots,
                };
            }
            // Satellites without a row have base > top: no spread.
            let spread = self.base.iter().zip(&self.top);
            let spread = spread
                .map(|(&b, &t)| t.saturating_sub(b))
                .max()
                .unwrap_or(0);
            bit_width(spread)
        } else {
            let min_seq = self.seqs.iter().copied().min().unwrap_or(u64::MAX);
            let max_seq = self.seqs.iter().copied().max().unwrap_or(0);
            bit_width(max_seq - min_seq)
        };
        if sat_bits + seq_bits <= 32 {
            Packing::Radix {
                key_bits: sat_bits + seq_bits,
                seq_bits,
                per_sat_base,
            }
        } else {
            Packing::Wide
        }
    }
}

impl SortUnique {
    /// Lays out the direct table's regions from `self.base` and `self.top`
    /// (satellite slot 0 is `min_sat`): each satellite with rows gets whole
    /// words from its lowest seq's word to its highest's, in ascending
    /// satellite order. False when they exceed the budget for `valid` rows.
    fn plan_regions(&mut self, min_sat: u32, valid: usize) -> bool {
        let mut next = 0u64;
        self.regions.clear();
        for (&b, &t) in self.base.iter().zip(&self.top) {
            // Satellites without a row have base > top: no slots.
            let region = if b <= t {
                let slots = ((t >> 6) - (b >> 6)).saturating_add(1).saturating_mul(64);
                Region {
                    lo: b & !63,
                    slots,
                    first: next,
                }
            } else {
                Region::default()
            };
            next = next.saturating_add(region.slots);
            self.regions.push(region);
        }
        self.regions_min_sat = min_sat;
        self.regions_slots = usize::try_from(next).unwrap_or(usize::MAX);
        next <= direct_budget(valid) as u64
    }
}

/// The guessed words `lo ..= hi` (seq / 64) of a satellite's next region,
/// from this batch's lowest and highest seq and how far its highest moved
/// since the batch before (see [`SortUnique::end_direct_fill`]): from 32
/// below the lowest (a lagging station's late frames) to the highest plus
/// 1.5 times the move, a tenth of the span and 16. On the default workload
/// (traced, audit.md section 15) this misses 3.5% of batches at batch 1000
/// and none at 65536, with 10.7 and 1.74 slots per row, against 0.3% and
/// 6.7% misses with 17.4 and 1.48 slots for the guess it replaced (a word
/// below the lowest to the span above the highest).
#[inline]
fn guess(low: u64, high: u64, moved: u64) -> (u64, u64) {
    let ahead = moved
        .saturating_add(moved / 2)
        .saturating_add((high - low) / 10)
        .saturating_add(16);
    (low.saturating_sub(32) >> 6, high.saturating_add(ahead) >> 6)
}

/// Writes into `nonzero` (cleared) one bit per word of `words`, set where
/// the word is not 0, and a spare 0 word after them ([`occupied_span`]
/// reads two words); returns the set bits of `words`.
fn nonzero_words(words: &[u64], nonzero: &mut Vec<u64>) -> u64 {
    nonzero.clear();
    let mut all = 0;
    for chunk in words.chunks(64) {
        let (mut bits, mut ones) = (0u64, 0u64);
        for (j, &w) in chunk.iter().enumerate() {
            bits |= u64::from(w != 0) << j;
            ones += u64::from(w.count_ones());
        }
        nonzero.push(bits);
        all += ones;
    }
    nonzero.push(0);
    all
}

/// The first and last of table words `first .. first + n` that have a row,
/// relative to `first` (`None` if none): from `nonzero` (one bit per word,
/// with a spare word at the end) without a loop when `n <= 64`, from the
/// `occupied` words otherwise.
#[inline]
fn occupied_span(
    nonzero: &[u64],
    occupied: &[u64],
    first: usize,
    n: usize,
) -> Option<(usize, usize)> {
    if n == 0 {
        return None;
    }
    if n <= 64 {
        let (w, shift) = (first / 64, first % 64);
        let above = if shift == 0 {
            0
        } else {
            nonzero[w + 1] << (64 - shift)
        };
        let bits = ((nonzero[w] >> shift) | above) & (u64::MAX >> (64 - n));
        return (bits != 0).then(|| {
            (
                bits.trailing_zeros() as usize,
                63 - bits.leading_zeros() as usize,
            )
        });
    }
    let words = &occupied[first..first + n];
    let a = words.iter().position(|&w| w != 0)?;
    Some((a, words.iter().rposition(|&w| w != 0).unwrap_or(a)))
}

/// Where one satellite's rows go in the direct table: slots `first ..
/// first + slots` hold seqs `lo .. lo + slots` (`lo` and `first` multiples
/// of 64). `slots` 0: no row of the satellite has a place.
#[derive(Debug, Default, Clone, Copy)]
struct Region {
    lo: u64,
    slots: u64,
    first: u64,
}

/// One satellite's occupied words of a direct table: words `first_word ..
/// first_word + words` of the bitmap, word `first_word + j` holding seqs
/// `64 * (low / 64 + j) ..` in bits 0..63 (and the table the same slots).
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    /// The satellite.
    pub sat: u32,
    /// Its first word with a set bit.
    pub first_word: usize,
    /// Words from the first to the last with a set bit.
    pub words: usize,
    /// Its lowest seq in the batch.
    pub low: u64,
    /// Its highest seq in the batch.
    pub high: u64,
}

/// The smallest and largest `sat` among rows `i < n` whose bit is set in
/// `mask` (`(u32::MAX, 0)` if none). Written as masks and a fold over each
/// 64-row chunk so it compiles to vector code.
fn valid_sat_range(sat: &[u32], mask: &[u64], n: usize) -> (u32, u32) {
    let (mut lo, mut hi) = (u32::MAX, 0u32);
    for (chunk, &word) in sat[..n].chunks(64).zip(mask) {
        let (mut l, mut h) = ([u32::MAX; 8], [0u32; 8]);
        for (j, &s) in chunk.iter().enumerate() {
            // All ones when the row is valid.
            let keep = 0u32.wrapping_sub(((word >> j) & 1) as u32);
            l[j % 8] = l[j % 8].min(s | !keep);
            h[j % 8] = h[j % 8].max(s & keep);
        }
        lo = lo.min(l.into_iter().fold(u32::MAX, u32::min));
        hi = hi.max(h.into_iter().fold(0, u32::max));
    }
    (lo, hi)
}

/// The loop of [`SortUnique::fill_columns`]: `regions` ends with an empty
/// region, which satellites past the others read; `SELECT` chooses the
/// row's slot without a branch.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fill_rows<const SELECT: bool>(
    sat: &[u32],
    seq: &[u64],
    mask: &[u64],
    n: usize,
    regions: &[Region],
    min_sat: u32,
    table: &mut [u32],
    occupied: &mut [u64],
    sink: usize,
) -> bool {
    let outside = regions.len() - 1;
    let mut miss = false;
    for_each_row_rev(mask, n, |i, valid| {
        let s = (sat[i].wrapping_sub(min_sat) as usize).min(outside);
        let region = regions[s];
        let off = seq[i].wrapping_sub(region.lo);
        let inside = off < region.slots;
        miss |= valid & !inside;
        // Consecutive sink rows go to different words: one word would chain
        // each read-modify-write of its bitmap word to the last.
        let (kept, sunk) = (
            region.first.wrapping_add(off) as usize,
            sink + (i % SINK_WORDS) * 64,
        );
        let slot = if SELECT {
            std::hint::select_unpredictable(valid & inside, kept, sunk)
        } else if valid & inside {
            kept
        } else {
            sunk
        };
        table[slot] = i as u32;
        occupied[slot / 64] |= 1 << (slot % 64);
    });
    !miss
}

/// Calls `f(i, valid)` for each row `i < n`, ascending, `valid` its bit in
/// `mask`: a counted loop over every row, with no branch on the mask, since
/// about half the 64-row words of a real batch hold an invalid row.
#[inline(always)]
fn for_each_row(mask: &[u64], n: usize, mut f: impl FnMut(usize, bool)) {
    for (w, &word) in mask.iter().enumerate().take(n.div_ceil(64)) {
        let at = w * 64;
        for j in 0..(n - at).min(64) {
            f(at + j, (word >> j) & 1 != 0);
        }
    }
}

/// [`for_each_row`] in descending order.
#[inline(always)]
fn for_each_row_rev(mask: &[u64], n: usize, mut f: impl FnMut(usize, bool)) {
    for (w, &word) in mask.iter().enumerate().take(n.div_ceil(64)).rev() {
        let at = w * 64;
        for j in (0..(n - at).min(64)).rev() {
            f(at + j, (word >> j) & 1 != 0);
        }
    }
}

/// The direct table of one batch, for the window to read a satellite's
/// occupancy words against its ring ([`SortUnique::direct`]).
#[derive(Debug)]
pub(super) struct DirectBlocks<'a> {
    /// Valid rows that were later copies of a (sat, seq) of the batch.
    pub copies: u64,
    /// Each satellite's occupied words, in ascending satellite order.
    pub blocks: &'a [Block],
    /// Slot -> the first row of its (sat, seq), where `occupied` is set.
    pub table: &'a mut [u32],
    /// How to append a word's kept rows; when it is the AVX-512 kind the
    /// fill scattered, and the reader must leave every slot of the blocks
    /// [`EMPTY`]: [`Extract::take`] on every word of every block does, so a
    /// reader that skipped a block would leave rows for the next batch.
    pub extract: Extract,
    /// One bit per slot; the reader must leave it clear.
    pub occupied: &'a mut [u64],
}

/// Stable LSD radix sort of `keys` by their high 32 bits, of which only the
/// low `key_bits` may be non-zero. `scratch` is reused space.
fn radix_sort_high32(keys: &mut Vec<u64>, scratch: &mut Vec<u64>, key_bits: u32) {
    const DIGIT: u32 = 8;
    let n = keys.len();
    let passes = key_bits.div_ceil(DIGIT) as usize;
    debug_assert!(passes <= 4);
    let mut hist = [[0u32; 256]; 4];
    for &k in keys.iter() {
        let high = (k >> 32) as u32;
        for (p, h) in hist.iter_mut().enumerate().take(passes) {
            h[((high >> (DIGIT * p as u32)) & 0xFF) as usize] += 1;
        }
    }
    scratch.clear();
    scratch.resize(n, 0);
    for (p, h) in hist.iter_mut().enumerate().take(passes) {
        // One digit value in every key: this pass would not move anything.
        if h.iter().any(|&c| c as usize == n) {
            continue;
        }
        let mut sum = 0u32;
        for c in h.iter_mut() {
            let count = *c;
            *c = sum;
            sum += count;
        }
        let shift = 32 + DIGIT * p as u32;
        for &k in keys.iter() {
            let d = ((k >> shift) & 0xFF) as usize;
            scratch[h[d] as usize] = k;
            h[d] += 1;
        }
        std::mem::swap(keys, scratch);
    }
    debug_assert!(keys.windows(2).all(|w| w[0] >> 32 <= w[1] >> 32));
}

/// The regions of [`SortUnique::fill_columns`] as columns (the last one the
/// empty region satellites outside the others read), for gathers.
#[cfg(target_arch = "x86_64")]
struct Columns<'a> {
    lo: &'a [u64],
    first: &'a [u32],
    slots: &'a [u32],
    min_sat: u32,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Columns, EMPTY, SINK_WORDS};

    /// Regions up to which [`fill_rows`] looks a row's region up in
    /// registers (`vpermt2d` over four 16-lane registers per column)
    /// instead of with gathers.
    const PERMUTED: usize = 64;

    /// The regions of [`PERMUTED`] or fewer in sixteen registers: `first`,
    /// `slots`, and the low and high halves of `lo`, 64 lanes each.
    struct Permuted {
        first: [__m512i; 4],
        slots: [__m512i; 4],
        lo_low: [__m512i; 4],
        lo_high: [__m512i; 4],
    }

    impl Permuted {
        #[target_feature(enable = "avx512f")]
        fn new(r: &Columns<'_>) -> Permuted {
            let mut cols = [[0u32; PERMUTED]; 4];
            for (j, ((&lo, &first), &slots)) in r.lo.iter().zip(r.first).zip(r.slots).enumerate() {
                cols[0][j] = first;
                cols[1][j] = slots;
                cols[2][j] = lo as u32;
                cols[3][j] = (lo >> 32) as u32;
            }
            let load = |c: &[u32; PERMUTED]| -> [__m512i; 4] {
                // SAFETY: each column holds 64 u32s: four 16-lane loads.
                std::array::from_fn(|q| unsafe {
                    _mm512_loadu_si512(c.as_ptr().add(16 * q).cast())
                })
            };
            Permuted {
                first: load(&cols[0]),
                slots: load(&cols[1]),
                lo_low: load(&cols[2]),
                lo_high: load(&cols[3]),
            }
        }
    }

    /// Lanes `s` (each below 64) of a 64-lane column; `high` has lane j
    /// set where `s[j] >= 32`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn lookup64(col: &[__m512i; 4], s: __m512i, high: __mmask16) -> __m512i {
        _mm512_mask_blend_epi32(
            high,
            _mm512_permutex2var_epi32(col[0], s, col[1]),
            _mm512_permutex2var_epi32(col[2], s, col[3]),
        )
    }

    /// [`super::fill_rows`] for a table that holds [`EMPTY`] where no row
    /// is: the rows only store, sixteen at a time with one scatter and no
    /// bitmap. Lanes hold rows in descending order, and a scatter writes its
    /// lanes in ascending order, so the first copy of a (sat, seq) is the
    /// last write to its slot, as in the scalar loop. The rows past the last
    /// whole 16 go first, one at a time. Each row's region is looked up in
    /// registers when there are at most [`PERMUTED`] regions, gathered
    /// otherwise. Returns false when a valid row was outside its region.
    ///
    /// # Safety
    /// AVX-512F. Every region of `r` ends at or below `sink`, and `table`
    /// has `SINK_WORDS * 64` slots from `sink`; `r` has at least one region
    /// and `r.lo`, `r.first`, `r.slots` are equally long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fill_rows(
        sat: &[u32],
        seq: &[u64],
        mask: &[u64],
        n: usize,
        r: Columns<'_>,
        table: &mut [u32],
        sink: usize,
    ) -> bool {
        let outside = r.lo.len() - 1;
        debug_assert!(r.first.len() == r.lo.len() && r.slots.len() == r.lo.len());
        assert!(sat.len() >= n && seq.len() >= n && mask.len() * 64 >= n);
        assert!(sink + SINK_WORDS * 64 <= table.len());
        let bit = |i: usize| (mask[i / 64] >> (i % 64)) & 1 != 0;
        let mut miss = false;
        let whole = n / 16 * 16;
        for i in (whole..n).rev() {
            let s = (sat[i].wrapping_sub(r.min_sat) as usize).min(outside);
            let off = seq[i].wrapping_sub(r.lo[s]);
            let inside = off < u64::from(r.slots[s]);
            let valid = bit(i);
            miss |= valid & !inside;
            let slot = if valid & inside {
                r.first[s] as usize + off as usize
            } else {
                sink + (i % SINK_WORDS) * 64
            };
            table[slot] = i as u32;
        }
        let min_sat = _mm512_set1_epi32(r.min_sat as i32);
        let last = _mm512_set1_epi32(outside as i32);
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let reverse = _mm512_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        // Lane j sinks into word j % SINK_WORDS of the sink (16 is a
        // multiple of SINK_WORDS, so as the scalar loop's i % SINK_WORDS).
        let sunk = _mm512_add_epi32(
            _mm512_set1_epi32(sink as i32),
            _mm512_slli_epi32::<6>(_mm512_and_si512(
                iota,
                _mm512_set1_epi32(SINK_WORDS as i32 - 1),
            )),
        );
        // At most PERMUTED regions: looked up in registers, not gathered.
        let permuted = (r.lo.len() <= PERMUTED).then(|| Permuted::new(&r));
        // Lane j of the low 8 (high 8) u64s of `lo` from the two u32 halves.
        let (low_8, high_8) = (
            _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
        );
        let mut missed: u16 = 0;
        for b in (0..whole).step_by(16).rev() {
            let valid = (mask[b / 64] >> (b % 64)) as u16;
            // SAFETY: b + 16 <= whole <= n <= sat.len(), seq.len().
            let (sats, seq_lo, seq_hi) = unsafe {
                (
                    _mm512_loadu_si512(sat.as_ptr().add(b).cast()),
                    _mm512_loadu_si512(seq.as_ptr().add(b).cast()),
                    _mm512_loadu_si512(seq.as_ptr().add(b + 8).cast()),
                )
            };
            let s = _mm512_min_epu32(_mm512_sub_epi32(sats, min_sat), last);
            let (first, slots, lo_lo, lo_hi) = if let Some(p) = &permuted {
                let high = _mm512_test_epi32_mask(s, _mm512_set1_epi32(32));
                let (low, above) = (lookup64(&p.lo_low, s, high), lookup64(&p.lo_high, s, high));
                (
                    lookup64(&p.first, s, high),
                    lookup64(&p.slots, s, high),
                    _mm512_permutex2var_epi32(low, low_8, above),
                    _mm512_permutex2var_epi32(low, high_8, above),
                )
            } else {
                // SAFETY: every lane of `s` is at most `outside`, an index
                // of each region column.
                unsafe {
                    (
                        _mm512_i32gather_epi32::<4>(s, r.first.as_ptr().cast()),
                        _mm512_i32gather_epi32::<4>(s, r.slots.as_ptr().cast()),
                        _mm512_i32gather_epi64::<8>(
                            _mm512_castsi512_si256(s),
                            r.lo.as_ptr().cast(),
                        ),
                        _mm512_i32gather_epi64::<8>(
                            _mm512_extracti64x4_epi64::<1>(s),
                            r.lo.as_ptr().cast(),
                        ),
                    )
                }
            };
            let (off_lo, off_hi) = (
                _mm512_sub_epi64(seq_lo, lo_lo),
                _mm512_sub_epi64(seq_hi, lo_hi),
            );
            let (slots_lo, slots_hi) = (
                _mm512_cvtepu32_epi64(_mm512_castsi512_si256(slots)),
                _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64::<1>(slots)),
            );
            let inside = u16::from(_mm512_cmplt_epu64_mask(off_lo, slots_lo))
                | u16::from(_mm512_cmplt_epu64_mask(off_hi, slots_hi)) << 8;
            missed |= valid & !inside;
            let off = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm512_cvtepi64_epi32(off_lo)),
                _mm512_cvtepi64_epi32(off_hi),
            );
            let slot = _mm512_mask_blend_epi32(valid & inside, sunk, _mm512_add_epi32(first, off));
            let rows = _mm512_add_epi32(_mm512_set1_epi32(b as i32), iota);
            // SAFETY: a kept lane's slot is below its region's end, at most
            // `sink`; a sunk lane's is within the sink; both are in `table`.
            unsafe {
                _mm512_i32scatter_epi32::<4>(
                    table.as_mut_ptr().cast(),
                    _mm512_permutexvar_epi32(reverse, slot),
                    _mm512_permutexvar_epi32(reverse, rows),
                );
            }
        }
        !(miss | (missed != 0))
    }

    /// Writes into `words[w]` the occupancy of slots `64 w .. 64 w + 64` of
    /// `table` (bit set where a slot is not [`EMPTY`]).
    ///
    /// # Safety
    /// AVX-512F; `table` holds `64 * words.len()` slots.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn occupancy(table: &[u32], words: &mut [u64]) {
        assert!(table.len() >= words.len() * 64);
        let empty = _mm512_set1_epi32(EMPTY as i32);
        for (w, word) in words.iter_mut().enumerate() {
            let mut bits = 0u64;
            for q in 0..4 {
                // SAFETY: slot 64 w + 16 q + 15 < 64 * words.len().
                let lanes =
                    unsafe { _mm512_loadu_si512(table.as_ptr().add(w * 64 + q * 16).cast()) };
                bits |= u64::from(_mm512_cmpneq_epi32_mask(lanes, empty)) << (16 * q);
            }
            *word = bits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{nonzero_words, occupied_span};

    /// `occupied_span` against the loop it replaces, for every span of up
    /// to 130 words over sparse and dense random words.
    #[test]
    fn occupied_span_agrees_with_a_scan() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut nonzero = Vec::new();
        for density in [0.02, 0.2, 0.7] {
            let words: Vec<u64> = (0..300)
                .map(|_| if rng.f64() < density { rng.u64(1..) } else { 0 })
                .collect();
            let ones = nonzero_words(&words, &mut nonzero);
            assert_eq!(
                ones,
                words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>()
            );
            for first in 0..words.len() {
                for n in 0..=130.min(words.len() - first) {
                    let span = &words[first..first + n];
                    let scan = span
                        .iter()
                        .position(|&w| w != 0)
                        .map(|a| (a, span.iter().rposition(|&w| w != 0).unwrap_or(a)));
                    assert_eq!(
                        occupied_span(&nonzero, &words, first, n),
                        scan,
                        "words {first}..{}",
                        first + n
                    );
                }
            }
        }
    }
}
