//! Property tests: every fast path against its naive twin.

mod common;

use common::{config, stream, Chunked};
use meridian_pipeline::batch::{Batch, Rows, View};
use meridian_pipeline::decode::{Decoder, FrameReader};
use meridian_pipeline::dedup::naive::NaiveDedup;
use meridian_pipeline::dedup::sort_unique::{Packing, SortUnique};
use meridian_pipeline::dedup::{Dedup, StalePolicy, WindowLimits};
use meridian_pipeline::harness::reference;
use meridian_pipeline::validate::{scalar, set_bits, simd};
use meridian_pipeline::{process_stream, Config};
use proptest::prelude::*;

/// Decodes `data` through a FrameReader with the given read sizes and batch
/// limit, copying frames into the batch (`fill`) or leaving them in the
/// reader's buffer (`fill_placed`, `placed`); returns every frame as (sat,
/// seq, flags, bytes) and the counters.
fn decode_split(
    data: &[u8],
    sizes: Vec<usize>,
    limit: usize,
    max_payload: u16,
    placed: bool,
) -> (
    Vec<reference::Frame>,
    meridian_pipeline::decode::DecodeStats,
) {
    let mut reader = FrameReader::new(Chunked::new(data, sizes), Decoder::new(max_payload), 7);
    let mut batch = Batch::default();
    let mut frames = Vec::new();
    loop {
        let rows = if placed {
            reader.fill_placed(&mut batch, limit).unwrap()
        } else {
            reader.fill(&mut batch, limit).unwrap()
        };
        if rows == 0 {
            break;
        }
        assert_eq!(batch.buf.is_empty(), placed, "placed frames are not copied");
        let bytes = if placed {
            reader.bytes()
        } else {
            &batch.buf[..]
        };
        let rows = View::all(&batch, bytes);
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
        let (got, got_stats) = decode_split(&data, sizes, limit, max_payload, true);
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
        let (whole, whole_stats) = decode_split(&data, vec![data.len().max(1)], usize::MAX, max_payload, false);
        let (split, split_stats) = decode_split(&data, sizes, limit, max_payload, false);
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
        let (batch, mask) = masked_batch(rows.iter().copied());
        let want = first_copies(&batch, &mask);
        // The default scatters on a CPU with AVX-512F; `scalar` is its twin.
        for mut s in [SortUnique::default(), SortUnique::scalar(), SortUnique::radix_only()] {
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
        // Sequence numbers climb from batch to batch so the window moves.
        let batches: Vec<TestBatch> = batches
            .iter()
            .enumerate()
            .map(|(k, rows)| {
                let at = |seq: u64| base.wrapping_add(seq).wrapping_add(k as u64 * 40);
                (rows.iter().map(|&(sat, seq, ok)| (sat, at(seq), ok)).collect(), false)
            })
            .collect();
        dedup_agrees(&batches, width, stale, false)?;
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
        let batches: Vec<TestBatch> = batches
            .iter()
            .enumerate()
            .map(|(k, rows)| {
                let at = |seq: u64| base + seq + k as u64 * climb;
                (rows.iter().map(|&(sat, seq, ok)| (sat, at(seq), ok)).collect(), false)
            })
            .collect();
        dedup_agrees(&batches, width, stale, true)?;
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

/// A batch of (sat, seq, valid) rows, and whether the window is reset before it.
type TestBatch = (Vec<(u32, u64, bool)>, bool);

/// A batch read row by row: no key columns, so dedup gathers the valid rows
/// first (the path of layouts without columns) before the direct table.
struct NoColumns<'a>(&'a Batch);

impl Rows for NoColumns<'_> {
    fn row_count(&self) -> usize {
        self.0.row_count()
    }
    fn sat(&self, i: usize) -> u32 {
        self.0.sat(i)
    }
    fn seq(&self, i: usize) -> u64 {
        self.0.seq(i)
    }
    fn flags(&self, i: usize) -> u8 {
        self.0.flags(i)
    }
    fn span(&self, i: usize) -> std::ops::Range<usize> {
        self.0.span(i)
    }
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// The default dedup kernels are the CPU's: the property tests compare the
/// AVX-512 kernels with their twins only where they are the default.
#[test]
fn the_default_dedup_kernels_follow_the_cpu() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        SortUnique::default().scatters(),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    assert!(!SortUnique::scalar().scatters());
}

/// A batch of `rows` (sat, seq, valid) and its validity mask.
fn masked_batch(rows: impl IntoIterator<Item = (u32, u64, bool)>) -> (Batch, Vec<u64>) {
    let mut batch = Batch::default();
    let mut mask = Vec::new();
    for (i, (sat, seq, ok)) in rows.into_iter().enumerate() {
        batch.push(sat, seq, 0, &[]);
        if i % 64 == 0 {
            mask.push(0);
        }
        mask[i / 64] |= u64::from(ok) << (i % 64);
    }
    (batch, mask)
}

/// What an in-batch dedup keeps of `batch`'s valid rows: the first copy of
/// each (sat, seq), in (sat, seq) order (the naive twin, a linear search).
fn first_copies(batch: &Batch, mask: &[u64]) -> Vec<u32> {
    let mut want: Vec<(u32, u64, u32)> = Vec::new();
    for i in set_bits(mask) {
        let (sat, seq) = (batch.sat[i], batch.seq[i]);
        if !want.iter().any(|&(s, q, _)| (s, q) == (sat, seq)) {
            want.push((sat, seq, i as u32));
        }
    }
    want.sort();
    want.into_iter().map(|(_, _, r)| r).collect()
}

/// Runs `batches` of (sat, seq, valid) rows through `Dedup` and its naive
/// twin with no window limits, batch by batch, `reset` marking batches
/// before which both forget their window; with `require_direct`, every
/// batch with a valid row must take the direct layout.
fn dedup_agrees(
    batches: &[TestBatch],
    width: u64,
    stale: StalePolicy,
    require_direct: bool,
) -> Result<(), TestCaseError> {
    // The default scatters on a CPU with AVX-512F, the scalar kernels are
    // its twin; each reads the batch's columns, and row by row.
    let dedup = || Dedup::new(width, stale, WindowLimits::OFF);
    let mut fasts = [
        (dedup(), false),
        (dedup().with_scalar_kernels(), false),
        (dedup(), true),
        (dedup().with_scalar_kernels(), true),
    ];
    let mut naive = NaiveDedup::new(width, stale, WindowLimits::OFF);
    let mut forward = Vec::new();
    for (k, (rows, reset)) in batches.iter().enumerate() {
        if *reset {
            fasts.iter_mut().for_each(|(d, _)| d.reset());
            naive.reset();
        }
        let (batch, mask) = masked_batch(rows.iter().copied());
        let valid: Vec<(u32, u32, u64)> = set_bits(&mask)
            .map(|i| (i as u32, batch.sat[i], batch.seq[i]))
            .collect();
        let (want_rows, want) = naive.run(&valid);
        for (f, (fast, by_row)) in fasts.iter_mut().enumerate() {
            let got = if *by_row {
                fast.run(&NoColumns(&batch), &mask, &mut forward)
            } else {
                fast.run(&batch, &mask, &mut forward)
            };
            if require_direct && !valid.is_empty() {
                let direct = matches!(fast.last_packing(), Some(Packing::Direct { .. }));
                prop_assert!(direct, "batch {} took {:?}", k, fast.last_packing());
            }
            prop_assert_eq!(
                &forward,
                &want_rows,
                "batch {} took {:?} (dedup {})",
                k,
                fast.last_packing(),
                f
            );
            prop_assert_eq!(
                got,
                want,
                "batch {} took {:?} (dedup {})",
                k,
                fast.last_packing(),
                f
            );
        }
    }
    Ok(())
}

/// The window's high mark moves past the end of its word to a block that
/// starts in a later word: the seqs in between must leave the ring clear,
/// or a late key among them is taken for a copy of the key a ring below it.
/// Width 64 (a one-word ring): keys 950..=960, then 1010, then 1030 (its
/// block starts at 1024, the high mark was 1010), then the late 1015 and
/// 1020, whose slots held 951 and 956.
#[test]
fn a_late_key_below_a_moved_high_mark_is_late_not_a_copy() {
    let batch =
        |seqs: &[u64]| -> TestBatch { (seqs.iter().map(|&q| (3, q, true)).collect(), false) };
    let first: Vec<u64> = (950..=960).collect();
    let batches = [
        batch(&first),
        batch(&[1010]),
        batch(&[1030]),
        batch(&[1015, 1020]),
    ];
    dedup_agrees(&batches, 64, StalePolicy::Forward, true).unwrap();
}

/// The direct layout and the word-at-a-time window at the top of the id
/// and seq ranges: satellites `u32::MAX - 4095 ..= u32::MAX`, seqs up to
/// `u64::MAX`, every width edge, both stale policies, an all-invalid batch.
#[test]
fn direct_window_at_the_top_of_the_ranges() {
    let (m, s) = (u64::MAX, u32::MAX);
    let batches: Vec<TestBatch> = vec![
        (
            vec![
                (s, m - 3, true),
                (s, m, true),
                (s - 4095, 0, true),
                (s, m - 3, true),
            ],
            false,
        ),
        (
            vec![
                (s, m - 200, true),
                (s, m - 1, true),
                (s, m, true),
                (s - 4095, 70, true),
                (s, 5, false),
            ],
            false,
        ),
        (vec![(s, m, false), (s, 1, false)], false),
        (
            vec![
                (s, m - 130, true),
                (s, m - 64, true),
                (s, m - 63, true),
                (s - 1, m, true),
            ],
            false,
        ),
        (
            vec![(s, m, true), (s - 1, m - 1, true), (s - 4095, 64, true)],
            true,
        ),
    ];
    for width in [0u64, 1, 63, 64, 65, 1 << 24] {
        for stale in [StalePolicy::Forward, StalePolicy::Drop] {
            dedup_agrees(&batches, width, stale, false).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Batches of up to 1200 rows over up to 70 satellites (so 64 regions
    /// or fewer, looked up in registers, and more, gathered; one possibly
    /// 4095 ids away), seqs spread over up to 5000 with late frames, near
    /// `u64::MAX` or anywhere, climbing from batch to batch by 0 to 2000,
    /// some batches all invalid, resets between batches: the guess from
    /// the last batch hits and misses, blocks span many words, rings wrap.
    #[test]
    fn direct_window_matches_naive_on_large_batches(
        nb in 2usize..8,
        rows in 1usize..1200,
        nsat in 1u32..70,
        far_sat in any::<bool>(),
        spread in prop_oneof![1u64..64, 64u64..300, 300u64..5000],
        late in prop_oneof![Just(0u64), 1u64..3000],
        width in prop_oneof![0u64..3, Just(63u64), Just(64u64), Just(65u64), 100u64..300, Just(4096u64), Just(1u64 << 24)],
        drop in any::<bool>(),
        satbase in prop_oneof![Just(0u32), Just(u32::MAX - 4095), any::<u32>().prop_map(|s| s.min(u32::MAX - 4095))],
        top in any::<bool>(),
        climb in prop_oneof![Just(0u64), 1u64..64, 64u64..2000],
        invalid in prop_oneof![Just(0u64), Just(100u64), Just(1000u64)],
        resets in any::<u8>(),
        seed in any::<u64>(),
    ) {
        let stale = if drop { StalePolicy::Drop } else { StalePolicy::Forward };
        let mut rng = fastrand::Rng::with_seed(seed);
        let total = nb as u64 * climb + spread + late + 10;
        let base = if top { u64::MAX - total } else { rng.u64(..) >> 2 };
        let mut batches = Vec::new();
        for k in 0..nb {
            let mut v = Vec::new();
            for _ in 0..rows {
                let s = rng.u32(0..nsat);
                let sat = satbase + if far_sat && s == nsat - 1 { 4095 } else { s };
                let mut q = base + late + k as u64 * climb + rng.u64(0..spread);
                if late > 0 && rng.u8(0..20) == 0 {
                    q -= rng.u64(0..late);
                }
                if top && rng.u8(0..50) == 0 {
                    q = u64::MAX - rng.u64(0..3);
                }
                // Per mille invalid; at 1000 every other batch is all invalid.
                let ok = if invalid == 1000 { k % 2 == 0 } else { rng.u64(0..1000) >= invalid };
                v.push((sat, q, ok));
            }
            batches.push((v, resets & (1 << k) != 0));
        }
        dedup_agrees(&batches, width, stale, false)?;
    }
}

/// A stream of one frame, 16 MiB of garbage and another frame, read into
/// one batch with frames left in place: the reader's buffer drops the
/// skipped bytes instead of keeping them under the batch (it stays within
/// the two frames, two read chunks and a maximal frame).
#[test]
fn placed_reader_memory_is_bounded_by_the_batch_not_the_garbage() {
    let mut data = Vec::new();
    meridian_pipeline::wire::encode_frame(&mut data, 1, 1, 0, &[1, 2, 3]);
    data.resize(data.len() + (16 << 20), 0);
    meridian_pipeline::wire::encode_frame(&mut data, 1, 2, 0, &[4, 5, 6]);
    let chunk = 64 * 1024;
    let mut reader = FrameReader::new(&data[..], Decoder::new(4096), chunk);
    let mut batch = Batch::default();
    assert_eq!(reader.fill_placed(&mut batch, 2).unwrap(), 2);
    let rows = View::all(&batch, reader.bytes());
    assert_eq!(rows.frame(0)[20..23], [1, 2, 3]);
    assert_eq!(rows.frame(1)[20..23], [4, 5, 6]);
    let bound = 2 * 27 + 2 * chunk + Decoder::new(4096).max_frame_len();
    assert!(
        reader.bytes().len() <= bound,
        "buffer of {} bytes for a 2-frame batch (bound {bound})",
        reader.bytes().len()
    );
    assert_eq!(reader.stats().skipped_bytes, 16 << 20);
}

/// `process_stream_each` hands its callback rows whose frames are readable:
/// the forwarded rows' bytes, in order, are the output.
#[test]
fn process_stream_each_hands_readable_frames() {
    let mut data = Vec::new();
    for q in 0..10u64 {
        meridian_pipeline::wire::encode_frame(&mut data, 1, q, 0, &[1, 2, 3]);
        meridian_pipeline::wire::encode_frame(&mut data, 1, q, 0, &[1, 2, 3]);
    }
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    let cfg = Config {
        batch_size: 3,
        ..Config::default()
    };
    meridian_pipeline::pipeline::process_stream_each(
        &data[..],
        &mut out,
        cfg,
        &|| false,
        |rows, ids| {
            for &r in ids {
                seen.extend_from_slice(rows.frame(r as usize));
            }
        },
    )
    .unwrap();
    assert_eq!(seen, out);
    assert_eq!(out.len(), 10 * 27);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// In-batch dedup alone, batches built to take the direct layout mostly
    /// (a few spread too wide for its budget take the radix one), run
    /// one after another on the same scratch (seqs moving by `climb`, so the
    /// last batch's guess sometimes holds the next and sometimes not), with
    /// invalid rows: the first copy of each (sat, seq) in (sat, seq) order.
    #[test]
    fn sort_unique_direct_matches_naive_batch_after_batch(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..6, prop_oneof![4 => 0u64..100, 1 => 0u64..2000], prop::bool::weighted(0.9)), 1..300),
            1..6),
        climb in prop_oneof![Just(0u64), 1u64..100, 100u64..5000],
        base in prop_oneof![Just(0u64), Just(u64::MAX - 40_000), any::<u64>().prop_map(|b| b >> 2)],
    ) {
        // The default scatters on a CPU with AVX-512F; `scalar` is its twin.
        let mut scratches = [SortUnique::default(), SortUnique::scalar()];
        let mut got = Vec::new();
        for (k, rows) in batches.iter().enumerate() {
            let (batch, mask) = masked_batch(
                rows.iter()
                    .map(|&(sat, seq, ok)| (sat, base + seq + k as u64 * climb, ok)),
            );
            let want = first_copies(&batch, &mask);
            for s in &mut scratches {
                let dropped = s.run(&batch, &mask, &mut got);
                prop_assert_eq!(&got, &want, "batch {} took {:?} (scatters {})", k, s.last_packing, s.scatters());
                prop_assert_eq!(dropped, (set_bits(&mask).count() - want.len()) as u64);
            }
        }
    }
}
