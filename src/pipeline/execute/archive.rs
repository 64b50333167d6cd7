//! Tar streams between the host and job containers (`docker cp -`): the project checkout going
//! in at `/builds/<path>` and artifacts coming out, filtered by `artifacts: paths/exclude`.
//! Streams only: nothing is held in memory beyond one header. Used by `execute::job`; the
//! project's file list is also `plan`'s input for `rules: exists`.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use crate::pipeline::glob::{self, Globs};
use crate::pipeline::model::Artifacts;

/// Modes the runner's `umask 0000` gives a checkout.
const DIR_MODE: u32 = 0o777;
const FILE_MODE: u32 = 0o666;
const EXEC_MODE: u32 = 0o777;

/// The files a job's checkout holds, relative to the project directory, `/`-separated: in a git
/// work tree its tracked and untracked-but-not-ignored files, else every file. `.git` itself is
/// not listed (see [`write_project`]).
pub fn project_files(dir: &Path) -> io::Result<Vec<String>> {
    let is_top = crate::git::toplevel(dir)
        .and_then(|top| fs::canonicalize(top).ok())
        .zip(fs::canonicalize(dir).ok())
        .is_some_and(|(top, dir)| top == dir);
    if is_top {
        if let Some(files) = crate::git::work_tree_files(dir) {
            return Ok(files
                .into_iter()
                .filter(|f| fs::symlink_metadata(dir.join(f)).is_ok())
                .map(|f| f.to_string_lossy().replace('\\', "/"))
                .collect());
        }
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir).sort_by_file_name().into_iter();
    for entry in walker.filter_entry(|e| e.depth() == 0 || e.file_name() != ".git") {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_dir() {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(dir) {
            files.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(files)
}

/// A file glci writes into a container (scripts, and the wiring's files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraFile {
    /// Absolute path in the container.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Adds the directories above `path` (relative, `/`-separated) not yet written.
fn ensure_parents<W: Write>(out: &mut Builder<W>, path: &str, dirs: &mut BTreeSet<String>) -> io::Result<()> {
    ensure_parents_with_mode(out, path, dirs, DIR_MODE)
}

/// Like [`ensure_parents`] with `mode` for the directories (0755 for system paths such as
/// `/etc/docker/certs.d/…`: extracting a 0777 `etc/` entry would loosen the image's `/etc`).
fn ensure_parents_with_mode<W: Write>(
    out: &mut Builder<W>,
    path: &str,
    dirs: &mut BTreeSet<String>,
    mode: u32,
) -> io::Result<()> {
    let mut upto = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        if !upto.is_empty() {
            upto.push('/');
        }
        upto.push_str(part);
        if dirs.insert(upto.clone()) {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Directory);
            header.set_mode(mode);
            header.set_size(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(now());
            out.append_data(&mut header, format!("{upto}/"), io::empty())?;
        }
    }
    Ok(())
}

/// Seconds since the epoch, for the directories glci makes up.
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn file_header(size: u64, mode: u32, mtime: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header
}

/// Writes the tar a job container gets before it starts: `files` of `project_dir` (plus its
/// `.git` directory, as a clone has one) under `prefix` (`builds/<path>`), and `extra` files at
/// their absolute paths. A file that vanished since it was listed is skipped.
pub fn write_project<W: Write>(
    out: W,
    project_dir: &Path,
    files: &[String],
    prefix: &str,
    extra: &[ExtraFile],
    archives: &[PathBuf],
) -> io::Result<()> {
    let mut builder = Builder::new(out);
    builder.follow_symlinks(false);
    let mut dirs = BTreeSet::new();
    ensure_parents(&mut builder, &format!("{prefix}/."), &mut dirs)?;
    let mut listed: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let git_dir = project_dir.join(".git");
    if git_dir.is_dir() {
        for entry in walkdir::WalkDir::new(&git_dir).sort_by_file_name() {
            let entry = entry.map_err(io::Error::other)?;
            if !entry.file_type().is_dir() {
                if let Ok(rel) = entry.path().strip_prefix(project_dir) {
                    listed.push(rel.to_path_buf());
                }
            }
        }
    }
    for rel in listed {
        let path = project_dir.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let name = format!("{prefix}/{}", rel.to_string_lossy().replace('\\', "/"));
        ensure_parents(&mut builder, &name, &mut dirs)?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let mtime = mtime.map(|d| d.as_secs()).unwrap_or(0);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            let mut header = file_header(0, EXEC_MODE, mtime);
            header.set_entry_type(EntryType::Symlink);
            builder.append_link(&mut header, &name, &target)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = if meta.permissions().mode() & 0o111 != 0 { EXEC_MODE } else { FILE_MODE };
            let Ok(file) = fs::File::open(&path) else { continue };
            // The size is taken from the open file, so a file growing meanwhile stays consistent.
            let size = file.metadata()?.len();
            let mut header = file_header(size, mode, mtime);
            builder.append_data(&mut header, &name, file.take(size))?;
        }
    }
    write_extra(&mut builder, extra, &mut dirs)?;
    for archive in archives {
        append_entries_of(builder.get_mut(), archive)?;
    }
    builder.into_inner()?.flush()
}

/// Copies the entries of `archive`, a tar written by [`ArtifactWriter`] (it ends with the two
/// zero blocks `Builder::finish` writes), to `out` without that end-of-archive marker, so that
/// what follows in `out` is read as part of the same archive: the project and the artifacts of
/// earlier jobs go into a job container in one `docker cp` (issue 18), in the runner's order.
pub fn append_entries_of<W: Write>(out: &mut W, archive: &Path) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    const END: u64 = 1024;
    let mut file = fs::File::open(archive)?;
    let len = file.metadata()?.len();
    let mut end = [0u8; END as usize];
    if len < END || len % 512 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a tar", archive.display())));
    }
    file.seek(SeekFrom::Start(len - END))?;
    file.read_exact(&mut end)?;
    if end.iter().any(|&b| b != 0) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: no end-of-archive", archive.display())));
    }
    file.seek(SeekFrom::Start(0))?;
    io::copy(&mut file.take(len - END), out)?;
    Ok(())
}

