//! The cross-batch dedup window, per satellite, hardened by [`WindowLimits`].
//!
//! # Classification
//! For each satellite, `H` is the high mark, `S` the member seqs within
//! `(H - W, H]`, `J` = [`WindowLimits::max_seq_jump`]. A batch's surviving
//! keys of one satellite are taken in ascending seq order and classified
//! against the satellite's state as it was at the start of the batch (or at
//! its last anchoring, below):
//! - suspect (`J > 0` and `seq > H + J`): counted, dropped, and moves nothing;
//! - new (`seq > H`, within the jump): forwarded;
//! - stale (`H - seq >= W`): counted, and forwarded unless the policy is
//!   [`StalePolicy::Drop`];
//! - in `S`: a duplicate, dropped;
//! - otherwise: forwarded and counted late.
//!
//! After the batch, `H = max(H, forwarded seqs)` and `S = (S + forwarded seqs)`
//! within `(H - W, H]`.
//!
//! # Anchoring
//! A satellite with no state (never seen, evicted, or after [`Window::reset`])
//! is anchored at its lowest key of the batch: that key is forwarded as new
//! and counted nowhere, the state becomes `H` = that key, `S` = {that key}
//! (empty if `W = 0`), support `A` = 1 (see Provisional anchors), and the
//! batch's other keys of the satellite are
//! classified against that state (so with `J > 0` a key more than `J` above
//! it is suspect).
//!
//! # Re-anchoring (`N` = [`WindowLimits::reanchor_after`] > 0)
//! Each satellite has a run: the keys, in (sat, seq) order within a batch and
//! batch after batch, that landed outside its window (suspect or stale). A
//! key inside the window (new, late or duplicate) empties the run. An outside
//! key joins the run when the run is not empty and the key is less than
//! `max(W, 1)` seqs away from the run's first key; otherwise it starts a new
//! run at itself. The key that makes the run `A` long completes it (`A`, the
//! satellite's support, is `N` once it is confirmed; see Provisional anchors):
//! - it is forwarded, whatever the stale policy, and counted only in
//!   `reanchors` (not suspect, not stale);
//! - the earlier keys of the run keep the verdict and count they got;
//! - the satellite's state is discarded (including what earlier keys of the
//!   same batch would have added to it) and anchored at the run: `H` = the
//!   run's highest seq, `S` = the run's seqs within `(H - W, H]` (so a later
//!   copy of a run key, even one dropped as suspect, is a duplicate), run
//!   emptied, support `A` = the run's length;
//! - the satellite's remaining keys of the batch are classified against the
//!   new state.
//!
//! This heals a poisoned high mark, a counter restart and an outage longer
//! than `J`. Its limit: any `N` consecutive outside keys re-anchor, so a
//! replay of at least `N` old frames of one satellite with no current frame
//! between them (in (sat, seq) order) moves the window to the replayed seqs.
//!
//! # Provisional anchors (`N` > 0)
//! A satellite's support `A` counts the keys accepted since its last
//! anchoring: the anchoring keys (1 for a first key, the run's length at a
//! re-anchoring), then each key forwarded as new or late; duplicates,
//! suspect and stale keys add nothing. `A` is capped at `N`. The satellite
//! is provisional while `A < N` and confirmed once `A = N`, until its next
//! anchoring (or eviction, or [`Window::reset`]). Two rules differ while it
//! is provisional:
//! - a run completes at `A` keys instead of `N`: right after a lone first
//!   key (`A` = 1) the first key outside the window re-anchors at once, so a
//!   poisoned first key (the satellite's first frame, or its first after an
//!   eviction) is replaced by the first genuine key, which is forwarded;
//! - an outside key (suspect or stale) that does not complete the run is
//!   forwarded whatever the stale policy, counted only in `provisional` (not
//!   suspect, not stale), and moves nothing but the run: no genuine key is
//!   dropped while the window may be wrong.
//!
//! Hence `k` consistent hostile keys (`k < N`) at a satellite's start are
//! outvoted by `k` genuine keys outside their window, all forwarded; it
//! takes `N`, as for a confirmed satellite, to make genuine keys drop.
//! The other way round, hostile keys after `A` genuine ones move the window
//! only if `A` of them arrive in a row (in (sat, seq) order, within
//! `max(W, 1)` of each other); a lone hostile key outvotes only a lone first
//! key, and then the next genuine key re-anchors back. Once confirmed, the
//! `N`-in-a-row rule above applies unchanged. The cost: until a satellite
//! has accepted `N` keys since an anchoring with fewer than `N`, its outside
//! keys (hostile or stale) reach the output even under [`StalePolicy::Drop`]
//! or a jump limit (counted `provisional`), and after a re-anchoring copies
//! of keys forwarded before it can pass again (as after any re-anchoring).
//! With `N` = 1 every anchoring is confirmed at once (the plain rule), and
//! with `N` = 0 ([`WindowLimits::OFF`]) there is no support and nothing is
//! provisional.
//!
//! # Fast paths
//! A window with no limit active ([`WindowLimits::OFF`]) takes, batch by
//! batch, the plain loop of the unhardened window (no suspect lane, no ring
//! guard, no byte or activity bookkeeping). With limits, a satellite's keys
//! of a batch take the same loop when its highest key is not suspect and its
//! lowest is inside the ring's bits; the results are the same either way.
//!
//! # Ring layout
//! `S` is a ring bitmap of `R` bits, `R` a power of two from 64 up to the full
//! ring (the power of two at least `W`, at least 64). Seq `q` lives at bit
//! `q & (R - 1)`; slot `k` is bit `k % 64` of word `k / 64`. The ring's set
//! bits are exactly the remembered seqs within `(H - R, H]`: when `H`
//! advances, the slots of the seqs entering `(H_old, H_new]` are cleared
//! first, since they held seqs at least `R` lower.
//!
//! Rings are lazy when [`WindowLimits::lazy_rings`] is set. `L`, the lowest
//! seq remembered since the satellite was (re-)anchored, only falls and `H`
//! only rises, so the ring needs [`ring_words_for`]`(H - L, W)` words and
//! grows (doubling, rehashing its set bits) as that spread grows. Every
//! member is at least `L > H - R`, so a key at `R` or more below `H` is not
//! a member, and the membership test is `H - q < R` and one bit: the same
//! answer as a full ring. A ring never shrinks while its satellite has an
//! entry (not at re-anchoring, not at [`Window::reset`]); eviction frees it.
//!
//! # Memory budget ([`WindowLimits::memory_budget`])
//! A satellite's tracked bytes are [`sat_bytes`]`(ring words, run length)`:
//! [`SAT_OVERHEAD`] plus 8 bytes per ring word and per key held in its run.
//! The window keeps their sum. Every batch advances a batch counter, and a
//! satellite's activity is the last batch in which it had a key. Satellites
//! are updated in ascending id order; after each satellite's update, and once
//! more at the end of the batch, while the sum exceeds the budget a victim is
//! evicted (its state and ring freed, counted `evicted_sats`). The victim is
//! the first by (activity, id) among the satellites other than the one just
//! updated and other than the batch's satellites not yet updated: that is,
//! satellites without a key in this batch, oldest first, then the batch's
//! satellites already updated, lowest id first (at the end of the batch, all
//! of them). So a batch's results never depend on the budget, and after every
//! batch the sum is within budget. During a batch it can exceed the budget
//! when the satellite just updated and the batch's satellites not yet updated
//! do not fit together, until the end of the batch.
//!
//! An evicted satellite starts over with no state: a copy of a frame
//! forwarded before its eviction is forwarded again.

