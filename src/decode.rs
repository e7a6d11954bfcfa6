//! Stage 1: decode a byte stream into batch columns, resynchronising on the
//! sync marker after garbage.
//!
//! The rule at a sync marker found at `p` (see `wire` for the layout):
//! 1. fewer than 20 bytes from `p` to the end of the data: wait for more; at
//!    end of input count `truncated` and resume scanning at `p + 1`;
//! 2. `version != 1` or `len > max_payload`: count `bad_header`, resume at `p + 1`;
//! 3. fewer than `24 + len` bytes: wait for more; at end of input count
//!    `truncated` and resume at `p + 1`;
//! 4. CRC mismatch: count `crc_errors`, resume at `p + 1`;
//! 5. otherwise the frame is decoded and scanning resumes at `p + 24 + len`.
//!
//! Every byte not inside a decoded frame counts in `skipped_bytes`. A decision
//! at `p` depends only on the bytes `[p, p + 24 + len)` and on whether the
//! input has ended, and the decoder never decides while it is waiting for
//! more, so the result does not depend on how the stream was split into reads.

use std::io::{self, Read};

use memchr::memmem;
use serde::Serialize;

use crate::batch::{Batch, DecodeTarget, FrameHead};
use crate::crc;
use crate::wire::{self, Header, HEADER_LEN, OVERHEAD, SYNC, VERSION};

/// What the decoder has counted so far. Its fields are JSON keys of every
/// summary that includes it (`#[serde(flatten)]`): a new counter is one field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    /// Bytes consumed: `frame_bytes + skipped_bytes`.
    pub input_bytes: u64,
    /// Bytes not inside any decoded frame.
    pub skipped_bytes: u64,
    /// Frames decoded.
    pub frames_decoded: u64,
    /// Bytes of the decoded frames (not reported: `input_bytes - skipped_bytes`).
    #[serde(skip)]
    pub frame_bytes: u64,
    /// Markers followed by a wrong version or an oversized length.
    pub bad_header: u64,
    /// Markers followed by a complete frame whose CRC did not match.
    pub crc_errors: u64,
    /// Markers whose frame the input ended inside.
    pub truncated: u64,
}

impl DecodeStats {
    /// Adds `other` into `self` (several connections' decoders, one total).
    pub fn add(&mut self, other: &DecodeStats) {
        self.input_bytes += other.input_bytes;
        self.skipped_bytes += other.skipped_bytes;
        self.frames_decoded += other.frames_decoded;
        self.frame_bytes += other.frame_bytes;
        self.bad_header += other.bad_header;
        self.crc_errors += other.crc_errors;
        self.truncated += other.truncated;
    }

    /// What was counted after `earlier`, a snapshot of the same counters:
    /// the share of one `decode` call.
    pub fn since(&self, earlier: &DecodeStats) -> DecodeStats {
        DecodeStats {
            input_bytes: self.input_bytes - earlier.input_bytes,
            skipped_bytes: self.skipped_bytes - earlier.skipped_bytes,
            frames_decoded: self.frames_decoded - earlier.frames_decoded,
            frame_bytes: self.frame_bytes - earlier.frame_bytes,
            bad_header: self.bad_header - earlier.bad_header,
            crc_errors: self.crc_errors - earlier.crc_errors,
            truncated: self.truncated - earlier.truncated,
        }
    }
}

/// A streaming decoder over caller-held data.
///
/// It holds counters only, never bytes: whatever [`Decoder::decode`] did not
/// consume must be handed to it again, followed by more input. [`FrameReader`]
/// does that bookkeeping over any [`io::Read`].
#[derive(Debug, Clone)]
pub struct Decoder {
    max_payload: u16,
    finder: memmem::Finder<'static>,
    stats: DecodeStats,
    /// The CRC kernel for runs of frames, chosen for this CPU.
    crc: crc::Kernel,
    /// The current run of candidates (kept here: refilled, never rebuilt).
    run: Run,
}

/// Most frames taken as one run of candidates: enough for four rounds of the
/// four-lane CRC kernel, few enough to stay in registers and L1.
const RUN: usize = 16;

/// A run ends once it holds this many bytes.
const RUN_BYTES: usize = 2048;

/// How far ahead of the frame being read the candidate pass asks for input
/// bytes: each frame's position depends on the previous frame's length, so
/// without a hint the loads form a chain that waits on memory. 4 KiB (about
/// 45 default frames) rather than 1 KiB: with the data-parallel runner each
/// thread streams its own region, and the longer distance no longer slows
/// `--threads 2` as it did the pipelined mode (audit.md, section 13).
const PREFETCH_AHEAD: usize = 4096;

