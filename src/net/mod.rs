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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
