//! Every on-disk path of the store, and nothing else. Paths are built only from validated
//! `Name`/`Tag`/`Digest` values and upload ids we generated, so none can leave the root.
//!
//! ```text
//! <root>/blobs/<algo>/<2 hex>/<hex>                         content, immutable
//! <root>/repositories/<name>/_manifests/revisions/<algo>/<hex>   link: media type of the manifest
//! <root>/repositories/<name>/_manifests/origins/<algo>/<hex>     pulled through: Origin JSON
//! <root>/repositories/<name>/_manifests/tags/<tag>          link: digest (mtime: last validated)
//! <root>/repositories/<name>/_layers/<algo>/<hex>           link: the repo may serve this blob
//!                                                            (empty: pushed; Origin JSON: cached)
//! <root>/repositories/<name>/_referrers/<algo>/<subject hex>/<algo>-<hex>  descriptor JSON
//! <root>/uploads/<id>/{data,info}                           upload sessions
//! <root>/tmp/                                                temp files, same filesystem
//! <dir>/.gc-<file>                                           a link or blob `clean` is deleting
//! <root>/.lock                                               flock: held by `glci serve`
//! <root>/.gc.lock                                            flock: one `clean` at a time
//! <root>/.gc-running                                         a `clean` started, not finished
//! ```

use std::path::{Path, PathBuf};

use crate::registry::names::{Digest, Name, Tag};

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm().as_str()).join(&digest.hex()[..2]).join(digest.hex())
    }

    pub fn repositories(&self) -> PathBuf {
        self.root.join("repositories")
    }

    pub fn repository(&self, name: &Name) -> PathBuf {
        let mut path = self.repositories();
        path.extend(name.components());
        path
    }

    pub fn manifests_dir(&self, name: &Name) -> PathBuf {
        self.repository(name).join("_manifests")
    }

    pub fn manifest_link(&self, name: &Name, digest: &Digest) -> PathBuf {
        self.manifests_dir(name).join("revisions").join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub fn manifest_origin(&self, name: &Name, digest: &Digest) -> PathBuf {
        self.manifests_dir(name).join("origins").join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub fn tags_dir(&self, name: &Name) -> PathBuf {
        self.manifests_dir(name).join("tags")
    }

    pub fn tag_link(&self, name: &Name, tag: &Tag) -> PathBuf {
        self.tags_dir(name).join(tag.as_str())
    }

    pub fn layer_link(&self, name: &Name, digest: &Digest) -> PathBuf {
        self.repository(name).join("_layers").join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub fn referrers_dir(&self, name: &Name, subject: &Digest) -> PathBuf {
        self.repository(name).join("_referrers").join(subject.algorithm().as_str()).join(subject.hex())
    }

    pub fn referrer_link(&self, name: &Name, subject: &Digest, referrer: &Digest) -> PathBuf {
        self.referrers_dir(name, subject).join(format!("{}-{}", referrer.algorithm().as_str(), referrer.hex()))
    }

    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// `id` must be one of ours (checked by `uploads::is_upload_id`).
    pub fn upload(&self, id: &str) -> PathBuf {
        self.uploads().join(id)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Held (flock) by `glci serve` for its lifetime, and by `glci registry … --storage`.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Held (flock) while a `clean` runs, so two never interleave.
    pub fn gc_lock_file(&self) -> PathBuf {
        self.root.join(".gc.lock")
    }

    /// Present while a `clean` runs: found at open, a clean was killed and left files aside.
    pub fn gc_marker(&self) -> PathBuf {
        self.root.join(".gc-running")
    }

    /// Where `clean` moves a blob while it decides: beside it, hidden.
    pub fn blob_aside(&self, digest: &Digest) -> PathBuf {
        link_aside(&self.blob(digest))
    }
}

/// Prefix of links moved aside in their own directory by `clean` (hidden: links never start
/// with a dot, and `list_links` skips dot files).
pub const GC_ASIDE_LINK: &str = ".gc-";

/// Where `clean` moves a link while it decides: beside it, hidden.
pub fn link_aside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{GC_ASIDE_LINK}{name}"))
}

impl Layout {
    /// The link a `link_aside` path stands for.
    pub fn link_of_aside(path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?.to_str()?.strip_prefix(GC_ASIDE_LINK)?;
        (!name.is_empty()).then(|| path.with_file_name(name))
    }
}
