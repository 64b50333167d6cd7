//! `$GLCI_HOME/config.toml` + the environment → a typed [`Config`] (DESIGN.md §11).
//!
//! Owns the schema of `config.toml` and its defaults (here), [`ConfigError`] naming
//! file:line:key, and loading; the parts live beside it:
//! - `env`: [`process_env`], the one reader of the process environment in glci (everything
//!   else gets a snapshot, `&dyn Fn(&str) -> Option<String>`, or a `Config`), and the home,
//!   Docker-config and `glci-mock` names derived from it;
//! - `read`: the TOML walker that keeps lines, so every unknown key, wrong type and bad value
//!   names its dotted key and line, with `"$NAME"`/`"${NAME}"` references resolved;
//! - `values`: the pure value grammars (durations, upstream hosts and URLs, TLS SANs);
//! - `render`: the masked rendering `glci config` prints and the server's copy.
//!
//! Flags are layered on top by `cli`, which sets the `pub` fields. Must not print, exit, or
//! touch Docker or the network.

mod env;
mod read;
mod render;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

pub use env::{config_path, current_exe, docker_config_dir, glci_home, mock_names, process_env, MockNames};
pub use values::{format_duration, parse_duration};

/// The file name under `GLCI_HOME`.
pub const CONFIG_FILE: &str = "config.toml";
/// `mock_server_port` when unset.
pub const DEFAULT_MOCK_SERVER_PORT: u16 = 39741;
/// `[registry] upstreams` when unset, in lookup order (DESIGN.md §7).
pub const DEFAULT_UPSTREAMS: [&str; 2] = ["registry.gitlab.com", "registry-1.docker.io"];
/// `[registry.upstream] url` when unset: where push-through mirrors to (DESIGN.md §8).
pub const DEFAULT_UPSTREAM_URL: &str = "registry.gitlab.com";
/// `[registry] tag_ttl` when unset.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(10 * 60);
/// `[registry] upstream_timeout` when unset: connecting to an upstream, and each read from it.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// `[tls] cert_validity` when unset.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// The effective configuration: defaults, then `config.toml`; `cli` applies flags last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mock_server_port: u16,
    pub registry: RegistryConfig,
    pub tls: TlsConfig,
    pub docker: DockerConfig,
    pub gitlab: GitlabConfig,
    pub run: RunConfig,
    pub storage: StorageConfig,
}

/// `[gitlab]`: the instance remote `include:`s are fetched from (issue 17).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitlabConfig {
    /// `https://gitlab.example.com` (no trailing `/`); `None`: from the `origin` remote's host,
    /// else `https://gitlab.com`.
    pub url: Option<String>,
    /// Sent as `PRIVATE-TOKEN` to the instance, for private projects.
    pub token: Option<Secret>,
    /// `[gitlab.projects]`: project path → a local checkout, where `trigger: project` runs that
    /// project's pipeline (issue 17). Relative paths are from the config file's directory.
    pub projects: BTreeMap<String, PathBuf>,
}

/// `[registry]`: the embedded registry, or the external one named by `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// An external registry to use instead of the embedded one (`--registry`).
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub push_through: bool,
    /// Pull-through upstream hosts, in lookup order.
    pub upstreams: Vec<String>,
    /// How long a cached tag is served before it is revalidated upstream.
    pub tag_ttl: Duration,
    /// How long connecting to an upstream, or one read from it, may take.
    pub upstream_timeout: Duration,
    pub anonymous_pull: bool,
    /// Upstream host → endpoint URL (`http://` or `https://`, no trailing `/`).
    pub upstream_urls: BTreeMap<String, String>,
    pub upstream: UpstreamConfig,
}

/// `[registry.upstream]`: the push-through target and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// `[tls]`: what the server certificate covers and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Added to the built-in SANs (`glci-mock`, `localhost`, `127.0.0.1`, …).
    pub extra_sans: Vec<San>,
    pub cert_validity: Duration,
}

/// `[docker]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Run DinD services `--privileged`, as GitLab's runner does.
    pub privileged: bool,
}

/// `[storage]`: where `glci serve` keeps the registry (issue 20).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageConfig {
    /// A directory, or `s3://BUCKET[/PREFIX]`; `None`: `$GLCI_HOME/registry`. `--storage` wins.
    pub url: Option<String>,
    pub s3: S3Config,
}

/// `[storage.s3]`: every key optional; what is missing comes from the AWS environment
/// variables (`cli::storage`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host[:port]` of any S3-compatible service; `None`: AWS in `region`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// `None`: path style (works with every S3-compatible store).
    pub path_style: Option<bool>,
    /// Blob GETs answer 307 to a presigned URL of the store (distribution's `redirect`).
    pub redirect: bool,
}

/// `[run]`: defaults of `glci run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// The image of a job that names none (the runner's configured default image).
    pub default_image: Option<String>,
}

/// A subject alternative name for the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

/// A configuration problem, displayed as one line: `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is the file as a whole.
    pub line: Option<usize>,
    /// Dotted key (`registry.tag_ttl`, `tls.extra_sans[1]`); empty when none applies.
    pub key: String,
    pub message: String,
}

/// Writes `file:line: key: message` (line and key when known): the one-line form of every
/// problem in a file the user wrote, `ConfigError` here and `PipelineError` for pipelines.
pub fn write_located(
    f: &mut fmt::Formatter<'_>,
    file: &Path,
    line: Option<usize>,
    key: &str,
    message: &str,
) -> fmt::Result {
    write!(f, "{}", file.display())?;
    if let Some(line) = line {
        write!(f, ":{line}")?;
    }
    if !key.is_empty() {
        write!(f, ": {key}")?;
    }
    write!(f, ": {message}")
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::config::write_located(f, &self.file, self.line, &self.key, &self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config {
            mock_server_port: DEFAULT_MOCK_SERVER_PORT,
            registry: RegistryConfig::default(),
            tls: TlsConfig::default(),
            docker: DockerConfig::default(),
            gitlab: GitlabConfig::default(),
            run: RunConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: None,
            username: None,
            password: None,
            push_through: false,
            upstreams: DEFAULT_UPSTREAMS.iter().map(|&h| h.to_owned()).collect(),
            tag_ttl: DEFAULT_TAG_TTL,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            anonymous_pull: true,
            upstream_urls: BTreeMap::new(),
            upstream: UpstreamConfig::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig { url: DEFAULT_UPSTREAM_URL.to_owned(), username: None, password: None }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { extra_sans: Vec::new(), cert_validity: DEFAULT_CERT_VALIDITY }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig { privileged: true }
    }
}

impl Config {
    /// Loads `home/config.toml`; a missing file gives the defaults.
    pub fn load(home: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = config_path(home);
        match std::fs::read_to_string(&file) {
            Ok(text) => Config::parse(&text, &file, env),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError { file, line: None, key: String::new(), message: format!("cannot read: {e}") }),
        }
    }

    /// [`Config::load`] from `glci_home()` with the process environment.
    pub fn load_from_process_env() -> Result<Config, ConfigError> {
        Config::load(&glci_home(&process_env), &process_env)
    }

    /// Parses the text of a config file; `file` is only used in errors.
    pub fn parse(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        read::parse(text, file, env)
    }
}
