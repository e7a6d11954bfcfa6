//! `serve --config PATH`: bad files exit 2 with one line naming the key and
//! its line, a busy `--admin` exits 2, flags override the file, and the
//! file's options take effect. Real processes on 127.0.0.1; every wait
//! bounded; every process killed.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use common::keys::decode_keys;
use common::proc::{Proc, Scratch};
use meridian_pipeline::wire::encode_frame;

const WAIT: Duration = Duration::from_secs(20);

/// Runs `serve --config FILE ARGS` with FILE holding `toml`; expects exit 2
/// and returns its one line of stderr.
fn usage_error(dir: &Scratch, toml: &str, args: &[&str]) -> String {
    let file = dir.path("meridian.toml");
    std::fs::write(&file, toml).unwrap();
    let mut all = vec!["serve", "--config", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut p = Proc::start(&all);
    let code = p.wait_code(WAIT);
    let lines = p.lines();
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(lines.len(), 1, "not one line: {lines:?}");
    assert!(!lines[0].contains("listening"), "{lines:?}");
    lines[0].clone()
}

#[test]
fn an_unknown_key_exits_2_naming_it_and_its_line() {
    let dir = Scratch::new("config-unknown");
    let out = dir.path("out.bin");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nout = \"{}\"\n\n# a comment\nbatch_szie = 100\n",
        out.display()
    );
    let line = usage_error(&dir, &toml, &[]);
    assert!(
        line.contains("unknown key 'batch_szie'") && line.contains("line 5"),
        "{line}"
    );
    // A table is not an option either.
    let line = usage_error(
        &dir,
        "[serve]\nlisten = \"127.0.0.1:0\"\n",
        &["--out", "/dev/null"],
    );
    assert!(
        line.contains("unknown key 'serve'") && line.contains("line 1"),
        "{line}"
    );
}

#[test]
fn a_bad_value_exits_2_naming_the_key_and_its_line() {
    let dir = Scratch::new("config-bad");
    for (toml, key, line_no) in [
        (
            "listen = \"127.0.0.1:0\"\nbatch_size = 0\n",
            "batch_size",
            2,
        ),
        ("batch_size = \"many\"\n", "batch_size", 1),
        ("json = 1\n", "json", 1),
        ("\nstale = \"sometimes\"\n", "stale", 2),
        ("max_connections = [1, 2]\n", "max_connections", 1),
        ("log_format = \"xml\"\n", "log_format", 1),
    ] {
        let line = usage_error(&dir, toml, &["--out", "/dev/null"]);
        assert!(
            line.contains(&format!("bad value for '{key}'"))
                && line.contains(&format!("line {line_no}")),
            "{toml:?}: {line}"
        );
    }
    // Not TOML at all, and no file.
    let line = usage_error(&dir, "listen = \"unclosed\n", &["--out", "/dev/null"]);
    assert!(
        line.contains("not valid TOML") && line.contains("line 1"),
        "{line}"
    );
    let mut p = Proc::start(&["serve", "--config", "/no/such/meridian.toml"]);
    assert_eq!(p.wait_code(WAIT), 2);
    assert_eq!(p.lines().len(), 1);
    // No target anywhere.
    let line = usage_error(&dir, "listen = \"127.0.0.1:0\"\n", &[]);
    assert!(
        line.contains("--forward") && line.contains("--out"),
        "{line}"
    );
}

#[test]
fn admin_on_a_busy_address_from_the_file_exits_2() {
    let dir = Scratch::new("config-busy");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = busy.local_addr().unwrap().to_string();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nout = \"{}\"\nadmin = \"{at}\"\n",
        dir.path("out.bin").display()
    );
    let line = usage_error(&dir, &toml, &[]);
    assert!(line.contains("--admin") && line.contains(&at), "{line}");
    drop(busy);
}

/// A plain stream of 20 frames of sat 9 to `addr`, waiting until serve closes it.
fn send_frames(addr: &str) {
    let mut bytes = Vec::new();
    for seq in 0..20 {
        encode_frame(&mut bytes, 9, seq, 0, b"configured");
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn flags_override_the_file_and_the_file_takes_effect() {
    let dir = Scratch::new("config-override");
    let (from_file, from_flag) = (dir.path("file.bin"), dir.path("flag.bin"));
    // The file's admin address is busy, its output is file.bin, its logs JSON,
    // its summary JSON; the command line moves admin and output.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nout = \"{}\"\ntruncate = true\nadmin = \"{}\"\n\
         json = true\nlog_format = \"json\"\nbatch_size = 7\n",
        from_file.display(),
        busy.local_addr().unwrap()
    );
    let file = dir.path("meridian.toml");
    std::fs::write(&file, toml).unwrap();
    let (mut serve, addr) = Proc::listening(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--out",
        from_flag.to_str().unwrap(),
    ]);
    send_frames(&addr);
    serve.signal("TERM");
    let s = serve.finish(WAIT, 0);
    // The flags won: frames in flag.bin, file.bin never created.
    assert!(!from_file.exists());
    let (keys, _) = decode_keys(&std::fs::read(&from_flag).unwrap());
    assert_eq!(keys, (0..20).map(|q| (9, q)).collect::<Vec<_>>());
    // The file's other options held: JSON summary, batches of 7, JSON logs.
    assert_eq!(s["forwarded"], 20);
    // 20 frames in batches of at most 7 (the default, 1000, would take one or two).
    assert!(s["batches"].as_u64().unwrap() >= 3, "{s}");
    let lines = serve.lines();
    assert!(lines.iter().any(|l| l.starts_with("meridian: admin on ")));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.starts_with("{\"timestamp\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "station disconnected"),
        "{lines:?}"
    );
    drop(busy);
}

#[test]
fn serve_tells_systemd_it_is_ready() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};
    let dir = Scratch::new("config-notify");
    let sock_path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-pipeline"))
        .args(["serve", "--listen", "127.0.0.1:0", "--out"])
        .arg(dir.path("out.bin"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let got = sock.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("READY=1 within the wait");
    assert_eq!(&buf[..n], b"READY=1");
}