/// Writes `extra` files at their absolute paths (directories above them 0777).
pub fn write_extra<W: Write>(
    builder: &mut Builder<W>,
    extra: &[ExtraFile],
    dirs: &mut BTreeSet<String>,
) -> io::Result<()> {
    for file in extra {
        let name = file.path.trim_start_matches('/');
        ensure_parents_with_mode(builder, name, dirs, 0o755)?;
        let mut header = file_header(file.contents.len() as u64, file.mode, now());
        builder.append_data(&mut header, name, file.contents.as_slice())?;
    }
    Ok(())
}

/// Just `extra` files, as a tar (the scripts between phases).
pub fn write_files<W: Write>(out: W, extra: &[ExtraFile]) -> io::Result<()> {
    let mut builder = Builder::new(out);
    write_extra(&mut builder, extra, &mut BTreeSet::new())?;
    builder.into_inner()?.flush()
}

/// The directories (relative to the project) worth copying out for `artifacts`: each path's
/// literal prefix, with those inside another dropped. `""` is the project itself.
pub fn artifact_sources(artifacts: &Artifacts) -> Vec<String> {
    let mut bases: Vec<String> = artifacts.paths.iter().map(|p| glob::literal_prefix(p)).collect();
    if artifacts.untracked {
        bases.push(String::new());
    }
    bases.sort();
    bases.dedup();
    let all = bases.clone();
    bases.retain(|b| !all.iter().any(|other| other != b && (other.is_empty() || b.starts_with(&format!("{other}/")))));
    bases
}

/// Which files of the project are the artifacts of one `artifacts:` (its globs compiled once,
/// then asked for every entry of the containers' tar streams).
pub struct ArtifactFilter<'a> {
    paths: Globs,
    exclude: Globs,
    /// With `untracked: true`, git's tracked files of the project: every other file is kept.
    tracked: Option<&'a HashSet<String>>,
}

impl<'a> ArtifactFilter<'a> {
    pub fn new(artifacts: &Artifacts, tracked: &'a HashSet<String>) -> ArtifactFilter<'a> {
        ArtifactFilter {
            paths: Globs::new(&artifacts.paths),
            exclude: Globs::new(&artifacts.exclude),
            tracked: artifacts.untracked.then_some(tracked),
        }
    }

    /// Whether `rel` (relative to the project) is kept: under a path and not excluded, or with
    /// `untracked: true` a file (not a directory: git lists files) that git does not track and
    /// that is not under `.git` nor excluded.
    pub fn keeps(&self, rel: &str, is_dir: bool) -> bool {
        if self.exclude.matches_self_or_ancestor(rel) {
            return false;
        }
        let untracked = || {
            self.tracked
                .is_some_and(|tracked| !is_dir && rel != ".git" && !rel.starts_with(".git/") && !tracked.contains(rel))
        };
        self.paths.matches_self_or_ancestor(rel) || untracked()
    }
}

/// The artifact tar being written: entries under `prefix` (`builds/<path>`), each file once.
pub struct ArtifactWriter<W: Write> {
    builder: Builder<W>,
    prefix: String,
    dirs: BTreeSet<String>,
    written: BTreeSet<String>,
    /// Files (not directories) written.
    pub files: usize,
    /// Bytes of the regular files written.
    pub bytes: u64,
}

impl<W: Write> ArtifactWriter<W> {
    pub fn new(out: W, prefix: &str) -> Self {
        ArtifactWriter {
            builder: Builder::new(out),
            prefix: prefix.trim_matches('/').to_string(),
            dirs: BTreeSet::new(),
            written: BTreeSet::new(),
            files: 0,
            bytes: 0,
        }
    }

