//! Property tests: every fast path against its naive twin.

mod common;

use common::{config, stream, Chunked};
use meridian_pipeline::batch::{Batch, InPlace};
use meridian_pipeline::decode::{Decoder, FrameReader};
use meridian_pipeline::dedup::naive::NaiveDedup;
use meridian_pipeline::dedup::sort_unique::{Packing, SortUnique};
use meridian_pipeline::dedup::{Dedup, DedupCounts, StalePolicy, WindowLimits};
use meridian_pipeline::harness::reference;
use meridian_pipeline::validate::{scalar, set_bits, simd};
use meridian_pipeline::{process_stream, Config};
use proptest::prelude::*;

/// Decodes `data` through a FrameReader with the given read sizes and batch
/// limit; returns every frame as (sat, seq, flags, bytes) and the counters.
fn decode_split(
    data: &[u8],
    sizes: Vec<usize>,
    limit: usize,
    max_payload: u16,
) -> (
    Vec<reference::Frame>,
    meridian_pipeline::decode::DecodeStats,
) {
    let mut reader = FrameReader::new(Chunked::new(data, sizes), Decoder::new(max_payload), 7);
    let mut batch = Batch::default();
    let mut frames = Vec::new();
    while reader.fill(&mut batch, limit).unwrap() > 0 {
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

/// [`decode_split`] through [`FrameReader::fill_placed`]: the frames read
/// from the reader's buffer through each batch's offsets.
fn decode_split_placed(
    data: &[u8],
    sizes: Vec<usize>,
    limit: usize,
    max_payload: u16,
) -> (
    Vec<reference::Frame>,
    meridian_pipeline::decode::DecodeStats,
) {
    let mut reader = FrameReader::new(Chunked::new(data, sizes), Decoder::new(max_payload), 7);
    let mut batch = Batch::default();
    let mut frames = Vec::new();
    while reader.fill_placed(&mut batch, limit).unwrap() > 0 {
        assert!(batch.buf.is_empty(), "placed frames are not copied");
        let rows = InPlace {
            batch: &batch,
            bytes: reader.bytes(),
        };
        for i in 0..batch.len() {
            frames.push(reference::Frame {
                sat: batch.sat[i],
                seq: batch.seq[i],
                flags: batch.flags[i],
                bytes: rows.frame(i).to_vec(),
            });
        }
    }
    (frames, reader.stats())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Batches that keep their frames in the reader's buffer hold the
    /// reference's frames and counters however the stream is split, as the
    /// copying reader does.
    #[test]
    fn placed_decode_matches_reference(
        data in stream(),
        sizes in prop::collection::vec(1usize..64, 1..8),
        limit in 1usize..20,
        max_payload in prop_oneof![Just(16u16), Just(4096u16)],
    ) {
        let (want, want_stats) = reference::decode_all(&data, max_payload);
        let (got, got_stats) = decode_split_placed(&data, sizes, limit, max_payload);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(got_stats, want_stats);
    }

    /// Decoding gives the reference's frames and counters however the stream
    /// is split into reads and batches.
    #[test]
    fn decode_is_split_independent(
        data in stream(),
        sizes in prop::collection::vec(1usize..64, 1..8),
        limit in 1usize..20,
        max_payload in prop_oneof![Just(16u16), Just(4096u16)],
    ) {
        let (want, want_stats) = reference::decode_all(&data, max_payload);
        let (whole, whole_stats) = decode_split(&data, vec![data.len().max(1)], usize::MAX, max_payload);
        let (split, split_stats) = decode_split(&data, sizes, limit, max_payload);
        prop_assert_eq!(&whole, &want);
        prop_assert_eq!(whole_stats, want_stats);
        prop_assert_eq!(&split, &want);
        prop_assert_eq!(split_stats, want_stats);
        prop_assert_eq!(want_stats.input_bytes, data.len() as u64);
        prop_assert_eq!(want_stats.input_bytes, want_stats.frame_bytes + want_stats.skipped_bytes);
    }

    /// In-batch dedup gives the first copy of each (sat, seq), in (sat, seq)
    /// order, through the direct table and through the radix sort alike.
    #[test]
    fn sort_unique_layouts_match_naive(
        rows in prop::collection::vec((prop_oneof![6 => 0u32..5, 1 => 0u32..10_000], prop_oneof![4 => 0u64..40, 4 => 0u64..2000, 2 => 0u64..100_000, 1 => any::<u64>()], prop::bool::weighted(0.9)), 0..300),
    ) {
        let mut batch = Batch::default();
        let mut mask = vec![0u64; rows.len().div_ceil(64)];
        let mut want: Vec<(u32, u64, u32)> = Vec::new();
        for (i, &(sat, seq, ok)) in rows.iter().enumerate() {
            batch.push(sat, seq, 0, &[]);
            if ok {
                mask[i / 64] |= 1 << (i % 64);
                if !want.iter().any(|&(s, q, _)| (s, q) == (sat, seq)) {
                    want.push((sat, seq, i as u32));
                }
            }
        }
        want.sort();
        let want: Vec<u32> = want.into_iter().map(|(_, _, r)| r).collect();
        for radix_only in [false, true] {
            let mut s = if radix_only { SortUnique::radix_only() } else { SortUnique::default() };
            let mut got = Vec::new();
            let dropped = s.run(&batch, &mask, &mut got);
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(dropped, (set_bits(&mask).count() - want.len()) as u64);
            // Run again on the same scratch: the table was left empty.
            s.run(&batch, &mask, &mut got);
            prop_assert_eq!(&got, &want);
        }
    }

    /// The whole pipeline forwards the reference model's bytes and counts.
    #[test]
    fn pipeline_matches_reference(
        data in stream(),
        cfg in config(),
        sizes in prop::collection::vec(1usize..100, 1..6),
    ) {
        let (want, want_summary, _) = reference::run(&data, &cfg);
        let mut out = Vec::new();
        let got = process_stream(Chunked::new(&data, sizes), &mut out, cfg).unwrap();
        prop_assert_eq!(&out, &want);
        prop_assert_eq!(got, want_summary);
        let dropped_stale = if cfg.stale == StalePolicy::Drop { got.pipeline.stale } else { 0 };
        prop_assert_eq!(got.decode.frames_decoded, got.pipeline.invalid + got.pipeline.duplicates + got.pipeline.forwarded + dropped_stale);
    }

    /// SIMD validation agrees with the scalar rule at every length around the
    /// 64-row step and on random columns.
    #[test]
    fn validate_simd_matches_scalar(
        rows in prop::collection::vec((prop_oneof![0u32..8, any::<u32>()], any::<u8>()), 0..200),
        max_sat in prop_oneof![Just(0u32), Just(4u32), Just(u32::MAX), any::<u32>()],
    ) {
        let (sat, flags): (Vec<u32>, Vec<u8>) = rows.into_iter().unzip();
        let (mut a, mut b) = (vec![7u64; 9], Vec::new());
        let na = simd::valid_mask(&sat, &flags, max_sat, &mut a);
        let nb = scalar::valid_mask(&sat, &flags, max_sat, &mut b);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(na, nb);
        prop_assert_eq!(set_bits(&a).count(), na);
    }

    /// Sort-and-unique dedup with the ring window agrees with the HashSet and
    /// BTreeMap twin over a run of batches, in both key packings.
    #[test]
    fn dedup_matches_naive(
        batches in prop::collection::vec(
            prop::collection::vec((prop_oneof![6 => 0u32..5, 1 => 0u32..10_000], prop_oneof![8 => 0u64..300, 1 => any::<u64>()], prop::bool::weighted(0.9)), 0..70),
            1..8),
        width in prop_oneof![0u64..4, 4u64..100, Just(64u64), Just(65u64)],
        drop in any::<bool>(),
        base in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let stale = if drop { StalePolicy::Drop } else { StalePolicy::Forward };
        let mut fast = Dedup::new(width, stale, WindowLimits::OFF);
        let mut naive = NaiveDedup::new(width, stale, WindowLimits::OFF);
        let mut forward = Vec::new();
        for (k, rows) in batches.iter().enumerate() {
            let mut batch = Batch::default();
            let mut mask = vec![0u64; rows.len().div_ceil(64)];
            let mut valid = Vec::new();
            // Sequence numbers climb from batch to batch so the window moves.
            for (i, &(sat, seq, ok)) in rows.iter().enumerate() {
                let seq = base.wrapping_add(seq).wrapping_add(k as u64 * 40);
                batch.push(sat, seq, 0, &[]);
                if ok {
                    mask[i / 64] |= 1 << (i % 64);
                    valid.push((i as u32, sat, seq));
                }
            }
            let got: DedupCounts = fast.run(&batch, &mask, &mut forward);
            let (want_rows, want) = naive.run(&valid);
            prop_assert_eq!(&forward, &want_rows);
            prop_assert_eq!(got, want);
        }
    }

    /// The word-at-a-time window on the direct table agrees with the twin:
    /// batches built so the direct layout is always taken, seqs around the
    /// ring's word boundaries and wrapping, windows from 0 to past one word.
    #[test]
    fn direct_window_matches_naive(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..6, prop_oneof![4 => 0u64..130, 1 => 0u64..600], prop::bool::weighted(0.9)), 1..90),
            1..10),
        width in prop_oneof![0u64..3, Just(63u64), Just(64u64), Just(65u64), 100u64..300, Just(65_536u64)],
        drop in any::<bool>(),
        base in prop_oneof![Just(0u64), Just(u64::MAX - 20_000), any::<u64>().prop_map(|b| b >> 1)],
        climb in prop_oneof![Just(0u64), 1u64..64, Just(64u64), 100u64..1000],
    ) {
        let stale = if drop { StalePolicy::Drop } else { StalePolicy::Forward };
        let mut fast = Dedup::new(width, stale, WindowLimits::OFF);
        let mut naive = NaiveDedup::new(width, stale, WindowLimits::OFF);
        let mut forward = Vec::new();
        for (k, rows) in batches.iter().enumerate() {
            let mut batch = Batch::default();
            let mut mask = vec![0u64; rows.len().div_ceil(64)];
            let mut valid = Vec::new();
            for (i, &(sat, seq, ok)) in rows.iter().enumerate() {
                let seq = base + seq + k as u64 * climb;
                batch.push(sat, seq, 0, &[]);
                if ok {
                    mask[i / 64] |= 1 << (i % 64);
                    valid.push((i as u32, sat, seq));
                }
            }
            let got = fast.run(&batch, &mask, &mut forward);
            if !valid.is_empty() {
                let direct = matches!(fast.last_packing(), Some(Packing::Direct { .. }));
                prop_assert!(direct, "batch {} took {:?}", k, fast.last_packing());
            }
            let (want_rows, want) = naive.run(&valid);
            prop_assert_eq!(&forward, &want_rows);
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn packing_is_direct_or_radix_for_real_batches_and_wide_when_seqs_spread() {
    let packing_in = |radix_only: bool, sats: [u32; 4], seqs: [u64; 4]| {
        let mut b = Batch::default();
        for (sat, seq) in sats.into_iter().zip(seqs) {
            b.push(sat, seq, 0, &[]);
        }
        let mut s = if radix_only {
            SortUnique::radix_only()
        } else {
            SortUnique::default()
        };
        s.run(&b, &[0b1111u64], &mut Vec::new());
        s.last_packing.unwrap()
    };
    let packing_of = |sats, seqs| packing_in(true, sats, seqs);
    // Sat 3 spans 2 seqs in one word, sat 7 and 4095 one each: 3 words of 64 slots.
    assert_eq!(
        packing_in(false, [3, 7, 3, 4095], [1_000_000, 77, 1_000_001, 5]),
        Packing::Direct { slots: 192 }
    );
    // Sat 3's seqs 10,000 apart need more than 32 slots per row plus 4096.
    assert_eq!(
        packing_in(false, [3, 7, 3, 4095], [1_000_000, 77, 1_010_000, 5]),
        Packing::Radix {
            key_bits: 12 + 14,
            seq_bits: 14,
            per_sat_base: true
        }
    );
    // Per-satellite bases: sat 3 spans 2 seqs, sat 7 one, sats span 4092 ids.
    assert_eq!(
        packing_of([3, 7, 3, 4095], [1_000_000, 77, 1_000_001, 5]),
        Packing::Radix {
            key_bits: 12 + 1,
            seq_bits: 1,
            per_sat_base: true
        }
    );
    // Sats too spread for the table: one base for the batch.
    assert_eq!(
        packing_of([0, 100_000, 0, 0], [10, 12, 11, 10]),
        Packing::Radix {
            key_bits: 17 + 2,
            seq_bits: 2,
            per_sat_base: false
        }
    );
    assert_eq!(
        packing_of([3, 7, 3, 4095], [0, 7, u64::MAX, 6]),
        Packing::Wide
    );
}

#[test]
fn validate_masks_every_length_to_three_steps() {
    // Lengths 0..=192 with corrupt and out-of-range rows at every position.
    for n in 0..=192usize {
        let sat: Vec<u32> = (0..n as u32)
            .map(|i| if i % 5 == 0 { 4096 + i } else { i % 4096 })
            .collect();
        let flags: Vec<u8> = (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    0x80 | i as u8
                } else {
                    i as u8 & 0x7F
                }
            })
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(
            simd::valid_mask(&sat, &flags, 4095, &mut a),
            scalar::valid_mask(&sat, &flags, 4095, &mut b)
        );
        assert_eq!(a, b, "length {n}");
    }
}

