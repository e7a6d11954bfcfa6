//! The command line's parts: [`args`] (what each command takes), [`commands`]
//! (what each command does), [`report`] (what they print), and [`CliError`],
//! whose variant decides the exit code.

pub(crate) mod args;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod report;

/// Why a command failed; the variant is the exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad arguments or unusable files, found before any work: exit 2.
    #[error("{0}")]
    Usage(String),
    /// A failure while running: exit 1.
    #[error("{0}")]
    Runtime(String),
    /// Stopped by SIGINT or SIGTERM after printing what was done: exit 130.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
            CliError::Interrupted => 130,
        }
    }

    /// A runtime failure: `what` failed because of `e`.
    pub(crate) fn runtime(what: &str, e: impl std::fmt::Display) -> CliError {
        CliError::Runtime(format!("{what}: {e}"))
    }
}
