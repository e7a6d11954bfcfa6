//! The status page at `GET /` of `serve --admin`: served as HTML with
//! nothing fetched from outside and no HTML built from strings, and, in a
//! real browser, `scripts/ui-check.sh` (headless Chromium against a running
//! `serve`; the script installs Debian's chromium when it is missing, and
//! this test fails when it cannot): station rows and a deliberate gap.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-pipeline");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-ui-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plain HTTP/1.0 GET: the header block (lowercased) and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn the_status_page_is_one_self_contained_html_file() {
    let dir = temp_dir("page");
    let out = dir.join("out.bin");
    let mut serve = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--out", out.to_str().unwrap(), "--truncate"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let admin = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("admin on ").nth(1).map(str::to_string))
        .expect("an 'admin on' line");

    let (head, page) = get(&admin, "/");
    let (links_head, links) = get(&admin, "/api/links");
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "{head}"
    );
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("/api/links") && page.contains("/metrics"));
    // Nothing from outside: the only absolute URL is the SVG namespace
    // (an identifier, never fetched).
    let urls = page.matches("http://").count() + page.matches("https://").count();
    assert_eq!(urls, page.matches("http://www.w3.org/2000/svg").count());
    for bad in ["src=", "href=", "<link", "@import", "url(", "//cdn"] {
        assert!(!page.contains(bad), "the page contains {bad:?}");
    }
    // Strings from the server never become markup.
    for bad in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!page.contains(bad), "the page uses {bad}");
    }
    // Rates are taken against serve's clock.
    assert_eq!(links, "[]");
    let t: f64 = links_head
        .lines()
        .find_map(|l| l.strip_prefix("x-meridian-time: "))
        .unwrap_or_else(|| panic!("no X-Meridian-Time: {links_head}"))
        .trim()
        .parse()
        .unwrap();
    assert!(t > 1.0e9, "{t}");
}

#[test]
fn ui_check_passes_in_headless_chromium() {
    let dir = temp_dir("check");
    let shot = dir.join("status.png");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ui-check.sh");
    let out = Command::new("timeout")
        .args(["120", "bash", script])
        .env("MERIDIAN_BIN", BIN)
        .env("UI_SCREENSHOT", &shot)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/ui-check.sh failed (exit {:?}; 124 = timed out after 120 s). \
         It needs chromium (it runs apt-get install chromium as root when missing).\n\
         stderr: {stderr}\nstdout: {stdout}",
        out.status.code()
    );
    for name in ["gs-0", "gs-1"] {
        assert!(
            stdout.contains(&format!("{name}: ")),
            "no {name} line:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("sat 4001: gap 7\u{2013}9 (3 missing) on the page and in /api/gaps"),
        "no gap line:\n{stdout}"
    );
    assert!(
        stdout.contains("live-0: ") && stdout.contains("(paced at 400)"),
        "no live-0 rate line:\n{stdout}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "a suspiciously small screenshot");
    let _ = std::fs::remove_dir_all(&dir);
}
