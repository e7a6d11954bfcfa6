//! `process` on two threads (reading and decoding on a thread of its own,
//! `pipeline::process_stream_each_split`): the output, the summary and the
//! gap report are one thread's, on arbitrary and hostile captures, and also
//! when it stops early, a read fails or a write fails.

mod common;

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::{config, hostile_capture, stream, Chunked};
use meridian_pipeline::gaps::{process_stream_gaps, GapReport};
use meridian_pipeline::pipeline::{process_stream_each, process_stream_each_split, ProcessError};
use meridian_pipeline::{Config, Summary};
use proptest::prelude::*;

/// How long a two-thread run may take before the test fails: every wait in
/// these tests is bounded, a hang included.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` on a thread of its own and returns its result, failing the test
/// when it does not return within [`LIMIT`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|e| panic!("{what}: no result within {LIMIT:?} ({e})"))
}

/// `process_stream_gaps` on `threads` threads: output, summary, stopped, gaps.
fn process(
    data: Vec<u8>,
    sizes: Vec<usize>,
    cfg: Config,
    threads: usize,
) -> (Vec<u8>, Summary, bool, GapReport) {
    bounded("process_stream_gaps", move || {
        let mut out = Vec::new();
        let (summary, stopped, gaps) = process_stream_gaps(
            Chunked::new(&data, sizes),
            &mut out,
            cfg,
            &|| false,
            threads,
        )
        .expect("an in-memory run succeeds");
        (out, summary, stopped, gaps.report(true))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary streams, options and read sizes: two threads give one
    /// thread's bytes, counters and gaps.
    #[test]
    fn two_threads_process_as_one(
        data in stream(),
        cfg in config(),
        sizes in prop::collection::vec(1usize..100, 1..6),
    ) {
        let one = process(data.clone(), sizes.clone(), cfg, 1);
        let two = process(data, sizes, cfg, 2);
        prop_assert!(!one.2 && !two.2);
        prop_assert_eq!(&two.0, &one.0);
        prop_assert_eq!(two.1, one.1);
        prop_assert_eq!(&two.3.satellites, &one.3.satellites);
    }
}

#[test]
fn a_hostile_capture_at_every_batch_size() {
    let data = hostile_capture();
    for batch_size in [1, 7, 100, 1000, 65_536] {
        let cfg = Config {
            batch_size,
            ..Config::default()
        };
        let one = process(data.clone(), vec![4096, 100_000, 13], cfg, 1);
        let two = process(data.clone(), vec![4096, 100_000, 13], cfg, 2);
        assert!(
            one.1.pipeline.forwarded > 10_000,
            "batch {batch_size}: {:?}",
            one.1
        );
        assert!(one.1.decode.crc_errors > 0 && one.1.decode.skipped_bytes > 0);
        assert_eq!(two.0, one.0, "batch {batch_size}: output");
        assert_eq!(two.1, one.1, "batch {batch_size}: summary");
        assert_eq!(
            two.3.satellites, one.3.satellites,
            "batch {batch_size}: gaps"
        );
    }
}

/// A `stop` that turns true on its `k`-th call (once per batch processed).
fn stop_after(k: usize) -> impl Fn() -> bool {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    move || calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= k
}

/// Stopped between batches, two threads have written and counted what one
/// thread had: the batches decoded ahead and never processed are neither
/// written nor counted.
#[test]
fn stopping_early_writes_and_counts_what_one_thread_does() {
    let data = hostile_capture();
    let cfg = Config {
        batch_size: 100,
        ..Config::default()
    };
    for k in [1, 2, 9, 57] {
        let run = |split: bool| {
            let data = data.clone();
            bounded("a stopped run", move || {
                let mut out = Vec::new();
                let stop = stop_after(k);
                let (summary, stopped) = if split {
                    process_stream_each_split(&data[..], &mut out, cfg, &stop, |_, _| {})
                } else {
                    process_stream_each(&data[..], &mut out, cfg, &stop, |_, _| {})
                }
                .expect("an in-memory run succeeds");
                (out, summary, stopped)
            })
        };
        let (one, two) = (run(false), run(true));
        assert!(one.2 && two.2, "k {k}: both stopped");
        assert_eq!(one.1.pipeline.batches, k as u64, "k {k}");
        assert_eq!(two.0, one.0, "k {k}: output");
        assert_eq!(two.1, one.1, "k {k}: summary");
    }
}

/// Yields `data`, then fails every read once `fail_at` bytes are out.
struct FailingReader {
    data: Vec<u8>,
    at: usize,
    fail_at: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.fail_at {
            return Err(io::Error::other("the disk went away"));
        }
        let n = buf.len().min(self.fail_at - self.at).min(4096);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Accepts `room` bytes, then fails every write.
struct FailingWriter {
    got: Vec<u8>,
    room: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.got.len() >= self.room {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"));
        }
        let n = buf.len().min(self.room - self.got.len());
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read error mid-stream: both report it, after writing the same whole
/// batches (those decoded before it).
#[test]
fn a_read_error_is_reported_after_the_batches_before_it() {
    let data = hostile_capture();
    let fail_at = data.len() / 3;
    let cfg = Config {
        batch_size: 100,
        ..Config::default()
    };
    let run = |split: bool| {
        let data = data.clone();
        bounded("a failing read", move || {
            let input = FailingReader {
                data,
                at: 0,
                fail_at,
            };
            let mut out = Vec::new();
            let result = if split {
                process_stream_each_split(input, &mut out, cfg, &|| false, |_, _| {})
            } else {
                process_stream_each(input, &mut out, cfg, &|| false, |_, _| {})
            };
            let read_failed = matches!(result, Err(ProcessError::Read(_)));
            (out, read_failed)
        })
    };
    let (one, two) = (run(false), run(true));
    assert!(one.1 && two.1, "both report the read error");
    assert!(!one.0.is_empty(), "batches before the error were written");
    assert_eq!(two.0, one.0);
}

/// A write error (a full disk): both threads stop and the error is
/// reported, with the bytes that fitted written.
#[test]
fn a_write_error_stops_both_threads() {
    let data = hostile_capture();
    for room in [0, 1, 50_000] {
        let run = |split: bool| {
            let data = data.clone();
            bounded("a failing write", move || {
                let mut out = FailingWriter {
                    got: Vec::new(),
                    room,
                };
                let cfg = Config::default();
                let result = if split {
                    process_stream_each_split(&data[..], &mut out, cfg, &|| false, |_, _| {})
                } else {
                    process_stream_each(&data[..], &mut out, cfg, &|| false, |_, _| {})
                };
                let write_failed = matches!(result, Err(ProcessError::Write(_)));
                (out.got, write_failed)
            })
        };
        let (one, two) = (run(false), run(true));
        assert!(one.1 && two.1, "room {room}: both report the write error");
        assert_eq!(one.0.len(), room);
        assert_eq!(two.0, one.0, "room {room}");
    }
}
