//! What `glci run` reads a pipeline from: the include sources the parser is given (project
//! files, remote fetches through the GitLab instance, the variables `include:` sees, changed
//! paths for `rules: changes`) and the variables files (issue 15). Used by `cli::run` for the
//! root pipeline and by `cli::downstream` for child and project pipelines.

use std::path::Path;

use super::output::stderr_line;
use super::CliError;
use crate::gitlab::Instance;
use crate::pipeline::facts::RunFacts;
use crate::pipeline::model::{Pipeline, ProjectVariable};
use crate::pipeline::{parse, predefined};

/// The variables files (issue 15), `$GLCI_HOME/variables.yml` then the project's
/// `.glci-variables.yml` (the project's win, as project variables over group ones on GitLab).
pub fn variables_files(home: &Path, project_dir: &Path) -> Result<Vec<ProjectVariable>, CliError> {
    let mut out = Vec::new();
    for path in [home.join("variables.yml"), project_dir.join(".glci-variables.yml")] {
        if let Some(vars) = parse::load_variables_file(&path).map_err(|e| CliError::Usage(e.to_string()))? {
            out.extend(vars);
        }
    }
    Ok(out)
}

/// Parses the pipeline file; `include:` reads the project's files and sees the variables GitLab
/// gives it.
pub fn load_pipeline(
    file: &Path,
    facts: &RunFacts,
    inputs: &[(String, String)],
    instance: &Instance,
    changes_against: Option<&str>,
) -> Result<Pipeline, CliError> {
    with_sources(file, facts, inputs, instance, changes_against, |sources| parse::load_with(file, sources))
}

/// Calls `use_sources` with what the parser reads includes from (files, fetches, variables,
/// changes): for loading the pipeline, or for `--preview`.
pub fn with_sources<T>(
    file: &Path,
    facts: &RunFacts,
    inputs: &[(String, String)],
    instance: &Instance,
    changes_against: Option<&str>,
    use_sources: impl FnOnce(&parse::Sources) -> Result<T, parse::PipelineError>,
) -> Result<T, CliError> {
    let include_vars = predefined::include_variables(file, facts);
    let lookup = |name: &str| include_vars.get(name).map(String::from);
    let read = |path: &Path| std::fs::read_to_string(path);
    let fetch = |source: &parse::Source| instance.fetch(source);
    // `rules: changes` of includes: the same comparison as the jobs' (see `changed_paths`).
    let dir = &facts.project_dir;
    let in_git = crate::git::toplevel(dir).is_some();
    let changed = |reference: Option<&str>| -> Result<Option<Vec<String>>, String> {
        if !in_git {
            return Ok(None);
        }
        let sha = match reference.or(changes_against) {
            Some(reference) => crate::git::resolve_commit(dir, reference)
                .ok_or_else(|| format!("`{reference}` is no branch, tag or commit of this repository"))?,
            None => match crate::git::change_base(dir, &facts.git) {
                Some((sha, _)) => sha,
                None => return Ok(None),
            },
        };
        crate::git::changed_paths(dir, &sha).map(Some)
    };
    let sources = parse::Sources {
        project: &facts.project_dir,
        read: &read,
        files: &facts.files,
        variables: &lookup,
        inputs,
        fetch: Some(&fetch),
        changed: &changed,
    };
    let pipeline = use_sources(&sources).map_err(|e| CliError::Usage(e.to_string()));
    for note in instance.take_notes() {
        stderr_line(&format!("warning: {note}"));
    }
    pipeline
}
