//! Git facts about the project for `glci run` (issue 7): commit, branch, default branch, remote
//! and the files a job's checkout holds, read through the `git` CLI. Every query is best effort:
//! a directory that is no git repository (or a missing `git`) yields `None`, and the plan falls
//! back to the directory name and an all-zero commit. Called by `cli::run`, `pipeline::plan` and
//! `pipeline::predefined` (facts of the run), and `pipeline::execute` (a job's checkout files for
//! archives and cache keys); pure data out.

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
#[allow(clippy::disallowed_methods)] // git.rs is the one home for spawning git (STYLE.md §7)
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

/// The files git tracks in the work tree at `dir` (relative, `/`-separated): what `cache:` and
/// `artifacts: untracked` leave out. `None` outside a work tree.
pub fn tracked_files(dir: &Path) -> Option<Vec<String>> {
    let listing = git(dir, &["ls-files", "-z", "--cached"])?;
    Some(listing.split('\0').filter(|p| !p.is_empty()).map(String::from).collect())
}

/// The commit that last changed `path` (relative to `dir`) when the work tree holds it as
/// committed; `None` when it is untracked, modified or staged, or `dir` is no repository
/// (GitLab's `cache: key: files` reads the last commit of each file).
pub fn last_commit_if_clean(dir: &Path, path: &str) -> Option<String> {
    let status = git(dir, &["status", "--porcelain", "--untracked-files=all", "--", path])?;
    if !status.trim().is_empty() {
        return None;
    }
    git(dir, &["log", "-1", "--format=%H", "--", path]).filter(|id| !id.is_empty())
}

/// The commit `reference` (a branch, tag or SHA; a branch only on `origin` too) names.
pub fn resolve_commit(dir: &Path, reference: &str) -> Option<String> {
    if reference.starts_with('-') {
        return None;
    }
    [reference.to_string(), format!("origin/{reference}")]
        .iter()
        .find_map(|r| git(dir, &["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{r}^{{commit}}")]))
        .filter(|sha| !sha.is_empty())
}