use rustc_hash::FxHashMap;

use super::sort_unique::DirectBlocks;
use super::DedupCounts;
use crate::batch::Rows;

/// The largest window the ring bitmap supports (2 MiB of ring per satellite).
pub const MAX_WINDOW: u64 = 1 << 24;
/// Default `--window`.
pub const DEFAULT_WINDOW: u64 = 65_536;

/// Tracked bytes per satellite besides its ring and run: its map entry and
/// state (about 90 bytes) with slack for the hash table's spare capacity.
pub const SAT_OVERHEAD: usize = 128;

/// What to do with a stale key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum StalePolicy {
    /// Count it and forward it.
    #[default]
    Forward,
    /// Count it and drop it.
    Drop,
}

/// Limits that keep hostile or broken satellites from poisoning the window
/// or exhausting memory. See the module documentation for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// A key more than this above its satellite's high mark is suspect:
    /// counted, dropped, and it does not move the window. 0: no limit.
    pub max_seq_jump: u64,
    /// A satellite re-anchors at this many consecutive, mutually consistent
    /// keys outside its window, and is provisional (re-anchors sooner and
    /// forwards outside keys) until it has accepted this many. 0: never, and
    /// nothing is provisional.
    pub reanchor_after: u32,
    /// Tracked bytes of all satellites' state above which the least recently
    /// active satellites are evicted. `usize::MAX`: no limit.
    pub memory_budget: usize,
    /// True: a satellite's ring starts at one word and grows with the spread
    /// of seqs it remembers. False: every satellite gets the full ring when
    /// first seen, and no ring grows afterwards.
    pub lazy_rings: bool,
}

impl WindowLimits {
    /// No limits: exactly the unhardened window (full rings, no suspects, no
    /// re-anchoring, no eviction).
    pub const OFF: WindowLimits = WindowLimits {
        max_seq_jump: 0,
        reanchor_after: 0,
        memory_budget: usize::MAX,
        lazy_rings: false,
    };
    /// The service's limits: jumps above 2^20 seqs are suspect, 64 consistent
    /// outside keys re-anchor, lazy rings, 256 MiB of window state.
    pub const SERVICE: WindowLimits = WindowLimits {
        max_seq_jump: 1 << 20,
        reanchor_after: 64,
        memory_budget: 256 << 20,
        lazy_rings: true,
    };
}

