//! Criterion benchmarks: the whole pipeline per layout and batch size, each
//! stage against its alternatives, and the data-parallel thread mode.
//!
//! All data is built once, outside the timing closures, from seeded
//! synthetic traffic. Before anything is timed, the engines being compared
//! are run once and their outputs asserted equal, so a wrong engine fails
//! instead of being timed. `cargo bench -- pipeline/soa` style filters work.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

use meridian_pipeline::batch::Batch;
use meridian_pipeline::crc;
use meridian_pipeline::decode::Decoder;
use meridian_pipeline::dedup::naive::NaiveDedup;
use meridian_pipeline::dedup::{Dedup, SortUnique, StalePolicy, WindowLimits, DEFAULT_WINDOW};
use meridian_pipeline::forward::write_rows;
use meridian_pipeline::harness::first_version::{FirstVersionJob, Row};
use meridian_pipeline::harness::gen::{capture, GenConfig};
use meridian_pipeline::harness::layout::{run_all, Layout};
use meridian_pipeline::harness::naive::write_rows_naive;
use meridian_pipeline::harness::runner::{run, Limit, Progress, RunOptions};
use meridian_pipeline::validate::{scalar, set_bits, simd};
use meridian_pipeline::Config;

/// Frames in the capture the pipeline and stage groups run over.
const FRAMES: u64 = 100_000;
const BATCH_SIZES: [usize; 5] = [100, 500, 1000, 5000, 65_536];

fn quick(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn workload(frames: u64, payload: (u16, u16)) -> Vec<u8> {
    capture(&GenConfig {
        frames,
        payload_min: payload.0,
        payload_max: payload.1,
        ..GenConfig::default()
    })
}

/// Decodes `data` into batches of `batch_size`.
fn batches(data: &[u8], batch_size: usize) -> Vec<Batch> {
    let mut decoder = Decoder::new(Config::default().max_payload);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let mut b = Batch::default();
        pos += decoder.decode(&data[pos..], true, &mut b, batch_size);
        if b.is_empty() {
            break;
        }
        out.push(b);
    }
    out
}

fn masks(batches: &[Batch]) -> Vec<Vec<u64>> {
    let max_sat = Config::default().max_sat;
    batches
        .iter()
        .map(|b| {
            let mut m = Vec::new();
            simd::valid_mask(&b.sat, &b.flags, max_sat, &mut m);
            m
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let data = workload(FRAMES, (16, 128));
    let mut g = c.benchmark_group("pipeline");
    quick(&mut g);
    g.throughput(Throughput::Elements(FRAMES));
    for batch_size in BATCH_SIZES {
        let cfg = Config {
            batch_size,
            ..Config::default()
        };
        let mut outputs = Layout::ALL.map(|layout| {
            let mut out = Vec::new();
            run_all(layout.engine(cfg).as_mut(), &data, batch_size, &mut out).unwrap();
            out
        });
        assert!(!outputs[0].is_empty());
        assert!(
            outputs.iter().all(|o| *o == outputs[0]),
            "layouts disagree at batch {batch_size}"
        );
        for (layout, out) in Layout::ALL.into_iter().zip(outputs.iter_mut()) {
            let mut engine = layout.engine(cfg);
            g.bench_with_input(
                BenchmarkId::new(layout.name(), batch_size),
                &data,
                |b, data| {
                    b.iter(|| {
                        engine.reset_window();
                        out.clear();
                        run_all(engine.as_mut(), black_box(data), batch_size, out).unwrap();
                        black_box(out.len())
                    })
                },
            );
        }
    }
    g.finish();
}

fn stage_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("stage");
    quick(&mut g);
    for (name, frames, payload) in [
        ("header-only", FRAMES, (0, 0)),
        ("payload-1115", 20_000, (1115, 1115)),
    ] {
        let data = workload(frames, payload);
        let mut batch = Batch::with_capacity(1000, 24 + payload.1 as usize);
        let mut check = Decoder::new(4096);
        let mut pos = 0;
        let mut decoded = 0;
        while pos < data.len() {
            batch.clear();
            pos += check.decode(&data[pos..], true, &mut batch, 1000);
            decoded += batch.len() as u64;
        }
        assert_eq!(decoded, frames);
        assert_eq!(check.stats().skipped_bytes, 0);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("decode", name), &data, |b, data| {
            b.iter(|| {
                let mut decoder = Decoder::new(4096);
                let mut pos = 0;
                while pos < data.len() {
                    batch.clear();
                    pos += decoder.decode(black_box(&data[pos..]), true, &mut batch, 1000);
                }
                black_box(decoder.stats().frames_decoded)
            })
        });
    }
    g.finish();
}

