//! After warm-up, the soa pipeline allocates nothing per batch, in any stage,
//! sequentially and in the data-parallel `--threads 2` mode. Its own test binary,
//! because it installs the counting allocator as the global allocator.

use meridian_pipeline::batch::Batch;
use meridian_pipeline::decode::Decoder;
use meridian_pipeline::harness::alloc_count::{thread_count, AllocCount, CountingAlloc};
use meridian_pipeline::harness::gen::{capture, GenConfig};
use meridian_pipeline::harness::layout::Layout;
use meridian_pipeline::harness::runner::{run, Limit, Progress, RunOptions};
use meridian_pipeline::stage::{Probe, Stage};
use meridian_pipeline::{BatchProcessor, Config};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WARMUP: usize = 8;

/// A probe that records this thread's allocations inside each stage.
#[derive(Default)]
struct AllocProbe {
    at: AllocCount,
    made: Vec<(Stage, AllocCount)>,
}

impl Probe for AllocProbe {
    fn before(&mut self, _: Stage) {
        self.at = thread_count();
    }
    fn after(&mut self, stage: Stage) {
        let made = thread_count().since(self.at);
        self.made.push((stage, made));
    }
}

#[test]
fn soa_stages_allocate_nothing_after_warm_up() {
    let data = capture(&GenConfig {
        frames: 40_000,
        ..GenConfig::default()
    });
    let cfg = Config::default();
    let mut decoder = Decoder::new(cfg.max_payload);
    let mut batch = Batch::default();
    let mut stages = BatchProcessor::new(cfg);
    let mut out = Vec::new();
    let mut probe = AllocProbe::default();
    probe.made.reserve(64);
    let mut checked = 0;
    // Three passes over the input, the window reset between them, as `run` replays.
    for pass in 0..3 {
        if pass > 0 {
            let before = thread_count();
            stages.reset_window();
            assert_eq!(
                thread_count().since(before).allocs,
                0,
                "window reset allocated"
            );
        }
        let mut pos = 0;
        let mut n = 0;
        while pos < data.len() {
            let steady = pass > 0 || n >= WARMUP;
            probe.made.clear();
            probe.before(Stage::Decode);
            batch.clear();
            pos += decoder.decode(&data[pos..], true, &mut batch, cfg.batch_size);
            probe.after(Stage::Decode);
            out.clear();
            stages.process(&batch, &mut out, &mut probe).unwrap();
            let seen: Vec<Stage> = probe.made.iter().map(|&(s, _)| s).collect();
            assert_eq!(seen, Stage::ALL, "the driver skipped or reordered a stage");
            if steady {
                for &(stage, made) in &probe.made {
                    assert_eq!(
                        made.allocs,
                        0,
                        "{} allocated {} bytes in batch {n} of pass {pass}",
                        stage.name(),
                        made.bytes
                    );
                }
                checked += 1;
            }
            n += 1;
        }
    }
    assert!(checked >= 100, "only {checked} batches checked");
    assert!(stages.stats().forwarded > 0);
}

#[test]
fn runner_reports_zero_allocations_per_stage_sequential_and_parallel() {
    let data = capture(&GenConfig {
        frames: 20_000,
        ..GenConfig::default()
    });
    // The parallel mode warms up over more batches (its buffers are first
    // used in later supersteps): enough frames that most batches count.
    let frames = 600_000;
    for threads in [1, 2, 3] {
        let opts = RunOptions {
            layout: Layout::Soa,
            threads,
            cfg: Config::default(),
            limit: Limit::Frames(frames),
            progress: Progress::Quiet,
            digest: false,
        };
        let r = run(&data, &opts).unwrap();
        assert_eq!(r.frames, frames);
        assert!(r.passes >= 5, "{} passes", r.passes);
        assert!(
            r.batches >= 2 * r.warmup_batches + 100,
            "{threads} threads: {} batches, {} of them warm-up",
            r.batches,
            r.warmup_batches
        );
        for stage in Stage::ALL {
            let s = r.stages[stage];
            assert_eq!(
                s.allocs_per_batch,
                0.0,
                "{} with {threads} threads: {s:?}",
                stage.name()
            );
        }
    }
    // The baseline does allocate, so the counter does see allocations.
    let opts = RunOptions {
        layout: Layout::Baseline,
        threads: 1,
        cfg: Config::default(),
        limit: Limit::Frames(30_000),
        progress: Progress::Quiet,
        digest: false,
    };
    let r = run(&data, &opts).unwrap();
    assert!(
        r.stages[Stage::Decode].allocs_per_batch >= 1000.0,
        "{:?}",
        r.stages[Stage::Decode]
    );
    assert!(
        r.stages[Stage::Dedup].allocs_per_batch > 0.0,
        "{:?}",
        r.stages[Stage::Dedup]
    );
}

/// The dedup stage's scratch is sized by the batch's rows, not by its valid
/// rows: a batch with more valid rows than any before (the first with none
/// invalid, which the default workload sees once in tens of thousands of
/// batches) allocates nothing either.
#[test]
fn dedup_allocates_nothing_when_more_rows_are_valid_than_before() {
    use meridian_pipeline::dedup::{Dedup, StalePolicy, WindowLimits, DEFAULT_WINDOW};
    let mut dedup = Dedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::OFF);
    let mut forward = Vec::new();
    let mut batch = Batch::default();
    let rows = 1000u64;
    let mut made = Vec::new();
    for (k, valid_every) in [7u64, 7, 7, 7, 0, 0].into_iter().enumerate() {
        batch.clear();
        let mut mask = vec![0u64; (rows as usize).div_ceil(64)];
        for i in 0..rows {
            // Each batch far above the last: no guess from the last batch holds it.
            let (sat, seq) = ((i % 48) as u32, 1_000 + k as u64 * 10_000 + i / 48);
            batch.push(sat, seq, 0, &[]);
            // Every seventh row invalid in the first batches, none after.
            if valid_every == 0 || i % valid_every != 0 {
                mask[(i / 64) as usize] |= 1 << (i % 64);
            }
        }
        let before = thread_count();
        dedup.run(&batch, &mask, &mut forward);
        made.push(thread_count().since(before).allocs);
        assert!(!forward.is_empty());
    }
    // The first batches warm up (the window's rings, the table); the batch
    // with every row valid and the one after it allocate nothing.
    assert_eq!(&made[3..], &[0, 0, 0], "allocations per batch: {made:?}");
}
