//! `sink`: a checking downstream. It takes its connections, decodes what
//! arrives, checks CRCs (the decoder's rules) and that no (sat, seq) arrives
//! twice, counts frames and bytes, and reports at end of stream or on a stop.
//!
//! It speaks the session protocol ([`super::session`]): a connection that
//! opens with a HELLO is a session and gets ACKs; any other is a plain
//! stream, as before. What an ACK at offset `o` means here:
//!
//! - with an output file: every frame of the connection's stream before `o`
//!   has been written to the file and the file `fdatasync`ed
//!   ([`File::sync_data`]); syncs happen at most every
//!   [`SinkOptions::sync_interval`] (shared by all connections: one sync
//!   covers every connection's frames written before it), and the ACK
//!   follows the sync at once;
//! - without an output file: every frame before `o` has been decoded and
//!   counted (there is nothing to make durable), and the ACK goes out within
//!   [`SinkOptions::ack_interval`].
//!
//! `o` is always where the decoder has consumed the stream, so never inside
//! a frame. Bytes outside frames after the last frame of a read are acked
//! with the next frame.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::session::{self, Opening};
use super::tls::{ServerTls, TlsConn};
use super::{ReadOptions, Shutdown};
use crate::decode::Decoder;
use crate::wire::{self, Header, HEADER_LEN, OVERHEAD, SYNC, VERSION};

/// Failed upstream connections (a hostile peer) are rate-limited in the log.
static LOG_FAILED: crate::log::RateLimit = crate::log::RateLimit::new(20, 10);

/// After a stop, how long connections are still read: what a sender had
/// already written is taken (and acked) rather than cut off.
const STOP_GRACE: Duration = Duration::from_millis(200);
/// What the sink saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SinkSummary {
    /// Bytes received.
    pub bytes: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Distinct (sat, seq) keys.
    pub unique_keys: u64,
    /// Frames whose (sat, seq) had arrived before.
    pub repeated_keys: u64,
    /// Complete frames with a wrong CRC.
    pub crc_errors: u64,
    /// Bytes outside frames.
    pub skipped_bytes: u64,
    /// Frames cut off at the end.
    pub truncated: u64,
    /// True when the sender closed the stream (rather than a stop).
    pub eof: bool,
    /// Connections accepted (a session's reconnect is a new connection).
    pub connections: u64,
    /// Of those, the ones that opened with a HELLO.
    pub sessions: u64,
    /// Connections closed for a bad HELLO.
    pub hello_errors: u64,
    /// Stream bytes acked, summed over the sessions.
    pub acked_bytes: u64,
    /// Bytes of a torn last frame cut from the output file at start, in
    /// append mode.
    pub repaired_bytes: u64,
}

/// Options of [`sink_with`].
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Where to write the received frames, if anywhere.
    pub out: Option<PathBuf>,
    /// Append to `out` instead of truncating it. A torn frame at its end
    /// (left by a sink that was killed mid-write) is cut first; no complete
    /// frame is ever removed, so nothing acked is lost across a restart.
    pub append: bool,
    /// Connections to take before ending; `None`: accept until stopped.
    pub connections: Option<usize>,
    /// Least time between two `fdatasync`s of `out` (`--sync-ms`, 50).
    pub sync_interval: Duration,
    /// Longest time between a session's safe offset advancing and its ACK
    /// when there is no `out` (`--ack-interval-ms`, 20).
    pub ack_interval: Duration,
    /// How long a new connection may take to show its first bytes before it
    /// is taken as a plain stream (and, with TLS, to finish its handshake).
    pub hello_timeout: Duration,
    /// TLS on the connections (`sink --tls-cert/--tls-key`, client
    /// certificates with `--tls-client-ca`); `None`: plain TCP.
    pub tls: Option<ServerTls>,
}

