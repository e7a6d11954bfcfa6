//! The TCP service end to end, with real sockets on 127.0.0.1 and ephemeral
//! ports: stations (`gen --connect` and hand-made connections) -> `serve`
//! -> `sink`. Every wait is bounded; a hung process fails the test.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use meridian_pipeline::harness::gen::GenConfig;
use meridian_pipeline::wire::encode_frame;
use serde_json::Value;

use common::keys::{decode_keys, valid_keys};
use common::proc::{free_port, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_meridian-pipeline");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-serve-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every frame's (sat, seq) in `bytes`, in order.
fn keys_of(bytes: &[u8]) -> Vec<(u32, u64)> {
    let (keys, skipped) = decode_keys(bytes);
    assert_eq!(skipped, 0, "the forwarded stream holds only whole frames");
    keys
}

fn gen_connect(addr: &str, stations: u32, frames: u64, seed: u64, rate: Option<&str>) -> Child {
    let mut args = vec![
        "gen".to_string(),
        "--connect".into(),
        addr.into(),
        "--stations".into(),
        stations.to_string(),
        "--frames".into(),
        frames.to_string(),
        "--seed".into(),
        seed.to_string(),
    ];
    if let Some(r) = rate {
        args.extend(["--rate".into(), r.into()]);
    }
    Command::new(BIN)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_ok(mut child: Child, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "gen --connect failed: {s}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gen --connect still running after {within:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn gen_cfg(stations: u32, frames: u64, seed: u64) -> GenConfig {
    GenConfig {
        frames,
        stations,
        seed,
        ..GenConfig::default()
    }
}

/// A sink on `listen`, writing what it receives to `out`; returns its address.
fn start_sink(listen: &str, out: &std::path::Path) -> (Proc, String) {
    Proc::listening(&[
        "sink",
        "--listen",
        listen,
        "--json",
        "--connections",
        "1",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// `serve` on an ephemeral port forwarding to `downstream`, with `extra`
/// options; returns its address.
fn start_serve(downstream: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        downstream,
        "--json",
    ];
    args.extend_from_slice(extra);
    Proc::listening(&args)
}

/// The keys of the frames in `path`, asserting that none came twice.
fn forwarded_once(path: &std::path::Path) -> HashSet<(u32, u64)> {
    let got = keys_of(&std::fs::read(path).unwrap());
    let unique: HashSet<_> = got.iter().copied().collect();
    assert_eq!(got.len(), unique.len(), "a key was forwarded twice");
    unique
}

/// invalid + duplicates + forwarded: every decoded frame accounted for.
fn accounted(s: &Value) -> u64 {
    [
        "invalid",
        "duplicates",
        "forwarded",
        "suspect",
        "unacked_frames",
    ]
    .iter()
    .map(|k| s[*k].as_u64().unwrap())
    .sum()
}

#[test]
fn three_stations_through_serve_into_sink() {
    let dir = scratch("three");
    let out = dir.join("sink.bin");
    let (mut sink, sink_addr) = start_sink("127.0.0.1:0", &out);
    let (mut serve, addr) = start_serve(&sink_addr, &[]);
    wait_ok(
        gen_connect(&addr, 3, 6000, 11, None),
        Duration::from_secs(30),
    );
    thread::sleep(Duration::from_millis(200));
    serve.signal("TERM");
    let s = serve.finish(Duration::from_secs(15), 0);
    let k = sink.finish(Duration::from_secs(15), 0);

    let want = valid_keys(&gen_cfg(3, 6000, 11));
    let unique = forwarded_once(&out);
    assert_eq!(unique, want, "forwarded keys are not the valid unique keys");
    assert_eq!(s["frames_decoded"], 6000);
    assert_eq!(s["forwarded"], want.len() as u64);
    assert_eq!(accounted(&s), 6000, "{s}");
    assert_eq!(s["connections_accepted"], 3);
    assert_eq!(s["stations"].as_array().unwrap().len(), 3);
    assert!(s["latency_us"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(k["repeated_keys"], 0);
    assert_eq!(k["crc_errors"], 0);
    assert_eq!(k["eof"], true, "serve did not close the downstream cleanly");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_input_on_live_connections_does_not_stop_good_frames() {
    let dir = scratch("bad");
    let out = dir.join("sink.bin");
    let (mut sink, sink_addr) = start_sink("127.0.0.1:0", &out);
    let (mut serve, addr) = start_serve(
        &sink_addr,
        &[
            "--max-payload",
            "65535",
            "--max-connections",
            "8",
            "--grace-ms",
            "300",
        ],
    );
    let mut rng = fastrand::Rng::with_seed(5);
    // Garbage, and garbage full of false sync markers.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&(0..20_000).map(|_| rng.u8(..)).collect::<Vec<_>>())
        .unwrap();
    drop(c);
    let mut c = TcpStream::connect(&addr).unwrap();
    for _ in 0..500 {
        c.write_all(&[0x1A, 0xCF, 0xFC, 0x1D, rng.u8(..), 1, rng.u8(..)])
            .unwrap();
    }
    drop(c);
    // A header claiming a 65535-byte payload, then silence, held open.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut header = Vec::new();
    encode_frame(&mut header, 1, 1, 0, &[]);
    header[18] = 0xFF;
    header[19] = 0xFF;
    silent.write_all(&header[..20]).unwrap();
    // An idle connection held open.
    let idle = TcpStream::connect(&addr).unwrap();
    // A frame cut off by its connection closing, and one cut off by a reset
    // (SO_LINGER 0: the close sends RST instead of FIN).
    let mut cut = Vec::new();
    encode_frame(&mut cut, 2, 777_777, 0, &[9; 100]);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&cut[..60]).unwrap();
    drop(c);
    let mut cut = Vec::new();
    encode_frame(&mut cut, 3, 777_778, 0, &[8; 100]);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&cut[..70]).unwrap();
    thread::sleep(Duration::from_millis(50)); // let serve read the bytes first
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    // Good traffic from two stations, while one more sends a frame a byte at a time.
    let good = gen_connect(&addr, 2, 3000, 21, None);
    let mut slow_frame = Vec::new();
    encode_frame(&mut slow_frame, 7, 999_999, 0, b"one byte at a time");
    let slow_addr = addr.clone();
    let slow = thread::spawn(move || {
        let mut c = TcpStream::connect(&slow_addr).unwrap();
        c.set_nodelay(true).unwrap();
        for b in &slow_frame {
            c.write_all(&[*b]).unwrap();
            thread::sleep(Duration::from_millis(2));
        }
    });
    wait_ok(good, Duration::from_secs(30));
    slow.join().unwrap();
    // Connections beyond the limit are closed at once, the others unaffected.
    thread::sleep(Duration::from_millis(100));
    let extra: Vec<TcpStream> = (0..12)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    thread::sleep(Duration::from_millis(300));
    serve.signal("INT");
    let s = serve.finish(Duration::from_secs(15), 0);
    let _k = sink.finish(Duration::from_secs(15), 0);
    drop((silent, idle, extra));

    let mut want = valid_keys(&gen_cfg(2, 3000, 21));
    want.insert((7, 999_999));
    let unique = forwarded_once(&out);
    assert_eq!(unique, want, "valid frames were lost or invented: {s}");
    assert!(s["connections_rejected"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["bad_header"].as_u64().unwrap() > 0, "{s}");
    assert!(s["truncated"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["skipped_bytes"].as_u64().unwrap() >= 20_000, "{s}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn downstream_absent_at_start_then_started() {
    let dir = scratch("absent");
    let out = dir.join("sink.bin");
    let sink_addr = free_port();
    let (mut serve, addr) = start_serve(&sink_addr, &[]);
    let gen = gen_connect(&addr, 3, 3000, 31, None);
    thread::sleep(Duration::from_millis(500));
    let (mut sink, _) = start_sink(&sink_addr, &out);
    wait_ok(gen, Duration::from_secs(30));
    thread::sleep(Duration::from_millis(200));
    serve.signal("TERM");
    let s = serve.finish(Duration::from_secs(15), 0);
    sink.finish(Duration::from_secs(15), 0);
    assert_eq!(
        forwarded_once(&out),
        valid_keys(&gen_cfg(3, 3000, 31)),
        "{s}"
    );
    assert_eq!(s["unsent_frames"], 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn downstream_killed_and_restarted_mid_stream() {
    let dir = scratch("restart");
    let (first, second) = (dir.join("first.bin"), dir.join("second.bin"));
    let sink_addr = free_port();
    // The first sink syncs (and so ACKs) only after 5 s: it dies holding
    // unacked frames, which serve must send again to the second.
    let (mut sink1, _) = Proc::listening(&[
        "sink",
        "--listen",
        &sink_addr,
        "--connections",
        "1",
        "--sync-ms",
        "5000",
        "--out",
        first.to_str().unwrap(),
    ]);
    let (mut serve, addr) = start_serve(&sink_addr, &[]);
    // About 1.5 s of traffic: 3 stations at 1000 frames/s each.
    let gen = gen_connect(&addr, 3, 4500, 41, Some("1000"));
    thread::sleep(Duration::from_millis(500));
    sink1.kill9();
    thread::sleep(Duration::from_millis(200));
    let (mut sink2, _) = start_sink(&sink_addr, &second);
    wait_ok(gen, Duration::from_secs(30));
    thread::sleep(Duration::from_millis(200));
    serve.signal("TERM");
    let s = serve.finish(Duration::from_secs(15), 0);
    sink2.finish(Duration::from_secs(15), 0);
    // What the first sink wrote before it died may be cut short; the second
    // sink got everything after the reconnect, resent replay included.
    let second_keys: HashSet<_> = keys_of(&std::fs::read(&second).unwrap())
        .into_iter()
        .collect();
    let want = valid_keys(&gen_cfg(3, 4500, 41));
    assert!(s["downstream_reconnects"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["resent_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["unsent_frames"], 0);
    // Everything serve forwarded after the restart point reached the second
    // sink; together with the resent replay, nothing was lost.
    let missing: Vec<_> = want.difference(&second_keys).collect();
    let first_keys: HashSet<_> = std::fs::read(&first)
        .map(|b| keys_of_prefix(&b))
        .unwrap_or_default();
    let lost: Vec<_> = missing
        .into_iter()
        .filter(|k| !first_keys.contains(k))
        .collect();
    assert!(lost.is_empty(), "{} valid frames lost: {s}", lost.len());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Keys of the whole frames at the front of a file a killed sink left.
fn keys_of_prefix(bytes: &[u8]) -> HashSet<(u32, u64)> {
    decode_keys(bytes).0.into_iter().collect()
}

#[test]
fn sigterm_during_load_flushes_everything_and_exits_zero() {
    let dir = scratch("term");
    let out = dir.join("sink.bin");
    let (mut sink, sink_addr) = start_sink("127.0.0.1:0", &out);
    let (mut serve, addr) = start_serve(&sink_addr, &["--grace-ms", "500"]);
    let mut gen = gen_connect(&addr, 3, 30_000, 51, Some("2000"));
    thread::sleep(Duration::from_millis(400));
    serve.signal("TERM");
    let s = serve.finish(Duration::from_secs(15), 0);
    let k = sink.finish(Duration::from_secs(15), 0);
    // The stations lose their server; gen may fail or finish, either is fine.
    let _ = gen.kill();
    let _ = gen.wait();
    let got = forwarded_once(&out);
    // Everything serve decoded and kept went out before it exited.
    assert_eq!(s["forwarded"].as_u64().unwrap(), got.len() as u64, "{s}");
    assert!(got.len() > 100, "{s}");
    assert_eq!(accounted(&s), s["frames_decoded"].as_u64().unwrap(), "{s}");
    assert_eq!(k["eof"], true);
    std::fs::remove_dir_all(dir).unwrap();
}
