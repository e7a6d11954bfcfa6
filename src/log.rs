//! Structured logs: `tracing` events on stderr, as text or one JSON object
//! per line (`--log-format`), filtered with `RUST_LOG` syntax
//! (`--log-filter`, or the `RUST_LOG` variable; `info` by default).
//!
//! Every event a station or a downstream can cause goes through a
//! [`RateLimit`] of its own, so a hostile station (reconnecting in a loop,
//! sending bad HELLOs, jumping seqs) cannot flood the log: past the limit
//! events are counted, not written, and the next one written carries the
//! count in its `suppressed` field ([`suppressed_total`] has them all).
//!
//! The two startup lines `listening on ADDR` and `admin on ADDR` are plain
//! lines in either format (scripts read the addresses from them), as is the
//! summary at exit.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, per line.
    Json,
}

impl clap::ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [LogFormat] {
        &[LogFormat::Text, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }))
    }
}

/// Checks a filter in `RUST_LOG` syntax (`info`, `warn,meridian_pipeline::net=debug`).
///
/// # Errors
/// A one-line description of what is wrong with it.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| format!("bad log filter '{filter}': {e}"))
}

/// Installs the stderr subscriber: `filter` when given, else `RUST_LOG`,
/// else `info`. A second call does nothing.
///
/// # Errors
/// When `filter` (or `RUST_LOG`) is not a valid filter.
pub fn init(format: LogFormat, filter: Option<&str>) -> Result<(), String> {
    let filter = match filter {
        Some(f) => parse_filter(f)?,
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.trim().is_empty() => {
                parse_filter(&f).map_err(|e| format!("RUST_LOG: {e}"))?
            }
            _ => EnvFilter::new("info"),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    Ok(())
}

/// `s` with its control characters escaped (`\n`, `\u{1b}`): a station
/// name from a HELLO cannot start a forged line or move the cursor in a
/// text log.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Events suppressed by every [`RateLimit`] so far.
pub fn suppressed_total() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

/// At most `burst` events per `per_secs` seconds of one kind; a `static`
/// per kind of event.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    per: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    /// A limit of `burst` events per `per_secs` seconds.
    pub const fn new(burst: u32, per_secs: u64) -> RateLimit {
        RateLimit {
            burst,
            per: Duration::from_secs(per_secs),
            state: Mutex::new(Window {
                start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when an event may be written now, `n` being how many of
    /// this kind were suppressed since the last one written; else `None`
    /// (and it is counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.start.is_none_or(|s| now.duration_since(s) >= self.per) {
            w.start = Some(now);
            w.used = 0;
        }
        if w.used < self.burst {
            w.used += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_and_counted() {
        let l = RateLimit::new(3, 10);
        let t0 = Instant::now();
        let allowed: Vec<_> = (0..1000).map(|_| l.allow_at(t0)).collect();
        assert_eq!(allowed.iter().filter(|a| a.is_some()).count(), 3);
        assert!(suppressed_total() >= 997);
        // The next window: the first event carries the count.
        assert_eq!(l.allow_at(t0 + Duration::from_secs(10)), Some(997));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("gs-0"), "gs-0");
        assert_eq!(
            printable("gs\n2026-11-22 INFO forged\u{1b}[2J"),
            "gs\\n2026-11-22 INFO forged\\u{1b}[2J"
        );
    }

    #[test]
    fn bad_filters_are_one_line_errors() {
        assert!(parse_filter("info,meridian_pipeline::net=debug").is_ok());
        let e = parse_filter("meridian=notalevel").unwrap_err();
        assert!(e.contains("meridian=notalevel") && !e.contains('\n'), "{e}");
    }
}
