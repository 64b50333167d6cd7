//! The GitLab instance remote `include:`s are read from (issue 17), over HTTP with ureq, and the
//! cache of what was read, under `$GLCI_HOME/include-cache/`. Owns which URL each include form
//! is (GitLab's repository files API `/api/v4/projects/:id/repository/files/:path/raw?ref=`
//! for `project`, `component` and `template`, the URL itself for `remote`), how a component's
//! version is resolved (`~latest`, partial versions: the project's releases), and when a cached
//! file is fetched again: a file at a commit SHA or a tag once, anything else (a branch, a
//! remote URL, a template, a `~latest` lookup) after [`RECHECK`]; with the instance out of
//! reach the cached copy is used and a note says so. `--offline`: the cache only.
//!
//! The token (`[gitlab] token`) is sent as `PRIVATE-TOKEN` to the instance only, never to a
//! `remote` URL, and never appears in an error or note. Below `cli`; prints nothing.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::encoding::hex;
use crate::pipeline::parse::{Fetched, Source};
use crate::secret::Secret;

/// How long a file at a branch (or any ref that may move) is used before it is fetched again.
pub const RECHECK: Duration = Duration::from_secs(5 * 60);
/// GitLab serves its own templates from its source: this project, this path, this branch.
pub const TEMPLATES_PROJECT: &str = "gitlab-org/gitlab";
pub const TEMPLATES_DIR: &str = "lib/gitlab/ci/templates";
pub const TEMPLATES_REF: &str = "master";
/// Largest included file read (GitLab's `ci_max_total_yaml_size_bytes` is far above any file).
const MAX_FILE: u64 = 16 * 1024 * 1024;

pub struct Instance {
    /// `https://gitlab.example.com`, no trailing `/`.
    url: String,
    token: Option<Secret>,
    cache: PathBuf,
    offline: bool,
    agent: ureq::Agent,
    /// Stale copies used because the instance could not be reached, for `cli` to show.
    notes: Mutex<Vec<String>>,
}

/// Why a fetch failed.
enum Failure {
    NotFound,
    /// The instance or host could not be reached, or answered with an error status.
    Other(String),
}

impl Instance {
    pub fn new(url: &str, token: Option<Secret>, home: &std::path::Path, offline: bool) -> Instance {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(30))
            .redirects(5)
            .user_agent(concat!("glci/", env!("CARGO_PKG_VERSION")))
            .build();
        Instance {
            url: url.trim_end_matches('/').to_owned(),
            token,
            cache: home.join("include-cache"),
            offline,
            agent,
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The notes gathered so far (stale copies used), emptied.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The file `source` names (never `Source::Local`).
    pub fn fetch(&self, source: &Source) -> Result<Fetched, String> {
        match source {
            Source::Local(path) => Err(format!("{path} is a local file")),
            Source::Remote(url) => {
                let text = self.cached(url, false, false).map_err(|f| self.explain(f, &format!("`{url}`")))?;
                Ok(Fetched { text, name: url.clone(), project: None })
            }
            Source::Template(name) => {
                let path = format!("{TEMPLATES_DIR}/{name}");
                let url = self.raw_file_url(TEMPLATES_PROJECT, &path, Some(TEMPLATES_REF));
                let text = self.cached(&url, true, false).map_err(|f| {
                    self.explain(f, &format!("template `{name}` ({TEMPLATES_PROJECT}:{path} at {TEMPLATES_REF})"))
                })?;
                Ok(Fetched { text, name: format!("{TEMPLATES_PROJECT}@{TEMPLATES_REF}:{path}"), project: None })
            }
            Source::Project { project, reference, file } => {
                let file = file.trim_start_matches('/');
                let reference = reference.clone().unwrap_or_else(|| "HEAD".to_owned());
                let immutable = self.is_fixed(project, &reference);
                let url = self.raw_file_url(project, file, Some(&reference));
                let text = self
                    .cached(&url, true, immutable)
                    .map_err(|f| self.explain(f, &format!("file `{file}` of project `{project}` at `{reference}`")))?;
                Ok(Fetched {
                    text,
                    name: format!("{project}@{reference}:{file}"),
                    project: Some((project.clone(), reference)),
                })
            }
            Source::Component(address) => self.component(address),
        }
    }

    /// `<host>/<group>/<project>/<name>@<version>`: `templates/<name>.yml`, else
    /// `templates/<name>/template.yml`, at the version (resolved against the releases when it
    /// is `~latest` or partial).
    fn component(&self, address: &str) -> Result<Fetched, String> {
        let (path, version) = address.rsplit_once('@').ok_or("expected `<host>/<project>/<name>@<version>`")?;
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) || version.is_empty() {
            return Err("expected `<host>/<project path>/<name>@<version>`".into());
        }
        let host = parts.remove(0);
        let name = parts.pop().expect("three parts at least");
        let project = parts.join("/");
        let own_host = self.url.split_once("://").map(|(_, h)| h).unwrap_or(&self.url);
        if host != own_host {
            return Err(format!("the host `{host}` is not the GitLab instance `{own_host}` ([gitlab] url)"));
        }
        let reference = self.component_version(&project, version)?;
        let immutable = self.is_fixed(&project, &reference);
        let mut last = Failure::NotFound;
        for file in [format!("templates/{name}.yml"), format!("templates/{name}/template.yml")] {
            let url = self.raw_file_url(&project, &file, Some(&reference));
            match self.cached(&url, true, immutable) {
                Ok(text) => {
                    let name = format!("{project}@{reference}:{file}");
                    return Ok(Fetched { text, name, project: Some((project.clone(), reference)) });
                }
                Err(Failure::NotFound) => {}
                // A 404 of the first form is not cached: with the instance out of reach the
                // second may still be in the cache, so both are tried before giving up.
                Err(other) => last = other,
            }
        }
        let what =
            format!("templates/{name}.yml or templates/{name}/template.yml of project `{project}` at `{reference}`");
        Err(self.explain(last, &what))
    }

