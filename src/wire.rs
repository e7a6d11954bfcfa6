//! The Meridian wire format, version 1.
//!
//! Every offset the decoder, the encoder and the tests depend on is written
//! here once. All integers are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  sync marker 1A CF FC 1D (the CCSDS attached sync marker)
//!      4     4  sat: u32 satellite id
//!      8     8  seq: u64 frame sequence number, per satellite
//!     16     1  flags: u8; bit 7 (0x80) = the ground station marked the frame corrupt
//!     17     1  version: u8, must be 1
//!     18     2  len: u16 payload length, at most the configured max payload
//!     20   len  payload
//! 20+len     4  crc: u32, CRC-32/ISO-HDLC (zlib's crc32) over bytes [4, 20+len)
//! ```
//!
//! A frame is `24 + len` bytes.

/// The CCSDS attached sync marker that opens every frame.
pub const SYNC: [u8; 4] = [0x1A, 0xCF, 0xFC, 0x1D];
/// Bytes from the start of a frame to the first payload byte.
pub const HEADER_LEN: usize = 20;
/// Bytes of the trailing CRC.
pub const CRC_LEN: usize = 4;
/// Bytes of a frame beyond its payload.
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// The only version this decoder accepts.
pub const VERSION: u8 = 1;
/// Flag bit set by a ground station that received the frame corrupt.
pub const FLAG_CORRUPT: u8 = 0x80;
/// Default upper bound of a frame's payload length (`--max-payload`).
pub const DEFAULT_MAX_PAYLOAD: u16 = 4096;

pub(crate) const SAT_AT: usize = 4;
const SEQ_AT: usize = 8;
const FLAGS_AT: usize = 16;
const VERSION_AT: usize = 17;
const LEN_AT: usize = 18;

/// The fixed header of a frame, as read from its first 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Satellite id.
    pub sat: u32,
    /// Per-satellite sequence number.
    pub seq: u64,
    /// Station flags; see [`FLAG_CORRUPT`].
    pub flags: u8,
    /// Format version; 1 is the only valid one.
    pub version: u8,
    /// Payload length in bytes.
    pub len: u16,
}

impl Header {
    /// Reads the header at the start of `bytes`, which must hold at least
    /// [`HEADER_LEN`] bytes (the sync marker is not checked).
    ///
    /// # Panics
    /// When `bytes` is shorter than [`HEADER_LEN`].
    #[inline]
    pub fn read(bytes: &[u8]) -> Header {
        let h: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("header length");
        Header {
            sat: u32::from_le_bytes([h[SAT_AT], h[SAT_AT + 1], h[SAT_AT + 2], h[SAT_AT + 3]]),
            seq: u64::from_le_bytes(h[SEQ_AT..SEQ_AT + 8].try_into().expect("8 bytes")),
            flags: h[FLAGS_AT],
            version: h[VERSION_AT],
            len: u16::from_le_bytes([h[LEN_AT], h[LEN_AT + 1]]),
        }
    }

    /// Total bytes of the frame this header opens.
    #[inline]
    pub fn frame_len(&self) -> usize {
        OVERHEAD + self.len as usize
    }
}

/// CRC-32/ISO-HDLC of a whole frame's covered bytes `[4, 20 + len)`.
#[inline]
pub fn frame_crc(frame_without_crc: &[u8]) -> u32 {
    crc32fast::hash(&frame_without_crc[SAT_AT..])
}

/// The CRC stored in the last four bytes of a complete frame.
///
/// # Panics
/// When `frame` is shorter than [`CRC_LEN`] bytes.
#[inline]
pub fn stored_crc(frame: &[u8]) -> u32 {
    let n = frame.len();
    u32::from_le_bytes(frame[n - CRC_LEN..].try_into().expect("4 bytes"))
}

/// Appends one well-formed version-1 frame to `out`.
///
/// # Panics
/// When `payload` is longer than `u16::MAX` bytes.
pub fn encode_frame(out: &mut Vec<u8>, sat: u32, seq: u64, flags: u8, payload: &[u8]) {
    let len = u16::try_from(payload.len()).expect("payload longer than u16::MAX");
    let start = out.len();
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&sat.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(flags);
    out.push(VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_read_round_trips() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, 100, 0x01, b"hello");
        assert_eq!(buf.len(), OVERHEAD + 5);
        assert_eq!(&buf[..4], &SYNC);
        let h = Header::read(&buf);
        assert_eq!(
            h,
            Header {
                sat: 7,
                seq: 100,
                flags: 0x01,
                version: 1,
                len: 5
            }
        );
        assert_eq!(stored_crc(&buf), frame_crc(&buf[..buf.len() - CRC_LEN]));
    }

    #[test]
    fn crc_is_zlib_crc32() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
