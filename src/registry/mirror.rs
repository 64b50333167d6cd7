//! Push-through (DESIGN §8): a manifest PUT by a job whose token carries push-through is
//! mirrored to `[registry.upstream] url` inside the same request — child manifests of an
//! index first, then for each blob a HEAD probe and an upload of what is missing, then the
//! manifest under the same repository path. Idempotent: a retry uploads only what the upstream
//! still lacks. Upstream HTTP goes through the shared `UpstreamClient` (same auth as pulls).
//! What it forwards is read through `backend::Storage`, from a directory or S3 alike. Nothing is
//! queued: the push is answered once the mirror is done, so there is no journal to lose in a
//! restart; a push cut by one (or by an upstream failure) is retried by the client through any
//! instance, and the retry sends only what the upstream still lacks.

use std::io::Read;
use std::sync::Arc;

use super::backend::Storage;
use super::error::ApiError;
use super::manifest;
use super::names::{Digest, Name, Reference};
use super::proxy::upstream::{Outgoing, Target, UpstreamClient, UpstreamError};
use super::proxy::{upstream_error, MANIFEST_ACCEPT};
use crate::auth::{Claims, Identity};
use crate::http::Body;
use crate::registry::names::is_under;

/// Index → image → blobs is two levels; anything deeper is refused rather than followed.
const MAX_DEPTH: usize = 4;

pub struct Mirror {
    host: String,
    client: Arc<UpstreamClient>,
}

/// What one mirrored push did upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MirrorReport {
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub manifests_pushed: usize,
}

/// True when `identity` asks for its pushes to `name` to be mirrored: a job token (or a Bearer
/// token granted for one) with push-through on, writing under its own project.
pub fn wanted(identity: &Identity, name: &Name) -> bool {
    match identity {
        Identity::Token(Claims { push_through: true, project: Some(project), .. }) => is_under(name.as_str(), project),
        _ => false,
    }
}

fn local_error(host: &str, what: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Invalid { host: host.to_string(), detail: format!("local content: {what}") }
}

