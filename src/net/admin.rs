//! `serve --admin ADDR`: a small HTTP/1.1 server (`tiny_http`, one thread)
//! that reads the [`Metrics`] registry.
//!
//! - `GET /`: the status page ([`STATUS_PAGE`]), one static HTML file
//!   whose inline script polls `/api/links` and `/metrics` every second.
//! - `GET /metrics`: Prometheus text exposition format.
//! - `GET /api/links`: JSON, one entry per station ([`super::metrics::LinkView`]),
//!   with an `X-Meridian-Time` header: serve's clock when it read them
//!   (unix seconds, 3 decimals), which the status page divides frame
//!   deltas by (a browser's clock may be virtual, as headless Chromium's).
//! - `GET /api/gaps`: JSON, per satellite missing seqs now (every
//!   satellite with `?all=1`): lowest and highest seq forwarded, frames,
//!   missing, filled, the highest open ranges ([`crate::gaps::SatView`]),
//!   and the totals.
//! - `GET /healthz`: 200 `ok` while the process runs.
//! - `GET /readyz`: 200 `ready` once serve is listening and, when it
//!   forwards over TCP, once the downstream has connected at least once
//!   (it connects on the first batch, so before any traffic this is 503);
//!   with `--out`, at once.
//! - anything else: 404; a method other than GET or HEAD: 405.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::metrics::Metrics;

/// The status page served at `GET /`: `src/net/status.html`, embedded.
/// Nothing in it is fetched from outside; strings from the JSON go in
/// through `textContent` only.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// How often the admin thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A bound admin server, not yet answering.
pub struct AdminServer {
    server: tiny_http::Server,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.local_addr())
            .finish()
    }
}

impl AdminServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// When the address cannot be bound (in use, say) or resolved.
    pub fn bind(addr: &str) -> io::Result<AdminServer> {
        let server = tiny_http::Server::http(addr).map_err(io::Error::other)?;
        Ok(AdminServer { server })
    }

    /// The bound address (with the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Answers requests from `metrics` on a thread of its own until `done`.
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn spawn(
        self,
        metrics: Arc<Metrics>,
        done: Arc<AtomicBool>,
    ) -> io::Result<thread::JoinHandle<()>> {
        thread::Builder::new().name("admin".into()).spawn(move || {
            // The stations' frame counts, sampled once a second for their rates.
            let mut sampled = Instant::now();
            metrics.sample();
            while !done.load(Ordering::SeqCst) {
                if sampled.elapsed() >= Duration::from_secs(1) {
                    sampled = Instant::now();
                    metrics.sample();
                }
                match self.server.recv_timeout(POLL) {
                    Ok(Some(req)) => answer(req, &metrics),
                    Ok(None) => {}
                    Err(_) => thread::sleep(POLL),
                }
            }
        })
    }
}

fn answer(req: tiny_http::Request, metrics: &Metrics) {
    use tiny_http::{Header, Method, Response};
    let ctype = |v: &str| Header::from_bytes("Content-Type", v).expect("a valid header");
    if !matches!(req.method(), Method::Get | Method::Head) {
        let _ = req.respond(Response::from_string("method not allowed\n").with_status_code(405));
        return;
    }
    let (path, query) = match req.url().split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (req.url().to_string(), String::new()),
    };
    let mut extra = None;
    let (status, body, kind) = match path.as_str() {
        "/" => (200, STATUS_PAGE.to_string(), "text/html; charset=utf-8"),
        "/metrics" => (
            200,
            metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/api/links" => {
            let links = metrics.links();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            extra = Header::from_bytes(
                "X-Meridian-Time",
                format!("{}.{:03}", now.as_secs(), now.subsec_millis()),
            )
            .ok();
            (
                200,
                serde_json::to_string(&links).unwrap_or_else(|_| "[]".into()),
                "application/json",
            )
        }
        "/api/gaps" => {
            let all = query.split('&').any(|kv| kv == "all=1" || kv == "all");
            (
                200,
                serde_json::to_string(&metrics.gap_report(all)).unwrap_or_else(|_| "{}".into()),
                "application/json",
            )
        }
        "/healthz" => (200, "ok\n".into(), "text/plain; charset=utf-8"),
        "/readyz" if metrics.downstream_up() => {
            (200, "ready\n".into(), "text/plain; charset=utf-8")
        }
        "/readyz" => (
            503,
            "waiting for the downstream\n".into(),
            "text/plain; charset=utf-8",
        ),
        _ => (404, "not found\n".into(), "text/plain; charset=utf-8"),
    };
    let mut resp = Response::from_string(body)
        .with_status_code(status)
        .with_header(ctype(kind));
    if let Some(h) = extra {
        resp.add_header(h);
    }
    let _ = req.respond(resp);
}
