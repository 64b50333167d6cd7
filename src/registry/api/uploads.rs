//! Blob uploads: POST (start, monolithic with `?digest=`, cross-repo mount), PATCH (chunked
//! with `Content-Range`, or streamed without it), PUT (close, optionally with a last chunk),
//! GET (status) and DELETE (cancel).

use crate::http::{Request, Response};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::names::{Digest, Name};
use crate::registry::storage::StoreError;
use crate::registry::uploads::{UploadChunk, UploadError};
use crate::registry::{Registry, DIGEST_HEADER};

/// Parses `Content-Range: <start>-<end>` (also accepting a `bytes ` / `bytes=` prefix).
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let h = header.trim();
    let h = h.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(h);
    let h = h.split('/').next()?;
    let (a, b) = h.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn range_of(request: &Request<'_>) -> Result<Option<(u64, u64)>, ApiError> {
    match request.header("Content-Range") {
        None => Ok(None),
        Some(h) => parse_content_range(h)
            .map(Some)
            .ok_or_else(|| ApiError::new(OciCode::BlobUploadInvalid, format!("malformed Content-Range {h:?}"))),
    }
}

/// The request's body with its `Content-Range` and declared length (none when chunked).
fn chunk_of<'a>(request: &'a mut Request<'_>) -> Result<UploadChunk<'a>, ApiError> {
    let range = range_of(request)?;
    let declared_len = request.content_length.filter(|_| !request.chunked);
    Ok(UploadChunk { body: request.body, range, declared_len })
}

fn session_response(status: u16, name: &Name, id: &str, offset: u64) -> Response {
    Response::new(status)
        .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
        .header("Range", format!("0-{}", offset.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
}

fn created(name: &Name, digest: &Digest) -> Response {
    Response::new(201)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header(DIGEST_HEADER, digest.to_string())
}

fn upload_error(error: UploadError, name: &Name, id: &str) -> ApiError {
    match error {
        UploadError::Unknown => ApiError::new(OciCode::BlobUploadUnknown, format!("upload {id} is unknown to {name}")),
        UploadError::OutOfOrder { offset } => {
            ApiError::new(OciCode::BlobUploadInvalid, format!("chunk must start at offset {offset}"))
                .with_status(416)
                .with_header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
                .with_header("Range", format!("0-{}", offset.saturating_sub(1)))
                .with_header("Docker-Upload-UUID", id)
        }
        UploadError::LengthMismatch => {
            ApiError::new(OciCode::BlobUploadInvalid, "Content-Range, Content-Length and body disagree")
                .with_status(416)
        }
        UploadError::Store(e) => e.into(),
    }
}

fn digest_param(request: &Request<'_>) -> Result<Option<Digest>, ApiError> {
    request.query_param("digest").map(|d| d.parse::<Digest>().map_err(ApiError::from)).transpose()
}

pub fn start(registry: &Registry, request: &mut Request<'_>, name: &Name) -> Result<Response, ApiError> {
    if let Some(mount) = request.query_param("mount") {
        let digest: Digest = mount.parse()?;
        let source = request.query_param("from").map(|f| f.parse::<Name>()).transpose()?;
        let mountable = match &source {
            Some(from) => registry.store.has_layer(from, &digest)?,
            None => registry.store.blob_size(&digest)?.is_some(),
        };
        if mountable {
            registry.store.link_layer(name, &digest)?;
            return Ok(created(name, &digest));
        }
        // Unknown blob: fall through to an ordinary session, as the spec asks.
    } else if let Some(digest) = digest_param(request)? {
        match registry.store.write_blob(&digest, request.body, request.content_length) {
            Err(StoreError::SizeMismatch { .. }) => {
                return Err(ApiError::new(OciCode::SizeInvalid, "body shorter than Content-Length"))
            }
            written => written?,
        };
        registry.store.link_layer(name, &digest)?;
        return Ok(created(name, &digest));
    }
    let id = registry.uploads.start(name)?;
    Ok(session_response(202, name, &id, 0))
}

pub fn status(registry: &Registry, name: &Name, id: &str) -> Result<Response, ApiError> {
    let offset = registry.uploads.offset(name, id).map_err(|e| upload_error(e, name, id))?;
    Ok(session_response(204, name, id, offset))
}

pub fn patch(registry: &Registry, request: &mut Request<'_>, name: &Name, id: &str) -> Result<Response, ApiError> {
    let chunk = chunk_of(request)?;
    let offset = registry.uploads.append(name, id, chunk).map_err(|e| upload_error(e, name, id))?;
    Ok(session_response(202, name, id, offset))
}

pub fn put(registry: &Registry, request: &mut Request<'_>, name: &Name, id: &str) -> Result<Response, ApiError> {
    let Some(digest) = digest_param(request)? else {
        return Err(ApiError::new(OciCode::DigestInvalid, "the digest query parameter is required"));
    };
    let chunk = chunk_of(request)?;
    registry.uploads.finish(name, id, chunk, &digest).map_err(|e| upload_error(e, name, id))?;
    registry.store.link_layer(name, &digest)?;
    Ok(created(name, &digest))
}

pub fn cancel(registry: &Registry, name: &Name, id: &str) -> Result<Response, ApiError> {
    registry.uploads.cancel(name, id).map_err(|e| upload_error(e, name, id))?;
    Ok(Response::new(204))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-6"), Some((5, 6)));
        assert_eq!(parse_content_range("x-1"), None);
        assert_eq!(parse_content_range("12"), None);
    }
}
