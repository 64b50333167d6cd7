//! `$GLCI_HOME/config.toml` + the environment → a typed [`Config`] (DESIGN.md §11).
//!
//! Owns the schema of `config.toml`, its defaults, `"$NAME"`/`"${NAME}"` references,
//! validation (durations, upstream hosts and URLs, TLS SANs), [`ConfigError`] naming
//! file:line:key, and the masked rendering `glci config` prints. [`process_env`] is the
//! one reader of the process environment in glci: everything else gets a snapshot
//! (`&dyn Fn(&str) -> Option<String>`) or a `Config`. Flags are layered on top by `cli`,
//! which sets the `pub` fields. Must not print, exit, or touch Docker or the network.
//!
//! The file is read into a small tree whose keys carry byte spans (`toml::Spanned`),
//! then walked by hand: that is what lets every unknown key, wrong type and bad value
//! name its dotted key and line. Spans sit on keys, not values, because toml 0.8 has
//! no span for implicit tables (`[registry.upstream]` without `[registry]`).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use toml::Spanned;

use crate::secret::{Secret, MASK};

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
}

/// `[gitlab]`: the instance remote `include:`s are fetched from (issue 17).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitlabConfig {
    /// `https://gitlab.example.com` (no trailing `/`); `None`: from the `origin` remote's host,
    /// else `https://gitlab.com`.
    pub url: Option<String>,
    /// Sent as `PRIVATE-TOKEN` to the instance, for private projects.
    pub token: Option<Secret>,
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

/// Reads one variable of the process environment; `None` when unset or not UTF-8.
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
        let reader = Reader { file, text, env };
        let root = toml::from_str::<Node>(text).map_err(|e| reader.syntax_error(&e))?;
        reader.config(&root)
    }

    /// The effective configuration as TOML, defaults filled in, passwords `"***"`
    /// (omitted when unset), durations in their shortest exact form.
    pub fn render_masked(&self) -> String {
        self.render(true)
    }

    /// The configuration `glci serve` needs inside the `glci-mock` container: like
    /// [`Config::render_masked`] but with the upstream password itself (resolved from its
    /// `"$VAR"` here, on the host) and without the external-registry keys. Holds a secret:
    /// written only into the container (mode 0600), never to the host's disk or a log.
    pub fn render_for_server(&self) -> String {
        let mut server = self.clone();
        server.registry.url = None;
        server.registry.username = None;
        server.registry.password = None;
        // The server never fetches includes: the instance token stays on the host.
        server.gitlab = GitlabConfig::default();
        server.render(false)
    }

    fn render(&self, masked: bool) -> String {
        let secret = |s: &'_ Option<Secret>| -> Option<String> {
            s.as_ref().map(|p| if masked { MASK.to_string() } else { p.expose().to_string() })
        };
        let r = &self.registry;
        let view = RenderConfig {
            mock_server_port: self.mock_server_port,
            registry: RenderRegistry {
                url: r.url.as_deref(),
                username: r.username.as_deref(),
                password: secret(&r.password),
                push_through: r.push_through,
                upstreams: &r.upstreams,
                tag_ttl: format_duration(r.tag_ttl),
                upstream_timeout: format_duration(r.upstream_timeout),
                anonymous_pull: r.anonymous_pull,
                upstream_urls: &r.upstream_urls,
                upstream: RenderUpstream {
                    url: &r.upstream.url,
                    username: r.upstream.username.as_deref(),
                    password: secret(&r.upstream.password),
                },
            },
            tls: RenderTls {
                extra_sans: self.tls.extra_sans.iter().map(San::to_string).collect(),
                cert_validity: format_duration(self.tls.cert_validity),
            },
            docker: RenderDocker { privileged: self.docker.privileged },
            gitlab: RenderGitlab { url: self.gitlab.url.as_deref(), token: secret(&self.gitlab.token) },
            run: RenderRun { default_image: self.run.default_image.as_deref() },
        };
        toml::to_string(&view).expect("strings, integers, booleans and string maps always serialize to TOML")
    }
}

/// Parses `30s`, `30m`, `48h`, `7d`: a positive whole number and one unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (use forms like 30m, 48h, 7d)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (digits, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(invalid()),
    };
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    if n == 0 {
        return Err(format!("invalid duration {text:?} (must be more than zero)"));
    }
    let secs = n.checked_mul(unit_secs).ok_or_else(|| format!("invalid duration {text:?} (too long)"))?;
    Ok(Duration::from_secs(secs))
}

