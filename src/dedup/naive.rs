//! The naive twin of dedup: a `HashSet` for the batch and a `BTreeMap` of
//! `BTreeSet`s for the window, each rule of [`super::window`] written the
//! obvious way (no rings: the ring size is only computed, with
//! [`ring_words_for`], for the byte accounting that chooses evictions).
//! Property tests hold [`super::Dedup`] to this.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::window::{full_ring_words, ring_words_for, sat_bytes, WindowLimits};
use super::{DedupCounts, StalePolicy};

/// One satellite's state.
#[derive(Debug, Clone, Default)]
struct NaiveSat {
    /// False until anchored, and again after a reset.
    live: bool,
    /// H.
    high: u64,
    /// Lowest seq remembered since the last anchoring.
    low: u64,
    /// S: the members, within (H - W, H].
    members: BTreeSet<u64>,
    /// Consecutive outside keys, first one first.
    run: Vec<u64>,
    /// Keys accepted since the last anchoring: the anchoring keys, then the
    /// new and late ones. Below `reanchor_after`, the satellite is provisional.
    support: u64,
    /// The words its ring would have: the largest need since it has an entry.
    ring_words: usize,
    /// Last batch with a key of this satellite.
    last_active: u64,
}

impl NaiveSat {
    fn bytes(&self) -> usize {
        sat_bytes(self.ring_words, self.run.len())
    }
}

/// The naive dedup stage with its window state.
#[derive(Debug, Clone)]
pub struct NaiveDedup {
    width: u64,
    stale: StalePolicy,
    limits: WindowLimits,
    state: BTreeMap<u32, NaiveSat>,
    bytes: usize,
    batch: u64,
}

impl NaiveDedup {
    /// An empty window `width` seqs wide per satellite, with `limits`.
    pub fn new(width: u64, stale: StalePolicy, limits: WindowLimits) -> NaiveDedup {
        NaiveDedup {
            width,
            stale,
            limits,
            state: BTreeMap::new(),
            bytes: 0,
            batch: 0,
        }
    }

    /// Tracked bytes of all satellites' state, as [`super::Window::tracked_bytes`].
    pub fn tracked_bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every satellite's state as [`super::Window::reset`] does:
    /// entries, ring sizes and activity stay.
    pub fn reset(&mut self) {
        for sat in self.state.values_mut() {
            sat.live = false;
            sat.members.clear();
            sat.run.clear();
        }
        self.bytes = self.state.values().map(NaiveSat::bytes).sum();
    }

    /// `valid` lists the batch's valid rows in stream order as (row, sat, seq).
    /// Returns the rows to forward in ascending (sat, seq) order.
    pub fn run(&mut self, valid: &[(u32, u32, u64)]) -> (Vec<u32>, DedupCounts) {
        self.batch += 1;
        let mut counts = DedupCounts::default();
        let mut seen = HashSet::new();
        let mut firsts = Vec::new();
        for &(row, sat, seq) in valid {
            if seen.insert((sat, seq)) {
                firsts.push((sat, seq, row));
            } else {
                counts.duplicates += 1;
            }
        }
        firsts.sort_unstable();
        let batch_sats: BTreeSet<u32> = firsts.iter().map(|&(sat, _, _)| sat).collect();
        let mut forwarded = Vec::new();
        for &sat in &batch_sats {
            let keys: Vec<(u64, u32)> = firsts
                .iter()
                .filter(|&&(s, _, _)| s == sat)
                .map(|&(_, seq, row)| (seq, row))
                .collect();
            let old = self.state.get(&sat).map_or(0, NaiveSat::bytes);
            let entry = self.state.entry(sat).or_default();
            entry.last_active = self.batch;
            let rows = Self::update(
                entry,
                self.width,
                self.stale,
                self.limits,
                &keys,
                &mut counts,
            );
            forwarded.extend(rows.into_iter().map(|(seq, row)| (sat, seq, row)));
            self.bytes = self.bytes - old + entry.bytes();
            self.fit(Some(sat), &batch_sats, &mut counts);
        }
        self.fit(None, &batch_sats, &mut counts);
        forwarded.sort_unstable();
        (
            forwarded.into_iter().map(|(_, _, row)| row).collect(),
            counts,
        )
    }

