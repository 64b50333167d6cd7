//! Manifest and index JSON (`registry::manifest::parse`). Input: an optional
//! `Content-Type` line (when the input starts with `@`), then the body. Invariants: no panic;
//! an accepted manifest's digests are valid, indexes have only children and image
//! manifests only blobs; the referrers descriptor renders.

#![no_main]

use glci::registry::manifest::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use glci::registry::names::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.strip_prefix(b"@") {
        Some(rest) => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (line, body) = rest.split_at(split);
            (std::str::from_utf8(line).ok(), body.get(1..).unwrap_or_default())
        }
        None => (None, data),
    };
    let Ok(parsed) = manifest::parse(body, content_type) else { return };
    for d in parsed.blobs.iter().chain(&parsed.children).chain(&parsed.subject) {
        assert_eq!(d.to_string().parse::<Digest>().as_ref(), Ok(d));
    }
    assert!(!parsed.media_type.is_empty());
    assert_eq!(parsed.is_index(), parsed.media_type == OCI_INDEX || parsed.media_type == DOCKER_LIST);
    if parsed.is_index() {
        assert!(parsed.blobs.is_empty());
    } else {
        assert!(parsed.children.is_empty());
    }
    if parsed.media_type == OCI_MANIFEST || parsed.media_type == DOCKER_MANIFEST {
        // The config is always among the blobs.
        assert!(!parsed.blobs.is_empty());
    }
    let digest: Digest = format!("sha256:{}", "0".repeat(64)).parse().expect("valid digest");
    let descriptor = manifest::referrer_descriptor(&parsed, &digest, body.len() as u64);
    assert_eq!(descriptor["mediaType"], parsed.media_type.as_str());
    assert!(descriptor.to_string().starts_with('{'));
});
