//! Station identity and authorization end to end, with real sockets on
//! 127.0.0.1: `serve` with TLS and client certificates, the `[stations]`
//! allowlist, a stalled handshake, and the plain-TCP guard. Certificates
//! are made at test time with rcgen (nothing with a private key is
//! committed); stations are `gen --connect` and hand-made rustls clients.
//! Every wait is bounded; every process is killed when dropped.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use meridian_pipeline::harness::gen::GenConfig;
use meridian_pipeline::net::session::{AckParser, Hello};
use meridian_pipeline::wire::encode_frame;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

use common::keys::{decode_keys, valid_keys};
use common::proc::{Proc, Scratch};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, as PEM: a server's (for localhost and
    /// 127.0.0.1) or a station's (common name `cn`); `expired` puts its
    /// validity in the past.
    fn leaf(&self, cn: &str, server: bool, expired: bool) -> (String, String) {
        let sans: Vec<String> = if server {
            vec!["localhost".into(), "127.0.0.1".into()]
        } else {
            vec![]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of one test: a CA, serve's certificate, and whatever else.
struct Pki {
    dir: Scratch,
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = Scratch::new(&format!("tls-{name}"));
        let ca = Ca::new("Meridian test CA");
        let p = Pki { dir, ca };
        p.write("ca.pem", &p.ca.pem());
        let (cert, key) = p.ca.leaf("meridian-serve", true, false);
        p.write("serve.pem", &cert);
        p.write("serve.key", &key);
        p
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path(name).to_str().unwrap().to_string()
    }

    /// serve's TLS flags; with `mutual`, client certificates from our CA.
    fn serve_flags(&self, mutual: bool) -> Vec<String> {
        let mut v = vec![
            "--tls-cert".into(),
            self.path("serve.pem"),
            "--tls-key".into(),
            self.path("serve.key"),
        ];
        if mutual {
            v.extend(["--tls-client-ca".into(), self.path("ca.pem")]);
        }
        v
    }

    /// A client configuration trusting our CA, presenting `id` (cert, key PEM).
    fn client(&self, id: Option<&(String, String)>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.pem().as_bytes()).unwrap())
            .unwrap();
        let b =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        Arc::new(match id {
            Some((cert, key)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        })
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `serve` on an ephemeral port into `out`, with `extra` options.
fn start_serve(out: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out,
        "--truncate",
        "--json",
        "--grace-ms",
        "300",
        "--drain-ms",
        "3000",
        "--max-delay-ms",
        "2",
    ];
    args.extend_from_slice(extra);
    Proc::listening(&args)
}

/// SIGTERM, then its JSON summary (it must exit 0).
fn stop(mut p: Proc) -> Value {
    p.signal("TERM");
    p.finish(Duration::from_secs(20), 0)
}

fn frames(keys: &[(u32, u64)], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(sat, seq) in keys {
        encode_frame(&mut out, sat, seq, 0, payload);
    }
    out
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn connect(addr: &str, cfg: &Arc<ClientConfig>) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let conn = ClientConnection::new(
        Arc::clone(cfg),
        ServerName::try_from("localhost".to_string()).unwrap(),
    )
    .unwrap();
    StreamOwned::new(conn, sock)
}

/// Sends a HELLO for `name` and `bytes`, then reads ACKs until all of
/// `bytes` is acked (Ok), or the server closes or fails the connection, or
/// 10 s pass (Err, with what was acked).
fn send_session(s: &mut Tls, name: &str, bytes: &[u8]) -> Result<(), String> {
    let mut all = Hello::new(name).to_bytes();
    all.extend_from_slice(bytes);
    let wrote = s.write_all(&all).and_then(|()| s.flush());
    let mut parser = AckParser::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    loop {
        if parser.last() == Some(bytes.len() as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("acked {:?} by the deadline", parser.last()));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed, acked {:?} ({wrote:?})", parser.last())),
            Ok(n) => {
                parser.feed(&buf[..n]).map_err(|e| e.to_string())?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("failed, acked {:?}: {e}", parser.last())),
        }
    }
}

/// A station that must be refused: it gets no ACK, and the connection ends.
fn assert_refused(addr: &str, cfg: &Arc<ClientConfig>, name: &str, what: &str) {
    let mut s = connect(addr, cfg);
    let bytes = frames(&[(1, 1_000), (1, 1_001)], b"refused");
    let r = send_session(&mut s, name, &bytes);
    let e = r.expect_err(what);
    assert!(e.contains("acked None"), "{what}: an ACK came: {e}");
    assert!(!e.contains("by the deadline"), "{what}: not closed: {e}");
}

