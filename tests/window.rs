//! The hardened cross-batch window ([`WindowLimits`]): the ring dedup against
//! its naive twin under hostile seqs, and the scenarios the limits exist for.

use meridian_pipeline::batch::Batch;
use meridian_pipeline::dedup::naive::NaiveDedup;
use meridian_pipeline::dedup::window::{ring_words_for, sat_bytes, SAT_OVERHEAD};
use meridian_pipeline::dedup::{Dedup, DedupCounts, StalePolicy, WindowLimits, MAX_WINDOW};
use proptest::prelude::*;

/// Runs one batch of (sat, seq) rows, all valid, through `fast`; returns the
/// forwarded (sat, seq) and the counts.
fn run(fast: &mut Dedup, rows: &[(u32, u64)]) -> (Vec<(u32, u64)>, DedupCounts) {
    let mut batch = Batch::default();
    let mut mask = vec![0u64; rows.len().div_ceil(64)];
    for (i, &(sat, seq)) in rows.iter().enumerate() {
        batch.push(sat, seq, 0, &[]);
        mask[i / 64] |= 1 << (i % 64);
    }
    let mut forward = Vec::new();
    let counts = fast.run(&batch, &mask, &mut forward);
    let out = forward
        .iter()
        .map(|&r| (batch.sat[r as usize], batch.seq[r as usize]))
        .collect();
    (out, counts)
}

/// Seqs of one satellite: `from..to`.
fn seqs(sat: u32, from: u64, to: u64) -> Vec<(u32, u64)> {
    (from..to).map(|q| (sat, q)).collect()
}

/// One row's seq: mostly climbing from a base, sometimes hostile.
fn seq_lane() -> impl Strategy<Value = (u8, u64)> {
    prop_oneof![
        10 => (Just(0u8), 0u64..300),            // base + k * 40 + x
        1 => (Just(1u8), 0u64..20),              // restart near 0
        1 => (Just(2u8), 0u64..20),              // near u64::MAX
        1 => (Just(3u8), any::<u64>()),          // anywhere
        1 => (Just(4u8), 300u64..5_000),         // a big jump above the base
        1 => (Just(5u8), 300u64..5_000),         // as far below the base
    ]
}

/// One hostile seq: far above or below the base, near 0 or u64::MAX.
fn hostile_lane() -> impl Strategy<Value = (u8, u64)> {
    prop_oneof![
        (Just(1u8), 0u64..20),
        (Just(2u8), 0u64..20),
        (Just(4u8), 300u64..5_000),
        (Just(5u8), 300u64..5_000),
    ]
}

fn limits() -> impl Strategy<Value = WindowLimits> {
    prop_oneof![
        // No limit at all: the window's plain loop.
        1 => Just(WindowLimits::OFF),
        4 => some_limits(),
    ]
}