    /// Copies the entries of `input` (a `docker cp CONTAINER:<project>/<source> -` stream, whose
    /// names start with the source's last component, or `./` for the project itself) that
    /// `keep(rel, is_dir, symlink target)` accepts (`rel` relative to the project).
    pub fn add_filtered(
        &mut self,
        input: &mut dyn Read,
        source: &str,
        keep: &mut dyn FnMut(&str, bool, Option<&str>) -> bool,
    ) -> io::Result<()> {
        let parent = match source.rsplit_once('/') {
            Some((parent, _)) => parent.to_string(),
            None => String::new(),
        };
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().replace('\\', "/");
            let name = name.trim_start_matches("./").trim_end_matches('/');
            if name.is_empty() || name == "." {
                continue;
            }
            let rel = if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") };
            let link = match entry.header().entry_type() {
                EntryType::Symlink => entry.link_name()?.map(|l| l.to_string_lossy().into_owned()),
                _ => None,
            };
            let is_dir = entry.header().entry_type().is_dir();
            if self.written.contains(&rel) || !keep(&rel, is_dir, link.as_deref()) {
                continue;
            }
            self.written.insert(rel.clone());
            let target = self.under_prefix(&rel);
            ensure_parents(&mut self.builder, &target, &mut self.dirs)?;
            let mut header = entry.header().clone();
            match header.entry_type() {
                EntryType::Directory if self.dirs.insert(target.clone()) => {
                    self.builder.append_data(&mut header, format!("{target}/"), io::empty())?;
                }
                EntryType::Directory => {}
                EntryType::Symlink => {
                    self.builder.append_link(&mut header, &target, link.unwrap_or_default())?;
                    self.files += 1;
                }
                EntryType::Link => {
                    // A hard link names another entry of this stream: re-root it the same way.
                    let link = entry.link_name()?.map(|l| l.to_string_lossy().replace('\\', "/")).unwrap_or_default();
                    let link = link.trim_start_matches("./");
                    let link = if parent.is_empty() { link.to_string() } else { format!("{parent}/{link}") };
                    self.builder.append_link(&mut header, &target, self.under_prefix(&link))?;
                    self.files += 1;
                }
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    self.bytes += header.size().unwrap_or(0);
                    self.builder.append_data(&mut header, &target, &mut entry)?;
                    self.files += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn under_prefix(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::model::ArtifactsWhen;

    fn artifacts(paths: &[&str], exclude: &[&str]) -> Artifacts {
        Artifacts {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            when: ArtifactsWhen::OnSuccess,
            expire_in: None,
            dotenv: vec![],
            notes: vec![],
            untracked: false,
            reports: vec![],
        }
    }

    /// A tar like `docker cp` writes: directory entries, then files.
    fn docker_tar(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for (name, contents) in entries {
            match contents {
                None => {
                    let mut h = Header::new_gnu();
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, name, io::empty()).expect("dir");
                }
                Some(text) => {
                    let mut h = file_header(text.len() as u64, 0o644, 0);
                    b.append_data(&mut h, name, text.as_bytes()).expect("file");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
            .collect()
    }

    /// The artifacts of earlier jobs follow the project in the same stream (one `docker cp`),
    /// after it, so they win over project files as the runner's download does.
    #[test]
    fn artifacts_follow_the_project_in_one_archive() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("out.txt"), "from the project").expect("write");
        let artifact = dir.path().join("1.tar");
        let mut builder = Builder::new(fs::File::create(&artifact).expect("create"));
        let mut header = file_header(13, FILE_MODE, 0);
        builder.append_data(&mut header, "builds/g/p/out.txt", &b"from a job..."[..]).expect("append");
        builder.into_inner().expect("finish");
        let mut bytes = Vec::new();
        write_project(
            &mut bytes,
            dir.path(),
            &["out.txt".to_string()],
            "builds/g/p",
            &[],
            std::slice::from_ref(&artifact),
        )
        .expect("tar");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("read");
            seen.push((entry.path().expect("path").to_string_lossy().into_owned(), text));
        }
        let files: Vec<_> = seen.iter().filter(|(n, _)| n.ends_with("out.txt")).collect();
        assert_eq!(files.len(), 2, "{seen:?}");
        assert_eq!(files[0].1, "from the project");
        assert_eq!(files[1].1, "from a job...");
        fs::write(&artifact, b"not a tar").expect("write");
        assert!(append_entries_of(&mut Vec::new(), &artifact).is_err());
    }

    #[test]
    fn untracked_files_join_paths_less_exclude() {
        let mut spec = artifacts(&["out/"], &["*.log", "out/skip"]);
        spec.untracked = true;
        let tracked: HashSet<String> = ["src/main.c".to_string()].into();
        assert_eq!(artifact_sources(&spec), [""]);
        let filter = ArtifactFilter::new(&spec, &tracked);
        let keep = |rel, is_dir| filter.keeps(rel, is_dir);
        assert!(keep("out/a", false) && keep("out", true), "paths as before");
        assert!(keep("build/app.o", false), "an untracked file");
        assert!(!keep("build", true), "directories come with their files");
        assert!(!keep("src/main.c", false), "tracked");
        assert!(!keep("debug.log", false) && !keep("out/skip", false), "excluded");
        assert!(!keep(".git/config", false) && !keep(".git", false));
        spec.untracked = false;
        assert!(!ArtifactFilter::new(&spec, &tracked).keeps("build/app.o", false));
    }

    #[test]
    fn sources_are_literal_prefixes_without_nesting() {
        assert_eq!(artifact_sources(&artifacts(&["out/", "out/sub/x", "dist/*.js"], &[])), ["dist", "out"]);
        assert_eq!(artifact_sources(&artifacts(&["*.txt", "out/"], &[])), [""]);
    }

    #[test]
    fn filters_and_re_roots_a_docker_cp_stream() {
        let spec = artifacts(&["out/", "bin/*.o"], &["out/**/*.tmp"]);
        let (tracked, mut w) = (HashSet::new(), ArtifactWriter::new(Vec::new(), "/builds/g/p/"));
        let filter = ArtifactFilter::new(&spec, &tracked);
        let out = docker_tar(&[
            ("out/", None),
            ("out/sub/", None),
            ("out/sub/a.txt", Some("a")),
            ("out/sub/b.tmp", Some("b")),
        ]);
        w.add_filtered(&mut out.as_slice(), "out", &mut |rel, is_dir, _| filter.keeps(rel, is_dir)).expect("out");
        let bin = docker_tar(&[("./", None), ("./bin/", None), ("./bin/x.o", Some("x")), ("./bin/x.c", Some("c"))]);
        w.add_filtered(&mut bin.as_slice(), "", &mut |rel, is_dir, _| filter.keeps(rel, is_dir)).expect("root");
        let files = w.files;
        let bytes = w.finish().expect("finish");
        assert_eq!(
            names(&bytes),
            [
                "builds/",
                "builds/g/",
                "builds/g/p/",
                "builds/g/p/out/",
                "builds/g/p/out/sub/",
                "builds/g/p/out/sub/a.txt",
                "builds/g/p/bin/",
                "builds/g/p/bin/x.o"
            ]
        );
        assert_eq!(files, 2);
    }

    #[test]
    fn project_tar_has_files_scripts_and_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("src")).expect("mkdir");
        fs::write(dir.path().join("src/main.sh"), "echo hi").expect("write");
        fs::write(dir.path().join("README"), "r").expect("write");
        std::os::unix::fs::symlink("README", dir.path().join("link")).expect("symlink");
        let files = project_files(dir.path()).expect("list");
        assert_eq!(files, ["README", "link", "src/main.sh"]);
        let extra = [ExtraFile { path: "/glci/run.sh".into(), contents: b"exit 0\n".to_vec(), mode: 0o755 }];
        let mut bytes = Vec::new();
        write_project(&mut bytes, dir.path(), &files, "builds/g/p", &extra, &[]).expect("tar");
        assert_eq!(
            names(&bytes),
            [
                "builds/",
                "builds/g/",
                "builds/g/p/",
                "builds/g/p/README",
                "builds/g/p/link",
                "builds/g/p/src/",
                "builds/g/p/src/main.sh",
                "glci/",
                "glci/run.sh"
            ]
        );
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let mode = entry.header().mode().expect("mode");
            match entry.header().entry_type() {
                // Directories of extra files (system paths such as /etc/docker/certs.d) are 0755.
                EntryType::Directory if entry.path().expect("path").starts_with("glci") => assert_eq!(mode, 0o755),
                EntryType::Directory => assert_eq!(mode, 0o777),
                EntryType::Regular if entry.path().expect("path").ends_with("README") => assert_eq!(mode, 0o666),
                _ => {}
            }
        }
    }
}