/// The inverse of [`parse_duration`] in the largest of `s`, `m`, `h` that is exact
/// (`24h`, not `1d`, to match how the docs spell the defaults). Sub-second parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs != 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl FromStr for San {
    type Err = String;

    /// An IP address, or a DNS name (letters, digits, `-`; labels of 1-63 characters;
    /// at most 253 in all; a leading `*.` wildcard allowed; not all-numeric at the end).
    fn from_str(s: &str) -> Result<San, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        if is_dns_name(s) {
            Ok(San::Dns(s.to_owned()))
        } else {
            Err(format!("invalid SAN {s:?} (use a DNS name like my-host.example or an IP address)"))
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    let body = s.strip_prefix("*.").unwrap_or(s);
    if s.is_empty() || s.len() > 253 || body.is_empty() {
        return false;
    }
    let labels_ok = body.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    // An all-numeric last label is a mistyped IP address (`10.0.0.300`), not a name.
    let last_is_numeric = body.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_is_numeric
}

/// An upstream in `[registry] upstreams` is a host (optionally `:port`), never a URL:
/// endpoints belong in `[registry.upstream_urls]`.
fn check_upstream_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.contains("://") || host.contains('/') || host.contains(char::is_whitespace) {
        Err(format!(
            "invalid upstream {host:?} (use a host name like registry-1.docker.io; \
             map it to a URL in [registry.upstream_urls])"
        ))
    } else {
        Ok(())
    }
}

/// An endpoint in `[registry.upstream_urls]`: `http://` or `https://` and a host;
/// returned without trailing `/`.
fn check_upstream_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("invalid URL {url:?} (must start with http:// or https:// and name a host)")),
    }
}

/// `"$NAME"` or `"${NAME}"` as a whole string → `NAME`; anything else is literal.
fn env_reference(s: &str) -> Option<&str> {
    let name = match s.strip_prefix("${") {
        Some(rest) => rest.strip_suffix('}')?,
        None => s.strip_prefix('$')?,
    };
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}

/// A TOML document as a tree whose keys know their byte span.
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Spanned<Node>>),
    String(String),
    Integer(i64),
    Float,
    Boolean(bool),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Table(_) => "a table",
            Node::Array(_) => "an array",
            Node::String(_) => "a string",
            Node::Integer(_) => "an integer",
            Node::Float => "a float",
            Node::Boolean(_) => "a boolean",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Boolean(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Integer(v))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Float)
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

/// Where a value sits: its dotted key and line.
struct At<'n> {
    key: String,
    line: usize,
    node: &'n Node,
}

/// Walks the tree of one file, turning each value into its typed field.
struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

const ROOT_KEYS: &[&str] = &["mock_server_port", "registry", "tls", "docker", "gitlab", "run"];
const GITLAB_KEYS: &[&str] = &["url", "token"];
const REGISTRY_KEYS: &[&str] = &[
    "url",
    "username",
    "password",
    "push_through",
    "upstreams",
    "tag_ttl",
    "upstream_timeout",
    "anonymous_pull",
    "upstream_urls",
    "upstream",
];
const UPSTREAM_KEYS: &[&str] = &["url", "username", "password"];
const TLS_KEYS: &[&str] = &["extra_sans", "cert_validity"];
const DOCKER_KEYS: &[&str] = &["privileged"];
const RUN_KEYS: &[&str] = &["default_image"];