/// GET `path` from the admin server.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn station<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["station"] == name)
        .unwrap_or_else(|| panic!("no station {name} in {summary}"))
}

#[test]
fn an_mtls_station_from_gen_connect_is_accepted_and_forwarded() {
    let pki = Pki::new("gen");
    let gs0 = pki.ca.leaf("gs0", false, false);
    let (cert, key) = (pki.write("gs0.pem", &gs0.0), pki.write("gs0.key", &gs0.1));
    let out = pki.path("out.bin");
    let flags = pki.serve_flags(true);
    let (serve, addr) = start_serve(&out, &strs(&flags));
    let mut gen = Proc::start(&[
        "gen",
        "--connect",
        &addr,
        "--stations",
        "1",
        "--station-name",
        "gs",
        "--frames",
        "3000",
        "--seed",
        "7",
        "--give-up-ms",
        "10000",
        "--tls-ca",
        &pki.path("ca.pem"),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let code = gen.wait_code(Duration::from_secs(30));
    assert_eq!(code, 0, "gen --connect over mTLS: {:?}", gen.lines());
    let s = stop(serve);
    assert_eq!(s["auth_failures"], 0, "{s}");
    assert_eq!(station(&s, "gs0")["sessions"], 1, "{s}");
    let got = std::fs::read(&out).unwrap();
    let (keys, skipped) = decode_keys(&got);
    assert_eq!(skipped, 0);
    let want = valid_keys(&GenConfig {
        frames: 3000,
        stations: 1,
        seed: 7,
        ..GenConfig::default()
    });
    let uniq: std::collections::HashSet<_> = keys.iter().copied().collect();
    assert_eq!(uniq.len(), keys.len(), "each frame once");
    assert_eq!(uniq, want, "every valid frame forwarded");
}

#[test]
fn bad_certificates_and_a_name_that_differs_are_refused_while_a_good_station_goes_on() {
    let pki = Pki::new("refuse");
    let out = pki.path("out.bin");
    let mut flags = pki.serve_flags(true);
    flags.extend(["--admin".into(), "127.0.0.1:0".into()]);
    let (mut serve, addr) = start_serve(&out, &strs(&flags));
    let admin = serve.after("admin on ").trim().to_string();

    let good = pki.client(Some(&pki.ca.leaf("gs0", false, false)));
    let first = frames(&[(1, 1), (1, 2), (2, 1)], b"first");
    let mut s = connect(&addr, &good);
    send_session(&mut s, "gs0", &first).expect("the good station is acked");

    assert_refused(&addr, &pki.client(None), "gs0", "no client certificate");
    let other = Ca::new("Another CA");
    assert_refused(
        &addr,
        &pki.client(Some(&other.leaf("gs0", false, false))),
        "gs0",
        "a certificate from another CA",
    );
    assert_refused(
        &addr,
        &pki.client(Some(&pki.ca.leaf("gs0", false, true))),
        "gs0",
        "an expired certificate",
    );
    assert_refused(
        &addr,
        &good,
        "gs1",
        "a HELLO name that is not the certificate's",
    );

    // The good station, on a new connection, is unaffected.
    let second = frames(&[(1, 3), (2, 2)], b"second");
    let mut s2 = connect(&addr, &good);
    send_session(&mut s2, "gs0", &second).expect("the good station is acked again");
    drop((s, s2));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(&admin, "/metrics");
        if metric(&m, "meridian_auth_failures_total") == Some(4) {
            break;
        }
        assert!(Instant::now() < deadline, "auth failures in /metrics: {m}");
        thread::sleep(Duration::from_millis(50));
    }
    let sum = stop(serve);
    assert_eq!(sum["auth_failures"], 4, "{sum}");
    assert_eq!(sum["connections_accepted"], 6, "{sum}");
    assert_eq!(station(&sum, "gs0")["sessions"], 2, "{sum}");
    // What was refused never reached the pipeline; the rest arrived as sent.
    let mut want = first.clone();
    want.extend_from_slice(&second);
    assert_eq!(std::fs::read(&out).unwrap(), want);
}

#[test]
fn the_allowlist_drops_other_satellites_before_the_window() {
    let pki = Pki::new("allow");
    let config = pki.write(
        "meridian.toml",
        "max_delay_ms = 2\n[stations.gs0]\nsatellites = [\"1-3\"]\n[stations.gs1]\nsatellites = [\"20\"]\n",
    );
    let out = pki.path("out.bin");
    let mut flags = pki.serve_flags(true);
    flags.extend([
        "--config".into(),
        config,
        "--admin".into(),
        "127.0.0.1:0".into(),
    ]);
    let (mut serve, addr) = start_serve(&out, &strs(&flags));
    let admin = serve.after("admin on ").trim().to_string();

    // gs0 sends its own satellites mixed with forgeries for satellite 20,
    // among them (20, 42), before the station that owns 20 sends it.
    let gs0 = pki.client(Some(&pki.ca.leaf("gs0", false, false)));
    let mut mixed = Vec::new();
    for seq in 0..40u64 {
        let f = frames(&[(1 + (seq % 3) as u32, seq)], b"own");
        mixed.extend_from_slice(&f);
        if seq % 4 == 0 {
            mixed.extend_from_slice(&frames(&[(20, 40 + seq / 4)], b"FORGED"));
        }
    }
    let mut s = connect(&addr, &gs0);
    send_session(&mut s, "gs0", &mixed).expect("gs0 is acked, forgeries included");

    let gs1 = pki.client(Some(&pki.ca.leaf("gs1", false, false)));
    let genuine = frames(&[(20, 42)], b"GENUINE");
    let mut s1 = connect(&addr, &gs1);
    send_session(&mut s1, "gs1", &genuine).expect("gs1 is acked");

    // A station with a good certificate that is not listed is refused.
    let gs2 = pki.client(Some(&pki.ca.leaf("gs2", false, false)));
    assert_refused(&addr, &gs2, "gs2", "a station not in [stations]");
    drop((s, s1));
    let m = http_get(&admin, "/metrics");
    assert_eq!(
        metric(&m, "meridian_frames_unauthorized_total{station=\"gs0\"}"),
        Some(10),
        "{m}"
    );
    assert_eq!(metric(&m, "meridian_auth_failures_total"), Some(1), "{m}");

    let sum = stop(serve);
    assert_eq!(station(&sum, "gs0")["unauthorized"], 10, "{sum}");
    assert_eq!(station(&sum, "gs1")["unauthorized"], 0, "{sum}");
    assert_eq!(sum["unauthorized"], 10, "{sum}");
    assert_eq!(sum["auth_failures"], 1, "{sum}");
    assert_eq!(
        sum["duplicates"], 0,
        "the forgery never entered the window: {sum}"
    );
    let got = std::fs::read(&out).unwrap();
    let (keys, _) = decode_keys(&got);
    assert!(keys.iter().all(|k| k.0 != 20 || *k == (20, 42)), "{keys:?}");
    // gs0's own frames byte for byte (their batches are already in order),
    // then the genuine copy.
    // (Each batch is put in (sat, seq) order, so compare frame by frame.)
    let mut sent: Vec<(u32, u64)> = (0..40u64).map(|s| (1 + (s % 3) as u32, s)).collect();
    sent.sort_unstable();
    assert_eq!(keys.len(), 41, "{keys:?}");
    let own_keys: Vec<_> = keys.iter().copied().filter(|k| k.0 != 20).collect();
    let mut own_sorted = own_keys.clone();
    own_sorted.sort_unstable();
    assert_eq!(own_sorted, sent, "each of gs0's own frames once");
    let mut want_own = Vec::new();
    for k in &own_keys {
        want_own.extend_from_slice(&frames(&[*k], b"own"));
    }
    let genuine_at = got
        .windows(genuine.len())
        .position(|w| w == genuine.as_slice())
        .expect("the genuine (20, 42) was forwarded");
    let mut rest = got[..genuine_at].to_vec();
    rest.extend_from_slice(&got[genuine_at + genuine.len()..]);
    assert_eq!(rest, want_own, "gs0's frames forwarded byte-identical");
    assert!(
        !got.windows(6).any(|w| w == b"FORGED"),
        "no forgery forwarded"
    );
}

#[test]
fn a_stalled_handshake_holds_only_its_slot_and_is_closed_at_the_idle_timeout() {
    let pki = Pki::new("slow");
    let out = pki.path("out.bin");
    let mut flags = pki.serve_flags(true);
    flags.extend([
        "--idle-timeout-ms".into(),
        "1500".into(),
        "--max-connections".into(),
        "2".into(),
    ]);
    let (serve, addr) = start_serve(&out, &strs(&flags));
    // Connects and sends nothing: not even a ClientHello.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let opened = Instant::now();
    thread::sleep(Duration::from_millis(100));
    // The other slot still takes a station, at once.
    let good = pki.client(Some(&pki.ca.leaf("gs0", false, false)));
    let mut s = connect(&addr, &good);
    let bytes = frames(&[(1, 1), (1, 2)], b"ok");
    send_session(&mut s, "gs0", &bytes).expect("a station next to a stalled handshake");
    assert!(
        opened.elapsed() < Duration::from_millis(1400),
        "the good station had to wait"
    );
    drop(s);
    // The stalled connection is closed at the idle timeout, not before.
    let mut buf = [0u8; 64];
    let closed_at = loop {
        match stalled.read(&mut buf) {
            Ok(0) => break opened.elapsed(),
            Ok(_) => {} // an alert, perhaps
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break opened.elapsed(),
        }
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "the stalled handshake was never closed"
        );
    };
    assert!(
        closed_at >= Duration::from_millis(1400) && closed_at < Duration::from_secs(5),
        "closed after {closed_at:?}"
    );
    let sum = stop(serve);
    assert_eq!(sum["tls_errors"], 1, "{sum}");
    assert_eq!(sum["auth_failures"], 0, "{sum}");
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

#[test]
fn a_plain_station_on_a_tls_serve_is_closed_and_counted() {
    let pki = Pki::new("plain-on-tls");
    let out = pki.path("out.bin");
    let flags = pki.serve_flags(false);
    let (serve, addr) = start_serve(&out, &strs(&flags));
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut bytes = Hello::new("gs0").to_bytes();
    bytes.extend_from_slice(&frames(&[(1, 1)], b"in the clear"));
    plain.write_all(&bytes).unwrap();
    // Whatever comes back (an alert), it is no ACK, and the connection ends.
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"MRDA"), "{got:?}");
    // Without --tls-client-ca, a TLS station needs no certificate.
    let mut s = connect(&addr, &pki.client(None));
    let good = frames(&[(1, 2)], b"encrypted");
    send_session(&mut s, "gs0", &good).expect("a TLS station without a certificate");
    drop(s);
    let sum = stop(serve);
    assert_eq!(sum["tls_errors"], 1, "{sum}");
    assert_eq!(sum["auth_failures"], 0, "{sum}");
    assert_eq!(std::fs::read(&out).unwrap(), good);
}

