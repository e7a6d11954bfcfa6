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

pub mod downstream;
pub mod send;
pub mod serve;
pub mod sink;

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::decode::Decoder;

/// How often a blocked read looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(20);
/// Bytes asked of a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How the TCP commands learn they should stop: SIGINT or SIGTERM, or a
/// test calling [`Shutdown::trigger`].
#[derive(Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    at: OnceLock<Instant>,
}

impl Shutdown {
    /// A shutdown that SIGINT and SIGTERM trigger.
    pub fn on_signals() -> std::io::Result<Arc<Shutdown>> {
        let s = Arc::new(Shutdown::default());
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&s.flag))?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&s.flag))?;
        Ok(s)
    }

    /// Asks everything to stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// True once a stop was asked for; the first call that sees it starts the
    /// grace period.
    pub fn requested(&self) -> bool {
        let on = self.flag.load(Ordering::SeqCst);
        if on {
            self.at.get_or_init(Instant::now);
        }
        on
    }

    /// True when a stop was asked for more than `grace` ago.
    pub fn past(&self, grace: Duration) -> bool {
        self.requested() && self.at.get().is_some_and(|t| t.elapsed() >= grace)
    }
}

/// Reads `stream` to its end, decoding as it goes, and hands every chunk of
/// up to `chunk` decoded frames to `each` with the time its last bytes were
/// read; `each` may take the batch (it gets a fresh one) and returns false to
/// stop. The stream ends at end of file, at a reset (a frame cut off then
/// counts as truncated), or once a stop was asked for more than `grace` ago.
/// Returns true when the peer ended it, false on a stop. The read buffer is
/// one maximal frame plus one read, whatever arrives.
pub(crate) fn read_frames(
    stream: &mut TcpStream,
    decoder: &mut Decoder,
    chunk: usize,
    stop: &Shutdown,
    grace: Duration,
    mut each: impl FnMut(&mut Batch, Instant) -> bool,
) -> io::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut buf = vec![0u8; decoder.max_frame_len() + READ_CHUNK];
    let (mut start, mut end) = (0usize, 0usize);
    let mut batch = Batch::default();
    let (mut eof, mut by_peer) = (false, false);
    while !eof {
        match stream.read(&mut buf[end..]) {
            Ok(0) => (eof, by_peer) = (true, true),
            Ok(n) => end += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !stop.past(grace) {
                    continue;
                }
                eof = true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => (eof, by_peer) = (true, true),
        }
        let read_at = Instant::now();
        loop {
            batch.clear();
            start += decoder.decode(&buf[start..end], eof, &mut batch, chunk);
            let full = batch.len() == chunk;
            if !batch.is_empty() && !each(&mut batch, read_at) {
                return Ok(by_peer);
            }
            if !full {
                break;
            }
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
    }
    Ok(by_peer)
}
