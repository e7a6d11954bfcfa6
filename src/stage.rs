//! The stages and the one driver that runs them.
//!
//! Every caller that processes a decoded batch (file mode, the throughput
//! runner sequential and data-parallel, `serve`, the layouts, the tests) goes
//! through [`drive`], so the order validate -> dedup -> forward is written
//! once, here. Callers observe the stages through a [`Probe`]: the runner's
//! clock and allocation counts, the zero-allocation test and anything else
//! that wants a hook before and after each stage. `()` is the no-op probe and
//! compiles to nothing.

use std::io;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// One stage of the pipeline, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Bytes to rows ([`crate::decode`]).
    Decode,
    /// The validity mask ([`crate::validate`]).
    Validate,
    /// In-batch dedup, the cross-batch window, (sat, seq) order ([`crate::dedup`]).
    Dedup,
    /// The chosen rows' bytes out ([`crate::forward`]).
    Forward,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 4] = [Stage::Decode, Stage::Validate, Stage::Dedup, Stage::Forward];

    /// The stages [`drive`] runs on a decoded batch.
    pub const AFTER_DECODE: [Stage; 3] = [Stage::Validate, Stage::Dedup, Stage::Forward];

    /// The stage's name in reports and JSON keys.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Dedup => "dedup",
            Stage::Forward => "forward",
        }
    }

    /// The stage's position in [`Stage::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A value per stage, indexed by [`Stage`]; serialises as an object keyed by
/// stage name in pipeline order.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PerStage<T>(pub [T; 4]);

impl<T> std::ops::Index<Stage> for PerStage<T> {
    type Output = T;
    fn index(&self, s: Stage) -> &T {
        &self.0[s.index()]
    }
}

impl<T> std::ops::IndexMut<Stage> for PerStage<T> {
    fn index_mut(&mut self, s: Stage) -> &mut T {
        &mut self.0[s.index()]
    }
}

impl<T: Serialize> Serialize for PerStage<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(Stage::ALL.len()))?;
        for s in Stage::ALL {
            m.serialize_entry(s.name(), &self[s])?;
        }
        m.end()
    }
}

/// Hooks around each stage. Both default to nothing.
pub trait Probe {
    /// Called right before `stage` runs.
    #[inline(always)]
    fn before(&mut self, stage: Stage) {
        let _ = stage;
    }
    /// Called right after `stage` ran.
    #[inline(always)]
    fn after(&mut self, stage: Stage) {
        let _ = stage;
    }
}

/// The no-op probe.
impl Probe for () {}

impl<P: Probe + ?Sized> Probe for &mut P {
    #[inline(always)]
    fn before(&mut self, stage: Stage) {
        (**self).before(stage);
    }
    #[inline(always)]
    fn after(&mut self, stage: Stage) {
        (**self).after(stage);
    }
}

/// The stages after decode of one layout, bound to one decoded batch and
/// its output. [`drive`] calls them in order; implementors only say what
/// each stage does.
pub trait BatchStages {
    /// Counts one more batch.
    fn count_batch(&mut self);
    /// Fills the validity mask.
    fn validate(&mut self);
    /// Chooses the rows to forward, in (sat, seq) order.
    fn dedup(&mut self);
    /// Writes the chosen rows' bytes.
    ///
    /// # Errors
    /// When the output fails.
    fn forward(&mut self) -> io::Result<()>;
}

/// Runs validate -> dedup -> forward on one decoded batch, with `probe`
/// called around each stage, and counts the batch. The one place the stage
/// sequence is written.
///
/// # Errors
/// When the forward stage's output fails.
#[inline]
pub fn drive<S: BatchStages + ?Sized, P: Probe + ?Sized>(
    stages: &mut S,
    probe: &mut P,
) -> io::Result<()> {
    stages.count_batch();
    probe.before(Stage::Validate);
    stages.validate();
    probe.after(Stage::Validate);
    probe.before(Stage::Dedup);
    stages.dedup();
    probe.after(Stage::Dedup);
    probe.before(Stage::Forward);
    let res = stages.forward();
    probe.after(Stage::Forward);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);
    impl Probe for Log {
        fn before(&mut self, s: Stage) {
            self.0.push(format!("+{}", s.name()));
        }
        fn after(&mut self, s: Stage) {
            self.0.push(format!("-{}", s.name()));
        }
    }
    struct Steps<'a>(&'a mut Vec<String>);
    impl BatchStages for Steps<'_> {
        fn count_batch(&mut self) {
            self.0.push("batch".into());
        }
        fn validate(&mut self) {
            self.0.push("validate".into());
        }
        fn dedup(&mut self) {
            self.0.push("dedup".into());
        }
        fn forward(&mut self) -> io::Result<()> {
            self.0.push("forward".into());
            Ok(())
        }
    }

    #[test]
    fn drive_runs_the_stages_in_order_inside_the_probe() {
        let mut steps = Vec::new();
        let mut log = Log::default();
        drive(&mut Steps(&mut steps), &mut log).unwrap();
        assert_eq!(steps, ["batch", "validate", "dedup", "forward"]);
        assert_eq!(
            log.0,
            [
                "+validate",
                "-validate",
                "+dedup",
                "-dedup",
                "+forward",
                "-forward"
            ]
        );
    }

    #[test]
    fn per_stage_serialises_by_name_in_order() {
        let p = PerStage([1, 2, 3, 4]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"decode":1,"validate":2,"dedup":3,"forward":4}"#
        );
        assert_eq!(p[Stage::Dedup], 3);
    }
}
