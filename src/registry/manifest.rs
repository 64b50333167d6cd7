//! Pure reading of manifests and indexes: media type, the descriptors they reference, the
//! `subject`, and the descriptor a referrers response lists for them. The bytes themselves are
//! stored untouched; this only looks inside.

use serde::Deserialize;
use serde_json::{json, Value};

use super::names::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Deserialize, Debug, Clone)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Deserialize, Debug)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Value>,
}

/// What the registry needs to know about a manifest.
#[derive(Debug)]
pub struct Parsed {
    pub media_type: String,
    /// Blobs that must be in the repository (config and layers), foreign layers excluded.
    pub blobs: Vec<Digest>,
    /// Manifests an index points to.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

/// True for `type/subtype` as RFC 6838 §4.2 allows them: the stored media type is served back
/// as `Content-Type`, so it may hold nothing else (no control byte, space or parameter).
pub fn is_media_type(s: &str) -> bool {
    let name = |part: &str| {
        (1..=127).contains(&part.len())
            && part.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    s.split_once('/').is_some_and(|(t, sub)| name(t) && name(sub))
}

/// Parses a manifest body. `content_type` is the request's header, if any; it wins over an
/// absent `mediaType` field and must agree with a present one.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).filter(|c| !c.is_empty());
    let media_type = match (&raw.media_type, header) {
        (Some(field), Some(h)) if field != h && h != "application/json" => {
            return Err(format!("mediaType {field:?} does not match Content-Type {h:?}"));
        }
        (Some(field), _) => field.clone(),
        (None, Some(h)) if h != "application/json" => h.to_string(),
        (None, _) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, _) if raw.config.is_some() => OCI_MANIFEST.to_string(),
        (None, _) => return Err("manifest has no mediaType and no Content-Type".to_string()),
    };
    if !is_media_type(&media_type) {
        return Err(format!("mediaType {media_type:?} is not a media type (type/subtype)"));
    }
    if matches!(media_type.as_str(), OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST)
        && raw.schema_version != Some(2)
    {
        return Err("schemaVersion must be 2".to_string());
    }
    let digest = |d: &Descriptor| -> Result<Digest, String> {
        if d.size < 0 {
            return Err(format!("descriptor {} has a negative size", d.digest));
        }
        d.digest.parse::<Digest>().map_err(|e| e.to_string())
    };
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            for m in raw.manifests.as_deref().unwrap_or_default() {
                children.push(digest(m)?);
            }
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw.config.as_ref().ok_or("image manifest without config")?;
            blobs.push(digest(config)?);
            for layer in &raw.layers {
                let d = digest(layer)?;
                // Foreign (non-distributable) layers live elsewhere, by their urls.
                if layer.urls.is_empty() {
                    blobs.push(d);
                }
            }
        }
        _ => {
            // Other manifest types (artifacts, schema1...): stored, nothing checked inside.
            if let Some(config) = &raw.config {
                blobs.push(digest(config)?);
            }
            for layer in &raw.layers {
                blobs.push(digest(layer)?);
            }
        }
    }
    let subject = raw.subject.as_ref().map(digest).transpose()?;
    let artifact_type = raw.artifact_type.clone().or_else(|| {
        if subject.is_some() {
            raw.config.as_ref().map(|c| c.media_type.clone())
        } else {
            None
        }
    });
    Ok(Parsed { media_type, blobs, children, subject, artifact_type, annotations: raw.annotations })
}

/// The descriptor of a manifest as a referrers response lists it.
pub fn referrer_descriptor(parsed: &Parsed, digest: &Digest, size: u64) -> Value {
    let mut d = json!({"mediaType": parsed.media_type, "digest": digest.to_string(), "size": size});
    if let Some(t) = &parsed.artifact_type {
        d["artifactType"] = json!(t);
    }
    if let Some(a) = &parsed.annotations {
        d["annotations"] = a.clone();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn media_types_are_type_slash_subtype() {
        for ok in [OCI_MANIFEST, DOCKER_LIST, "application/vnd.cncf.helm.config.v1+json", "text/plain"] {
            assert!(is_media_type(ok), "{ok}");
        }
        for bad in ["", "application", "application/", "/json", "a b/c", "application/x\0y", "a/b\r\nX: y", "a/b; c=d"]
        {
            assert!(!is_media_type(bad), "{bad:?}");
        }
        let odd = br#"{"schemaVersion":2,"mediaType":"application/x\u001b[31m"}"#;
        assert!(parse(odd, None).is_err());
    }

    #[test]
    fn image_manifest() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/x","digest":"{A}","size":1}},"layers":[{{"mediaType":"l","digest":"{B}","size":2}}]}}"#
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert!(p.subject.is_none());
        assert!(parse(m.as_bytes(), Some(DOCKER_MANIFEST)).is_err());
    }

    #[test]
    fn artifact_with_subject() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.x.sig","digest":"{A}","size":1}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{B}","size":3}},"annotations":{{"k":"v"}}}}"#
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.subject.unwrap().to_string(), B);
        assert_eq!(p.artifact_type.as_deref(), Some("application/vnd.x.sig"));
    }

    #[test]
    fn index_and_errors() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":1}}]}}"#
        );
        let p = parse(m.as_bytes(), None).unwrap();
        assert!(p.is_index());
        assert_eq!(p.children.len(), 1);
        assert!(parse(b"not json", None).is_err());
        assert!(
            parse(br#"{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#, None).is_err()
        );
        let bad = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256:nope","size":1}},"layers":[]}}"#
        );
        assert!(parse(bad.as_bytes(), None).is_err());
    }
}
