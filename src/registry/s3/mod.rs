//! The S3 backend: the registry's content and upload sessions in an S3-compatible bucket
//! (SeaweedFS, MinIO, Ceph RGW, AWS), so several `glci serve` instances share one store.
//! `client` speaks S3, `store` is the content store, `uploads` the upload sessions,
//! `inventory` reads the bucket for list/stats/clean, `sweep` is how clean deletes safely, `cache`
//! what the pull-through cache keeps beside the content (origins, tag checks, blobs cached as
//! they stream), `multipart` the open multipart uploads clean aborts.

mod cache;
pub mod client;
pub mod inventory;
pub mod multipart;
pub mod store;
pub mod sweep;
pub mod uploads;

use std::sync::Arc;
use std::time::Duration;

pub use client::{S3Client, S3Settings};
pub use store::S3Store;
pub use uploads::S3Uploads;

use crate::registry::storage::StoreError;

/// `s3://BUCKET[/PREFIX]` split into its bucket and prefix; `None` when it is not an s3 URL.
pub fn parse_url(url: &str) -> Option<Result<(String, String), String>> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        return Some(Err(format!(
            "{url:?}: the bucket must be 3-63 characters of lowercase letters, digits, '-' and '.'"
        )));
    }
    Some(Ok((bucket.to_string(), prefix.trim_matches('/').to_string())))
}

/// Opens the store and the upload sessions on one bucket: the bucket is checked first (a wrong
/// endpoint, bucket or credential is an error here, not on the first push).
pub fn open(
    settings: &S3Settings,
    prefix: &str,
    redirect_for: Option<Duration>,
) -> Result<(S3Store, S3Uploads), StoreError> {
    let client = Arc::new(S3Client::new(settings).map_err(|message| StoreError::Io {
        path: format!("s3://{}", settings.bucket).into(),
        source: std::io::Error::other(message),
    })?);
    let store = S3Store::open(Arc::clone(&client), prefix, redirect_for)?;
    let uploads = S3Uploads::new(client, store.keys().clone());
    Ok((store, uploads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(parse_url("/var/lib/glci"), None);
        assert_eq!(parse_url("s3://team-cache").unwrap().unwrap(), ("team-cache".into(), "".into()));
        assert_eq!(parse_url("s3://b12/ci/registry/").unwrap().unwrap(), ("b12".into(), "ci/registry".into()));
        assert!(parse_url("s3://").unwrap().is_err());
        assert!(parse_url("s3://Upper/x").unwrap().is_err());
    }
}
