//! Stage 4: forward. The rows to forward arrive as an index list in
//! ascending (sat, seq) order; their bytes go out unchanged with vectored
//! writes, one `IoSlice` per run of rows that lie back to back in the batch
//! buffer (a run is often the whole batch when the input was already in
//! order), at most [`SLICES`] slices per call, all on the stack.

use std::io::{self, IoSlice, Write};

use crate::batch::Rows;

/// `IoSlice`s handed to one `write_vectored` call. Linux accepts up to 1024
/// (`UIO_MAXIOV`); 64 keeps the array small and already amortises the call.
pub const SLICES: usize = 64;

/// Writes the frames of the rows `row_ids` of `batch`, in that order, to
/// `out`. Returns the number of bytes written.
///
/// # Errors
/// The first error of `out` (after `Interrupted` retries), or `WriteZero`
/// when it accepts nothing; what it accepted before stays written.
#[inline(never)]
pub fn write_rows<R: Rows + ?Sized, W: Write + ?Sized>(
    batch: &R,
    row_ids: &[u32],
    out: &mut W,
) -> io::Result<u64> {
    let mut slices = [IoSlice::new(&[]); SLICES];
    let mut used = 0;
    let mut total = 0u64;
    let mut run: Option<(usize, usize)> = None;
    for &r in row_ids {
        let span = batch.span(r as usize);
        let (start, end) = (span.start, span.end);
        total += (end - start) as u64;
        run = match run {
            Some((s, e)) if e == start => Some((s, end)),
            Some((s, e)) => {
                slices[used] = IoSlice::new(&batch.bytes()[s..e]);
                used += 1;
                if used == SLICES {
                    write_all_vectored(out, &mut slices[..used])?;
                    used = 0;
                }
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = run {
        slices[used] = IoSlice::new(&batch.bytes()[s..e]);
        used += 1;
    }
    write_all_vectored(out, &mut slices[..used])?;
    Ok(total)
}

/// `Write::write_all_vectored`, which is not stable yet.
fn write_all_vectored<W: Write + ?Sized>(
    out: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole frames",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
