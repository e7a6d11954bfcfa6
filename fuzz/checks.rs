#![allow(dead_code)] // each fuzz target uses half of these

//! The checks both fuzz targets make, shared with `tests/fuzz_corpus.rs`,
//! which replays the checked-in corpora through them on stable in
//! `cargo test`. Included with `#[path]` so it stays out of the library.

use std::io::{self, Read};

use arbitrary::Arbitrary;
use meridian_pipeline::batch::Batch;
use meridian_pipeline::decode::{Decoder, FrameReader};
use meridian_pipeline::dedup::{StalePolicy, WindowLimits};
use meridian_pipeline::harness::reference;
use meridian_pipeline::wire::{encode_frame, Header, HEADER_LEN};
use meridian_pipeline::{process_stream, BatchProcessor, Config};

/// Hands out `data` in reads of the given sizes, cycling through them.
struct Splits<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl Read for Splits<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = match self.sizes.len() {
            0 => buf.len(),
            n => usize::from(self.sizes[self.next % n]) + 1,
        };
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Decodes `data` with reads split as `sizes` says and batches of `limit`.
fn decode_split(
    data: &[u8],
    sizes: &[u8],
    limit: usize,
    max_payload: u16,
) -> (
    Vec<reference::Frame>,
    meridian_pipeline::decode::DecodeStats,
) {
    let reader = Splits {
        data,
        sizes,
        next: 0,
    };
    let mut reader = FrameReader::new(
        reader,
        Decoder::new(max_payload),
        1 + sizes.first().copied().unwrap_or(63) as usize,
    );
    let mut batch = Batch::default();
    let mut frames = Vec::new();
    while reader
        .fill(&mut batch, limit)
        .expect("reading memory cannot fail")
        > 0
    {
        for i in 0..batch.len() {
            frames.push(reference::Frame {
                sat: batch.sat[i],
                seq: batch.seq[i],
                flags: batch.flags[i],
                bytes: batch.frame(i).to_vec(),
            });
        }
    }
    (frames, reader.stats())
}

/// Arbitrary bytes into the streaming decoder. The first two bytes choose
/// the max payload and the batch limit, the next 16 the read sizes; the
/// whole input is the stream.
pub(crate) fn check_decode(data: &[u8]) {
    let max_payload = if data.first().is_some_and(|b| b & 1 == 1) {
        64
    } else {
        4096
    };
    let limit = 1 + usize::from(data.get(1).copied().unwrap_or(0) % 32);
    let sizes = &data[2.min(data.len())..18.min(data.len())];

    let mut decoder = Decoder::new(max_payload);
    let mut batch = Batch::default();
    let used = decoder.decode(data, true, &mut batch, usize::MAX);
    let stats = decoder.stats();
    assert_eq!(used, data.len(), "at end of input everything is consumed");
    assert_eq!(stats.input_bytes, data.len() as u64);
    assert_eq!(
        stats.input_bytes,
        stats.frame_bytes + stats.skipped_bytes,
        "counters add up"
    );
    assert_eq!(stats.frames_decoded, batch.len() as u64);

    let mut frames = Vec::new();
    for i in 0..batch.len() {
        let frame = batch.frame(i);
        let h = Header::read(frame);
        let mut again = Vec::new();
        encode_frame(
            &mut again,
            h.sat,
            h.seq,
            h.flags,
            &frame[HEADER_LEN..frame.len() - 4],
        );
        assert_eq!(
            again, frame,
            "a decoded frame re-encodes to its input bytes"
        );
        assert!(h.len <= max_payload);
        frames.push(reference::Frame {
            sat: batch.sat[i],
            seq: batch.seq[i],
            flags: batch.flags[i],
            bytes: frame.to_vec(),
        });
    }

    let (split, split_stats) = decode_split(data, sizes, limit, max_payload);
    assert_eq!(split, frames, "split reads give the same frames");
    assert_eq!(split_stats, stats, "split reads give the same counters");

    let (naive, naive_stats) = reference::decode_all(data, max_payload);
    assert_eq!(naive, frames, "the naive decoder agrees");
    assert_eq!(naive_stats, stats);
}

/// One frame of a fuzzed stream; small ranges so copies, windows and stale
/// keys happen often.
#[derive(Debug, Arbitrary)]
pub(crate) struct FuzzFrame {
    sat: u8,
    seq: u16,
    flags: u8,
    payload_len: u8,
    /// Garbage bytes to put before the frame.
    garbage: Vec<u8>,
}

/// Arbitrary frames and options for the whole pipeline.
#[derive(Debug, Arbitrary)]
pub(crate) struct PipelineInput {
    frames: Vec<FuzzFrame>,
    batch_size: u8,
    window: u16,
    max_sat: u8,
    drop_stale: bool,
    split: Vec<u8>,
}

/// Encoded stream -> pipeline; the output equals the reference model's,
/// counters add up, and each batch's forwarded frames ascend by (sat, seq).
pub(crate) fn check_pipeline(input: &PipelineInput) -> u64 {
    let mut stream = Vec::new();
    for f in &input.frames {
        stream.extend_from_slice(&f.garbage);
        let payload: Vec<u8> = (0..f.payload_len).map(|i| i ^ f.flags).collect();
        encode_frame(
            &mut stream,
            u32::from(f.sat % 16),
            u64::from(f.seq % 512),
            f.flags,
            &payload,
        );
    }
    let cfg = Config {
        batch_size: 1 + usize::from(input.batch_size % 64),
        window: u64::from(input.window % 300),
        max_sat: u32::from(input.max_sat % 16),
        max_payload: 4096,
        stale: if input.drop_stale {
            StalePolicy::Drop
        } else {
            StalePolicy::Forward
        },
        limits: WindowLimits::OFF,
    };
    let (want, want_summary, _) = reference::run(&stream, &cfg);
    let mut got = Vec::new();
    let reader = Splits {
        data: &stream,
        sizes: &input.split,
        next: 0,
    };
    let summary = process_stream(reader, &mut got, cfg).expect("in-memory streams cannot fail");
    assert!(
        got == want,
        "forwarded bytes differ from the reference model"
    );
    assert_eq!(summary, want_summary);
    let dropped_stale = if cfg.stale == StalePolicy::Drop {
        summary.pipeline.stale
    } else {
        0
    };
    assert_eq!(
        summary.decode.frames_decoded,
        summary.pipeline.invalid
            + summary.pipeline.duplicates
            + summary.pipeline.forwarded
            + dropped_stale
    );
    // The pipeline's own batches, each decoded back: every batch ascends by
    // (sat, seq), and together they are the stream it forwarded.
    let mut reader = FrameReader::new(
        Splits {
            data: &stream,
            sizes: &input.split,
            next: 0,
        },
        Decoder::new(cfg.max_payload),
        64,
    );
    let mut stages = BatchProcessor::new(cfg);
    let (mut batch, mut out, mut all) = (Batch::default(), Vec::new(), Vec::new());
    while reader.fill(&mut batch, cfg.batch_size).expect("in memory") > 0 {
        out.clear();
        stages
            .process(&batch, &mut out, &mut ())
            .expect("in memory");
        let mut forwarded = Batch::default();
        Decoder::new(u16::MAX).decode(&out, true, &mut forwarded, usize::MAX);
        assert!(
            forwarded
                .sat
                .iter()
                .zip(&forwarded.seq)
                .collect::<Vec<_>>()
                .windows(2)
                .all(|w| w[0] < w[1]),
            "a batch is not sorted"
        );
        all.extend_from_slice(&out);
    }
    assert!(all == got, "batch by batch differs from process_stream");
    summary.decode.frames_decoded
}
