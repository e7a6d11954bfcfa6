//! The session protocol, version 1: how a sender learns which of its bytes
//! are safe at the next hop.
//!
//! ```text
//! HELLO  client -> server, the first bytes of a connection:
//!        "MRDH" (4D 52 44 48), u8 version = 1, u8 name length n (0..=64),
//!        n bytes of UTF-8 name.
//!        The frame stream starts right after it; stream offsets count from
//!        its first byte.
//! ACK    server -> client: "MRDA" (4D 52 44 41), u64 little-endian offset:
//!        every byte of this connection's frame stream before `offset` is
//!        safe at the server's next hop. Offsets never decrease, and fall
//!        where the server's decoder has consumed the stream (never inside a
//!        frame).
//! ```
//!
//! A connection whose first 4 bytes are not "MRDH" is a plain stream: no
//! ACKs (at-most-once). After a fault the client reconnects, sends HELLO
//! again and resends everything after its last ACK; offsets restart at 0 on
//! the new connection, and the copies that result are removed downstream by
//! dedup.
//!
//! This module is the codec: [`Hello`], [`parse_opening`] and
//! [`read_opening`] for the server side, [`encode_ack`] and [`AckParser`] for
//! the two directions of ACKs. [`super::client::SessionClient`] is the
//! sending side built on it.

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Shutdown;

/// The magic that opens a session: "MRDH".
pub const HELLO_MAGIC: [u8; 4] = *b"MRDH";
/// The magic that opens an ACK: "MRDA".
pub const ACK_MAGIC: [u8; 4] = *b"MRDA";
/// The only protocol version.
pub const PROTOCOL_VERSION: u8 = 1;
/// The longest name a HELLO may carry, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Bytes of a HELLO before its name.
pub const HELLO_FIXED_LEN: usize = 6;
/// Bytes of an ACK.
pub const ACK_LEN: usize = 12;
/// Default longest time between a server's safe offset advancing and its
/// ACK (`--ack-interval-ms`).
pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_millis(20);

/// How often [`read_opening`] looks at its deadline and the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// A violation of the session protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// A HELLO with a version other than [`PROTOCOL_VERSION`].
    BadVersion(u8),
    /// A HELLO whose name length is above [`MAX_NAME_LEN`].
    NameTooLong(usize),
    /// A HELLO whose name is not UTF-8.
    InvalidName,
    /// Bytes from the server that are not an ACK.
    BadAck,
    /// An ACK whose offset is below an earlier one.
    AckWentBack {
        /// The earlier offset.
        before: u64,
        /// The new, smaller offset.
        now: u64,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::BadVersion(v) => write!(f, "HELLO with unknown version {v}"),
            SessionError::NameTooLong(n) => {
                write!(f, "HELLO name of {n} bytes (at most {MAX_NAME_LEN})")
            }
            SessionError::InvalidName => write!(f, "HELLO name is not UTF-8"),
            SessionError::BadAck => write!(f, "reply is not an ACK"),
            SessionError::AckWentBack { before, now } => {
                write!(f, "ACK offset went back from {before} to {now}")
            }
        }
    }
}

impl std::error::Error for SessionError {}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The opening of a session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// Who the client is (a station name), at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
}

impl Hello {
    /// A HELLO for `name`, cut to at most [`MAX_NAME_LEN`] bytes at a
    /// character boundary.
    pub fn new(name: &str) -> Hello {
        let mut end = name.len().min(MAX_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Hello {
            name: name[..end].to_string(),
        }
    }

    /// Appends the HELLO's bytes to `out`. A name longer than
    /// [`MAX_NAME_LEN`] bytes (possible only by building the struct by hand)
    /// is cut there, at a character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let name = Hello::new(&self.name).name;
        out.extend_from_slice(&HELLO_MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }

    /// The HELLO's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HELLO_FIXED_LEN + self.name.len());
        self.encode(&mut v);
        v
    }
}

/// What the first bytes of a connection say, as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A session: its HELLO took the first `len` bytes; the frame stream
    /// starts at byte `len`.
    Session {
        /// The HELLO.
        hello: Hello,
        /// Bytes of the HELLO.
        len: usize,
    },
    /// A plain stream: every byte, from the first, belongs to the frame
    /// stream.
    Plain,
    /// Not decided yet: the bytes so far are a prefix of a HELLO.
    NeedMore,
}