#[test]
fn plain_tcp_off_loopback_warns_and_require_tls_refuses_it() {
    let dir = Scratch::new("tls-plain");
    let out = dir.path("out.bin");
    let out = out.to_str().unwrap();
    // Refused before anything is accepted.
    let mut p = Proc::start(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--out",
        out,
        "--require-tls",
    ]);
    assert_eq!(p.wait_code(Duration::from_secs(10)), 2, "{:?}", p.lines());
    assert!(
        p.lines().iter().any(|l| l.contains("--require-tls")),
        "{:?}",
        p.lines()
    );
    // Without it: a warning naming the risk, and it serves.
    let (mut p, _) = Proc::listening(&["serve", "--listen", "0.0.0.0:0", "--out", out]);
    let warn = p.after("plain TCP on a non-loopback address");
    assert!(warn.contains("any satellite"), "{warn}");
    p.kill9();
    // With TLS, off loopback is fine, --require-tls or not.
    let pki = Pki::new("plain-require");
    let mut args = vec![
        "serve".to_string(),
        "--listen".into(),
        "0.0.0.0:0".into(),
        "--out".into(),
        out.to_string(),
        "--require-tls".into(),
    ];
    args.extend(pki.serve_flags(true));
    let (mut p, _) = Proc::listening(&strs(&args));
    thread::sleep(Duration::from_millis(200));
    p.kill9();
    assert!(
        !p.lines().iter().any(|l| l.contains("non-loopback")),
        "{:?}",
        p.lines()
    );
    // On loopback, no warning.
    let (mut p, _) = Proc::listening(&["serve", "--listen", "127.0.0.1:0", "--out", out]);
    thread::sleep(Duration::from_millis(200));
    p.kill9();
    assert!(
        !p.lines().iter().any(|l| l.contains("non-loopback")),
        "{:?}",
        p.lines()
    );
}

