//! The pull-through cache (DESIGN §7): which upstream serves a name, tag revalidation after
//! `tag_ttl` (stale copy served when the upstream cannot be reached), manifests fetched and
//! checked before they are stored, blobs streamed to the client while they are written.
//! Upstream HTTP is in `upstream.rs`, the single-flight streaming in `fetch.rs`.

pub mod credentials;
pub mod fetch;
pub mod upstream;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fetch::{Download, Inflight, Start};
use upstream::{Target, UpstreamClient, UpstreamError};

use crate::auth::unix;
use crate::clock::Clock;
use crate::http::{Body, Response};
use crate::registry::backend::{Spool, Storage};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::manifest;
use crate::registry::names::{Algorithm, Digest, Name, Reference};
use crate::registry::storage::blobs::digest_of;
use crate::registry::storage::{Origin, StoreError};
use crate::registry::DIGEST_HEADER;

/// The manifest types we ask upstreams for, most specific first.
pub const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

const DOCKER_HUB: &str = "registry-1.docker.io";

/// Where a repository name is fetched from: an upstream host and the path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub host: String,
    pub repository: String,
}

/// Docker Hub answers to several names; its registry endpoint is `registry-1.docker.io`.
pub fn canonical_host(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// True when `s` is a registry host as `?ns=` must name one: `host[:port]`, the host a DNS name
/// or an IP address (IPv6 in brackets). Nothing else may reach an upstream URL: no path, query,
/// user-info or control byte of a client's making.
pub fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (s, None),
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    };
    port_ok && host_ok
}

/// Docker Hub's official images live under `library/`.
fn upstream_path(host: &str, path: &str) -> String {
    if host == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    }
}

/// A first name component that names a registry host (as docker decides: a dot or `localhost`).
fn is_host(component: &str) -> bool {
    component.contains('.') || component == "localhost"
}

/// True when `name` or `?ns=` names an upstream explicitly (rather than the configured list).
fn is_routed(name: &str, ns: Option<&str>) -> bool {
    name.split_once('/').is_some_and(|(first, _)| is_host(first)) || ns.is_some_and(|n| !n.is_empty())
}

/// The upstreams to try for `name`, in order (pure). A host as first component wins, then
/// `?ns=`, then every configured upstream in turn.
pub fn sources(name: &str, ns: Option<&str>, upstreams: &[String]) -> Vec<Source> {
    if let Some((first, rest)) = name.split_once('/') {
        if is_host(first) {
            let host = canonical_host(first);
            let repository = upstream_path(&host, rest);
            return vec![Source { host, repository }];
        }
    }
    if let Some(ns) = ns.filter(|n| !n.is_empty()) {
        let host = canonical_host(ns);
        let repository = upstream_path(&host, name);
        return vec![Source { host, repository }];
    }
    upstreams
        .iter()
        .map(|u| {
            let host = canonical_host(u);
            let repository = upstream_path(&host, name);
            Source { host, repository }
        })
        .collect()
}

pub struct ProxyOptions {
    pub upstreams: Vec<String>,
    pub tag_ttl: Duration,
    pub max_manifest_bytes: u64,
    /// "Now" for `tag_ttl` (tests move it: `clock`).
    pub clock: Clock,
}

struct Inner {
    upstreams: Vec<String>,
    tag_ttl: Duration,
    max_manifest_bytes: u64,
    client: Arc<UpstreamClient>,
    inflight: Inflight,
    clock: Clock,
}

pub struct Proxy {
    inner: Arc<Inner>,
}

pub fn upstream_error(e: UpstreamError) -> ApiError {
    let message = e.to_string();
    match e {
        UpstreamError::NotFound { .. } => ApiError::new(OciCode::Unavailable, message).with_status(404),
        UpstreamError::Timeout { .. } => ApiError::new(OciCode::Unavailable, message).with_status(504),
        UpstreamError::Status { status: 429, retry_after, .. } => {
            let error = ApiError::new(OciCode::TooManyRequests, message);
            match retry_after {
                Some(after) => error.with_header("Retry-After", after),
                None => error,
            }
        }
        UpstreamError::Unreachable { .. } | UpstreamError::Status { .. } | UpstreamError::Invalid { .. } => {
            ApiError::new(OciCode::Unavailable, message)
        }
        UpstreamError::Local(e) => ApiError::from(e),
    }
}

fn invalid(source: &Source, detail: impl Into<String>) -> UpstreamError {
    UpstreamError::Invalid { host: source.host.clone(), detail: detail.into() }
}

