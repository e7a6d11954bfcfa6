//! Fault injection with real processes and real sockets on 127.0.0.1:
//! `serve` SIGKILLed and restarted on the same port (with `--out` and with
//! `--forward`), the downstream SIGKILLed and restarted, a downstream that
//! never reads, a full disk, a busy station at SIGTERM, a poisoned window,
//! hostile satellite ids, idle sockets at the connection limit, and a clean
//! restart appending to the same file.
//!
//! Every test compares what went in with what came out: each valid unique
//! (sat, seq) of a station whose frames were all acked is at the
//! downstream, and no key is there twice (except across a crash of `serve`
//! with `--forward`, counted and bounded). Every wait is bounded; every
//! process started is killed and reaped by a drop guard, also on failure.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use meridian_pipeline::harness::gen::GenConfig;
use meridian_pipeline::net::session::{AckParser, Hello};
use meridian_pipeline::wire::encode_frame;
use serde_json::Value;

use common::keys::{decode_keys, valid_keys, Key};
use common::proc::{free_port, Proc, Scratch};

// ---------------------------------------------------------------------------
// Processes

/// The body of `GET path` from the HTTP server at `addr`.
fn http_get(addr: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn gen_connect(addr: &str, stations: u32, frames: u64, seed: u64, extra: &[&str]) -> Proc {
    let (st, fr, sd) = (stations.to_string(), frames.to_string(), seed.to_string());
    let mut args = vec![
        "gen",
        "--connect",
        addr,
        "--stations",
        &st,
        "--frames",
        &fr,
        "--seed",
        &sd,
    ];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

fn serve_args<'a>(listen: &'a str, target: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["serve", "--listen", listen, "--json"];
    args.extend_from_slice(target);
    args.extend_from_slice(extra);
    args
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no counter {k} in {v}"))
}

/// Peak resident memory of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

// ---------------------------------------------------------------------------
// Keys

/// Every frame's key in a downstream's file, in order; the file must hold
/// only whole frames.
fn keys_in(path: &Path) -> Vec<Key> {
    let (keys, skipped) = decode_keys(&std::fs::read(path).unwrap());
    assert_eq!(skipped, 0, "{} holds bytes outside frames", path.display());
    keys
}

/// How many times each key is in `keys`.
fn counts(keys: &[Key]) -> HashMap<Key, u32> {
    let mut c = HashMap::new();
    for k in keys {
        *c.entry(*k).or_insert(0) += 1;
    }
    c
}

/// The keys of `path`, asserting that none is there twice.
fn keys_once(path: &Path) -> HashSet<Key> {
    let c = counts(&keys_in(path));
    let twice: Vec<_> = c.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "keys in the output more than once (first ones): {twice:?}"
    );
    c.into_keys().collect()
}

fn gen_cfg(stations: u32, frames: u64, seed: u64) -> GenConfig {
    GenConfig {
        frames,
        stations,
        seed,
        ..GenConfig::default()
    }
}

/// The valid unique keys `gen --connect` sends for these options.
fn expected_keys(stations: u32, frames: u64, seed: u64) -> HashSet<Key> {
    valid_keys(&gen_cfg(stations, frames, seed))
}

fn assert_same(got: &HashSet<Key>, want: &HashSet<Key>, ctx: &str) {
    let missing: Vec<_> = want.difference(got).take(10).collect();
    let extra: Vec<_> = got.difference(want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{ctx}: {} keys missing (e.g. {missing:?}), {} unexpected (e.g. {extra:?})",
        want.difference(got).count(),
        got.difference(want).count()
    );
}

// ---------------------------------------------------------------------------
// A hand-made session station

struct Station {
    sock: TcpStream,
    acks: AckParser,
    sent: u64,
}

impl Station {
    fn connect(addr: &str, name: &str) -> Station {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(&Hello::new(name).to_bytes()).unwrap();
        Station {
            sock,
            acks: AckParser::new(),
            sent: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
        self.sent += bytes.len() as u64;
    }

    /// Waits (at most `within`) for an ACK of everything sent.
    fn wait_acked(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 256];
        while self.acks.last().unwrap_or(0) < self.sent {
            assert!(
                Instant::now() < deadline,
                "acked {:?} of {} bytes after {within:?}",
                self.acks.last(),
                self.sent
            );
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("serve closed the session"),
                Ok(k) => {
                    self.acks.feed(&buf[..k]).unwrap();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading ACKs: {e}"),
            }
        }
    }
}

