//! The batch: struct-of-arrays columns over one reusable byte buffer.
//!
//! Row `i` of a batch is the `i`-th decoded frame in stream order. Its bytes
//! are `buf[offset[i] .. offset[i] + frame_len[i]]` (the whole frame, sync marker to
//! CRC), and `sat[i]`, `seq[i]`, `flags[i]` are copied out of its header so
//! the stages after decode never touch the bytes again.
//!
//! A batch is cleared, not dropped, between uses: once its columns and buffer
//! have grown to the largest batch seen, decoding into it allocates nothing.
//!
//! A batch can also leave the frames where the decoder found them: decoding
//! through [`Placed`] fills only the columns, with `offset` indexing the
//! decoder's input buffer, and [`View`] reads the batch with that buffer.
//! `process` (through `FrameReader::fill_placed`) and `run` work this way,
//! so each frame's bytes are copied once, into the output.

use std::ops::Range;

/// Read access to the rows of a decoded batch, whatever its layout.
///
/// The stage algorithms (dedup, window, forward) are written once over this
/// trait and monomorphised for each layout, so the columnar [`Batch`] and the
/// array-of-structs layout of the benchmarks run the very same code, and the
/// comparison between them shows the layout alone.
pub trait Rows {
    /// Number of rows.
    fn row_count(&self) -> usize;
    /// Satellite id of row `i`.
    fn sat(&self, i: usize) -> u32;
    /// Sequence number of row `i`.
    fn seq(&self, i: usize) -> u64;
    /// Station flags of row `i`.
    fn flags(&self, i: usize) -> u8;
    /// Where row `i`'s frame lies in [`Rows::bytes`].
    fn span(&self, i: usize) -> Range<usize>;
    /// The buffer the spans index.
    fn bytes(&self) -> &[u8];
    /// The `sat` and `flags` columns, when the layout keeps them as columns:
    /// validation then takes the SIMD path (see [`crate::validate::valid_mask`]).
    #[inline]
    fn columns(&self) -> Option<(&[u32], &[u8])> {
        None
    }
    /// The `sat` and `seq` columns, when the layout keeps them as columns:
    /// dedup then copies runs of valid rows as slices.
    #[inline]
    fn key_columns(&self) -> Option<(&[u32], &[u64])> {
        None
    }
}

/// The header fields of one frame of a run ([`DecodeTarget::push_run`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Satellite id.
    pub sat: u32,
    /// Sequence number.
    pub seq: u64,
    /// Station flags.
    pub flags: u8,
    /// Bytes of the whole frame, marker to CRC.
    pub len: u32,
}

/// Where a decoder puts frames: the batch being filled, whatever its layout.
pub trait DecodeTarget {
    /// Rows held so far.
    fn row_count(&self) -> usize;
    /// Appends one frame: its header fields and its whole bytes.
    fn push_frame(&mut self, sat: u32, seq: u64, flags: u8, frame: &[u8]);
    /// Appends frames that lie back to back in `bytes`, in order: the `k`-th
    /// is `heads[k]`, and their lengths add up to `bytes.len()`. The default
    /// pushes them one by one; a layout that keeps the bytes together copies
    /// them at once.
    #[inline]
    fn push_run(&mut self, heads: &[FrameHead], bytes: &[u8]) {
        let mut at = 0;
        for h in heads {
            let n = h.len as usize;
            self.push_frame(h.sat, h.seq, h.flags, &bytes[at..at + n]);
            at += n;
        }
        debug_assert_eq!(at, bytes.len());
    }
}

/// One batch of decoded frames in columns.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Satellite id of each row.
    pub sat: Vec<u32>,
    /// Sequence number of each row.
    pub seq: Vec<u64>,
    /// Station flags of each row.
    pub flags: Vec<u8>,
    /// Where each row's frame starts in `buf`.
    pub offset: Vec<usize>,
    /// Length of each row's whole frame in `buf`, marker to CRC.
    pub frame_len: Vec<u32>,
    /// The frames' bytes, back to back in stream order.
    pub buf: Vec<u8>,
}

impl Batch {
    /// An empty batch with room for `rows` frames of about `frame_bytes` each.
    pub fn with_capacity(rows: usize, frame_bytes: usize) -> Batch {
        Batch {
            sat: Vec::with_capacity(rows),
            seq: Vec::with_capacity(rows),
            flags: Vec::with_capacity(rows),
            offset: Vec::with_capacity(rows),
            frame_len: Vec::with_capacity(rows),
            buf: Vec::with_capacity(rows.saturating_mul(frame_bytes)),
        }
    }