fn stage_validate(c: &mut Criterion) {
    let data = workload(FRAMES, (16, 128));
    let all = batches(&data, 1000);
    let max_sat = Config::default().max_sat;
    let mut g = c.benchmark_group("stage");
    quick(&mut g);
    g.throughput(Throughput::Elements(FRAMES));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for batch in &all {
        assert_eq!(
            simd::valid_mask(&batch.sat, &batch.flags, max_sat, &mut a),
            scalar::valid_mask(&batch.sat, &batch.flags, max_sat, &mut b)
        );
        assert_eq!(a, b);
    }
    let mut mask = Vec::new();
    g.bench_function("validate/simd", |bench| {
        bench.iter(|| {
            let mut valid = 0;
            for batch in &all {
                valid += simd::valid_mask(
                    black_box(&batch.sat),
                    black_box(&batch.flags),
                    max_sat,
                    &mut mask,
                );
            }
            black_box(valid)
        })
    });
    g.bench_function("validate/scalar", |bench| {
        bench.iter(|| {
            let mut valid = 0;
            for batch in &all {
                valid += scalar::valid_mask(
                    black_box(&batch.sat),
                    black_box(&batch.flags),
                    max_sat,
                    &mut mask,
                );
            }
            black_box(valid)
        })
    });
    g.finish();
}

/// The CRC bodies (bytes 4 .. len - 4) of every frame of the default
/// workload: the messages the decoder checks.
fn crc_bodies(data: &[u8]) -> Vec<&[u8]> {
    let all = batches(data, 1000);
    let mut spans = Vec::new();
    let mut at = 0;
    for b in &all {
        for i in 0..b.len() {
            let n = b.frame_len[i] as usize;
            spans.push((at + 4, at + n - 4));
            at += n;
        }
    }
    assert_eq!(at, data.len(), "the workload is frames back to back");
    spans.into_iter().map(|(a, b)| &data[a..b]).collect()
}

