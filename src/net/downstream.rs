//! Where `serve` delivers: a session downstream (HELLO/ACK, the default for
//! `--forward`), a plain TCP downstream (`--forward-raw`), or a file
//! (`--out`), behind one interface whose positions are logical: bytes
//! handed to [`Downstream::send`] since start, in order.
//!
//! [`Downstream::delivered`] is the position up to which every byte is
//! safe at the next hop: acked by a session downstream (written and
//! fdatasync'd there, when it is a `sink --out`), written into a plain
//! downstream's socket (no receipt: at-most-once past that point), or
//! written and fdatasync'd into the file. `serve` ACKs its stations only up
//! to what was delivered.
//!
//! Nothing is dropped here: a failing downstream keeps its bytes (the
//! session client up to `--unacked-bytes`, then `send` blocks; the file
//! retries its write with backoff), and `send` returns an error only once
//! the hard stop (drain deadline or a second signal) has come.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{ClientOptions, ClientStats, SessionClient};
use super::tls::ClientTls;
use super::Shutdown;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// Counters of the downstream, whatever its kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DownstreamStats {
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Bytes sent again after a reconnect (from the last ACK).
    pub resent_bytes: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Failures of an established downstream: a reset, a write with no
    /// progress for `--downstream-timeout-ms`, a file write or sync error.
    pub failures: u64,
}

/// How to open a [`Downstream`].
#[derive(Debug, Clone)]
pub enum Target {
    /// A session downstream at HOST:PORT (HELLO, ACKs, resend from the last ACK).
    Forward(String),
    /// A plain TCP downstream at HOST:PORT: written counts as delivered.
    ForwardRaw(String),
    /// A file, appended to (or truncated first with `truncate`).
    Out {
        /// The file.
        path: PathBuf,
        /// Start it empty instead of appending.
        truncate: bool,
    },
}

/// A downstream.
#[derive(Debug)]
pub enum Downstream {
    /// A TCP consumer, through the session client (raw or not).
    Tcp(Box<SessionClient>),
    /// A file.
    File(FileOut),
}

