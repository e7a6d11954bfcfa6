//! `gen --connect`: play the ground stations. One connection per station,
//! each sending exactly that station's stream from `gen` with the same seed
//! and options, optionally paced.

use std::io::{self, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::gen::{station_streams, GenConfig};

/// Frames written per `write_all` when not paced.
const BURST: usize = 64;

/// Connects one socket per station to `addr` (retrying for up to 5 s) and
/// sends each station's stream, at `rate` frames per second per station
/// when given. Returns the bytes sent.
pub fn send_stations(addr: &str, cfg: &GenConfig, rate: Option<f64>) -> io::Result<u64> {
    let streams = station_streams(cfg);
    let handles: Vec<_> = streams
        .into_iter()
        .map(|s| {
            let addr = addr.to_string();
            thread::spawn(move || -> io::Result<u64> {
                let mut conn = connect_retrying(&addr, Duration::from_secs(5))?;
                let start = Instant::now();
                let mut from = 0usize;
                // Paced: one write per millisecond's worth of frames, each
                // sent when it is due, so pacing costs no busy loop.
                let per_write = rate.map_or(BURST, |r| ((r / 1000.0) as usize).max(1));
                let mut sent = 0usize;
                for chunk in s.ends.chunks(per_write) {
                    let to = *chunk.last().expect("chunks are not empty");
                    conn.write_all(&s.bytes[from..to])?;
                    from = to;
                    sent += chunk.len();
                    if let Some(r) = rate {
                        let due = start + Duration::from_secs_f64(sent as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                    }
                }
                conn.flush()?;
                conn.shutdown(std::net::Shutdown::Write)?;
                Ok(s.bytes.len() as u64)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| io::Error::other("a station thread panicked"))??;
    }
    Ok(total)
}

fn connect_retrying(addr: &str, for_up_to: Duration) -> io::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() >= for_up_to => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}
