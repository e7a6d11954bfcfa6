//! The golden cases in tests/vectors (cases.json names each command, its
//! input and the expected forwarded bytes and summary): each must match exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-vectors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn golden_vectors_match_exactly() {
    let cases: Vec<Value> =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 5, "the golden cases are missing");
    for case in &cases {
        let name = case["case"].as_str().unwrap();
        let work = scratch_dir(name);
        // Inputs are named relative to the vectors folder; outputs go to scratch.
        let args: Vec<String> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                if a.ends_with(".in.bin") {
                    vectors_dir().join(a).display().to_string()
                } else if a.ends_with(".out.bin") {
                    work.join(a).display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name}: exit {:?}: {stderr}",
            out.status
        );

        let out_name = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|a| a.as_str().filter(|a| a.ends_with(".out.bin")))
            .unwrap();
        let got = std::fs::read(work.join(out_name)).unwrap();
        let want =
            std::fs::read(vectors_dir().join(case["expected_out"].as_str().unwrap())).unwrap();
        assert!(
            got == want,
            "{name}: forwarded bytes differ ({} vs {} bytes)",
            got.len(),
            want.len()
        );

        let last = stderr.lines().last().unwrap_or_default();
        let summary: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{name}: last stderr line is not JSON ({e}): {last}"));
        let expected: Value = serde_json::from_slice(
            &std::fs::read(vectors_dir().join(case["expected_summary"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&summary[key], value, "{name}: summary key {key}");
        }
        std::fs::remove_dir_all(&work).unwrap();
    }
}
