//! The TCP side: `serve` takes frames from many ground stations and forwards
//! them downstream, `sink` is a checking downstream, and `send` is `gen
//! --connect`, which plays stations.
//!
//! Threads, not async: one per station connection (each decodes its own
//! stream, so a frame split across reads is normal and a slow, idle or
//! hostile station holds only its own thread), one accepting, and the
//! pipeline on the calling thread. Stations hand decoded chunks to the
//! pipeline over a bounded channel: when the pipeline or the downstream is
//! slow, the channel fills, station threads block in `send`, stop reading,
//! and TCP flow control pushes back on the stations. Memory stays bounded by
//! the channel's capacity, one read buffer per connection and the
//! downstream's replay buffer.

pub mod admin;
pub mod auth;
pub mod client;
pub mod downstream;
pub mod metrics;
pub mod send;
pub mod serve;
pub mod session;
pub mod sink;
pub mod tls;

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::decode::{DecodeStats, Decoder, FrameReader};

/// True for an error that means "nothing happened yet, try again": a
/// socket timeout (`WouldBlock` or `TimedOut`, as the platform reports it)
/// or an interrupted call.
pub(crate) fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// How often a blocked read looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(20);
/// Bytes asked of a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How the TCP commands learn they should stop: SIGINT or SIGTERM, or a
/// test calling [`Shutdown::trigger`]. It counts requests: the first starts
/// an orderly stop (its deadlines count from when it is first seen), a
/// second one asks to hurry ([`Shutdown::hurried`]: give up what is left).
#[derive(Debug, Default)]
pub struct Shutdown {
    count: Arc<AtomicUsize>,
    at: OnceLock<Instant>,
}

impl Shutdown {
    /// A shutdown that SIGINT and SIGTERM trigger.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn on_signals() -> std::io::Result<Arc<Shutdown>> {
        let s = Arc::new(Shutdown::default());
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let count = Arc::clone(&s.count);
            // SAFETY: the handler only increments an atomic integer, which
            // is async-signal-safe; it allocates, locks and prints nothing.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    count.fetch_add(1, Ordering::SeqCst);
                })?;
            }
        }
        Ok(s)
    }

    /// Asks everything to stop (a second call asks to hurry).
    pub fn trigger(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// True once a stop was asked for; the first call that sees it starts the
    /// grace period.
    pub fn requested(&self) -> bool {
        let on = self.count.load(Ordering::SeqCst) > 0;
        if on {
            self.at.get_or_init(Instant::now);
        }
        on
    }

    /// True once a stop was asked for twice: leave now.
    pub fn hurried(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 1
    }

    /// True when a stop was asked for more than `grace` ago.
    pub fn past(&self, grace: Duration) -> bool {
        self.requested() && self.at.get().is_some_and(|t| t.elapsed() >= grace)
    }
}

/// A station's socket as a [`Read`] that ends (returns 0) at end of file,
/// at a reset, or once a stop was asked for more than `grace` ago, and
/// otherwise waits, looking at the stop flag every time the socket's read
/// timeout passes. Bytes in `prefix` (read before, e.g. with a session's
/// opening) come first. `idle`, when given, runs before every read and at
/// every timeout; it returns false to end the stream.
struct Link<'a> {
    src: &'a mut (dyn Read + 'a),
    prefix: io::Cursor<Vec<u8>>,
    stop: &'a Shutdown,
    grace: Duration,
    idle: Option<&'a mut (dyn FnMut() -> bool + 'a)>,
    /// True when the peer ended the stream (end of file or reset).
    by_peer: bool,
}

impl Link<'_> {
    fn idle_ok(&mut self) -> bool {
        self.idle.as_mut().is_none_or(|f| f())
    }
}

impl Read for Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prefix.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        loop {
            // Looked at before every read, so a station that never pauses
            // still stops at the grace period.
            if self.stop.past(self.grace) {
                return Ok(0);
            }
            if !self.idle_ok() {
                break;
            }
            match self.src.read(buf) {
                Ok(0) => break,
                Ok(n) => return Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.stop.past(self.grace) {
                        return Ok(0);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // reset: a frame cut off counts as truncated
            }
        }
        self.by_peer = true;
        Ok(0)
    }
}

/// How [`read_frames_after`] reads.
pub(crate) struct ReadOptions {
    /// The connection's decoder.
    pub(crate) decoder: Decoder,
    /// Most frames handed over at a time.
    pub(crate) chunk: usize,
    /// How long a stop waits for the peer.
    pub(crate) grace: Duration,
    /// The socket's read timeout: how often the stop flag and `idle` run
    /// while nothing arrives.
    pub(crate) poll: Duration,
}

/// Reads `stream` to its end through a [`FrameReader`], handing every chunk
/// of up to `chunk` decoded frames to `each` as soon as a read yields it, for a stream whose first bytes were already read
/// (`prefix`, e.g. the leftover of a session's opening), with an `idle`
/// hook that runs before every read and at every read timeout (it returns
/// false to end the stream), and `each` told the decoder's counters so far,
/// whose `input_bytes` is the stream offset the decoder has consumed up to
/// (counted from the first byte of `prefix`): every frame before it has
/// been handed over, and it never falls inside a frame.
///
/// `sock` is the socket under `src` (the socket itself, or the TLS stream
/// over it): its timeouts are set here.
pub(crate) fn read_frames_after<'a>(
    sock: &'a TcpStream,
    src: &'a mut (dyn Read + 'a),
    prefix: Vec<u8>,
    opts: ReadOptions,
    stop: &'a Shutdown,
    idle: Option<&'a mut (dyn FnMut() -> bool + 'a)>,
    mut each: impl FnMut(&mut Batch, &DecodeStats, Instant) -> bool,
) -> io::Result<(bool, DecodeStats)> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(opts.poll.max(Duration::from_millis(1))))?;
    let mut link = Link {
        src,
        prefix: io::Cursor::new(prefix),
        stop,
        grace: opts.grace,
        idle,
        by_peer: false,
    };
    let mut reader = FrameReader::new(&mut link, opts.decoder, READ_CHUNK);
    let mut batch = Batch::default();
    while reader.fill_some(&mut batch, opts.chunk)? > 0 {
        let stats = reader.stats();
        if !each(&mut batch, &stats, Instant::now()) {
            break;
        }
    }
    let stats = reader.stats();
    drop(reader);
    Ok((link.by_peer, stats))
}
