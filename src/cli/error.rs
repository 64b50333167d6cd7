//! `CliError` → exit code and one stderr line. The only exit-code mapping: 0 ok, 1 a job or
//! check failed, 2 usage or configuration error.

use std::fmt;

#[derive(Debug)]
pub enum CliError {
    /// Bad flags, configuration or input: exit 2.
    Usage(String),
    /// The command ran and something failed (a job, a check, the server): exit 1.
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}
