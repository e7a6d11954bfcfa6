//! The throughput runner: the data-parallel mode forwards the sequential bytes
//! (also when its regions fall out of step),
//! every layout forwards the same bytes, frame limits are exact, replays are
//! counted, and the CLI's JSON report has the promised keys.

mod common;

use std::process::Command;

use common::hostile_capture;

use meridian_pipeline::harness::gen::{capture, GenConfig};
use meridian_pipeline::harness::layout::Layout;
use meridian_pipeline::harness::runner::{run, Limit, Progress, RunOptions, RunReport};
use meridian_pipeline::Config;

/// `got` forwarded `want`'s bytes (the CRC of the whole stream), with the
/// same counters, over the same frames.
fn assert_same_run(got: &RunReport, want: &RunReport, what: &str) {
    assert_eq!(got.forwarded_crc32, want.forwarded_crc32, "{what}");
    assert_eq!(got.summary, want.summary, "{what}");
    assert_eq!(got.frames, want.frames, "{what}");
}

fn opts(layout: Layout, threads: usize, batch_size: usize, frames: u64) -> RunOptions {
    RunOptions {
        layout,
        threads,
        cfg: Config {
            batch_size,
            ..Config::default()
        },
        limit: Limit::Frames(frames),
        progress: Progress::Quiet,
        digest: true,
    }
}

#[test]
fn every_layout_and_thread_count_forwards_the_same_bytes() {
    let data = capture(&GenConfig {
        frames: 12_345,
        ..GenConfig::default()
    });
    for batch_size in [1000, 4096] {
        // 30_000 frames: two whole passes and part of a third, replayed with the window reset.
        let want = run(&data, &opts(Layout::Soa, 1, batch_size, 30_000)).unwrap();
        assert_eq!(want.frames, 30_000);
        assert_eq!(want.passes, 3);
        assert!(want.forwarded > 10_000);
        for (layout, threads) in [
            (Layout::Soa, 2),
            (Layout::Soa, 3),
            (Layout::Aos, 1),
            (Layout::Baseline, 1),
        ] {
            let got = run(&data, &opts(layout, threads, batch_size, 30_000)).unwrap();
            assert_same_run(&got, &want, &format!("{} x{threads}", layout.name()));
        }
    }
}

#[test]
fn every_thread_count_forwards_the_sequential_bytes_of_a_hostile_capture() {
    let data = hostile_capture();
    for batch_size in [100, 1000, 65_536] {
        let frames = 70_000; // three passes and a part, window reset between
        let want = run(&data, &opts(Layout::Soa, 1, batch_size, frames)).unwrap();
        assert!(want.summary.decode.crc_errors > 0 && want.summary.decode.bad_header > 0);
        assert!(want.summary.decode.skipped_bytes > 0);
        assert_eq!(want.frames, frames);
        for threads in 2..=8 {
            let got = run(&data, &opts(Layout::Soa, threads, batch_size, frames)).unwrap();
            assert_same_run(
                &got,
                &want,
                &format!("batch {batch_size}, {threads} threads"),
            );
        }
    }
}

/// Zones too short to fall into step (a byte, a header, a few frames)
/// leave regions out of step with their predecessors, starting on false
/// markers or inside frames: they must be dropped and decoded again, and
/// the output stay the sequential one.
#[test]
fn regions_out_of_step_are_decoded_again() {
    use meridian_pipeline::harness::runner::PARALLEL_ZONE;
    use std::sync::atomic::Ordering;
    let data = hostile_capture();
    let default = PARALLEL_ZONE.load(Ordering::Relaxed);
    for batch_size in [100, 4096] {
        let frames = 50_000;
        let want = run(&data, &opts(Layout::Soa, 1, batch_size, frames)).unwrap();
        assert_eq!(want.frames, frames);
        for zone in [0, 1, 23, 300, 2000] {
            PARALLEL_ZONE.store(zone, Ordering::Relaxed);
            for threads in [2, 3, 8] {
                let got = run(&data, &opts(Layout::Soa, threads, batch_size, frames)).unwrap();
                let what = format!("batch {batch_size}, zone {zone}, {threads} threads");
                assert_same_run(&got, &want, &what);
            }
        }
    }
    PARALLEL_ZONE.store(default, Ordering::Relaxed);
}

