//! The cross-batch dedup window, per satellite.
//!
//! For each satellite, `H` is the highest seq forwarded so far and `S` the
//! seqs forwarded within `(H - W, H]`. Against the state at the start of the
//! batch, each surviving key is:
//! - new (no state for the sat, or `seq > H`): forwarded;
//! - stale (`H >= W` and `seq <= H - W`, i.e. `H - seq >= W`): counted, and
//!   forwarded unless the policy is [`StalePolicy::Drop`];
//! - in `S`: a duplicate, dropped;
//! - otherwise: forwarded and counted late.
//!
//! After the batch, `H = max(H, forwarded seqs)` and `S = (S + forwarded seqs)`
//! within `(H - W, H]`.
//!
//! # Ring layout
//! `S` is a ring bitmap of `R` bits, `R` the power of two at least `W` (and at
//! least 64). Seq `q` lives at bit `q & (R - 1)`; slot `k` is bit `k % 64` of
//! word `k / 64`. Two seqs inside one window are less than `W <= R` apart, so
//! they never share a slot. When `H` advances, the slots of the seqs entering
//! `(H_old, H_new]` are cleared first: they held seqs at least `R` lower,
//! which have left the window. Membership is then one bit test, and the ring
//! is allocated once per satellite, when the satellite is first seen.

use rustc_hash::FxHashMap;

use super::DedupCounts;
use crate::batch::Rows;

/// The largest window the ring bitmap supports (2 MiB of ring per satellite).
pub const MAX_WINDOW: u64 = 1 << 24;
/// Default `--window`.
pub const DEFAULT_WINDOW: u64 = 65_536;

/// What to do with a stale key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum StalePolicy {
    /// Count it and forward it.
    #[default]
    Forward,
    /// Count it and drop it.
    Drop,
}

#[derive(Debug, Clone)]
struct SatWindow {
    /// False until the satellite's first forwarded key, and again after a reset.
    live: bool,
    high: u64,
    ring: Box<[u64]>,
}

impl SatWindow {
    #[inline]
    fn contains(&self, q: u64) -> bool {
        let slot = (q as usize) & (self.ring.len() * 64 - 1);
        self.ring[slot / 64] & (1 << (slot % 64)) != 0
    }

    #[inline]
    fn insert(&mut self, q: u64) {
        let slot = (q as usize) & (self.ring.len() * 64 - 1);
        self.ring[slot / 64] |= 1 << (slot % 64);
    }

    /// Clears the slots of seqs `(self.high, new_high]` and moves `high`.
    fn advance(&mut self, new_high: u64) {
        debug_assert!(new_high >= self.high);
        let bits = self.ring.len() as u64 * 64;
        let mut count = new_high - self.high;
        if count >= bits {
            self.ring.fill(0);
        } else {
            let mut slot = ((self.high + 1) & (bits - 1)) as usize;
            while count > 0 {
                let (word, bit) = (slot / 64, slot % 64);
                let take = (64 - bit as u64).min(count);
                let ones = if take == 64 {
                    u64::MAX
                } else {
                    ((1u64 << take) - 1) << bit
                };
                self.ring[word] &= !ones;
                count -= take;
                slot = (slot + take as usize) & (bits as usize - 1);
            }
        }
        self.high = new_high;
    }
}

/// Per-satellite window state.
#[derive(Debug, Clone)]
pub struct Window {
    width: u64,
    ring_words: usize,
    stale: StalePolicy,
    /// Fx hashing: a satellite id is one multiply away from its slot, and the
    /// map is asked once per satellite run of every batch.
    sats: FxHashMap<u32, SatWindow>,
}

impl Window {
    /// An empty window `width` seqs wide per satellite.
    ///
    /// # Panics
    /// When `width` exceeds [`MAX_WINDOW`] (the CLI rejects it before).
    pub fn new(width: u64, stale: StalePolicy) -> Window {
        assert!(width <= MAX_WINDOW, "window {width} exceeds {MAX_WINDOW}");
        let ring_bits = width.next_power_of_two().max(64);
        Window {
            width,
            ring_words: (ring_bits / 64) as usize,
            stale,
            sats: FxHashMap::default(),
        }
    }

    /// Classifies `survivors` (rows sorted by (sat, seq), one per key) against
    /// the state, appends the rows to forward to `forward`, then updates the state.
    pub fn apply<R: Rows + ?Sized>(
        &mut self,
        rows: &R,
        survivors: &[u32],
        forward: &mut Vec<u32>,
    ) -> DedupCounts {
        let mut counts = DedupCounts::default();
        let mut rest = survivors;
        while let Some(&first) = rest.first() {
            let s = rows.sat(first as usize);
            let run_len = rest
                .iter()
                .position(|&r| rows.sat(r as usize) != s)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(run_len);
            rest = tail;
            debug_assert!(run
                .windows(2)
                .all(|w| rows.seq(w[0] as usize) < rows.seq(w[1] as usize)));
            let from = forward.len();
            let ring_words = self.ring_words;
            let state = self.sats.entry(s).or_insert_with(|| SatWindow {
                live: false,
                high: 0,
                ring: vec![0; ring_words].into_boxed_slice(),
            });
            if state.live {
                // Branch-free: copies and late keys are common and come in
                // no pattern a predictor could learn, so every key takes the
                // same path and the classification becomes arithmetic. The
                // ring lookup is always in bounds, so it is made for all keys.
                let h0 = state.high;
                let stale_forwards = self.stale == StalePolicy::Forward;
                forward.resize(from + run.len(), 0);
                let mut kept = from;
                let mut top = h0;
                for &r in run {
                    let q = rows.seq(r as usize);
                    let newer = q > h0;
                    let stale = !newer & (h0.wrapping_sub(q) >= self.width);
                    let seen = !newer & !stale & state.contains(q);
                    let late = !newer & !stale & !seen;
                    let keep = newer | late | (stale & stale_forwards);
                    counts.stale += u64::from(stale);
                    counts.duplicates += u64::from(seen);
                    counts.late += u64::from(late);
                    forward[kept] = r;
                    kept += usize::from(keep);
                    // Seqs ascend within the run: the last kept one is the highest.
                    top = if keep { top.max(q) } else { top };
                }
                forward.truncate(kept);
                if top > h0 {
                    state.advance(top);
                }
            } else {
                // No state: every key is new. The ring is all clear.
                forward.extend_from_slice(run);
                state.live = true;
                state.high = rows.seq(*run.last().expect("runs are not empty") as usize);
            }
            Self::remember(state, self.width, rows, &forward[from..]);
        }
        counts
    }

    /// Forgets every satellite's state, as if no frame had been seen, but
    /// keeps the rings' memory (a throughput run replays its input this way).
    pub fn reset(&mut self) {
        for state in self.sats.values_mut() {
            state.live = false;
            state.ring.fill(0);
        }
    }

    /// Sets the bits of the forwarded seqs that are inside `(high - W, high]`.
    fn remember<R: Rows + ?Sized>(state: &mut SatWindow, width: u64, rows: &R, forwarded: &[u32]) {
        for &r in forwarded {
            let q = rows.seq(r as usize);
            if state.high - q < width {
                state.insert(q);
            }
        }
    }
}
