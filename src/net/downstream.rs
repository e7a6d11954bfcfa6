//! Where `serve` forwards to: a TCP consumer, reconnected with backoff, or a
//! file.
//!
//! TCP gives no delivery receipt: bytes a consumer's kernel accepted are
//! lost if the consumer dies before reading them. So the last
//! [`REPLAY_BYTES`] of forwarded output are kept, and after every reconnect
//! they are sent again before anything new: at-least-once across a
//! consumer restart, with the frames sent again counted in `resent_frames`.
//! While the consumer is away, `send` keeps retrying and does not return, so
//! the pipeline stops taking frames and the stations are pushed back.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::Shutdown;

/// Recent output kept for resending after a reconnect; well above the socket
/// buffers a lost consumer can have swallowed.
pub const REPLAY_BYTES: usize = 32 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Counters of the downstream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DownstreamStats {
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Frames sent again after a reconnect.
    pub resent_frames: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
}

/// A downstream.
#[derive(Debug)]
pub enum Downstream {
    /// A TCP consumer.
    Tcp(TcpDownstream),
    /// A file.
    File(BufWriter<File>),
}

/// A TCP consumer with reconnects and a replay buffer.
#[derive(Debug)]
pub struct TcpDownstream {
    addr: String,
    conn: Option<TcpStream>,
    connected_once: bool,
    replay: VecDeque<(Vec<u8>, u64)>,
    replay_bytes: usize,
    stats: DownstreamStats,
}

impl Downstream {
    /// A TCP downstream; it connects on the first send.
    pub fn tcp(addr: &str) -> Downstream {
        Downstream::Tcp(TcpDownstream {
            addr: addr.to_string(),
            conn: None,
            connected_once: false,
            replay: VecDeque::new(),
            replay_bytes: 0,
            stats: DownstreamStats::default(),
        })
    }

    /// A file downstream, created now.
    pub fn file(path: &Path) -> io::Result<Downstream> {
        Ok(Downstream::File(BufWriter::with_capacity(
            1 << 20,
            File::create(path)?,
        )))
    }

    /// The counters.
    pub fn stats(&self) -> DownstreamStats {
        match self {
            Downstream::Tcp(t) => t.stats,
            Downstream::File(_) => DownstreamStats::default(),
        }
    }

    /// Sends one batch's output (`frames` frames). Returns only once it is
    /// written, or with an error when a stop was asked for more than `give_up`
    /// ago and the consumer is still away.
    pub fn send(
        &mut self,
        bytes: &[u8],
        frames: u64,
        stop: &Shutdown,
        give_up: Duration,
    ) -> io::Result<()> {
        match self {
            Downstream::File(f) => f.write_all(bytes),
            Downstream::Tcp(t) => t.send(bytes, frames, stop, give_up),
        }
    }

    /// Flushes and closes cleanly (the consumer sees end of stream).
    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            Downstream::File(f) => f.flush(),
            Downstream::Tcp(t) => {
                if let Some(c) = t.conn.take() {
                    let mut c = c;
                    c.flush()?;
                    c.shutdown(std::net::Shutdown::Write)?;
                    // Wait for the consumer to close its side, so everything was read.
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = io::copy(&mut c, &mut io::sink());
                }
                Ok(())
            }
        }
    }
}

impl TcpDownstream {
    fn connect(&mut self) -> io::Result<TcpStream> {
        let addr = self.addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot resolve {}", self.addr),
            )
        })?;
        let c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        c.set_nodelay(true)?;
        Ok(c)
    }

    fn send(
        &mut self,
        bytes: &[u8],
        frames: u64,
        stop: &Shutdown,
        give_up: Duration,
    ) -> io::Result<()> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.conn.is_none() {
                match self.connect() {
                    Ok(mut c) => {
                        let mut ok = true;
                        if self.connected_once {
                            self.stats.reconnects += 1;
                            for (old, n) in &self.replay {
                                if c.write_all(old).is_err() {
                                    ok = false;
                                    break;
                                }
                                self.stats.resent_frames += n;
                            }
                        }
                        self.connected_once = true;
                        if ok {
                            self.conn = Some(c);
                        }
                    }
                    Err(e) => {
                        self.stats.connect_failures += 1;
                        if stop.past(give_up) {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("downstream {} unreachable at shutdown: {e}", self.addr),
                            ));
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let Some(c) = self.conn.as_mut() else {
                continue;
            };
            match c.write_all(bytes) {
                Ok(()) => break,
                Err(_) => {
                    // What the consumer got of this batch is unknown: reconnect,
                    // resend the replay, then this batch whole.
                    self.conn = None;
                }
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.replay.push_back((bytes.to_vec(), frames));
        self.replay_bytes += bytes.len();
        while self.replay_bytes > REPLAY_BYTES {
            let (old, _) = self.replay.pop_front().expect("bytes counted");
            self.replay_bytes -= old.len();
        }
        Ok(())
    }
}