impl Default for SinkOptions {
    fn default() -> SinkOptions {
        SinkOptions {
            out: None,
            append: false,
            connections: Some(1),
            sync_interval: Duration::from_millis(50),
            ack_interval: session::DEFAULT_ACK_INTERVAL,
            hello_timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// Accepts `connections` connections on `listener` (one for a `serve`
/// downstream; several behind a relay) and checks each until it ends or
/// `stop` is triggered, one thread each, with one set of keys between them.
/// Frames go to `out` when given (truncated first). Sessions are ACKed; see
/// the module documentation and [`sink_with`].
///
/// # Errors
/// As [`sink_with`].
pub fn sink(
    listener: TcpListener,
    out: Option<&Path>,
    stop: &Shutdown,
    connections: usize,
) -> io::Result<SinkSummary> {
    let opts = SinkOptions {
        out: out.map(Path::to_path_buf),
        connections: Some(connections.max(1)),
        ..SinkOptions::default()
    };
    sink_with(listener, &opts, stop)
}

/// The output file, shared by the connections, with its sync state.
struct Out {
    w: BufWriter<File>,
    /// Syncs done; frames written while it was `g` are durable once it is
    /// above `g`.
    syncs: u64,
    last_sync: Instant,
    /// A sync failed. Linux reports a writeback error once, so a later
    /// "successful" sync proves nothing: nothing is acked again.
    failed: bool,
}

/// Accepts connections on `listener` until `opts.connections` were taken
/// (then closes the listener and waits for them to end) or `stop` is
/// triggered, and checks each,
/// one thread each, with one set of keys between them. Sessions are ACKed
/// as the module documentation says; plain streams are not.
///
/// # Errors
/// When `out` cannot be opened or written, or `accept` fails.
pub fn sink_with(
    listener: TcpListener,
    opts: &SinkOptions,
    stop: &Shutdown,
) -> io::Result<SinkSummary> {
    listener.set_nonblocking(true)?;
    let mut repaired = 0;
    let file = match &opts.out {
        Some(p) if opts.append => {
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(p)?;
            repaired = cut_torn_tail(&mut f)?;
            // What an earlier run wrote may never have been synced.
            if f.metadata()?.is_file() {
                f.sync_data()?;
            }
            Some(f)
        }
        Some(p) => Some(File::create(p)?),
        None => None,
    };
    let file = file.map(|f| {
        Mutex::new(Out {
            w: BufWriter::new(f),
            syncs: 0,
            last_sync: Instant::now(),
            failed: false,
        })
    });
    let keys = Mutex::new(HashSet::new());
    let total = Mutex::new(SinkSummary {
        eof: true,
        repaired_bytes: repaired,
        ..SinkSummary::default()
    });
    let mut listener = Some(listener);
    thread::scope(|scope| -> io::Result<()> {
        // Closed once the count is reached, so late connections (a session's
        // reconnect) are refused instead of left waiting.
        let Some(listener) = listener.take() else {
            return Ok(());
        };
        let mut taken = 0usize;
        while opts.connections.is_none_or(|n| taken < n.max(1)) {
            match listener.accept() {
                Ok((stream, _)) => {
                    taken += 1;
                    let (keys, total, file) = (&keys, &total, file.as_ref());
                    scope.spawn(move || {
                        let s = check_stream(stream, keys, file, stop, opts);
                        let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                        t.connections += 1;
                        match s {
                            Ok(s) => t.add(&s),
                            Err(e) => {
                                if e.get_ref().is_some_and(|i| i.is::<session::SessionError>()) {
                                    t.hello_errors += 1;
                                }
                                if let Some(suppressed) = LOG_FAILED.allow() {
                                    tracing::warn!(error = %e, suppressed, "sink: connection failed");
                                }
                            }
                        }
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stop.requested() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        drop(listener);
        Ok(())
    })?;
    if let Some(f) = file {
        let mut o = f.into_inner().unwrap_or_else(|p| p.into_inner());
        o.w.flush()?;
        o.w.get_ref().sync_data()?;
    }
    let mut t = total.into_inner().unwrap_or_else(|p| p.into_inner());
    t.unique_keys = keys.into_inner().unwrap_or_else(|p| p.into_inner()).len() as u64;
    Ok(t)
}

impl SinkSummary {
    fn add(&mut self, s: &SinkSummary) {
        self.bytes += s.bytes;
        self.frames += s.frames;
        self.repeated_keys += s.repeated_keys;
        self.crc_errors += s.crc_errors;
        self.skipped_bytes += s.skipped_bytes;
        self.truncated += s.truncated;
        self.eof &= s.eof;
        self.sessions += s.sessions;
        self.acked_bytes += s.acked_bytes;
    }
}

type Keys = Mutex<HashSet<(u32, u64)>>;

/// A session's ACK bookkeeping, run from the connection's thread.
struct Acker<'a> {
    stream: &'a TcpStream,
    /// With TLS, ACKs go through it.
    tls: Option<Arc<TlsConn>>,
    file: Option<&'a Mutex<Out>>,
    sync_interval: Duration,
    ack_interval: Duration,
    /// The consumed offset whose frames have been handed to `file` (or
    /// counted, without one).
    written: u64,
    /// `Out::syncs` when `written` last advanced.
    written_at_sync: u64,
    /// The offset last ACKed.
    acked: u64,
    last_ack: Instant,
    /// Set when an ACK could not be sent: the connection is over.
    broken: bool,
}

impl Acker<'_> {
    /// Sends the ACK that is due, if any (with `force`, regardless of the
    /// intervals). Returns false once the connection is broken.
    fn poll(&mut self, force: bool) -> bool {
        if self.broken || self.written <= self.acked {
            return !self.broken;
        }
        let safe = match self.file {
            None => {
                if !force && self.last_ack.elapsed() < self.ack_interval / 2 {
                    return true;
                }
                self.written
            }
            Some(f) => {
                let mut o = f.lock().unwrap_or_else(|p| p.into_inner());
                if o.failed {
                    self.broken = true;
                    return false;
                }
                if o.syncs <= self.written_at_sync {
                    if !force && o.last_sync.elapsed() < self.sync_interval {
                        return true;
                    }
                    let synced = o.w.flush().and_then(|()| o.w.get_ref().sync_data());
                    if let Err(e) = synced {
                        tracing::error!(error = %e, "sink: syncing the output failed; acking nothing more");
                        o.failed = true;
                        self.broken = true;
                        return false;
                    }
                    o.syncs += 1;
                    o.last_sync = Instant::now();
                }
                self.written
            }
        };
        let ack = session::encode_ack(safe);
        let wrote = match &self.tls {
            Some(t) => t.write_all(&ack),
            None => {
                let mut s = self.stream;
                s.write_all(&ack)
            }
        };
        if wrote.is_err() {
            self.broken = true;
            return false;
        }
        self.acked = safe;
        self.last_ack = Instant::now();
        true
    }
}

fn check_stream(
    mut stream: TcpStream,
    keys: &Keys,
    file: Option<&Mutex<Out>>,
    stop: &Shutdown,
    opts: &SinkOptions,
) -> io::Result<SinkSummary> {
    let mut tls = match &opts.tls {
        Some(server) => {
            stream.set_read_timeout(Some(Duration::from_millis(20)))?;
            stream.set_write_timeout(Some(Duration::from_secs(1)))?;
            let mut r = server.accept(stream.try_clone()?)?;
            r.handshake(Instant::now() + opts.hello_timeout, stop)?;
            Some(r)
        }
        None => None,
    };
    let deadline = Instant::now() + opts.hello_timeout;
    let (opening, prefix) = match &mut tls {
        Some(r) => session::read_opening_from(r, deadline, stop)?,
        None => session::read_opening(&mut stream, deadline, stop)?,
    };
    let is_session = matches!(opening, Opening::Session { .. });
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let ack_every = opts.ack_interval.max(Duration::from_millis(2));
    let acker = RefCell::new(Acker {
        stream: &stream,
        tls: tls.as_ref().map(|r| Arc::clone(r.conn())),
        file,
        sync_interval: opts.sync_interval,
        ack_interval: ack_every,
        written: 0,
        written_at_sync: 0,
        acked: 0,
        last_ack: Instant::now(),
        broken: false,
    });
    let mut idle = || acker.borrow_mut().poll(false);
    let mut written = Ok(());
    let mut summary = SinkSummary::default();
    let read_opts = ReadOptions {
        decoder: Decoder::new(u16::MAX),
        chunk: 4096,
        grace: STOP_GRACE,
        poll: if is_session {
            (ack_every / 2).min(super::POLL)
        } else {
            super::POLL
        },
    };
    let mut plain = &stream;
    let src: &mut dyn io::Read = match &mut tls {
        Some(r) => r,
        None => &mut plain,
    };
    let (eof, d) = super::read_frames_after(
        &stream,
        src,
        prefix,
        read_opts,
        stop,
        if is_session { Some(&mut idle) } else { None },
        |batch, decoded, _| {
            let consumed = decoded.input_bytes;
            let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
            for i in 0..batch.len() {
                if !k.insert((batch.sat[i], batch.seq[i])) {
                    summary.repeated_keys += 1;
                }
            }
            drop(k);
            let mut a = acker.borrow_mut();
            if let Some(f) = file {
                let mut o = f.lock().unwrap_or_else(|p| p.into_inner());
                written = o.w.write_all(&batch.buf);
                a.written_at_sync = o.syncs;
            }
            if written.is_ok() {
                a.written = consumed;
            }
            written.is_ok()
        },
    )?;
    written?;
    let mut a = acker.into_inner();
    if is_session {
        // The last frames: ACK them now, so a sender waiting for its ACKs
        // before closing is not held up.
        a.poll(true);
    }
    summary.eof = eof;
    summary.bytes = d.input_bytes;
    summary.frames = d.frames_decoded;
    summary.crc_errors = d.crc_errors;
    summary.skipped_bytes = d.skipped_bytes;
    summary.truncated = d.truncated;
    summary.sessions = u64::from(is_session);
    summary.acked_bytes = a.acked;
    Ok(summary)
}

/// Cuts a torn last frame from an output file about to be appended to:
/// walks the whole frames from the start; where they stop, if what is left
/// is shorter than one largest frame and holds no complete frame, it is a
/// frame a killed sink was writing, and is cut. Returns the bytes cut.
pub(crate) fn cut_torn_tail(f: &mut File) -> io::Result<u64> {
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(0))?;
    let mut r = io::BufReader::with_capacity(1 << 20, &*f);
    let mut at = 0u64;
    let mut frame = Vec::new();
    loop {
        let mut head = [0u8; HEADER_LEN];
        if len - at < HEADER_LEN as u64 || r.read_exact(&mut head).is_err() {
            break;
        }
        let h = Header::read(&head);
        if head[..4] != SYNC || h.version != VERSION || len - at < h.frame_len() as u64 {
            break;
        }
        frame.clear();
        frame.extend_from_slice(&head);
        frame.resize(h.frame_len(), 0);
        r.read_exact(&mut frame[HEADER_LEN..])?;
        let crc_at = frame.len() - wire::CRC_LEN;
        if wire::frame_crc(&frame[..crc_at]) != wire::stored_crc(&frame) {
            break;
        }
        at += frame.len() as u64;
    }
    drop(r);
    let rest = len - at;
    if rest == 0 || rest >= (OVERHEAD + u16::MAX as usize) as u64 {
        return Ok(0);
    }
    let mut tail = Vec::with_capacity(rest as usize);
    f.seek(SeekFrom::Start(at))?;
    f.read_to_end(&mut tail)?;
    let mut d = Decoder::new(u16::MAX);
    let mut b = crate::batch::Batch::default();
    d.decode(&tail, true, &mut b, usize::MAX);
    if !b.is_empty() {
        return Ok(0);
    }
    f.set_len(at)?;
    f.sync_data()?;
    Ok(rest)
}
