//! Registry storage written straight to disk, file by file as `src/registry/storage/layout.rs`
//! documents it (paths from `glci::registry::storage::Layout`), without fsync: fast enough for
//! tens of thousands of blobs (the `clean`/`list` tests and `tests/bench_admin.rs`). Every blob
//! is named by the SHA-256 of its bytes and every manifest is a valid OCI image manifest, so
//! the store is one the server serves.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use glci::registry::names::{Digest, Name, Tag};
use glci::registry::storage::Layout;

use super::sha256_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One image written by [`write_images`].
#[derive(Clone, Debug)]
pub struct FixtureImage {
    pub repository: String,
    pub tag: String,
    pub manifest: String,
    /// Config first, then the layers.
    pub blobs: Vec<String>,
}

fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a blob into the content store; returns its digest.
pub fn write_blob(layout: &Layout, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let parsed: Digest = digest.parse().expect("a sha256 digest");
    let path = layout.blob(&parsed);
    if !path.exists() {
        write_file(&path, bytes);
    }
    digest
}

/// Deterministic filler: `len` bytes that differ for every `seed`.
pub fn filler(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut n = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{seed}:{n};").as_bytes());
        n += 1;
    }
    out.truncate(len.max(seed.len()));
    out
}

/// `repos` repositories `PREFIX/repo-N`, each with `tags` tags `t-M`, each tag its own image:
/// a config and `layers` layers of `layer_bytes` bytes, every blob unique.
pub fn write_images(
    root: &Path,
    prefix: &str,
    repos: usize,
    tags: usize,
    layers: usize,
    layer_bytes: usize,
) -> Vec<FixtureImage> {
    let layout = Layout::new(root);
    let mut images = Vec::with_capacity(repos * tags);
    for r in 0..repos {
        let repository = format!("{prefix}/repo-{r}");
        let name: Name = repository.parse().expect("a valid repository name");
        for t in 0..tags {
            let seed = format!("{repository}:{t}");
            let config = format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"seed":"{seed}"}}"#
            );
            let config_digest = write_blob(&layout, config.as_bytes());
            let mut blobs = vec![config_digest.clone()];
            let mut layer_json = Vec::new();
            for l in 0..layers {
                let bytes = filler(&format!("{seed}:layer{l}"), layer_bytes);
                let digest = write_blob(&layout, &bytes);
                layer_json.push(format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":{}}}"#,
                    bytes.len()
                ));
                blobs.push(digest);
            }
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
                config.len(),
                layer_json.join(",")
            );
            let manifest_digest = write_blob(&layout, manifest.as_bytes());
            for blob in &blobs {
                let d: Digest = blob.parse().expect("digest");
                write_file(&layout.layer_link(&name, &d), b"");
            }
            let m: Digest = manifest_digest.parse().expect("digest");
            write_file(&layout.manifest_link(&name, &m), OCI_MANIFEST.as_bytes());
            let tag_name = format!("t-{t}");
            let tag: Tag = tag_name.parse().expect("a valid tag");
            write_file(&layout.tag_link(&name, &tag), manifest_digest.as_bytes());
            images.push(FixtureImage {
                repository: repository.clone(),
                tag: tag_name,
                manifest: manifest_digest,
                blobs,
            });
        }
    }
    images
}

/// `count` blobs of `bytes` bytes that nothing references; returns their digests.
pub fn write_unreferenced_blobs(root: &Path, seed: &str, count: usize, bytes: usize) -> Vec<String> {
    let layout = Layout::new(root);
    (0..count).map(|i| write_blob(&layout, &filler(&format!("{seed}:garbage{i}"), bytes))).collect()
}

/// Sets the mtime of every file under `root` to `age` ago (what a store untouched for that
/// long looks like to `clean`'s grace window).
pub fn age_files(root: &Path, age: Duration) {
    let then = SystemTime::now() - age;
    for entry in walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok) {
        if entry.file_type().is_file() && entry.file_name() != ".lock" && entry.file_name() != ".gc.lock" {
            if let Ok(file) = fs::File::options().write(true).open(entry.path()) {
                let _ = file.set_modified(then);
            }
        }
    }
}

/// Whether `digest`'s file in the content store exists and hashes to its name.
pub fn blob_intact(root: &Path, digest: &str) -> bool {
    let layout = Layout::new(root);
    let Ok(parsed) = digest.parse::<Digest>() else { return false };
    match fs::read(layout.blob(&parsed)) {
        Ok(bytes) => sha256_digest(&bytes) == digest,
        Err(_) => false,
    }
}

/// One repository `prefix/tags` with `tags` tags `t-000000`…, and `repos` repositories
/// `prefix/many/r-000000`… with a tag `latest` each, all pointing at one small image (written
/// once): the shape the listing endpoints scale with, without a blob per tag.
pub fn write_listing_fixture(root: &Path, prefix: &str, tags: usize, repos: usize) {
    let layout = Layout::new(root);
    let base = write_images(root, &format!("{prefix}/base"), 1, 1, 1, 64).remove(0);
    let manifest: Digest = base.manifest.parse().expect("digest");
    let link = |repository: &str, tag: &str| {
        let name: Name = repository.parse().expect("a valid repository name");
        let tag: Tag = tag.parse().expect("a valid tag");
        write_file(&layout.tag_link(&name, &tag), base.manifest.as_bytes());
        name
    };
    let tagged = link(&format!("{prefix}/tags"), "t-000000");
    write_file(&layout.manifest_link(&tagged, &manifest), OCI_MANIFEST.as_bytes());
    for t in 1..tags {
        link(&format!("{prefix}/tags"), &format!("t-{t:06}"));
    }
    for r in 0..repos {
        let name = link(&format!("{prefix}/many/r-{r:06}"), "latest");
        write_file(&layout.manifest_link(&name, &manifest), OCI_MANIFEST.as_bytes());
    }
}