fn some_limits() -> impl Strategy<Value = WindowLimits> {
    (
        prop_oneof![Just(0u64), 1u64..8, 8u64..300, Just(1u64 << 20)],
        prop_oneof![Just(0u32), 1u32..4, 4u32..10],
        prop_oneof![
            Just(usize::MAX),
            0usize..200,
            SAT_OVERHEAD..SAT_OVERHEAD + 400,
            200usize..4_000
        ],
        any::<bool>(),
    )
        .prop_map(
            |(max_seq_jump, reanchor_after, memory_budget, lazy_rings)| WindowLimits {
                max_seq_jump,
                reanchor_after,
                memory_budget,
                lazy_rings,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With any limits, the ring window forwards the naive twin's rows and
    /// counts the same, and tracks the same bytes, batch after batch.
    #[test]
    fn hardened_dedup_matches_naive(
        batches in prop::collection::vec(
            (
                prop_oneof![
                    5 => prop::collection::vec(
                        (prop_oneof![6 => 0u32..5, 1 => 0u32..64, 1 => any::<u32>()], seq_lane(), prop::bool::weighted(0.9)),
                        0..80),
                    // A lone hostile key or two (a satellite's first key, or
                    // right after it): the provisional anchor.
                    1 => prop::collection::vec((0u32..5, hostile_lane(), Just(true)), 1..3),
                ],
                prop::bool::weighted(0.05),
            ),
            1..10),
        width in prop_oneof![0u64..4, 4u64..100, Just(64u64), Just(65u64), Just(300u64), Just(MAX_WINDOW)],
        drop in any::<bool>(),
        base in prop_oneof![Just(0u64), Just(u64::MAX - 600), any::<u64>()],
        limits in limits(),
    ) {
        let stale = if drop { StalePolicy::Drop } else { StalePolicy::Forward };
        let mut fast = Dedup::new(width, stale, limits);
        let mut naive = NaiveDedup::new(width, stale, limits);
        let mut forward = Vec::new();
        for (k, (rows, reset)) in batches.iter().enumerate() {
            if *reset {
                fast.reset();
                naive.reset();
            }
            let mut batch = Batch::default();
            let mut mask = vec![0u64; rows.len().div_ceil(64)];
            let mut valid = Vec::new();
            for (i, &(sat, (lane, x), ok)) in rows.iter().enumerate() {
                let seq = match lane {
                    0 => base.wrapping_add(x).wrapping_add(k as u64 * 40),
                    1 => x,
                    2 => u64::MAX - x,
                    3 => x,
                    4 => base.wrapping_add(x).wrapping_add(k as u64 * 40),
                    _ => base.wrapping_sub(x).wrapping_add(k as u64 * 40),
                };
                batch.push(sat, seq, 0, &[]);
                if ok {
                    mask[i / 64] |= 1 << (i % 64);
                    valid.push((i as u32, sat, seq));
                }
            }
            let got = fast.run(&batch, &mask, &mut forward);
            let (want_rows, want) = naive.run(&valid);
            prop_assert_eq!(&forward, &want_rows, "batch {}", k);
            prop_assert_eq!(got, want, "batch {}", k);
            prop_assert_eq!(fast.window().tracked_bytes(), naive.tracked_bytes(), "batch {}", k);
            prop_assert!(fast.window().tracked_bytes() <= limits.memory_budget);
        }
    }

    /// The lazy ring size covers the spread, doubles, and stops at the full ring.
    #[test]
    fn ring_words_cover_the_span(span in any::<u64>(), width in 0u64..=MAX_WINDOW) {
        let words = ring_words_for(span, width);
        let full = ring_words_for(u64::MAX, width);
        prop_assert!(words.is_power_of_two());
        prop_assert!(words <= full);
        prop_assert!(words == full || words as u64 * 64 > span);
        prop_assert!(words == 1 || (words as u64 / 2) * 64 <= span);
        prop_assert!(full as u64 * 64 >= width.max(64));
    }
}

fn hardened(width: u64, stale: StalePolicy) -> Dedup {
    Dedup::new(width, stale, WindowLimits::SERVICE)
}

#[test]
fn one_hostile_frame_does_not_poison_the_window() {
    for stale in [StalePolicy::Drop, StalePolicy::Forward] {
        let mut d = hardened(65_536, stale);
        run(&mut d, &seqs(1, 0, 100));
        let (out, c) = run(&mut d, &[(1, u64::MAX)]);
        assert!(out.is_empty());
        assert_eq!(c.suspect, 1);
        // 200 genuine frames, 20 a batch, each batch also resending the last.
        let mut forwarded = 0;
        let mut dups = 0;
        for b in 0..10u64 {
            let mut rows = seqs(1, 100 + b * 20, 120 + b * 20);
            if b > 0 {
                rows.extend(seqs(1, 100 + (b - 1) * 20, 100 + b * 20));
            }
            let (out, c) = run(&mut d, &rows);
            forwarded += out.len();
            dups += c.duplicates;
            assert_eq!((c.stale, c.suspect, c.reanchors), (0, 0, 0));
        }
        assert_eq!(forwarded, 200, "{stale:?}");
        assert_eq!(dups, 180, "{stale:?}");
    }
    // Without limits the same frame poisons it: every genuine frame is stale.
    let mut d = Dedup::new(65_536, StalePolicy::Drop, WindowLimits::OFF);
    run(&mut d, &seqs(1, 0, 100));
    run(&mut d, &[(1, u64::MAX)]);
    let (out, c) = run(&mut d, &seqs(1, 100, 300));
    assert!(out.is_empty());
    assert_eq!(c.stale, 200);
}

#[test]
fn a_counter_restart_heals_after_reanchor_after_keys() {
    let n = u64::from(WindowLimits::SERVICE.reanchor_after);
    let mut d = hardened(65_536, StalePolicy::Drop);
    run(&mut d, &seqs(7, 1_000_000, 1_000_100));
    // The counter restarts at 0; 10 frames a batch, so the run crosses batches.
    let mut total = DedupCounts::default();
    let mut out = Vec::new();
    for b in 0..20u64 {
        let (o, c) = run(&mut d, &seqs(7, b * 10, b * 10 + 10));
        out.extend(o);
        total.add(c);
    }
    assert_eq!(total.reanchors, 1);
    assert_eq!(total.stale, n - 1);
    // The completing key and everything after it is forwarded.
    let want: Vec<(u32, u64)> = seqs(7, n - 1, 200);
    assert_eq!(out, want);
    // And dedup works on the new seqs: resends are duplicates.
    let (o, c) = run(&mut d, &seqs(7, 150, 210));
    assert_eq!(o, seqs(7, 200, 210));
    assert_eq!(c.duplicates, 50);
    // Even the dropped stale keys of the run are members now.
    let (o, c) = run(&mut d, &seqs(7, 0, 10));
    assert!(o.is_empty());
    assert_eq!(c.duplicates, 10);
}

#[test]
fn a_long_outage_heals_after_reanchor_after_keys() {
    let n = u64::from(WindowLimits::SERVICE.reanchor_after);
    let jump = WindowLimits::SERVICE.max_seq_jump;
    let mut d = hardened(65_536, StalePolicy::Forward);
    run(&mut d, &seqs(3, 0, 1000));
    let from = 1000 + 2 * jump;
    let (out, c) = run(&mut d, &seqs(3, from, from + 100));
    assert_eq!(c.suspect, n - 1);
    assert_eq!(c.reanchors, 1);
    assert_eq!(out, seqs(3, from + n - 1, from + 100));
    let (out, c) = run(&mut d, &seqs(3, from, from + 110));
    assert_eq!(out, seqs(3, from + 100, from + 110));
    assert_eq!(c.duplicates, 100);
}

#[test]
fn outside_keys_far_apart_do_not_reanchor() {
    let mut d = Dedup::new(
        100,
        StalePolicy::Drop,
        WindowLimits {
            max_seq_jump: 1000,
            reanchor_after: 3,
            ..WindowLimits::SERVICE
        },
    );
    run(&mut d, &seqs(1, 10_000, 10_010));
    // Suspect keys 1000 apart are no run; one inside key breaks a run.
    let (_, c) = run(&mut d, &[(1, 20_000), (1, 30_000), (1, 40_000)]);
    assert_eq!((c.suspect, c.reanchors), (3, 0));
    run(&mut d, &[(1, 50_000), (1, 50_001)]);
    let (_, c) = run(&mut d, &[(1, 10_010), (1, 50_002)]);
    assert_eq!((c.suspect, c.reanchors), (1, 0));
    let (out, c) = run(&mut d, &[(1, 50_003), (1, 50_004)]);
    assert_eq!((c.suspect, c.reanchors), (1, 1));
    assert_eq!(out, vec![(1, 50_004)]);
}

#[test]
fn an_evicted_satellite_starts_over() {
    let budget = sat_bytes(1, 0) * 2;
    let limits = WindowLimits {
        memory_budget: budget,
        ..WindowLimits::SERVICE
    };
    let mut d = Dedup::new(1000, StalePolicy::Forward, limits);
    run(&mut d, &[(1, 5)]);
    run(&mut d, &[(2, 5)]);
    let (_, c) = run(&mut d, &[(3, 5), (3, 6)]);
    // Satellite 1 is the least recently active: evicted for satellite 3.
    assert_eq!(c.evicted_sats, 1);
    assert!(d.window().tracked_bytes() <= budget);
    let (out, c) = run(&mut d, &[(2, 5)]);
    assert_eq!((out.len(), c.duplicates), (0, 1));
    // Satellite 1's copy passes again, and evicts satellite 3 (older than 2).
    let (out, c) = run(&mut d, &[(1, 5)]);
    assert_eq!(out, vec![(1, 5)]);
    assert_eq!(c.evicted_sats, 1);
    let (out, _) = run(&mut d, &[(2, 5), (3, 6)]);
    assert_eq!(out, vec![(3, 6)]);
}

/// 10,000 satellite ids, each spreading its seqs over a whole 2^24 window,
/// within a 256 MiB budget: checked on the tracked bytes, batch by batch.
/// (No jump limit, so each satellite's first batch spreads its ring full.)
#[test]
fn ten_thousand_satellites_stay_within_the_budget() {
    let limits = WindowLimits {
        max_seq_jump: 0,
        ..WindowLimits::SERVICE
    };
    let mut d = Dedup::new(MAX_WINDOW, StalePolicy::Forward, limits);
    let mut evicted = 0;
    for round in 0..2u32 {
        for chunk in 0..20u32 {
            let rows: Vec<(u32, u64)> = (chunk * 500..chunk * 500 + 500)
                .flat_map(|sat| {
                    let sat = sat.wrapping_mul(2_654_435_761) ^ round;
                    [(sat, 10), (sat, 10 + MAX_WINDOW / 2), (sat, 9 + MAX_WINDOW)]
                })
                .collect();
            let (out, c) = run(&mut d, &rows);
            assert_eq!(out.len(), 1500);
            evicted += c.evicted_sats;
            assert!(d.window().tracked_bytes() <= limits.memory_budget);
        }
    }
    // Each satellite's ring is full (2 MiB): 127 fit, of about 20,000 ids.
    assert!(evicted >= 19_800, "{evicted}");
    assert!(d.window().satellites() <= 128);
}

/// Few frames per satellite cost little: 10,000 satellites with a handful of
/// close seqs each need no eviction and a few words of ring each.
#[test]
fn lazy_rings_keep_sparse_satellites_small() {
    let mut d = Dedup::new(MAX_WINDOW, StalePolicy::Forward, WindowLimits::SERVICE);
    for b in 0..4u64 {
        let rows: Vec<(u32, u64)> = (0..10_000u32)
            .flat_map(|sat| [(sat, b * 100), (sat, b * 100 + 50)])
            .collect();
        let (_, c) = run(&mut d, &rows);
        assert_eq!(c.evicted_sats, 0);
    }
    // Spread 350: 8 words each.
    assert_eq!(d.window().tracked_bytes(), 10_000 * sat_bytes(8, 0));
}

/// A lone first key far from the genuine seqs (the satellite's first frame,
/// or its first after an eviction) anchors a provisional window: the first
/// genuine key outside it re-anchors at once, and no genuine frame is lost.
#[test]
fn a_lone_poisoned_first_key_is_replaced_by_the_first_genuine_key() {
    for poison in [u64::MAX, 3] {
        let mut d = hardened(65_536, StalePolicy::Drop);
        let (out, c) = run(&mut d, &[(1, poison)]);
        assert_eq!(out, vec![(1, poison)]);
        assert_eq!(c, DedupCounts::default());
        let from = 1u64 << 40;
        let (out, c) = run(&mut d, &seqs(1, from, from + 200));
        assert_eq!(out, seqs(1, from, from + 200), "poison {poison}");
        assert_eq!((c.reanchors, c.stale, c.suspect), (1, 0, 0));
        let (out, c) = run(&mut d, &seqs(1, from, from + 100));
        assert!(out.is_empty());
        assert_eq!(c.duplicates, 100);
    }
}

/// Fewer than `reanchor_after` consistent poisoned keys cost no genuine
/// frame either: the genuine run outvotes them, and until it does its keys
/// are forwarded (counted stale) whatever the policy.
#[test]
fn a_short_poisoned_start_costs_no_genuine_frame() {
    let mut d = hardened(65_536, StalePolicy::Drop);
    run(
        &mut d,
        &seqs(1, u64::MAX - 9, u64::MAX)
            .into_iter()
            .chain([(1, u64::MAX)])
            .collect::<Vec<_>>(),
    );
    let (out, c) = run(&mut d, &seqs(1, 1000, 1200));
    assert_eq!(out, seqs(1, 1000, 1200));
    assert_eq!((c.reanchors, c.provisional, c.stale), (1, 9, 0));
    let (out, c) = run(&mut d, &seqs(1, 1000, 1210));
    assert_eq!(out, seqs(1, 1200, 1210));
    assert_eq!(c.duplicates, 200);
}

/// The other way round: a hostile key after genuine ones, while the
/// satellite is still provisional, is forwarded but moves nothing (it does
/// not outvote them); once confirmed, the usual rules apply.
#[test]
fn a_hostile_key_cannot_outvote_a_provisional_satellite() {
    let n = u64::from(WindowLimits::SERVICE.reanchor_after);
    const G: u64 = 1_000_000;
    let mut d = hardened(65_536, StalePolicy::Drop);
    run(&mut d, &seqs(1, G, G + 10));
    for hostile in [u64::MAX, 5] {
        let (out, c) = run(&mut d, &[(1, hostile)]);
        assert_eq!(out, vec![(1, hostile)]);
        assert_eq!((c.reanchors, c.provisional, c.suspect + c.stale), (0, 1, 0));
    }
    // The window did not move: copies are duplicates, the rest is new.
    let (out, c) = run(&mut d, &seqs(1, G, G + n));
    assert_eq!(out, seqs(1, G + 10, G + n));
    assert_eq!((c.duplicates, c.reanchors), (10, 0));
    // Confirmed now (n keys accepted): hostile keys are dropped.
    for hostile in [u64::MAX, 5] {
        let (out, c) = run(&mut d, &[(1, hostile)]);
        assert!(out.is_empty());
        assert_eq!((c.reanchors, c.suspect + c.stale), (0, 1));
    }
}

/// With one key accepted, a lone hostile key does tie and re-anchors; the
/// next genuine key re-anchors back. No genuine frame is lost; the hostile
/// one is forwarded, and copies of the genuine keys before it pass again.
#[test]
fn a_lone_genuine_first_key_can_be_flipped_and_flips_back() {
    let mut d = hardened(65_536, StalePolicy::Drop);
    run(&mut d, &[(1, 1000)]);
    let (out, c) = run(&mut d, &[(1, u64::MAX)]);
    assert_eq!((out, c.reanchors), (vec![(1, u64::MAX)], 1));
    let (out, c) = run(&mut d, &seqs(1, 1000, 1100));
    assert_eq!(out, seqs(1, 1000, 1100));
    assert_eq!((c.reanchors, c.stale), (1, 0));
}

/// Without limits nothing is provisional: a lone first key anchors for good.
#[test]
fn without_limits_a_lone_first_key_anchors_for_good() {
    let mut d = Dedup::new(65_536, StalePolicy::Drop, WindowLimits::OFF);
    run(&mut d, &[(1, u64::MAX)]);
    let (out, c) = run(&mut d, &seqs(1, 1000, 1200));
    assert!(out.is_empty());
    assert_eq!((c.stale, c.reanchors), (200, 0));
}

/// A lazy ring narrower than the window: a key at least its bits below the
/// high mark (but inside the window) shares a slot with a member, yet is
/// not one; it is late, in a run of its own and in a run with other keys.
#[test]
fn a_lazy_ring_does_not_alias_keys_below_its_bits() {
    for extra in [vec![], vec![(1, 990)], vec![(1, 1001)]] {
        let mut d = hardened(1000, StalePolicy::Drop);
        run(&mut d, &seqs(1, 960, 1001));
        assert_eq!(d.window().tracked_bytes(), sat_bytes(1, 0));
        let mut rows = vec![(1, 1000 - 64)];
        rows.extend(extra.iter().copied());
        let (out, c) = run(&mut d, &rows);
        assert_eq!(out[0], (1, 936), "{extra:?}");
        assert_eq!(c.duplicates, u64::from(extra == [(1, 990)]), "{extra:?}");
        assert_eq!(c.late, 1, "{extra:?}");
    }
}