/// Decides what a connection is from its first bytes (`bytes` is all that
/// arrived so far, from the first byte). A byte that differs from "MRDH"
/// decides `Plain` at once, without waiting for four bytes.
///
/// # Errors
/// A HELLO with a bad version, a name over [`MAX_NAME_LEN`] bytes or a
/// name that is not UTF-8.
pub fn parse_opening(bytes: &[u8]) -> Result<Opening, SessionError> {
    let magic = bytes.len().min(HELLO_MAGIC.len());
    if bytes[..magic] != HELLO_MAGIC[..magic] {
        return Ok(Opening::Plain);
    }
    if bytes.len() < HELLO_FIXED_LEN {
        return Ok(Opening::NeedMore);
    }
    if bytes[4] != PROTOCOL_VERSION {
        return Err(SessionError::BadVersion(bytes[4]));
    }
    let n = bytes[5] as usize;
    if n > MAX_NAME_LEN {
        return Err(SessionError::NameTooLong(n));
    }
    let Some(name) = bytes.get(HELLO_FIXED_LEN..HELLO_FIXED_LEN + n) else {
        return Ok(Opening::NeedMore);
    };
    let name = std::str::from_utf8(name).map_err(|_| SessionError::InvalidName)?;
    Ok(Opening::Session {
        hello: Hello {
            name: name.to_string(),
        },
        len: HELLO_FIXED_LEN + n,
    })
}

/// Reads the opening of a connection from `stream`, until it is decided,
/// `deadline` passes or `stop` is triggered. Returns the opening and the
/// bytes read past it, which belong to the frame stream: chain them in
/// front of the socket (`io::Cursor::new(leftover).chain(stream)`).
///
/// A plain stream's leftover is everything read, from the first byte. A
/// peer that closes before the opening is decided is a plain stream (its
/// leftover, if any, is the whole stream). At the deadline or a stop the
/// opening is [`Opening::NeedMore`] with everything read as leftover; a
/// caller that keeps the connection should treat it as plain. A protocol
/// violation is an error of kind `InvalidData` holding a [`SessionError`].
/// The socket's read timeout is left at a short poll interval.
///
/// # Errors
/// A bad HELLO (kind `InvalidData`), or a socket error.
pub fn read_opening(
    stream: &mut TcpStream,
    deadline: Instant,
    stop: &Shutdown,
) -> io::Result<(Opening, Vec<u8>)> {
    stream.set_read_timeout(Some(POLL))?;
    read_opening_from(stream, deadline, stop)
}

