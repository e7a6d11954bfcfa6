//! SoA, AoS and baseline forward identical bytes and counters on the same
//! input, and all equal the reference model: the runner's comparison
//! between them is a comparison of equals.

mod common;

use meridian_pipeline::harness::gen::{capture, GenConfig};
use meridian_pipeline::harness::layout::{run_all, Layout};
use meridian_pipeline::harness::reference;
use meridian_pipeline::Config;
use proptest::prelude::*;

fn check_layouts_agree(data: &[u8], cfg: Config) -> Result<(), TestCaseError> {
    let (want, want_summary, _) = reference::run(data, &cfg);
    for layout in Layout::ALL {
        let mut engine = layout.engine(cfg);
        let mut out = Vec::new();
        let summary = run_all(engine.as_mut(), data, cfg.batch_size, &mut out).unwrap();
        prop_assert!(out == want, "{} forwarded different bytes", layout.name());
        prop_assert_eq!(
            summary,
            want_summary,
            "{} counted differently",
            layout.name()
        );
    }
    Ok(())
}

#[test]
fn layouts_agree_on_the_default_workload() {
    let data = capture(&GenConfig {
        frames: 30_000,
        ..GenConfig::default()
    });
    for batch_size in [1, 100, 1000, 5000] {
        check_layouts_agree(
            &data,
            Config {
                batch_size,
                ..Config::default()
            },
        )
        .unwrap();
    }
    // A narrow window makes stale and late keys.
    check_layouts_agree(
        &data,
        Config {
            batch_size: 300,
            window: 64,
            ..Config::default()
        },
    )
    .unwrap();
}

#[test]
fn replaying_after_a_window_reset_forwards_the_same_again() {
    let data = capture(&GenConfig {
        frames: 5_000,
        ..GenConfig::default()
    });
    for layout in Layout::ALL {
        let mut engine = layout.engine(Config::default());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let a = run_all(engine.as_mut(), &data, 1000, &mut first).unwrap();
        engine.reset_window();
        let b = run_all(engine.as_mut(), &data, 1000, &mut second).unwrap();
        assert!(!first.is_empty());
        assert!(first == second, "{}", layout.name());
        assert_eq!(
            b.pipeline.forwarded,
            2 * a.pipeline.forwarded,
            "{}",
            layout.name()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn layouts_agree_on_arbitrary_streams(data in common::stream(), cfg in common::config()) {
        check_layouts_agree(&data, cfg)?;
    }
}
