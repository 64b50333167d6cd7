//! The artifacts a user keeps (issue 16): after a job, its artifacts (the `paths` archive and its
//! `reports:` files) stay as plain files under
//! `$GLCI_HOME/artifacts/<project, '/' as %2F>/<pipeline id>/<job, encoded>/`, laid out as in the
//! project directory. [`ArtifactStore::keep`] unpacks into a temp directory beside the final one
//! and renames it into place, so a kill leaves no half directory under the job's name. Each job's
//! expiry (`expire_in`; GitLab's instance default, 30 days, when it names none; `never`) is a
//! small file under `<pipeline id>/.expire/`; [`sweep`] removes what has expired, of every
//! project, as GitLab's instance-wide expiry worker does. Used by `execute::kept` (jobs) and
//! `cli::run` (the sweep at the start of a run, `--artifacts-dir`); nothing else touches this tree.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cache_store::{decode_project, encode_project};

/// GitLab's default `expire_in` (Admin > CI/CD > Default artifacts expiration: 30 days).
pub const DEFAULT_EXPIRE_IN: Duration = Duration::from_secs(30 * 86_400);
const EXPIRE_DIR: &str = ".expire";
const TEMP_PREFIX: &str = ".tmp-";
const NEVER: &str = "never";
/// A temp directory older than this belongs to a keep that died (a live one takes seconds).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// When a job's artifacts expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(SystemTime),
}

/// `expire_in` as GitLab reads it: `never`, a human duration (`1 week`, `3 mins 4 sec`, `42`),
/// or nothing (the 30-day default); counted from `now`, the end of the job.
pub fn expiry(expire_in: Option<&str>, now: SystemTime) -> Result<Expiry, String> {
    match expire_in.map(str::trim) {
        None | Some("") => Ok(Expiry::At(now + DEFAULT_EXPIRE_IN)),
        Some(text) if text.eq_ignore_ascii_case(NEVER) => Ok(Expiry::Never),
        Some(text) => super::parse::duration::parse_human(text).map(|d| Expiry::At(now + d)),
    }
}

fn expiry_text(expiry: Expiry) -> String {
    match expiry {
        Expiry::Never => NEVER.to_string(),
        Expiry::At(at) => at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).to_string(),
    }
}

fn parse_expiry(text: &str) -> Option<Expiry> {
    let text = text.trim();
    if text == NEVER {
        return Some(Expiry::Never);
    }
    text.parse::<u64>().ok().map(|secs| Expiry::At(UNIX_EPOCH + Duration::from_secs(secs)))
}

/// A job name as one directory name: `%` → `%25`, `/` → `%2F`, a leading `.` → `%2E` (so no
/// job is ever `..`, nor meets `.expire` or a temp directory).
pub fn encode_job(job: &str) -> String {
    let encoded = job.replace('%', "%25").replace('/', "%2F");
    match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => encoded,
    }
}

/// `$GLCI_HOME/artifacts`.
pub fn root(home: &Path) -> PathBuf {
    home.join("artifacts")
}

/// The kept artifacts of one pipeline of one project.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn new(root: &Path, project: &str, pipeline_id: u64) -> ArtifactStore {
        ArtifactStore { dir: root.join(encode_project(project)).join(pipeline_id.to_string()) }
    }

    /// Where `job`'s artifacts are (or would be) kept.
    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.dir.join(encode_job(job))
    }

    /// Unpacks the tars `archives` yields (entries under `prefix`, the project dir in the job,
    /// as `execute` writes them) as `job`'s artifacts, replacing an earlier attempt's, and
    /// records `expiry`. The directory appears whole under its name or not at all.
    pub fn keep(
        &self,
        job: &str,
        prefix: &str,
        archives: &mut dyn Iterator<Item = io::Result<Box<dyn Read>>>,
        expiry: Expiry,
    ) -> io::Result<PathBuf> {
        fs::create_dir_all(self.dir.join(EXPIRE_DIR))?;
        remove_stale_temps(&self.dir);
        let temp = self.dir.join(format!("{TEMP_PREFIX}{}", random_suffix()?));
        let result = (|| {
            fs::create_dir(&temp)?;
            for archive in archives {
                let mut archive = tar::Archive::new(archive?);
                archive.set_preserve_permissions(true);
                archive.set_overwrite(true);
                archive.unpack(&temp)?;
            }
            let inner = temp.join(prefix.trim_matches('/'));
            fs::create_dir_all(&inner)?;
            write_atomic(&self.dir.join(EXPIRE_DIR).join(encode_job(job)), &expiry_text(expiry))?;
            let target = self.job_dir(job);
            if target.exists() {
                // An earlier attempt's: moved aside first (rename cannot replace a full directory).
                fs::rename(&target, temp.join(".previous"))?;
            }
            fs::rename(&inner, &target)?;
            Ok(target)
        })();
        let _ = fs::remove_dir_all(&temp);
        result
    }
}