impl Default for WindowLimits {
    /// [`WindowLimits::OFF`].
    fn default() -> WindowLimits {
        WindowLimits::OFF
    }
}

/// Words of the full ring for a window `width` seqs wide: the power of two
/// of bits at least `width` and at least 64, over 64.
pub fn full_ring_words(width: u64) -> usize {
    (width.min(MAX_WINDOW).next_power_of_two().max(64) / 64) as usize
}

/// Words of a lazy ring that must hold seqs spread over `span + 1` values
/// (the high mark minus the lowest remembered seq): the smallest power of
/// two `n` with `64 * n > span`, at most [`full_ring_words`]`(width)`.
pub fn ring_words_for(span: u64, width: u64) -> usize {
    let full = full_ring_words(width);
    if span >= full as u64 * 64 {
        full
    } else {
        ((span / 64 + 1) as usize).next_power_of_two().min(full)
    }
}

/// Tracked bytes of one satellite with a ring of `ring_words` words and
/// `run_len` keys in its run: [`SAT_OVERHEAD`] + 8 per word and per key.
pub fn sat_bytes(ring_words: usize, run_len: usize) -> usize {
    SAT_OVERHEAD.saturating_add(ring_words.saturating_add(run_len).saturating_mul(8))
}

#[derive(Debug, Clone)]
struct SatWindow {
    /// False until the satellite is anchored, and again after a reset.
    live: bool,
    high: u64,
    /// Lowest seq remembered since the last anchoring (`high` if none).
    low: u64,
    /// Last batch with a key of this satellite.
    last_active: u64,
    ring: Box<[u64]>,
    /// Consecutive outside keys, first one first.
    run: Vec<u64>,
    /// Keys accepted since the last anchoring (the anchoring keys, then new
    /// and late keys), capped at `reanchor_after`: below it, the satellite is
    /// provisional. Unused when re-anchoring is off.
    support: u32,
}

impl SatWindow {
    /// A satellite with no state yet and a clear ring of `ring_words` words.
    fn new(ring_words: usize) -> SatWindow {
        SatWindow {
            live: false,
            high: 0,
            low: 0,
            last_active: 0,
            ring: vec![0; ring_words].into_boxed_slice(),
            run: Vec::new(),
            support: 0,
        }
    }

    fn bytes(&self) -> usize {
        sat_bytes(self.ring.len(), self.run.len())
    }

    #[inline]
    fn ring_bits(&self) -> u64 {
        self.ring.len() as u64 * 64
    }

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

    /// Regrows the ring to `words` (a larger power of two) and moves `high`
    /// to `new_high` at once: each set slot of the old ring holds the seq
    /// congruent to it in `(high - R_old, high]`, and is kept if inside
    /// `(new_high - R_new, new_high]`. The new ring starts clear, so nothing
    /// needs clearing for the seqs entering `(high, new_high]`.
    fn grow(&mut self, words: usize, new_high: u64) {
        debug_assert!(words > self.ring.len() && words.is_power_of_two());
        debug_assert!(new_high >= self.high);
        let old = std::mem::replace(&mut self.ring, vec![0; words].into_boxed_slice());
        let old_mask = (old.len() as u64 * 64).wrapping_sub(1);
        let new_bits = words as u64 * 64;
        for (w, &word) in old.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let k = w as u64 * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let q = self.high.wrapping_sub(self.high.wrapping_sub(k) & old_mask);
                if new_high.wrapping_sub(q) < new_bits {
                    self.insert(q);
                }
            }
        }
        self.high = new_high;
    }

    /// Clears the slots of seqs `(self.high, new_high]` and moves `high`.
    fn advance(&mut self, new_high: u64) {
        debug_assert!(new_high >= self.high);
        if new_high - self.high >= self.ring_bits() {
            self.ring.fill(0);
        } else {
            self.clear_after(self.high, new_high);
        }
        self.high = new_high;
    }

    /// Clears the slots of seqs `from + 1 ..= to` (fewer than the ring's
    /// bits).
    fn clear_after(&mut self, from: u64, to: u64) {
        let bits = self.ring_bits();
        let mut count = to - from;
        debug_assert!(count < bits);
        let mut slot = ((from.wrapping_add(1)) & (bits - 1)) as usize;
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
}

/// The window's settings, copied out for the per-satellite update.
#[derive(Debug, Clone, Copy)]
struct Params {
    width: u64,
    stale_forwards: bool,
    /// `max_seq_jump`, or `u64::MAX` when it is 0 (no key is that far above).
    jump: u64,
    reanchor: usize,
    lazy: bool,
    full_words: usize,
}

impl Params {
    /// Words the ring needs for a spread of `span`.
    #[inline]
    fn need(&self, span: u64) -> usize {
        if self.lazy {
            ring_words_for(span, self.width)
        } else {
            self.full_words
        }
    }
}

