//! The first-version job of the stages after decode, RFC-0058's starting
//! point, kept as the yardstick the columnar core is measured against
//! (criterion group `after-decode`).
//!
//! It does what a first version would: the batch's rows as a `Vec` of
//! `(sat, seq, flags)` tuples, filtered into a new `Vec` of the valid ones,
//! a std `HashSet<(u32, u64)>` cleared per batch for the in-batch copies,
//! the kept indices copied out with `to_vec`, and no sort and no window.
//! It is less work than Meridian's stages, which also sort the survivors by
//! (sat, seq) and drop copies across batches through the window: a ratio
//! above 1 is the columnar design paying for that work and more.

use std::collections::HashSet;

use crate::wire::FLAG_CORRUPT;

/// One row as the first version holds it: (sat, seq, flags).
pub type Row = (u32, u64, u8);

/// The first-version job's state: its `HashSet`, reused across batches.
#[derive(Debug, Default)]
pub struct FirstVersionJob {
    seen: HashSet<(u32, u64)>,
}

impl FirstVersionJob {
    /// The indices of the rows to forward: valid (not marked corrupt, sat at
    /// most `max_sat`) and the first copy of their (sat, seq) in the batch,
    /// in stream order.
    pub fn run(&mut self, rows: &[Row], max_sat: u32) -> Vec<u32> {
        let valid: Vec<(u32, Row)> = rows
            .iter()
            .enumerate()
            .filter(|(_, &(sat, _, flags))| flags & FLAG_CORRUPT == 0 && sat <= max_sat)
            .map(|(i, &row)| (i as u32, row))
            .collect();
        self.seen.clear();
        let mut kept = Vec::new();
        for (i, (sat, seq, _)) in valid {
            if self.seen.insert((sat, seq)) {
                kept.push(i);
            }
        }
        kept.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_valid_copies_in_stream_order() {
        let rows = [
            (7, 100, 0),
            (3, 5, 0),
            (7, 100, 0),
            (9, 1, FLAG_CORRUPT),
            (5000, 1, 0),
            (3, 4, 0),
        ];
        assert_eq!(FirstVersionJob::default().run(&rows, 4095), vec![0, 1, 5]);
    }
}
