//! Replays every file of the checked-in fuzz corpora (fuzz/corpus/*)
//! through the fuzz targets' own checks, on stable, in `cargo test`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn decode_corpus_replays_clean() {
    let files = corpus("decode");
    assert!(files.len() >= 5, "the decode corpus is missing");
    for (name, data) in &files {
        let result = std::panic::catch_unwind(|| checks::check_decode(data));
        assert!(result.is_ok(), "{name} failed the decode checks");
    }
}

#[test]
fn pipeline_corpus_replays_clean() {
    let files = corpus("pipeline");
    assert!(files.len() >= 5, "the pipeline corpus is missing");
    let mut frames = 0;
    for (name, data) in &files {
        let u = arbitrary::Unstructured::new(data);
        let Ok(input) = <checks::PipelineInput as arbitrary::Arbitrary>::arbitrary_take_rest(u)
        else {
            continue; // libFuzzer skips inputs the type cannot be built from, too
        };
        let result = std::panic::catch_unwind(|| checks::check_pipeline(&input));
        assert!(result.is_ok(), "{name} failed the pipeline checks");
        frames += result.unwrap_or(0);
    }
    assert!(frames > 0, "no corpus input made a single frame");
}
