//! `serve --config PATH`: every `serve` option in a TOML file, one key per
//! flag (the flag's name with `_` for `-`: `max_delay_ms = 5` is
//! `--max-delay-ms 5`), documented in `examples/meridian.toml`.
//!
//! The file becomes flags placed before the command line's own, so a flag
//! given on the command line overrides the file, and every value goes
//! through the flag's own parser and checks. An unknown key, a value of the
//! wrong kind, or one the flag rejects is a usage error (exit 2) naming the
//! key and its line.
//!
//! One key is not a flag: `[stations.NAME]` tables, each with
//! `satellites = ["1-24", "100"]`, the allowlist (see
//! [`meridian_pipeline::net::auth`]).

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::Parser;
use toml::{Spanned, Value};

use meridian_pipeline::net::auth::{Allowlist, SatSet};

use super::args::{Cli, Command, ServeArgs};
use super::CliError;

/// Whether a key is a switch (`true` gives the flag, `false` leaves it out)
/// or takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Switch,
    Value,
}

/// Every key, with its kind. `config` itself is not one.
const KEYS: &[(&str, Kind)] = &[
    ("listen", Kind::Value),
    ("forward", Kind::Value),
    ("forward_raw", Kind::Value),
    ("out", Kind::Value),
    ("truncate", Kind::Switch),
    ("name", Kind::Value),
    ("admin", Kind::Value),
    ("batch_size", Kind::Value),
    ("window", Kind::Value),
    ("max_sat", Kind::Value),
    ("max_payload", Kind::Value),
    ("stale", Kind::Value),
    ("max_seq_jump", Kind::Value),
    ("reanchor_after", Kind::Value),
    ("window_memory", Kind::Value),
    ("max_delay_ms", Kind::Value),
    ("max_connections", Kind::Value),
    ("stats_interval", Kind::Value),
    ("grace_ms", Kind::Value),
    ("drain_ms", Kind::Value),
    ("ack_interval_ms", Kind::Value),
    ("idle_timeout_ms", Kind::Value),
    ("downstream_timeout_ms", Kind::Value),
    ("unacked_bytes", Kind::Value),
    ("sync_ms", Kind::Value),
    ("tls_cert", Kind::Value),
    ("tls_key", Kind::Value),
    ("tls_client_ca", Kind::Value),
    ("require_tls", Kind::Switch),
    ("forward_tls_ca", Kind::Value),
    ("forward_tls_cert", Kind::Value),
    ("forward_tls_key", Kind::Value),
    ("json", Kind::Switch),
    ("log_format", Kind::Value),
    ("log_filter", Kind::Value),
];

/// The flags that choose where frames go: one on the command line replaces
/// the file's choice (and its `truncate`).
const TARGET_KEYS: &[&str] = &["forward", "forward_raw", "out", "truncate"];

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The file's keys as flags, in file order: `(key, line, flags)`.
fn file_flags(path: &str, text: &str) -> Result<Vec<(String, usize, Vec<String>)>, CliError> {
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" line {}", line_of(text, s.start)))
            .unwrap_or_default();
        CliError::Usage(format!(
            "--config {path}{at}: not valid TOML: {}",
            one_line(e.message())
        ))
    })?;
    // In file order, so the first problem reported is the first in the file.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (key, value) in entries {
        let name = key.get_ref();
        let line = line_of(text, key.span().start);
        if name == "stations" {
            continue; // the allowlist: see `allowlist`
        }
        let Some(&(_, kind)) = KEYS.iter().find(|(k, _)| k == name) else {
            return Err(CliError::Usage(format!(
                "--config {path} line {line}: unknown key '{name}'"
            )));
        };
        let bad = |want: &str| {
            CliError::Usage(format!(
                "--config {path} line {line}: bad value for '{name}': expected {want}"
            ))
        };
        let flag = format!("--{}", name.replace('_', "-"));
        let flags = match (kind, value.get_ref()) {
            (Kind::Switch, Value::Boolean(true)) => vec![flag],
            (Kind::Switch, Value::Boolean(false)) => vec![],
            (Kind::Switch, _) => return Err(bad("true or false")),
            (Kind::Value, Value::String(s)) => vec![flag, s.clone()],
            (Kind::Value, Value::Integer(i)) => vec![flag, i.to_string()],
            (Kind::Value, Value::Float(f)) => vec![flag, f.to_string()],
            (Kind::Value, _) => return Err(bad("a string or a number")),
        };
        out.push((name.clone(), line, flags));
    }
    Ok(out)
}

/// Where the `[stations...]` tables start: the byte offset of the first
/// line that opens one (the flags' keys all come before it), or the end.
fn stations_start(text: &str) -> usize {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("[stations") || t.starts_with("[ stations") {
            return at;
        }
        at += line.len();
    }
    text.len()
}

