//! [`PipelineError`]: a problem in `.gitlab-ci.yml` (or a file it includes), displayed as one
//! line `file:line: key: message`, like `ConfigError` in `config.rs`. Produced by `parse`; `cli`
//! maps it to exit code 2 (a configuration error). Plain data: no I/O, no printing.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineError {
    /// The file the problem was written in (an included file when it came from there).
    pub file: PathBuf,
    /// 1-based; `None` when the problem is the file as a whole.
    pub line: Option<usize>,
    /// Dotted key (`build.script`, `test.needs[1]`, `include[0].local`); empty when none applies.
    pub key: String,
    pub message: String,
}

impl PipelineError {
    /// An error at `file:line`, about `key`.
    pub fn new(file: &Path, line: usize, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
        PipelineError { file: file.to_path_buf(), line: Some(line), key: key.into(), message: message.into() }
    }

    /// An error about a file as a whole (unreadable, empty, no jobs).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> PipelineError {
        PipelineError { file: file.to_path_buf(), line: None, key: String::new(), message: message.into() }
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::config::write_located(f, &self.file, self.line, &self.key, &self.message)
    }
}

impl std::error::Error for PipelineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_line_and_key() {
        let e = PipelineError::new(
            Path::new(".gitlab-ci.yml"),
            12,
            "build.script",
            "expected a string or a list of strings",
        );
        assert_eq!(e.to_string(), ".gitlab-ci.yml:12: build.script: expected a string or a list of strings");
    }

    #[test]
    fn display_without_line_or_key() {
        let e = PipelineError::whole_file(Path::new("/p/.gitlab-ci.yml"), "cannot read: denied");
        assert_eq!(e.to_string(), "/p/.gitlab-ci.yml: cannot read: denied");
        let e = PipelineError { line: Some(3), ..e };
        assert_eq!(e.to_string(), "/p/.gitlab-ci.yml:3: cannot read: denied");
    }
}