/// What a key is against its satellite's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Suspect,
    New,
    Stale,
    Seen,
    Late,
}

/// Takes the next satellite's run off the front of `rest` (survivors sorted
/// by (sat, seq), one per key): its satellite id and its rows, seqs ascending.
#[inline]
fn next_sat_run<'a, R: Rows + ?Sized>(rows: &R, rest: &mut &'a [u32]) -> Option<(u32, &'a [u32])> {
    let &first = rest.first()?;
    let s = rows.sat(first as usize);
    let len = rest
        .iter()
        .position(|&r| rows.sat(r as usize) != s)
        .unwrap_or(rest.len());
    let (run, tail) = rest.split_at(len);
    *rest = tail;
    debug_assert!(run
        .windows(2)
        .all(|w| rows.seq(w[0] as usize) < rows.seq(w[1] as usize)));
    Some((s, run))
}

/// The bits `i` of the word of seqs `q0 .. q0 + 64` (`q0` a multiple of 64)
/// with `q0 + i <= limit`.
#[inline(always)]
fn bits_upto(q0: u64, limit: u64) -> u64 {
    if limit < q0 {
        0
    } else if limit - q0 >= 63 {
        u64::MAX
    } else {
        (2u64 << (limit - q0)) - 1
    }
}

/// The bits of the word holding seqs `q0 .. q0 + 64` whose seq a window
/// `width` wide with high mark `high` remembers: above `high - width`.
#[inline]
fn bits_remembered(q0: u64, high: u64, width: u64) -> u64 {
    if high >= width {
        !bits_upto(q0, high - width)
    } else {
        u64::MAX
    }
}

/// Per-satellite window state.
#[derive(Debug, Clone)]
pub struct Window {
    limits: WindowLimits,
    params: Params,
    /// No limit is active ([`WindowLimits::OFF`]): batches take
    /// [`Window::apply_plain`].
    plain: bool,
    /// Fx hashing: a satellite id is one multiply away from its slot, and the
    /// map is asked once per satellite run of every batch.
    sats: FxHashMap<u32, SatWindow>,
    /// Sum of the satellites' [`sat_bytes`].
    bytes: usize,
    /// Batches applied so far.
    batch: u64,
    /// Eviction scratch, filled only when the budget is exceeded: the batch's
    /// satellites in ascending order, and the other satellites by (activity, id).
    batch_sats: Vec<u32>,
    victims: Vec<(u64, u32)>,
    victims_built: bool,
    next_victim: usize,
    next_batch_victim: usize,
}

impl Window {
    /// An empty window `width` seqs wide per satellite, with `limits`.
    ///
    /// # Panics
    /// When `width` exceeds [`MAX_WINDOW`] (the CLI rejects it before).
    pub fn new(width: u64, stale: StalePolicy, limits: WindowLimits) -> Window {
        assert!(width <= MAX_WINDOW, "window {width} exceeds {MAX_WINDOW}");
        Window {
            limits,
            plain: limits.max_seq_jump == 0
                && limits.reanchor_after == 0
                && limits.memory_budget == usize::MAX
                && !limits.lazy_rings,
            params: Params {
                width,
                stale_forwards: stale == StalePolicy::Forward,
                jump: if limits.max_seq_jump == 0 {
                    u64::MAX
                } else {
                    limits.max_seq_jump
                },
                reanchor: limits.reanchor_after as usize,
                lazy: limits.lazy_rings,
                full_words: full_ring_words(width),
            },
            sats: FxHashMap::default(),
            bytes: 0,
            batch: 0,
            batch_sats: Vec::new(),
            victims: Vec::new(),
            victims_built: false,
            next_victim: 0,
            next_batch_victim: 0,
        }
    }

    /// The limits this window applies.
    pub fn limits(&self) -> WindowLimits {
        self.limits
    }

    /// Tracked bytes of all satellites' state (see [`sat_bytes`]).
    pub fn tracked_bytes(&self) -> usize {
        self.bytes
    }

    /// Satellites with an entry (state, or a ring kept over a reset).
    pub fn satellites(&self) -> usize {
        self.sats.len()
    }

    /// Classifies `survivors` (rows sorted by (sat, seq), one per key) against
    /// the state, appends the rows to forward to `forward`, then updates the state.
    pub fn apply<R: Rows + ?Sized>(
        &mut self,
        rows: &R,
        survivors: &[u32],
        forward: &mut Vec<u32>,
    ) -> DedupCounts {
        self.batch += 1;
        if self.plain {
            return self.apply_plain(rows, survivors, forward);
        }
        self.victims_built = false;
        let mut counts = DedupCounts::default();
        let mut rest = survivors;
        let mut index = 0;
        while let Some((s, run)) = next_sat_run(rows, &mut rest) {
            let mut old_bytes = 0;
            let state = self
                .sats
                .entry(s)
                .and_modify(|st| old_bytes = st.bytes())
                .or_insert_with(|| SatWindow::new(0));
            state.last_active = self.batch;
            Self::update(state, self.params, rows, run, forward, &mut counts);
            self.bytes = self.bytes - old_bytes + state.bytes();
            if self.bytes > self.limits.memory_budget {
                self.fit(Some(index), survivors, rows, &mut counts);
            }
            index += 1;
        }
        if self.bytes > self.limits.memory_budget {
            self.fit(None, survivors, rows, &mut counts);
        }
        counts
    }

