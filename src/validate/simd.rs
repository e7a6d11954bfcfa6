//! Validation with `wide` masks, 64 rows per step.
//!
//! The corrupt flag is bit 7 of each flags byte, which is exactly the bit
//! `u8x32::to_bitmask` collects: 32 rows' flags become 32 mask bits in one
//! instruction (`vpmovmskb` under AVX2), with no compare at all. The satellite
//! check compares eight `u32` lanes at a time against `max_sat`. Rows that do
//! not fill a whole step go through the scalar rule.

use wide::{u32x8, u8x32};

use super::scalar;

/// Writes the validity mask of the rows (`sat[i]`, `flags[i]`) into `mask`
/// and returns the number of valid rows. See the module above for the layout.
///
/// # Panics
/// When the two columns differ in length.
pub fn valid_mask(sat: &[u32], flags: &[u8], max_sat: u32, mask: &mut Vec<u64>) -> usize {
    assert_eq!(sat.len(), flags.len(), "columns differ in length");
    let n = sat.len();
    mask.clear();
    mask.resize(super::mask_words(n), 0);
    let limit = u32x8::splat(max_sat);
    let whole = n / 64;
    let mut valid = 0usize;
    for (w, word) in mask[..whole].iter_mut().enumerate() {
        let base = w * 64;
        let f = &flags[base..base + 64];
        let corrupt_lo = u8x32::from(<[u8; 32]>::try_from(&f[..32]).unwrap()).to_bitmask() as u64;
        let corrupt_hi = u8x32::from(<[u8; 32]>::try_from(&f[32..]).unwrap()).to_bitmask() as u64;
        let mut out_of_range = 0u64;
        for (k, lanes) in sat[base..base + 64].chunks_exact(8).enumerate() {
            let s = u32x8::from(<[u32; 8]>::try_from(lanes).unwrap());
            out_of_range |= (s.simd_gt(limit).to_bitmask() as u64) << (k * 8);
        }
        let bits = !(corrupt_lo | (corrupt_hi << 32) | out_of_range);
        *word = bits;
        valid += bits.count_ones() as usize;
    }
    for i in whole * 64..n {
        if scalar::is_valid(sat[i], flags[i], max_sat) {
            mask[i / 64] |= 1 << (i % 64);
            valid += 1;
        }
    }
    valid
}