/// The `[stations.NAME]` tables of the file, if it has a `stations` key.
fn allowlist(path: &str, text: &str) -> Result<Option<Allowlist>, CliError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "--config {path}: not valid TOML: {}",
            one_line(e.message())
        ))
    })?;
    let Some(value) = table.get("stations") else {
        return Ok(None);
    };
    let line = line_of(text, stations_start(text));
    let bad = |what: String| CliError::Usage(format!("--config {path} line {line}: {what}"));
    let Value::Table(stations) = value else {
        return Err(bad(
            "'stations' must be tables: [stations.NAME] satellites = [\"1-24\", \"100\"]".into(),
        ));
    };
    let mut list = Allowlist::default();
    for (name, t) in stations {
        let Some(sats) = t.as_table().and_then(|t| {
            (t.len() == 1).then_some(())?;
            t.get("satellites")?.as_array()
        }) else {
            return Err(bad(format!(
                "[stations.{name}] needs exactly one key: satellites = [\"1-24\", \"100\"]"
            )));
        };
        let items: Vec<String> = sats
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Integer(i) => Ok(i.to_string()),
                _ => Err(bad(format!(
                    "[stations.{name}] satellites: each item a number or a string like \"1-24\""
                ))),
            })
            .collect::<Result<_, _>>()?;
        let set = SatSet::parse(items.iter().map(String::as_str))
            .map_err(|e| bad(format!("[stations.{name}] satellites: {e}")))?;
        list.insert(name, set);
    }
    Ok(Some(list))
}

fn parse_serve(argv: &[OsString]) -> Result<ServeArgs, String> {
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Some(Command::Serve(a)),
        }) => Ok(*a),
        Ok(_) => Err("not a serve command".into()),
        Err(e) => {
            let text = e.render().to_string();
            let first = text.split("\n\n").next().unwrap_or_default();
            Err(one_line(first.trim_start_matches("error: ")))
        }
    }
}

/// `serve`'s arguments with `--config PATH` applied: the file's keys as
/// flags, then `cli_args` (what followed `serve` on the command line).
///
/// # Errors
/// A usage error naming the file and, for a key, its name and line.
pub(crate) fn merged_serve_args(
    path: &str,
    cli_args: &[OsString],
) -> Result<(ServeArgs, Option<Allowlist>), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read --config {path}: {e}")))?;
    // The flags' keys come before the [stations] tables (TOML puts every
    // key after a table header into that table).
    let keys = file_flags(path, &text[..stations_start(&text)])?;
    let allow = allowlist(path, &text)?;
    let base: Vec<OsString> = ["meridian-pipeline", "serve"].map(Into::into).to_vec();
    // Each key alone first, so a value the flag rejects is blamed on its line.
    for (name, line, flags) in &keys {
        let mut argv = base.clone();
        if !TARGET_KEYS.contains(&name.as_str()) || name == "truncate" {
            argv.extend(["--out", "/dev/null"].map(OsString::from));
        }
        argv.extend(flags.iter().map(OsString::from));
        parse_serve(&argv).map_err(|e| {
            CliError::Usage(format!(
                "--config {path} line {line}: bad value for '{name}': {e}"
            ))
        })?;
    }
    let cli_target = cli_args.iter().any(|a| {
        let a = a.to_string_lossy();
        ["--forward", "--forward-raw", "--out"]
            .iter()
            .any(|f| a == *f || a.starts_with(&format!("{f}=")))
    });
    let mut argv = base;
    for (name, _, flags) in &keys {
        if cli_target && TARGET_KEYS.contains(&name.as_str()) {
            continue; // the command line chose where frames go
        }
        argv.extend(flags.iter().map(OsString::from));
    }
    argv.extend(cli_args.iter().cloned());
    let args =
        parse_serve(&argv).map_err(|e| CliError::Usage(format!("{e} (with --config {path})")))?;
    Ok((args, allow))
}

/// Every key of the config file, for the tests of the documented example.
#[cfg(test)]
pub(crate) fn keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }

    #[test]
    fn the_example_documents_every_key_with_a_valid_default() {
        let text = include_str!("../../examples/meridian.toml");
        // Each key appears as `# key = default`; uncommented, they all parse.
        let mut live = String::new();
        for k in keys() {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("# {k} = ")))
                .unwrap_or_else(|| panic!("examples/meridian.toml does not document '{k}'"));
            live.push_str(&line[2..]);
            live.push('\n');
        }
        let flags = file_flags("example", &live).unwrap();
        assert_eq!(flags.len(), KEYS.len());
    }

    #[test]
    fn stations_tables_make_the_allowlist() {
        let text = "batch_size = 8\n[stations.gs0]\nsatellites = [\"1-24\", 100]\n[stations.gs1]\nsatellites = []\n";
        assert_eq!(stations_start(text), 15);
        assert_eq!(
            file_flags("t", &text[..stations_start(text)])
                .unwrap()
                .len(),
            1
        );
        let list = allowlist("t", text).unwrap().unwrap();
        assert_eq!(list.len(), 2);
        let gs0 = list.get("gs0").unwrap();
        assert!(gs0.contains(24) && gs0.contains(100) && !gs0.contains(25));
        assert!(!list.get("gs1").unwrap().contains(1));
        assert!(list.get("gs2").is_none());
        assert!(allowlist("t", "batch_size = 8\n").unwrap().is_none());
        for bad in [
            "stations = 3\n",
            "[stations.gs0]\nsats = [\"1\"]\n",
            "[stations.gs0]\nsatellites = [\"9-1\"]\n",
            "[stations.gs0]\nsatellites = [true]\n",
        ] {
            let e = allowlist("t", bad).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad}");
        }
    }
}
