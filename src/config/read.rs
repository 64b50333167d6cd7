//! The line-keeping TOML walker: the file is read into a small tree whose keys carry byte
//! spans (`toml::Spanned`), then walked by hand into a [`Config`], so every unknown key,
//! wrong type and bad value names its dotted key and line. Spans sit on keys, not values,
//! because toml 0.8 has no span for implicit tables (`[registry.upstream]` without
//! `[registry]`).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::values::{check_upstream_host, check_upstream_url, env_reference, parse_duration};
use super::{
    Config, ConfigError, DockerConfig, GitlabConfig, RegistryConfig, RunConfig, San, StorageConfig, TlsConfig,
    UpstreamConfig,
};
use crate::secret::Secret;

/// Parses the text of a config file; `file` is only used in errors.
pub(super) fn parse(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let reader = Reader { file, text, env };
    let root = toml::from_str::<Node>(text).map_err(|e| reader.syntax_error(&e))?;
    reader.config(&root)
}

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

const ROOT_KEYS: &[&str] = &["mock_server_port", "registry", "tls", "docker", "gitlab", "run", "storage"];
const STORAGE_KEYS: &[&str] = &["url", "s3"];
const S3_KEYS: &[&str] = &["endpoint", "region", "access_key_id", "secret_access_key", "path_style", "redirect"];
const GITLAB_KEYS: &[&str] = &["url", "token", "projects"];
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
                "storage" => self.storage(&at, &mut config.storage)?,
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
                "projects" => {
                    for (project, at) in self.table(&at)? {
                        let bad = project.is_empty() || project.starts_with('/') || project.ends_with('/');
                        if bad || project.contains(char::is_whitespace) || project.contains("//") {
                            return Err(
                                self.error_at(&at, format!("{project:?} is not a project path (group/project)"))
                            );
                        }
                        let dir = PathBuf::from(self.non_empty(&at)?);
                        let dir = match self.file.parent() {
                            Some(base) if dir.is_relative() => base.join(dir),
                            _ => dir,
                        };
                        gitlab.projects.insert(project.to_owned(), dir);
                    }
                }
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

    fn storage(&self, at: &At, storage: &mut StorageConfig) -> Result<(), ConfigError> {
        for (name, at) in self.table(at)? {
            match name {
                "url" => storage.url = Some(self.non_empty(&at)?),
                "s3" => {
                    for (name, at) in self.table(&at)? {
                        let s3 = &mut storage.s3;
                        match name {
                            "endpoint" => {
                                let url = self.non_empty(&at)?;
                                if !(url.starts_with("https://") || url.starts_with("http://")) {
                                    return Err(self
                                        .error_at(&at, format!("expected an http:// or https:// URL, found {url:?}")));
                                }
                                s3.endpoint = Some(url.trim_end_matches('/').to_owned());
                            }
                            "region" => s3.region = Some(self.non_empty(&at)?),
                            "access_key_id" => s3.access_key_id = Some(Secret::new(self.non_empty(&at)?)),
                            "secret_access_key" => s3.secret_access_key = Some(Secret::new(self.non_empty(&at)?)),
                            "path_style" => s3.path_style = Some(self.boolean(&at)?),
                            "redirect" => s3.redirect = self.boolean(&at)?,
                            _ => return Err(self.unknown(&at, S3_KEYS)),
                        }
                    }
                }
                _ => return Err(self.unknown(&at, STORAGE_KEYS)),
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
