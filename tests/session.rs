//! The session protocol with real sockets on 127.0.0.1: the codec over a
//! socket, the sink's ACKs, and the reconnecting client against a sink that
//! is killed and restarted, a server that closes every connection, and one
//! that never reads. Every wait is bounded, and every test stops the
//! threads and processes it started.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use meridian_pipeline::harness::gen::{station_streams, GenConfig};
use meridian_pipeline::net::client::{ClientOptions, SessionClient};
use meridian_pipeline::net::send::{send_stations_with, SendOptions};
use meridian_pipeline::net::session::{encode_ack, read_opening, AckParser, Hello, Opening};
use meridian_pipeline::net::sink::{sink_with, SinkOptions, SinkSummary};
use meridian_pipeline::net::Shutdown;
use meridian_pipeline::wire::encode_frame;

use common::keys::decode_keys;
use common::proc::{free_port, Proc};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-session-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn frames(n: u64, sat: u32, payload: usize) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for seq in 0..n {
        encode_frame(&mut bytes, sat, seq, 0, &vec![seq as u8; payload]);
        ends.push(bytes.len() as u64);
    }
    (bytes, ends)
}

fn keys_of(bytes: &[u8]) -> Vec<(u32, u64)> {
    decode_keys(bytes).0
}

/// A sink in this process, on its own thread, stopped by its flag.
struct InSink {
    addr: String,
    stop: Arc<Shutdown>,
    thread: JoinHandle<std::io::Result<SinkSummary>>,
}

impl InSink {
    fn start(listen: &str, opts: SinkOptions) -> InSink {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(Shutdown::default());
        let s = Arc::clone(&stop);
        let thread = thread::spawn(move || sink_with(listener, &opts, &s));
        InSink { addr, stop, thread }
    }

    /// Stops it (bounded) and returns its summary.
    fn finish(self, within: Duration) -> SinkSummary {
        self.stop.trigger();
        let deadline = Instant::now() + within;
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "the sink did not stop");
            thread::sleep(Duration::from_millis(10));
        }
        self.thread.join().unwrap().unwrap()
    }
}

/// A fake server: accepts on a thread and hands each connection to `each`
/// until dropped.
struct FakeServer {
    addr: String,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(mut each: impl FnMut(TcpStream) + Send + 'static) -> FakeServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let thread = thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        each(c)
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer {
            addr,
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn opening_and_acks_over_a_socket_split_at_every_byte() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (stream, _) = frames(3, 1, 10);
    let hello = Hello::new("station-0");
    let mut session = hello.to_bytes();
    session.extend_from_slice(&stream);
    for (bytes, want) in [
        (session.clone(), Some(hello.clone())),
        (stream.clone(), None),
    ] {
        let sender = thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_nodelay(true).unwrap();
            for b in &bytes {
                c.write_all(std::slice::from_ref(b)).unwrap();
                thread::sleep(Duration::from_micros(300));
            }
            // The ACKs back, one byte at a time, read by the client's parser.
            let mut p = AckParser::new();
            let mut got = Vec::new();
            let mut buf = [0u8; 1];
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            while let Ok(1) = c.read(&mut buf) {
                if let Some(o) = p.feed(&buf).unwrap() {
                    got.push(o);
                }
            }
            got
        });
        let (mut s, _) = l.accept().unwrap();
        let stop = Shutdown::default();
        let (opening, leftover) =
            read_opening(&mut s, Instant::now() + Duration::from_secs(5), &stop).unwrap();
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let want_len = stream.len() - leftover.len();
        let mut chained = std::io::Cursor::new(leftover).chain((&s).take(want_len as u64));
        chained.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, stream, "the frame stream, whole, after the opening");
        match want {
            Some(h) => assert!(matches!(opening, Opening::Session { hello, .. } if hello == h)),
            None => assert_eq!(opening, Opening::Plain),
        }
        for off in [24u64, 58, stream.len() as u64] {
            for b in encode_ack(off) {
                (&s).write_all(&[b]).unwrap();
            }
        }
        drop(s);
        assert_eq!(sender.join().unwrap(), vec![24, 58, stream.len() as u64]);
    }
}

