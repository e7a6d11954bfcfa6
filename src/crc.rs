//! CRC-32/ISO-HDLC (zlib's crc32) of several independent messages at once.
//!
//! `crc32fast` folds one message with one 128-bit PCLMULQDQ accumulator: each
//! fold waits for the previous one (about 7 cycles), so a 112-byte message
//! is a chain of dependent multiplies, and the decoder used to run one such
//! chain per frame, back to back. [`Kernel::crc32_4`] folds four messages in
//! lock-step instead: four independent accumulators, so the multiplier is
//! busy every cycle rather than one in seven.
//!
//! # Lock-step over different lengths
//! A message of `L >= 16` bytes has `L / 16` whole blocks and a tail of
//! `L % 16` bytes. The CRC without its initial value and final inversion is
//! linear and unchanged by leading zero bytes, so a message with fewer blocks
//! than the longest of the four is treated as if zero blocks came first: its
//! accumulator stays 0 (a fold of 0 is 0) until its first block is due. The
//! initial value `!0` is XORed into the first block, as `crc32fast` does.
//! The tail is then folded in with byte shuffles (the last 16 bytes of the
//! message, masked to the tail), and each accumulator is reduced to 32 bits
//! with a Barrett reduction: the steps and constants of `crc32fast`'s
//! PCLMULQDQ path, from Gopal et al., "Fast CRC computation for generic
//! polynomials using PCLMULQDQ instruction" (Intel, 2009).
//!
//! # Choosing
//! The kernel needs PCLMULQDQ, SSSE3 and SSE4.1, detected at run time
//! ([`Kernel::detect`]); without them, and for messages outside
//! [`MIN_LEN`]`..=`[`MAX_LEN`], [`Kernel::crc32_4`] calls `crc32fast` for each
//! message, which is also the naive twin the property tests compare with.

/// Shortest message the four-lane kernel takes (one whole block).
pub const MIN_LEN: usize = 16;
/// Longest message the four-lane kernel takes: beyond this the lanes' lengths
/// can differ too much for lock-step to pay, and `crc32fast`'s own wide
/// folding is the faster path.
pub const MAX_LEN: usize = 512;

/// The CRC of one message (`crc32fast`, the twin of the kernel).
#[inline]
pub fn crc32(msg: &[u8]) -> u32 {
    crc32fast::hash(msg)
}

/// A four-lane kernel this CPU can run. Only [`Kernel::detect`] and
/// [`Kernel::available`] make one, so holding a `Kernel` proves the CPU has
/// its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `crc32fast` per message (no PCLMULQDQ, or not x86-64).
    Each,
    /// Four 128-bit PCLMULQDQ accumulators.
    Pclmul,
    /// One 512-bit VPCLMULQDQ accumulator holding the four lanes.
    Avx512,
}

impl Kernel {
    /// `crc32fast` per message: runs everywhere (the twin of the others).
    pub const EACH: Kernel = Kernel(Kind::Each);

