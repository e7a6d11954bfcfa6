//! Arbitrary frames and options -> the whole pipeline against the reference
//! model. See `checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::PipelineInput| {
    checks::check_pipeline(&input);
});