/// Frames longer than this (the four-lane CRC kernel's longest, with the
/// header and CRC) get every line prefetched, [`LONG_AHEAD`] bytes ahead.
/// Short frames keep the one prefetch per frame: for them a per-line loop
/// costs more (an unpredictable one or two steps a frame) than it saves.
const LONG_FRAME: usize = crc::MAX_LEN + OVERHEAD;
/// How far past a long frame's end its prefetches reach.
const LONG_AHEAD: usize = 4096;

/// Hints the CPU to bring `data[at]`'s cache line in (no effect past the end).
#[inline(always)]
fn prefetch(data: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if at < data.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults and reads nothing into the program;
        // `at` is in bounds anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

/// Up to [`RUN`] back-to-back candidates: frames where the rule would find
/// them if their CRCs match.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Where each frame starts in the data.
    starts: [usize; RUN],
    /// Each frame's header fields and length, as the batch takes them
    /// ([`DecodeTarget::push_run`]).
    heads: [FrameHead; RUN],
    len: usize,
}

impl Default for Run {
    fn default() -> Run {
        Run {
            starts: [0; RUN],
            heads: [FrameHead::default(); RUN],
            len: 0,
        }
    }
}

impl Run {
    /// The bytes of frame `i`.
    #[inline]
    fn frame<'d>(&self, data: &'d [u8], i: usize) -> &'d [u8] {
        &data[self.starts[i]..self.starts[i] + self.heads[i].len as usize]
    }
}

/// What one application of the rule did.
enum Step {
    /// Decided: go on from `to`.
    Moved { to: usize, skipped: u64 },
    /// Needs more input: stop at `to` for now.
    Wait { to: usize, skipped: u64 },
}

impl Decoder {
    /// A decoder that rejects payloads longer than `max_payload`.
    pub fn new(max_payload: u16) -> Decoder {
        Decoder {
            max_payload,
            finder: memmem::Finder::new(&SYNC),
            stats: DecodeStats::default(),
            crc: crc::Kernel::detect(),
            run: Run::default(),
        }
    }

    /// The largest frame this decoder can accept, in bytes.
    pub fn max_frame_len(&self) -> usize {
        OVERHEAD + self.max_payload as usize
    }

    /// The counters so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Decodes frames from the front of `data` into `batch` until `batch`
    /// holds `limit` rows or `data` is used up, and returns how many bytes of
    /// `data` it consumed.
    ///
    /// The bytes not consumed are the start of a frame (or of a marker) that
    /// needs more input: pass them again at the front of the next call. When
    /// `eof` is true `data` is the rest of the stream, and everything is
    /// consumed unless `batch` filled up first. Bytes not consumed are never
    /// more than one maximal frame.
    #[inline(never)]
    pub fn decode<S: DecodeTarget>(
        &mut self,
        data: &[u8],
        eof: bool,
        batch: &mut S,
        limit: usize,
    ) -> usize {
        let mut pos = 0usize;
        let mut skipped = 0u64;
        // Every line of `data` below this has been prefetched for a long
        // frame (see `candidates`).
        let mut fetched = 0;
        while batch.row_count() < limit {
            // Back-to-back frames are the common case: take a run of them,
            // each assumed good, and check their CRCs together.
            let room = limit - batch.row_count();
            let run = &mut self.run;
            Self::candidates(self.max_payload, data, pos, room, run, &mut fetched);
            if run.len > 0 {
                let good = Self::verify(self.crc, data, run);
                if good > 0 {
                    // The good frames lie back to back from `pos`: one copy.
                    let end = run.starts[good - 1] + run.heads[good - 1].len as usize;
                    batch.push_run(&run.heads[..good], &data[pos..end]);
                    self.stats.frames_decoded += good as u64;
                    self.stats.frame_bytes += (end - pos) as u64;
                    pos = end;
                }
                if good == run.len {
                    continue;
                }
                // A CRC mismatch at `pos`: the one-marker rule below decides
                // there (it counts the error and resumes at `pos + 1`).
                if batch.row_count() >= limit {
                    break;
                }
            }
            match self.step(data, pos, eof, batch) {
                Step::Moved { to, skipped: s } => {
                    skipped += s;
                    pos = to;
                }
                Step::Wait { to, skipped: s } => {
                    skipped += s;
                    pos = to;
                    break;
                }
            }
        }
        self.stats.skipped_bytes += skipped;
        self.stats.input_bytes += pos as u64;
        debug_assert_eq!(
            self.stats.input_bytes,
            self.stats.frame_bytes + self.stats.skipped_bytes
        );
        pos
    }

