//! The process environment and the paths and names glci derives from it: [`process_env`]
//! (the only `std::env` read in glci), `GLCI_HOME`, the Docker CLI's config directory and
//! the `glci-mock` names.

use std::io;
use std::path::{Path, PathBuf};

use super::CONFIG_FILE;

/// The only `std::env` read in glci: pass it where an environment is wanted.
#[allow(clippy::disallowed_methods)] // the one sanctioned env read (STYLE.md §7)
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The path of the running glci binary (the `glci-mock` image is built from it, issue 8).
#[allow(clippy::disallowed_methods)] // an environment read, so it lives here (STYLE.md §7)
pub fn current_exe() -> io::Result<PathBuf> {
    std::env::current_exe()
}

/// Names of the `glci-mock` container, its volume, network and image (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockNames {
    pub container: String,
    pub volume: String,
    pub network: String,
    /// The image repository; the tag is the glci version.
    pub image: String,
}

/// The `glci-mock` names. A testing knob, not a user setting: `GLCI_MOCK_NAME=X` makes them
/// `X-mock`, `X-registry`, `X-net` (image `X-mock`), so tests never touch a user's real
/// `glci-mock`. Jobs still reach it as `glci-mock` (a network alias).
pub fn mock_names(env: &dyn Fn(&str) -> Option<String>) -> MockNames {
    match env("GLCI_MOCK_NAME").filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
        Some(prefix) => MockNames {
            container: format!("{prefix}-mock"),
            volume: format!("{prefix}-registry"),
            network: format!("{prefix}-net"),
            image: format!("{prefix}-mock"),
        },
        None => MockNames {
            container: "glci-mock".into(),
            volume: "glci-registry".into(),
            network: "glci-net".into(),
            image: "glci-mock".into(),
        },
    }
}

/// Where the host's Docker CLI keeps `config.json`: `DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn docker_config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    env("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".docker"))
}

/// `GLCI_HOME`, else `$HOME/.glci`, else `.glci` (relative) when neither is set.
pub fn glci_home(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(home) = env("GLCI_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".glci"),
        None => PathBuf::from(".glci"),
    }
}

/// `home/config.toml`.
pub fn config_path(home: &Path) -> PathBuf {
    home.join(CONFIG_FILE)
}