fn frames_of(keys: impl IntoIterator<Item = Key>) -> Vec<u8> {
    let mut out = Vec::new();
    for (sat, seq) in keys {
        encode_frame(&mut out, sat, seq, 0, &seq.to_le_bytes());
    }
    out
}

/// The RNG seeds of the crash tests: 3, or `DELIVERY_SEEDS` of them.
fn seeds(first: u64) -> std::ops::Range<u64> {
    let count = std::env::var("DELIVERY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    first..first + count
}

// ---------------------------------------------------------------------------
// 1 and 2: serve SIGKILLed and restarted on the same port

/// Runs 3 stations through `serve` (on one fixed port, `target` downstream)
/// and SIGKILLs serve twice at delays drawn from `seed`, restarting it each
/// time; returns the valid unique keys once gen exited 0 and serve ended.
fn crash_serve_twice(
    target: &[&str],
    out: Option<&Path>,
    rng_seed: u64,
    gen_seed: u64,
) -> (HashSet<Key>, u32) {
    let port = free_port();
    let extra = ["--grace-ms", "300", "--drain-ms", "3000"];
    let args = serve_args(&port, target, &extra);
    let (mut serve, _) = Proc::listening(&args);
    // 3 stations x 1500 frames at 1500 frames/s: about 1 s of traffic.
    let mut gen = gen_connect(
        &port,
        3,
        4500,
        gen_seed,
        &["--rate", "1500", "--give-up-ms", "20000"],
    );
    let mut rng = fastrand::Rng::with_seed(rng_seed);
    let mut kills = 0;
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(rng.u64(50..600)));
        if gen.try_status().is_some() {
            break;
        }
        serve.kill9();
        kills += 1;
        thread::sleep(Duration::from_millis(rng.u64(0..200)));
        let held = out.map_or(0, |p| std::fs::metadata(p).map_or(0, |m| m.len()));
        serve = Proc::listening(&args).0;
        if held > 0 {
            // Restarted on a file holding frames: the window comes back first.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !serve.lines().iter().any(|l| l.contains("window rebuilt")) {
                assert!(Instant::now() < deadline, "no rebuild: {:?}", serve.lines());
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let code = gen.wait_code(Duration::from_secs(30));
    assert_eq!(
        code,
        0,
        "gen did not get every frame acked: {:?}",
        gen.lines()
    );
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    assert_eq!(n(&sum, "unacked_frames"), 0, "{sum}");
    eprintln!("rng seed {rng_seed}: {kills} kills of serve; last run: {sum}");
    (expected_keys(3, 4500, gen_seed), kills)
}

#[test]
fn serve_out_sigkilled_and_restarted_loses_and_repeats_nothing() {
    for rng_seed in seeds(1) {
        let dir = Scratch::new(&format!("kill-out-{rng_seed}"));
        let out = dir.path("out.bin");
        let (want, kills) =
            crash_serve_twice(&["--out", s(&out)], Some(&out), rng_seed, 100 + rng_seed);
        let got = keys_once(&out);
        assert_same(&got, &want, &format!("rng seed {rng_seed}, {kills} kills"));
    }
}

/// Fast traffic (60,000 frames/s in all), so a kill may land in the middle
/// of a write and leave a torn frame at the file's end.
#[test]
fn serve_out_sigkilled_under_fast_traffic() {
    for rng_seed in seeds(31) {
        let dir = Scratch::new(&format!("kill-fast-{rng_seed}"));
        let out = dir.path("out.bin");
        let port = free_port();
        let args = serve_args(&port, &["--out", s(&out)], &["--grace-ms", "300"]);
        let (mut serve, _) = Proc::listening(&args);
        let frames = 60_000;
        let mut gen = gen_connect(
            &port,
            3,
            frames,
            300 + rng_seed,
            &["--rate", "20000", "--give-up-ms", "20000"],
        );
        let mut rng = fastrand::Rng::with_seed(rng_seed);
        let mut kills = 0;
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(rng.u64(20..250)));
            if gen.try_status().is_some() {
                break;
            }
            serve.kill9();
            kills += 1;
            serve = Proc::listening(&args).0;
        }
        let code = gen.wait_code(Duration::from_secs(30));
        assert_eq!(code, 0, "gen: {:?}", gen.lines());
        serve.signal("TERM");
        let sum = serve.finish(Duration::from_secs(10), 0);
        let got = keys_once(&out);
        let want = expected_keys(3, frames, 300 + rng_seed);
        assert_same(
            &got,
            &want,
            &format!("rng seed {rng_seed}, {kills} kills: {sum}"),
        );
        println!(
            "fast traffic, rng seed {rng_seed}: {kills} kills, {} frames decoded by the last run",
            n(&sum, "frames_decoded")
        );
        assert!(kills >= 1, "gen finished before the first kill");
    }
}