    /// Number of rows.
    #[inline]
    pub fn len(&self) -> usize {
        debug_assert!(self.columns_agree());
        self.sat.len()
    }

    /// True when the batch holds no rows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every row, keeping all capacity.
    #[inline]
    pub fn clear(&mut self) {
        self.sat.clear();
        self.seq.clear();
        self.flags.clear();
        self.offset.clear();
        self.frame_len.clear();
        self.buf.clear();
    }

    /// Appends one frame: its header fields and its whole bytes.
    #[inline]
    pub fn push(&mut self, sat: u32, seq: u64, flags: u8, frame: &[u8]) {
        self.push_placed(sat, seq, flags, self.buf.len(), frame.len() as u32);
        self.buf.extend_from_slice(frame);
    }

    /// Appends one frame's columns only: its bytes stay at `at .. at + len`
    /// of a buffer kept elsewhere (see [`Placed`] and [`View`]).
    #[inline]
    pub fn push_placed(&mut self, sat: u32, seq: u64, flags: u8, at: usize, len: u32) {
        self.sat.push(sat);
        self.seq.push(seq);
        self.flags.push(flags);
        self.offset.push(at);
        self.frame_len.push(len);
    }

    /// Appends the columns of frames that lie back to back from `at` of the
    /// buffer the offsets index, the `k`-th being `heads[k]`; returns where
    /// the last one ends.
    #[inline]
    fn extend_columns(&mut self, heads: &[FrameHead], mut at: usize) -> usize {
        self.sat.extend(heads.iter().map(|h| h.sat));
        self.seq.extend(heads.iter().map(|h| h.seq));
        self.flags.extend(heads.iter().map(|h| h.flags));
        self.frame_len.extend(heads.iter().map(|h| h.len));
        self.offset.extend(heads.iter().map(|h| {
            let start = at;
            at += h.len as usize;
            start
        }));
        at
    }

    /// Appends the columns of `from`'s rows `rows`, offsets unchanged: for
    /// batches filled through [`Placed`] over the same buffer (the bytes are
    /// not copied; `buf` is left alone).
    pub fn extend_rows(&mut self, from: &Batch, rows: Range<usize>) {
        self.sat.extend_from_slice(&from.sat[rows.clone()]);
        self.seq.extend_from_slice(&from.seq[rows.clone()]);
        self.flags.extend_from_slice(&from.flags[rows.clone()]);
        self.offset.extend_from_slice(&from.offset[rows.clone()]);
        self.frame_len.extend_from_slice(&from.frame_len[rows]);
    }

    /// The whole wire bytes of row `i`.
    #[inline]
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.buf[Rows::span(self, i)]
    }

    fn columns_agree(&self) -> bool {
        let n = self.sat.len();
        self.seq.len() == n
            && self.flags.len() == n
            && self.offset.len() == n
            && self.frame_len.len() == n
    }
}

impl Rows for Batch {
    #[inline]
    fn row_count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn columns(&self) -> Option<(&[u32], &[u8])> {
        Some((&self.sat, &self.flags))
    }
    #[inline]
    fn key_columns(&self) -> Option<(&[u32], &[u64])> {
        Some((&self.sat, &self.seq))
    }
    #[inline]
    fn sat(&self, i: usize) -> u32 {
        self.sat[i]
    }
    #[inline]
    fn seq(&self, i: usize) -> u64 {
        self.seq[i]
    }
    #[inline]
    fn flags(&self, i: usize) -> u8 {
        self.flags[i]
    }
    #[inline]
    fn span(&self, i: usize) -> Range<usize> {
        let start = self.offset[i];
        start..start + self.frame_len[i] as usize
    }
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl DecodeTarget for Batch {
    #[inline]
    fn row_count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn push_frame(&mut self, sat: u32, seq: u64, flags: u8, frame: &[u8]) {
        self.push(sat, seq, flags, frame);
    }
    /// One copy of the run's bytes, and each column extended once.
    #[inline]
    fn push_run(&mut self, heads: &[FrameHead], bytes: &[u8]) {
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let end = self.extend_columns(heads, at);
        debug_assert_eq!(end, self.buf.len());
    }
}

/// A [`DecodeTarget`] that fills a batch's columns and records where each
/// frame lies in the input instead of copying it: the frames stay in the
/// buffer the decoder read, and the batch's `buf` stays empty. Read the
/// batch through [`View`] with that buffer, which must not change until
/// the batch has been processed.
///
/// This is the batch borrowing the read buffer: the decoder's one copy of
/// each frame's bytes (a memcpy of everything decoded) is gone, and with
/// `--threads` the processing thread reads frames from the input, which no
/// thread writes, instead of from a batch the decoding thread just wrote.
#[derive(Debug)]
pub struct Placed<'b> {
    batch: &'b mut Batch,
    /// Address of the first byte of the input being decoded.
    origin: usize,
    /// Length of that input.
    len: usize,
    /// Index of the input's first byte in the buffer the offsets index.
    base: usize,
}

