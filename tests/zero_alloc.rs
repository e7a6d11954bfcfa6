//! After warm-up, the soa pipeline allocates nothing per batch, in any stage,
//! sequentially and in the pipelined `--threads 2` mode. Its own test binary,
//! because it installs the counting allocator as the global allocator.

use meridian_pipeline::alloc_count::{thread_count, CountingAlloc};
use meridian_pipeline::batch::Batch;
use meridian_pipeline::decode::Decoder;
use meridian_pipeline::gen::{capture, GenConfig};
use meridian_pipeline::layout::Layout;
use meridian_pipeline::runner::{run, Limit, Progress, RunOptions};
use meridian_pipeline::{Config, Pipeline};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WARMUP: usize = 8;

#[test]
fn soa_stages_allocate_nothing_after_warm_up() {
    let data = capture(&GenConfig {
        frames: 40_000,
        ..GenConfig::default()
    });
    let cfg = Config::default();
    let mut decoder = Decoder::new(cfg.max_payload);
    let mut batch = Batch::default();
    let mut pipeline = Pipeline::new(cfg);
    let mut sink = Vec::new();
    let mut checked = 0;
    // Three passes over the input, the window reset between them, as `run` replays.
    for pass in 0..3 {
        if pass > 0 {
            let before = thread_count();
            pipeline.reset_window();
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
            let stage = |name: &str, f: &mut dyn FnMut()| {
                let before = thread_count();
                f();
                let made = thread_count().since(before);
                if steady {
                    assert_eq!(
                        made.allocs, 0,
                        "{name} allocated {} bytes in batch {n} of pass {pass}",
                        made.bytes
                    );
                }
            };
            stage("decode", &mut || {
                batch.clear();
                pos += decoder.decode(&data[pos..], true, &mut batch, cfg.batch_size);
            });
            stage("validate", &mut || pipeline.validate(&batch));
            stage("dedup", &mut || pipeline.dedup(&batch));
            stage("forward", &mut || {
                sink.clear();
                pipeline.forward(&batch, &mut sink).unwrap();
            });
            if steady {
                checked += 1;
            }
            n += 1;
        }
    }
    assert!(checked >= 100, "only {checked} batches checked");
    assert!(pipeline.stats().forwarded > 0);
}

#[test]
fn runner_reports_zero_allocations_per_stage_sequential_and_pipelined() {
    let data = capture(&GenConfig {
        frames: 20_000,
        ..GenConfig::default()
    });
    for threads in [1, 2] {
        let opts = RunOptions {
            layout: Layout::Soa,
            threads,
            cfg: Config::default(),
            limit: Limit::Frames(100_000),
            progress: Progress::Quiet,
            digest: false,
        };
        let r = run(&data, &opts).unwrap();
        assert_eq!(r.frames, 100_000);
        assert!(r.passes >= 5, "{} passes", r.passes);
        for (name, s) in [
            ("decode", r.stages.decode),
            ("validate", r.stages.validate),
            ("dedup", r.stages.dedup),
            ("forward", r.stages.forward),
        ] {
            assert_eq!(
                s.allocs_per_batch, 0.0,
                "{name} with {threads} threads: {s:?}"
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
        r.stages.decode.allocs_per_batch >= 1000.0,
        "{:?}",
        r.stages.decode
    );
    assert!(
        r.stages.dedup.allocs_per_batch > 0.0,
        "{:?}",
        r.stages.dedup
    );
}