#[test]
fn serve_forward_sigkilled_and_restarted_delivers_everything() {
    let mut total_repeats = 0;
    for rng_seed in seeds(11) {
        let dir = Scratch::new(&format!("kill-fwd-{rng_seed}"));
        let out = dir.path("sink.bin");
        let (mut sink, sink_addr) = Proc::listening(&[
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--out",
            s(&out),
            "--append",
            "--json",
        ]);
        let (want, kills) =
            crash_serve_twice(&["--forward", &sink_addr], None, rng_seed, 200 + rng_seed);
        sink.signal("TERM");
        let k = sink.finish(Duration::from_secs(10), 0);
        let keys = keys_in(&out);
        let c = counts(&keys);
        let got: HashSet<Key> = c.keys().copied().collect();
        assert_same(&got, &want, &format!("rng seed {rng_seed}, {kills} kills"));
        // Copies come only from frames serve sent but had not acked to the
        // stations when it died: at most one more copy per crash.
        let repeats: u64 = c.values().map(|&m| u64::from(m - 1)).sum();
        let most = c.values().copied().max().unwrap_or(0);
        assert!(
            most <= 1 + kills,
            "a key arrived {most} times with {kills} crashes"
        );
        assert_eq!(n(&k, "repeated_keys"), repeats, "{k}");
        eprintln!(
            "rng seed {rng_seed}: {kills} crashes of serve, {repeats} repeated frames of {} keys",
            want.len()
        );
        total_repeats += repeats;
    }
    println!("serve --forward crashes: {total_repeats} repeated frames at the sink in all");
}

// ---------------------------------------------------------------------------
// 3: the downstream SIGKILLed and restarted

#[test]
fn sink_sigkilled_and_restarted_with_append_gets_everything() {
    let dir = Scratch::new("kill-sink");
    let out = dir.path("sink.bin");
    let sink_port = free_port();
    let sink_args = |append: bool| {
        let mut a = vec!["sink", "--listen", &sink_port, "--out", s(&out), "--json"];
        if append {
            a.push("--append");
        }
        a
    };
    let (mut sink1, _) = Proc::listening(&sink_args(false));
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--forward", &sink_port],
        &["--grace-ms", "300"],
    ));
    // About 1.5 s of traffic.
    let mut gen = gen_connect(
        &addr,
        3,
        4500,
        41,
        &["--rate", "1000", "--give-up-ms", "20000"],
    );
    thread::sleep(Duration::from_millis(600));
    sink1.kill9();
    let before = std::fs::read(&out).unwrap();
    thread::sleep(Duration::from_millis(200));
    let (mut sink2, _) = Proc::listening(&sink_args(true));
    let code = gen.wait_code(Duration::from_secs(30));
    assert_eq!(code, 0, "gen: {:?}", gen.lines());
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    sink2.signal("TERM");
    sink2.finish(Duration::from_secs(10), 0);

    let want = expected_keys(3, 4500, 41);
    let c = counts(&keys_in(&out));
    let got: HashSet<Key> = c.keys().copied().collect();
    assert_same(&got, &want, "sink file after the sink's crash");
    assert!(n(&sum, "downstream_reconnects") >= 1, "{sum}");
    // A key may be there twice only when the first sink wrote it before it
    // died (written, perhaps synced, but not acked) and serve resent it.
    let (first, _) = decode_keys(&before);
    let first: HashSet<Key> = first.into_iter().collect();
    let mut repeats = 0;
    for (k, m) in &c {
        if *m > 1 {
            assert!(
                *m == 2 && first.contains(k),
                "{k:?} is in the file {m} times"
            );
            repeats += 1;
        }
    }
    println!(
        "sink crash: {} frames before the kill, {repeats} resent frames written twice, {} bytes resent",
        first.len(),
        n(&sum, "resent_bytes")
    );
}

// ---------------------------------------------------------------------------
// 4 and 5: a downstream that takes nothing

