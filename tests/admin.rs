//! `serve --admin`: the HTTP endpoints of a real `serve` process, with real
//! sockets on 127.0.0.1 (`sink` downstream, `gen --connect` stations and a
//! hand-made plain stream), and /metrics checked against the JSON summary
//! `serve` prints at exit. Every wait is bounded; every process started is
//! killed or reaped.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use meridian_pipeline::wire::encode_frame;
use serde_json::Value;

use common::proc::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-pipeline");
const WAIT: Duration = Duration::from_secs(20);

/// `sink` on an ephemeral port for one connection; returns it and its address.
fn start_sink() -> (Proc, String) {
    let mut p = Proc::start(&[
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--json",
        "--connections",
        "1",
    ]);
    let addr = p.after("listening on ");
    (p, addr)
}

/// `serve` with `--admin 127.0.0.1:0` and `args`; returns it, its station
/// address and its admin address.
fn start_serve(args: &[&str]) -> (Proc, String, String) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut p = Proc::start(&all);
    let listen = p.after("listening on ");
    let admin = p.after("admin on ");
    (p, listen, admin)
}

/// A plain HTTP/1.0 GET (no chunked encoding, the server closes): status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    (status, body.to_string())
}

/// One sample of the exposition format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y\"z"}` (without the braces) into a map; strict about quoting
/// and escapes (`\\`, `\"`, `\n` only).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(
            is_metric_name(name) && !name.contains(':'),
            "label name {name:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (_, '\\') => match chars.next().expect("dangling escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => panic!("bad escape \\{c}"),
                },
                (i, '"') => break i,
                (_, '\n') => panic!("raw newline in a label value"),
                (_, c) => value.push(c),
            }
        };
        assert!(
            out.insert(name.to_string(), value).is_none(),
            "label {name} twice"
        );
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
            assert!(!rest.is_empty(), "trailing comma");
        } else {
            assert!(rest.is_empty(), "junk after a label: {rest:?}");
        }
    }
    out
}

