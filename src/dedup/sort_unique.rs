//! In-batch dedup by sort-and-unique over packed keys, not a hash set.
//!
//! # Key layouts
//! Both layouts sort exactly as the tuple (sat, seq, row) does, so after the
//! sort the first key of each run of equal (sat, seq) is the copy that came
//! first in the stream.
//!
//! Wide (always possible; batches hold fewer than 2^32 rows):
//! ```text
//! u128: bits 127..96 sat (32) | bits 95..32 seq (64) | bits 31..0 row (32)
//! ```
//! The high 96 bits are the (sat << 64 | seq) key; the low 32 break ties.
//!
//! Narrow (chosen once per batch when it fits in 63 bits): each field is
//! stored as its offset from the batch's minimum, in just enough bits for the
//! batch's range:
//! ```text
//! u64: sat - min_sat (S bits) | seq - min_seq (Q bits) | row (R bits), S + Q + R <= 63
//! ```
//! Subtracting the minimum keeps the order, so the narrow key sorts like the
//! wide one. A batch of 1000 rows (R = 10) from 4096 satellites (S <= 12) fits
//! whenever its sequence numbers span fewer than 2^41, which is every real
//! batch; the wide path is the fallback for hostile or sparse ones. Sorting
//! half as many bytes is what makes the narrow path worth its pre-pass.

use crate::batch::Rows;
use crate::validate::set_bits;

/// Number of bits needed to hold `x`.
#[inline]
fn bit_width(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// The packing chosen for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// u64 keys with the given field widths and minimums.
    Narrow {
        /// Bits of `seq - min_seq`.
        seq_bits: u32,
        /// Bits of the row index.
        row_bits: u32,
        /// Smallest valid sat in the batch.
        min_sat: u32,
        /// Smallest valid seq in the batch.
        min_seq: u64,
    },
    /// u128 keys.
    Wide,
}

/// Chooses the key packing for the rows at the set bits of `mask`.
pub fn choose_packing<R: Rows + ?Sized>(rows: &R, mask: &[u64]) -> Packing {
    let (mut min_sat, mut max_sat) = (u32::MAX, 0u32);
    let (mut min_seq, mut max_seq) = (u64::MAX, 0u64);
    for i in set_bits(mask) {
        let (sat, seq) = (rows.sat(i), rows.seq(i));
        min_sat = min_sat.min(sat);
        max_sat = max_sat.max(sat);
        min_seq = min_seq.min(seq);
        max_seq = max_seq.max(seq);
    }
    if min_sat > max_sat {
        return Packing::Wide; // no valid rows; nothing to pack
    }
    let sat_bits = bit_width(u64::from(max_sat - min_sat));
    let seq_bits = bit_width(max_seq - min_seq);
    let row_bits = bit_width(rows.rows().saturating_sub(1) as u64);
    if sat_bits + seq_bits + row_bits <= 63 {
        Packing::Narrow {
            seq_bits,
            row_bits,
            min_sat,
            min_seq,
        }
    } else {
        Packing::Wide
    }
}

/// Reusable key buffers for [`SortUnique::run`].
#[derive(Debug, Default, Clone)]
pub struct SortUnique {
    narrow: Vec<u64>,
    wide: Vec<u128>,
    /// The packing of the last batch run, for tests and reports.
    pub last_packing: Option<Packing>,
}

impl SortUnique {
    /// Writes into `survivors` the first row of each (sat, seq) among the set
    /// bits of `mask`, in ascending (sat, seq) order, and returns how many
    /// later copies were dropped.
    pub fn run<R: Rows + ?Sized>(
        &mut self,
        rows: &R,
        mask: &[u64],
        survivors: &mut Vec<u32>,
    ) -> u64 {
        assert!(
            rows.rows() <= u32::MAX as usize,
            "a batch holds fewer than 2^32 rows"
        );
        survivors.clear();
        let packing = choose_packing(rows, mask);
        self.last_packing = Some(packing);
        let mut total = 0u64;
        match packing {
            Packing::Narrow {
                seq_bits,
                row_bits,
                min_sat,
                min_seq,
            } => {
                let sat_shift = seq_bits + row_bits;
                self.narrow.clear();
                self.narrow.extend(set_bits(mask).map(|i| {
                    (u64::from(rows.sat(i) - min_sat) << sat_shift)
                        | ((rows.seq(i) - min_seq) << row_bits)
                        | i as u64
                }));
                self.narrow.sort_unstable();
                let row_mask = (1u64 << row_bits) - 1;
                let mut prev = u64::MAX;
                for &k in &self.narrow {
                    total += 1;
                    let id = k >> row_bits;
                    if id != prev {
                        survivors.push((k & row_mask) as u32);
                        prev = id;
                    }
                }
            }
            Packing::Wide => {
                self.wide.clear();
                self.wide.extend(set_bits(mask).map(|i| {
                    (u128::from(rows.sat(i)) << 96) | (u128::from(rows.seq(i)) << 32) | i as u128
                }));
                self.wide.sort_unstable();
                let mut prev: Option<u128> = None;
                for &k in &self.wide {
                    total += 1;
                    let id = k >> 32;
                    if prev != Some(id) {
                        survivors.push(k as u32);
                        prev = Some(id);
                    }
                }
            }
        }
        total - survivors.len() as u64
    }
}