fn stage_crc(c: &mut Criterion) {
    let data = workload(FRAMES, (16, 128));
    let bodies = crc_bodies(&data);
    let quads: Vec<[&[u8]; 4]> = bodies
        .chunks_exact(4)
        .map(|q| [q[0], q[1], q[2], q[3]])
        .collect();
    let kernels = crc::Kernel::available();
    for q in &quads {
        for k in &kernels {
            assert_eq!(k.crc32_4(*q), q.map(crc::crc32));
        }
    }
    let mut g = c.benchmark_group("stage");
    quick(&mut g);
    g.throughput(Throughput::Elements(4 * quads.len() as u64));
    g.bench_function("crc/crc32fast-each", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for q in &quads {
                for m in q {
                    acc ^= crc::crc32(black_box(m));
                }
            }
            black_box(acc)
        })
    });
    for k in kernels {
        g.bench_function(format!("crc/four-lane-{}", k.name()), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for q in &quads {
                    for c in k.crc32_4(black_box(*q)) {
                        acc ^= c;
                    }
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

/// The stages after decode on the same rows, Meridian's (validate, in-batch
/// dedup, window, rows in (sat, seq) order as an index list) against the
/// first-version job (`harness::first_version`: tuples, a `HashSet` cleared
/// per batch, `to_vec`, no sort, no window).
fn after_decode(c: &mut Criterion) {
    const ROWS: u64 = 1_000_000;
    let data = workload(ROWS, (0, 0));
    let max_sat = Config::default().max_sat;
    let mut g = c.benchmark_group("after-decode");
    quick(&mut g);
    g.throughput(Throughput::Elements(ROWS));
    for batch_size in [1000, 65_536] {
        let all = batches(&data, batch_size);
        let tuples: Vec<Vec<Row>> = all
            .iter()
            .map(|b| {
                (0..b.len())
                    .map(|i| (b.sat[i], b.seq[i], b.flags[i]))
                    .collect()
            })
            .collect();
        // Before timing: the same in-batch survivors (as sets), and the
        // window only ever drops more.
        let mut job = FirstVersionJob::default();
        let mut dedup = Dedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::OFF);
        let (mut sorter, mut mask, mut first, mut forward) =
            (SortUnique::default(), Vec::new(), Vec::new(), Vec::new());
        for (b, t) in all.iter().zip(&tuples) {
            simd::valid_mask(&b.sat, &b.flags, max_sat, &mut mask);
            sorter.run(b, &mask, &mut first);
            let mut theirs = job.run(t, max_sat);
            dedup.run(b, &mask, &mut forward);
            assert!(forward.iter().all(|r| theirs.contains(r)));
            theirs.sort_unstable();
            first.sort_unstable();
            assert_eq!(theirs, first, "in-batch survivors differ");
        }
        g.bench_function(BenchmarkId::new("meridian", batch_size), |bench| {
            bench.iter(|| {
                dedup.reset();
                let mut kept = 0;
                for b in &all {
                    simd::valid_mask(black_box(&b.sat), &b.flags, max_sat, &mut mask);
                    dedup.run(b, &mask, &mut forward);
                    kept += forward.len();
                }
                black_box(kept)
            })
        });
        g.bench_function(BenchmarkId::new("first-version", batch_size), |bench| {
            bench.iter(|| {
                let mut kept = 0;
                for t in &tuples {
                    kept += job.run(black_box(t), max_sat).len();
                }
                black_box(kept)
            })
        });
    }
    g.finish();
}

/// In-batch dedup with a `HashSet`: first copy wins, then the survivors are
/// sorted by (sat, seq). The hash-based alternative to sort-and-unique.
fn hashset_dedup(batch: &Batch, mask: &[u64], seen: &mut HashSet<(u32, u64)>, out: &mut Vec<u32>) {
    seen.clear();
    out.clear();
    for i in set_bits(mask) {
        if seen.insert((batch.sat[i], batch.seq[i])) {
            out.push(i as u32);
        }
    }
    out.sort_unstable_by_key(|&r| (batch.sat[r as usize], batch.seq[r as usize]));
}

fn stage_dedup(c: &mut Criterion) {
    let data = workload(FRAMES, (16, 128));
    let all = batches(&data, 1000);
    let all_masks = masks(&all);
    let valid: Vec<Vec<(u32, u32, u64)>> = all
        .iter()
        .zip(&all_masks)
        .map(|(b, m)| {
            set_bits(m)
                .map(|i| (i as u32, b.sat[i], b.seq[i]))
                .collect()
        })
        .collect();

    // Before timing: sort-and-unique equals the HashSet dedup batch by batch,
    // and the full dedup (with window) equals the naive twin.
    let (mut sorter, mut seen, mut x, mut y) = (
        SortUnique::default(),
        HashSet::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut dedup = Dedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::OFF);
    let mut naive = NaiveDedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::OFF);
    let mut radix = SortUnique::radix_only();
    for ((batch, mask), v) in all.iter().zip(&all_masks).zip(&valid) {
        sorter.run(batch, mask, &mut x);
        hashset_dedup(batch, mask, &mut seen, &mut y);
        assert_eq!(x, y);
        radix.run(batch, mask, &mut y);
        assert_eq!(x, y);
        let counts = dedup.run(batch, mask, &mut x);
        let (rows, want) = naive.run(v);
        assert_eq!((x.clone(), counts), (rows, want));
    }

    let mut g = c.benchmark_group("stage");
    quick(&mut g);
    g.throughput(Throughput::Elements(FRAMES));
    g.bench_function("dedup/sort-unique", |b| {
        b.iter(|| {
            let mut dups = 0;
            for (batch, mask) in all.iter().zip(&all_masks) {
                dups += sorter.run(black_box(batch), mask, &mut x);
            }
            black_box(dups)
        })
    });
    g.bench_function("dedup/sort-unique-radix-only", |b| {
        b.iter(|| {
            let mut dups = 0;
            for (batch, mask) in all.iter().zip(&all_masks) {
                dups += radix.run(black_box(batch), mask, &mut x);
            }
            black_box(dups)
        })
    });
    g.bench_function("dedup/hashset", |b| {
        b.iter(|| {
            for (batch, mask) in all.iter().zip(&all_masks) {
                hashset_dedup(black_box(batch), mask, &mut seen, &mut y);
            }
            black_box(y.len())
        })
    });
    g.bench_function("dedup/sort-unique+window", |b| {
        b.iter(|| {
            dedup.reset();
            for (batch, mask) in all.iter().zip(&all_masks) {
                black_box(dedup.run(black_box(batch), mask, &mut x));
            }
        })
    });
    // The same with the service's limits (suspect keys, re-anchoring, lazy
    // rings, the memory budget), checked against the naive twin first.
    let mut service = Dedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::SERVICE);
    let mut naive = NaiveDedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::SERVICE);
    for ((batch, mask), v) in all.iter().zip(&all_masks).zip(&valid) {
        let counts = service.run(batch, mask, &mut x);
        assert_eq!((x.clone(), counts), naive.run(v));
    }
    g.bench_function("dedup/sort-unique+window-service", |b| {
        b.iter(|| {
            service.reset();
            for (batch, mask) in all.iter().zip(&all_masks) {
                black_box(service.run(black_box(batch), mask, &mut x));
            }
        })
    });
    g.bench_function("dedup/naive+window", |b| {
        b.iter(|| {
            let mut naive =
                NaiveDedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::OFF);
            for v in &valid {
                black_box(naive.run(black_box(v)));
            }
        })
    });
    g.finish();
}

