//! `ApiError`: the distribution-spec error codes, mapped once to an HTTP status and the spec's
//! JSON body. Every lower-layer error becomes an `ApiError` here and nowhere else. The client
//! gets a short message; internal detail (paths, io errors) goes to the log only.

use std::fmt;

use super::names::NameError;
use super::storage::StoreError;
use crate::http::Response;

/// RFC 4918's status for a full disk.
pub const INSUFFICIENT_STORAGE: u16 = 507;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Not a spec code; distribution uses it when an upstream (pull-through) fails.
    Unavailable,
    /// Not a spec code; distribution uses it for server-side failures.
    Unknown,
}

impl OciCode {
    /// The one mapping from code to (default status, wire name).
    pub fn wire(self) -> (u16, &'static str) {
        match self {
            OciCode::BlobUnknown => (404, "BLOB_UNKNOWN"),
            OciCode::BlobUploadInvalid => (400, "BLOB_UPLOAD_INVALID"),
            OciCode::BlobUploadUnknown => (404, "BLOB_UPLOAD_UNKNOWN"),
            OciCode::DigestInvalid => (400, "DIGEST_INVALID"),
            OciCode::ManifestBlobUnknown => (400, "MANIFEST_BLOB_UNKNOWN"),
            OciCode::ManifestInvalid => (400, "MANIFEST_INVALID"),
            OciCode::ManifestUnknown => (404, "MANIFEST_UNKNOWN"),
            OciCode::NameInvalid => (400, "NAME_INVALID"),
            OciCode::NameUnknown => (404, "NAME_UNKNOWN"),
            OciCode::SizeInvalid => (400, "SIZE_INVALID"),
            OciCode::Unauthorized => (401, "UNAUTHORIZED"),
            OciCode::Denied => (403, "DENIED"),
            OciCode::Unsupported => (405, "UNSUPPORTED"),
            OciCode::TooManyRequests => (429, "TOOMANYREQUESTS"),
            OciCode::Unavailable => (502, "UNAVAILABLE"),
            OciCode::Unknown => (500, "UNKNOWN"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: OciCode,
    pub status: u16,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(String, String)>,
    /// Put the message in the status line too (see `Response::reason`).
    pub in_status_line: bool,
}

impl ApiError {
    pub fn new(code: OciCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.wire().0,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            in_status_line: false,
        }
    }

    pub fn with_status(mut self, status: u16) -> ApiError {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> ApiError {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// A server-side failure: the cause is logged, the client sees a generic message.
    pub fn internal(context: &str, cause: &dyn fmt::Display) -> ApiError {
        crate::log::error(context, &cause.to_string());
        ApiError::new(OciCode::Unknown, "internal server error")
    }

    /// Also shows the message in the status line, for clients that print nothing else of a 5xx.
    pub fn shown_in_status_line(mut self) -> ApiError {
        self.in_status_line = true;
        self
    }

    /// Storage full (`ENOSPC`): 507 Insufficient Storage, with the message in the status line
    /// too (docker prints only that line of a 5xx). Nothing of the failed write stays visible.
    pub fn storage_full(cause: &dyn fmt::Display) -> ApiError {
        crate::log::error("storage", &cause.to_string());
        ApiError::new(
            OciCode::Unknown,
            "insufficient storage: the registry's disk is full (no space left on device); \
             nothing of this request was stored, free some space and retry",
        )
        .with_status(INSUFFICIENT_STORAGE)
        .shown_in_status_line()
    }

    pub fn into_response(self) -> Response {
        let (_, code) = self.code.wire();
        let reason =
            self.in_status_line.then(|| format!("{} ({})", crate::http::reason_phrase(self.status), self.message));
        let body = crate::http::response::error_body(code, &self.message, self.detail);
        let mut response = Response::json(self.status, &body);
        response.headers.extend(self.headers);
        response.reason = reason;
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code.wire().1, self.message)
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        let code = match e {
            NameError::Name(_) => OciCode::NameInvalid,
            NameError::Tag(_) => OciCode::ManifestInvalid,
            NameError::UnsupportedDigest(_) | NameError::Digest(_) => OciCode::DigestInvalid,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::DigestMismatch { expected, actual } => {
                ApiError::new(OciCode::DigestInvalid, format!("content digest {actual} does not match {expected}"))
            }
            StoreError::SizeMismatch { expected, actual } => {
                ApiError::new(OciCode::SizeInvalid, format!("content is {actual} bytes, expected {expected}"))
            }
            StoreError::BodyRead(e) => {
                ApiError::new(OciCode::BlobUploadInvalid, format!("could not read the request body: {e}"))
            }
            StoreError::Io { .. } if e.is_storage_full() => ApiError::storage_full(&e),
            StoreError::Io { .. } => ApiError::internal("storage", &e),
        }
    }
}

impl From<super::gc::GcError> for ApiError {
    fn from(e: super::gc::GcError) -> ApiError {
        match e {
            super::gc::GcError::Store(e) => e.into(),
            // The admin asked for a clean; why it stopped is theirs to see (no secrets in it).
            e @ super::gc::GcError::UnreadableManifest { .. } => {
                crate::log::error("clean", &e.to_string());
                ApiError::new(OciCode::Unknown, e.to_string()).with_status(409)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_spec_shape() {
        let r = ApiError::new(OciCode::BlobUnknown, "nope").into_response();
        assert_eq!(r.status, 404);
        let crate::http::Body::Bytes(b) = r.body else { panic!("bytes body") };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "nope");
    }

    #[test]
    fn full_disk_is_507_with_a_clear_message() {
        let full =
            StoreError::Io { path: "/x/tmp/blob-1".into(), source: std::io::Error::from_raw_os_error(libc::ENOSPC) };
        let r = ApiError::from(full).into_response();
        assert_eq!(r.status, 507);
        let reason = r.reason.clone().unwrap();
        assert!(reason.starts_with("Insufficient Storage (insufficient storage: "), "{reason}");
        let crate::http::Body::Bytes(b) = r.body else { panic!("bytes body") };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNKNOWN");
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("disk is full") && !message.contains("/x/tmp"), "{message}");
        // Any other I/O failure stays a generic 500.
        let other = StoreError::Io { path: "/x".into(), source: std::io::Error::other("boom") };
        assert_eq!(ApiError::from(other).into_response().status, 500);
    }
}
