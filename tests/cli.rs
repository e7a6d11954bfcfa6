//! The command line: errors are one line with exit 2, help shows defaults,
//! gen is deterministic, and process reads stdin and writes stdout.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args(args)
        .output()
        .unwrap()
}

fn one_line_error(out: &Output, mentions: &str) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.contains(mentions),
        "{err:?} does not mention {mentions:?}"
    );
}

#[test]
fn bad_arguments_are_one_line_with_exit_2() {
    one_line_error(
        &meridian(&["process", "--in", "x", "--out", "y", "--batch-size", "0"]),
        "--batch-size",
    );
    one_line_error(
        &meridian(&["process", "--in", "x", "--out", "y", "--batch-size", "ten"]),
        "--batch-size",
    );
    one_line_error(
        &meridian(&[
            "process",
            "--in",
            "x",
            "--out",
            "y",
            "--window",
            "99999999999",
        ]),
        "--window",
    );
    one_line_error(
        &meridian(&[
            "process",
            "--in",
            "x",
            "--out",
            "y",
            "--max-payload",
            "70000",
        ]),
        "--max-payload",
    );
    one_line_error(
        &meridian(&["process", "--in", "x", "--out", "y", "--stale", "keep"]),
        "--stale",
    );
    one_line_error(&meridian(&["process", "--out", "y"]), "--in");
    one_line_error(
        &meridian(&["gen", "--out", "-", "--payload", "9..3"]),
        "--payload",
    );
    one_line_error(
        &meridian(&["gen", "--out", "-", "--invalid-rate", "2"]),
        "--invalid-rate",
    );
    one_line_error(&meridian(&["frobnicate"]), "frobnicate");
}

#[test]
fn unreadable_input_is_one_line_with_exit_2() {
    one_line_error(
        &meridian(&["process", "--in", "/no/such/capture.bin", "--out", "-"]),
        "/no/such/capture.bin",
    );
    one_line_error(
        &meridian(&["process", "--in", "/", "--out", "-"]),
        "directory",
    );
    one_line_error(
        &meridian(&["process", "--in", "-", "--out", "/no/such/dir/out.bin"]),
        "/no/such/dir/out.bin",
    );
}

#[test]
fn help_explains_each_flag_with_its_default() {
    let out = meridian(&["process", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--batch-size",
        "[default: 1000]",
        "--window",
        "[default: 65536]",
        "--max-sat",
        "[default: 4095]",
        "--max-payload",
        "[default: 4096]",
        "--stale",
        "[default: forward]",
        "--json",
    ] {
        assert!(
            help.contains(needle),
            "process --help lacks {needle}:\n{help}"
        );
    }
    let out = meridian(&["gen", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--frames",
        "--sats",
        "[default: 48]",
        "--stations",
        "[default: 3]",
        "--seed",
        "--invalid-rate",
        "--payload",
    ] {
        assert!(help.contains(needle), "gen --help lacks {needle}:\n{help}");
    }
}

#[test]
fn gen_is_deterministic_and_process_pipes() {
    let a = meridian(&["gen", "--out", "-", "--frames", "3000", "--seed", "9"]);
    let b = meridian(&["gen", "--out", "-", "--frames", "3000", "--seed", "9"]);
    let c = meridian(&["gen", "--out", "-", "--frames", "3000", "--seed", "10"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);

    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args(["process", "--in", "-", "--out", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = a.stdout.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().unwrap()).unwrap();
    assert_eq!(summary["frames_decoded"], 3000);
    assert_eq!(summary["input_bytes"], a.stdout.len() as u64);
    assert_eq!(summary["forwarded_bytes"], out.stdout.len() as u64);
    // The workload has copies (overlapping stations) and some invalid frames.
    let dups = summary["duplicates"].as_u64().unwrap();
    assert!((900..1800).contains(&dups), "duplicates {dups}");
    assert!(summary["invalid"].as_u64().unwrap() > 0);
}
