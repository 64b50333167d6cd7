//! What `glci run` gives the executor for downstream pipelines (issue 17): dynamic child
//! pipelines composed with the run's include sources, and `trigger: project` pipelines read
//! from the local checkout `[gitlab.projects]` maps the project to (its git facts, files and
//! variables files; `branch:` as the ref it runs for, else the checkout's default branch, as
//! GitLab runs the downstream project's default branch). Also the job names text output
//! knows before the run.

use std::path::Path;

use super::sources::{variables_files, with_sources};
use crate::pipeline::execute::{self, ChildConfigs};
use crate::pipeline::facts::RunFacts;
use crate::pipeline::model::Pipeline;
use crate::pipeline::plan::{ChildPlan, Plan, ProjectChild};
use crate::pipeline::{downstream, parse};

/// Every job name of the plan and of its child pipelines known before the run (text prefixes).
pub fn job_names(plan: &Plan) -> Vec<String> {
    let mut names = Vec::new();
    for job in &plan.jobs {
        names.push(job.name.clone());
        match job.downstream.as_ref().map(|d| &d.child) {
            Some(ChildPlan::Ready(child)) => names.extend(job_names(child)),
            // A child known only once it is created: room for short names.
            Some(ChildPlan::Dynamic(dynamic)) => names.push(format!("{}{}", dynamic.prefix, "-".repeat(8))),
            Some(ChildPlan::Project(project)) => names.push(format!("{}{}", project.prefix, "-".repeat(8))),
            None => {}
        }
    }
    names
}

/// Composes downstream pipelines with the run's include sources.
pub struct ChildLoader<'a> {
    pub file: &'a Path,
    pub facts: &'a RunFacts,
    pub instance: &'a crate::gitlab::Instance,
    pub changes_against: Option<&'a str>,
    pub home: &'a Path,
}

impl ChildConfigs for ChildLoader<'_> {
    fn load(&self, files: &[(String, String)], depth: usize) -> Result<Pipeline, String> {
        with_sources(self.file, self.facts, &[], self.instance, self.changes_against, |sources| {
            parse::parse_dynamic_child(files, sources, depth)
        })
        .map_err(|e| e.to_string())
    }

    fn load_project(&self, child: &ProjectChild) -> Result<(Plan, Vec<String>), String> {
        if child.depth > parse::MAX_CHILD_DEPTH {
            return Err(format!(
                "reached the maximum depth of downstream pipelines ({} levels below the root)",
                parse::MAX_CHILD_DEPTH
            ));
        }
        let dir = child.dir.canonicalize().map_err(|e| {
            format!("the checkout of `{}` ({}, [gitlab.projects]): {e}", child.project, child.dir.display())
        })?;
        let file = dir.join(".gitlab-ci.yml");
        if !file.is_file() {
            return Err(format!("no .gitlab-ci.yml in {}, the checkout of `{}`", dir.display(), child.project));
        }
        let facts = project_facts(self.facts, child, &dir, self.home)?;
        let pipeline =
            with_sources(&file, &facts, &[], self.instance, None, |sources| parse::load_with(&file, sources))
                .map_err(|e| e.to_string())?;
        let plan =
            downstream::plan_project(&pipeline, &facts, &child.prefix, child.depth).map_err(|e| e.to_string())?;
        Ok((plan, facts.files))
    }
}

/// The facts of the downstream project's pipeline: its checkout, ref, files and variables;
/// `CI_PIPELINE_SOURCE=pipeline` (a multi-project pipeline), the trigger's forwarded variables.
fn project_facts(root: &RunFacts, child: &ProjectChild, dir: &Path, home: &Path) -> Result<RunFacts, String> {
    let mut git = crate::git::facts(dir);
    let branch = child.branch.clone().or_else(|| git.default_branch.clone()).or_else(|| git.branch.clone());
    if let Some(sha) = branch.as_deref().and_then(|b| crate::git::resolve_commit(dir, b)) {
        git.sha = Some(sha);
    }
    git.branch = branch;
    git.tag = None;
    git.tag_message = None;
    let files = execute::project_files(dir).map_err(|e| format!("listing the files of {}: {e}", dir.display()))?;
    let mut predefined: Vec<(String, String)> = root
        .predefined
        .iter()
        .map(|(name, value)| match name.as_str() {
            // The registry image path is the downstream project's.
            "CI_REGISTRY_IMAGE" => match value.split_once('/') {
                Some((host, _)) => (name.clone(), format!("{host}/{}", child.project)),
                None => (name.clone(), value.clone()),
            },
            _ => (name.clone(), value.clone()),
        })
        .collect();
    predefined.push(("CI_PIPELINE_SOURCE".into(), "pipeline".into()));
    Ok(RunFacts {
        project_dir: dir.to_path_buf(),
        project_path: child.project.clone(),
        git,
        files,
        cli_variables: child.variables.clone(),
        selected: Vec::new(),
        pipeline_id: child.pipeline_id,
        predefined,
        changes: Default::default(),
        created_at: root.created_at.clone(),
        project_variables: variables_files(home, dir).map_err(|e| e.to_string())?,
        default_image: root.default_image.clone(),
        project_files: root.project_files.clone(),
        projects: root.projects.clone(),
    })
}
