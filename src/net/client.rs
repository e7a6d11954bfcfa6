//! The sending side of the session protocol ([`super::session`]): one
//! logical outgoing byte stream carried over as many TCP connections as
//! faults make necessary.
//!
//! [`SessionClient`] keeps every pushed byte until the server ACKs it. Its
//! positions are logical: they count from the first byte ever pushed and go
//! on across reconnects. A connection that starts at logical position `P`
//! (everything before `P` was acked) numbers its frame stream from 0, so its
//! ACK `o` means logical `P + o`.
//!
//! How ACKs are read: each connection has a reader thread that parses the
//! server's replies and publishes the newest connection offset (or the
//! fault that ended the connection) in a mutex with a condition variable.
//! The calling thread owns the retained bytes and applies the published
//! offsets whenever it writes or waits, so the reader thread never touches
//! the buffer. Writes block for at most a short poll at a time, so a
//! stop, a fault the reader saw and the no-progress limits are all looked
//! at while a write is stuck.
//!
//! Faults (connect refused, reset, end of stream from the server, a write
//! that makes no progress for `write_timeout`, a reply that is not an ACK,
//! an ACK beyond what was sent) close the connection; the next write or
//! wait reconnects after an exponential backoff, sends HELLO again and
//! resends everything from the last ACK.
//!
//! In raw mode there is no HELLO and no ACK: bytes count as done once
//! written (at-most-once), and after a fault the push being written is
//! written again whole on the new connection.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::session::{AckParser, Hello};
use super::tls::{ClientTls, TlsConn};
use super::Shutdown;

/// Outages of a logged peer (a downstream flapping) are rate-limited.
static LOG_OUTAGE: crate::log::RateLimit = crate::log::RateLimit::new(10, 10);

/// How long a blocked write or wait goes before looking at the stop flag,
/// the reader's fault and the deadlines again.
const POLL: Duration = Duration::from_millis(20);

/// Options of a [`SessionClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The name the HELLO carries (at most 64 bytes are sent).
    pub name: String,
    /// A plain stream: no HELLO, no ACKs; written counts as done.
    pub raw: bool,
    /// Longest wait for one connection attempt.
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long is a fault.
    pub write_timeout: Duration,
    /// First wait before reconnecting after a fault or a failed attempt.
    pub backoff_min: Duration,
    /// Longest wait between attempts; the wait doubles up to it, and falls
    /// back to `backoff_min` once an ACK arrives.
    pub backoff_max: Duration,
    /// Most bytes kept unacked: `push` blocks while the retained bytes and
    /// the new ones would exceed it (a single push larger than this is
    /// taken once nothing is retained).
    pub max_unacked: usize,
    /// Give up (an error of kind `TimedOut`) when bytes are outstanding and
    /// the acked position has not advanced for this long, whatever the
    /// reason: no server, a server that closes at once, one that never
    /// reads or never ACKs. `None`: never give up (only a stop ends it).
    pub give_up: Option<Duration>,
    /// TCP keepalive idle time (and probe interval); `None` leaves it off.
    pub keepalive: Option<Duration>,
    /// When set, one stderr line names the first failure of each outage
    /// ("`<log_as>` unreachable: ...") and one its end ("connected again"),
    /// so an operator sees a downstream come and go without a flood.
    pub log_as: Option<String>,
    /// TLS to the server (checking its certificate, presenting one when
    /// configured); `None`: plain TCP.
    pub tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            name: String::new(),
            raw: false,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_unacked: 64 << 20,
            give_up: Some(Duration::from_secs(30)),
            keepalive: Some(Duration::from_secs(10)),
            log_as: None,
            tls: None,
        }
    }
}

/// Counters of a [`SessionClient`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// Connections made (HELLO written, in session mode).
    pub connects: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Connections ended by a fault.
    pub faults: u64,
    /// Bytes written that had been written before (resent after a fault).
    pub resent_bytes: u64,
    /// Bytes acked (in raw mode: written).
    pub acked_bytes: u64,
    /// Bytes pushed.
    pub pushed_bytes: u64,
}