    /// A version as written, or the highest release matching `~latest` / `1` / `1.2`.
    fn component_version(&self, project: &str, version: &str) -> Result<String, String> {
        let wanted: Option<Vec<u64>> = match version {
            "~latest" => Some(Vec::new()),
            v if v.split('.').count() < 3 && v.split('.').all(|n| n.parse::<u64>().is_ok()) => {
                Some(v.split('.').filter_map(|n| n.parse().ok()).collect())
            }
            _ => None,
        };
        let Some(wanted) = wanted else { return Ok(version.to_owned()) };
        let url = format!("{}/api/v4/projects/{}/releases?per_page=100", self.url, encode(project));
        let text =
            self.cached(&url, true, false).map_err(|f| self.explain(f, &format!("the releases of `{project}`")))?;
        let releases: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("the releases of `{project}` are not JSON: {e}"))?;
        let best = releases
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["tag_name"].as_str())
            .filter_map(|tag| Some((semver(tag)?, tag)))
            .filter(|(v, _)| v.starts_with(&wanted))
            .max();
        match best {
            Some((_, tag)) => Ok(tag.to_owned()),
            None => Err(format!("project `{project}` has no release matching `{version}`")),
        }
    }

    /// Whether `reference` cannot move: a full commit SHA, or a tag of `project` (asked once).
    fn is_fixed(&self, project: &str, reference: &str) -> bool {
        if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return true;
        }
        let url = format!("{}/api/v4/projects/{}/repository/tags/{}", self.url, encode(project), encode(reference));
        // A tag stays a tag: the answer is kept for good; "not a tag" is asked again later.
        self.cached(&url, true, true).is_ok()
    }

    fn raw_file_url(&self, project: &str, file: &str, reference: Option<&str>) -> String {
        let mut url = format!("{}/api/v4/projects/{}/repository/files/{}/raw", self.url, encode(project), encode(file));
        if let Some(reference) = reference {
            url.push_str(&format!("?ref={}", encode(reference)));
        }
        url
    }

    fn explain(&self, failure: Failure, what: &str) -> String {
        match failure {
            Failure::NotFound => format!("{what} does not exist (or is not visible with [gitlab] token)"),
            Failure::Other(message) => message,
        }
    }

    /// `url`'s body from the cache when it is fresh (or `fixed`), else fetched and cached.
    fn cached(&self, url: &str, instance: bool, fixed: bool) -> Result<String, Failure> {
        let path = self.cache.join(format!("{}.yml", hex(&Sha256::digest(url.as_bytes()))));
        let cached = fs::read_to_string(&path).ok();
        let age =
            fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
        if let Some(text) = &cached {
            if fixed || self.offline || age.is_some_and(|a| a < RECHECK) {
                return Ok(text.clone());
            }
        }
        if self.offline {
            return Err(Failure::Other(format!("not in the include cache, and --offline forbids fetching {url}")));
        }
        match self.get(url, instance) {
            Ok(text) => {
                // A cache that cannot be written only costs a fetch next time.
                let _ = crate::durable::replace(&path, text.as_bytes());
                Ok(text)
            }
            Err(Failure::Other(message)) if cached.is_some() => {
                self.notes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("using the cached copy of {url}: {message}"));
                Ok(cached.unwrap_or_default())
            }
            Err(failure) => Err(failure),
        }
    }

    fn get(&self, url: &str, instance: bool) -> Result<String, Failure> {
        let mut request = self.agent.get(url);
        if let (true, Some(token)) = (instance, &self.token) {
            request = request.set("PRIVATE-TOKEN", token.expose());
        }
        match request.call() {
            Ok(response) => {
                let mut text = String::new();
                response
                    .into_reader()
                    .take(MAX_FILE)
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::Other(format!("reading {url}: {e}")))?;
                Ok(text)
            }
            Err(ureq::Error::Status(404, _)) => Err(Failure::NotFound),
            Err(ureq::Error::Status(status, _)) => Err(Failure::Other(format!("{url} answered {status}"))),
            Err(ureq::Error::Transport(t)) => Err(Failure::Other(format!("cannot reach {url}: {}", t.kind()))),
        }
    }
}

/// `1.2.3` or `v1.2.3` (no pre-release part) → `[1, 2, 3]`.
fn semver(tag: &str) -> Option<Vec<u64>> {
    let numbers: Vec<u64> =
        tag.strip_prefix('v').unwrap_or(tag).split('.').map(|n| n.parse().ok()).collect::<Option<_>>()?;
    (numbers.len() == 3).then_some(numbers)
}

/// Percent-encodes all but RFC 3986's unreserved characters (so `/` becomes `%2F`, as GitLab's
/// API wants project paths and file paths).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_paths_as_the_api_wants() {
        assert_eq!(encode("group/sub/project"), "group%2Fsub%2Fproject");
        assert_eq!(encode("templates/a b.yml"), "templates%2Fa%20b.yml");
        assert_eq!(encode("v1.2~x_y-z"), "v1.2~x_y-z");
    }

    #[test]
    fn semantic_versions() {
        assert_eq!(semver("1.2.3"), Some(vec![1, 2, 3]));
        assert_eq!(semver("v10.0.1"), Some(vec![10, 0, 1]));
        assert_eq!(semver("1.2"), None);
        assert_eq!(semver("1.2.3-rc1"), None);
        assert!(semver("1.10.0") > semver("1.9.9"));
    }
}