impl Reader<'_> {
    fn config(&self, root: &Node) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let Node::Table(entries) = root else {
            return Err(self.error(None, "", "the document is not a table"));
        };
        for (name, at) in self.entries(entries, "") {
            match name {
                "mock_server_port" => config.mock_server_port = self.port(&at)?,
                "registry" => self.registry(&at, &mut config.registry)?,
                "tls" => self.tls(&at, &mut config.tls)?,
                "docker" => self.docker(&at, &mut config.docker)?,
                "gitlab" => self.gitlab(&at, &mut config.gitlab)?,
                "run" => self.run(&at, &mut config.run)?,
                _ => return Err(self.unknown(&at, ROOT_KEYS)),
            }
        }
        Ok(config)
    }

    fn registry(&self, at: &At, registry: &mut RegistryConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "url" => registry.url = Some(self.non_empty(&at)?),
                "username" => registry.username = Some(self.string(&at)?),
                "password" => registry.password = Some(Secret::new(self.string(&at)?)),
                "push_through" => registry.push_through = self.boolean(&at)?,
                "upstreams" => registry.upstreams = self.upstreams(&at)?,
                "tag_ttl" => registry.tag_ttl = self.duration(&at)?,
                "upstream_timeout" => {
                    registry.upstream_timeout = self.duration(&at)?;
                    if registry.upstream_timeout.is_zero() {
                        return Err(self.error_at(&at, "must be longer than 0s".to_string()));
                    }
                }
                "anonymous_pull" => registry.anonymous_pull = self.boolean(&at)?,
                "upstream_urls" => {
                    for (host, at) in self.table(&at)? {
                        check_upstream_host(host).map_err(|m| self.error_at(&at, m))?;
                        let url = check_upstream_url(&self.string(&at)?).map_err(|m| self.error_at(&at, m))?;
                        registry.upstream_urls.insert(host.to_owned(), url);
                    }
                }
                "upstream" => self.upstream(&at, &mut registry.upstream)?,
                _ => return Err(self.unknown(&at, REGISTRY_KEYS)),
            }
        }
        Ok(())
    }

    fn upstream(&self, at: &At, upstream: &mut UpstreamConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "url" => upstream.url = self.non_empty(&at)?,
                "username" => upstream.username = Some(self.string(&at)?),
                "password" => upstream.password = Some(Secret::new(self.string(&at)?)),
                _ => return Err(self.unknown(&at, UPSTREAM_KEYS)),
            }
        }
        Ok(())
    }

    fn tls(&self, at: &At, tls: &mut TlsConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "extra_sans" => {
                    tls.extra_sans = self
                        .array(&at)?
                        .iter()
                        .map(|at| self.string(at)?.parse::<San>().map_err(|m| self.error_at(at, m)))
                        .collect::<Result<_, _>>()?;
                }
                "cert_validity" => tls.cert_validity = self.duration(&at)?,
                _ => return Err(self.unknown(&at, TLS_KEYS)),
            }
        }
        Ok(())
    }

    fn docker(&self, at: &At, docker: &mut DockerConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "privileged" => docker.privileged = self.boolean(&at)?,
                _ => return Err(self.unknown(&at, DOCKER_KEYS)),
            }
        }
        Ok(())
    }

    fn gitlab(&self, at: &At, gitlab: &mut GitlabConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "url" => {
                    let url = self.non_empty(&at)?;
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(self.error_at(&at, format!("expected an http:// or https:// URL, found {url:?}")));
                    }
                    gitlab.url = Some(url.trim_end_matches('/').to_owned());
                }
                "token" => gitlab.token = Some(Secret::new(self.string(&at)?)),
                _ => return Err(self.unknown(&at, GITLAB_KEYS)),
            }
        }
        Ok(())
    }

    fn run(&self, at: &At, run: &mut RunConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "default_image" => {
                    let image = self.string(&at)?;
                    if image.trim().is_empty() {
                        return Err(self.error_at(&at, "an image name, not an empty string"));
                    }
                    run.default_image = Some(image);
                }
                _ => return Err(self.unknown(&at, RUN_KEYS)),
            }
        }
        Ok(())
    }

    /// `[registry] upstreams`: an array of hosts, or one comma-separated string.
    /// Empty entries (`"a,,b"`, a trailing comma) are skipped.
    fn upstreams(&self, at: &At) -> Result<Vec<String>, ConfigError> {
        let mut hosts = Vec::new();
        match at.node {
            Node::String(_) => {
                for host in self.string(at)?.split(',') {
                    self.push_host(&mut hosts, host, at)?;
                }
            }
            Node::Array(_) => {
                for item in self.array(at)? {
                    self.push_host(&mut hosts, &self.string(&item)?, &item)?;
                }
            }
            other => {
                let expected = "an array of hosts or a comma-separated string";
                return Err(self.wrong_type(at, expected, other));
            }
        }
        Ok(hosts)
    }

    fn push_host(&self, hosts: &mut Vec<String>, host: &str, at: &At) -> Result<(), ConfigError> {
        let host = host.trim();
        if !host.is_empty() {
            check_upstream_host(host).map_err(|m| self.error_at(at, m))?;
            hosts.push(host.to_owned());
        }
        Ok(())
    }

    fn entries<'n>(&self, entries: &'n [(Spanned<String>, Node)], parent: &str) -> Vec<(&'n str, At<'n>)> {
        entries
            .iter()
            .map(|(key, node)| {
                let at = At { key: join_key(parent, key.get_ref()), line: self.line_of(key.span()), node };
                (key.get_ref().as_str(), at)
            })
            .collect()
    }

    fn table<'n>(&self, at: &At<'n>) -> Result<Vec<(&'n str, At<'n>)>, ConfigError> {
        match at.node {
            Node::Table(entries) => Ok(self.entries(entries, &at.key)),
            other => Err(self.wrong_type(at, "a table", other)),
        }
    }

    fn array<'n>(&self, at: &At<'n>) -> Result<Vec<At<'n>>, ConfigError> {
        match at.node {
            Node::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, item)| At {
                    key: format!("{}[{i}]", at.key),
                    line: self.line_of(item.span()),
                    node: item.get_ref(),
                })
                .collect()),
            other => Err(self.wrong_type(at, "an array", other)),
        }
    }

    /// A string, with a `$NAME`/`${NAME}` reference resolved.
    fn string(&self, at: &At) -> Result<String, ConfigError> {
        match at.node {
            Node::String(s) => self.resolve(s, at),
            other => Err(self.wrong_type(at, "a string", other)),
        }
    }

    fn non_empty(&self, at: &At) -> Result<String, ConfigError> {
        let s = self.string(at)?;
        if s.is_empty() {
            return Err(self.error_at(at, "must not be empty"));
        }
        Ok(s)
    }

    /// `true`/`false`, or a `"$NAME"` whose value is `true` or `false`.
    fn boolean(&self, at: &At) -> Result<bool, ConfigError> {
        match at.node {
            Node::Boolean(b) => Ok(*b),
            Node::String(s) if env_reference(s).is_some() => match self.resolve(s, at)?.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                v => Err(self.error_at(at, format!("expected true or false from {s}, found {v:?}"))),
            },
            other => Err(self.wrong_type(at, "a boolean (true or false)", other)),
        }
    }

    /// A port 1-65535, or a `"$NAME"` whose value is one.
    fn port(&self, at: &At) -> Result<u16, ConfigError> {
        let n = match at.node {
            Node::Integer(n) => *n,
            Node::String(s) if env_reference(s).is_some() => {
                let v = self.resolve(s, at)?;
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| self.error_at(at, format!("expected a port number from {s}, found {v:?}")))?
            }
            other => return Err(self.wrong_type(at, "a port number", other)),
        };
        match u16::try_from(n) {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(self.error_at(at, format!("port {n} is out of range (1-65535)"))),
        }
    }

    fn duration(&self, at: &At) -> Result<Duration, ConfigError> {
        match at.node {
            Node::String(_) => parse_duration(&self.string(at)?).map_err(|m| self.error_at(at, m)),
            other => Err(self.wrong_type(at, "a duration string like \"10m\"", other)),
        }
    }

    fn resolve(&self, raw: &str, at: &At) -> Result<String, ConfigError> {
        match env_reference(raw) {
            None => Ok(raw.to_owned()),
            Some(name) => {
                (self.env)(name).ok_or_else(|| self.error_at(at, format!("environment variable {name} is not set")))
            }
        }
    }

    fn line_of(&self, span: Range<usize>) -> usize {
        let before = self.text.get(..span.start).unwrap_or(self.text);
        before.bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn error(&self, line: Option<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), line, key: key.to_owned(), message: message.into() }
    }

    fn error_at(&self, at: &At, message: impl Into<String>) -> ConfigError {
        self.error(Some(at.line), &at.key, message)
    }

    fn wrong_type(&self, at: &At, expected: &str, found: &Node) -> ConfigError {
        self.error_at(at, format!("expected {expected}, found {}", found.kind()))
    }

    fn unknown(&self, at: &At, known: &[&str]) -> ConfigError {
        self.error_at(at, format!("unknown key (expected one of: {})", known.join(", ")))
    }

    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        // toml's messages span lines; a ConfigError is one line.
        let message = if e.message().contains("$__toml_private_datetime") {
            "dates and times are not valid here".to_owned()
        } else {
            e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ")
        };
        let line = e.span().map(|span| self.line_of(span));
        self.error(line, "", format!("invalid TOML: {message}"))
    }
}