/// What a connection's reader thread publishes.
#[derive(Debug, Default)]
struct ConnState {
    /// The connection the rest is about; older readers leave it alone.
    generation: u64,
    /// The newest ACK offset on that connection.
    acked: u64,
    /// Why that connection ended, once it has.
    fault: Option<io::Error>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<ConnState>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        // A reader thread never panics while holding it; recover anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// The TLS state over `stream`, when TLS is on: writes go through it.
    tls: Option<Arc<TlsConn>>,
    /// The logical position its frame stream starts at.
    start: u64,
    reader: Option<JoinHandle<()>>,
}

/// A logical outgoing byte stream over reconnecting TCP connections, kept
/// until ACKed; see the module documentation.
#[derive(Debug)]
pub struct SessionClient {
    addr: String,
    opts: ClientOptions,
    stop: Arc<Shutdown>,
    shared: Arc<Shared>,
    generation: u64,
    conn: Option<Conn>,
    /// Bytes from `acked` to `pushed`.
    retained: VecDeque<u8>,
    acked: u64,
    /// Written on the current connection up to here.
    sent: u64,
    /// The highest position ever written.
    high: u64,
    /// When the acked position last advanced (or bytes became outstanding).
    progress_at: Instant,
    backoff: Duration,
    /// Not before this instant may the next connection attempt start.
    retry_at: Option<Instant>,
    /// What ended the last connection or attempt, for error messages.
    last_fault: Option<String>,
    /// Failed attempts and faults since the last working connection, for
    /// the outage log lines.
    outage: u64,
    stats: ClientStats,
}

impl SessionClient {
    /// A client for `addr` ("host:port"); it connects on the first push.
    pub fn new(addr: &str, opts: ClientOptions, stop: Arc<Shutdown>) -> SessionClient {
        let backoff = opts.backoff_min;
        SessionClient {
            addr: addr.to_string(),
            opts,
            stop,
            shared: Arc::new(Shared::default()),
            generation: 0,
            conn: None,
            retained: VecDeque::new(),
            acked: 0,
            sent: 0,
            high: 0,
            progress_at: Instant::now(),
            backoff,
            retry_at: None,
            last_fault: None,
            outage: 0,
            stats: ClientStats::default(),
        }
    }

    /// The logical position acked: every byte pushed before it is safe.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The logical position pushed: bytes pushed so far.
    pub fn pushed(&self) -> u64 {
        self.acked + self.retained.len() as u64
    }

