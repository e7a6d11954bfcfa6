//! Stage 2: validate. A row is valid when its station did not mark it
//! corrupt (`flags & 0x80 == 0`) and its satellite id is at most `max_sat`.
//!
//! # Mask layout
//! The result is a bitset in `u64` words: row `i` is bit `i % 64` of word
//! `i / 64`, low-order bits for lower rows (as hashbrown orders its bitmasks).
//! A set bit means valid. Bits past the last row are always clear.
//!
//! `simd` is the fast path (`wide` masks, 64 rows per step); `scalar` is its
//! naive twin, one row at a time. [`valid_mask`] is the one place that
//! chooses: `simd` when the layout exposes its `sat` and `flags` columns
//! ([`Rows::columns`]), `scalar` otherwise (an array of structs has no
//! columns to load). `wide` has already chosen AVX2 or SSE2 when the crate
//! was compiled (see README, "CPU level").

pub mod scalar;
pub mod simd;

use crate::batch::Rows;

/// Words needed for a mask of `rows` rows.
#[inline]
pub fn mask_words(rows: usize) -> usize {
    rows.div_ceil(64)
}

/// Writes the validity mask of `rows` into `mask` (resized, capacity kept)
/// and returns the number of valid rows.
#[inline]
pub fn valid_mask<R: Rows + ?Sized>(rows: &R, max_sat: u32, mask: &mut Vec<u64>) -> usize {
    match rows.columns() {
        Some((sat, flags)) => simd::valid_mask(sat, flags, max_sat, mask),
        None => scalar::valid_mask_rows(rows, max_sat, mask),
    }
}

/// Clears the bits of `mask` (a mask of the rows of `sat`) whose satellite
/// lies outside `lo..hi`, and returns how many bits stay set: a validity
/// mask narrowed to one satellite range, so that several dedups, each with
/// its own window over its own satellites, share a batch (the data-parallel
/// runner).
pub fn keep_sats(sat: &[u32], lo: u64, hi: u64, mask: &mut [u64]) -> usize {
    debug_assert_eq!(mask.len(), mask_words(sat.len()));
    let mut kept = 0;
    for (word, chunk) in mask.iter_mut().zip(sat.chunks(64)) {
        let mut inside = 0u64;
        for (i, &s) in chunk.iter().enumerate() {
            let s = u64::from(s);
            inside |= u64::from(s >= lo && s < hi) << i;
        }
        *word &= inside;
        kept += word.count_ones() as usize;
    }
    kept
}

/// Iterates the indices of the set bits of `mask`, in ascending order.
#[inline]
pub fn set_bits(mask: &[u64]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().flat_map(|(w, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(w * 64 + b)
        })
    })
}