/// A TCP listener that accepts connections and holds them, never reading.
struct Holder {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Holder {
    fn start() -> Holder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        });
        Holder {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn downstream_that_never_reads_ends_within_deadlines_with_exit_1() {
    let holder = Holder::start();
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--forward", &holder.addr],
        &[
            "--unacked-bytes",
            "1048576",
            "--max-payload",
            "1000",
            "--downstream-timeout-ms",
            "500",
            "--grace-ms",
            "300",
            "--drain-ms",
            "1000",
        ],
    ));
    let mut gen = gen_connect(&addr, 3, 30_000, 61, &["--give-up-ms", "1500"]);
    thread::sleep(Duration::from_millis(1000));
    let t0 = Instant::now();
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_millis(300 + 1000 + 2000), 1);
    let took = t0.elapsed();
    assert!(n(&sum, "unacked_frames") > 0, "{sum}");
    assert_eq!(n(&sum, "forwarded"), 0, "{sum}");
    assert_eq!(n(&sum, "acked_bytes"), 0, "{sum}");
    let code = gen.wait_code(Duration::from_secs(15));
    assert_eq!(code, 1, "gen: {:?}", gen.lines());
    println!("never-reading downstream: serve exited {took:?} after SIGTERM: {sum}");
}

#[test]
fn second_sigterm_hurries_past_grace_and_drain() {
    let holder = Holder::start();
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--forward", &holder.addr],
        &[
            "--unacked-bytes",
            "1048576",
            "--max-payload",
            "1000",
            "--grace-ms",
            "5000",
            "--drain-ms",
            "5000",
        ],
    ));
    let mut gen = gen_connect(
        &addr,
        3,
        30_000,
        63,
        &["--rate", "5000", "--give-up-ms", "3000"],
    );
    thread::sleep(Duration::from_millis(800));
    serve.signal("TERM");
    thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(2), 1);
    let took = t0.elapsed();
    assert!(n(&sum, "unacked_frames") > 0, "{sum}");
    assert_eq!(n(&sum, "forwarded"), 0, "{sum}");
    gen.kill9();
    println!("second SIGTERM: serve exited {took:?} after it");
}

#[test]
fn out_to_dev_full_exits_1_with_nothing_forwarded() {
    if std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/full")
        .is_err()
    {
        println!("no writable /dev/full here: skipped");
        return;
    }
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", "/dev/full"],
        &["--grace-ms", "300", "--drain-ms", "1000"],
    ));
    let mut gen = gen_connect(&addr, 3, 3000, 71, &["--give-up-ms", "1500"]);
    thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_millis(300 + 1000 + 2000), 1);
    let took = t0.elapsed();
    assert_eq!(n(&sum, "forwarded"), 0, "{sum}");
    assert!(n(&sum, "unacked_frames") > 0, "{sum}");
    assert_eq!(n(&sum, "acked_bytes"), 0, "{sum}");
    assert!(n(&sum, "downstream_failures") > 0, "{sum}");
    let code = gen.wait_code(Duration::from_secs(15));
    assert_eq!(code, 1, "gen: {:?}", gen.lines());
    println!("/dev/full: serve exited {took:?} after SIGTERM");
}

// ---------------------------------------------------------------------------
// 6: a busy station at SIGTERM

#[test]
fn busy_stations_at_sigterm_serve_exits_within_grace_plus_drain() {
    let dir = Scratch::new("busy");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &["--grace-ms", "500", "--drain-ms", "1000"],
    ));
    // A plain stream that never stops writing, and fast session stations.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        thread::spawn(move || {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let buf = frames_of((seq..seq + 100).map(|q| (4000, q)));
                seq += 100;
                if c.write_all(&buf).is_err() {
                    break;
                }
            }
            seq
        })
    };
    let mut gen = gen_connect(&addr, 3, 60_000, 81, &["--rate", "20000"]);
    thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_millis(500 + 1000 + 1000), 0);
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    gen.kill9();
    let got = keys_once(&out);
    assert_eq!(n(&sum, "forwarded"), got.len() as u64, "{sum}");
    assert!(n(&sum, "frames_decoded") > 1000, "{sum}");
    assert_eq!(n(&sum, "unacked_frames"), 0, "{sum}");
    println!("busy stations: serve exited {took:?} after SIGTERM; the plain writer wrote {written} frames");
}

// ---------------------------------------------------------------------------
// 7: a poisoned window and a counter restart, through serve

