//! The gap tracker against its naive twin (a `BTreeSet` of forwarded seqs
//! per satellite): key by key, within its memory bounds, and end to end
//! through `process_stream_gaps` and `process --gaps`.

mod common;

use std::process::Command;

use common::keys::decode_keys;
use common::{config, stream, Chunked};
use meridian_pipeline::gaps::{process_stream_gaps, GapLimits, GapTracker, NaiveGaps, RECENT};
use meridian_pipeline::process_stream;
use meridian_pipeline::wire::encode_frame;
use proptest::prelude::*;
use serde_json::Value;

/// Batches as the pipeline forwards them: each in (sat, seq) order, no key twice.
fn batches() -> impl Strategy<Value = Vec<Vec<(u32, u64)>>> {
    let key = (
        prop_oneof![8 => 0u32..5, 1 => any::<u32>()],
        prop_oneof![
            8 => 0u64..300,
            3 => 0u64..6000,
            1 => 1000u64..1100,
            1 => (u64::MAX - 3000)..=u64::MAX,
            1 => any::<u64>(),
        ],
    );
    prop::collection::vec(prop::collection::vec(key, 0..80), 1..12).prop_map(|bs| {
        bs.into_iter()
            .map(|mut b| {
                b.sort_unstable();
                b.dedup();
                b
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Within the bounds the tracker is exact: the same ranges, counts and
    /// fills as the twin, after every batch.
    #[test]
    fn tracker_matches_naive(batches in batches(), unsorted in any::<bool>()) {
        let mut fast = GapTracker::new();
        let mut naive = NaiveGaps::default();
        for mut b in batches {
            if unsorted {
                b.reverse(); // any order is correct, if slower
            }
            fast.observe_keys(&b);
            naive.observe_keys(&b);
            let got = fast.report(true);
            let want = naive.report(true);
            prop_assert_eq!(&got.satellites, &want);
            // Seqs are u64: the totals over satellites saturate.
            let missing = want.iter().fold(0u64, |a, s| a.saturating_add(s.missing));
            let ranges: u64 = want.iter().map(|s| s.range_count).sum();
            let filled: u64 = want.iter().map(|s| s.filled).sum();
            prop_assert_eq!(got.totals.missing, missing);
            prop_assert_eq!(got.totals.gap_ranges, ranges);
            prop_assert_eq!(got.totals.gaps_filled, filled);
            if got.totals.gaps_opened < u64::MAX {
                prop_assert_eq!(got.totals.missing, got.totals.gaps_opened - got.totals.gaps_filled);
            }
            prop_assert_eq!(got.totals.gap_ranges_dropped, 0);
            // Only satellites missing seqs now, when not asked for all.
            let with_gaps: Vec<_> = want.iter().filter(|s| s.missing > 0).cloned().collect();
            prop_assert_eq!(fast.report(false).satellites, with_gaps);
        }
    }

    /// Past the bounds: memory stays within them, what is still tracked is
    /// truly missing, and nothing missing is ever under-counted.
    #[test]
    fn tracker_stays_bounded(
        batches in batches(),
        per_sat in 1usize..6,
        total in 1usize..12,
        sats in 1usize..4,
    ) {
        let limits = GapLimits { per_sat_ranges: per_sat, total_ranges: total, sats, restart_after_jump: 0 };
        let mut fast = GapTracker::with_limits(limits);
        let mut naive = NaiveGaps::default();
        let mut untracked = 0u64;
        let mut seen = Vec::new();
        for b in batches {
            fast.observe_keys(&b);
            // The twin sees only the satellites the tracker took.
            for &(sat, seq) in &b {
                if seen.contains(&sat) || seen.len() < sats {
                    if !seen.contains(&sat) {
                        seen.push(sat);
                    }
                    naive.observe_keys(&[(sat, seq)]);
                } else {
                    untracked += 1;
                }
            }
            prop_assert!(fast.ranges_held() <= total);
            let got = fast.report(true);
            let want = naive.report(true);
            prop_assert_eq!(got.satellites.len(), want.len());
            prop_assert_eq!(got.totals.gap_untracked_frames, untracked);
            if got.totals.gaps_opened < u64::MAX {
                prop_assert_eq!(got.totals.missing, got.totals.gaps_opened - got.totals.gaps_filled);
            }
            for (g, w) in got.satellites.iter().zip(&want) {
                // Capped below the recent window; in it, one range per two seqs at most.
                prop_assert!(g.range_count <= per_sat as u64 + RECENT / 2);
                prop_assert_eq!((g.sat, g.lowest_seq, g.highest_seq, g.frames), (w.sat, w.lowest_seq, w.highest_seq, w.frames));
                prop_assert!(g.missing >= w.missing);
                prop_assert!(g.filled <= w.filled);
                if g.dropped_ranges == 0 {
                    prop_assert_eq!(g, w);
                }
                // Every tracked range lies inside one of the twin's.
                for [a, b] in &g.ranges {
                    prop_assert!(w.ranges.iter().any(|[c, d]| c <= a && b <= d) || w.ranges_truncated,
                        "range {}..={} of sat {} is not missing", a, b, g.sat);
                }
            }
        }
    }

    /// End to end: the tracker fed by the pipeline agrees with the twin fed
    /// the forwarded output, and the pipeline's summary is unchanged.
    #[test]
    fn process_gaps_match_naive(
        data in stream(),
        cfg in config(),
        sizes in prop::collection::vec(1usize..100, 1..6),
    ) {
        let mut out = Vec::new();
        let (summary, stopped, gaps) =
            process_stream_gaps(Chunked::new(&data, sizes), &mut out, cfg, &|| false, 1).unwrap();
        prop_assert!(!stopped);
        let mut plain = Vec::new();
        let want_summary = process_stream(&data[..], &mut plain, cfg).unwrap();
        prop_assert_eq!(&out, &plain);
        prop_assert_eq!(summary, want_summary);
        let (keys, _) = decode_keys(&out);
        let mut naive = NaiveGaps::default();
        naive.observe_keys(&keys);
        prop_assert_eq!(gaps.report(true).satellites, naive.report(true));
    }
}

/// `process --gaps`: the file lists exactly the seqs left out, and the
/// JSON summary carries `missing` and `gap_ranges`.
#[test]
fn process_gaps_writes_the_ranges_left_out() {
    let dir = std::env::temp_dir().join(format!("meridian-gaps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, out, gaps) = (
        dir.join("in.bin"),
        dir.join("out.bin"),
        dir.join("gaps.json"),
    );
    let mut bytes = Vec::new();
    // Sat 5: 100..=120 without 104..=106 and 110; sat 9 whole; sat 5's 110 comes late.
    for seq in (100..=120u64).filter(|s| !(104..=106).contains(s) && *s != 110) {
        encode_frame(&mut bytes, 5, seq, 0, b"frame");
    }
    for seq in 0..50u64 {
        encode_frame(&mut bytes, 9, seq, 0, b"frame");
    }
    encode_frame(&mut bytes, 5, 110, 0, b"late frame");
    std::fs::write(&input, &bytes).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args(["process", "--json", "--batch-size", "8", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--gaps")
        .arg(&gaps)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let err = String::from_utf8_lossy(&run.stderr);
    let summary: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(summary["missing"], 3);
    assert_eq!(summary["gap_ranges"], 1);
    assert_eq!(summary["gaps_filled"], 1);
    assert_eq!(summary["forwarded"], 18 + 50);
    let report: Value = serde_json::from_slice(&std::fs::read(&gaps).unwrap()).unwrap();
    let sats = report["satellites"].as_array().unwrap();
    assert_eq!(sats.len(), 1, "{report}");
    assert_eq!(sats[0]["sat"], 5);
    assert_eq!(sats[0]["ranges"], serde_json::json!([[104, 106]]));
    assert_eq!(sats[0]["missing"], 3);
    assert_eq!(sats[0]["filled"], 1);
    assert_eq!(sats[0]["highest_seq"], 120);
    assert_eq!(sats[0]["lowest_seq"], 100);
    assert_eq!(sats[0]["frames"], 18);
    assert_eq!(report["missing"], 3);

    // An unwritable --gaps path: exit 2 with one line, before any work.
    let bad = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args(["process", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--gaps")
        .arg(dir.join("no/such/dir/gaps.json"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--gaps"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