impl Downstream {
    /// Opens the target. A TCP downstream connects on the first send; a
    /// file is opened now. `hard_stop` is the stop that ends all retrying.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(
        target: &Target,
        name: &str,
        max_unacked: usize,
        timeout: Duration,
        sync_every: Duration,
        tls: Option<ClientTls>,
        hard_stop: Arc<Shutdown>,
    ) -> io::Result<Downstream> {
        let client = |addr: &String, raw: bool| {
            let opts = ClientOptions {
                name: name.to_string(),
                raw,
                write_timeout: timeout,
                max_unacked,
                give_up: None,
                log_as: Some(format!("downstream {addr}")),
                tls: tls.clone(),
                ..ClientOptions::default()
            };
            Downstream::Tcp(Box::new(SessionClient::new(addr, opts, hard_stop.clone())))
        };
        Ok(match target {
            Target::Forward(addr) => client(addr, false),
            Target::ForwardRaw(addr) => client(addr, true),
            Target::Out { path, truncate } => {
                Downstream::File(FileOut::open(path, *truncate, sync_every, hard_stop)?)
            }
        })
    }

    /// Hands over one batch's output. Returns once it is written (a TCP
    /// downstream: once it is in the socket, or retained within
    /// `max_unacked` while the consumer is away).
    ///
    /// # Errors
    /// Only after the hard stop: the bytes are then counted undelivered.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Downstream::Tcp(c) => c.push(bytes),
            Downstream::File(f) => f.write(bytes),
        }
    }

    /// Does what is due without waiting: applies ACKs, reconnects, syncs.
    ///
    /// # Errors
    /// Only after the hard stop.
    pub fn poll(&mut self) -> io::Result<()> {
        match self {
            Downstream::Tcp(c) => c.poll(),
            Downstream::File(f) => {
                f.poll(false);
                Ok(())
            }
        }
    }

    /// The logical position up to which everything is delivered.
    pub fn delivered(&self) -> u64 {
        match self {
            Downstream::Tcp(c) => c.acked(),
            Downstream::File(f) => f.synced,
        }
    }

    /// True once a TCP downstream has connected at least once; a file: always.
    pub fn connected_once(&self) -> bool {
        match self {
            Downstream::Tcp(c) => c.stats().connects > 0,
            Downstream::File(_) => true,
        }
    }

    /// Bytes handed over so far.
    pub fn sent(&self) -> u64 {
        match self {
            Downstream::Tcp(c) => c.pushed(),
            Downstream::File(f) => f.written + f.pending.len() as u64,
        }
    }

    /// Delivers what is outstanding, waiting until `deadline` at most, then
    /// closes cleanly (a TCP consumer sees end of stream).
    pub fn finish(&mut self, deadline: Instant) {
        match self {
            Downstream::Tcp(c) => {
                let _ = c.wait_acked(deadline);
                let linger = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                c.close(linger.min(Duration::from_secs(2)));
            }
            Downstream::File(f) => {
                while f.synced < f.written + f.pending.len() as u64
                    && !f.sync_failed
                    && Instant::now() < deadline
                    && !f.hard_stop.requested()
                {
                    f.poll(true);
                    if f.synced < f.written + f.pending.len() as u64 {
                        std::thread::sleep(BACKOFF_MIN);
                    }
                }
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> DownstreamStats {
        match self {
            Downstream::Tcp(c) => {
                let s: ClientStats = c.stats();
                DownstreamStats {
                    reconnects: s.reconnects,
                    resent_bytes: s.resent_bytes,
                    connect_failures: s.connect_failures,
                    failures: s.faults,
                }
            }
            Downstream::File(f) => DownstreamStats {
                failures: f.failures,
                ..DownstreamStats::default()
            },
        }
    }
}

/// An append-only output file, written per batch and fdatasync'd at most
/// every `sync_every`.
#[derive(Debug)]
pub struct FileOut {
    file: File,
    path: PathBuf,
    /// Bytes written by this run (logical positions).
    written: u64,
    /// Bytes written and synced by this run.
    synced: u64,
    /// The file's length before this run's first byte.
    base: u64,
    /// Bytes handed over but not yet written (after a write error).
    pending: Vec<u8>,
    last_sync: Instant,
    sync_every: Duration,
    failures: u64,
    backoff: Duration,
    retry_at: Instant,
    hard_stop: Arc<Shutdown>,
    reported: bool,
    /// A sync failed: Linux reports a writeback error once, so a later
    /// "successful" sync would not prove the lost pages were stored. Nothing
    /// written after the last good sync is ever counted delivered again.
    sync_failed: bool,
}

impl FileOut {
    /// Opens `path` for appending (or truncates it first). A torn last frame
    /// left by a crash is cut off first, so appended frames do not follow a
    /// fragment.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(
        path: &Path,
        truncate: bool,
        sync_every: Duration,
        hard_stop: Arc<Shutdown>,
    ) -> io::Result<FileOut> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(truncate)
            .open(path)?;
        if !truncate {
            super::sink::cut_torn_tail(&mut file)?;
        }
        // What an earlier run wrote may still be only in the page cache; the
        // window is rebuilt from it and stations are acked against it. (A
        // device such as /dev/full cannot be synced; its writes will fail.)
        if file.metadata()?.is_file() {
            file.sync_data()?;
        }
        let base = file.seek(SeekFrom::End(0))?;
        Ok(FileOut {
            file,
            path: path.to_path_buf(),
            written: 0,
            synced: 0,
            base,
            pending: Vec::new(),
            last_sync: Instant::now(),
            sync_every,
            failures: 0,
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
            hard_stop,
            reported: false,
            sync_failed: false,
        })
    }

    /// Writes `bytes` after what is pending, retrying a failed write with
    /// backoff until it succeeds or the hard stop comes.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        loop {
            if self.try_write_pending() {
                self.poll(false);
                return Ok(());
            }
            if self.hard_stop.requested() {
                return Err(io::Error::other(format!(
                    "{} bytes could not be written to {}",
                    self.pending.len(),
                    self.path.display()
                )));
            }
            std::thread::sleep(
                self.retry_at
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20)),
            );
        }
    }

    /// One attempt at writing everything pending; true when done.
    fn try_write_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        if Instant::now() < self.retry_at {
            return false;
        }
        let at = self.base + self.written;
        let res = self
            .file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.write_all(&self.pending));
        match res {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
                self.backoff = BACKOFF_MIN;
                if self.reported {
                    tracing::info!(path = %self.path.display(), "writing to {} works again", self.path.display());
                    self.reported = false;
                }
                true
            }
            Err(e) => {
                // A partial write is undone, so a retry does not follow a fragment.
                let _ = self.file.set_len(at);
                self.fail(&e);
                false
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        self.failures += 1;
        if !self.reported {
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "writing to {} failed; keeping the frames and retrying",
                self.path.display()
            );
            self.reported = true;
        }
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Retries a pending write and syncs when due (or now, with `force`).
    fn poll(&mut self, force: bool) {
        self.try_write_pending();
        if self.sync_failed {
            return;
        }
        if self.written > self.synced && (force || self.last_sync.elapsed() >= self.sync_every) {
            match self.file.sync_data() {
                Ok(()) => {
                    self.synced = self.written;
                    self.last_sync = Instant::now();
                }
                Err(e) => {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "syncing {} failed; nothing more will be acked (restart to recover)",
                        self.path.display()
                    );
                    self.failures += 1;
                    self.sync_failed = true;
                }
            }
        }
    }
}