/// Window limits: per satellite (seq jumps, re-anchoring, lazy rings) the
/// satellite-range parts keep them exactly; a memory budget (eviction across
/// satellites) makes one part do all. Either way, the sequential output.
#[test]
fn every_thread_count_keeps_the_window_limits() {
    use meridian_pipeline::dedup::WindowLimits;
    // Runs of frames far ahead of their satellite's window between the
    // hostile capture's frames: suspects, and re-anchors once a run is long.
    let mut data = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for chunk in hostile_capture().chunks(50_000) {
        data.extend_from_slice(chunk);
        let (sat, seq) = (rng.u32(..48), rng.u64(1_000_000..2_000_000));
        for k in 0..rng.u64(1..12) {
            meridian_pipeline::wire::encode_frame(&mut data, sat, seq + k, 0, b"jump");
        }
    }
    let per_sat = WindowLimits {
        max_seq_jump: 40,
        reanchor_after: 8,
        memory_budget: usize::MAX,
        lazy_rings: true,
    };
    let budget = WindowLimits {
        memory_budget: 2048,
        ..per_sat
    };
    for limits in [per_sat, budget] {
        let with = |threads| {
            let mut o = opts(Layout::Soa, threads, 1000, 50_000);
            o.cfg.limits = limits;
            run(&data, &o).unwrap()
        };
        let want = with(1);
        let p = want.summary.pipeline;
        if limits.memory_budget == usize::MAX {
            assert!(p.suspect > 0 && p.reanchors > 0, "{p:?}");
        } else {
            assert!(p.evicted_sats > 0, "{p:?}");
        }
        for threads in [2, 6, 8] {
            let got = with(threads);
            assert_same_run(&got, &want, &format!("{limits:?}, {threads} threads"));
        }
    }
}

/// Frames up to 40 KB, longer than the smallest region (32 KiB) the runner
/// would otherwise allow: the output is still the sequential one. (Regions
/// are at least two of the longest frames, so the first region always gets
/// past the frame at its start; this capture's regions are larger anyway.)
#[test]
fn long_frames_cross_the_regions() {
    let data = capture(&GenConfig {
        frames: 1_000,
        payload_min: 16,
        payload_max: 40_000,
        ..GenConfig::default()
    });
    let with = |threads| {
        // Enough frames per thread for regions (not batch by batch).
        let mut o = opts(Layout::Soa, threads, 100, 5_000);
        o.cfg.max_payload = u16::MAX;
        run(&data, &o).unwrap()
    };
    let want = with(1);
    assert_eq!(want.frames, 5_000);
    for threads in [2, 3] {
        let got = with(threads);
        assert_same_run(&got, &want, &format!("{threads} threads"));
    }
}

#[test]
fn threads_need_the_soa_layout_and_input_needs_frames() {
    let data = capture(&GenConfig {
        frames: 100,
        ..GenConfig::default()
    });
    assert!(run(&data, &opts(Layout::Aos, 2, 10, 100)).is_err());
    assert!(run(b"no frames here at all", &opts(Layout::Soa, 1, 10, 100)).is_err());
}

#[test]
fn cli_json_report_has_the_promised_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args([
            "run",
            "--frames",
            "20000",
            "--json",
            "--quiet",
            "--layout",
            "aos",
            "--batch-size",
            "500",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "not one JSON object: {stdout}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in [
        "layout",
        "batch_size",
        "threads",
        "frames",
        "elapsed_s",
        "frames_per_s",
        "bytes_per_s",
    ] {
        assert!(!v[key].is_null(), "missing {key}");
    }
    assert_eq!(v["layout"], "aos");
    assert_eq!(v["batch_size"], 500);
    assert_eq!(v["frames"], 20000);
    for stage in ["decode", "validate", "dedup", "forward"] {
        for key in ["ns_per_frame", "allocs_per_batch", "alloc_bytes_per_batch"] {
            assert!(
                v["stages"][stage][key].is_number(),
                "missing stages.{stage}.{key}"
            );
        }
    }
    assert!(
        out.stderr.is_empty(),
        "--quiet printed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_run_rejects_threads_for_other_layouts() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args([
            "run",
            "--frames",
            "10",
            "--layout",
            "baseline",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}
