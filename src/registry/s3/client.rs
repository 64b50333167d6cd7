//! The S3 protocol, synchronously: requests signed by `rusty-s3` (a sans-I/O SigV4 signer that
//! presigns URLs) and sent with `ureq`. Only this file speaks HTTP to the object store.
//!
//! Errors never carry a presigned URL (its query holds a signature): they name the bucket, the
//! key and S3's own error code or the transport's error kind.

use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::registry::storage::StoreError;

/// How long a signed request stays valid: it is checked when the request starts, so a long
/// transfer is not cut by it.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Size of the parts of a streamed upload (S3 wants at least 5 MiB for all but the last, and at
/// most 10 000 parts: 8 MiB parts allow blobs up to 78 GiB). One part is in memory at a time.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where the store lives and who we are to it.
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: Option<crate::secret::Secret>,
    pub secret_access_key: Option<crate::secret::Secret>,
    pub path_style: bool,
}

/// Size and modification time of an object (from HEAD).
#[derive(Clone, Debug)]
pub struct ObjectMeta {
    pub len: u64,
    /// The `Last-Modified` header as the store sent it (an HTTP date).
    pub last_modified: Option<String>,
}

/// An object's `Last-Modified` and one of its user metadata values (`head_metadata`).
#[derive(Clone, Debug)]
pub struct Stamped {
    pub last_modified: Option<String>,
    pub value: Option<String>,
}

/// An object in a listing.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    /// ISO 8601, as S3 lists it.
    pub last_modified: String,
}

impl Entry {
    /// When the store last wrote the object, as it lists it (`2026-12-03T14:34:06.000Z`).
    pub fn listed_time(&self) -> Option<SystemTime> {
        crate::encoding::parse_rfc3339(&self.last_modified)
    }

    /// [`Entry::listed_time`]; an unreadable time counts as far ahead (kept by every age check).
    pub fn modified(&self) -> SystemTime {
        self.listed_time().unwrap_or_else(|| SystemTime::now() + Duration::from_secs(1 << 30))
    }
}

/// A multipart upload still open in the bucket (from ListMultipartUploads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// ISO 8601, as S3 lists it: when the upload was created.
    pub initiated: String,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Listing {
    pub keys: Vec<Entry>,
    pub prefixes: Vec<String>,
    pub next: Option<String>,
}

pub struct S3Client {
    bucket: Bucket,
    credentials: Option<Credentials>,
    agent: ureq::Agent,
}

impl S3Client {
    pub fn new(settings: &S3Settings) -> Result<S3Client, String> {
        let endpoint = url::Url::parse(&settings.endpoint)
            .map_err(|e| format!("endpoint {:?} is not a URL: {e}", settings.endpoint))?;
        let style = if settings.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(endpoint, style, settings.bucket.clone(), settings.region.clone())
            .map_err(|e| format!("endpoint {:?}: {e}", settings.endpoint))?;
        let credentials = match (&settings.access_key_id, &settings.secret_access_key) {
            (Some(id), Some(secret)) => Some(Credentials::new(id.expose(), secret.expose())),
            (None, None) => None,
            _ => return Err("access_key_id and secret_access_key must be given together".into()),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .build();
        Ok(S3Client { bucket, credentials, agent })
    }

    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    /// Presigned GET of an object, valid for `valid_for` (blob redirects).
    pub fn presigned_get(&self, key: &str, valid_for: Duration) -> String {
        self.bucket.get_object(self.credentials.as_ref(), key).sign(valid_for).to_string()
    }

    fn failed(&self, key: &str, what: &str, e: ureq::Error) -> StoreError {
        let message = match e {
            ureq::Error::Status(status, response) => {
                let body = response.into_string().unwrap_or_default();
                match xml_field(&body, "Code") {
                    Some(code) => format!("{what}: {status} {code}"),
                    None => format!("{what}: HTTP {status}"),
                }
            }
            ureq::Error::Transport(t) => {
                format!("{what}: {}{}", t.kind(), t.message().map(|m| format!(": {m}")).unwrap_or_default())
            }
        };
        self.error(key, message)
    }

    fn error(&self, key: &str, message: String) -> StoreError {
        let path = format!("s3://{}/{key}", self.bucket.name()).into();
        StoreError::Io { path, source: io::Error::other(message) }
    }

    fn request(&self, method: &str, url: url::Url) -> ureq::Request {
        self.agent.request_url(method, &url)
    }

    /// Checks that the bucket is there and that we may use it.
    pub fn head_bucket(&self) -> Result<(), StoreError> {
        let url = self.bucket.head_bucket(self.credentials.as_ref()).sign(SIGNED_FOR);
        match self.request("HEAD", url).call() {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(404, _)) => Err(self.error("", "no such bucket".into())),
            Err(ureq::Error::Status(status @ (401 | 403), _)) => {
                Err(self.error("", format!("access denied (HTTP {status}): check the credentials")))
            }
            Err(e) => Err(self.failed("", "HEAD bucket", e)),
        }
    }