fn stage_forward(c: &mut Criterion) {
    let data = workload(FRAMES, (16, 128));
    let all = batches(&data, 1000);
    let all_masks = masks(&all);
    let mut dedup = Dedup::new(DEFAULT_WINDOW, StalePolicy::Forward, WindowLimits::OFF);
    let lists: Vec<Vec<u32>> = all
        .iter()
        .zip(&all_masks)
        .map(|(b, m)| {
            let mut rows = Vec::new();
            dedup.run(b, m, &mut rows);
            rows
        })
        .collect();
    let forwarded: u64 = lists.iter().map(|l| l.len() as u64).sum();
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for (b, rows) in all.iter().zip(&lists) {
        write_rows(b, rows, &mut fast).unwrap();
        write_rows_naive(b, rows, &mut slow).unwrap();
    }
    assert!(fast == slow && !fast.is_empty());

    let mut g = c.benchmark_group("stage");
    quick(&mut g);
    g.throughput(Throughput::Elements(forwarded));
    let mut sink = Vec::with_capacity(fast.len());
    g.bench_function("forward/vectored", |b| {
        b.iter(|| {
            sink.clear();
            for (batch, rows) in all.iter().zip(&lists) {
                write_rows(batch, black_box(rows), &mut sink).unwrap();
            }
            black_box(sink.len())
        })
    });
    g.bench_function("forward/write-all-per-frame", |b| {
        b.iter(|| {
            sink.clear();
            for (batch, rows) in all.iter().zip(&lists) {
                write_rows_naive(batch, black_box(rows), &mut sink).unwrap();
            }
            black_box(sink.len())
        })
    });
    g.finish();
}

fn parallel(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let data = workload(N, (16, 128));
    let opts = |threads: usize, batch_size: usize, digest: bool| RunOptions {
        layout: Layout::Soa,
        threads,
        cfg: Config {
            batch_size,
            ..Config::default()
        },
        limit: Limit::Frames(N),
        progress: Progress::Quiet,
        digest,
    };
    let threads: Vec<usize> = {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut t = vec![1, 2];
        t.extend((3..=cores).filter(|n| n.is_power_of_two()));
        t
    };
    let mut g = c.benchmark_group("parallel");
    quick(&mut g);
    g.throughput(Throughput::Elements(N));
    for batch_size in [1000, 65_536] {
        let want = run(&data, &opts(1, batch_size, true))
            .unwrap()
            .forwarded_crc32;
        for &t in &threads[1..] {
            assert_eq!(
                run(&data, &opts(t, batch_size, true))
                    .unwrap()
                    .forwarded_crc32,
                want
            );
        }
        for &t in &threads {
            g.bench_with_input(
                BenchmarkId::new(format!("threads-{t}"), batch_size),
                &data,
                |b, data| {
                    b.iter(|| {
                        black_box(
                            run(black_box(data), &opts(t, batch_size, false))
                                .unwrap()
                                .frames,
                        )
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    pipeline,
    stage_decode,
    stage_crc,
    after_decode,
    stage_validate,
    stage_dedup,
    stage_forward,
    parallel
);
criterion_main!(benches);