#[test]
fn sink_acks_frame_boundaries_that_are_in_the_file() {
    let dir = scratch("acks");
    let out = dir.join("out.bin");
    let sink = InSink::start(
        "127.0.0.1:0",
        SinkOptions {
            out: Some(out.clone()),
            connections: Some(2),
            sync_interval: Duration::from_millis(10),
            ..SinkOptions::default()
        },
    );
    let (stream, ends) = frames(400, 5, 200);
    let boundaries: HashSet<u64> = ends.iter().copied().chain([0]).collect();
    let mut c = TcpStream::connect(&sink.addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(&Hello::new("checker").to_bytes()).unwrap();
    let reader = c.try_clone().unwrap();
    let (out2, len) = (out.clone(), stream.len() as u64);
    let want = stream.clone();
    let acks = thread::spawn(move || {
        let mut r = reader;
        r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut p = AckParser::new();
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = r.read(&mut buf) {
            if let Some(o) = p.feed(&buf[..n]).unwrap() {
                // What the ACK covers is in the file already.
                let file = std::fs::read(&out2).unwrap();
                assert!(
                    file.len() as u64 >= o && file[..o as usize] == want[..o as usize],
                    "ACK {o} beyond the {} bytes in the file",
                    file.len()
                );
                seen.push(o);
                if o == len {
                    break;
                }
            }
        }
        seen
    });
    // Frames split anywhere, in uneven writes.
    let mut at = 0;
    let mut rng = fastrand::Rng::with_seed(3);
    while at < stream.len() {
        let n = rng.usize(1..3000).min(stream.len() - at);
        c.write_all(&stream[at..at + n]).unwrap();
        at += n;
        thread::sleep(Duration::from_millis(1));
    }
    let seen = acks.join().unwrap();
    assert_eq!(seen.last(), Some(&len), "everything acked: {seen:?}");
    assert!(seen.len() >= 2, "acks as the stream goes: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        seen.iter().all(|o| boundaries.contains(o)),
        "ACKs at frame boundaries only: {seen:?}"
    );
    drop(c);
    // A plain stream on the same sink gets no ACK.
    let mut plain = TcpStream::connect(&sink.addr).unwrap();
    let (more, _) = frames(5, 6, 10);
    plain.write_all(&more).unwrap();
    plain.shutdown(std::net::Shutdown::Write).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(reply.is_empty(), "a plain stream got {reply:?}");
    let s = sink.finish(Duration::from_secs(5));
    assert_eq!((s.connections, s.sessions), (2, 1), "{s:?}");
    assert_eq!(s.acked_bytes, len);
    assert_eq!(s.frames, 405);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sink_without_out_acks_counted_frames() {
    let sink = InSink::start(
        "127.0.0.1:0",
        SinkOptions {
            connections: None,
            ..SinkOptions::default()
        },
    );
    let (stream, _) = frames(1000, 9, 64);
    let mut client = SessionClient::new(
        &sink.addr,
        ClientOptions {
            name: "no-out".into(),
            // Small: pushes wait for ACKs to make room.
            max_unacked: 4096,
            ..ClientOptions::default()
        },
        Arc::new(Shutdown::default()),
    );
    for chunk in stream.chunks(88 * 10) {
        client.push(chunk).unwrap();
    }
    client
        .wait_acked(Instant::now() + Duration::from_secs(10))
        .unwrap();
    assert_eq!(client.acked(), stream.len() as u64);
    client.close(Duration::from_secs(2));
    let s = sink.finish(Duration::from_secs(5));
    assert_eq!(
        (s.frames, s.sessions, s.acked_bytes),
        (1000, 1, stream.len() as u64)
    );
}

#[test]
fn garbage_and_overreaching_acks_are_faults() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&held);
    let mut n = 0;
    // Connections are kept open: only the reply can make the client leave.
    let server = FakeServer::start(move |mut c| {
        let reply = if n % 2 == 0 {
            b"NOPE, not an ACK".to_vec()
        } else {
            encode_ack(1 << 40).to_vec()
        };
        n += 1;
        let _ = c.write_all(&reply);
        h.lock().unwrap().push(c);
    });
    let (stream, _) = frames(10, 4, 30);
    let mut client = SessionClient::new(
        &server.addr,
        ClientOptions {
            give_up: Some(Duration::from_secs(1)),
            ..ClientOptions::default()
        },
        Arc::new(Shutdown::default()),
    );
    let started = Instant::now();
    client.push(&stream).unwrap();
    let e = client
        .wait_acked(Instant::now() + Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let st = client.stats();
    assert!(st.connects >= 3 && st.faults >= 3, "{st:?}");
    assert_eq!(client.acked(), 0);
    drop(client);
    held.lock().unwrap().clear();
}

#[test]
fn a_bad_hello_closes_its_connection_and_is_counted() {
    let sink = InSink::start(
        "127.0.0.1:0",
        SinkOptions {
            connections: Some(1),
            ..SinkOptions::default()
        },
    );
    let mut c = TcpStream::connect(&sink.addr).unwrap();
    c.write_all(b"MRDH\x02\x00").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    assert!(reply.is_empty(), "no ACK for a bad HELLO: {reply:?}");
    let s = sink.finish(Duration::from_secs(5));
    assert_eq!(
        (s.connections, s.sessions, s.hello_errors),
        (1, 0, 1),
        "{s:?}"
    );
}

fn all_keys(cfg: &GenConfig) -> HashSet<(u32, u64)> {
    station_streams(cfg)
        .iter()
        .flat_map(|s| keys_of(&s.bytes))
        .collect()
}

#[test]
fn sink_killed_mid_stream_and_restarted_in_append_mode_loses_nothing_acked() {
    let dir = scratch("kill");
    let out = dir.join("out.bin");
    let addr = free_port();
    let (first, _) = Proc::listening(&[
        "sink",
        "--listen",
        &addr,
        "--out",
        out.to_str().unwrap(),
        "--connections",
        "16",
    ]);
    let cfg = GenConfig {
        frames: 6000,
        stations: 3,
        seed: 7,
        ..GenConfig::default()
    };
    let stop = Arc::new(Shutdown::default());
    let opts = SendOptions {
        rate: Some(2000.0),
        ack_timeout: Duration::from_secs(20),
        reconnect_deadline: Duration::from_secs(20),
        ..SendOptions::default()
    };
    let (a, c, s) = (addr.clone(), cfg, Arc::clone(&stop));
    let sender = thread::spawn(move || send_stations_with(&a, &c, &opts, s));
    thread::sleep(Duration::from_millis(400));
    drop(first); // SIGKILL, mid-stream
    let killed_at = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    thread::sleep(Duration::from_millis(300));
    let second = InSink::start(
        &addr,
        SinkOptions {
            out: Some(out.clone()),
            append: true,
            connections: None,
            ..SinkOptions::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    while !sender.is_finished() {
        if Instant::now() > deadline {
            stop.trigger();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let report = sender.join().unwrap().unwrap();
    eprintln!("killed at {killed_at} bytes; {report:?}");
    let s = second.finish(Duration::from_secs(5));
    assert!(report.all_acked(), "{report:?}");
    assert_eq!(report.acked_frames, 6000);
    assert!(
        report.reconnects >= 3,
        "each station reconnected: {report:?}"
    );
    assert!(killed_at > 0, "the first sink had written frames");
    let file = std::fs::read(&out).unwrap();
    let got: HashSet<_> = keys_of(&file).into_iter().collect();
    let want = all_keys(&cfg);
    assert!(
        want.is_subset(&got),
        "{} frames missing",
        want.difference(&got).count()
    );
    assert!(s.sessions >= 3, "{s:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn append_mode_cuts_a_torn_last_frame_only() {
    let dir = scratch("torn");
    let out = dir.join("out.bin");
    let (two, _) = frames(2, 1, 50);
    let (third, _) = frames(3, 2, 50);
    let mut file = two.clone();
    file.extend_from_slice(&third[..30]);
    std::fs::write(&out, &file).unwrap();
    let sink = InSink::start(
        "127.0.0.1:0",
        SinkOptions {
            out: Some(out.clone()),
            append: true,
            connections: Some(1),
            ..SinkOptions::default()
        },
    );
    let mut c = TcpStream::connect(&sink.addr).unwrap();
    c.write_all(&third).unwrap();
    drop(c);
    let s = sink.finish(Duration::from_secs(5));
    assert_eq!(s.repaired_bytes, 30);
    let mut want = two;
    want.extend_from_slice(&third);
    assert_eq!(std::fs::read(&out).unwrap(), want);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_server_that_closes_every_connection_is_an_error_with_the_count() {
    let server = FakeServer::start(drop);
    let cfg = GenConfig {
        frames: 300,
        stations: 2,
        seed: 3,
        ..GenConfig::default()
    };
    let opts = SendOptions {
        ack_timeout: Duration::from_secs(2),
        reconnect_deadline: Duration::from_millis(800),
        ..SendOptions::default()
    };
    let started = Instant::now();
    let r = send_stations_with(&server.addr, &cfg, &opts, Arc::new(Shutdown::default())).unwrap();
    assert!(started.elapsed() < Duration::from_secs(8), "bounded");
    assert!(!r.all_acked());
    assert_eq!((r.frames, r.unacked_frames), (300, 300), "{r:?}");
    assert!(r.stations.iter().all(|s| s.error.is_some()), "{r:?}");
    assert!(r.reconnects >= 2, "it kept trying: {r:?}");
}

#[test]
fn a_server_that_never_reads_is_given_up_on_and_a_stop_is_prompt() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&held);
    let server = FakeServer::start(move |c| h.lock().unwrap().push(c));
    let (stream, _) = frames(4000, 3, 4000); // 16 MB: more than the socket buffers
    let opts = ClientOptions {
        name: "stuck".into(),
        write_timeout: Duration::from_millis(300),
        give_up: Some(Duration::from_secs(1)),
        ..ClientOptions::default()
    };
    let mut client = SessionClient::new(&server.addr, opts.clone(), Arc::new(Shutdown::default()));
    let started = Instant::now();
    let r = stream
        .chunks(4024 * 16)
        .try_for_each(|c| client.push(c))
        .and_then(|()| client.wait_acked(Instant::now() + Duration::from_secs(30)));
    let took = started.elapsed();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
    assert_eq!(client.acked(), 0);
    drop(client);

    // No give-up limit: only the stop ends it, promptly.
    let stop = Arc::new(Shutdown::default());
    let mut client = SessionClient::new(
        &server.addr,
        ClientOptions {
            give_up: None,
            ..opts
        },
        Arc::clone(&stop),
    );
    let s = Arc::clone(&stop);
    let trigger = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        s.trigger();
    });
    let started = Instant::now();
    let r = stream
        .chunks(4024 * 16)
        .try_for_each(|c| client.push(c))
        .and_then(|()| client.wait_acked(Instant::now() + Duration::from_secs(30)));
    let e = r.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{e}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    trigger.join().unwrap();
    drop(client);
    held.lock().unwrap().clear();
    drop(server);
}
