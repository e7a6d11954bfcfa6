//! The instruction-count regression gate: callgrind counts instructions, not
//! seconds, so the counts are the same on a busy machine and an idle one.
//! Each benchmark fails (gungraun exits with 3) when its instruction count
//! rises past the committed limit per frame times its frames.
//!
//! Run: `cargo bench --bench instructions --features instruction-gate`
//! (needs valgrind and `cargo install gungraun-runner --version 0.20.0`).
//! `.ci/run` runs it. When a change makes the pipeline cheaper, lower the
//! limits to the new count plus the same headroom, in the same commit.

#![allow(
    missing_docs,
    reason = "gungraun's macros generate undocumented modules"
)]

use std::hint::black_box;

use gungraun::prelude::*;
use gungraun::{Callgrind, EventKind};

use meridian_pipeline::batch::Batch;
use meridian_pipeline::decode::Decoder;
use meridian_pipeline::harness::gen::{capture, GenConfig};
use meridian_pipeline::harness::layout::{run_all, soa::Soa};
use meridian_pipeline::Config;

/// Frames per gated run: enough that per-run setup is noise, few enough
/// that callgrind takes seconds.
const FRAMES: u64 = 20_000;

/// Limit for the soa pipeline at batch 1000, decode included, in
/// instructions per frame: measured 383.7 (7,673,881 for 20,000 frames
/// after 36b0105's one-pass window, frames left in the input; valgrind
/// 3.19; callgrind's CPU has no AVX-512, so the four-lane PCLMULQDQ CRC
/// kernel and the scalar dedup twins run) plus 5%. Before: 384.9 at
/// 024077e, 385.6 at fc2eb44, 387.9 at 00ee295, 398.4 at 429000f,
/// 475.1 at 124a354, 483.2 at 2c5b11a, 590.7 before the performance round
/// (d9ed454).
const PIPELINE_IR_PER_FRAME: u64 = 403;
/// Limit for decode alone (default workload, 16..128-byte payloads):
/// measured 240.5 (4,809,682 for 20,000 frames at 124a354 and 429000f) plus
/// 5%. Before: 248.9 at 2c5b11a, 272.4 at d9ed454.
const DECODE_IR_PER_FRAME: u64 = 253;

fn workload() -> Vec<u8> {
    capture(&GenConfig {
        frames: FRAMES,
        ..GenConfig::default()
    })
}

fn limit(per_frame: u64) -> LibraryBenchmarkConfig {
    let mut config = LibraryBenchmarkConfig::default();
    config.tool(Callgrind::default().hard_limits([(EventKind::Ir, per_frame * FRAMES)]));
    config
}

#[library_benchmark]
#[bench::batch_1000(args = (workload()), config = limit(PIPELINE_IR_PER_FRAME))]
fn soa_pipeline(data: Vec<u8>) -> usize {
    let mut engine = Soa::new(Config::default());
    let mut out = Vec::with_capacity(data.len());
    let summary = run_all(&mut engine, black_box(&data), 1000, &mut out).unwrap();
    assert_eq!(summary.decode.frames_decoded, FRAMES);
    black_box(out.len())
}

#[library_benchmark]
#[bench::default_workload(args = (workload()), config = limit(DECODE_IR_PER_FRAME))]
fn decode(data: Vec<u8>) -> u64 {
    let mut decoder = Decoder::new(Config::default().max_payload);
    let mut batch = Batch::with_capacity(1000, 152);
    let mut pos = 0;
    while pos < data.len() {
        batch.clear();
        pos += decoder.decode(black_box(&data[pos..]), true, &mut batch, 1000);
    }
    assert_eq!(decoder.stats().frames_decoded, FRAMES);
    black_box(decoder.stats().frames_decoded)
}

library_benchmark_group!(name = gate, benchmarks = [soa_pipeline, decode]);

main!(library_benchmark_groups = gate);