/// A strict parser of the text exposition format as `serve` writes it:
/// only `# HELP` and `# TYPE` comments, each family's HELP and TYPE once and
/// before its samples, every other line `name{labels} value` or `name value`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut help: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(c) = line.strip_prefix("# ") {
            let (kw, rest) = c.split_once(' ').expect("a comment with a keyword");
            let (name, arg) = rest.split_once(' ').expect("name and text");
            assert!(is_metric_name(name), "{line}");
            assert!(!samples
                .iter()
                .any(|s: &Sample| family(&types, &s.name) == name));
            match kw {
                "HELP" => assert!(help.insert(name.to_string()), "HELP twice: {line}"),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_string(), arg.to_string()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        assert!(is_metric_name(name), "bad name: {line}");
        let fam = family(&types, name);
        assert!(types.contains_key(&fam), "no TYPE for {name}");
        assert!(help.contains(&fam), "no HELP for {name}");
        if types[&fam] == "counter" {
            assert!(name.ends_with("_total"), "counter without _total: {name}");
            assert!(value >= 0.0);
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    assert!(
        types.keys().all(|t| help.contains(t)),
        "a TYPE without HELP"
    );
    samples
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count`).
fn family(types: &HashMap<String, String>, name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// The value of an unlabelled sample.
fn one(samples: &[Sample], name: &str) -> f64 {
    let v: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && s.labels.is_empty())
        .collect();
    assert_eq!(v.len(), 1, "{name}: {v:?}");
    v[0].value
}

/// Per station label, the values of `name`.
fn per_station(samples: &[Sample], name: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        assert_eq!(s.labels.len(), 1, "{s:?}");
        let st = s.labels.get("station").expect("a station label").clone();
        assert!(
            m.insert(st, s.value).is_none(),
            "{name} twice for a station"
        );
    }
    m
}

/// A plain stream (no HELLO): 3 good frames, one with a CRC error, one with
/// a bad header, 2 good frames; returns its peer address as serve names it.
fn send_damaged(addr: &str) -> String {
    let mut bytes = Vec::new();
    for seq in 0..3 {
        encode_frame(&mut bytes, 4000, seq, 0, b"good frame");
    }
    let at = bytes.len();
    encode_frame(&mut bytes, 4000, 3, 0, b"crc damaged");
    bytes[at + 22] ^= 0xFF; // a payload byte: the CRC no longer matches
    let at = bytes.len();
    encode_frame(&mut bytes, 4000, 4, 0, b"bad header");
    bytes[at + 17] = 9; // the version byte
    for seq in 5..7 {
        encode_frame(&mut bytes, 4000, seq, 0, b"good frame");
    }
    let mut s = TcpStream::connect(addr).unwrap();
    let me = s.local_addr().unwrap().to_string();
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    // serve closes once it has read to the end.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    me
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
            let _ = child.wait();
            panic!("gen --connect still running after {within:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn metrics_equal_the_summary_after_a_run_with_named_stations() {
    let (mut sink, sink_addr) = start_sink();
    let (mut serve, addr, admin) = start_serve(&["--forward", &sink_addr, "--json"]);
    assert_eq!(get(&admin, "/healthz"), (200, "ok\n".to_string()));

    // Station names that need escaping in a label value.
    let prefix = "gs \"north\"\\";
    let gen = Command::new(BIN)
        .args([
            "gen",
            "--connect",
            &addr,
            "--stations",
            "3",
            "--frames",
            "20000",
            "--seed",
            "13",
            "--station-name",
            prefix,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let plain = send_damaged(&addr);
    wait_ok(gen, WAIT);

    // Everything is acked once gen has exited; wait (bounded) until every
    // station thread has ended too, and scrape while nothing moves.
    let deadline = Instant::now() + WAIT;
    let samples = loop {
        let (status, body) = get(&admin, "/metrics");
        assert_eq!(status, 200);
        let samples = parse_exposition(&body);
        let connected = per_station(&samples, "meridian_station_connected");
        if connected.len() == 4
            && connected.values().all(|&v| v == 0.0)
            && one(&samples, "meridian_unacked_bytes") == 0.0
        {
            break samples;
        }
        assert!(Instant::now() < deadline, "still moving: {body}");
        thread::sleep(Duration::from_millis(50));
    };
    let (status, links) = get(&admin, "/api/links");
    assert_eq!(status, 200);
    let links: Value = serde_json::from_str(&links).unwrap();
    assert_eq!(get(&admin, "/readyz").0, 200);
    assert_eq!(get(&admin, "/no/such/page").0, 404);

    serve.signal("TERM");
    let s = serve.finish(WAIT, 0);
    let _ = sink.finish(WAIT, 0);

    // Serve-wide counters.
    for (metric, key) in [
        ("meridian_frames_forwarded_total", "forwarded"),
        ("meridian_frames_duplicate_total", "duplicates"),
        ("meridian_frames_invalid_total", "invalid"),
        ("meridian_frames_stale_total", "stale"),
        ("meridian_frames_late_total", "late"),
        ("meridian_frames_suspect_total", "suspect"),
    ] {
        assert_eq!(
            one(&samples, metric),
            s[key].as_u64().unwrap() as f64,
            "{metric} vs {key}"
        );
    }
    assert!(s["forwarded"].as_u64().unwrap() > 0);
    assert!(s["duplicates"].as_u64().unwrap() > 0);
    assert!(s["invalid"].as_u64().unwrap() > 0);
    assert_eq!(
        one(&samples, "meridian_forward_latency_seconds_count"),
        s["latency_us"]["frames"].as_u64().unwrap() as f64
    );
    assert_eq!(
        samples
            .iter()
            .find(|x| x.name == "meridian_forward_latency_seconds_bucket"
                && x.labels.get("le").map(String::as_str) == Some("+Inf"))
            .unwrap()
            .value,
        one(&samples, "meridian_forward_latency_seconds_count")
    );

    // Per station: the summary's stations, by name.
    let stations = s["stations"].as_array().unwrap();
    let want: BTreeMap<String, &Value> = stations
        .iter()
        .map(|st| (st["station"].as_str().unwrap().to_string(), st))
        .collect();
    let mut names: Vec<String> = (0..3).map(|i| format!("{prefix}{i}")).collect();
    names.push(plain.clone());
    names.sort();
    assert_eq!(want.keys().cloned().collect::<Vec<_>>(), names);
    for (metric, key) in [
        ("meridian_frames_received_total", "frames_decoded"),
        ("meridian_crc_errors_total", "crc_errors"),
        ("meridian_bad_header_total", "bad_header"),
    ] {
        let got = per_station(&samples, metric);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (st, v) in &got {
            assert_eq!(
                *v,
                want[st][key].as_u64().unwrap() as f64,
                "{metric} of {st}"
            );
        }
    }
    assert_eq!(want[&plain]["frames_decoded"], 5);
    assert_eq!(want[&plain]["crc_errors"], 1);
    assert_eq!(want[&plain]["bad_header"], 1);
    let last = per_station(&samples, "meridian_station_last_frame_timestamp_seconds");
    assert!(last.values().all(|&t| t > 1.0e9), "{last:?}");

    // /api/links names the stations, with the same counts.
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 4);
    for l in links {
        let st = l["station"].as_str().unwrap();
        let w = want[st];
        assert_eq!(l["connected"], false);
        assert_eq!(l["frames"], w["frames_decoded"]);
        assert_eq!(l["bytes"], w["input_bytes"]);
        assert_eq!(l["crc_errors"], w["crc_errors"]);
        assert_eq!(l["bad_header"], w["bad_header"]);
        assert_eq!(l["acked_bytes"], w["acked_bytes"]);
        assert_eq!(l["peer"], w["peer"]);
        assert!(l["connected_since"].as_u64().unwrap() > 1_000_000_000);
        assert!(l["last_frame_age_s"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn readyz_waits_for_a_downstream_that_never_came() {
    // Nothing listens there.
    let nobody = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (mut serve, _, admin) = start_serve(&["--forward", &nobody, "--json"]);
    assert_eq!(get(&admin, "/healthz").0, 200);
    assert_eq!(get(&admin, "/readyz").0, 503);
    let (status, body) = get(&admin, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_exposition(&body);
    assert_eq!(one(&samples, "meridian_frames_forwarded_total"), 0.0);
    assert!(per_station(&samples, "meridian_frames_received_total").is_empty());
    serve.signal("TERM");
    let _ = serve.finish(WAIT, 0);
}

#[test]
fn readyz_is_ready_at_once_with_out() {
    let dir = std::env::temp_dir().join(format!("meridian-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.bin");
    let (mut serve, _, admin) =
        start_serve(&["--out", out.to_str().unwrap(), "--truncate", "--json"]);
    assert_eq!(get(&admin, "/readyz").0, 200);
    assert_eq!(get(&admin, "/api/links"), (200, "[]".to_string()));
    serve.signal("TERM");
    let _ = serve.finish(WAIT, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admin_on_a_busy_address_exits_2_with_one_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = busy.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("meridian-admin-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.bin");
    let mut serve = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
        "--admin",
        &at,
    ]);
    let code = serve.wait_code(WAIT);
    let lines = serve.lines();
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("--admin") && lines[0].contains(&at),
        "{lines:?}"
    );
    assert!(!lines[0].contains("listening"), "{lines:?}");
    drop(busy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/metrics` read by a real Prometheus text parser (`prometheus-parse`):
/// each sample's value by name and station label (`""` when unlabelled).
fn scrape(admin: &str) -> HashMap<(String, String), f64> {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = HashMap::new();
    for s in scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let station = s.labels.get("station").unwrap_or("").to_string();
        assert!(
            out.insert((s.metric.clone(), station), v).is_none(),
            "{} twice",
            s.metric
        );
    }
    out
}

#[test]
fn metrics_and_gaps_equal_the_summary_with_a_deliberate_gap() {
    let (mut sink, sink_addr) = start_sink();
    let (mut serve, addr, admin) = start_serve(&["--forward", &sink_addr, "--json"]);
    // Named stations, no invalid copies: every gen satellite is complete.
    let gen = Command::new(BIN)
        .args([
            "gen",
            "--connect",
            &addr,
            "--stations",
            "3",
            "--frames",
            "6000",
        ])
        .args([
            "--seed",
            "21",
            "--invalid-rate",
            "0",
            "--station-name",
            "gs-",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Sat 4000, seqs 0..=6: 3 has a CRC error and 4 a bad header, so 3..=4 is the gap.
    let plain = send_damaged(&addr);
    wait_ok(gen, WAIT);

    let deadline = Instant::now() + WAIT;
    let m = loop {
        let m = scrape(&admin);
        let connected: Vec<f64> = m
            .iter()
            .filter(|((n, _), _)| n == "meridian_station_connected")
            .map(|(_, v)| *v)
            .collect();
        if connected.len() == 4
            && connected.iter().all(|&v| v == 0.0)
            && m[&("meridian_unacked_bytes".into(), String::new())] == 0.0
        {
            break m;
        }
        assert!(Instant::now() < deadline, "still moving: {m:?}");
        thread::sleep(Duration::from_millis(50));
    };
    let (status, gaps) = get(&admin, "/api/gaps");
    assert_eq!(status, 200);
    let gaps: Value = serde_json::from_str(&gaps).unwrap();
    let (_, all) = get(&admin, "/api/gaps?all=1");
    let all: Value = serde_json::from_str(&all).unwrap();
    let (_, links) = get(&admin, "/api/links");
    let links: Value = serde_json::from_str(&links).unwrap();
    serve.signal("TERM");
    let s = serve.finish(WAIT, 0);
    let _ = sink.finish(WAIT, 0);

    // Exactly the gap left out.
    assert_eq!(s["missing"], 2, "{s}");
    assert_eq!(s["gap_ranges"], 1);
    // Stations interleave: a seq one station has not delivered yet opens a
    // gap that another's copy fills; only 3..=4 of sat 4000 stays open.
    assert_eq!(
        s["gaps_opened"].as_u64().unwrap(),
        s["gaps_filled"].as_u64().unwrap() + 2
    );
    let sats = gaps["satellites"].as_array().unwrap();
    assert_eq!(sats.len(), 1, "{gaps}");
    let g = &sats[0];
    assert_eq!(g["sat"], 4000);
    assert_eq!(g["ranges"], serde_json::json!([[3, 4]]));
    assert_eq!(
        (
            &g["missing"],
            &g["lowest_seq"],
            &g["highest_seq"],
            &g["frames"]
        ),
        (
            &Value::from(2),
            &Value::from(0),
            &Value::from(6),
            &Value::from(5)
        )
    );
    assert_eq!(g["filled"], 0);
    assert_eq!(g["ranges_truncated"], false);
    assert_eq!(gaps["missing"], 2);
    // ?all=1 lists every satellite: 48 from gen, complete, and sat 4000.
    let every = all["satellites"].as_array().unwrap();
    assert_eq!(every.len(), 49);
    assert!(every
        .iter()
        .all(|x| x["sat"] == 4000 || (x["missing"] == 0 && x["range_count"] == 0)));

    // Serve-wide counters equal the summary.
    let one = |name: &str| m[&(name.to_string(), String::new())];
    for (metric, key) in [
        ("meridian_frames_forwarded_total", "forwarded"),
        ("meridian_frames_duplicate_total", "duplicates"),
        ("meridian_frames_invalid_total", "invalid"),
        ("meridian_frames_late_total", "late"),
        ("meridian_frames_missing_total", "gaps_opened"),
        ("meridian_frames_gap_filled_total", "gaps_filled"),
        ("meridian_gap_missing_seqs", "missing"),
        ("meridian_gap_ranges", "gap_ranges"),
    ] {
        assert_eq!(
            one(metric),
            s[key].as_u64().unwrap() as f64,
            "{metric} vs {key}"
        );
    }
    assert_eq!(
        one("meridian_frames_missing_total") - one("meridian_frames_gap_filled_total"),
        2.0
    );

    // Per station: first copies and duplicates add up to the summary's totals.
    let stations = s["stations"].as_array().unwrap();
    assert_eq!(stations.len(), 4);
    let (mut first, mut dups) = (0, 0);
    for st in stations {
        let name = st["station"].as_str().unwrap().to_string();
        for (metric, key) in [
            ("meridian_first_copies_total", "first_copies"),
            ("meridian_frames_received_total", "frames_decoded"),
            ("meridian_crc_errors_total", "crc_errors"),
        ] {
            assert_eq!(
                m[&(metric.to_string(), name.clone())],
                st[key].as_u64().unwrap() as f64,
                "{metric} of {name}"
            );
        }
        first += st["first_copies"].as_u64().unwrap();
        dups += st["duplicates"].as_u64().unwrap();
        let l = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["station"] == st["station"])
            .unwrap();
        assert_eq!(l["first_copies"], st["first_copies"]);
        assert_eq!(l["duplicates"], st["duplicates"]);
        if name == plain {
            assert_eq!(st["first_copies"], 5);
            assert_eq!(st["duplicates"], 0);
            assert!(l["ack_lag_bytes"].is_null() && l["acked_offset"].is_null());
        } else {
            assert!(st["first_copies"].as_u64().unwrap() > 0, "{st}");
            // Everything read was acked.
            assert_eq!(l["ack_lag_bytes"], 0, "{l}");
            assert!(l["acked_offset"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(first, s["forwarded"].as_u64().unwrap());
    assert_eq!(dups, s["duplicates"].as_u64().unwrap());
    assert!(dups > 0);
}
