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
//! # Wide layout (the fallback)
//! ```text
//! u128: bits 127..96 sat | bits 95..32 seq | bits 31..0 row
//! ```
//! The high 96 bits are the `sat << 64 | seq` key. Used when a batch's keys
//! do not fit in 32 bits (sparse or hostile sequence numbers); sorted with
//! `sort_unstable`, which needs no stability because the row breaks ties.

use crate::batch::Rows;
use crate::validate::set_bits;

/// Largest span of satellite ids for which each satellite gets its own seq base.
pub const SAT_TABLE: u32 = 4096;

/// Number of bits needed to hold `x`.
#[inline]
fn bit_width(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// The packing chosen for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
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
    base: Vec<u64>,
    keys: Vec<u64>,
    scratch: Vec<u64>,
    wide: Vec<u128>,
    /// The packing of the last batch run, for tests and reports.
    pub last_packing: Option<Packing>,
}

impl SortUnique {
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
        assert!(
            rows.row_count() <= u32::MAX as usize,
            "a batch holds fewer than 2^32 rows"
        );
        survivors.clear();
        self.rows.clear();
        let (mut min_sat, mut max_sat) = (u32::MAX, 0u32);
        let (mut min_seq, mut max_seq) = (u64::MAX, 0u64);
        for i in set_bits(mask) {
            let (sat, seq) = (rows.sat(i), rows.seq(i));
            min_sat = min_sat.min(sat);
            max_sat = max_sat.max(sat);
            min_seq = min_seq.min(seq);
            max_seq = max_seq.max(seq);
            self.rows.push(i as u32);
        }
        if self.rows.is_empty() {
            self.last_packing = None;
            return 0;
        }
        let packing = self.choose(rows, min_sat, max_sat, min_seq, max_seq);
        self.last_packing = Some(packing);
        match packing {
            Packing::Radix {
                key_bits,
                seq_bits,
                per_sat_base,
            } => {
                self.keys.clear();
                let base = &self.base;
                self.keys.extend(self.rows.iter().map(|&r| {
                    let (sat, seq) = (rows.sat(r as usize), rows.seq(r as usize));
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
                self.wide.extend(self.rows.iter().map(|&r| {
                    let (sat, seq) = (rows.sat(r as usize), rows.seq(r as usize));
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
        (self.rows.len() - survivors.len()) as u64
    }

    /// Chooses the layout; for the radix layout with per-satellite bases,
    /// fills `self.base`.
    fn choose<R: Rows + ?Sized>(
        &mut self,
        rows: &R,
        min_sat: u32,
        max_sat: u32,
        min_seq: u64,
        max_seq: u64,
    ) -> Packing {
        let sat_bits = bit_width(u64::from(max_sat - min_sat));
        let per_sat_base = max_sat - min_sat < SAT_TABLE;
        let seq_bits = if per_sat_base {
            self.base.clear();
            self.base.resize((max_sat - min_sat) as usize + 1, u64::MAX);
            for &r in &self.rows {
                let slot = &mut self.base[(rows.sat(r as usize) - min_sat) as usize];
                *slot = (*slot).min(rows.seq(r as usize));
            }
            let spread = self
                .rows
                .iter()
                .map(|&r| {
                    rows.seq(r as usize) - self.base[(rows.sat(r as usize) - min_sat) as usize]
                })
                .max()
                .unwrap_or(0);
            bit_width(spread)
        } else {
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