    /// The frames that start at `pos` and follow each other back to back,
    /// complete and with good headers, at most `room` and [`RUN`] of them:
    /// where the rule would put them if every CRC matched.
    #[inline]
    fn candidates(
        max_payload: u16,
        data: &[u8],
        mut pos: usize,
        room: usize,
        run: &mut Run,
        fetched: &mut usize,
    ) {
        run.len = 0;
        let mut bytes = 0;
        let most = room.min(RUN);
        while run.len < most {
            prefetch(data, pos + PREFETCH_AHEAD);
            let rest = &data[pos..];
            if rest.len() < HEADER_LEN || !rest.starts_with(&SYNC) {
                break;
            }
            let h = Header::read(rest);
            let n = h.frame_len();
            if h.version != VERSION || h.len > max_payload || rest.len() < n {
                break;
            }
            run.starts[run.len] = pos;
            run.heads[run.len] = FrameHead {
                sat: h.sat,
                seq: h.seq,
                flags: h.flags,
                len: n as u32,
            };
            if n > LONG_FRAME {
                // A long frame: one prefetch per frame covers a fraction of
                // its lines, so ask for every line up to LONG_AHEAD bytes
                // past its end, each once.
                let want = (pos + n + LONG_AHEAD).min(data.len());
                *fetched = (*fetched).max(pos + PREFETCH_AHEAD);
                while *fetched < want {
                    prefetch(data, *fetched);
                    *fetched += 64;
                }
            }
            run.len += 1;
            pos += n;
            bytes += n;
            // A run stays small enough that its frames are still in L1 when
            // they are copied into the batch after their CRC checks, and a
            // frame too long for the four-lane kernel ends it (it is checked
            // alone, as before runs existed).
            if bytes >= RUN_BYTES || n > crc::MAX_LEN + OVERHEAD {
                break;
            }
        }
    }

    /// How many of `run`'s frames, from the first, have a matching CRC. The
    /// CRCs of four frames at a time are computed together ([`crc::Kernel::crc32_4`]).
    #[inline]
    fn verify(kernel: crc::Kernel, data: &[u8], run: &Run) -> usize {
        let body = |i: usize| {
            let f = run.frame(data, i);
            &f[wire::SAT_AT..f.len() - wire::CRC_LEN]
        };
        let stored = |i: usize| wire::stored_crc(run.frame(data, i));
        let quads = run.len / 4 * 4;
        for q in (0..quads).step_by(4) {
            let crcs = kernel.crc32_4([body(q), body(q + 1), body(q + 2), body(q + 3)]);
            if let Some(bad) = (0..4).find(|&k| crcs[k] != stored(q + k)) {
                return q + bad;
            }
        }
        (quads..run.len)
            .find(|&i| crc::crc32(body(i)) != stored(i))
            .unwrap_or(run.len)
    }

    /// Applies the rule at the first marker from `pos` on (see the module
    /// documentation) and says where decoding goes on.
    fn step<S: DecodeTarget>(&mut self, data: &[u8], pos: usize, eof: bool, batch: &mut S) -> Step {
        let rest = &data[pos..];
        let p = if rest.starts_with(&SYNC) {
            pos
        } else {
            match self.finder.find(rest) {
                Some(i) => pos + i,
                None => {
                    // A marker may straddle the end: keep its first bytes.
                    let keep = if eof {
                        0
                    } else {
                        rest.len().min(SYNC.len() - 1)
                    };
                    let end = data.len() - keep;
                    return Step::Wait {
                        to: end,
                        skipped: (end - pos) as u64,
                    };
                }
            }
        };
        let skipped = (p - pos) as u64;
        let rest = &data[p..];
        // Rejecting the marker at `p`: its byte is skipped, scanning goes on after it.
        let reject = Step::Moved {
            to: p + 1,
            skipped: skipped + 1,
        };
        if rest.len() < HEADER_LEN {
            return self.incomplete(p, eof, skipped);
        }
        let h = Header::read(rest);
        if h.version != VERSION || h.len > self.max_payload {
            self.bad_header();
            return reject;
        }
        let n = h.frame_len();
        if rest.len() < n {
            return self.incomplete(p, eof, skipped);
        }
        let frame = &rest[..n];
        if wire::frame_crc(&frame[..n - wire::CRC_LEN]) != wire::stored_crc(frame) {
            self.crc_error();
            return reject;
        }
        batch.push_frame(h.sat, h.seq, h.flags, frame);
        self.stats.frames_decoded += 1;
        self.stats.frame_bytes += n as u64;
        Step::Moved { to: p + n, skipped }
    }

    /// The frame at `p` is not all there: wait for more input, or at the end
    /// of input count it truncated and skip its marker's first byte.
    fn incomplete(&mut self, p: usize, eof: bool, skipped: u64) -> Step {
        if !eof {
            return Step::Wait { to: p, skipped };
        }
        self.stats.truncated += 1;
        Step::Moved {
            to: p + 1,
            skipped: skipped + 1,
        }
    }

    #[cold]
    #[inline(never)]
    fn bad_header(&mut self) {
        self.stats.bad_header += 1;
    }

    #[cold]
    #[inline(never)]
    fn crc_error(&mut self) {
        self.stats.crc_errors += 1;
    }
}

