//! `serve`'s structured logs: JSON lines with `--log-format json`, the
//! RUST_LOG-style `--log-filter`, station events, the periodic stats event,
//! and the rate limit that keeps a flood of bad HELLOs out of the log.
//! Real processes on 127.0.0.1; every wait bounded; every process killed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::proc::{Proc, Scratch};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-pipeline");
const WAIT: Duration = Duration::from_secs(20);

/// `n` connections that each open with a HELLO of an unknown version.
fn bad_hellos(addr: &str, n: usize) {
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"MRDH\x09\x00").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest); // serve closes it
    }
}

fn gen_station(addr: &str, name: &str) {
    let st = Command::new(BIN)
        .args([
            "gen",
            "--connect",
            addr,
            "--stations",
            "1",
            "--frames",
            "300",
        ])
        .args(["--station-name", name, "--invalid-rate", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits (bounded) until a line of `p` satisfies `f`.
fn wait_line(p: &Proc, what: &str, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !p.lines().iter().any(|l| f(l)) {
        assert!(Instant::now() < deadline, "no {what}: {:?}", p.lines());
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_logs_carry_station_events_and_stats_and_cut_a_flood() {
    let dir = Scratch::new("logs-json");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
        "--truncate",
        "--json",
        "--log-format",
        "json",
        "--stats-interval",
        "0.1",
    ]);
    bad_hellos(&addr, 100);
    gen_station(&addr, "log-");
    // A stats event after the station's frames were forwarded.
    wait_line(&serve, "stats event with the frames", |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["message"] == "stats" && v["forwarded"] == 300)
    });
    wait_line(&serve, "disconnect event", |l| {
        l.contains("station disconnected")
    });
    serve.signal("TERM");
    let summary = serve.finish(WAIT, 0);
    assert_eq!(summary["hello_errors"], 100);

    let lines = serve.lines();
    let mut events = Vec::new();
    for l in &lines[..lines.len() - 1] {
        if l.starts_with("meridian: listening on ") {
            continue; // the startup line scripts read, plain in every format
        }
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        events.push(v);
    }
    let of = |msg: &str| {
        events
            .iter()
            .filter(|e| e["message"] == msg)
            .collect::<Vec<_>>()
    };
    // 100 bad HELLOs: at most 10 per 10 s are written, the rest counted.
    let hellos = of("bad HELLO; closed");
    assert!(!hellos.is_empty() && hellos.len() <= 20, "{}", hellos.len());
    assert!(hellos
        .iter()
        .all(|e| e["level"] == "WARN" && e["peer"].is_string()));
    let stats = of("stats");
    assert!(stats
        .iter()
        .any(|s| s["suppressed_logs"].as_u64().unwrap() >= 80));
    let connected = of("station connected");
    assert!(
        connected
            .iter()
            .any(|e| e["station"] == "log-0" && e["session"] == true),
        "{connected:?}"
    );
    // The stop is announced with its deadlines (the defaults here).
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stopping:"))
            && e["grace_ms"] == 2000
            && e["drain_ms"] == 5000),
        "no stopping event"
    );
    let gone = of("station disconnected");
    assert!(
        gone.iter()
            .any(|e| e["station"] == "log-0" && e["frames"] == 300 && e["level"] == "INFO"),
        "{gone:?}"
    );
}

#[test]
fn the_filter_keeps_warnings_and_drops_info() {
    let dir = Scratch::new("logs-filter");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
        "--log-filter",
        "warn",
    ]);
    gen_station(&addr, "quiet-");
    bad_hellos(&addr, 1);
    wait_line(&serve, "bad HELLO warning", |l| {
        l.contains("WARN") && l.contains("bad HELLO; closed")
    });
    serve.signal("TERM");
    let _ = serve.wait_code(WAIT);
    let lines = serve.lines();
    assert!(
        !lines.iter().any(|l| l.contains("station connected")),
        "{lines:?}"
    );
}

#[test]
fn a_bad_filter_or_format_exits_2_with_one_line() {
    for (flag, value) in [("--log-filter", "meridian=loud"), ("--log-format", "xml")] {
        let mut serve = Proc::start(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--out",
            "/dev/null",
            flag,
            value,
        ]);
        assert_eq!(serve.wait_code(WAIT), 2);
        let lines = serve.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(value), "{lines:?}");
    }
}

#[test]
fn a_station_name_cannot_forge_a_text_log_line() {
    let dir = Scratch::new("logs-forge");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
    ]);
    // A HELLO (magic, version 1, name length, name) whose name holds a newline.
    let name = b"gs\n2026-11-22T00:00:00Z  INFO FORGED";
    let mut hello = b"MRDH\x01".to_vec();
    hello.push(name.len() as u8);
    hello.extend_from_slice(name);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&hello).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    wait_line(&serve, "disconnect event", |l| {
        l.contains("station disconnected")
    });
    serve.signal("TERM");
    let _ = serve.wait_code(WAIT);
    let lines = serve.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("2026-11-22T00:00:00Z")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("station connected")
            && l.contains(r"gs\n2026-11-22T00:00:00Z  INFO FORGED")),
        "{lines:?}"
    );
}

#[test]
fn an_idle_station_is_logged_when_closed() {
    let dir = Scratch::new("logs-idle");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
        "--log-format",
        "json",
        "--idle-timeout-ms",
        "300",
        "--json",
    ]);
    // A plain stream that sends one frame and then nothing.
    let mut frame = Vec::new();
    meridian_pipeline::wire::encode_frame(&mut frame, 3, 1, 0, b"then silence");
    let mut c = TcpStream::connect(&addr).unwrap();
    let me = c.local_addr().unwrap().to_string();
    c.write_all(&frame).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest); // serve closes it once idle
    wait_line(&serve, "idle event", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["message"] == "station closed: idle"
                && v["station"] == me.as_str()
                && v["idle_ms"] == 300
        })
    });
    serve.signal("TERM");
    let s = serve.finish(WAIT, 0);
    assert_eq!(s["idle_closed"], 1);
}

#[test]
fn sink_logs_a_failed_connection_as_json() {
    let (mut sink, addr) = Proc::listening(&[
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--connections",
        "1",
        "--json",
        "--log-format",
        "json",
    ]);
    bad_hellos(&addr, 1);
    let s = sink.finish(WAIT, 0);
    assert_eq!(s["hello_errors"], 1);
    let lines = sink.lines();
    let failed: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "sink: connection failed")
        .collect();
    assert_eq!(failed.len(), 1, "{lines:?}");
    assert_eq!(failed[0]["level"], "WARN");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("version"),
        "{failed:?}"
    );
}