/// [`read_opening`] from any stream (a TLS stream, say) whose reads time
/// out as a socket's do (`WouldBlock`/`TimedOut`); the caller sets the
/// socket's read timeout, which is how often the deadline and `stop` are
/// looked at.
///
/// # Errors
/// As [`read_opening`].
pub fn read_opening_from(
    stream: &mut dyn Read,
    deadline: Instant,
    stop: &Shutdown,
) -> io::Result<(Opening, Vec<u8>)> {
    let mut got = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    loop {
        match parse_opening(&got)? {
            Opening::Session { hello, len } => {
                let rest = got.split_off(len);
                return Ok((Opening::Session { hello, len }, rest));
            }
            Opening::Plain => return Ok((Opening::Plain, got)),
            Opening::NeedMore => {}
        }
        if stop.requested() || Instant::now() >= deadline {
            return Ok((Opening::NeedMore, got));
        }
        // Never read past what a HELLO can be while undecided, so a slow
        // sender's first frame is not held back for a full buffer.
        let want = (HELLO_FIXED_LEN + MAX_NAME_LEN)
            .saturating_sub(got.len())
            .max(1);
        let want = want.min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => return Ok((Opening::Plain, got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if super::is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// An ACK's bytes for `offset`.
pub fn encode_ack(offset: u64) -> [u8; ACK_LEN] {
    let mut a = [0u8; ACK_LEN];
    a[..4].copy_from_slice(&ACK_MAGIC);
    a[4..].copy_from_slice(&offset.to_le_bytes());
    a
}

/// Parses the ACKs a server sends, from bytes split anywhere.
#[derive(Debug, Clone, Default)]
pub struct AckParser {
    part: [u8; ACK_LEN],
    have: usize,
    last: Option<u64>,
}

impl AckParser {
    /// A parser that has seen nothing.
    pub fn new() -> AckParser {
        AckParser::default()
    }

    /// The offset of the last complete ACK, if any.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Takes the next bytes from the server. Returns the offset of the last
    /// ACK they completed, if any. Anything that is not an ACK, or an offset
    /// below an earlier one, is an error: the connection is broken, and the
    /// parser should not be fed again.
    ///
    /// # Errors
    /// Bytes that are not an ACK, or an offset below an earlier one.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Option<u64>, SessionError> {
        let mut newest = None;
        while !bytes.is_empty() {
            let take = (ACK_LEN - self.have).min(bytes.len());
            for (i, &b) in bytes[..take].iter().enumerate() {
                let at = self.have + i;
                if at < ACK_MAGIC.len() && b != ACK_MAGIC[at] {
                    return Err(SessionError::BadAck);
                }
            }
            self.part[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == ACK_LEN {
                self.have = 0;
                let mut le = [0u8; 8];
                le.copy_from_slice(&self.part[4..]);
                let now = u64::from_le_bytes(le);
                if let Some(before) = self.last {
                    if now < before {
                        return Err(SessionError::AckWentBack { before, now });
                    }
                }
                self.last = Some(now);
                newest = Some(now);
            }
        }
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_split_at_every_byte() {
        let h = Hello::new("station-7");
        let mut bytes = h.to_bytes();
        bytes.extend_from_slice(&[0x1A, 0xCF, 0xFC, 0x1D, 9]);
        let hello_len = HELLO_FIXED_LEN + 9;
        for cut in 0..bytes.len() {
            let got = parse_opening(&bytes[..cut]).unwrap();
            if cut < hello_len {
                assert_eq!(got, Opening::NeedMore, "cut at {cut}");
            } else {
                assert_eq!(
                    got,
                    Opening::Session {
                        hello: h.clone(),
                        len: hello_len
                    }
                );
            }
        }
    }

    #[test]
    fn empty_name_and_longest_name() {
        let e = Hello::new("").to_bytes();
        assert_eq!(e, b"MRDH\x01\x00");
        assert!(matches!(
            parse_opening(&e).unwrap(),
            Opening::Session { len: 6, .. }
        ));
        let long = "é".repeat(40); // 80 bytes: cut to 64 at a char boundary
        let h = Hello::new(&long);
        assert_eq!(h.name.len(), 64);
        let b = h.to_bytes();
        assert_eq!(
            parse_opening(&b).unwrap(),
            Opening::Session { hello: h, len: 70 }
        );
    }

    #[test]
    fn plain_is_decided_at_the_first_differing_byte() {
        assert_eq!(parse_opening(&[]).unwrap(), Opening::NeedMore);
        assert_eq!(parse_opening(&[0x1A]).unwrap(), Opening::Plain);
        assert_eq!(parse_opening(b"MR").unwrap(), Opening::NeedMore);
        assert_eq!(parse_opening(b"MRDX").unwrap(), Opening::Plain);
        assert_eq!(parse_opening(b"MRDA\x01\x00").unwrap(), Opening::Plain);
    }

    #[test]
    fn bad_hellos_are_typed_errors() {
        assert_eq!(
            parse_opening(b"MRDH\x02\x00"),
            Err(SessionError::BadVersion(2))
        );
        assert_eq!(
            parse_opening(b"MRDH\x01\x41"),
            Err(SessionError::NameTooLong(65))
        );
        assert_eq!(
            parse_opening(b"MRDH\x01\x02\xff\xfe"),
            Err(SessionError::InvalidName)
        );
        // The error is found as soon as the bytes that show it arrive.
        assert_eq!(parse_opening(b"MRDH\x00"), Ok(Opening::NeedMore));
        assert_eq!(
            parse_opening(b"MRDH\x00\x00"),
            Err(SessionError::BadVersion(0))
        );
    }

    #[test]
    fn acks_parse_split_at_every_byte() {
        let mut stream = Vec::new();
        for off in [0u64, 24, 24, 1 << 40, u64::MAX] {
            stream.extend_from_slice(&encode_ack(off));
        }
        for cut in 0..=stream.len() {
            let mut p = AckParser::new();
            let a = p.feed(&stream[..cut]).unwrap();
            let b = p.feed(&stream[cut..]).unwrap();
            assert_eq!(b.or(a), Some(u64::MAX), "cut at {cut}");
            assert_eq!(p.last(), Some(u64::MAX));
        }
        // One byte at a time.
        let mut p = AckParser::new();
        let mut seen = Vec::new();
        for b in &stream {
            if let Some(o) = p.feed(std::slice::from_ref(b)).unwrap() {
                seen.push(o);
            }
        }
        assert_eq!(seen, vec![0, 24, 24, 1 << 40, u64::MAX]);
    }

    #[test]
    fn garbage_and_going_back_are_errors() {
        let mut p = AckParser::new();
        assert_eq!(p.feed(b"MRDX"), Err(SessionError::BadAck));
        let mut p = AckParser::new();
        assert_eq!(p.feed(b"MR").unwrap(), None);
        assert_eq!(p.feed(b"x"), Err(SessionError::BadAck));
        let mut p = AckParser::new();
        p.feed(&encode_ack(100)).unwrap();
        assert_eq!(
            p.feed(&encode_ack(99)),
            Err(SessionError::AckWentBack {
                before: 100,
                now: 99
            })
        );
    }
}