/// What `rules: changes` compares with when the pipeline names no `compare_to` (issue 17): on
/// the default branch the previous commit (`HEAD~1`), elsewhere the merge base of `HEAD` and
/// the default branch (local, else `origin/`). The commit and a description of it; `None`
/// outside a repository, without a default branch, or on its first commit.
pub fn change_base(dir: &Path, facts: &Facts) -> Option<(String, String)> {
    facts.sha.as_ref()?;
    let default = facts.default_branch.as_deref()?;
    if facts.branch.as_deref() == Some(default) {
        let sha = resolve_commit(dir, "HEAD~1")?;
        let shown = format!("the previous commit on {default} ({})", short(&sha));
        return Some((sha, shown));
    }
    let default_sha = resolve_commit(dir, default)?;
    let sha = git(dir, &["merge-base", "HEAD", &default_sha]).filter(|s| !s.is_empty())?;
    let shown = format!("the merge base of HEAD and {default} ({})", short(&sha));
    Some((sha, shown))
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// The paths (relative to the work tree top, `/`-separated) that differ between commit `base`
/// and the work tree: committed, staged and unstaged changes, deletions, both sides of a
/// rename, and untracked files that are not ignored.
pub fn changed_paths(dir: &Path, base: &str) -> Result<Vec<String>, String> {
    let sha = resolve_commit(dir, base).ok_or_else(|| format!("no commit `{base}` in {}", dir.display()))?;
    let diff = git(dir, &["diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", &sha, "--"])
        .ok_or_else(|| format!("git diff {sha} failed in {}", dir.display()))?;
    let untracked = git(dir, &["ls-files", "-z", "--others", "--exclude-standard"])
        .ok_or_else(|| format!("git ls-files failed in {}", dir.display()))?;
    let mut paths: Vec<String> =
        diff.split('\0').chain(untracked.split('\0')).filter(|p| !p.is_empty()).map(String::from).collect();
    paths.sort();
    paths.dedup();
    Ok(paths)
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

    /// A real repository in a temp dir; `sh` runs shell lines in it.
    struct Repo(tempfile::TempDir);

    impl Repo {
        fn new() -> Repo {
            let repo = Repo(tempfile::tempdir().unwrap());
            repo.sh("git init -q -b main . && git config user.email t@e && git config user.name t");
            repo
        }
        #[allow(clippy::disallowed_methods)] // the test builds a real repository with the git CLI
        fn sh(&self, script: &str) {
            let out = Command::new("sh").arg("-c").arg(script).current_dir(self.0.path()).output().unwrap();
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        }
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn base(&self) -> Option<(String, String)> {
            change_base(self.path(), &facts(self.path()))
        }
    }

    #[test]
    fn change_base_is_the_previous_commit_on_the_default_branch() {
        let repo = Repo::new();
        repo.sh("echo a > a && git add a && git commit -qm one");
        assert_eq!(repo.base(), None, "the first commit has no previous one");
        repo.sh("echo b > b && git add b && git commit -qm two");
        let (sha, shown) = repo.base().unwrap();
        assert_eq!(Some(sha.clone()), resolve_commit(repo.path(), "HEAD~1"));
        assert!(shown.starts_with("the previous commit on main ("), "{shown}");
        assert_eq!(changed_paths(repo.path(), &sha).unwrap(), ["b"]);
    }

    #[test]
    fn change_base_of_a_branch_is_the_merge_base_and_the_work_tree_counts() {
        let repo = Repo::new();
        repo.sh(
            "mkdir src && echo 1 > src/lib.rs && echo x > old && echo k > kept && git add . && git commit -qm base              && git checkout -qb feature && echo 2 > src/lib.rs && git commit -qam change              && git checkout -q main && echo m > on-main && git add on-main && git commit -qm main-moves              && git checkout -q feature && git mv old new && echo s > staged && git add staged              && echo u > untracked && echo i > ignored && echo ignored > .gitignore && rm kept",
        );
        let (sha, shown) = repo.base().unwrap();
        assert!(shown.starts_with("the merge base of HEAD and main ("), "{shown}");
        assert_eq!(Some(sha.clone()), resolve_commit(repo.path(), "main~1"));
        let paths = changed_paths(repo.path(), &sha).unwrap();
        // Not `on-main` (the default branch moved on), nor the ignored file.
        assert_eq!(paths, [".gitignore", "kept", "new", "old", "src/lib.rs", "staged", "untracked"]);
        assert_eq!(
            changed_paths(repo.path(), "HEAD").unwrap(),
            [".gitignore", "kept", "new", "old", "staged", "untracked"]
        );
    }

    #[test]
    fn refs_resolve_to_commits_or_not_at_all() {
        let repo = Repo::new();
        repo.sh("echo a > a && git add a && git commit -qm one && git tag v1 && git update-ref refs/remotes/origin/rel HEAD");
        let head = resolve_commit(repo.path(), "HEAD").unwrap();
        assert_eq!(head.len(), 40);
        for reference in ["main", "v1", "refs/heads/main", "rel", &head, &head[..10]] {
            assert_eq!(resolve_commit(repo.path(), reference).as_deref(), Some(head.as_str()), "{reference}");
        }
        assert_eq!(resolve_commit(repo.path(), "nope"), None);
        assert_eq!(resolve_commit(repo.path(), "--all"), None);
        assert!(changed_paths(repo.path(), "nope").unwrap_err().contains("no commit `nope`"));
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(change_base(outside.path(), &facts(outside.path())), None);
    }

    #[test]
    fn hosts_from_remotes() {
        assert_eq!(host_from_remote("git@gitlab.com:g/p.git").as_deref(), Some("gitlab.com"));
        assert_eq!(host_from_remote("https://u:p@example.org:8443/g/p").as_deref(), Some("example.org"));
        assert_eq!(host_from_remote("/srv/p.git"), None);
    }
}
