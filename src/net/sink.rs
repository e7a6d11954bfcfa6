//! `sink`: a checking downstream. It takes its connections, decodes what
//! arrives, checks CRCs (the decoder's rules) and that no (sat, seq) arrives
//! twice, counts frames and bytes, and reports at end of stream or on a stop.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use serde::Serialize;

use super::Shutdown;
use crate::decode::Decoder;

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
}

/// Accepts `connections` connections on `listener` (one for a `serve`
/// downstream; several behind a relay) and checks each until it ends or
/// `stop` is triggered, one thread each, with one set of keys between them.
/// Frames go to `out` when given.
pub fn sink(
    listener: TcpListener,
    out: Option<&Path>,
    stop: &Shutdown,
    connections: usize,
) -> io::Result<SinkSummary> {
    listener.set_nonblocking(true)?;
    let file = match out {
        Some(p) => Some(Mutex::new(BufWriter::new(File::create(p)?))),
        None => None,
    };
    let keys = Mutex::new(HashSet::new());
    let total = Mutex::new(SinkSummary {
        eof: true,
        ..SinkSummary::default()
    });
    thread::scope(|scope| -> io::Result<()> {
        let mut taken = 0;
        while taken < connections.max(1) {
            match listener.accept() {
                Ok((stream, _)) => {
                    taken += 1;
                    let (keys, total, file) = (&keys, &total, file.as_ref());
                    scope.spawn(move || {
                        let s = check_stream(stream, keys, file, stop);
                        let mut t = total.lock().expect("no panics while held");
                        match s {
                            Ok(s) => t.add(&s),
                            Err(e) => eprintln!("sink: connection failed: {e}"),
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
        Ok(())
    })?;
    if let Some(f) = file {
        f.into_inner().expect("no panics while held").flush()?;
    }
    let mut t = total.into_inner().expect("no panics while held");
    t.unique_keys = keys.into_inner().expect("no panics while held").len() as u64;
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
    }
}

type Keys = Mutex<HashSet<(u32, u64)>>;

fn check_stream(
    mut stream: TcpStream,
    keys: &Keys,
    file: Option<&Mutex<BufWriter<File>>>,
    stop: &Shutdown,
) -> io::Result<SinkSummary> {
    let mut written = Ok(());
    let mut summary = SinkSummary::default();
    let (eof, d) = super::read_frames(
        &mut stream,
        Decoder::new(u16::MAX),
        4096,
        stop,
        Duration::ZERO,
        |batch, _| {
            let mut k = keys.lock().expect("no panics while held");
            for i in 0..batch.len() {
                if !k.insert((batch.sat[i], batch.seq[i])) {
                    summary.repeated_keys += 1;
                }
            }
            if let Some(f) = file {
                written = f
                    .lock()
                    .expect("no panics while held")
                    .write_all(&batch.buf);
            }
            written.is_ok()
        },
    )?;
    written?;
    summary.eof = eof;
    summary.bytes = d.input_bytes;
    summary.frames = d.frames_decoded;
    summary.crc_errors = d.crc_errors;
    summary.skipped_bytes = d.skipped_bytes;
    summary.truncated = d.truncated;
    Ok(summary)
}
