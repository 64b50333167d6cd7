//! The rules of `cache:` that need no I/O: what a key may be (GitLab's `key.rb` checks and the
//! runner's "outside of project bucket" one), policies, a job's caches with variables expanded
//! (`plan` calls [`expand`]), the key `key: files` makes out of the files' last-commit ids
//! ([`files_key`]), and which paths and symlinks stay inside the project ([`inside_project`],
//! [`link_stays_inside`]). The store and the container side live in `execute::cache`.

use crate::pipeline::model::{Cache, CacheKey, CachePolicy};
use crate::pipeline::variables;

/// A key becomes one directory name in the runner's local cache (`cache/<project>/<key>/`), so
/// it is bounded by a file name's length (NAME_MAX on Linux).
pub const MAX_KEY_LEN: usize = 255;

/// GitLab's checks of a cache key (`lib/gitlab/ci/config/entry/key.rb`: no `/` or `%2F`, not
/// only dots (`.`, `..`, `%2E`)), plus the length bound.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.contains('/') || key.to_ascii_lowercase().contains("%2f") {
        return Err(format!("cache key cannot contain the \"/\" character (nor %2F): {key:?}"));
    }
    let decoded = key.to_ascii_lowercase().replace("%2e", ".");
    if !decoded.is_empty() && decoded.chars().all(|c| c == '.') {
        return Err(format!("cache key cannot be \".\" or \"..\" (nor %2E): {key:?}"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("cache key is longer than {MAX_KEY_LEN} bytes ({} bytes)", key.len()));
    }
    if key.contains('\0') {
        return Err("cache key cannot contain a NUL byte".into());
    }
    Ok(())
}

pub fn parse_policy(text: &str) -> Option<CachePolicy> {
    match text {
        "pull-push" => Some(CachePolicy::PullPush),
        "pull" => Some(CachePolicy::Pull),
        "push" => Some(CachePolicy::Push),
        _ => None,
    }
}

/// A job's cache with `key`, `prefix`, `paths`, `policy` and `fallback_keys` expanded; paths
/// given as `$CI_PROJECT_DIR/...` made relative. The policy is checked after expansion.
pub fn expand(cache: &Cache, lookup: &dyn Fn(&str) -> Option<String>, project_dir: &str) -> Result<Cache, String> {
    let text = |t: &String| variables::expand(t, lookup);
    let relative = |p: &String| {
        let expanded = variables::expand(p, lookup);
        match expanded.strip_prefix(project_dir) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/').to_string(),
            _ => expanded,
        }
    };
    let key = match &cache.key {
        CacheKey::Name(name) => CacheKey::Name(text(name)),
        CacheKey::Files { files, prefix } => {
            CacheKey::Files { files: files.iter().map(relative).collect(), prefix: prefix.as_ref().map(text) }
        }
    };
    let policy = text(&cache.policy);
    if parse_policy(&policy).is_none() {
        return Err(format!("cache policy {:?} is {policy:?}: use pull-push, pull or push", cache.policy));
    }
    Ok(Cache {
        key,
        paths: cache.paths.iter().map(relative).collect(),
        policy,
        fallback_keys: cache.fallback_keys.iter().map(text).collect(),
        ..cache.clone()
    })
}

/// The key of `key: {files, prefix}` as GitLab computes it (`Seed::Build::Cache`): the ids of the
/// last commits that changed each file, sorted and deduplicated, joined by `-`, SHA-1 in hex;
/// `default` when no file has one; `<prefix>-` in front when a prefix is set.
pub fn files_key(prefix: Option<&str>, ids: &[String]) -> String {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !id.is_empty()).collect();
    ids.sort_unstable();
    ids.dedup();
    let digest = if ids.is_empty() {
        "default".to_string()
    } else {
        let hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, ids.join("-").as_bytes());
        crate::encoding::hex(hash.as_ref())
    };
    match prefix.filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{prefix}-{digest}"),
        None => digest,
    }
}

/// `path` (relative to the project, `/`-separated) normalised, when it stays inside the
/// project; `None` for an absolute path or one that climbs out with `..`.
pub fn inside_project(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Whether a symlink at `link` (relative to the project) pointing at `target` resolves inside
/// the project (`project_dir` is the project's absolute path in the container).
pub fn link_stays_inside(link: &str, target: &str, project_dir: &str) -> bool {
    let project = project_dir.trim_end_matches('/');
    let relative = match target.strip_prefix(project) {
        Some(rest) if target.starts_with('/') && (rest.is_empty() || rest.starts_with('/')) => {
            rest.trim_start_matches('/').to_string()
        }
        _ if target.starts_with('/') => return false,
        _ => match link.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{target}"),
            None => target.to_string(),
        },
    };
    inside_project(&relative).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::model::{ArtifactsWhen, Location};

    #[test]
    fn key_rules() {
        assert!(check_key("node-$CI_COMMIT_REF_SLUG").is_ok());
        assert!(check_key("v1.2").is_ok());
        assert!(check_key("a/b").is_err());
        assert!(check_key("../../x").is_err());
        assert!(check_key("A%2fB").is_err());
        assert!(check_key(".").is_err());
        assert!(check_key("%2E.").is_err());
        assert!(check_key(&"k".repeat(255)).is_ok());
        assert!(check_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn files_key_as_gitlab() {
        assert_eq!(files_key(None, &[]), "default");
        assert_eq!(files_key(Some("rspec"), &[]), "rspec-default");
        // SHA-1 of "a-b" (sorted, deduplicated).
        let ids = ["b".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(files_key(None, &ids), "34fafddda8f42376094beb762e514a67b6f019e7");
        assert_eq!(files_key(Some("p"), &ids), format!("p-{}", files_key(None, &ids)));
    }

    #[test]
    fn paths_and_links_inside_the_project() {
        assert_eq!(inside_project("./a/../b/"), Some("b".into()));
        assert_eq!(inside_project("../x"), None);
        assert_eq!(inside_project("a/../../x"), None);
        assert_eq!(inside_project("/etc"), None);
        assert!(link_stays_inside("a/link", "../b", "/builds/g/p"));
        assert!(!link_stays_inside("a/link", "../../x", "/builds/g/p"));
        assert!(!link_stays_inside("link", "/etc/passwd", "/builds/g/p"));
        assert!(link_stays_inside("link", "/builds/g/p/x", "/builds/g/p"));
        assert!(!link_stays_inside("link", "/builds/g/pp", "/builds/g/p"));
    }

    #[test]
    fn expansion() {
        let cache = Cache {
            key: CacheKey::Name("deps-$REF".into()),
            paths: vec!["$CI_PROJECT_DIR/vendor".into(), "out/$REF".into()],
            untracked: false,
            policy: "$POLICY".into(),
            when: ArtifactsWhen::OnSuccess,
            fallback_keys: vec!["deps-$MAIN".into()],
            unprotect: false,
            location: Location::default(),
        };
        let vars = |n: &str| match n {
            "REF" => Some("dev".to_string()),
            "MAIN" => Some("main".to_string()),
            "CI_PROJECT_DIR" => Some("/builds/g/p".to_string()),
            "POLICY" => Some("pull".to_string()),
            _ => None,
        };
        let out = expand(&cache, &vars, "/builds/g/p").expect("expand");
        assert_eq!(out.key, CacheKey::Name("deps-dev".into()));
        assert_eq!(out.paths, ["vendor", "out/dev"]);
        assert_eq!((out.policy.as_str(), out.fallback_keys[0].as_str()), ("pull", "deps-main"));
        let none = |_: &str| None;
        assert!(expand(&cache, &none, "/builds/g/p").is_err());
    }
}