    /// Bytes pushed and not yet acked (kept for resending).
    pub fn unacked(&self) -> u64 {
        self.retained.len() as u64
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Appends `bytes` to the stream (push whole frames: a fault resends
    /// from an ACK, and ACKs fall between frames) and writes them, blocking
    /// while the unacked bytes would exceed `max_unacked`, reconnecting and
    /// resending after faults. Returns once they are written (not acked).
    ///
    /// # Errors
    /// `Interrupted` when the stop flag is set, `TimedOut` when `give_up`
    /// passed without progress; the bytes stay retained either way, and
    /// [`SessionClient::pushed`] counts them.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        while !self.retained.is_empty() && self.retained.len() + bytes.len() > self.opts.max_unacked
        {
            self.step(Instant::now() + POLL)?;
        }
        if self.retained.is_empty() {
            self.progress_at = Instant::now();
        }
        self.retained.extend(bytes);
        self.stats.pushed_bytes += bytes.len() as u64;
        self.write_out()?;
        if self.opts.raw {
            self.release_to(self.sent);
        }
        Ok(())
    }

    /// Applies the ACKs that arrived and, after a fault, reconnects and
    /// resends (once the backoff allows); never waits for an ACK.
    ///
    /// # Errors
    /// As [`SessionClient::push`].
    pub fn poll(&mut self) -> io::Result<()> {
        self.apply();
        self.check_limits()?;
        if self.conn.is_none() {
            // One attempt at most, and only when there is something to send
            // and the backoff has passed: a poll never waits for a consumer.
            let due = self.retry_at.is_none_or(|at| Instant::now() >= at);
            if self.retained.is_empty() || !due {
                return Ok(());
            }
            self.connect()?;
            if self.conn.is_none() {
                return Ok(());
            }
        }
        if self.sent < self.pushed() {
            return self.write_out();
        }
        Ok(())
    }

    /// Waits until everything pushed is acked, reconnecting and resending as
    /// needed.
    ///
    /// # Errors
    /// `TimedOut` at `deadline` or when `give_up` passed without progress,
    /// `Interrupted` on a stop.
    pub fn wait_acked(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            self.apply();
            if self.retained.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} bytes to {} not acked by the deadline",
                        self.unacked(),
                        self.addr
                    ),
                ));
            }
            self.step(deadline.min(Instant::now() + POLL))?;
        }
    }

    /// Ends the stream: closes the write side of the connection (the server
    /// sees end of stream) and waits up to `linger` for the server to close
    /// its side. Bytes not acked stay counted in [`SessionClient::unacked`].
    pub fn close(&mut self, linger: Duration) {
        if let Some(c) = self.conn.as_mut() {
            if let Some(t) = &c.tls {
                t.close(Instant::now() + linger.min(self.opts.write_timeout));
            }
            let _ = c.stream.shutdown(Both::Write);
            if self.opts.raw {
                // No reader thread: wait here for the server to close.
                let _ = c.stream.set_read_timeout(Some(POLL));
                let end = Instant::now() + linger;
                let mut buf = [0u8; 256];
                while Instant::now() < end && !self.stop.requested() {
                    match c.stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if super::is_retry(&e) => {}
                        Err(_) => break,
                    }
                }
            } else {
                let end = Instant::now() + linger;
                let mut st = self.shared.lock();
                while st.generation == self.generation
                    && st.fault.is_none()
                    && Instant::now() < end
                    && !self.stop.requested()
                {
                    st = self
                        .shared
                        .changed
                        .wait_timeout(st, POLL)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        self.disconnect();
    }

    /// One round of waiting: applies ACKs, handles a fault, reconnects and
    /// resends what is outstanding, or waits for news until `until`.
    fn step(&mut self, until: Instant) -> io::Result<()> {
        self.apply();
        self.check_limits()?;
        if self.conn.is_none() || self.sent < self.pushed() {
            return self.write_out();
        }
        // TLS records rustls took but could not write yet must go out, or
        // their ACK never comes.
        let flushed = match self.conn.as_ref().and_then(|c| c.tls.as_ref()) {
            Some(t) => t.flush(),
            None => Ok(()),
        };
        if let Err(e) = flushed {
            self.fault(&e);
            return Ok(());
        }
        let seen = self.acked - self.conn.as_ref().map_or(self.acked, |c| c.start);
        let st = self.shared.lock();
        // Wait only when nothing arrived since `apply` looked.
        if st.generation == self.generation && st.fault.is_none() && st.acked == seen {
            let wait = until.saturating_duration_since(Instant::now()).min(POLL);
            let _ = self.shared.changed.wait_timeout(st, wait);
        }
        Ok(())
    }

    /// `Interrupted` on a stop, `TimedOut` past `give_up` without progress.
    fn check_limits(&self) -> io::Result<()> {
        if self.stop.requested() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                format!(
                    "stopped with {} bytes to {} unacked",
                    self.unacked(),
                    self.addr
                ),
            ));
        }
        if let Some(limit) = self.opts.give_up {
            if !self.retained.is_empty() && self.progress_at.elapsed() >= limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no progress to {} for {limit:?}: {} bytes unacked after {} connections (last fault: {})",
                        self.addr,
                        self.unacked(),
                        self.stats.connects,
                        self.last_fault.as_deref().unwrap_or("none")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Takes what the reader published: the newest ACK, and the fault that
    /// ended the connection if any.
    fn apply(&mut self) {
        let Some(start) = self.conn.as_ref().map(|c| c.start) else {
            return;
        };
        let (acked, fault) = {
            let mut st = self.shared.lock();
            if st.generation != self.generation {
                return;
            }
            (st.acked, st.fault.take())
        };
        let logical = start.saturating_add(acked);
        let mut fault = fault;
        if logical > self.sent {
            fault = Some(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ACK at {logical} beyond the {} bytes sent", self.sent),
            ));
        } else if !self.opts.raw {
            self.release_to(logical);
        }
        if let Some(e) = fault {
            self.fault(&e);
        }
    }

    fn release_to(&mut self, logical: u64) {
        if logical > self.acked {
            let n = (logical - self.acked) as usize;
            self.retained.drain(..n);
            self.stats.acked_bytes += n as u64;
            self.acked = logical;
            self.progress_at = Instant::now();
            self.backoff = self.opts.backoff_min;
        }
    }

    /// Ends the current connection after a fault; the next attempt waits
    /// for the backoff.
    fn fault(&mut self, why: &io::Error) {
        self.stats.faults += 1;
        self.log_failure(&format!("failed: {why}"));
        self.last_fault = Some(why.to_string());
        self.disconnect();
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
    }

    /// Counts a failure of the current outage; logs only its first.
    fn log_failure(&mut self, what: &str) {
        if self.outage == 0 {
            if let Some(name) = &self.opts.log_as {
                if let Some(suppressed) = LOG_OUTAGE.allow() {
                    tracing::warn!(peer = %name, suppressed, "{name} {what}; retrying with backoff");
                }
            }
        }
        self.outage += 1;
    }

    fn disconnect(&mut self) {
        if let Some(mut c) = self.conn.take() {
            self.generation += 1;
            self.shared.lock().generation = self.generation;
            let _ = c.stream.shutdown(Both::Both);
            if let Some(r) = c.reader.take() {
                let _ = r.join();
            }
        }
        if self.opts.raw {
            // What was not counted done is written again, whole.
            self.sent = self.acked;
        }
    }

    /// Writes everything from `sent` to `pushed`, connecting first when
    /// needed, until done or a limit says stop.
    fn write_out(&mut self) -> io::Result<()> {
        let mut stalled_since = Instant::now();
        loop {
            self.apply();
            self.check_limits()?;
            if self.conn.is_none() {
                self.connect()?;
                stalled_since = Instant::now();
                continue;
            }
            if self.sent >= self.pushed() {
                return Ok(());
            }
            let from = (self.sent - self.acked) as usize;
            let (a, b) = self.retained.as_slices();
            let chunk = if from < a.len() {
                &a[from..]
            } else {
                &b[from - a.len()..]
            };
            let c = self.conn.as_mut().expect("connected above");
            let wrote = match &c.tls {
                Some(t) => t.write(chunk),
                None => c.stream.write(chunk),
            };
            match wrote {
                Ok(0) => self.fault(&io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    let (s, e) = (self.sent, self.sent + n as u64);
                    if s < self.high {
                        self.stats.resent_bytes += e.min(self.high) - s;
                    }
                    self.sent = e;
                    self.high = self.high.max(e);
                    stalled_since = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stalled_since.elapsed() >= self.opts.write_timeout {
                        self.fault(&io::Error::new(
                            io::ErrorKind::TimedOut,
                            "write made no progress",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fault(&e),
            }
        }
    }

    /// Makes a connection (after the backoff, when one is due), writes the
    /// HELLO and starts its reader. A failed attempt is counted and retried
    /// by the caller's loop.
    fn connect(&mut self) -> io::Result<()> {
        if let Some(at) = self.retry_at {
            while Instant::now() < at {
                self.check_limits()?;
                thread::sleep(at.saturating_duration_since(Instant::now()).min(POLL));
            }
        }
        match self.try_connect() {
            Ok(c) => {
                if self.stats.connects > 0 {
                    self.stats.reconnects += 1;
                }
                if self.outage > 0 {
                    if let Some(name) = &self.opts.log_as {
                        if let Some(suppressed) = LOG_OUTAGE.allow() {
                            tracing::info!(
                                peer = %name,
                                failures = self.outage,
                                suppressed,
                                "{name} connected again after {} failures",
                                self.outage
                            );
                        }
                    }
                    self.outage = 0;
                }
                self.stats.connects += 1;
                self.retry_at = None;
                self.conn = Some(c);
            }
            Err(e) => {
                self.stats.connect_failures += 1;
                self.log_failure(&format!("unreachable: {e}"));
                self.last_fault = Some(format!("connect: {e}"));
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
            }
        }
        Ok(())
    }

    fn try_connect(&mut self) -> io::Result<Conn> {
        let addr = self.addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot resolve {}", self.addr),
            )
        })?;
        let mut stream = TcpStream::connect_timeout(&addr, self.opts.connect_timeout)?;
        stream.set_nodelay(true)?;
        if let Some(k) = self.opts.keepalive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(k)
                .with_interval(k.max(Duration::from_secs(1)));
            socket2::SockRef::from(&stream).set_tcp_keepalive(&ka)?;
        }
        stream.set_write_timeout(Some(POLL))?;
        self.sent = self.acked;
        let mut tls = None;
        if let Some(t) = &self.opts.tls {
            stream.set_read_timeout(Some(POLL))?;
            stream.set_write_timeout(Some(self.opts.write_timeout))?;
            let mut r = t.connect(stream.try_clone()?, &self.addr)?;
            let deadline = Instant::now() + self.opts.connect_timeout.max(self.opts.write_timeout);
            r.handshake(deadline, &self.stop)?;
            stream.set_write_timeout(Some(POLL))?;
            tls = Some(r);
        }
        let tls_conn = tls.as_ref().map(|r| Arc::clone(r.conn()));
        if self.opts.raw {
            return Ok(Conn {
                stream,
                tls: tls_conn,
                start: self.acked,
                reader: None,
            });
        }
        // The HELLO is tiny: a fresh socket's buffer takes it whole.
        stream.set_write_timeout(Some(self.opts.write_timeout))?;
        let hello = Hello::new(&self.opts.name).to_bytes();
        match &tls_conn {
            Some(t) => t.write_all(&hello)?,
            None => stream.write_all(&hello)?,
        }
        stream.set_write_timeout(Some(POLL))?;
        stream.set_read_timeout(Some(POLL))?;
        self.generation += 1;
        {
            let mut st = self.shared.lock();
            st.generation = self.generation;
            st.acked = 0;
            st.fault = None;
        }
        let source: Box<dyn Read + Send> = match tls {
            Some(r) => Box::new(r),
            None => Box::new(stream.try_clone()?),
        };
        let reader = read_acks(source, Arc::clone(&self.shared), self.generation)?;
        Ok(Conn {
            stream,
            tls: tls_conn,
            start: self.acked,
            reader: Some(reader),
        })
    }
}

