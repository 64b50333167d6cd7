//! `glci config`: the effective configuration, secrets masked (DESIGN.md §11, §12).
//!
//! Returns the text; the caller (`cli/mod.rs`, via `cli/output.rs`) prints it.
//! Loading and masking live in `config` (`src/config/`); this file only frames the output.

use crate::config::Config;

/// The text `glci config` prints: TOML that could be pasted back into `config.toml`,
/// except that each password reads `"***"`.
pub fn run(config: &Config) -> String {
    config.render_masked()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn prints_effective_config_with_password_masked() {
        let mut config = Config::default();
        config.registry.upstream.password = Some(Secret::from("hunter2"));
        let text = run(&config);
        assert!(text.contains("mock_server_port = 39741"), "{text}");
        assert!(text.contains("password = \"***\""), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
