//! Vectored forwarding against its naive twin, through writers that take
//! less than they are offered: every partial-write path of `write_rows`.

use std::io::{self, IoSlice, Write};

use meridian_pipeline::batch::Batch;
use meridian_pipeline::forward::{write_rows, SLICES};
use meridian_pipeline::harness::naive::write_rows_naive;
use meridian_pipeline::wire::encode_frame;
use proptest::prelude::*;

/// Accepts at most `cap[i]` bytes on its i-th call (cycling), vectored or
/// not, and sometimes reports `Interrupted` instead.
struct Stingy {
    got: Vec<u8>,
    caps: Vec<usize>,
    calls: usize,
    interrupt_every: usize,
}

impl Stingy {
    fn next_cap(&mut self) -> Option<usize> {
        self.calls += 1;
        if self.interrupt_every > 0 && self.calls.is_multiple_of(self.interrupt_every) {
            return None;
        }
        Some(self.caps[self.calls % self.caps.len()])
    }
}

impl Write for Stingy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(cap) = self.next_cap() else {
            return Err(io::ErrorKind::Interrupted.into());
        };
        let n = cap.min(buf.len());
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(mut cap) = self.next_cap() else {
            return Err(io::ErrorKind::Interrupted.into());
        };
        let mut n = 0;
        for b in bufs {
            let take = cap.min(b.len());
            self.got.extend_from_slice(&b[..take]);
            n += take;
            cap -= take;
            if cap == 0 {
                break;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A batch of `n` frames with payloads of varied length.
fn batch(n: usize, seed: u64) -> Batch {
    let mut b = Batch::default();
    let mut rng = seed;
    for i in 0..n {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (rng >> 58) as usize; // 0..64
        let mut f = Vec::new();
        encode_frame(&mut f, (i % 5) as u32, i as u64, 0, &vec![i as u8; len]);
        b.push((i % 5) as u32, i as u64, 0, &f);
    }
    b
}

proptest! {
    #[test]
    fn vectored_forward_matches_naive_through_short_writes(
        n in 0usize..(3 * SLICES),
        seed in any::<u64>(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..(3 * SLICES)),
        caps in prop::collection::vec(1usize..200, 1..8),
        interrupt_every in prop_oneof![Just(0usize), 2usize..5],
    ) {
        let b = batch(n, seed);
        // Any row list: repeats, gaps and runs of neighbours all happen.
        let row_ids: Vec<u32> = if n == 0 {
            Vec::new()
        } else {
            picks.iter().map(|p| p.index(n) as u32).collect()
        };
        let mut want = Vec::new();
        let want_n = write_rows_naive(&b, &row_ids, &mut want).unwrap();
        let mut w = Stingy { got: Vec::new(), caps, calls: 0, interrupt_every };
        let got_n = write_rows(&b, &row_ids, &mut w).unwrap();
        prop_assert_eq!(got_n, want_n);
        prop_assert!(w.got == want, "bytes differ");
    }
}

#[test]
fn a_writer_that_takes_nothing_is_an_error_not_a_loop() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Ok(0)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let b = batch(10, 1);
    let err = write_rows(&b, &[0, 1, 2], &mut Full).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
}
