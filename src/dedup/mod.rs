//! Stage 3: deduplicate. Two passes, both over rows already known valid:
//!
//! 1. [`sort_unique`]: in-batch dedup. Pack each valid row's (sat, seq, row)
//!    into one integer key, sort, and keep the first row of each run of equal
//!    (sat, seq): the first copy in stream order wins. The survivors come out
//!    in ascending (sat, seq) order, which is also the forwarding order.
//! 2. [`window`]: the cross-batch window, per satellite, against the state as
//!    it was at the start of the batch.
//!
//! [`naive`] is the twin of both, with a `HashSet` and a `BTreeMap`.
//!
//! The window's hardening ([`WindowLimits`]: suspect jumps, re-anchoring,
//! lazy rings, a memory budget) is described in [`window`].

pub mod extract;
pub mod naive;
pub mod sort_unique;
pub mod window;

use crate::batch::Rows;

pub use sort_unique::{Packing, SortUnique};
pub use window::{StalePolicy, Window, WindowLimits, DEFAULT_WINDOW, MAX_WINDOW};

impl clap::ValueEnum for StalePolicy {
    fn value_variants<'a>() -> &'a [Self] {
        &[StalePolicy::Forward, StalePolicy::Drop]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            StalePolicy::Forward => clap::builder::PossibleValue::new("forward")
                .help("count stale frames and forward them"),
            StalePolicy::Drop => {
                clap::builder::PossibleValue::new("drop").help("count stale frames and drop them")
            }
        })
    }
}

/// What dedup counted in one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DedupCounts {
    /// Copies dropped: in-batch copies plus keys already forwarded within the window.
    pub duplicates: u64,
    /// Keys at or below the window's low edge (forwarded unless the policy drops them).
    pub stale: u64,
    /// Keys below the window's high mark, not seen before, forwarded.
    pub late: u64,
    /// Keys more than [`WindowLimits::max_seq_jump`] above their satellite's
    /// high mark: dropped, and the window did not move.
    pub suspect: u64,
    /// Keys outside their satellite's window (suspect or stale) forwarded
    /// because the satellite was provisional (see [`window`]): the window
    /// did not move.
    pub provisional: u64,
    /// Satellites re-anchored after [`WindowLimits::reanchor_after`]
    /// consistent keys outside their window, fewer while provisional (each
    /// completing key forwarded).
    pub reanchors: u64,
    /// Satellites whose state was evicted to fit [`WindowLimits::memory_budget`].
    pub evicted_sats: u64,
}

impl DedupCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: DedupCounts) {
        self.duplicates += other.duplicates;
        self.stale += other.stale;
        self.late += other.late;
        self.suspect += other.suspect;
        self.provisional += other.provisional;
        self.reanchors += other.reanchors;
        self.evicted_sats += other.evicted_sats;
    }
}

/// The dedup stage with its reusable scratch space and its window state.
#[derive(Debug)]
pub struct Dedup {
    sorter: SortUnique,
    survivors: Vec<u32>,
    window: Window,
}

impl Dedup {
    /// A dedup stage with an empty window of `window` sequence numbers per
    /// satellite, hardened by `limits` ([`WindowLimits::OFF`]: not at all).
    pub fn new(window: u64, stale: StalePolicy, limits: WindowLimits) -> Dedup {
        Dedup {
            sorter: SortUnique::default(),
            survivors: Vec::new(),
            window: Window::new(window, stale, limits),
        }
    }

    /// The cross-batch window (its tracked bytes, its satellites).
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// This stage with the scalar twins of the direct layout's AVX-512
    /// kernels ([`SortUnique::scalar`]), for tests on any CPU.
    pub fn with_scalar_kernels(mut self) -> Dedup {
        self.sorter = SortUnique::scalar();
        self
    }

    /// The in-batch packing of the last batch run (`None` if it had no valid
    /// row): [`Packing::Direct`] with a window without limits took the
    /// word-at-a-time window ([`Window`]'s direct path).
    pub fn last_packing(&self) -> Option<Packing> {
        self.sorter.last_packing
    }

    /// Forgets the window state, keeping its memory.
    pub fn reset(&mut self) {
        self.window.reset();
    }

    /// Deduplicates the valid rows of `batch` (set bits of `mask`) and writes
    /// the rows to forward into `forward`, in ascending (sat, seq) order.
    #[inline(never)]
    pub fn run<R: Rows + ?Sized>(
        &mut self,
        batch: &R,
        mask: &[u64],
        forward: &mut Vec<u32>,
    ) -> DedupCounts {
        forward.clear();
        let packing = self.sorter.prepare(batch, mask);
        if self.window.is_plain() && matches!(packing, Some(Packing::Direct { .. })) {
            // The window reads the direct table's words itself: no survivor
            // list, no re-reading sat and seq through row ids.
            return self.window.apply_direct(self.sorter.direct(), forward);
        }
        let mut counts = DedupCounts {
            duplicates: match packing {
                Some(p) => self.sorter.finish(p, &mut self.survivors),
                None => {
                    self.survivors.clear();
                    0
                }
            },
            ..DedupCounts::default()
        };
        counts.add(self.window.apply(batch, &self.survivors, forward));
        counts
    }
}
