//! `CliError` → exit code and one stderr line. The only exit-code mapping: 0 ok, 1 a job or
//! check failed, 2 usage or configuration error, 130 quit on a second interrupt.

use std::fmt;

#[derive(Debug)]
pub enum CliError {
    /// Bad flags, configuration or input: exit 2.
    Usage(String),
    /// The command ran and something failed (a job, a check, the server): exit 1.
    Failed(String),
    /// A second SIGINT/SIGTERM: quit at once. Exit 130, 128 + SIGINT, as a shell reports a
    /// command an interrupt ended.
    Interrupted(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Interrupted(_) => 130,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) | CliError::Interrupted(m) => f.write_str(m),
        }
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_exit_code_and_its_message() {
        let cases = [
            (CliError::Usage("u".into()), 2),
            (CliError::Failed("f".into()), 1),
            (CliError::Interrupted("i".into()), 130),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error:?}");
            assert_eq!(error.to_string().len(), 1, "{error:?}");
        }
    }
}