    /// [`Window::apply`] with no limit active, chosen per batch: the plain
    /// window's loop. Nothing is suspect, no run is kept, nothing is evicted
    /// (so activity is not kept either), every ring is full from the start
    /// (so a satellite's tracked bytes are fixed when it is first seen), and
    /// a satellite without state has a clear ring (a new entry, or a reset):
    /// anchored at its lowest key, every other key of the batch is new.
    fn apply_plain<R: Rows + ?Sized>(
        &mut self,
        rows: &R,
        survivors: &[u32],
        forward: &mut Vec<u32>,
    ) -> DedupCounts {
        let (width, stale_forwards, words) = (
            self.params.width,
            self.params.stale_forwards,
            self.params.full_words,
        );
        let bytes = &mut self.bytes;
        let mut counts = DedupCounts::default();
        let mut rest = survivors;
        while let Some((s, run)) = next_sat_run(rows, &mut rest) {
            let from = forward.len();
            let state = self.sats.entry(s).or_insert_with(|| {
                *bytes += sat_bytes(words, 0);
                SatWindow::new(words)
            });
            if state.live {
                // With a full ring (at least W bits) a key less than W below
                // the high mark has its own slot.
                let h0 = state.high;
                let top = Self::plain_keys(
                    state,
                    h0,
                    width,
                    stale_forwards,
                    rows,
                    run,
                    forward,
                    &mut counts,
                );
                if top > h0 {
                    state.advance(top);
                }
            } else {
                forward.extend_from_slice(run);
                state.live = true;
                state.low = rows.seq(run[0] as usize);
                state.high = rows.seq(*run.last().expect("runs are not empty") as usize);
            }
            let high = state.high;
            for &r in &forward[from..] {
                let q = rows.seq(r as usize);
                if high - q < width {
                    state.insert(q);
                }
            }
        }
        counts
    }

    /// True when no limit is active: batches may take [`Window::apply_direct`].
    pub(super) fn is_plain(&self) -> bool {
        self.plain
    }