#[test]
fn poisoned_high_mark_is_suspect_and_genuine_frames_go_through() {
    let dir = Scratch::new("poison");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &["--stale", "drop", "--grace-ms", "300"],
    ));
    let mut st = Station::connect(&addr, "poisoner");
    let mut bytes = frames_of([(1, u64::MAX)]);
    bytes.extend(frames_of((1000..1200).map(|q| (1, q))));
    bytes.extend(frames_of((1000..1100).map(|q| (1, q))));
    st.send(&bytes);
    st.wait_acked(Duration::from_secs(5));
    drop(st);
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    let got = keys_once(&out);
    let want: HashSet<Key> = (1000..1200).map(|q| (1, q)).collect();
    assert_same(&got, &want, &format!("poisoned window: {sum}"));
    assert!(n(&sum, "suspect") >= 1, "{sum}");
    assert_eq!(n(&sum, "duplicates"), 100, "{sum}");
}

#[test]
fn poison_after_the_satellite_is_established_is_suspect() {
    let dir = Scratch::new("poison-late");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &["--stale", "drop", "--grace-ms", "300"],
    ));
    let mut st = Station::connect(&addr, "poisoner");
    // Genuine traffic first, delivered (so in a batch of its own).
    st.send(&frames_of((900..1000).map(|q| (1, q))));
    st.wait_acked(Duration::from_secs(5));
    // The poison alone, then the rest with copies.
    st.send(&frames_of([(1, u64::MAX)]));
    st.wait_acked(Duration::from_secs(5));
    let mut bytes = frames_of((1000..1200).map(|q| (1, q)));
    bytes.extend(frames_of((1000..1100).map(|q| (1, q))));
    st.send(&bytes);
    st.wait_acked(Duration::from_secs(5));
    drop(st);
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    let got = keys_once(&out);
    let want: HashSet<Key> = (900..1200).map(|q| (1, q)).collect();
    assert_same(&got, &want, &format!("poison after traffic: {sum}"));
    assert_eq!(n(&sum, "suspect"), 1, "{sum}");
    assert_eq!(n(&sum, "duplicates"), 100, "{sum}");
}

/// The poison as the very first frame of a satellite, delivered in a batch
/// of its own (e.g. the satellite's first frame after serve started, or
/// after hostile ids got it evicted): it anchors the window at u64::MAX, but
/// only provisionally, so the first genuine frame re-anchors at once and
/// none is dropped as stale under `--stale drop` (src/dedup/window.rs,
/// Provisional anchors).
#[test]
fn poison_as_the_first_frame_of_a_satellite_loses_no_genuine_frame() {
    let dir = Scratch::new("poison-first");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &["--stale", "drop", "--grace-ms", "300"],
    ));
    let mut st = Station::connect(&addr, "poisoner");
    st.send(&frames_of([(1, u64::MAX)]));
    st.wait_acked(Duration::from_secs(5));
    let mut bytes = frames_of((1000..1200).map(|q| (1, q)));
    bytes.extend(frames_of((1000..1100).map(|q| (1, q))));
    st.send(&bytes);
    st.wait_acked(Duration::from_secs(5));
    drop(st);
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    let got = keys_once(&out);
    let genuine: HashSet<Key> = (1000..1200).map(|q| (1, q)).collect();
    let missing = genuine.difference(&got).count();
    assert_eq!(
        missing, 0,
        "{missing} genuine frames acked but not forwarded: {sum}"
    );
}

#[test]
fn counter_restart_reanchors_and_later_copies_are_duplicates() {
    let dir = Scratch::new("restart-counter");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &[
            "--window",
            "1024",
            "--reanchor-after",
            "64",
            "--grace-ms",
            "300",
        ],
    ));
    let mut st = Station::connect(&addr, "restarter");
    // Each part acked (delivered) before the next: separate batches.
    st.send(&frames_of((5000..5100).map(|q| (1, q))));
    st.wait_acked(Duration::from_secs(5));
    st.send(&frames_of((0..200).map(|q| (1, q))));
    st.wait_acked(Duration::from_secs(5));
    st.send(&frames_of((0..200).map(|q| (1, q))));
    st.wait_acked(Duration::from_secs(5));
    drop(st);
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    let got = keys_once(&out);
    let want: HashSet<Key> = (5000..5100).chain(0..200).map(|q| (1, q)).collect();
    assert_same(&got, &want, &format!("counter restart: {sum}"));
    assert!(n(&sum, "reanchors") >= 1, "{sum}");
    assert_eq!(n(&sum, "duplicates"), 200, "{sum}");
    assert_eq!(n(&sum, "forwarded"), 300, "{sum}");
}

// ---------------------------------------------------------------------------
// 8: hostile satellite ids against the window's memory budget

