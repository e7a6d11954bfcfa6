//! The command line: errors are one line with exit 2, help shows defaults,
//! gen is deterministic, and process reads stdin and writes stdout.

use std::io::Write;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

/// Waits up to 20 s for `child` to exit; past that, kills it (by PID, and
/// reaps it) and fails the test with `stuck`.
fn exit_within_20s(child: &mut Child, stuck: &str) -> ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{stuck}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

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
        &meridian(&["process", "--in", "x", "--out", "y", "--threads", "3"]),
        "--threads",
    );
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
        "--threads",
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

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir/cap.bin`, a capture of `frames` frames written by `gen`.
fn gen_capture(dir: &std::path::Path, frames: u64) -> std::path::PathBuf {
    let cap = dir.join("cap.bin");
    let frames = frames.to_string();
    let g = meridian(&["gen", "--out", cap.to_str().unwrap(), "--frames", &frames]);
    assert!(g.status.success(), "gen: {g:?}");
    cap
}

/// `process --threads 2` (decoding on a thread of its own) writes the bytes
/// and prints the summary of `--threads 1`, and the default (two threads
/// here) does too.
#[test]
fn process_on_two_threads_writes_what_one_does() {
    let dir = scratch("threads");
    let cap = gen_capture(&dir, 200_000);
    let run = |threads: Option<&str>| {
        let out = dir.join(format!("out-{}.bin", threads.unwrap_or("default")));
        let mut args = vec![
            "process",
            "--in",
            cap.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        if let Some(t) = threads {
            args.extend(["--threads", t]);
        }
        let done = meridian(&args);
        assert!(done.status.success(), "{done:?}");
        let err = String::from_utf8(done.stderr).unwrap();
        let summary = err.lines().last().unwrap().to_string();
        (std::fs::read(&out).unwrap(), summary)
    };
    let one = run(Some("1"));
    assert!(one.0.len() > 1_000_000, "{}", one.1);
    assert_eq!(run(Some("2")), one);
    assert_eq!(run(None), one);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A FIFO whose writer stays open and silent is read on one thread, so a
/// write error (a full disk: `/dev/full`) ends `process` at once instead of
/// waiting on the idle pipe's read.
#[test]
fn a_write_error_ends_process_on_an_idle_fifo() {
    let dir = scratch("fifo");
    let cap = gen_capture(&dir, 40_000);
    let fifo = dir.join("in.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let bytes = std::fs::read(&cap).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let path = fifo.clone();
    // The writer: the capture, then silence with the pipe held open until
    // the test ends, `done_tx` sent or dropped (at most 60 s).
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // About 20 batches: the output's first flush fails after about 18,
        // by when a reading thread running ahead has read them all.
        let _ = std::io::Write::write_all(&mut f, &bytes[..2_000_000]);
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(60));
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args([
            "process",
            "--in",
            fifo.to_str().unwrap(),
            "--out",
            "/dev/full",
        ])
        .args(["--threads", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_within_20s(
        &mut child,
        "process waited on the idle FIFO after a write error",
    );
    let _ = done_tx.send(());
    writer.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("space"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn process_refuses_the_same_file_for_input_and_output() {
    let dir = scratch("same");
    let cap = gen_capture(&dir, 100);
    let before = std::fs::read(&cap).unwrap();
    // The same path, and the same file through another name.
    let link = dir.join("link.bin");
    std::fs::hard_link(&cap, &link).unwrap();
    for out in [&cap, &link] {
        one_line_error(
            &meridian(&[
                "process",
                "--in",
                cap.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]),
            "same file",
        );
        assert_eq!(std::fs::read(&cap).unwrap(), before, "the input changed");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_checks_its_downstream_and_output_before_listening() {
    one_line_error(
        &meridian(&["serve", "--listen", "127.0.0.1:0", "--forward", "nohost"]),
        "--forward nohost",
    );
    one_line_error(
        &meridian(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "doesnotexist.invalid:80",
        ]),
        "doesnotexist.invalid",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("127.0.0.1:{port}");
    one_line_error(
        &meridian(&["serve", "--listen", &own, "--forward", &own]),
        "forward to itself",
    );
    let dir = scratch("outdir");
    let out = meridian(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        dir.to_str().unwrap(),
    ]);
    one_line_error(&out, "is a directory");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("listening"));
    one_line_error(
        &meridian(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--out",
            dir.join("x.bin").to_str().unwrap(),
            "--batch-size",
            "1048576",
            "--unacked-bytes",
            "1048576",
        ]),
        "--unacked-bytes",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn messages_name_the_real_cause() {
    one_line_error(&meridian(&["run", "--duration", "0"]), "more than 0");
    let out = meridian(&["run", "--frames", "100", "--payload", "5000", "--quiet"]);
    one_line_error(&out, "--max-payload");
    one_line_error(
        &meridian(&[
            "process",
            "--in",
            "x",
            "--out",
            "y",
            "--batch-size",
            "4294967295",
        ]),
        "--batch-size",
    );
}

#[test]
fn sigint_during_process_prints_the_summary_and_exits_130() {
    let dir = scratch("sigint");
    let cap = gen_capture(&dir, 3_000_000);
    let out = dir.join("out.bin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args([
            "process",
            "--in",
            "-",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Half the capture goes in and the pipe stays open: `process` is
    // mid-stream whenever the signal lands. (A read blocked on a silent
    // pipe is restarted after the signal, so the pipe is closed after it:
    // the stop is seen at the next batch boundary.)
    let bytes = std::fs::read(&cap).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &bytes[..bytes.len() / 2]).unwrap();
    let wrote = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) == 0 {
        assert!(
            std::time::Instant::now() < wrote,
            "process wrote nothing in 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    drop(stdin);
    let status = exit_within_20s(&mut child, "process did not stop after SIGINT");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let summary: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let decoded = summary["frames_decoded"].as_u64().unwrap();
    assert!(decoded > 0 && decoded < 3_000_000, "{summary}");
    // Whole batches only: the output holds exactly what the summary forwarded.
    assert_eq!(
        summary["forwarded_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigint_during_run_prints_the_partial_report_and_exits_130() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args(["run", "--duration", "60", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once the run is timing frames: its first progress line says
    // so (on a loaded machine, generating the capture alone takes seconds).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.trim_start().starts_with("run:") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(std::time::Duration::from_secs(60)).is_err() {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("run printed no progress line within 60 s");
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = exit_within_20s(&mut child, "run did not stop after SIGINT");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    assert!(elapsed < 30.0, "ran {elapsed} s of 60 after SIGINT");
    assert!(report["frames"].as_u64().unwrap() > 0, "{report}");
}