    /// [`Window::apply`] with no limit active on a batch whose survivors are
    /// the occupied slots of a direct table (see [`DirectBlocks`]): the same
    /// classification and update as [`Window::apply_plain`], 64 keys at a
    /// time. A satellite's occupancy word holds the seqs of one ring word in
    /// the same bit positions, so new, stale, seen and late are masks
    /// (seqs above `H`, at least `W` below it, and the rest with and without
    /// the ring's bit), counted with popcounts; the rows forwarded are read
    /// from the table at the kept bits, in (sat, seq) order. Leaves the
    /// table's bitmap clear. Returns the window's counts plus the batch's
    /// in-batch copies.
    pub(super) fn apply_direct(
        &mut self,
        d: DirectBlocks<'_>,
        forward: &mut Vec<u32>,
    ) -> DedupCounts {
        debug_assert!(self.plain, "apply_direct runs only without limits");
        self.batch += 1;
        let (width, stale_forwards, words) = (
            self.params.width,
            self.params.stale_forwards,
            self.params.full_words,
        );
        let bytes = &mut self.bytes;
        let mut counts = DedupCounts {
            duplicates: d.copies,
            ..DedupCounts::default()
        };
        for b in d.blocks {
            let (sat, base, top, first) = (b.sat, b.low, b.high, b.first_word);
            let block = &mut d.occupied[first..first + b.words];
            let k0 = base >> 6;
            let state = self.sats.entry(sat).or_insert_with(|| {
                *bytes += sat_bytes(words, 0);
                SatWindow::new(words)
            });
            let ring_mask = state.ring.len() - 1;
            let ring_bits = state.ring_bits();
            let classify = |occ: u64, q0: u64, h0: u64, ring: u64, counts: &mut DedupCounts| {
                let upto_h0 = bits_upto(q0, h0);
                let stale = if h0 >= width {
                    bits_upto(q0, h0 - width)
                } else {
                    0
                };
                let inside = upto_h0 & !stale;
                let newer = occ & !upto_h0;
                let late = occ & inside & !ring;
                counts.stale += u64::from((occ & stale).count_ones());
                counts.duplicates += u64::from((occ & inside & ring).count_ones());
                counts.late += u64::from(late.count_ones());
                newer | late | if stale_forwards { occ & stale } else { 0 }
            };
            if state.live && top.saturating_sub(state.high) < ring_bits {
                // One pass, each word classified, remembered and forwarded
                // at once: moving H clears the slots of seqs in (H, top],
                // and a ring word's slots for the block's newer seqs are
                // cleared right before its kept bits go in. No earlier word
                // of the pass changed a slot a later word reads: a cleared
                // slot belongs to a seq above H, and the inside keys sharing
                // it lie at or below H, in earlier words, already read; a
                // slot set for a remembered key p aliases a later inside key
                // q only if q - p >= R >= W, and then p is not remembered
                // (p <= H - W <= high - W). The seqs of (H, top] below the
                // block's first word (a block that starts above H's word)
                // are cleared first; such a block has no inside key.
                let h0 = state.high;
                let high = h0.max(top);
                let first_seq = k0 << 6;
                if first_seq > h0.saturating_add(1) {
                    // Then top >= first_seq > H + 1: fewer than R seqs.
                    state.clear_after(h0, first_seq - 1);
                }
                let table = &mut d.table[first * 64..(first + block.len()) * 64];
                for ((k, word), slots) in
                    (k0..).zip(block.iter_mut()).zip(table.chunks_exact_mut(64))
                {
                    let q0 = k << 6;
                    let ring = &mut state.ring[k as usize & ring_mask];
                    let kept = classify(std::mem::take(word), q0, h0, *ring, &mut counts);
                    let remembered = bits_remembered(q0, high, width);
                    let cleared = !bits_upto(q0, h0) & bits_upto(q0, top);
                    *ring = (*ring & !cleared) | (kept & remembered);
                    let slots: &mut [u32; 64] = slots.try_into().expect("chunks of 64");
                    d.extract.take(slots, kept, forward);
                }
                state.high = high;
                continue;
            }
            if state.live {
                // Classify every word against the state at the start of the
                // batch, leaving the kept bits in the block, then move H.
                let h0 = state.high;
                for (k, word) in (k0..).zip(block.iter_mut()) {
                    let ring = state.ring[k as usize & ring_mask];
                    *word = classify(*word, k << 6, h0, ring, &mut counts);
                }
                // Every key above H is new and kept: the highest, if any,
                // is the block's.
                if top > h0 {
                    state.advance(top);
                }
            } else {
                // Anchored at its lowest key: every key is new.
                state.live = true;
                state.low = base;
                state.high = top;
            }
            // Remember the kept seqs less than W below the new high mark, and
            // forward their rows.
            let high = state.high;
            let table = &mut d.table[first * 64..(first + block.len()) * 64];
            for ((k, word), slots) in (k0..).zip(block.iter_mut()).zip(table.chunks_exact_mut(64)) {
                let kept = std::mem::take(word);
                let q0 = k << 6;
                state.ring[k as usize & ring_mask] |= kept & bits_remembered(q0, high, width);
                let slots: &mut [u32; 64] = slots.try_into().expect("chunks of 64");
                d.extract.take(slots, kept, forward);
            }
        }
        counts
    }