fn random_suffix() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(crate::encoding::hex(&bytes))
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let temp = path.with_file_name(format!("{TEMP_PREFIX}{}", random_suffix()?));
    fs::write(&temp, text)?;
    fs::rename(&temp, path)
}

fn age(path: &Path, now: SystemTime) -> Option<Duration> {
    let modified = fs::symlink_metadata(path).and_then(|m| m.modified()).ok()?;
    now.duration_since(modified).ok()
}

fn remove_stale_temps(dir: &Path) {
    let now = SystemTime::now();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && age(&entry.path(), now).is_some_and(|a| a > STALE_TEMP);
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// One job's artifacts removed by [`sweep`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub project: String,
    pub pipeline: String,
    pub job: PathBuf,
}

/// Removes, of every project, the kept artifacts whose expiry is before `now` (a job directory
/// with no expiry recorded gets the default from its own age), leftover temp directories, and
/// pipeline and project directories left empty. What it removed.
pub fn sweep(root: &Path, now: SystemTime) -> Vec<Removed> {
    let mut removed = Vec::new();
    for project in subdirs(root) {
        for pipeline in subdirs(&project) {
            remove_stale_temps(&pipeline);
            let expire_dir = pipeline.join(EXPIRE_DIR);
            for job in subdirs(&pipeline) {
                let Some(name) = job.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let recorded = fs::read_to_string(expire_dir.join(&name)).ok().and_then(|t| parse_expiry(&t));
                let expired = match recorded {
                    Some(Expiry::Never) => false,
                    Some(Expiry::At(at)) => at <= now,
                    None => age(&job, now).is_some_and(|a| a > DEFAULT_EXPIRE_IN),
                };
                if expired && fs::remove_dir_all(&job).is_ok() {
                    let _ = fs::remove_file(expire_dir.join(&name));
                    removed.push(Removed {
                        project: decode_project(&project.file_name().unwrap_or_default().to_string_lossy()),
                        pipeline: pipeline.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                        job: job.clone(),
                    });
                }
            }
            // Expiry records whose directory is gone (a keep killed before its rename).
            for record in fs::read_dir(&expire_dir).into_iter().flatten().flatten() {
                let name = record.file_name();
                if !name.to_string_lossy().starts_with(TEMP_PREFIX) && !pipeline.join(&name).exists() {
                    let _ = fs::remove_file(record.path());
                }
            }
            let _ = fs::remove_dir(&expire_dir);
            let _ = fs::remove_dir(&pipeline);
        }
        let _ = fs::remove_dir(&project);
    }
    removed
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Copies the tree at `from` into `to` (created), files over same-named ones and the rest of
/// `to` left alone, as unpacking a downloaded artifacts archive does; symlinks copied as links.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<usize> {
    let mut files = 0;
    fs::create_dir_all(to)?;
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        let Ok(rel) = entry.path().strip_prefix(from) else { continue };
        let target = to.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&target)?;
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
        files += 1;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, text) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, text.as_bytes()).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn archives(tars: Vec<Vec<u8>>) -> impl Iterator<Item = io::Result<Box<dyn Read>>> {
        tars.into_iter().map(|t| Ok(Box::new(io::Cursor::new(t)) as Box<dyn Read>))
    }

    #[test]
    fn expire_in_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(expiry(None, now), Ok(Expiry::At(now + DEFAULT_EXPIRE_IN)));
        assert_eq!(expiry(Some("never"), now), Ok(Expiry::Never));
        assert_eq!(expiry(Some("1 week"), now), Ok(Expiry::At(now + Duration::from_secs(604_800))));
        assert_eq!(expiry(Some("3 mins 4 sec"), now), Ok(Expiry::At(now + Duration::from_secs(184))));
        assert_eq!(expiry(Some("42"), now), Ok(Expiry::At(now + Duration::from_secs(42))));
        assert!(expiry(Some("soon"), now).is_err());
        assert_eq!(parse_expiry(&expiry_text(Expiry::Never)), Some(Expiry::Never));
        assert_eq!(parse_expiry(&expiry_text(Expiry::At(now))), Some(Expiry::At(now)));
    }

    #[test]
    fn job_names_are_one_safe_directory_name() {
        assert_eq!(encode_job("build 1/2"), "build 1%2F2");
        assert_eq!(encode_job(".."), "%2E.");
        assert_eq!(encode_job(".expire"), "%2Eexpire");
        assert_eq!(encode_job("test: [1, linux]"), "test: [1, linux]");
        assert_eq!(encode_job("50%"), "50%25");
    }

    #[test]
    fn keep_replaces_an_earlier_attempt_and_sweep_removes_the_expired() {
        let home = tempfile::tempdir().expect("tempdir");
        let root = root(home.path());
        let store = ArtifactStore::new(&root, "g/p", 7);
        let now = SystemTime::now();
        let first = tar_of(&[("builds/g/p/dist/old.txt", "old")]);
        store.keep("build", "/builds/g/p", &mut archives(vec![first]), Expiry::At(now)).expect("keep");
        let tars = vec![tar_of(&[("builds/g/p/dist/a.txt", "a")]), tar_of(&[("builds/g/p/report.xml", "<r/>")])];
        let dir = store.keep("build", "/builds/g/p", &mut archives(tars), Expiry::At(now)).expect("keep");
        assert_eq!(dir, root.join("g%2Fp/7/build"));
        assert_eq!(fs::read_to_string(dir.join("dist/a.txt")).expect("a"), "a");
        assert_eq!(fs::read_to_string(dir.join("report.xml")).expect("report"), "<r/>");
        assert!(!dir.join("dist/old.txt").exists(), "the earlier attempt's files are gone");
        store.keep("lint", "/builds/g/p", &mut archives(vec![tar_of(&[])]), Expiry::Never).expect("keep");
        let other = ArtifactStore::new(&root, "g/other", 9);
        let later = Expiry::At(now + Duration::from_secs(3600));
        other
            .keep("x", "/builds/g/other", &mut archives(vec![tar_of(&[("builds/g/other/f", "f")])]), later)
            .expect("keep");
        let names: Vec<String> = fs::read_dir(root.join("g%2Fp/7"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(TEMP_PREFIX)), "no temp left: {names:?}");

        let removed = sweep(&root, now + Duration::from_secs(1));
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!((removed[0].project.as_str(), removed[0].pipeline.as_str()), ("g/p", "7"));
        assert!(!dir.exists());
        assert!(store.job_dir("lint").exists(), "never does not expire");
        assert!(other.job_dir("x").exists(), "not yet expired");
        assert_eq!(sweep(&root, now + Duration::from_secs(7200)).len(), 1);
        assert!(!root.join("g%2Fother").exists(), "an emptied project directory goes too");
    }

    #[test]
    fn a_failed_keep_leaves_no_directory_under_the_name() {
        let home = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::new(&root(home.path()), "g/p", 1);
        let mut failing = std::iter::once(Err(io::Error::other("docker cp died")));
        assert!(store.keep("build", "/builds/g/p", &mut failing, Expiry::Never).is_err());
        assert!(!store.job_dir("build").exists());
        let left: Vec<_> = fs::read_dir(&store.dir).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from(EXPIRE_DIR)]);
    }

    #[test]
    fn copy_tree_merges_into_an_existing_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::create_dir_all(from.join("d")).expect("mkdir");
        fs::write(from.join("d/f"), "new").expect("write");
        std::os::unix::fs::symlink("d/f", from.join("link")).expect("symlink");
        fs::create_dir_all(to.join("d")).expect("mkdir");
        fs::write(to.join("d/f"), "old").expect("write");
        fs::write(to.join("mine"), "keep").expect("write");
        assert_eq!(copy_tree(&from, &to).expect("copy"), 2);
        assert_eq!(fs::read_to_string(to.join("d/f")).expect("f"), "new");
        assert_eq!(fs::read_to_string(to.join("mine")).expect("mine"), "keep");
        assert_eq!(fs::read_link(to.join("link")).expect("link"), PathBuf::from("d/f"));
    }
}
