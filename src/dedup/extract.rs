//! Appending the rows a direct table keeps: for one 64-slot word of the
//! table, the slots whose bit is set in a mask, in slot order.
//!
//! The scalar loop pops one bit at a time: a step per kept row, and a
//! mispredicted loop exit per word, since a word keeps anywhere from 0 to
//! 64 rows. With AVX-512F ([`Extract::detect`], at run time) each 16 slots
//! are compressed by their 16 mask bits (`vpcompressd`) and stored whole:
//! four steps per word, none depending on the mask. [`Extract::SCALAR`] is
//! the twin the tests compare with.

/// How [`Extract::take`] appends kept rows. Only [`Extract::detect`] makes
/// the AVX-512 kind, so holding one proves the CPU has AVX-512F.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extract(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    Avx512,
}

impl Default for Extract {
    /// [`Extract::detect`].
    fn default() -> Extract {
        Extract::detect()
    }
}

impl Extract {
    /// One bit at a time: runs everywhere.
    pub const SCALAR: Extract = Extract(Kind::Scalar);

    /// The fastest kind this CPU runs.
    pub fn detect() -> Extract {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Extract(Kind::Avx512);
        }
        Extract::SCALAR
    }

    /// True for the AVX-512 kind.
    pub fn is_avx512(self) -> bool {
        self.0 == Kind::Avx512
    }

    /// Every kind this CPU runs, the twin first (for tests).
    pub fn available() -> Vec<Extract> {
        let mut all = vec![Extract::SCALAR];
        if Extract::detect() != Extract::SCALAR {
            all.push(Extract::detect());
        }
        all
    }

    /// Appends `slots[j]` to `out` for each set bit `j` of `kept`, in
    /// ascending `j`, from one word of a direct table, leaving its 64 slots
    /// as the next fill needs them: [`EMPTY`] for the AVX-512 kind (whose
    /// fill scatters and finds rows by what is not empty), untouched for
    /// the scalar kind (whose fill keeps a bitmap).
    #[inline]
    pub fn take(self, slots: &mut [u32; 64], kept: u64, out: &mut Vec<u32>) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => {
                // SAFETY: an `Extract` of this kind exists only when
                // `detect` found AVX-512F on this CPU.
                unsafe { x86::take(slots, kept, out) }
            }
            _ => push_scalar(slots, kept, out),
        }
    }
}

/// [`Extract::take`]'s appending, one bit at a time.
#[inline]
fn push_scalar(slots: &[u32; 64], mut kept: u64, out: &mut Vec<u32>) {
    while kept != 0 {
        out.push(slots[kept.trailing_zeros() as usize]);
        kept &= kept - 1;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::sort_unique::EMPTY;

    /// [`super::Extract::take`] with `vpcompressd`, 16 slots at a time,
    /// and [`EMPTY`] stored over the slots.
    #[target_feature(enable = "avx512f")]
    pub(super) fn take(slots: &mut [u32; 64], kept: u64, out: &mut Vec<u32>) {
        // SAFETY: `slots` holds 64 u32: four 16-lane unaligned loads.
        let lanes = std::array::from_fn(|q| unsafe {
            _mm512_loadu_si512(slots.as_ptr().add(16 * q).cast())
        });
        for q in 0..4 {
            // SAFETY: as the loads, and `slots` is borrowed mutably.
            unsafe {
                _mm512_storeu_si512(
                    slots.as_mut_ptr().add(16 * q).cast(),
                    _mm512_set1_epi32(EMPTY as i32),
                )
            };
        }
        append(&lanes, kept, out);
    }

    /// Appends lane `j % 16` of `lanes[j / 16]` for each set bit `j` of
    /// `kept`, in ascending `j`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn append(lanes: &[__m512i; 4], kept: u64, out: &mut Vec<u32>) {
        if kept == 0 {
            return;
        }
        // Each step stores 16 lanes whatever it keeps: room for the kept
        // rows plus one whole store past them.
        out.reserve(kept.count_ones() as usize + 16);
        let mut len = out.len();
        let base = out.as_mut_ptr();
        for (q, &lanes) in lanes.iter().enumerate() {
            let bits = (kept >> (16 * q)) as u16;
            let packed = _mm512_maskz_compress_epi32(bits, lanes);
            // SAFETY: `len` plus the rows still to come of `kept` is at
            // most `len + count_ones`, and the capacity leaves 16 more:
            // the 64-byte store stays within the allocation. Lanes past
            // the kept ones land beyond `len` and are overwritten or
            // left outside the vector.
            unsafe { _mm512_storeu_si512(base.add(len).cast(), packed) };
            len += bits.count_ones() as usize;
        }
        // SAFETY: every element below `len` was written above or before.
        unsafe { out.set_len(len) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::sort_unique::EMPTY;
    use super::*;

    /// Every kind's `take` appends what the scalar twin does, for random
    /// and edge masks, onto vectors of every small length and capacity.
    #[test]
    fn every_kind_matches_the_scalar_twin() {
        let kinds = Extract::available();
        eprintln!("extract kinds on this CPU: {kinds:?}");
        let mut rng = fastrand::Rng::with_seed(5);
        let mut masks = vec![
            0,
            u64::MAX,
            1,
            1 << 63,
            0xFFFF,
            0xFFFF << 48,
            0x8001_8001_8001_8001,
        ];
        masks.extend((0..2000).map(|_| rng.u64(..) & rng.u64(..)));
        for (i, &kept) in masks.iter().enumerate() {
            let slots: [u32; 64] = std::array::from_fn(|_| rng.u32(..));
            let prefix: Vec<u32> = (0..i % 40).map(|k| k as u32).collect();
            let mut want = prefix.clone();
            push_scalar(&slots, kept, &mut want);
            assert_eq!(want.len(), prefix.len() + kept.count_ones() as usize);
            for kind in &kinds {
                let mut got = Vec::with_capacity(i % 70);
                got.extend_from_slice(&prefix);
                let mut taken = slots;
                kind.take(&mut taken, kept, &mut got);
                assert_eq!(got, want, "{kind:?}, mask {kept:#x}");
                // The slots are left empty for the kind whose fill scatters.
                let left = if kind.is_avx512() { [EMPTY; 64] } else { slots };
                assert_eq!(taken, left, "take leaves: {kind:?}");
            }
        }
    }
}