    /// Classifies `keys` (ascending) against `state`, high mark `h0`, with
    /// no key suspect and every key less than `width` below `h0` inside the
    /// ring's bits; appends the rows to forward and returns the highest
    /// forwarded seq (or `h0`).
    ///
    /// Branch-free: copies and late keys are common and come in no pattern a
    /// predictor could learn, so every key takes the same path and the
    /// classification becomes arithmetic. The ring lookup is always in
    /// bounds, so it is made for all keys.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn plain_keys<R: Rows + ?Sized>(
        state: &SatWindow,
        h0: u64,
        width: u64,
        stale_forwards: bool,
        rows: &R,
        keys: &[u32],
        forward: &mut Vec<u32>,
        counts: &mut DedupCounts,
    ) -> u64 {
        let from = forward.len();
        forward.resize(from + keys.len(), 0);
        let mut kept = from;
        let mut top = h0;
        for &r in keys {
            let q = rows.seq(r as usize);
            let newer = q > h0;
            let stale = !newer & (h0.wrapping_sub(q) >= width);
            let seen = !newer & !stale & state.contains(q);
            let late = !newer & !stale & !seen;
            let keep = newer | late | (stale & stale_forwards);
            counts.stale += u64::from(stale);
            counts.duplicates += u64::from(seen);
            counts.late += u64::from(late);
            forward[kept] = r;
            kept += usize::from(keep);
            // Seqs ascend: the last kept one is the highest.
            top = if keep { top.max(q) } else { top };
        }
        forward.truncate(kept);
        top
    }

    /// Classifies `keys` (ascending) against `state`, high mark `h0`, with
    /// the suspect lane and the ring guard (`H - q < R`); appends the rows to
    /// forward and returns the highest forwarded seq (or `h0`). Branch-free
    /// as [`Window::plain_keys`].
    #[inline(always)]
    fn hardened_keys<R: Rows + ?Sized>(
        state: &SatWindow,
        p: Params,
        h0: u64,
        rows: &R,
        keys: &[u32],
        forward: &mut Vec<u32>,
        c: &mut DedupCounts,
    ) -> u64 {
        let (width, jump, stale_forwards) = (p.width, p.jump, p.stale_forwards);
        let ring_bits = state.ring_bits();
        let from = forward.len();
        forward.resize(from + keys.len(), 0);
        let mut kept = from;
        let mut top = h0;
        for &r in keys {
            let q = rows.seq(r as usize);
            let newer = q > h0;
            let suspect = newer & (q.wrapping_sub(h0) > jump);
            let below = h0.wrapping_sub(q);
            let stale = !newer & (below >= width);
            let seen = !newer & !stale & (below < ring_bits) & state.contains(q);
            let late = !newer & !stale & !seen;
            let keep = (newer & !suspect) | late | (stale & stale_forwards);
            c.suspect += u64::from(suspect);
            c.stale += u64::from(stale);
            c.duplicates += u64::from(seen);
            c.late += u64::from(late);
            forward[kept] = r;
            kept += usize::from(keep);
            // Seqs ascend within the run: the last kept one is the highest.
            top = if keep { top.max(q) } else { top };
        }
        forward.truncate(kept);
        top
    }

    /// Forgets every satellite's state, as if no frame had been seen, but
    /// keeps the rings' memory (a throughput run replays its input this way).
    /// Activity and the batch counter are kept; the rings stay tracked.
    pub fn reset(&mut self) {
        self.bytes = 0;
        for state in self.sats.values_mut() {
            state.live = false;
            state.ring.fill(0);
            state.run.clear();
            self.bytes += state.bytes();
        }
    }

    /// Evicts satellites until the tracked bytes fit the budget or no victim
    /// is left. `current`: the index, among the batch's satellites, of the one
    /// just updated (`None` at the end of the batch).
    fn fit<R: Rows + ?Sized>(
        &mut self,
        current: Option<usize>,
        survivors: &[u32],
        rows: &R,
        counts: &mut DedupCounts,
    ) {
        if !self.victims_built {
            self.victims_built = true;
            self.batch_sats.clear();
            for &r in survivors {
                let s = rows.sat(r as usize);
                if self.batch_sats.last() != Some(&s) {
                    self.batch_sats.push(s);
                }
            }
            self.victims.clear();
            let batch_sats = &self.batch_sats;
            self.victims.extend(
                self.sats
                    .iter()
                    .filter(|(id, _)| batch_sats.binary_search(id).is_err())
                    .map(|(&id, st)| (st.last_active, id)),
            );
            self.victims.sort_unstable();
            self.next_victim = 0;
            self.next_batch_victim = 0;
        }
        let updated = current.unwrap_or(self.batch_sats.len());
        while self.bytes > self.limits.memory_budget {
            let id = if let Some(&(_, id)) = self.victims.get(self.next_victim) {
                self.next_victim += 1;
                id
            } else if self.next_batch_victim < updated {
                self.next_batch_victim += 1;
                self.batch_sats[self.next_batch_victim - 1]
            } else {
                break;
            };
            if let Some(st) = self.sats.remove(&id) {
                self.bytes -= st.bytes();
                counts.evicted_sats += 1;
            }
        }
    }

    /// Discards `state` and anchors it at `keys` (not empty).
    fn anchor(state: &mut SatWindow, p: Params, keys: &[u64]) {
        let width = p.width;
        let high = keys.iter().copied().max().unwrap_or(0);
        let low = keys
            .iter()
            .copied()
            .filter(|&q| high - q < width)
            .min()
            .unwrap_or(high);
        let words = state.ring.len().max(p.need(high - low));
        if words == state.ring.len() {
            state.ring.fill(0);
        } else {
            state.ring = vec![0; words].into_boxed_slice();
        }
        state.live = true;
        state.high = high;
        state.low = low;
        state.support = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        for &q in keys {
            if high - q < width {
                state.insert(q);
            }
        }
    }

    /// The class of `q` against `state`, high mark `h0`.
    #[inline]
    fn classify(state: &SatWindow, width: u64, jump: u64, h0: u64, q: u64) -> Class {
        if q > h0 {
            if q - h0 > jump {
                Class::Suspect
            } else {
                Class::New
            }
        } else if h0 - q >= width {
            Class::Stale
        } else if h0 - q < state.ring_bits() && state.contains(q) {
            Class::Seen
        } else {
            Class::Late
        }
    }

    /// Classifies one satellite's keys of the batch (`run`, ascending), appends
    /// the rows to forward and updates its state.
    fn update<R: Rows + ?Sized>(
        state: &mut SatWindow,
        p: Params,
        rows: &R,
        run: &[u32],
        forward: &mut Vec<u32>,
        counts: &mut DedupCounts,
    ) {
        let (width, jump, stale_forwards, reanchor) =
            (p.width, p.jump, p.stale_forwards, p.reanchor);
        let mut keys = run;
        if !state.live {
            let (&r0, tail) = keys.split_first().expect("runs are not empty");
            let q0 = rows.seq(r0 as usize);
            Self::anchor(state, p, &[q0]);
            state.run.clear();
            forward.push(r0);
            keys = tail;
        }
        loop {
            let h0 = state.high;
            let from = forward.len();
            let ring_bits = state.ring_bits();
            let mut c = DedupCounts::default();
            // The keys ascend: when the highest is not suspect and the lowest
            // is inside the ring's bits (or the ring covers the window), the
            // plain loop classifies them all; else the hardened one, as
            // branch-free, checks each key for both.
            let (lo, hi) = match (keys.first(), keys.last()) {
                (Some(&a), Some(&b)) => (rows.seq(a as usize), rows.seq(b as usize)),
                _ => (h0, h0),
            };
            let top = if (hi <= h0 || hi - h0 <= jump)
                && (width <= ring_bits || h0.saturating_sub(lo) < ring_bits)
            {
                Self::plain_keys(
                    state,
                    h0,
                    width,
                    stale_forwards,
                    rows,
                    keys,
                    forward,
                    &mut c,
                )
            } else {
                Self::hardened_keys(state, p, h0, rows, keys, forward, &mut c)
            };
            let kept = forward.len();
            if reanchor == 0 || (state.run.is_empty() && c.suspect + c.stale == 0) {
                counts.add(c);
                if reanchor != 0 {
                    // Every kept key is new or late: all of them support.
                    state.support = (state.support as usize + (kept - from)).min(reanchor) as u32;
                }
                Self::commit(
                    state,
                    p,
                    top,
                    forward[from..].iter().map(|&r| rows.seq(r as usize)),
                );
                return;
            }
            // Outside keys with re-anchoring on: one key at a time.
            forward.truncate(from);
            let max_gap = width.max(1);
            let mut reanchored = None;
            for (i, &r) in keys.iter().enumerate() {
                let q = rows.seq(r as usize);
                let class = Self::classify(state, width, jump, h0, q);
                if matches!(class, Class::Suspect | Class::Stale) {
                    match state.run.first() {
                        Some(&f) if q.abs_diff(f) < max_gap => state.run.push(q),
                        _ => {
                            state.run.clear();
                            state.run.push(q);
                        }
                    }
                    // `support` is at least 1 (the anchoring key) and at most
                    // `reanchor`: a provisional satellite re-anchors sooner.
                    let provisional = (state.support as usize) < reanchor;
                    if state.run.len() >= state.support as usize {
                        counts.reanchors += 1;
                        forward.push(r);
                        let keys_of_run = std::mem::take(&mut state.run);
                        Self::anchor(state, p, &keys_of_run);
                        state.run = keys_of_run;
                        state.run.clear();
                        reanchored = Some(i);
                        break;
                    }
                    if provisional {
                        // Forwarded whatever its verdict; it moves nothing.
                        counts.provisional += 1;
                        forward.push(r);
                        continue;
                    }
                } else {
                    state.run.clear();
                    if matches!(class, Class::New | Class::Late) {
                        state.support = (state.support + 1).min(reanchor as u32);
                    }
                }
                let keep = match class {
                    Class::Suspect => {
                        counts.suspect += 1;
                        false
                    }
                    Class::New => true,
                    Class::Stale => {
                        counts.stale += 1;
                        stale_forwards
                    }
                    Class::Seen => {
                        counts.duplicates += 1;
                        false
                    }
                    Class::Late => {
                        counts.late += 1;
                        true
                    }
                };
                if keep {
                    forward.push(r);
                }
            }
            match reanchored {
                Some(i) => keys = &keys[i + 1..],
                None => {
                    // Suspect keys forwarded while provisional move nothing.
                    let top = forward[from..]
                        .iter()
                        .map(|&r| rows.seq(r as usize))
                        .filter(|&q| q <= h0 || q - h0 <= jump)
                        .fold(h0, u64::max);
                    let seqs = forward[from..]
                        .iter()
                        .map(|&r| rows.seq(r as usize))
                        .filter(|&q| q <= top);
                    Self::commit(state, p, top, seqs);
                    return;
                }
            }
        }
    }

    /// Moves the high mark to `top` and remembers the `forwarded` seqs
    /// (ascending, none above `top`) inside `(top - W, top]`, growing a lazy
    /// ring first if needed.
    fn commit(
        state: &mut SatWindow,
        p: Params,
        top: u64,
        forwarded: impl Iterator<Item = u64> + Clone,
    ) {
        let width = p.width;
        // `low` only sizes a lazy ring: once the ring is full it is not needed.
        if state.ring.len() < p.full_words {
            // The seqs ascend: the first inside `(top - W, top]` is the lowest.
            let low = forwarded
                .clone()
                .find(|&q| top - q < width)
                .map_or(state.low, |q| q.min(state.low));
            // The ring holds a spread below its bits (see `ring_words_for`).
            if top - low >= state.ring_bits() {
                state.grow(p.need(top - low), top);
            }
            state.low = low;
        }
        if top > state.high {
            state.advance(top);
        }
        for q in forwarded {
            if top - q < width {
                state.insert(q);
            }
        }
    }
}