#[test]
fn first_copy_wins_even_when_bytes_differ() {
    use meridian_pipeline::wire::encode_frame;
    let mut data = Vec::new();
    encode_frame(&mut data, 1, 10, 0, b"first");
    encode_frame(&mut data, 1, 10, 0x80, b"corrupt copy");
    encode_frame(&mut data, 1, 10, 0, b"second");
    let mut out = Vec::new();
    let s = process_stream(&data[..], &mut out, Config::default()).unwrap();
    let mut want = Vec::new();
    encode_frame(&mut want, 1, 10, 0, b"first");
    assert_eq!(out, want);
    assert_eq!(
        (
            s.pipeline.invalid,
            s.pipeline.duplicates,
            s.pipeline.forwarded
        ),
        (1, 1, 1)
    );
}

#[test]
fn invalid_copy_does_not_suppress_a_valid_one() {
    use meridian_pipeline::wire::encode_frame;
    let mut data = Vec::new();
    encode_frame(&mut data, 1, 10, 0x80, b"corrupt first");
    encode_frame(&mut data, 1, 10, 0, b"good");
    let mut out = Vec::new();
    let s = process_stream(&data[..], &mut out, Config::default()).unwrap();
    let mut want = Vec::new();
    encode_frame(&mut want, 1, 10, 0, b"good");
    assert_eq!(out, want);
    assert_eq!(
        (
            s.pipeline.invalid,
            s.pipeline.duplicates,
            s.pipeline.forwarded
        ),
        (1, 0, 1)
    );
}