    /// While over budget, evicts the first by (activity, id) among the
    /// satellites other than `current` and the batch's satellites above it.
    fn fit(&mut self, current: Option<u32>, batch_sats: &BTreeSet<u32>, counts: &mut DedupCounts) {
        while self.bytes > self.limits.memory_budget {
            let victim = self
                .state
                .iter()
                .filter(|&(&id, _)| match current {
                    Some(c) => id != c && !(batch_sats.contains(&id) && id > c),
                    None => true,
                })
                .min_by_key(|&(&id, sat)| (sat.last_active, id))
                .map(|(&id, _)| id);
            let Some(id) = victim else { break };
            let sat = self.state.remove(&id).expect("chosen above");
            self.bytes -= sat.bytes();
            counts.evicted_sats += 1;
        }
    }

    /// The ring words a state needs: the spread H - L through
    /// [`ring_words_for`] for lazy rings, else the full ring.
    fn need(width: u64, limits: WindowLimits, sat: &NaiveSat) -> usize {
        if limits.lazy_rings {
            ring_words_for(sat.high - sat.low, width)
        } else {
            full_ring_words(width)
        }
    }

    /// Discards `sat`'s state and anchors it at `keys`: H = their highest,
    /// S = those within (H - W, H].
    fn anchor(sat: &mut NaiveSat, width: u64, limits: WindowLimits, keys: &[u64]) {
        let high = *keys.iter().max().expect("anchored at some key");
        sat.live = true;
        sat.high = high;
        sat.members = keys.iter().copied().filter(|&q| high - q < width).collect();
        sat.low = sat.members.first().copied().unwrap_or(high);
        sat.run.clear();
        sat.support = keys.len() as u64;
        sat.ring_words = sat.ring_words.max(Self::need(width, limits, sat));
    }

    /// One satellite's keys of the batch, `(seq, row)` ascending. Returns the
    /// forwarded ones.
    fn update(
        sat: &mut NaiveSat,
        width: u64,
        stale: StalePolicy,
        limits: WindowLimits,
        keys: &[(u64, u32)],
        counts: &mut DedupCounts,
    ) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut rest = keys;
        if !sat.live {
            Self::anchor(sat, width, limits, &[keys[0].0]);
            out.push(keys[0]);
            rest = &keys[1..];
        }
        // Forwarded since the state was last anchored.
        let mut phase = Vec::new();
        let n = limits.reanchor_after as usize;
        for &(q, row) in rest {
            let h = sat.high;
            let suspect = q > h && limits.max_seq_jump > 0 && q - h > limits.max_seq_jump;
            let is_stale = q <= h && h - q >= width;
            if n > 0 && (suspect || is_stale) {
                if sat.run.is_empty() || q.abs_diff(sat.run[0]) >= width.max(1) {
                    sat.run.clear();
                }
                sat.run.push(q);
                // Confirmed: n in a row. Provisional: as many as support it.
                if sat.run.len() as u64 >= sat.support.min(n as u64) {
                    counts.reanchors += 1;
                    out.push((q, row));
                    let run = sat.run.clone();
                    Self::anchor(sat, width, limits, &run);
                    phase.clear();
                    continue;
                }
                if sat.support < n as u64 {
                    // Provisional: forwarded whatever its verdict, moves nothing.
                    counts.provisional += 1;
                    out.push((q, row));
                    continue;
                }
            } else if n > 0 {
                sat.run.clear();
            }
            let forward = if suspect {
                counts.suspect += 1;
                false
            } else if q > h {
                true
            } else if is_stale {
                counts.stale += 1;
                stale == StalePolicy::Forward
            } else if sat.members.contains(&q) {
                counts.duplicates += 1;
                false
            } else {
                counts.late += 1;
                true
            };
            if forward {
                out.push((q, row));
                if !is_stale {
                    phase.push(q);
                    sat.support += 1;
                }
            }
        }
        // Only now does the state take this batch's forwarded keys.
        let high = phase.iter().copied().fold(sat.high, u64::max);
        for &q in &phase {
            if high - q < width {
                sat.members.insert(q);
                sat.low = sat.low.min(q);
            }
        }
        sat.high = high;
        // Keep (H - W, H]: split_off is O(log n), a retain would walk every member.
        if width == 0 {
            sat.members.clear();
        } else if high >= width {
            sat.members = sat.members.split_off(&(high - (width - 1)));
        }
        sat.ring_words = sat.ring_words.max(Self::need(width, limits, sat));
        out
    }
}