/// A store failure while caching `what`: our own I/O (a full disk) is ours to answer; a body
/// that broke or hashed wrong is the upstream's.
fn caching_failed(source: &Source, what: &str, e: StoreError) -> UpstreamError {
    match e {
        StoreError::Io { .. } => UpstreamError::Local(e),
        other => invalid(source, format!("{what}: {other}")),
    }
}

enum Fetched {
    Stored,
    /// Every source said 404.
    Missing,
}

impl Proxy {
    pub fn new(options: ProxyOptions, client: Arc<UpstreamClient>) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                upstreams: options.upstreams,
                tag_ttl: options.tag_ttl,
                max_manifest_bytes: options.max_manifest_bytes,
                client,
                inflight: Inflight::default(),
                clock: options.clock,
            }),
        }
    }

    /// Makes the local copy of a manifest present and fresh enough to serve: fetched on a miss,
    /// revalidated when it is a cached tag older than `tag_ttl`. A stale tag is served as it is
    /// when the upstream cannot be reached. `Ok` with nothing stored means no upstream has it.
    pub fn refresh_manifest(
        &self,
        store: &dyn Storage,
        name: &Name,
        reference: &Reference,
        ns: Option<&str>,
    ) -> Result<(), ApiError> {
        let sources = sources(name.as_str(), ns, &self.inner.upstreams);
        if sources.is_empty() {
            return Ok(());
        }
        if let Some(digest) = store.resolve(name, reference)? {
            let Reference::Tag(tag) = reference else { return Ok(()) };
            let Some(origin) = store.manifest_origin(name, &digest)? else { return Ok(()) };
            let fresh = store
                .tag_checked_at(name, tag)?
                // A time ahead of ours (the clock of the store that stamped it) is "just now".
                .map(|t| self.inner.clock.now().duration_since(t).unwrap_or_default())
                .is_some_and(|age| age < self.inner.tag_ttl);
            if fresh {
                return Ok(());
            }
            let source = sources
                .iter()
                .find(|s| s.host == origin.upstream)
                .cloned()
                .unwrap_or_else(|| Source { host: origin.upstream.clone(), repository: name.to_string() });
            if let Err(e) = self.revalidate(store, name, reference, &digest, &source) {
                crate::log::warn("pull_through", &format!("serving {name}:{tag} from cache: {e}"));
            }
            return Ok(());
        }
        match self.fetch_manifest(store, name, reference, &sources)? {
            Fetched::Stored | Fetched::Missing => Ok(()),
        }
    }

    /// A cached tag is old: one HEAD upstream (free under Docker Hub's rate limits) tells
    /// whether it moved; only then is the manifest fetched again.
    fn revalidate(
        &self,
        store: &dyn Storage,
        name: &Name,
        reference: &Reference,
        digest: &Digest,
        source: &Source,
    ) -> Result<(), UpstreamError> {
        let target = Target { host: &source.host, repository: &source.repository };
        let response =
            self.inner.client.request("HEAD", &target, &format!("manifests/{reference}"), Some(MANIFEST_ACCEPT))?;
        let upstream_digest = response.header(DIGEST_HEADER).map(str::to_string);
        if upstream_digest.as_deref() == Some(digest.to_string().as_str()) {
            if let Reference::Tag(tag) = reference {
                store.touch_tag(name, tag, digest, self.inner.clock.now()).map_err(UpstreamError::Local)?;
            }
            return Ok(());
        }
        self.fetch_manifest_from(store, name, reference, source)
    }

    fn fetch_manifest(
        &self,
        store: &dyn Storage,
        name: &Name,
        reference: &Reference,
        sources: &[Source],
    ) -> Result<Fetched, ApiError> {
        let mut failure = None;
        for source in sources {
            match self.fetch_manifest_from(store, name, reference, source) {
                Ok(()) => return Ok(Fetched::Stored),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    crate::log::warn("pull_through", &e.to_string());
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(upstream_error(e)),
            None => Ok(Fetched::Missing),
        }
    }

    /// GETs a manifest, checks it (size, JSON, digest) and stores it with its origin.
    fn fetch_manifest_from(
        &self,
        store: &dyn Storage,
        name: &Name,
        reference: &Reference,
        source: &Source,
    ) -> Result<(), UpstreamError> {
        let target = Target { host: &source.host, repository: &source.repository };
        let response =
            self.inner.client.request("GET", &target, &format!("manifests/{reference}"), Some(MANIFEST_ACCEPT))?;
        let content_type = response.header("Content-Type").map(str::to_string);
        let claimed = response.header(DIGEST_HEADER).map(str::to_string);
        let limit = self.inner.max_manifest_bytes;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(source, format!("reading the manifest: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(invalid(source, "manifest too large"));
        }
        let parsed = manifest::parse(&bytes, content_type.as_deref()).map_err(|e| invalid(source, e))?;
        let (digest, tag) = match reference {
            Reference::Digest(d) => (digest_of(d.algorithm(), &bytes), None),
            Reference::Tag(t) => (digest_of(Algorithm::Sha256, &bytes), Some(t)),
        };
        if let Reference::Digest(wanted) = reference {
            if &digest != wanted {
                return Err(invalid(source, format!("manifest {wanted} has digest {digest}")));
            }
        }
        if let Some(claimed) = claimed.filter(|c| c.starts_with("sha256:") && digest.algorithm() == Algorithm::Sha256) {
            if claimed != digest.to_string() {
                return Err(invalid(source, format!("manifest claimed {claimed}, has digest {digest}")));
            }
        }
        let origin = Origin { upstream: source.host.clone(), fetched_at: unix(SystemTime::now()) };
        store.put_cached_manifest(name, &digest, &bytes, &parsed, tag, &origin).map_err(UpstreamError::Local)?;
        // The tag's check time on the clock `tag_ttl` is measured by (a test's may run ahead).
        match tag {
            Some(tag) => store.touch_tag(name, tag, &digest, self.inner.clock.now()).map_err(UpstreamError::Local),
            None => Ok(()),
        }
    }

    /// A blob missing locally: for HEAD, asks upstream; for GET, joins or starts the download and
    /// streams it. `Ok(None)` when no upstream has it.
    pub fn blob(
        &self,
        store: &dyn Storage,
        name: &Name,
        digest: &Digest,
        ns: Option<&str>,
        head: bool,
    ) -> Result<Option<Response>, ApiError> {
        let sources = sources(name.as_str(), ns, &self.inner.upstreams);
        if sources.is_empty() {
            return Ok(None);
        }
        if head {
            // A HEAD on a hostless name none of whose manifests came from upstream is a push
            // asking which blobs to upload (pulls ask for the manifest first, which records its
            // origin): answer from here, and keep the push's digests from the upstreams.
            if !is_routed(name.as_str(), ns) && !store.has_cached_manifests(name)? {
                return Ok(None);
            }
            return self.head_blob(digest, &sources);
        }
        let origin_name = name.clone();
        let download = self.inner.inflight.join_or_start(name, digest, |download| {
            let inner = Arc::clone(&self.inner);
            let store = store.shared();
            let spawned = std::thread::Builder::new().name("glci-fetch".into()).spawn({
                let download = Arc::clone(&download);
                let digest = digest.clone();
                move || {
                    let outcome = inner.download(store.as_ref(), &origin_name, &digest, &sources, &download);
                    // Out of the table before the outcome is known: a later miss starts afresh
                    // instead of joining (and replaying) a failure.
                    inner.inflight.remove(&origin_name, &digest);
                    download.finished(outcome);
                }
            });
            if let Err(e) = spawned {
                self.inner.inflight.remove(name, digest);
                download.finished(Err(ApiError::internal("pull-through", &e)));
            }
        });
        match download.wait_start() {
            Start::Streaming { reader, total } => Ok(Some(
                Response::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .header(DIGEST_HEADER, digest.to_string())
                    .body(match total {
                        Some(len) => Body::Growing { source: Box::new(reader), len },
                        None => Body::Reader { reader: Box::new(reader), len: None },
                    }),
            )),
            Start::Failed(e) if e.status == 404 => Ok(None),
            Start::Failed(e) => Err(e),
        }
    }

    fn head_blob(&self, digest: &Digest, sources: &[Source]) -> Result<Option<Response>, ApiError> {
        let mut failure = None;
        for source in sources {
            let target = Target { host: &source.host, repository: &source.repository };
            match self.inner.client.request("HEAD", &target, &format!("blobs/{digest}"), None) {
                Ok(response) => {
                    let mut answer = Response::new(200)
                        .header("Content-Type", "application/octet-stream")
                        .header(DIGEST_HEADER, digest.to_string());
                    if let Some(len) = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok()) {
                        answer = answer.header("Content-Length", len.to_string());
                    }
                    return Ok(Some(answer));
                }
                Err(e) if e.is_not_found() => {}
                // A blob HEAD is the existence check before an upload: an upstream that cannot
                // be reached (an offline host) must not block pushing a project's own images
                // (issue 8); it answers 404 and the client uploads. GETs still say 502.
                Err(UpstreamError::Unreachable { .. }) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(None), |e| Err(upstream_error(e)))
    }
}

/// What a download's clients read while the store writes the blob (`Storage::cache_blob`).
struct Follow {
    download: Arc<Download>,
    total: Option<u64>,
}

impl Spool for Follow {
    fn started(&self, file: Arc<std::fs::File>) {
        self.download.started(file, self.total);
    }
    fn advanced(&self, stored: u64) {
        self.download.advanced(stored);
    }
}

impl Inner {
    /// The download thread's work: GET from the first source that has the blob, stream it into a
    /// temp file that readers follow, verify, commit, and link it into every repository that
    /// asked for it.
    fn download(
        &self,
        store: &dyn Storage,
        name: &Name,
        digest: &Digest,
        sources: &[Source],
        download: &Arc<Download>,
    ) -> Result<(), ApiError> {
        let mut failure = None;
        for source in sources {
            let target = Target { host: &source.host, repository: &source.repository };
            let response = match self.client.request("GET", &target, &format!("blobs/{digest}"), None) {
                Ok(r) => r,
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    crate::log::warn("pull_through", &e.to_string());
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let total = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok());
            let origin = Origin { upstream: source.host.clone(), fetched_at: unix(SystemTime::now()) };
            let spool = Arc::new(Follow { download: Arc::clone(download), total });
            store.cache_blob(name, digest, &mut response.into_reader(), total, &origin, spool).map_err(|e| {
                let e = match e {
                    StoreError::SizeMismatch { actual, .. } => {
                        invalid(source, format!("blob {digest} ended after {actual} bytes"))
                    }
                    other => caching_failed(source, &format!("blob {digest}"), other),
                };
                upstream_error(e)
            })?;
            return Ok(());
        }
        Err(match failure {
            Some(e) => upstream_error(e),
            None => ApiError::new(OciCode::BlobUnknown, format!("no upstream has blob {digest}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(host: &str, repository: &str) -> Source {
        Source { host: host.into(), repository: repository.into() }
    }

    #[test]
    fn namespaces_are_hosts_and_nothing_else() {
        for ok in
            ["docker.io", "registry.gitlab.com", "localhost:5000", "127.0.0.1:39741", "[::1]:5000", "[::1]", "a-b.c"]
        {
            assert!(is_registry_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a\0b",
            "a\r\nX: 1",
            "h/v2/x?",
            "h:1/../",
            "user:pw@h",
            "h#",
            "h?a=",
            "h:1@t:2",
            "h:0",
            "h:65536",
            "h:",
            "::1",
            "[::1",
            "-h",
            "h-",
            "a..b",
            "h:12a",
        ] {
            assert!(!is_registry_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn explicit_routes() {
        assert!(is_routed("registry.gitlab.com/g/p", None));
        assert!(is_routed("alpine", Some("docker.io")));
        assert!(!is_routed("alpine", None));
        assert!(!is_routed("g/p/app", Some("")));
    }

    #[test]
    fn routing() {
        let ups = vec!["registry.gitlab.com".to_string(), "registry-1.docker.io".to_string()];
        assert_eq!(sources("registry.gitlab.com/g/p/app", None, &ups), vec![s("registry.gitlab.com", "g/p/app")]);
        assert_eq!(sources("docker.io/alpine", None, &ups), vec![s(DOCKER_HUB, "library/alpine")]);
        assert_eq!(sources("docker.io/library/alpine", None, &ups), vec![s(DOCKER_HUB, "library/alpine")]);
        assert_eq!(sources("alpine", Some("docker.io"), &ups), vec![s(DOCKER_HUB, "library/alpine")]);
        assert_eq!(sources("g/app", Some("registry.gitlab.com"), &ups), vec![s("registry.gitlab.com", "g/app")]);
        assert_eq!(
            sources("alpine", None, &ups),
            vec![s("registry.gitlab.com", "alpine"), s(DOCKER_HUB, "library/alpine")]
        );
        assert_eq!(sources("localhost/x", None, &ups), vec![s("localhost", "x")]);
        assert!(sources("alpine", None, &[]).is_empty());
    }
}
