//! Synthetic ground-station traffic, deterministic for a seed.
//!
//! Satellites downlink frames in sequence; each of `stations` ground stations
//! receives a frame with probability [`RECEIVE_P`] (at least one station
//! always does), so the stations' coverage overlaps and about 45% of the
//! capture are copies. A received copy is invalid with probability
//! `invalid_rate`: mostly marked corrupt by its station, sometimes with a
//! satellite id beyond the default `--max-sat`. Each station's stream is in
//! its own order; the capture interleaves the stations in arrival chunks of
//! 1 to [`MAX_CHUNK`] frames.

use crate::pipeline::DEFAULT_MAX_SAT;
use crate::wire::{encode_frame, FLAG_CORRUPT};

/// Chance that a given station receives a given frame. With 3 stations and
/// at least one receiver, a frame arrives 1.82 times on average: 45% copies.
pub const RECEIVE_P: f64 = 0.55;
/// Longest run of one station's frames in the interleaved capture.
pub const MAX_CHUNK: usize = 16;

/// Options of [`station_streams`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenConfig {
    /// Frames in the whole capture, copies included.
    pub frames: u64,
    /// Number of satellites (ids 0 .. sats).
    pub sats: u32,
    /// Number of ground stations, at least 1.
    pub stations: u32,
    /// RNG seed.
    pub seed: u64,
    /// Chance that a received copy is invalid.
    pub invalid_rate: f64,
    /// Smallest payload length.
    pub payload_min: u16,
    /// Largest payload length. The range is taken in either order: when it
    /// is below `payload_min` the two swap roles.
    pub payload_max: u16,
}

impl Default for GenConfig {
    fn default() -> GenConfig {
        GenConfig {
            frames: 100_000,
            sats: 48,
            stations: 3,
            seed: 1,
            invalid_rate: 0.01,
            payload_min: 16,
            payload_max: 128,
        }
    }
}

/// One station's stream: its bytes and where each frame ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StationStream {
    /// The frames back to back.
    pub bytes: Vec<u8>,
    /// End offset of each frame in `bytes`.
    pub ends: Vec<usize>,
}

/// Each station's stream of received frames, in its own order.
pub fn station_streams(cfg: &GenConfig) -> Vec<StationStream> {
    let stations = cfg.stations.max(1) as usize;
    let sats = cfg.sats.max(1);
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut next_seq: Vec<u64> = (0..sats).map(|_| rng.u64(0..1_000_000)).collect();
    let mut out = vec![StationStream::default(); stations];
    let (lo, hi) = if cfg.payload_min <= cfg.payload_max {
        (cfg.payload_min, cfg.payload_max)
    } else {
        (cfg.payload_max, cfg.payload_min)
    };
    let mut payload = vec![0u8; usize::from(hi)];
    let mut made = 0u64;
    let mut receivers = Vec::with_capacity(stations);
    while made < cfg.frames {
        let sat = rng.u32(0..sats);
        let seq = next_seq[sat as usize];
        next_seq[sat as usize] += 1;
        let len = usize::from(rng.u16(lo..=hi));
        rng.fill(&mut payload[..len]);
        let flags = rng.u8(0..0x10);
        receivers.clear();
        receivers.extend((0..stations).filter(|_| rng.f64() < RECEIVE_P));
        if receivers.is_empty() {
            receivers.push(rng.usize(0..stations));
        }
        for &st in &receivers {
            if made == cfg.frames {
                break;
            }
            let (mut s, mut f) = (sat, flags);
            if rng.f64() < cfg.invalid_rate {
                if rng.u8(0..4) == 0 {
                    s = DEFAULT_MAX_SAT + 1 + sat;
                } else {
                    f |= FLAG_CORRUPT;
                }
            }
            let stream = &mut out[st];
            encode_frame(&mut stream.bytes, s, seq, f, &payload[..len]);
            stream.ends.push(stream.bytes.len());
            made += 1;
        }
    }
    out
}

/// Interleaves the stations' streams in arrival chunks, as one capture.
pub fn interleave(streams: &[StationStream], seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5EED_1A7E);
    let mut out = Vec::with_capacity(streams.iter().map(|s| s.bytes.len()).sum());
    let mut next = vec![0usize; streams.len()];
    let mut live: Vec<usize> = (0..streams.len())
        .filter(|&i| !streams[i].ends.is_empty())
        .collect();
    while !live.is_empty() {
        let k = rng.usize(0..live.len());
        let st = live[k];
        let s = &streams[st];
        let take = rng.usize(1..=MAX_CHUNK).min(s.ends.len() - next[st]);
        let from = if next[st] == 0 {
            0
        } else {
            s.ends[next[st] - 1]
        };
        next[st] += take;
        out.extend_from_slice(&s.bytes[from..s.ends[next[st] - 1]]);
        if next[st] == s.ends.len() {
            live.swap_remove(k);
        }
    }
    out
}

/// The whole capture: every station's stream, interleaved.
pub fn capture(cfg: &GenConfig) -> Vec<u8> {
    interleave(&station_streams(cfg), cfg.seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reversed_payload_range_is_the_same_range() {
        let a = capture(&GenConfig {
            frames: 200,
            payload_min: 10,
            payload_max: 40,
            ..GenConfig::default()
        });
        let b = capture(&GenConfig {
            frames: 200,
            payload_min: 40,
            payload_max: 10,
            ..GenConfig::default()
        });
        assert_eq!(a, b);
    }
}
