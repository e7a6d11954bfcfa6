//! Frame keys for end-to-end tests: what a stream or file holds, and what
//! `gen` sends that the pipeline must deliver.

use std::collections::HashSet;

use meridian_pipeline::batch::Batch;
use meridian_pipeline::decode::Decoder;
use meridian_pipeline::harness::gen::{station_streams, GenConfig};
use meridian_pipeline::pipeline::DEFAULT_MAX_SAT;
use meridian_pipeline::wire::{DEFAULT_MAX_PAYLOAD, FLAG_CORRUPT};

/// A frame's (sat, seq).
pub(crate) type Key = (u32, u64);

/// Every frame's key in `bytes`, in order, and the bytes outside frames.
pub(crate) fn decode_keys(bytes: &[u8]) -> (Vec<Key>, u64) {
    let mut d = Decoder::new(u16::MAX);
    let mut b = Batch::default();
    d.decode(bytes, true, &mut b, usize::MAX);
    let keys = b.sat.iter().copied().zip(b.seq.iter().copied()).collect();
    (keys, d.stats().skipped_bytes)
}

/// The valid unique keys `gen` sends for `cfg`, as the default pipeline
/// options judge them: what must arrive downstream, each once.
pub(crate) fn valid_keys(cfg: &GenConfig) -> HashSet<Key> {
    let mut want = HashSet::new();
    for s in station_streams(cfg) {
        let mut d = Decoder::new(DEFAULT_MAX_PAYLOAD);
        let mut b = Batch::default();
        d.decode(&s.bytes, true, &mut b, usize::MAX);
        for i in 0..b.len() {
            if b.flags[i] & FLAG_CORRUPT == 0 && b.sat[i] <= DEFAULT_MAX_SAT {
                want.insert((b.sat[i], b.seq[i]));
            }
        }
    }
    want
}