impl Mirror {
    pub fn new(host: String, client: Arc<UpstreamClient>) -> Mirror {
        Mirror { host, client }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Mirrors the stored manifest `digest` of `name` under `reference`. An error names the
    /// upstream and what it answered; the local copy is untouched either way.
    pub fn push(
        &self,
        store: &dyn Storage,
        name: &Name,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<MirrorReport, ApiError> {
        let mut report = MirrorReport::default();
        self.push_manifest(store, name, &reference.to_string(), digest, 0, &mut report).map_err(|e| {
            let mut error = upstream_error(e);
            error.message = format!("push-through to {} failed: {}", self.host, error.message);
            if error.status < 500 && error.status != 429 {
                error.status = 502;
            }
            // docker and skopeo show only the status line of a 5xx, never its body: put the
            // message there too, and in the log.
            crate::log::warn("push_through", &format!("{name}:{reference}: {}", error.message));
            error.shown_in_status_line()
        })?;
        crate::log::info(
            "push_through",
            &format!(
                "{name}:{reference} mirrored to {}: {} blobs uploaded, {} already there, {} manifests",
                self.host, report.blobs_uploaded, report.blobs_present, report.manifests_pushed
            ),
        );
        Ok(report)
    }

    fn push_manifest(
        &self,
        store: &dyn Storage,
        name: &Name,
        reference: &str,
        digest: &Digest,
        depth: usize,
        report: &mut MirrorReport,
    ) -> Result<(), UpstreamError> {
        if depth > MAX_DEPTH {
            return Err(local_error(&self.host, "manifests nested too deeply"));
        }
        let stored = store
            .open_manifest(name, &Reference::Digest(digest.clone()))
            .map_err(|e| local_error(&self.host, e))?
            .ok_or_else(|| local_error(&self.host, format!("manifest {digest} is missing")))?;
        let media_type = stored.media_type;
        // Size-capped when it was stored: read whole.
        let mut bytes = Vec::with_capacity(usize::try_from(stored.len).unwrap_or(0));
        into_reader(stored.body).read_to_end(&mut bytes).map_err(|e| local_error(&self.host, e))?;
        let parsed = manifest::parse(&bytes, Some(&media_type)).map_err(|e| local_error(&self.host, e))?;
        let target = Target { host: &self.host, repository: name.as_str() };
        for child in &parsed.children {
            if !self.exists(&target, &format!("manifests/{child}"))? {
                self.push_manifest(store, name, &child.to_string(), child, depth + 1, report)?;
            }
        }
        for blob in &parsed.blobs {
            if self.exists(&target, &format!("blobs/{blob}"))? {
                report.blobs_present += 1;
            } else {
                self.upload_blob(store, name, &target, blob)?;
                report.blobs_uploaded += 1;
            }
        }
        let url = format!("{}/v2/{name}/manifests/{reference}", self.client.endpoint(&self.host));
        let body = move || Ok((Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn Read>, bytes.len() as u64));
        self.client.send(&Outgoing {
            method: "PUT",
            url,
            target: &target,
            push: true,
            headers: vec![("Content-Type", media_type.clone())],
            body: Some(&body),
        })?;
        report.manifests_pushed += 1;
        Ok(())
    }

    /// HEAD probe: true when the upstream already has it.
    fn exists(&self, target: &Target<'_>, suffix: &str) -> Result<bool, UpstreamError> {
        let url = format!("{}/v2/{}/{suffix}", self.client.endpoint(&self.host), target.repository);
        // Distribution answers 404 for an OCI manifest unless the client accepts OCI types.
        let headers =
            if suffix.starts_with("manifests/") { vec![("Accept", MANIFEST_ACCEPT.to_string())] } else { vec![] };
        match self.client.send(&Outgoing { method: "HEAD", url, target, push: true, headers, body: None }) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// POST a session, then PUT the whole blob with `?digest=` (streamed from the store).
    fn upload_blob(
        &self,
        store: &dyn Storage,
        name: &Name,
        target: &Target<'_>,
        digest: &Digest,
    ) -> Result<(), UpstreamError> {
        let endpoint = self.client.endpoint(&self.host);
        let url = format!("{endpoint}/v2/{}/blobs/uploads/", target.repository);
        let started =
            self.client.send(&Outgoing { method: "POST", url, target, push: true, headers: vec![], body: None })?;
        let location = started.header("Location").ok_or_else(|| UpstreamError::Invalid {
            host: self.host.clone(),
            detail: "upload without Location".into(),
        })?;
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{endpoint}{location}")
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", crate::http::percent_encode(&digest.to_string())));
        // Opened again for each attempt (a retry after an auth challenge sends it anew).
        let body = || {
            let blob = store.open_blob(name, digest).map_err(std::io::Error::other)?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("blob {digest} is missing"))
            })?;
            let len = blob.size();
            Ok((into_reader(blob.body(0, len).map_err(std::io::Error::other)?), len))
        };
        self.client.send(&Outgoing {
            method: "PUT",
            url,
            target,
            push: true,
            headers: vec![("Content-Type", "application/octet-stream".to_string())],
            body: Some(&body),
        })?;
        Ok(())
    }
}

/// A stored blob's body (a file on disk, a GET from S3) as the reader an upload sends.
fn into_reader(body: Body) -> Box<dyn Read> {
    match body {
        Body::Empty => Box::new(std::io::empty()),
        Body::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes)),
        Body::File { file, len } => Box::new(file.take(len)),
        Body::Reader { reader, .. } => reader,
        Body::Growing { source, len } => Box::new(source.take(len)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_push_through_jobs_under_their_project_are_mirrored() {
        let now = SystemTime::now();
        let name: Name = "g/p/app".parse().unwrap();
        let on = Identity::Token(Claims::job("g/p", 1, 1, true, Duration::from_secs(60), now));
        let off = Identity::Token(Claims::job("g/p", 1, 1, false, Duration::from_secs(60), now));
        let other = Identity::Token(Claims::job("g/other", 1, 1, true, Duration::from_secs(60), now));
        assert!(wanted(&on, &name));
        assert!(!wanted(&off, &name));
        assert!(!wanted(&other, &name));
        assert!(!wanted(&Identity::Anonymous, &name));
        assert!(!wanted(&Identity::Token(Claims::admin(Duration::from_secs(60), now)), &name));
    }
}