    /// The fastest kernel this CPU runs (detected at run time).
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let pclmul = has!("pclmulqdq") && has!("sse4.1") && has!("ssse3");
            let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            if pclmul && avx512 && has!("vpclmulqdq") {
                return Kernel(Kind::Avx512);
            }
            if pclmul {
                return Kernel(Kind::Pclmul);
            }
        }
        Kernel::EACH
    }

    /// Every kernel this CPU can run, the twin first (for tests and benches).
    pub fn available() -> Vec<Kernel> {
        match Kernel::detect().0 {
            Kind::Each => vec![Kernel::EACH],
            Kind::Pclmul => vec![Kernel::EACH, Kernel(Kind::Pclmul)],
            Kind::Avx512 => vec![Kernel::EACH, Kernel(Kind::Pclmul), Kernel(Kind::Avx512)],
        }
    }

    /// A short name: `each`, `pclmul` or `avx512`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Each => "each",
            Kind::Pclmul => "pclmul",
            Kind::Avx512 => "avx512",
        }
    }

    /// The CRCs of four messages. A SIMD kernel takes them when every
    /// message is within [`MIN_LEN`]`..=`[`MAX_LEN`]; otherwise, and for
    /// [`Kernel::EACH`], `crc32fast` per message.
    #[inline]
    pub fn crc32_4(self, msgs: [&[u8]; 4]) -> [u32; 4] {
        let fits = msgs.iter().all(|m| (MIN_LEN..=MAX_LEN).contains(&m.len()));
        #[cfg(target_arch = "x86_64")]
        match self.0 {
            Kind::Pclmul if fits => {
                // SAFETY: a `Kernel` of this kind exists only when `detect`
                // found its features on this CPU; lengths are in range.
                return unsafe { x86::crc32_4(msgs) };
            }
            Kind::Avx512 if fits => {
                // SAFETY: as above, for the AVX-512 kernel's features.
                return unsafe { x86::crc32_4_avx512(msgs) };
            }
            _ => {}
        }
        let _ = fits;
        msgs.map(crc32)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const K3: i64 = 0x1751997d0;
    const K4: i64 = 0x0ccaa009e;
    const K5: i64 = 0x163cd6124;
    const P_X: i64 = 0x1DB710641;
    const U_PRIME: i64 = 0x1F7011641;

    /// One fold by 128 bits: `a` carried past 16 more bytes, XOR `b`.
    #[target_feature(enable = "pclmulqdq")]
    #[inline]
    fn fold(a: __m128i, b: __m128i, k3k4: __m128i) -> __m128i {
        let t1 = _mm_clmulepi64_si128(a, k3k4, 0x00);
        let t2 = _mm_clmulepi64_si128(a, k3k4, 0x11);
        _mm_xor_si128(_mm_xor_si128(b, t1), t2)
    }

    /// `crc32(zeros(len))` inverted, for `len` in `0..=MAX_LEN`: what the
    /// initial value `!0` adds to the remainder of a `len`-byte message.
    static INIT_TERM: [u32; super::MAX_LEN + 1] = init_terms();

    const fn init_terms() -> [u32; super::MAX_LEN + 1] {
        let mut out = [0u32; super::MAX_LEN + 1];
        let mut crc = !0u32;
        let mut len = 0;
        while len <= super::MAX_LEN {
            // The register after `len` zero bytes from `!0`: crc32(zeros(len)) inverted.
            out[len] = crc;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            len += 1;
        }
        out
    }

    /// Sixteen zero bytes: what a lane reads before its first block is due.
    static ZERO_BLOCK: [u8; 16] = [0; 16];

    /// The four CRCs. Every message must hold `MIN_LEN..=MAX_LEN` bytes
    /// (checked: otherwise it panics). Callers must know the CPU supports
    /// PCLMULQDQ, SSSE3 and SSE4.1 (calling it is `unsafe` elsewhere).
    #[target_feature(enable = "pclmulqdq", enable = "sse4.1", enable = "ssse3")]
    pub(super) fn crc32_4(m: [&[u8]; 4]) -> [u32; 4] {
        assert!(m
            .iter()
            .all(|m| (super::MIN_LEN..=super::MAX_LEN).contains(&m.len())));
        let k3k4 = _mm_set_epi64x(K4, K3);
        let blocks = m.map(|m| m.len() / 16);
        let most = blocks.iter().copied().max().unwrap_or(0);
        // Lane l's first block is due at step `start[l] = most - blocks[l]`;
        // before that it folds zero blocks into a zero accumulator, which
        // stays zero. The remainder is computed without the initial value,
        // which is added at the end (`INIT_TERM`): the remainder is linear.
        let start = blocks.map(|b| most - b);
        let zero = ZERO_BLOCK.as_ptr();
        let mut x = [_mm_setzero_si128(); 4];
        for s in 0..most {
            for l in 0..4 {
                let at = if s >= start[l] {
                    // In bounds: s - start[l] < blocks[l] = m[l].len() / 16.
                    m[l].as_ptr().wrapping_add(16 * (s - start[l]))
                } else {
                    zero
                };
                // SAFETY: `at` is 16 readable bytes: a whole block of m[l]
                // (see above) or ZERO_BLOCK. The load is unaligned.
                let b = unsafe { _mm_loadu_si128(at.cast()) };
                x[l] = fold(x[l], b, k3k4);
            }
        }
        finish(m, x)
    }

    /// Folds each lane's tail (0..15 bytes, from the message's last 16
    /// bytes) into its accumulator and reduces it to the CRC, adding the
    /// initial value's term.
    #[target_feature(enable = "pclmulqdq", enable = "sse4.1", enable = "ssse3")]
    fn finish(m: [&[u8]; 4], mut x: [__m128i; 4]) -> [u32; 4] {
        let k3k4 = _mm_set_epi64x(K4, K3);
        let seq = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for l in 0..4 {
            let len = m[l].len();
            let n = (len % 16) as i8;
            let shl = _mm_add_epi8(seq, _mm_set1_epi8(n - 16));
            let shr = _mm_xor_si128(shl, _mm_set1_epi8(-128));
            let overflow = _mm_shuffle_epi8(x[l], shl);
            let kept = _mm_shuffle_epi8(x[l], shr);
            // Bytes 16 - n .. 16 of the last 16 are the tail.
            let tail_mask = _mm_cmpgt_epi8(seq, _mm_set1_epi8(15 - n));
            // SAFETY: len >= 16 (asserted), so the last 16 bytes are readable.
            let last = unsafe { _mm_loadu_si128(m[l].as_ptr().add(len - 16).cast()) };
            x[l] = fold(
                overflow,
                _mm_xor_si128(kept, _mm_and_si128(last, tail_mask)),
                k3k4,
            );
        }
        // 128 -> 64 -> 32 bits, as crc32fast's `reduce_128_to_crc`.
        let low32 = _mm_set_epi32(0, 0, 0, !0);
        let k5 = _mm_set_epi64x(0, K5);
        let pu = _mm_set_epi64x(U_PRIME, P_X);
        let mut out = [0u32; 4];
        for l in 0..4 {
            let a = _mm_xor_si128(
                _mm_clmulepi64_si128(x[l], k3k4, 0x10),
                _mm_srli_si128(x[l], 8),
            );
            let a = _mm_xor_si128(
                _mm_clmulepi64_si128(_mm_and_si128(a, low32), k5, 0x00),
                _mm_srli_si128(a, 4),
            );
            let t1 = _mm_clmulepi64_si128(_mm_and_si128(a, low32), pu, 0x10);
            let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
            let remainder = _mm_extract_epi32(_mm_xor_si128(a, t2), 1) as u32;
            out[l] = !(remainder ^ INIT_TERM[m[l].len()]);
        }
        out
    }

    /// [`crc32_4`] with the four lanes in one 512-bit register: each fold is
    /// two VPCLMULQDQ and one three-way XOR for all four messages.
    #[target_feature(
        enable = "pclmulqdq",
        enable = "sse4.1",
        enable = "ssse3",
        enable = "avx512f",
        enable = "avx512bw",
        enable = "avx512vl",
        enable = "vpclmulqdq"
    )]
    pub(super) fn crc32_4_avx512(m: [&[u8]; 4]) -> [u32; 4] {
        assert!(m
            .iter()
            .all(|m| (super::MIN_LEN..=super::MAX_LEN).contains(&m.len())));
        let k = _mm512_broadcast_i32x4(_mm_set_epi64x(K4, K3));
        let blocks = m.map(|m| m.len() / 16);
        let most = blocks.iter().copied().max().unwrap_or(0);
        let start = blocks.map(|b| most - b);
        let zero = ZERO_BLOCK.as_ptr();
        let mut x = _mm512_setzero_si512();
        for s in 0..most {
            let at = [0, 1, 2, 3].map(|l| {
                if s >= start[l] {
                    m[l].as_ptr().wrapping_add(16 * (s - start[l]))
                } else {
                    zero
                }
            });
            // SAFETY: each `at` is 16 readable bytes, as in `crc32_4`.
            let b = unsafe {
                let b01 = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128(at[0].cast())),
                    _mm_loadu_si128(at[1].cast()),
                    1,
                );
                let b23 = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128(at[2].cast())),
                    _mm_loadu_si128(at[3].cast()),
                    1,
                );
                _mm512_inserti64x4(_mm512_castsi256_si512(b01), b23, 1)
            };
            let t1 = _mm512_clmulepi64_epi128(x, k, 0x00);
            let t2 = _mm512_clmulepi64_epi128(x, k, 0x11);
            x = _mm512_ternarylogic_epi64(b, t1, t2, 0x96);
        }
        finish_avx512(m, x)
    }

    /// [`finish`] for the four lanes of one 512-bit register at once.
    #[target_feature(
        enable = "pclmulqdq",
        enable = "avx512f",
        enable = "avx512bw",
        enable = "avx512vl",
        enable = "vpclmulqdq"
    )]
    fn finish_avx512(m: [&[u8]; 4], x: __m512i) -> [u32; 4] {
        let k = _mm512_broadcast_i32x4(_mm_set_epi64x(K4, K3));
        let seq = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        ));
        // Each byte of lane l holds n_l, the length of message l's tail.
        let n = m.map(|m| (m.len() % 16) as i32 * 0x0101_0101);
        let n = _mm512_set_epi32(
            n[3], n[3], n[3], n[3], n[2], n[2], n[2], n[2], n[1], n[1], n[1], n[1], n[0], n[0],
            n[0], n[0],
        );
        let shl = _mm512_add_epi8(seq, _mm512_sub_epi8(n, _mm512_set1_epi8(16)));
        let shr = _mm512_xor_si512(shl, _mm512_set1_epi8(-128));
        let overflow = _mm512_shuffle_epi8(x, shl);
        let kept = _mm512_shuffle_epi8(x, shr);
        let tail_mask = _mm512_cmpgt_epi8_mask(seq, _mm512_sub_epi8(_mm512_set1_epi8(15), n));
        // SAFETY: every message holds at least 16 bytes (asserted by the
        // caller), so its last 16 bytes are readable.
        let last = unsafe {
            let end = |l: usize| _mm_loadu_si128(m[l].as_ptr().add(m[l].len() - 16).cast());
            let l01 = _mm256_inserti128_si256(_mm256_castsi128_si256(end(0)), end(1), 1);
            let l23 = _mm256_inserti128_si256(_mm256_castsi128_si256(end(2)), end(3), 1);
            _mm512_inserti64x4(_mm512_castsi256_si512(l01), l23, 1)
        };
        let folded = _mm512_xor_si512(kept, _mm512_maskz_mov_epi8(tail_mask, last));
        let t1 = _mm512_clmulepi64_epi128(overflow, k, 0x00);
        let t2 = _mm512_clmulepi64_epi128(overflow, k, 0x11);
        let x = _mm512_ternarylogic_epi64(folded, t1, t2, 0x96);
        // 128 -> 64 -> 32 bits in every lane, as in `finish`.
        let low32 = _mm512_broadcast_i32x4(_mm_set_epi32(0, 0, 0, !0));
        let k5 = _mm512_broadcast_i32x4(_mm_set_epi64x(0, K5));
        let pu = _mm512_broadcast_i32x4(_mm_set_epi64x(U_PRIME, P_X));
        let a = _mm512_xor_si512(
            _mm512_clmulepi64_epi128(x, k, 0x10),
            _mm512_bsrli_epi128(x, 8),
        );
        let a = _mm512_xor_si512(
            _mm512_clmulepi64_epi128(_mm512_and_si512(a, low32), k5, 0x00),
            _mm512_bsrli_epi128(a, 4),
        );
        let t1 = _mm512_clmulepi64_epi128(_mm512_and_si512(a, low32), pu, 0x10);
        let t2 = _mm512_clmulepi64_epi128(_mm512_and_si512(t1, low32), pu, 0x00);
        let r = _mm512_xor_si512(a, t2);
        // Dword 1 of each lane: dwords 1, 5, 9, 13.
        let picked = _mm512_permutexvar_epi32(
            _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 13, 9, 5, 1),
            r,
        );
        let mut out = [0u32; 4];
        // SAFETY: `out` is 16 writable bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_castsi512_si128(picked)) };
        for (o, m) in out.iter_mut().zip(m) {
            *o = !(*o ^ INIT_TERM[m.len()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    #[test]
    fn kernels_match_crc32fast_for_every_length_mix() {
        let kernels = Kernel::available();
        eprintln!(
            "kernels on this CPU: {:?}",
            kernels.iter().map(|k| k.name()).collect::<Vec<_>>()
        );
        let data = bytes(4 * MAX_LEN + 64, 7);
        let mut rng = fastrand::Rng::with_seed(11);
        // Every length in range once per lane, with random partners and
        // random starting offsets (alignment).
        for len in MIN_LEN..=MAX_LEN {
            for lane in 0..4 {
                let mut msgs: [&[u8]; 4] = [&[]; 4];
                for (l, m) in msgs.iter_mut().enumerate() {
                    let n = if l == lane {
                        len
                    } else {
                        rng.usize(MIN_LEN..=MAX_LEN)
                    };
                    let at = rng.usize(..data.len() - n);
                    *m = &data[at..at + n];
                }
                let want = msgs.map(crc32);
                for k in &kernels {
                    let lens = msgs.map(<[u8]>::len);
                    assert_eq!(k.crc32_4(msgs), want, "{} on {lens:?}", k.name());
                }
            }
        }
    }

    #[test]
    fn out_of_range_lengths_take_the_scalar_path() {
        let data = bytes(2000, 3);
        let msgs: [&[u8]; 4] = [&data[..0], &data[..15], &data[..513], &data[..1500]];
        for k in Kernel::available() {
            assert_eq!(k.crc32_4(msgs), msgs.map(crc32));
        }
        assert_eq!(
            crc32(b"123456789"),
            0xCBF4_3926,
            "the CRC-32/ISO-HDLC check value"
        );
    }
}
