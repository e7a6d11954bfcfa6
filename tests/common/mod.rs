//! Shared test machinery: arbitrary streams and a reader that splits reads.
#![allow(dead_code)]

pub(crate) mod keys;
pub(crate) mod proc;

use std::io::{self, Read};

use meridian_pipeline::dedup::{StalePolicy, WindowLimits};
use meridian_pipeline::harness::gen::{capture, GenConfig};
use meridian_pipeline::wire::{encode_frame, SYNC};
use meridian_pipeline::Config;
use proptest::prelude::*;

/// A piece of an arbitrary stream.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// A well-formed frame.
    Frame {
        sat: u32,
        seq: u64,
        flags: u8,
        payload: Vec<u8>,
    },
    /// A frame with one byte after the marker flipped (CRC error or bad header).
    Damaged {
        sat: u32,
        seq: u64,
        payload: Vec<u8>,
        at: usize,
    },
    /// Random bytes.
    Garbage(Vec<u8>),
    /// A sync marker followed by random bytes.
    FalseMarker(Vec<u8>),
    /// The first `keep` bytes of a frame.
    Cut {
        sat: u32,
        seq: u64,
        payload: Vec<u8>,
        keep: usize,
    },
}

pub(crate) fn piece() -> impl Strategy<Value = Piece> {
    let payload = || prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        8 => (0u32..6, 0u64..48, prop_oneof![4 => Just(0u8), 1 => Just(0x80u8), 1 => any::<u8>()], payload())
            .prop_map(|(sat, seq, flags, payload)| Piece::Frame { sat, seq, flags, payload }),
        1 => (0u32..6, 0u64..48, payload(), 4usize..64)
            .prop_map(|(sat, seq, payload, at)| Piece::Damaged { sat, seq, payload, at }),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Piece::Garbage),
        1 => prop::collection::vec(any::<u8>(), 0..30).prop_map(Piece::FalseMarker),
        1 => (0u32..6, 0u64..48, payload(), 0usize..48)
            .prop_map(|(sat, seq, payload, keep)| Piece::Cut { sat, seq, payload, keep }),
    ]
}

pub(crate) fn encode(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Frame {
                sat,
                seq,
                flags,
                payload,
            } => encode_frame(&mut out, *sat, *seq, *flags, payload),
            Piece::Damaged {
                sat,
                seq,
                payload,
                at,
            } => {
                let start = out.len();
                encode_frame(&mut out, *sat, *seq, 0, payload);
                let i = start + at % (out.len() - start - 4) + 4;
                out[i] ^= 0x5A;
            }
            Piece::Garbage(g) => out.extend_from_slice(g),
            Piece::FalseMarker(g) => {
                out.extend_from_slice(&SYNC);
                out.extend_from_slice(g);
            }
            Piece::Cut {
                sat,
                seq,
                payload,
                keep,
            } => {
                let mut f = Vec::new();
                encode_frame(&mut f, *sat, *seq, 0, payload);
                out.extend_from_slice(&f[..(*keep).min(f.len() - 1)]);
            }
        }
    }
    out
}

pub(crate) fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..80).prop_map(|p| encode(&p))
}

pub(crate) fn config() -> impl Strategy<Value = Config> {
    (
        1usize..12,
        0u64..40,
        0u32..6,
        prop_oneof![Just(16u16), Just(4096u16)],
        any::<bool>(),
    )
        .prop_map(|(batch_size, window, max_sat, max_payload, drop)| Config {
            batch_size,
            window,
            max_sat,
            max_payload,
            stale: if drop {
                StalePolicy::Drop
            } else {
                StalePolicy::Forward
            },
            limits: WindowLimits::OFF,
        })
}

/// Hands out `data` in reads of the given sizes, cycling through them.
pub(crate) struct Chunked<'a> {
    pub data: &'a [u8],
    pub sizes: Vec<usize>,
    pub next: usize,
}

impl<'a> Chunked<'a> {
    pub(crate) fn new(data: &'a [u8], sizes: Vec<usize>) -> Chunked<'a> {
        assert!(!sizes.is_empty() && sizes.iter().all(|&s| s > 0));
        Chunked {
            data,
            sizes,
            next: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A capture damaged as a bad link would: bytes flipped (CRC errors, bad
/// headers), garbage runs, cut frames and false markers between good ones.
pub(crate) fn hostile_capture() -> Vec<u8> {
    let clean = capture(&GenConfig {
        frames: 20_000,
        invalid_rate: 0.05,
        ..GenConfig::default()
    });
    let mut rng = fastrand::Rng::with_seed(99);
    let mut out = Vec::with_capacity(clean.len() + clean.len() / 10);
    for chunk in clean.chunks(997) {
        let at = out.len();
        out.extend_from_slice(chunk);
        match rng.u8(..10) {
            0 => out[at + rng.usize(..chunk.len())] ^= 1 << rng.u8(..8),
            1 => out.extend((0..rng.usize(1..300)).map(|_| rng.u8(..))),
            2 => out.extend_from_slice(&[0x1A, 0xCF, 0xFC, 0x1D, 1, 2, 3]),
            3 => out.truncate(at + chunk.len() - rng.usize(..chunk.len().min(40))),
            _ => {}
        }
    }
    out
}
