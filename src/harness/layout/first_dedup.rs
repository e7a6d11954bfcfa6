//! The baseline's dedup, frozen as the first version wrote it (commit
//! ecff40e's `dedup/naive.rs`): a `HashSet` for the batch and a `BTreeMap`
//! of `BTreeSet`s for the window, the plain window rule only. The baseline
//! is the yardstick of the performance figures, so its code does not change
//! when the product's naive twin ([`crate::dedup::naive`]) does.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::dedup::{DedupCounts, StalePolicy};

/// The first version's dedup stage with its window state.
#[derive(Debug, Clone)]
pub struct FirstDedup {
    width: u64,
    stale: StalePolicy,
    /// Per sat: (H, S).
    state: BTreeMap<u32, (u64, BTreeSet<u64>)>,
}

impl FirstDedup {
    /// An empty window `width` seqs wide per satellite.
    pub fn new(width: u64, stale: StalePolicy) -> FirstDedup {
        FirstDedup {
            width,
            stale,
            state: BTreeMap::new(),
        }
    }

    /// `valid` lists the batch's valid rows in stream order as (row, sat, seq).
    /// Returns the rows to forward in ascending (sat, seq) order.
    ///
    /// # Panics
    /// Never: every satellite that forwarded a key has an entry.
    pub fn run(&mut self, valid: &[(u32, u32, u64)]) -> (Vec<u32>, DedupCounts) {
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
        let mut forwarded = Vec::new();
        for &(sat, seq, row) in &firsts {
            let forward = match self.state.get(&sat) {
                None => true,
                Some(&(h, _)) if seq > h => true,
                Some(&(h, _)) if h >= self.width && seq <= h - self.width => {
                    counts.stale += 1;
                    self.stale == StalePolicy::Forward
                }
                Some((_, s)) if s.contains(&seq) => {
                    counts.duplicates += 1;
                    false
                }
                Some(_) => {
                    counts.late += 1;
                    true
                }
            };
            if forward {
                forwarded.push((sat, seq, row));
            }
        }
        for &(sat, seq, _) in &forwarded {
            let entry = self.state.entry(sat).or_insert((seq, BTreeSet::new()));
            entry.0 = entry.0.max(seq);
            entry.1.insert(seq);
        }
        // Only the satellites that forwarded something moved their H. Every
        // seq kept is <= H, so keeping (H - W, H] is keeping >= H - W + 1.
        for &(sat, _, _) in &forwarded {
            let (h, s) = self.state.get_mut(&sat).expect("inserted above");
            if self.width == 0 {
                s.clear();
            } else if *h >= self.width {
                *s = s.split_off(&(*h - (self.width - 1)));
            }
        }
        forwarded.sort_unstable();
        (
            forwarded.into_iter().map(|(_, _, row)| row).collect(),
            counts,
        )
    }
}
