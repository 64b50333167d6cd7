//! Child pipelines (`trigger: include`, issue 17), composed as GitLab composes them: the
//! trigger's `include:` is the whole configuration of a new pipeline (GitLab's
//! `Ci::Bridge#yaml_for_downstream` is `{include: <trigger include>}`), so it goes through the
//! same `include` expansion, `extends` and `!reference` as a root file, then gets its own
//! `stages`, `workflow` and jobs. Nested children are composed the same way, at most
//! [`MAX_DEPTH`] levels below the root (GitLab's `MAX_DESCENDANTS_DEPTH`). A dynamic child's
//! files (`{artifact, job}`) arrive as text when the trigger job starts ([`dynamic`]). Pure:
//! every file comes through the caller's `Sources`; the reading of one file's top-level keys
//! is `mod.rs`'s `build`, handed in.

use std::path::Path;
use std::rc::Rc;

use super::compose::{self, merge_maps};
use super::include::{self, Sources};
use super::inputs::Given;
use super::yaml::{Entry, Map, Node, Value};
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{DownstreamKind, Pipeline};

/// GitLab's `MAX_DESCENDANTS_DEPTH`: a child may have children, they may not.
pub const MAX_DEPTH: usize = 2;

/// Reads a composed file's top-level keys: the pipeline, and each trigger job's `include:` as
/// written (`mod.rs`'s `build`).
pub type Build<'b> = &'b dyn Fn(&Map, &Path) -> Result<(Pipeline, Vec<(String, Node)>), PipelineError>;

/// The pipeline of the composed `map` (of `file`, `depth` levels below the root), its child
/// pipelines composed into its trigger jobs.
pub fn tree(map: &Map, file: &Path, sources: &Sources, build: Build, depth: usize) -> Result<Pipeline, PipelineError> {
    let (mut pipeline, children) = build(map, file)?;
    for (name, include) in children {
        let Some(job) = pipeline.jobs.iter_mut().find(|j| j.name == name) else { continue };
        let at = (include.file.to_path_buf(), include.line);
        if depth + 1 > MAX_DEPTH {
            return Err(PipelineError::new(
                &at.0,
                at.1,
                format!("{name}.trigger.include"),
                format!(
                    "reached the maximum depth of child pipelines ({MAX_DEPTH} levels below the root, as on GitLab)"
                ),
            ));
        }
        let child = compose(&name, include, file, sources, build, depth + 1)?;
        if let Some(downstream) = job.downstream.as_mut() {
            downstream.kind = DownstreamKind::Child(Box::new(child));
        }
    }
    Ok(pipeline)
}

/// The child pipeline of trigger job `job` whose `include:` is `include` (in `file`).
fn compose(
    job: &str,
    include: Node,
    file: &Path,
    sources: &Sources,
    build: Build,
    depth: usize,
) -> Result<Pipeline, PipelineError> {
    let map = composed(job, include, file, sources)?;
    tree(&map, file, sources, build, depth)
}

/// The composed configurations of `map`'s child pipelines (`depth` levels below the root),
/// nested ones right after their parent, each with its name (`trigger`, `trigger: nested`), for
/// `--preview`. Dynamic children have none until they are created.
pub fn previews(
    map: &Map,
    file: &Path,
    sources: &Sources,
    build: Build,
    prefix: &str,
    depth: usize,
) -> Result<Vec<(String, Map)>, PipelineError> {
    let mut out = Vec::new();
    if depth + 1 > MAX_DEPTH {
        return Ok(out);
    }
    let (_, children) = build(map, file)?;
    for (name, include) in children {
        let child = composed(&name, include, file, sources)?;
        let name = format!("{prefix}{name}");
        let nested = previews(&child, file, sources, build, &format!("{name}: "), depth + 1)?;
        out.push((name, child));
        out.extend(nested);
    }
    Ok(out)
}

/// The composed configuration `{include: <include>}` of trigger job `job` (in `file`).
fn composed(job: &str, include: Node, file: &Path, sources: &Sources) -> Result<Map, PipelineError> {
    let mut root = Map::default();
    let (written_in, line) = (include.file.to_path_buf(), include.line);
    root.insert(Entry { key: "include".into(), line, value: include });
    // The root of the child is not a file: a child may include the file that triggers it.
    let root_name = format!("{} (trigger job `{job}`)", file.display());
    let root = Node { value: Value::Map(root), file: Rc::from(Path::new(&root_name)), line };
    // Errors about the entries themselves are the trigger's: `job.trigger.include[0]`.
    let rekey = |e: PipelineError| {
        if e.file == written_in && e.key.starts_with("include") {
            PipelineError { key: format!("{job}.trigger.{}", e.key), ..e }
        } else {
            e
        }
    };
    let map = include::includes(root, sources).map_err(rekey)?;
    compose::references(compose::extends(map)?)
}

/// A dynamic child pipeline (`depth` levels below the root) from its files, in the order the
/// trigger lists them: `(name for errors, text)`. Each file's own includes read this project.
pub fn dynamic(
    files: &[(String, String)],
    sources: &Sources,
    build: Build,
    depth: usize,
) -> Result<Pipeline, PipelineError> {
    let mut merged = Map::default();
    let mut first: Option<Rc<Path>> = None;
    for (name, text) in files {
        let file: Rc<Path> = Rc::from(Path::new(name));
        let node = include::with_inputs(text, &file, Given::CommandLine(&[], &file), sources.variables)?;
        merged = merge_maps(merged, include::includes(node, sources)?);
        first.get_or_insert(file);
    }
    let file = first.ok_or_else(|| PipelineError::whole_file(Path::new("trigger"), "no files to include"))?;
    let map = compose::references(compose::extends(merged)?)?;
    tree(&map, &file, sources, build, depth)
}
