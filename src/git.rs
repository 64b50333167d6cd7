//! Git facts about the project for `glci run` (issue 7): commit, branch, default branch, remote
//! and the files a job's checkout holds, read through the `git` CLI. Every query is best effort:
//! a directory that is no git repository (or a missing `git`) yields `None`, and the plan falls
//! back to the directory name and an all-zero commit. Called by `cli::run` only; pure data out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the predefined `CI_COMMIT_*`/`CI_PROJECT_*` variables are made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub sha: Option<String>,
    /// `None` on a detached HEAD.
    pub branch: Option<String>,
    /// `origin/HEAD`'s branch, else `main` or `master` when such a branch exists.
    pub default_branch: Option<String>,
    /// `remote.origin.url`.
    pub remote_url: Option<String>,
    /// The commit message's first line, and the whole message.
    pub title: Option<String>,
    pub message: Option<String>,
    /// Committer date, ISO 8601.
    pub timestamp: Option<String>,
    pub author: Option<String>,
    /// The tag HEAD is exactly at (a tag pipeline), and its message when annotated.
    pub tag: Option<String>,
    pub tag_message: Option<String>,
    /// `user.name` / `user.email` of git config: who "pushed" (`GITLAB_USER_*`).
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    /// `origin/<branch>` when it is behind HEAD: what a push would have replaced.
    pub before_sha: Option<String>,
}

/// Runs `git -C DIR ARGS`; trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output =
        Command::new("git").arg("-C").arg(dir).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim_end_matches(['\n', '\r']).to_string())
}

/// The top of the work tree that holds `dir`, when it is in one.
pub fn toplevel(dir: &Path) -> Option<PathBuf> {
    git(dir, &["rev-parse", "--show-toplevel"]).filter(|s| !s.is_empty()).map(PathBuf::from)
}

/// Reads the facts of the repository at `dir` (all `None` outside a repository).
pub fn facts(dir: &Path) -> Facts {
    if toplevel(dir).is_none() {
        return Facts::default();
    }
    let branch = git(dir, &["symbolic-ref", "--quiet", "--short", "HEAD"]).filter(|b| !b.is_empty());
    let default_branch = git(dir, &["symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"])
        .and_then(|r| r.strip_prefix("origin/").map(String::from))
        .or_else(|| {
            ["main", "master"]
                .into_iter()
                .find(|b| git(dir, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{b}")]).is_some())
                .map(String::from)
        });
    let message = git(dir, &["log", "-1", "--format=%B"]).map(|m| m.trim_end().to_string());
    let sha = git(dir, &["rev-parse", "--verify", "--quiet", "HEAD"]).filter(|s| !s.is_empty());
    let tag = git(dir, &["describe", "--tags", "--exact-match", "HEAD"]).filter(|t| !t.is_empty());
    let tag_message = tag
        .as_ref()
        .and_then(|t| git(dir, &["tag", "-l", "--format=%(contents)", t]))
        .map(|m| m.trim_end().to_string())
        .filter(|m| !m.is_empty());
    let before_sha = branch
        .as_ref()
        .and_then(|b| git(dir, &["rev-parse", "--verify", "--quiet", &format!("refs/remotes/origin/{b}")]))
        .filter(|before| Some(before) != sha.as_ref());
    let config = |key: &str| git(dir, &["config", "--get", key]).filter(|s| !s.is_empty());
    Facts {
        sha,
        branch,
        default_branch,
        remote_url: git(dir, &["config", "--get", "remote.origin.url"]).filter(|s| !s.is_empty()),
        title: message.as_ref().and_then(|m| m.lines().next().map(String::from)),
        message,
        timestamp: git(dir, &["log", "-1", "--format=%cI"]).filter(|s| !s.is_empty()),
        author: git(dir, &["log", "-1", "--format=%an <%ae>"]).filter(|s| !s.is_empty()),
        tag,
        tag_message,
        user_name: config("user.name"),
        user_email: config("user.email"),
        before_sha,
    }
}

/// The files of the work tree at `dir` that a checkout would hold, relative to it: tracked files
/// present on disk plus untracked files that are not ignored (the developer's uncommitted work
/// runs, as with gitlab-ci-local). `None` when `dir` is no work tree top.
pub fn work_tree_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let listing = git(dir, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"])?;
    let mut files: Vec<PathBuf> = listing.split('\0').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
    files.sort();
    files.dedup();
    Some(files)
}

/// `group/sub/project` out of a remote URL: `git@host:group/project.git`,
/// `https://host/group/project.git`, `ssh://git@host:2222/group/project`.
pub fn project_path_from_remote(url: &str) -> Option<String> {
    let url = url.trim();
    let path = if let Some((_, rest)) = url.split_once("://") {
        // scheme://[user@]host[:port]/path
        rest.split_once('/')?.1
    } else if let Some((host, path)) = url.split_once(':') {
        // scp-like: [user@]host:path (a single letter is a Windows drive, not a host)
        if host.len() <= 1 || host.contains('/') {
            return None;
        }
        path
    } else {
        return None;
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_matches('/');
    (!path.is_empty()).then(|| path.to_string())
}

/// The SSH port of a remote URL (`ssh://git@host:2222/g/p`), when it names one.
pub fn ssh_port_from_remote(url: &str) -> Option<u16> {
    let rest = url.trim().strip_prefix("ssh://")?;
    let authority = rest.split('/').next()?;
    authority.rsplit('@').next()?.split_once(':')?.1.parse().ok()
}

/// The host of a remote URL (for `CI_SERVER_HOST`), when it has one.
pub fn host_from_remote(url: &str) -> Option<String> {
    let url = url.trim();
    let authority =
        if let Some((_, rest)) = url.split_once("://") { rest.split('/').next()? } else { url.split_once(':')?.0 };
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_from_remotes() {
        let cases = [
            ("git@gitlab.com:group/project.git", Some("group/project")),
            ("https://gitlab.com/group/sub/project.git", Some("group/sub/project")),
            ("https://user:tok@gitlab.example.com/group/project", Some("group/project")),
            ("ssh://git@gitlab.example.com:2222/group/project.git/", Some("group/project")),
            ("/srv/git/project.git", None),
            ("", None),
        ];
        for (url, want) in cases {
            assert_eq!(project_path_from_remote(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn hosts_from_remotes() {
        assert_eq!(host_from_remote("git@gitlab.com:g/p.git").as_deref(), Some("gitlab.com"));
        assert_eq!(host_from_remote("https://u:p@example.org:8443/g/p").as_deref(), Some("example.org"));
        assert_eq!(host_from_remote("/srv/p.git"), None);
    }
}