impl<'b> Placed<'b> {
    /// Decodes into `batch`'s columns; `input` is the slice handed to
    /// [`crate::decode::Decoder::decode`] and starts at index `base` of the
    /// buffer the recorded offsets will index.
    pub fn new(batch: &'b mut Batch, input: &[u8], base: usize) -> Placed<'b> {
        Placed {
            batch,
            origin: input.as_ptr() as usize,
            len: input.len(),
            base,
        }
    }

    /// Where `bytes`, a slice of the input, starts in the indexed buffer.
    #[inline]
    fn at(&self, bytes: &[u8]) -> usize {
        let rel = (bytes.as_ptr() as usize).wrapping_sub(self.origin);
        assert!(
            rel <= self.len && bytes.len() <= self.len - rel,
            "a decoded frame lies in the decoder's input"
        );
        self.base + rel
    }
}

impl DecodeTarget for Placed<'_> {
    #[inline]
    fn row_count(&self) -> usize {
        self.batch.len()
    }
    #[inline]
    fn push_frame(&mut self, sat: u32, seq: u64, flags: u8, frame: &[u8]) {
        let at = self.at(frame);
        self.batch
            .push_placed(sat, seq, flags, at, frame.len() as u32);
    }
    /// Each column extended once; no bytes copied.
    #[inline]
    fn push_run(&mut self, heads: &[FrameHead], bytes: &[u8]) {
        let at = self.at(bytes);
        let end = self.batch.extend_columns(heads, at);
        debug_assert_eq!(end, at + bytes.len());
    }
}

/// Rows of a batch filled through [`Placed`], read with the buffer its
/// offsets index: the whole batch ([`View::all`]: `process`, `run`), or a
/// batch cut out of a larger one without copying its columns (the
/// data-parallel runner decodes a region per thread and cuts the regions
/// into batches afterwards).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    sat: &'a [u32],
    seq: &'a [u64],
    flags: &'a [u8],
    offset: &'a [usize],
    frame_len: &'a [u32],
    bytes: &'a [u8],
}

impl<'a> View<'a> {
    /// Rows `rows` of `batch`, whose frames lie in `bytes`.
    pub fn new(batch: &'a Batch, rows: Range<usize>, bytes: &'a [u8]) -> View<'a> {
        View {
            sat: &batch.sat[rows.clone()],
            seq: &batch.seq[rows.clone()],
            flags: &batch.flags[rows.clone()],
            offset: &batch.offset[rows.clone()],
            frame_len: &batch.frame_len[rows],
            bytes,
        }
    }

    /// Every row of `batch`, whose frames lie in `bytes`.
    pub fn all(batch: &'a Batch, bytes: &'a [u8]) -> View<'a> {
        View::new(batch, 0..batch.len(), bytes)
    }

    /// The whole wire bytes of row `i`.
    #[inline]
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.bytes[self.span(i)]
    }
}

impl Rows for View<'_> {
    #[inline]
    fn row_count(&self) -> usize {
        self.sat.len()
    }
    #[inline]
    fn columns(&self) -> Option<(&[u32], &[u8])> {
        Some((self.sat, self.flags))
    }
    #[inline]
    fn key_columns(&self) -> Option<(&[u32], &[u64])> {
        Some((self.sat, self.seq))
    }
    #[inline]
    fn sat(&self, i: usize) -> u32 {
        self.sat[i]
    }
    #[inline]
    fn seq(&self, i: usize) -> u64 {
        self.seq[i]
    }
    #[inline]
    fn flags(&self, i: usize) -> u8 {
        self.flags[i]
    }
    #[inline]
    fn span(&self, i: usize) -> Range<usize> {
        let start = self.offset[i];
        start..start + self.frame_len[i] as usize
    }
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}