    /// Creates the bucket (tests, and `make bench`).
    pub fn create_bucket(&self) -> Result<(), StoreError> {
        let Some(credentials) = &self.credentials else {
            return Err(self.error("", "creating a bucket needs credentials".into()));
        };
        let url = self.bucket.create_bucket(credentials).sign(SIGNED_FOR);
        self.request("PUT", url).call().map(|_| ()).map_err(|e| self.failed("", "create bucket", e))
    }

    pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let url = self.bucket.head_object(self.credentials.as_ref(), key).sign(SIGNED_FOR);
        match self.request("HEAD", url).call() {
            Ok(r) => {
                let len = r.header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
                Ok(Some(ObjectMeta { len, last_modified: r.header("Last-Modified").map(str::to_string) }))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.failed(key, "HEAD", e)),
        }
    }

    /// Streams an object (or the inclusive byte range of it); `None` when it is not there.
    pub fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<Box<dyn Read + Send>>, StoreError> {
        let url = self.bucket.get_object(self.credentials.as_ref(), key).sign(SIGNED_FOR);
        let mut request = self.request("GET", url);
        if let Some((start, end)) = range {
            request = request.set("Range", &format!("bytes={start}-{end}"));
        }
        match request.call() {
            Ok(r) => Ok(Some(Box::new(r.into_reader()))),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.failed(key, "GET", e)),
        }
    }

    /// A small object whole (links, manifests).
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut reader) = self.get(key, None)? else { return Ok(None) };
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(|e| self.error(key, format!("GET: {e}")))?;
        Ok(Some(bytes))
    }

    pub fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let url = self.bucket.put_object(self.credentials.as_ref(), key).sign(SIGNED_FOR);
        self.request("PUT", url).send_bytes(bytes).map(|_| ()).map_err(|e| self.failed(key, "PUT", e))
    }

    /// Server-side copy (S3 `CopyObject`, up to 5 GiB).
    pub fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = format!("/{}/{}", self.bucket.name(), percent_encode_key(from));
        let mut action = self.bucket.put_object(self.credentials.as_ref(), to);
        action.headers_mut().insert("x-amz-copy-source", source.clone());
        let url = action.sign(SIGNED_FOR);
        let response = self
            .request("PUT", url)
            .set("x-amz-copy-source", &source)
            .call()
            .map_err(|e| self.failed(to, "copy", e))?;
        // A copy may fail after its 200 has started: the body then holds an `<Error>`.
        let body = response.into_string().map_err(|e| self.error(to, format!("copy: {e}")))?;
        match xml_field(&body, "Code") {
            Some(code) => Err(self.error(to, format!("copy: {code}"))),
            None => Ok(()),
        }
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url = self.bucket.delete_object(self.credentials.as_ref(), key).sign(SIGNED_FOR);
        match self.request("DELETE", url).call() {
            Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
            Err(e) => Err(self.failed(key, "DELETE", e)),
        }
    }

    /// One page of keys under `prefix` (after `start_after`), or of the "directories" below it
    /// when `delimiter` is given.
    pub fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        continuation: Option<&str>,
        max_keys: Option<usize>,
    ) -> Result<Listing, StoreError> {
        let mut action: ListObjectsV2<'_> = self.bucket.list_objects_v2(self.credentials.as_ref());
        action.with_prefix(prefix.to_string());
        if let Some(d) = delimiter {
            action.with_delimiter(d.to_string());
        }
        if let Some(s) = start_after {
            action.with_start_after(s.to_string());
        }
        if let Some(c) = continuation {
            action.with_continuation_token(c.to_string());
        }
        if let Some(n) = max_keys {
            action.with_max_keys(n);
        }
        let url = action.sign(SIGNED_FOR);
        let body = self
            .request("GET", url)
            .call()
            .map_err(|e| self.failed(prefix, "LIST", e))?
            .into_string()
            .map_err(|e| self.error(prefix, format!("LIST: {e}")))?;
        let parsed = ListObjectsV2::parse_response(&body).map_err(|e| self.error(prefix, format!("LIST: {e}")))?;
        Ok(Listing {
            keys: parsed
                .contents
                .into_iter()
                .map(|c| Entry { key: c.key, size: c.size, last_modified: c.last_modified })
                .collect(),
            prefixes: parsed.common_prefixes.into_iter().map(|p| p.prefix).collect(),
            next: parsed.next_continuation_token,
        })
    }

    /// Every key (with its size) under `prefix`, sorted, following continuation tokens.
    pub fn list_all(&self, prefix: &str, delimiter: Option<&str>) -> Result<Listing, StoreError> {
        let mut all = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, delimiter, None, token.as_deref(), None)?;
            all.keys.extend(page.keys);
            all.prefixes.extend(page.prefixes);
            match page.next {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// True when some object's key starts with `prefix`.
    pub fn any_under(&self, prefix: &str) -> Result<bool, StoreError> {
        Ok(!self.list_page(prefix, None, None, None, Some(1))?.keys.is_empty())
    }

    /// Every multipart upload still open under `prefix` (S3 `ListMultipartUploads`, following
    /// its key and upload-id markers). rusty-s3 0.10 has no such action: a `ListObjectsV2`
    /// (same method, same bucket URL) is signed with its query replaced by this one.
    pub fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StoreError> {
        let mut all = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut action: ListObjectsV2<'_> = self.bucket.list_objects_v2(self.credentials.as_ref());
            let query = action.query_mut();
            query.remove("list-type");
            query.remove("encoding-type");
            query.insert("uploads", "");
            query.insert("prefix", prefix.to_string());
            if let Some((key, id)) = &markers {
                query.insert("key-marker", key.clone());
                query.insert("upload-id-marker", id.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let body = self
                .request("GET", url)
                .call()
                .map_err(|e| self.failed(prefix, "list multipart uploads", e))?
                .into_string()
                .map_err(|e| self.error(prefix, format!("list multipart uploads: {e}")))?;
            let page = parse_multipart_uploads(&body)
                .ok_or_else(|| self.error(prefix, "list multipart uploads: unreadable answer".into()))?;
            all.extend(page.uploads);
            match page.next {
                Some(next) if Some(&next) != markers.as_ref() => markers = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// Aborts a multipart upload (its parts are dropped); one already gone is not an error.
    pub fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let url = self.bucket.abort_multipart_upload(self.credentials.as_ref(), key, upload_id).sign(SIGNED_FOR);
        match self.request("DELETE", url).call() {
            Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
            Err(e) => Err(self.failed(key, "abort multipart upload", e)),
        }
    }

    /// Streams `body` into the object `key`: parts of [`PART_SIZE`] go to a multipart upload as
    /// they fill (a body that fits one part is one PUT). `seen` gets every byte before it is
    /// sent (the caller hashes them); `accept` runs with the total once the body has ended and
    /// decides whether the object is created at all, so a blob whose digest does not match is
    /// never visible. Returns the number of bytes.
    pub fn put_streamed(
        &self,
        key: &str,
        body: &mut dyn Read,
        seen: &mut dyn FnMut(&[u8]),
        accept: &mut dyn FnMut(u64) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut part = Vec::with_capacity(PART_SIZE);
        let mut ended = fill(body, &mut part)?;
        seen(&part);
        if ended {
            accept(part.len() as u64)?;
            self.put_bytes(key, &part)?;
            return Ok(part.len() as u64);
        }
        let url = self.bucket.create_multipart_upload(self.credentials.as_ref(), key).sign(SIGNED_FOR);
        let created = self
            .request("POST", url)
            .call()
            .map_err(|e| self.failed(key, "create multipart upload", e))?
            .into_string()
            .map_err(|e| self.error(key, format!("create multipart upload: {e}")))?;
        let upload_id = CreateMultipartUpload::parse_response(&created)
            .map_err(|e| self.error(key, format!("create multipart upload: {e}")))?
            .upload_id()
            .to_string();
        let result = (|| {
            let mut etags = Vec::new();
            let mut total = 0u64;
            loop {
                let number = u16::try_from(etags.len() + 1)
                    .ok()
                    .filter(|n| *n <= 10_000)
                    .ok_or_else(|| self.error(key, "more than 10000 parts".into()))?;
                etags.push(self.upload_part(key, &upload_id, number, &part)?);
                total += part.len() as u64;
                if ended {
                    break;
                }
                part.clear();
                ended = fill(body, &mut part)?;
                seen(&part);
                if part.is_empty() {
                    break;
                }
            }
            accept(total)?;
            self.complete(key, &upload_id, &etags)?;
            Ok(total)
        })();
        if result.is_err() {
            let _ = self.abort_multipart_upload(key, &upload_id);
        }
        result
    }

    fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, StoreError> {
        let url = self.bucket.upload_part(self.credentials.as_ref(), key, number, upload_id).sign(SIGNED_FOR);
        let response = self.request("PUT", url).send_bytes(bytes).map_err(|e| self.failed(key, "upload part", e))?;
        response.header("ETag").map(str::to_string).ok_or_else(|| self.error(key, "upload part: no ETag".into()))
    }

    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<(), StoreError> {
        let action = self.bucket.complete_multipart_upload(
            self.credentials.as_ref(),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let response = self
            .request("POST", url)
            .send_string(&body)
            .map_err(|e| self.failed(key, "complete multipart upload", e))?;
        // Like a copy, a completion can fail inside a 200.
        let text = response.into_string().map_err(|e| self.error(key, format!("complete multipart upload: {e}")))?;
        match xml_field(&text, "Code") {
            Some(code) if text.contains("<Error") => Err(self.error(key, format!("complete multipart upload: {code}"))),
            _ => Ok(()),
        }
    }

    // User metadata (`x-amz-meta-NAME`): what the pull-through cache stamps a tag with.

    /// Writes a small object with one user metadata value.
    pub fn put_bytes_with_metadata(&self, key: &str, bytes: &[u8], name: &str, value: &str) -> Result<(), StoreError> {
        let header = format!("x-amz-meta-{name}");
        let mut action = self.bucket.put_object(self.credentials.as_ref(), key);
        action.headers_mut().insert(header.clone(), value.to_string());
        let url = action.sign(SIGNED_FOR);
        self.request("PUT", url)
            .set(&header, value)
            .send_bytes(bytes)
            .map(|_| ())
            .map_err(|e| self.failed(key, "PUT", e))
    }

    /// HEAD of an object: its `Last-Modified` and its user metadata value `name`; `None` when
    /// the object is not there.
    pub fn head_metadata(&self, key: &str, name: &str) -> Result<Option<Stamped>, StoreError> {
        let url = self.bucket.head_object(self.credentials.as_ref(), key).sign(SIGNED_FOR);
        match self.request("HEAD", url).call() {
            Ok(r) => Ok(Some(Stamped {
                last_modified: r.header("Last-Modified").map(str::to_string),
                value: r.header(&format!("x-amz-meta-{name}")).map(str::to_string),
            })),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.failed(key, "HEAD", e)),
        }
    }
}

/// Reads into `part` until it holds [`PART_SIZE`] bytes or the body ends; true when it ended.
fn fill(body: &mut dyn Read, part: &mut Vec<u8>) -> Result<bool, StoreError> {
    let mut limited = body.take((PART_SIZE - part.len()) as u64);
    limited.read_to_end(part).map_err(StoreError::BodyRead)?;
    if part.len() < PART_SIZE {
        return Ok(true);
    }
    // A body of exactly a multiple of PART_SIZE: peek one byte to tell whether it goes on.
    Ok(false)
}

/// One page of ListMultipartUploads: the uploads, and the markers of the next page when the
/// listing is truncated.
#[derive(Debug, PartialEq)]
struct UploadsPage {
    uploads: Vec<OpenUpload>,
    next: Option<(String, String)>,
}

/// Parses a `ListMultipartUploadsResult` (pure); `None` when it is not one.
fn parse_multipart_uploads(xml: &str) -> Option<UploadsPage> {
    let result_start = xml.find("<ListMultipartUploadsResult")?;
    let result = &xml[result_start..];
    let mut uploads = Vec::new();
    let mut rest = result;
    while let Some(start) = rest.find("<Upload>") {
        let end = rest[start..].find("</Upload>")? + start;
        let upload = &rest[start..end];
        uploads.push(OpenUpload {
            key: xml_unescape(xml_field(upload, "Key")?),
            upload_id: xml_unescape(xml_field(upload, "UploadId")?),
            initiated: xml_field(upload, "Initiated").unwrap_or_default().to_string(),
        });
        rest = &rest[end..];
    }
    // The markers sit before the first <Upload>; an upload's own fields never use these names.
    let head = &result[..result.find("<Upload>").unwrap_or(result.len())];
    let truncated = xml_field(head, "IsTruncated") == Some("true");
    let next = match (xml_field(head, "NextKeyMarker"), xml_field(head, "NextUploadIdMarker")) {
        (Some(key), Some(id)) if truncated => Some((xml_unescape(key), xml_unescape(id))),
        _ => None,
    };
    Some(UploadsPage { uploads, next })
}

/// Undoes XML's five predefined entities (keys and ids in a listing are escaped).
fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// The text of the first `<name>…</name>` in an XML document.
fn xml_field<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// Percent-encodes a key for `x-amz-copy-source` (slashes kept).
fn percent_encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that is exactly one part long leaves `fill` unsure; the next read ends it.
    #[test]
    fn fill_reads_whole_parts_and_tells_the_end() {
        let bytes = vec![7u8; PART_SIZE + 3];
        let mut body = &bytes[..];
        let mut part = Vec::new();
        assert!(!fill(&mut body, &mut part).unwrap());
        assert_eq!(part.len(), PART_SIZE);
        part.clear();
        assert!(fill(&mut body, &mut part).unwrap());
        assert_eq!(part.len(), 3);
    }
}
