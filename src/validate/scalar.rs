//! The naive twin of validation: one row at a time, the rule written plainly.

use crate::batch::Rows;
use crate::wire::FLAG_CORRUPT;

/// True when a row with these fields is valid.
#[inline]
pub fn is_valid(sat: u32, flags: u8, max_sat: u32) -> bool {
    flags & FLAG_CORRUPT == 0 && sat <= max_sat
}

/// Writes the validity mask of the rows (`sat[i]`, `flags[i]`) into `mask`
/// and returns the number of valid rows. See the module above for the layout.
///
/// # Panics
/// When the two columns differ in length.
pub fn valid_mask(sat: &[u32], flags: &[u8], max_sat: u32, mask: &mut Vec<u64>) -> usize {
    assert_eq!(sat.len(), flags.len(), "columns differ in length");
    mask.clear();
    mask.resize(super::mask_words(sat.len()), 0);
    let mut valid = 0;
    for (i, (&s, &f)) in sat.iter().zip(flags).enumerate() {
        if is_valid(s, f, max_sat) {
            mask[i / 64] |= 1 << (i % 64);
            valid += 1;
        }
    }
    valid
}

/// [`valid_mask`] over any row layout.
pub fn valid_mask_rows<R: Rows + ?Sized>(rows: &R, max_sat: u32, mask: &mut Vec<u64>) -> usize {
    mask.clear();
    mask.resize(super::mask_words(rows.row_count()), 0);
    let mut valid = 0;
    for i in 0..rows.row_count() {
        if is_valid(rows.sat(i), rows.flags(i), max_sat) {
            mask[i / 64] |= 1 << (i % 64);
            valid += 1;
        }
    }
    valid
}