#[test]
fn unusable_certificate_files_are_usage_errors() {
    let pki = Pki::new("bad");
    let garbage = pki.write("garbage.pem", "not PEM at all\n");
    let out = pki.path("out.bin");
    let cert = pki.path("serve.pem");
    let key = pki.path("serve.key");
    let other_key = pki.write("other.key", &KeyPair::generate().unwrap().serialize_pem());
    let missing = pki.path("missing.pem");
    for (args, says) in [
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &garbage],
            "--tls-key",
        ),
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "--tls-cert",
        ),
        (vec!["--tls-cert", &cert], "--tls-key"),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "does not fit",
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &garbage,
            ],
            "--tls-client-ca",
        ),
        (vec!["--tls-client-ca", &cert], "--tls-client-ca"),
    ] {
        let mut a = vec!["serve", "--listen", "127.0.0.1:0", "--out", &out];
        a.extend(args.iter().copied());
        let mut p = Proc::start(&a);
        let code = p.wait_code(Duration::from_secs(10));
        let lines = p.lines();
        assert_eq!(code, 2, "{args:?}: {lines:?}");
        assert!(
            lines.iter().any(|l| l.contains(says)),
            "{args:?}: {lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:?}");
    }
}

#[test]
fn a_whole_chain_runs_encrypted_gen_serve_sink() {
    let pki = Pki::new("chain");
    let gs0 = pki.ca.leaf("gs0", false, false);
    let (cert, key) = (pki.write("gs0.pem", &gs0.0), pki.write("gs0.key", &gs0.1));
    let meridian = pki.ca.leaf("meridian", false, false);
    let (mcert, mkey) = (
        pki.write("meridian.pem", &meridian.0),
        pki.write("meridian.key", &meridian.1),
    );
    let received = pki.path("received.bin");
    // The sink takes only a client certificate from our CA.
    let (sink, sink_addr) = Proc::listening(&[
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--json",
        "--connections",
        "1",
        "--out",
        &received,
        "--tls-cert",
        &pki.path("serve.pem"),
        "--tls-key",
        &pki.path("serve.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ]);
    let mut sink = sink;
    let mut args = vec![
        "serve".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--forward".into(),
        sink_addr.trim().to_string(),
        "--forward-tls-ca".into(),
        pki.path("ca.pem"),
        "--forward-tls-cert".into(),
        mcert,
        "--forward-tls-key".into(),
        mkey,
        "--json".into(),
        "--grace-ms".into(),
        "300".into(),
    ];
    args.extend(pki.serve_flags(true));
    let (serve, addr) = Proc::listening(&strs(&args));
    let mut gen = Proc::start(&[
        "gen",
        "--connect",
        &addr,
        "--stations",
        "1",
        "--station-name",
        "gs",
        "--frames",
        "2000",
        "--seed",
        "11",
        "--give-up-ms",
        "10000",
        "--tls-ca",
        &pki.path("ca.pem"),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    // gen exits 0 only once every frame is acked end to end, i.e. in the sink's file.
    let code = gen.wait_code(Duration::from_secs(30));
    assert_eq!(code, 0, "gen over TLS into TLS: {:?}", gen.lines());
    let s = stop(serve);
    assert_eq!(s["downstream_failures"], 0, "{s}");
    let k = sink.finish(Duration::from_secs(20), 0);
    let (keys, skipped) = decode_keys(&std::fs::read(&received).unwrap());
    assert_eq!(skipped, 0);
    let want = valid_keys(&GenConfig {
        frames: 2000,
        stations: 1,
        seed: 11,
        ..GenConfig::default()
    });
    let got: std::collections::HashSet<_> = keys.iter().copied().collect();
    assert_eq!(got, want, "sink: {k}");
    assert_eq!(keys.len(), want.len(), "each once");
}

#[test]
fn a_bad_stations_table_is_a_usage_error_naming_its_line() {
    let dir = Scratch::new("tls-bad-stations");
    let out = dir.path("out.bin");
    for (toml, says) in [
        (
            "batch_size = 8\n\n[stations.gs0]\nsatellites = [\"9-1\"]\n",
            "line 3: [stations.gs0] satellites: '9-1'",
        ),
        (
            "[stations.gs0]\nsats = [\"1\"]\n",
            "line 1: [stations.gs0] needs exactly one key",
        ),
    ] {
        let path = dir.path("m.toml");
        std::fs::write(&path, toml).unwrap();
        let mut p = Proc::start(&[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(p.wait_code(Duration::from_secs(10)), 2, "{:?}", p.lines());
        assert!(
            p.lines().iter().any(|l| l.contains(says)),
            "{says}: {:?}",
            p.lines()
        );
    }
}