impl Drop for SessionClient {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// The reader thread of connection `generation`: parses ACKs and publishes
/// them; ends at the connection's end (publishing it as a fault) or when a
/// newer connection has replaced it.
fn read_acks(
    mut stream: Box<dyn Read + Send>,
    shared: Arc<Shared>,
    generation: u64,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("meridian-acks".into())
        .spawn(move || {
            let mut parser = AckParser::new();
            let mut buf = [0u8; 1024];
            let publish = |acked: Option<u64>, fault: Option<io::Error>| -> bool {
                let mut st = shared.lock();
                if st.generation != generation {
                    return false;
                }
                if let Some(a) = acked {
                    st.acked = a;
                }
                if fault.is_some() && st.fault.is_none() {
                    st.fault = fault;
                }
                shared.changed.notify_all();
                true
            };
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        publish(
                            None,
                            Some(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "server closed the connection",
                            )),
                        );
                        return;
                    }
                    Ok(n) => match parser.feed(&buf[..n]) {
                        Ok(a) => {
                            if a.is_some() && !publish(a, None) {
                                return;
                            }
                        }
                        Err(e) => {
                            publish(None, Some(e.into()));
                            return;
                        }
                    },
                    Err(e) if super::is_retry(&e) => {
                        if shared.lock().generation != generation {
                            return;
                        }
                    }
                    Err(e) => {
                        publish(None, Some(e));
                        return;
                    }
                }
            }
        })
}