/// `parent.key`, quoting `key` when it is not a bare TOML key.
fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

#[derive(Serialize)]
struct RenderConfig<'a> {
    mock_server_port: u16,
    registry: RenderRegistry<'a>,
    tls: RenderTls,
    docker: RenderDocker,
    gitlab: RenderGitlab<'a>,
    run: RenderRun<'a>,
}

#[derive(Serialize)]
struct RenderGitlab<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct RenderRegistry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    push_through: bool,
    upstreams: &'a [String],
    tag_ttl: String,
    upstream_timeout: String,
    anonymous_pull: bool,
    upstream_urls: &'a BTreeMap<String, String>,
    upstream: RenderUpstream<'a>,
}

#[derive(Serialize)]
struct RenderUpstream<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

#[derive(Serialize)]
struct RenderTls {
    extra_sans: Vec<String>,
    cert_validity: String,
}

#[derive(Serialize)]
struct RenderDocker {
    privileged: bool,
}

#[derive(Serialize)]
struct RenderRun<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    default_image: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FILE: &str = "/home/u/.glci/config.toml";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(FILE), &env_of(&[]))
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e,
        }
    }

    fn fixture(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config").join(case)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mock_server_port, 39741);
        assert_eq!(c.registry.upstreams, ["registry.gitlab.com", "registry-1.docker.io"]);
        assert_eq!(c.registry.tag_ttl, Duration::from_secs(600));
        assert!(!c.registry.push_through);
        assert!(c.registry.anonymous_pull);
        assert_eq!(c.registry.url, None);
        assert_eq!(c.registry.password, None);
        assert_eq!(c.registry.upstream.url, "registry.gitlab.com");
        assert!(c.registry.upstream_urls.is_empty());
        assert!(c.tls.extra_sans.is_empty());
        assert_eq!(c.tls.cert_validity, Duration::from_secs(24 * 3600));
        assert!(c.docker.privileged);
    }

    #[test]
    fn gitlab_instance_and_token() {
        let c = Config::parse(
            "[gitlab]\nurl = \"https://gitlab.example.com/\"\ntoken = \"$GITLAB_TOKEN\"\n",
            Path::new(FILE),
            &env_of(&[("GITLAB_TOKEN", "glpat-secret")]),
        )
        .unwrap();
        assert_eq!(c.gitlab.url.as_deref(), Some("https://gitlab.example.com"));
        assert_eq!(c.gitlab.token.as_ref().map(|t| t.expose().to_string()).as_deref(), Some("glpat-secret"));
        assert!(!c.render_masked().contains("glpat-secret"), "{}", c.render_masked());
        assert!(c.render_masked().contains("[gitlab]"));
        assert!(!c.render_for_server().contains("glpat-secret"), "the server never gets the token");
        let e = parse_err("[gitlab]\nurl = \"gitlab.example.com\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "gitlab.url"));
        let e = parse_err("[gitlab]\ntoken = \"$NOPE\"\n");
        assert!(e.message.contains("NOPE is not set"), "{e}");
        let e = parse_err("[gitlab]\nprojects = {}\n");
        assert_eq!(e.key, "gitlab.projects");
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(dir.path(), &env_of(&[])).unwrap();
        assert_eq!(c, Config::default());
        let c = Config::load(&dir.path().join("no-such-home"), &env_of(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn upstream_timeout_must_be_positive() {
        assert_eq!(parse("").unwrap().registry.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT);
        let e = parse_err("[registry]\nupstream_timeout = \"0s\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "registry.upstream_timeout"), "{e}");
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(CONFIG_FILE)).unwrap();
        let e = Config::load(dir.path(), &env_of(&[])).unwrap_err();
        assert_eq!(e.file, dir.path().join(CONFIG_FILE));
        assert_eq!(e.line, None);
        assert!(e.message.starts_with("cannot read"), "{e}");
    }

    #[test]
    fn every_key_parsed_from_fixture() {
        let env =
            env_of(&[("GLCI_TEST_REGISTRY_PASSWORD", "reg-secret"), ("GLCI_TEST_UPSTREAM_PASSWORD", "up-secret")]);
        let c = Config::load(&fixture("full"), &env).unwrap();
        assert_eq!(c.mock_server_port, 40000);
        let r = &c.registry;
        assert_eq!(r.url.as_deref(), Some("registry.example.com"));
        assert_eq!(r.username.as_deref(), Some("my-user"));
        assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("reg-secret"));
        assert!(r.push_through);
        assert_eq!(r.upstreams, ["registry-1.docker.io", "quay.io"]);
        assert_eq!(r.tag_ttl, Duration::from_secs(30));
        assert_eq!(r.upstream_timeout, Duration::from_secs(5));
        assert!(!r.anonymous_pull);
        assert_eq!(r.upstream_urls["registry-1.docker.io"], "http://127.0.0.1:5001");
        assert_eq!(r.upstream_urls["quay.io"], "https://mirror.example.com/quay");
        assert_eq!(r.upstream.url, "gitlab.example.com");
        assert_eq!(r.upstream.username.as_deref(), Some("deploy-token"));
        assert_eq!(r.upstream.password.as_ref().map(|p| p.expose()), Some("up-secret"));
        assert_eq!(
            c.tls.extra_sans,
            [
                San::Dns("my-custom-host".into()),
                San::Ip("192.168.1.100".parse().unwrap()),
                San::Ip("::1".parse().unwrap()),
                San::Dns("*.dev.example.com".into()),
            ]
        );
        assert_eq!(c.tls.cert_validity, Duration::from_secs(7 * 86400));
        assert!(!c.docker.privileged);
    }

    #[test]
    fn comma_string_upstreams() {
        let c = Config::load(&fixture("comma-upstreams"), &env_of(&[])).unwrap();
        assert_eq!(c.registry.upstreams, ["registry.gitlab.com", "registry-1.docker.io", "quay.io"]);
        let c = parse("[registry]\nupstreams = \"a.example, ,b.example:5000,\"").unwrap();
        assert_eq!(c.registry.upstreams, ["a.example", "b.example:5000"]);
        let c = parse("[registry]\nupstreams = []").unwrap();
        assert!(c.registry.upstreams.is_empty());
    }

    #[test]
    fn dotted_and_inline_tables() {
        let c = parse("registry.push_through = true\n[registry.upstream]\nurl = \"x.example\"").unwrap();
        assert!(c.registry.push_through);
        assert_eq!(c.registry.upstream.url, "x.example");
        let c = parse("docker = { privileged = false }").unwrap();
        assert!(!c.docker.privileged);
    }

    #[test]
    fn env_references_resolved() {
        let env = env_of(&[
            ("PW", "p1"),
            ("UP_PW", "p2"),
            ("UPS", "a.example,b.example"),
            ("TTL", "5m"),
            ("PORT", "40001"),
            ("PUSH", "true"),
            ("SAN", "10.0.0.1"),
        ]);
        let text = r#"
mock_server_port = "$PORT"
[registry]
password = "$PW"
upstreams = "${UPS}"
tag_ttl = "${TTL}"
push_through = "$PUSH"
[registry.upstream]
password = "${UP_PW}"
[tls]
extra_sans = ["$SAN"]
"#;
        let c = Config::parse(text, Path::new(FILE), &env).unwrap();
        assert_eq!(c.mock_server_port, 40001);
        assert_eq!(c.registry.password, Some(Secret::from("p1")));
        assert_eq!(c.registry.upstream.password, Some(Secret::from("p2")));
        assert_eq!(c.registry.upstreams, ["a.example", "b.example"]);
        assert_eq!(c.registry.tag_ttl, Duration::from_secs(300));
        assert!(c.registry.push_through);
        assert_eq!(c.tls.extra_sans, [San::Ip("10.0.0.1".parse().unwrap())]);
    }

    #[test]
    fn strings_that_are_not_whole_references_stay_literal() {
        for literal in ["pa$$word", "$", "${}", "$1abc", "${A", "x$A", "$A-B", "${A}x"] {
            let text = format!("[registry]\npassword = {literal:?}");
            let c = parse(&text).unwrap();
            assert_eq!(c.registry.password.as_ref().map(|p| p.expose()), Some(literal));
        }
    }

    #[test]
    fn unset_variable_names_variable_file_line_and_key() {
        let e = parse("[registry]\nurl = \"r.example\"\npassword = \"$REGISTRY_PASSWORD\"\n").unwrap_err();
        assert_eq!(e.file, Path::new(FILE));
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key, "registry.password");
        assert_eq!(
            e.to_string(),
            "/home/u/.glci/config.toml:3: registry.password: \
             environment variable REGISTRY_PASSWORD is not set"
        );
        let e = parse_err("[tls]\nextra_sans = [\n  \"a.example\",\n  \"${NOPE}\",\n]");
        assert_eq!((e.line, e.key.as_str()), (Some(4), "tls.extra_sans[1]"));
        assert!(e.message.contains("NOPE"), "{e}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse_err("mock_server_port = 1\n[registry]\nbogus = 1\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "registry.bogus"));
        assert!(e.message.starts_with("unknown key"), "{e}");
        assert!(e.message.contains("push_through"), "{e}");

        let e = Config::load(&fixture("unknown-key"), &env_of(&[])).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(5), "registry.push_thorugh"));
        assert!(e.to_string().contains("unknown-key/config.toml:5: registry.push_thorugh: "), "{e}");

        let cases = [
            ("[bogus]\nx = 1", 1, "bogus"),
            ("\n\n[registry.upstream]\nurl = \"u\"\ntoken = \"t\"", 5, "registry.upstream.token"),
            ("[tls]\nsans = []", 2, "tls.sans"),
            ("[docker]\n\"odd key\" = true", 2, "docker.\"odd key\""),
            ("registry = { url = \"u\", nope = 1 }", 1, "registry.nope"),
        ];
        for (text, line, key) in cases {
            let e = parse_err(text);
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text:?}: {e}");
        }
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = parse_err("[registry]\n\npush_through = \"yes\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "registry.push_through"));
        assert_eq!(e.message, "expected a boolean (true or false), found a string");

        let cases = [
            ("registry = 5", 1, "registry"),
            ("mock_server_port = \"39741\"", 1, "mock_server_port"),
            ("mock_server_port = 1.5", 1, "mock_server_port"),
            ("[registry]\nusername = 7", 2, "registry.username"),
            ("[registry]\nupstreams = 3", 2, "registry.upstreams"),
            ("[registry]\nupstreams = [\"a\",\n 3]", 3, "registry.upstreams[1]"),
            ("[registry]\ntag_ttl = 600", 2, "registry.tag_ttl"),
            ("[registry.upstream_urls]\nx = true", 2, "registry.upstream_urls.x"),
            ("[tls]\nextra_sans = \"a.example\"", 2, "tls.extra_sans"),
            ("[docker]\nprivileged = 1", 2, "docker.privileged"),
        ];
        for (text, line, key) in cases {
            let e = parse_err(text);
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text:?}: {e}");
            assert!(e.message.starts_with("expected "), "{e}");
        }
    }

    #[test]
    fn env_value_of_wrong_form_for_bool_or_port() {
        let env = env_of(&[("V", "yes")]);
        let e = Config::parse("[docker]\nprivileged = \"$V\"", Path::new(FILE), &env).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "docker.privileged"));
        let e = Config::parse("mock_server_port = \"$V\"", Path::new(FILE), &env).unwrap_err();
        assert_eq!(e.key, "mock_server_port");
    }

    #[test]
    fn port_out_of_range() {
        for text in ["mock_server_port = 0", "mock_server_port = 65536", "mock_server_port = -1"] {
            let e = parse_err(text);
            assert_eq!((e.line, e.key.as_str()), (Some(1), "mock_server_port"));
            assert!(e.message.contains("out of range"), "{e}");
        }
        assert_eq!(parse("mock_server_port = 65535").unwrap().mock_server_port, 65535);
    }

    #[test]
    fn bad_duration() {
        let e = parse_err("[registry]\nurl = \"r\"\ntag_ttl = \"abc\"");
        assert_eq!(
            e.to_string(),
            "/home/u/.glci/config.toml:3: registry.tag_ttl: \
             invalid duration \"abc\" (use forms like 30m, 48h, 7d)"
        );
        let e = parse_err("[tls]\ncert_validity = \"0h\"");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "tls.cert_validity"));
    }

    #[test]
    fn bad_upstream_url() {
        let e = parse_err("[registry.upstream_urls]\n\"registry-1.docker.io\" = \"127.0.0.1:5001\"");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "registry.upstream_urls.\"registry-1.docker.io\""));
        assert!(e.message.contains("http:// or https://"), "{e}");
        for bad in ["ftp://x", "http://", "https:///path", "http://a b"] {
            let text = format!("[registry.upstream_urls]\nh = {bad:?}");
            assert!(parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_upstream_host() {
        let e = parse_err("[registry]\nupstreams = \"registry.gitlab.com,https://quay.io\"");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "registry.upstreams"));
        assert!(e.message.contains("upstream_urls"), "{e}");
        let e = parse_err("[registry]\nupstreams = [\n\"a\",\n\"b/c\"]");
        assert_eq!((e.line, e.key.as_str()), (Some(4), "registry.upstreams[1]"));
    }

    #[test]
    fn bad_san() {
        let e = parse_err("[tls]\nextra_sans = [\n  \"ok.example\",\n  \"not a host\",\n]");
        assert_eq!((e.line, e.key.as_str()), (Some(4), "tls.extra_sans[1]"));
        assert!(e.message.starts_with("invalid SAN \"not a host\""), "{e}");
    }

    #[test]
    fn san_grammar() {
        for ok in ["a", "my-custom-host", "a.b.example", "*.example.com", "x1.io", "127.0.0.1", "fe80::1"] {
            assert!(ok.parse::<San>().is_ok(), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 128].join("."); // 255 characters
        for bad in [
            "",
            ".",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a b",
            "*.",
            "*",
            "a.*.b",
            "10.0.0.300",
            "[::1]",
            "http://a",
            "a.",
            &long_label,
            &long_name,
        ] {
            assert!(bad.parse::<San>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_line_number() {
        let e = parse_err("[registry]\nurl = \"a\"\n[registry]\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.starts_with("invalid TOML: "), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let e = parse_err("a = \n");
        assert_eq!(e.line, Some(1));
        let e = parse_err("[registry]\ntag_ttl = 1979-05-27\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("dates and times"), "{e}");
    }

    #[test]
    fn error_without_line_or_key() {
        let e = ConfigError {
            file: PathBuf::from("/x/config.toml"),
            line: None,
            key: String::new(),
            message: "cannot read: denied".into(),
        };
        assert_eq!(e.to_string(), "/x/config.toml: cannot read: denied");
    }

    #[test]
    fn parse_duration_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("007m"), Ok(Duration::from_secs(420)));
        for bad in [
            "",
            "0s",
            "0d",
            "10",
            "m",
            "10x",
            "1.5h",
            "-1m",
            "+1m",
            " 10m",
            "10m ",
            "10 m",
            "1h30m",
            "10M",
            "abc",
            "99999999999999999999s",
            "999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("abc"), Err("invalid duration \"abc\" (use forms like 30m, 48h, 7d)".to_owned()));
    }

    #[test]
    fn format_duration_round_trips() {
        for (text, shown) in
            [("30s", "30s"), ("90s", "90s"), ("10m", "10m"), ("120m", "2h"), ("1d", "24h"), ("7d", "168h")]
        {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), shown);
            assert_eq!(parse_duration(shown), Ok(d));
        }
    }

    #[test]
    fn glci_home_from_env() {
        assert_eq!(glci_home(&env_of(&[("GLCI_HOME", "/g"), ("HOME", "/h")])), PathBuf::from("/g"));
        assert_eq!(glci_home(&env_of(&[("HOME", "/h")])), PathBuf::from("/h/.glci"));
        assert_eq!(glci_home(&env_of(&[("GLCI_HOME", ""), ("HOME", "/h")])), PathBuf::from("/h/.glci"));
        assert_eq!(glci_home(&env_of(&[])), PathBuf::from(".glci"));
        assert_eq!(config_path(Path::new("/g")), PathBuf::from("/g/config.toml"));
    }

    #[test]
    fn masked_rendering_never_shows_passwords() {
        let env =
            env_of(&[("GLCI_TEST_REGISTRY_PASSWORD", "reg-secret"), ("GLCI_TEST_UPSTREAM_PASSWORD", "up-secret")]);
        let c = Config::load(&fixture("full"), &env).unwrap();
        let text = c.render_masked();
        assert!(!text.contains("reg-secret") && !text.contains("up-secret"), "{text}");
        assert_eq!(text.matches("password = \"***\"").count(), 2, "{text}");
        // The rendering is itself a valid config with the same values.
        let back = parse(&text).unwrap();
        assert_eq!(back.registry.password, Some(Secret::from("***")));
        let mut expected = c.clone();
        expected.registry.password = Some(Secret::from("***"));
        expected.registry.upstream.password = Some(Secret::from("***"));
        assert_eq!(back, expected);
    }

    #[test]
    fn masked_rendering_of_defaults() {
        let text = Config::default().render_masked();
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains("[registry]\npush_through = false\n"), "no url/username: {text}");
        assert!(text.contains("mock_server_port = 39741"), "{text}");
        assert!(text.contains("upstreams = [\"registry.gitlab.com\", \"registry-1.docker.io\"]"), "{text}");
        assert!(text.contains("tag_ttl = \"10m\""), "{text}");
        assert!(text.contains("cert_validity = \"24h\""), "{text}");
        assert!(text.contains("privileged = true"), "{text}");
        assert_eq!(parse(&text).unwrap(), Config::default());
    }

    #[test]
    fn masked_rendering_normalises_comma_upstreams() {
        let c = Config::load(&fixture("comma-upstreams"), &env_of(&[])).unwrap();
        let text = c.render_masked();
        assert!(
            text.contains("upstreams = [\"registry.gitlab.com\", \"registry-1.docker.io\", \"quay.io\"]"),
            "{text}"
        );
    }
}
