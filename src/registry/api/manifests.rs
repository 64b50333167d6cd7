//! Manifest GET/HEAD, PUT (validated, stored byte-exact, `OCI-Subject` answered) and DELETE
//! (by tag: the tag; by digest: the manifest and every tag pointing at it).

use std::io::Read;

use crate::auth::Identity;
use crate::http::{Request, Response};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::names::{Algorithm, Digest, Name, Reference};
use crate::registry::storage::blobs::digest_of;
use crate::registry::{manifest, mirror};
use crate::registry::{Registry, DIGEST_HEADER};

fn unknown(registry: &Registry, name: &Name, reference: &Reference) -> ApiError {
    if registry.store.repository_exists(name).unwrap_or(false) {
        ApiError::new(OciCode::ManifestUnknown, format!("manifest {reference} is unknown to {name}"))
    } else {
        ApiError::new(OciCode::NameUnknown, format!("repository {name} is unknown"))
    }
}

pub fn get(
    registry: &Registry,
    request: &Request<'_>,
    name: &Name,
    reference: &Reference,
) -> Result<Response, ApiError> {
    let ns = namespace(request)?;
    if let Some(proxy) = &registry.proxy {
        proxy.refresh_manifest(registry.store.as_ref(), name, reference, ns.as_deref())?;
    }
    let Some(m) = registry.store.open_manifest(name, reference)? else {
        return Err(unknown(registry, name, reference));
    };
    Ok(with_namespace(Response::new(200), ns)
        .header("Content-Type", m.media_type)
        .header(DIGEST_HEADER, m.digest.to_string())
        .header("ETag", format!("\"{}\"", m.digest))
        .body(m.body))
}

/// `?ns=` (containerd, BuildKit: the registry a name was meant for), which must be a registry
/// host: it becomes part of an upstream URL and of a response header.
pub fn namespace(request: &Request<'_>) -> Result<Option<String>, ApiError> {
    match request.query_param("ns") {
        Some(ns) if !ns.is_empty() && !crate::registry::proxy::is_registry_host(&ns) => Err(ApiError::new(
            OciCode::NameInvalid,
            format!("?ns= must be a registry host[:port], not {:?}", ns.escape_debug().to_string()),
        )),
        ns => Ok(ns.map(|n| n.to_ascii_lowercase())),
    }
}

/// Echoes `?ns=` (containerd, BuildKit) as `OCI-Namespace`.
pub fn with_namespace(response: Response, ns: Option<String>) -> Response {
    match ns {
        Some(ns) if !ns.is_empty() => response.header("OCI-Namespace", ns),
        _ => response,
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(OciCode::SizeInvalid, format!("manifest exceeds the {} MiB limit", limit / (1024 * 1024)))
        .with_status(413)
}

pub fn put(
    registry: &Registry,
    request: &mut Request<'_>,
    identity: &Identity,
    name: &Name,
    reference: &Reference,
) -> Result<Response, ApiError> {
    let limit = registry.options.max_manifest_bytes;
    if request.content_length.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(request.content_length.unwrap_or(4096).min(limit) as usize);
    request
        .body
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ApiError::new(OciCode::ManifestInvalid, format!("could not read the manifest: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    let parsed = manifest::parse(&bytes, request.header("Content-Type"))
        .map_err(|e| ApiError::new(OciCode::ManifestInvalid, e))?;
    let (digest, tag) = match reference {
        Reference::Digest(d) => {
            let actual = digest_of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(ApiError::new(OciCode::DigestInvalid, format!("manifest digest is {actual}, not {d}")));
            }
            (actual, None)
        }
        Reference::Tag(t) => (digest_of(Algorithm::Sha256, &bytes), Some(t)),
    };
    check_references(registry, name, &parsed)?;
    registry.store.put_manifest(name, &digest, &bytes, &parsed, tag)?;
    // Stored first: an upstream failure answers 5xx but keeps the local copy (DESIGN §8).
    if let Some(mirror) = registry.mirror.as_ref().filter(|_| mirror::wanted(identity, name)) {
        mirror.push(registry.store.as_ref(), name, reference, &digest)?;
    }
    let mut response = Response::new(201)
        .header("Location", format!("/v2/{name}/manifests/{digest}"))
        .header(DIGEST_HEADER, digest.to_string());
    if let Some(subject) = &parsed.subject {
        response = response.header("OCI-Subject", subject.to_string());
    }
    Ok(response)
}

/// Every blob an image manifest names, and every manifest an index names, must already be in
/// the repository; otherwise a pull of this tag would fail half way.
fn check_references(registry: &Registry, name: &Name, parsed: &manifest::Parsed) -> Result<(), ApiError> {
    let missing = |digest: &Digest, what: &str| {
        ApiError::new(OciCode::ManifestBlobUnknown, format!("{what} {digest} is not in {name}"))
            .with_detail(serde_json::json!({ "digest": digest.to_string() }))
    };
    for blob in &parsed.blobs {
        if !registry.store.has_layer(name, blob)? {
            return Err(missing(blob, "blob"));
        }
    }
    for child in &parsed.children {
        if !registry.store.has_manifest(name, child)? {
            return Err(missing(child, "manifest"));
        }
    }
    Ok(())
}

pub fn delete(registry: &Registry, name: &Name, reference: &Reference) -> Result<Response, ApiError> {
    let deleted = match reference {
        Reference::Digest(d) => registry.store.delete_manifest(name, d)?,
        Reference::Tag(t) => registry.store.delete_tag(name, t)?,
    };
    if deleted {
        Ok(Response::new(202))
    } else {
        Err(unknown(registry, name, reference))
    }
}