#[test]
fn hostile_satellite_ids_stay_within_the_window_memory_budget() {
    let dir = Scratch::new("hostile");
    let out = dir.path("out.bin");
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &[
            "--window",
            "16777216",
            "--window-memory",
            "64",
            "--max-sat",
            "100000",
            "--max-seq-jump",
            "0",
            "--grace-ms",
            "300",
        ],
    ));
    let base_kib = vm_hwm_kib(serve.pid());
    let mut st = Station::connect(&addr, "hostile");
    // Each hostile satellite spreads its seqs over 4M: a 512 KiB ring.
    let mut want = HashSet::new();
    for chunk in 0..10u32 {
        let sats = 50_000 + chunk * 1000..50_000 + (chunk + 1) * 1000;
        let keys: Vec<Key> = sats.flat_map(|sat| [(sat, 0), (sat, 1 << 22)]).collect();
        want.extend(keys.iter().copied());
        st.send(&frames_of(keys));
        // Genuine traffic in between.
        let genuine: Vec<Key> = (1..=4)
            .flat_map(|sat| {
                (u64::from(chunk) * 50..u64::from(chunk + 1) * 50).map(move |q| (sat, q))
            })
            .collect();
        want.extend(genuine.iter().copied());
        st.send(&frames_of(genuine));
    }
    st.wait_acked(Duration::from_secs(15));
    let hwm_kib = vm_hwm_kib(serve.pid());
    drop(st);
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    let got = keys_once(&out);
    assert_same(&got, &want, &format!("hostile ids: {sum}"));
    assert!(n(&sum, "evicted_sats") > 0, "{sum}");
    println!(
        "hostile ids: peak RSS {} MiB (at start {} MiB), {} satellites evicted",
        hwm_kib / 1024,
        base_kib / 1024,
        n(&sum, "evicted_sats")
    );
    assert!(
        hwm_kib < (64 + 100) * 1024,
        "serve's peak RSS is {hwm_kib} KiB with --window-memory 64"
    );
}

// ---------------------------------------------------------------------------
// 9: idle sockets at the connection limit

#[test]
fn idle_sockets_at_the_connection_limit_make_room_for_a_station() {
    let dir = Scratch::new("idle");
    let out = dir.path("out.bin");
    let admin = free_port();
    let (mut serve, addr) = Proc::listening(&serve_args(
        "127.0.0.1:0",
        &["--out", s(&out)],
        &[
            "--max-connections",
            "64",
            "--grace-ms",
            "300",
            "--admin",
            &admin,
        ],
    ));
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // All 64 taken by serve (its admin endpoint says so), so the station
    // below finds every slot held, not a slot still free.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links: Value = serde_json::from_str(&http_get(&admin, "/api/links")).unwrap();
        let open = links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["connected"] == true)
            .count();
        if open == 64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve holds {open} of 64 idle sockets"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Idle for more than a second: evictable.
    thread::sleep(Duration::from_millis(1200));
    let mut gen = gen_connect(&addr, 3, 3000, 91, &["--give-up-ms", "15000"]);
    let code = gen.wait_code(Duration::from_secs(20));
    assert_eq!(code, 0, "gen: {:?}", gen.lines());
    serve.signal("TERM");
    let sum = serve.finish(Duration::from_secs(10), 0);
    drop(idle);
    let got = keys_once(&out);
    assert_same(&got, &expected_keys(3, 3000, 91), &format!("idle: {sum}"));
    assert!(n(&sum, "idle_closed") > 0, "{sum}");
}

// ---------------------------------------------------------------------------
// 10: a clean restart appending to the same file

#[test]
fn out_restart_without_crash_appends_no_copy() {
    let dir = Scratch::new("append");
    let out = dir.path("out.bin");
    let mut want = HashSet::new();
    for frames in [3000u64, 6000] {
        let (mut serve, addr) = Proc::listening(&serve_args(
            "127.0.0.1:0",
            &["--out", s(&out)],
            &["--grace-ms", "300"],
        ));
        let mut gen = gen_connect(&addr, 3, frames, 101, &[]);
        let code = gen.wait_code(Duration::from_secs(20));
        assert_eq!(code, 0, "gen: {:?}", gen.lines());
        serve.signal("TERM");
        let sum = serve.finish(Duration::from_secs(10), 0);
        want.extend(expected_keys(3, frames, 101));
        let got = keys_once(&out);
        assert_same(
            &got,
            &want,
            &format!("after the run of {frames} frames: {sum}"),
        );
    }
}
