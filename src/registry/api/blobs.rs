//! Blob GET/HEAD (with `Range`) and DELETE.

use crate::http::{Request, Response};
use crate::registry::api::manifests::with_namespace;
use crate::registry::error::{ApiError, OciCode};
use crate::registry::names::{Digest, Name};
use crate::registry::{Registry, DIGEST_HEADER};

/// A satisfiable byte range, inclusive.
#[derive(Debug, PartialEq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// What a `Range` header asks of a blob.
#[derive(Debug, PartialEq)]
pub enum RangeRequest {
    /// No header, or a form servers may ignore (several ranges, other units): the whole blob.
    Whole,
    Part(ByteRange),
    /// Answer 416.
    Unsatisfiable,
}

/// Parses a `Range` header against a blob of `len` bytes (RFC 9110 §14.1.2, one range only).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    match parse_one_range(header, len) {
        Ok(Some(range)) => RangeRequest::Part(range),
        Ok(None) => RangeRequest::Whole,
        Err(Unsatisfiable) => RangeRequest::Unsatisfiable,
    }
}

struct Unsatisfiable;

fn parse_one_range(header: Option<&str>, len: u64) -> Result<Option<ByteRange>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().map_err(|_| Unsatisfiable);
    let range = if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Err(Unsatisfiable);
        }
        ByteRange { start: len.saturating_sub(suffix), end: len - 1 }
    } else {
        let start = number(first)?;
        let end = if last.is_empty() { len.saturating_sub(1) } else { number(last)?.min(len.saturating_sub(1)) };
        if start >= len || end < start {
            return Err(Unsatisfiable);
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

pub fn get(registry: &Registry, request: &Request<'_>, name: &Name, digest: &Digest) -> Result<Response, ApiError> {
    let ns = super::manifests::namespace(request)?;
    let Some(blob) = registry.store.open_blob(name, digest)? else {
        let pulled = match &registry.proxy {
            Some(proxy) => {
                proxy.blob(registry.store.as_ref(), name, digest, ns.as_deref(), request.method == "HEAD")?
            }
            None => None,
        };
        return match pulled {
            Some(response) => Ok(with_namespace(response, ns)),
            None => Err(ApiError::new(OciCode::BlobUnknown, format!("blob {digest} is unknown to {name}"))),
        };
    };
    let len = blob.size();
    // `[storage.s3] redirect = true`: the client fetches the bytes from the store itself, as
    // distribution's S3 driver does (HEAD still answers here, with the length).
    if let Some(url) = blob.redirect().filter(|_| request.method != "HEAD") {
        return Ok(with_namespace(Response::new(307), ns)
            .header("Location", url)
            .header(DIGEST_HEADER, digest.to_string()));
    }
    let response = with_namespace(Response::new(200), ns)
        .header("Content-Type", "application/octet-stream")
        .header(DIGEST_HEADER, digest.to_string())
        .header("Accept-Ranges", "bytes")
        .header("ETag", format!("\"{digest}\""))
        .header("Cache-Control", "max-age=31536000");
    match parse_range(request.header("Range"), len) {
        RangeRequest::Whole => Ok(response.body(blob.body(0, len)?)),
        RangeRequest::Part(ByteRange { start, end }) => {
            let mut response = response.header("Content-Range", format!("bytes {start}-{end}/{len}"));
            response.status = 206;
            Ok(response.body(blob.body(start, end - start + 1)?))
        }
        RangeRequest::Unsatisfiable => Err(ApiError::new(OciCode::BlobUnknown, "requested range not satisfiable")
            .with_status(416)
            .with_header("Content-Range", format!("bytes */{len}"))),
    }
}

pub fn delete(registry: &Registry, name: &Name, digest: &Digest) -> Result<Response, ApiError> {
    if registry.store.unlink_layer(name, digest)? {
        Ok(Response::new(202).header(DIGEST_HEADER, digest.to_string()))
    } else {
        Err(ApiError::new(OciCode::BlobUnknown, format!("blob {digest} is unknown to {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), RangeRequest::Part(ByteRange { start: 0, end: 3 }));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeRequest::Part(ByteRange { start: 5, end: 9 }));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeRequest::Part(ByteRange { start: 7, end: 9 }));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeRequest::Part(ByteRange { start: 0, end: 9 }));
        assert_eq!(parse_range(Some("bytes=2-100"), 10), RangeRequest::Part(ByteRange { start: 2, end: 9 }));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Whole);
    }
}