/// Bytes asked of the reader at a time by default.
pub const DEFAULT_READ_CHUNK: usize = 256 * 1024;

/// Decodes frames from any [`io::Read`] into batches.
///
/// With [`FrameReader::fill`] its buffer is allocated once, one maximal frame
/// plus one read chunk, and never grows: whatever the input, memory stays
/// within that bound. With [`FrameReader::fill_placed`] the batch's frames
/// stay in the buffer, which then grows to hold one batch's bytes plus a
/// read chunk (the bytes a copying batch would hold in its own buffer).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Bytes asked of `inner` at a time.
    chunk: usize,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> FrameReader<R> {
    /// A reader that asks `inner` for up to `chunk` bytes at a time.
    pub fn new(inner: R, decoder: Decoder, chunk: usize) -> FrameReader<R> {
        let cap = decoder.max_frame_len() + chunk.max(1);
        FrameReader {
            inner,
            decoder,
            buf: vec![0; cap],
            chunk: chunk.max(1),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The decoder's counters so far.
    pub fn stats(&self) -> DecodeStats {
        self.decoder.stats()
    }

    /// Clears `batch` and fills it with up to `limit` frames. Returns the
    /// number of rows; 0 means the input has ended and been fully decoded.
    ///
    /// # Errors
    /// The first read error of the inner reader (after `Interrupted` retries).
    pub fn fill(&mut self, batch: &mut Batch, limit: usize) -> io::Result<usize> {
        self.fill_until(batch, limit, false)
    }

    /// Like [`FrameReader::fill`], but returns as soon as a read has yielded
    /// at least one frame instead of waiting for `limit`: a network link
    /// hands over what arrived without holding it back for more.
    ///
    /// # Errors
    /// As [`FrameReader::fill`].
    pub fn fill_some(&mut self, batch: &mut Batch, limit: usize) -> io::Result<usize> {
        self.fill_until(batch, limit, true)
    }

    /// Like [`FrameReader::fill`], but the frames are not copied into the
    /// batch: it gets their columns and their places in the reader's buffer
    /// ([`crate::batch::Placed`]). Read it as
    /// [`crate::batch::View::all`]`(batch, reader.bytes())` before
    /// the next fill, which moves the buffer's unread tail to its front.
    /// While a batch fills, earlier frames keep their places: when the
    /// buffer has no room left for a read, it grows, to at most the batch's
    /// frames plus two read chunks and a maximal frame (skipped bytes past
    /// a chunk are dropped from it).
    ///
    /// # Errors
    /// As [`FrameReader::fill`].
    pub fn fill_placed(&mut self, batch: &mut Batch, limit: usize) -> io::Result<usize> {
        batch.clear();
        // The last batch is done with: only the unread tail is kept.
        self.move_tail(0);
        loop {
            let input = &self.buf[self.start..self.end];
            let mut target = crate::batch::Placed::new(batch, input, self.start);
            self.start += self.decoder.decode(input, self.eof, &mut target, limit);
            if batch.len() >= limit || self.eof {
                return Ok(batch.len());
            }
            // Bytes between the last placed frame and `start` were skipped
            // (garbage): once they pass a chunk the unread tail moves down
            // over them, so the buffer holds the batch's frames, less than a
            // chunk of skipped bytes and the tail, however long the garbage.
            let kept = match (batch.offset.last(), batch.frame_len.last()) {
                (Some(&at), Some(&n)) => at + n as usize,
                _ => 0,
            };
            if self.start - kept >= self.chunk || batch.is_empty() {
                self.move_tail(kept);
            }
            let room = self.end + self.chunk;
            if self.buf.len() < room {
                let grown = room.max(self.buf.len().saturating_mul(2));
                self.buf.resize(grown, 0);
            }
            self.read_more()?;
        }
    }

    /// The buffer the offsets of a batch from [`FrameReader::fill_placed`] index.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Moves the unread bytes `start..end` down to `to` (at most `start`).
    fn move_tail(&mut self, to: usize) {
        self.buf.copy_within(self.start..self.end, to);
        self.end -= self.start - to;
        self.start = to;
    }

    /// One read into the buffer after `end` (retrying `Interrupted`); a read
    /// of 0 bytes marks the end of the input.
    fn read_more(&mut self) -> io::Result<()> {
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }

    fn fill_until(&mut self, batch: &mut Batch, limit: usize, any: bool) -> io::Result<usize> {
        batch.clear();
        loop {
            let used = self
                .decoder
                .decode(&self.buf[self.start..self.end], self.eof, batch, limit);
            self.start += used;
            if batch.len() >= limit || self.eof || (any && !batch.is_empty()) {
                return Ok(batch.len());
            }
            // What is left waits for more bytes; it is less than one frame.
            self.move_tail(0);
            self.read_more()?;
        }
    }
}
