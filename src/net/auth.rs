//! Which station may speak for which satellites: the `[stations.NAME]`
//! tables of `serve --config` (`satellites = ["1-24", "100"]`).
//!
//! With an [`Allowlist`], a station not listed is refused, and a listed
//! station's frames for satellites not in its set are dropped before they
//! reach the pipeline (counted `unauthorized`): they are never forwarded
//! and never enter the dedup window, so a forged `(sat, seq)` cannot
//! suppress the genuine copy. Without one, every station may send anything.

use std::collections::HashMap;
use std::sync::Arc;

use crate::batch::Batch;

/// A set of satellite ids, as sorted, merged inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SatSet {
    ranges: Vec<(u32, u32)>,
}

impl SatSet {
    /// Parses items like `"1-24"` and `"100"`.
    ///
    /// # Errors
    /// An item that is not a number or a range `LOW-HIGH` with `LOW <= HIGH`.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<SatSet, String> {
        let mut ranges = Vec::new();
        for item in items {
            let s = item.trim();
            let num = |t: &str| {
                t.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("'{item}' is not a satellite id or a range like \"1-24\""))
            };
            let r = match s.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(s)?, num(s)?),
            };
            if r.0 > r.1 {
                return Err(format!("'{item}': the range goes down"));
            }
            ranges.push(r);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ok(SatSet { ranges: merged })
    }

    /// True when `sat` is in the set.
    #[inline]
    pub fn contains(&self, sat: u32) -> bool {
        let i = self.ranges.partition_point(|&(lo, _)| lo <= sat);
        i > 0 && sat <= self.ranges[i - 1].1
    }

    /// Keeps only the rows of `batch` whose satellite is in the set (in
    /// order; `scratch` is reused). Returns the rows dropped.
    pub fn retain(&self, batch: &mut Batch, scratch: &mut Batch) -> u64 {
        if batch.sat.iter().all(|&s| self.contains(s)) {
            return 0;
        }
        scratch.clear();
        for i in 0..batch.len() {
            if self.contains(batch.sat[i]) {
                scratch.push(batch.sat[i], batch.seq[i], batch.flags[i], batch.frame(i));
            }
        }
        let dropped = (batch.len() - scratch.len()) as u64;
        std::mem::swap(batch, scratch);
        dropped
    }
}

/// Per station name, the satellites it may send frames for.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    stations: HashMap<String, Arc<SatSet>>,
}

impl Allowlist {
    /// Adds (or replaces) a station's set.
    pub fn insert(&mut self, station: &str, sats: SatSet) {
        self.stations.insert(station.to_string(), Arc::new(sats));
    }

    /// The station's set; `None` for a station not listed (refused).
    pub fn get(&self, station: &str) -> Option<Arc<SatSet>> {
        self.stations.get(station).cloned()
    }

    /// Stations listed.
    pub fn len(&self) -> usize {
        self.stations.len()
    }

    /// True when no station is listed (every station is refused).
    pub fn is_empty(&self) -> bool {
        self.stations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_merge_and_match() {
        let s = SatSet::parse(["100", "1-24", "20-30", " 31 "]).unwrap();
        assert_eq!(s.ranges, vec![(1, 31), (100, 100)]);
        for sat in [1, 24, 31, 100] {
            assert!(s.contains(sat), "{sat}");
        }
        for sat in [0, 32, 99, 101, u32::MAX] {
            assert!(!s.contains(sat), "{sat}");
        }
        assert!(SatSet::parse(["5-2"]).is_err());
        assert!(SatSet::parse(["x"]).is_err());
        assert!(SatSet::parse(["1-"]).is_err());
        assert!(!SatSet::parse([]).unwrap().contains(0));
    }

    #[test]
    fn retain_keeps_allowed_rows_in_order() {
        let s = SatSet::parse(["1-2"]).unwrap();
        let mut b = Batch::default();
        for (sat, seq) in [(1u32, 10u64), (3, 11), (2, 12), (9, 13)] {
            b.push(sat, seq, 0, &[sat as u8, seq as u8]);
        }
        let mut scratch = Batch::default();
        assert_eq!(s.retain(&mut b, &mut scratch), 2);
        assert_eq!(b.sat, vec![1, 2]);
        assert_eq!(b.seq, vec![10, 12]);
        assert_eq!(b.frame(1), &[2, 12]);
        assert_eq!(s.retain(&mut b, &mut scratch), 0);
    }
}
