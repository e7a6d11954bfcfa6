//! Naive twins of fast paths that are not part of the product: one obvious
//! line per job, for property tests and benchmarks to compare against.

use std::io::{self, Write};

use crate::batch::Rows;

/// The naive twin of [`crate::forward::write_rows`]: each frame with its own `write_all`.
///
/// # Errors
/// The first error of `out`.
pub fn write_rows_naive<R: Rows + ?Sized, W: Write + ?Sized>(
    batch: &R,
    row_ids: &[u32],
    out: &mut W,
) -> io::Result<u64> {
    let mut total = 0u64;
    for &r in row_ids {
        let frame = &batch.bytes()[batch.span(r as usize)];
        out.write_all(frame)?;
        total += frame.len() as u64;
    }
    Ok(total)
}
