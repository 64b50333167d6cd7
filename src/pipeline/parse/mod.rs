//! `.gitlab-ci.yml` → [`Pipeline`]: [`load`] a file or [`parse_str`] a text. Every problem is a
//! [`PipelineError`] naming file, line and key (`cli` exits 2 on it). Pure but for reading the
//! file: included files, variables, changes and remote fetches come through the caller's
//! [`Sources`]; no environment, no Docker, no network, no output.
//!
//! Steps, in GitLab's order: YAML → `yaml::Node` tree (anchors, `<<` merges, lines kept);
//! `include`: included files merged (rules, wildcards, variables, through the caller's
//! [`Sources`]; `spec:` headers filled by `inputs.rs`, a component's context by
//! `component.rs`); `compose`: `extends`, `!reference`; then the top-level keys read here
//! (`stages`, `variables`, `default`, `workflow`, the deprecated global `image`/`services`/
//! `before_script`/`after_script`/`cache`), every other key a job (`job.rs`; `.hidden` ones are
//! templates and skipped; `accepted.rs` checks and notes the keys that mean nothing locally,
//! `retry.rs` reads `retry:`);
//! last, the checks that need the whole pipeline: each job's stage is
//! in `stages`, `needs`/`dependencies` name jobs of this pipeline in allowed stages, `needs`
//! has no cycle. Jobs keep the merged order: those of included files first (GitLab's deep
//! merge puts the including file over them), then the file's own.

mod accepted;
mod cache;
mod child;
mod component;
mod compose;
pub(crate) mod duration;
mod include;
mod inputs;
mod job;
mod needs;
mod policy;
mod preview;
mod read;
mod retry;
mod rule;
mod run_keys;
mod variables_file;
mod yaml;

pub use self::run_keys::{environment_slug, guess_tier};
pub use self::variables_file::{load_variables_file, parse_variables_file};

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use self::component::ComponentContext;
pub use self::include::{nothing_known, Changed, Fetch, Fetched, Read, Source, Sources, MAX_INCLUDES};
use self::job::{Defaults, ParsedJob};
use self::read::Field;
use self::yaml::{Entry, Map};
pub use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{Job, Need, Pipeline, Rule};

/// `stages` when the file has none (`.pre`/`.post` are added around it).
pub const DEFAULT_STAGES: [&str; 3] = ["build", "test", "deploy"];

/// Top-level keys that are not jobs.
const GLOBAL_KEYS: [&str; 11] = [
    "after_script",
    "before_script",
    "cache",
    "default",
    "image",
    "include",
    "services",
    "stages",
    "types",
    "variables",
    "workflow",
];

/// Reads and parses `file`; `include: local` paths are relative to its directory, no variables
/// are known to `include` and wildcard paths match nothing ([`load_with`] gives them).
pub fn load(file: &Path) -> Result<Pipeline, PipelineError> {
    let text = fs::read_to_string(file).map_err(|e| PipelineError::whole_file(file, format!("cannot read: {e}")))?;
    parse_str(&text, file)
}

/// Reads and parses `file` with what `include:` can reach.
pub fn load_with(file: &Path, sources: &Sources) -> Result<Pipeline, PipelineError> {
    let text = fs::read_to_string(file).map_err(|e| PipelineError::whole_file(file, format!("cannot read: {e}")))?;
    parse_sources(&text, file, sources)
}

/// Parses `text` as if read from `file` (named in errors; its directory is the project root
/// `include: local` files are read from).
pub fn parse_str(text: &str, file: &Path) -> Result<Pipeline, PipelineError> {
    parse_with(text, file, &|path: &Path| fs::read_to_string(path))
}

/// [`parse_str`] with included files read by `read` (an in-memory source in tests and fuzzing).
pub fn parse_with(text: &str, file: &Path, read: Read) -> Result<Pipeline, PipelineError> {
    let project = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let sources = Sources {
        project: &project,
        read,
        files: &[],
        variables: &|_| None,
        inputs: &[],
        fetch: None,
        changed: &include::nothing_known,
    };
    parse_sources(text, file, &sources)
}

/// Parses `text` as if read from `file`, its includes resolved through `sources`; the child
/// pipelines of its `trigger: include` jobs composed too (`child.rs`).
pub fn parse_sources(text: &str, file: &Path, sources: &Sources) -> Result<Pipeline, PipelineError> {
    child::tree(&composed(text, file, sources)?, file, sources, &build, 0)
}

/// A dynamic child pipeline (`trigger: include: [{artifact, job}]`, issue 17), `depth` levels
/// below the root, from the artifact files `(name, text)` in the trigger's order.
pub fn parse_dynamic_child(
    files: &[(String, String)],
    sources: &Sources,
    depth: usize,
) -> Result<Pipeline, PipelineError> {
    child::dynamic(files, sources, &build, depth)
}

pub use self::child::MAX_DEPTH as MAX_CHILD_DEPTH;

fn composed(text: &str, file: &Path, sources: &Sources) -> Result<Map, PipelineError> {
    let name: Rc<Path> = Rc::from(file);
    let root = include::with_inputs(text, &name, inputs::Given::CommandLine(sources.inputs, file), sources.variables)?;
    let map = include::includes(root, sources)?;
    compose::references(compose::extends(map)?)
}

/// The composed configuration of `file` (includes merged, `extends` and `!reference`
/// resolved), as GitLab's full-configuration YAML and as JSON; checked as [`load_with`] checks
/// it, so a broken pipeline is an error here too.
pub fn preview(file: &Path, sources: &Sources) -> Result<(String, serde_json::Value), PipelineError> {
    preview_all(file, sources).map(|p| (p.yaml, p.json))
}

/// The composed configuration of a file and of its child pipelines (issue 17).
pub struct Preview {
    pub yaml: String,
    pub json: serde_json::Value,
    /// Each `trigger: include` child's (`trigger`, `trigger: nested`), nested ones after their
    /// parent: `(name, yaml, json)`.
    pub children: Vec<(String, String, serde_json::Value)>,
}

/// [`preview`] with the configurations of the child pipelines.
pub fn preview_all(file: &Path, sources: &Sources) -> Result<Preview, PipelineError> {
    let text = fs::read_to_string(file).map_err(|e| PipelineError::whole_file(file, format!("cannot read: {e}")))?;
    let map = composed(&text, file, sources)?;
    child::tree(&map, file, sources, &build, 0)?;
    let children = child::previews(&map, file, sources, &build, "", 0)?
        .into_iter()
        .map(|(name, map)| (name, preview::yaml(&map), preview::json(&map)))
        .collect();
    Ok(Preview { yaml: preview::yaml(&map), json: preview::json(&map), children })
}

/// The pipeline of a composed file, and each `trigger: include` job's `include:` as written
/// (for `child.rs` to compose).
fn build(map: &Map, file: &Path) -> Result<(Pipeline, Vec<(String, yaml::Node)>), PipelineError> {
    fn field(entry: &Entry) -> Field<'_> {
        Field::entry("", entry)
    }
    if let Some(spec) = map.get("spec") {
        return Err(field(spec).error("`spec:` belongs in a header: a first YAML document, ended by `---`"));
    }
    let stages = stages(map)?;
    let variables = match map.get("variables") {
        Some(entry) => read::variables(&field(entry))?,
        None => Vec::new(),
    };
    let (workflow_rules, name) = match map.get("workflow") {
        Some(entry) => workflow(&field(entry))?,
        None => (Vec::new(), None),
    };
    let mut defaults = Defaults::default();
    for key in ["image", "services", "before_script", "after_script", "cache"] {
        if let Some(entry) = map.get(key) {
            defaults.set(key, &field(entry))?;
        }
    }
    let mut accepted = match map.get("workflow") {
        Some(entry) => accepted::of_workflow(&field(entry))?,
        None => Vec::new(),
    };
    if let Some(entry) = map.get("default") {
        let default = Defaults::read(&field(entry))?;
        accepted.extend(accepted::of_default(&field(entry))?);
        defaults = Defaults {
            image: default.image.or(defaults.image),
            services: default.services.or(defaults.services),
            before_script: default.before_script.or(defaults.before_script),
            after_script: default.after_script.or(defaults.after_script),
            artifacts: default.artifacts,
            timeout: default.timeout,
            retry: default.retry,
            cache: default.cache.or(defaults.cache),
        };
    }
    let mut jobs = Vec::new();
    for entry in map.iter() {
        if GLOBAL_KEYS.contains(&entry.key.as_str()) || entry.key.starts_with('.') {
            continue;
        }
        jobs.extend(job::instances(job::read(entry, &defaults)?));
    }
    if jobs.is_empty() {
        return Err(PipelineError::whole_file(file, "no jobs (names starting with `.` are templates, not jobs)"));
    }
    let firsts = || jobs.iter().filter(|p| p.job.instance.as_ref().is_none_or(|i| i.index == 1));
    let mut notes: Vec<String> = firsts().flat_map(|p| p.notes.iter().cloned()).collect();
    notes.extend(accepted::summarize(accepted.iter().chain(firsts().flat_map(|p| &p.accepted))));
    let children: Vec<(String, yaml::Node)> =
        jobs.iter().filter_map(|p| Some((p.job.name.clone(), p.child_include.clone()?))).collect();
    let jobs = validate(jobs, &stages)?;
    Ok((Pipeline { file: file.to_path_buf(), stages, variables, workflow_rules, jobs, name, notes }, children))
}

/// `stages` (or the old `types`), `.pre` first and `.post` last; GitLab's default when absent.
fn stages(map: &Map) -> Result<Vec<String>, PipelineError> {
    let listed = match map.get("stages").or_else(|| map.get("types")) {
        Some(entry) => {
            let field = Field::entry("", entry);
            let items = field.items("a list of stage names")?;
            items.iter().map(|item| item.name("a stage name")).collect::<Result<Vec<_>, _>>()?
        }
        None => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut stages = vec![".pre".to_owned()];
    for stage in listed {
        if !stages.contains(&stage) && stage != ".post" {
            stages.push(stage);
        }
    }
    stages.push(".post".to_owned());
    Ok(stages)
}

/// `workflow:` its rules and `name`; `auto_cancel` is checked and has no local effect (one run
/// never cancels another).
fn workflow(field: &Field) -> Result<(Vec<Rule>, Option<String>), PipelineError> {
    field.check_keys(&["rules", "name", "auto_cancel"])?;
    let name = field.get("name")?.map(|name| name.string()).transpose()?;
    if let Some(name) = &name {
        // GitLab's limit on `workflow:name`.
        if name.chars().count() > 255 {
            return Err(Field::entry(&field.key, field.map()?.get("name").expect("just read"))
                .error("the pipeline name is longer than 255 characters"));
        }
    }
    if let Some(auto_cancel) = field.get("auto_cancel")? {
        read::auto_cancel(&auto_cancel)?;
    }
    let rules = match field.get("rules")? {
        Some(rules) => rule::rules(&rules, true)?,
        None => Vec::new(),
    };
    Ok((rules, name))
}

/// The checks that need every job: stages, `needs`, `dependencies`, `needs` cycles. Optional
/// needs of jobs that do not exist are dropped, as GitLab ignores them. A need or dependency
/// naming a `parallel:` job becomes one for each of its instances.
fn validate(mut parsed: Vec<ParsedJob>, stages: &[String]) -> Result<Vec<Job>, PipelineError> {
    expand_parallel_references(&mut parsed);
    let stage_index = |stage: &str| stages.iter().position(|s| s == stage);
    let shown_stages = stages.join(", ");
    for p in &parsed {
        let job = &p.job;
        if stage_index(&job.stage).is_none() {
            let (line, key, message) = match &p.stage_at {
                Some((line, key)) => {
                    (*line, key.as_str(), format!("stage `{}` is not in stages ({shown_stages})", job.stage))
                }
                None => (
                    job.location.line,
                    job.name.as_str(),
                    format!("no `stage:`, and the default stage `test` is not in stages ({shown_stages})"),
                ),
            };
            return Err(PipelineError::new(&job.location.file, line, key, message));
        }
    }
    let stage_of: HashMap<String, usize> =
        parsed.iter().filter_map(|p| Some((p.job.name.clone(), stage_index(&p.job.stage)?))).collect();
    let mut instances: Vec<(String, Vec<String>)> = Vec::new();
    for p in &parsed {
        if let Some(instance) = &p.job.instance {
            match instances.iter_mut().find(|(base, _)| *base == instance.base) {
                Some((_, names)) => names.push(p.job.name.clone()),
                None => instances.push((instance.base.clone(), vec![p.job.name.clone()])),
            }
        }
    }
    let unknown_job = |name: &str| unknown_job(name, &instances);
    for p in &mut parsed {
        let job = &mut p.job;
        let own_stage = stage_of.get(&job.name).copied().unwrap_or(0);
        let at = |(line, key): &(usize, String), message: String| {
            PipelineError::new(&job.location.file, *line, key.clone(), message)
        };
        if let Some(needs) = &mut job.needs {
            let mut kept = Vec::new();
            let mut kept_at = Vec::new();
            for (need, need_at) in needs.drain(..).zip(p.needs_at.drain(..)) {
                match stage_of.get(&need.job) {
                    None if need.optional => {}
                    None => return Err(at(&need_at, unknown_job(&need.job))),
                    Some(&stage) if stage > own_stage => {
                        let message = format!(
                            "`{}` is in a later stage ({}) than this job ({})",
                            need.job, stages[stage], job.stage
                        );
                        return Err(at(&need_at, message));
                    }
                    Some(_) => {
                        kept.push(need);
                        kept_at.push(need_at);
                    }
                }
            }
            *needs = kept;
            p.needs_at = kept_at;
        }
        for (dep, dep_at) in job.dependencies.iter().flatten().zip(&p.dependencies_at) {
            let Some(&stage) = stage_of.get(dep) else {
                return Err(at(dep_at, unknown_job(dep)));
            };
            match &job.needs {
                Some(needs) if !needs.iter().any(|n| n.job == *dep) => {
                    return Err(at(dep_at, format!("`{dep}` must also be in `needs`")));
                }
                None if stage >= own_stage => {
                    return Err(at(
                        dep_at,
                        format!("`{dep}` is not in an earlier stage than this job ({})", job.stage),
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(cycle) = needs_cycle(&parsed) {
        let names: Vec<&str> = cycle.iter().map(|&i| parsed[i].job.name.as_str()).collect();
        let p = &parsed[cycle[0]];
        let next = names.get(1).copied().unwrap_or_default();
        let need = p.job.needs.iter().flatten().position(|n| n.job == next);
        let (line, key) = match need.and_then(|i| p.needs_at.get(i)) {
            Some((line, key)) => (*line, key.clone()),
            None => (p.job.location.line, format!("{}.needs", p.job.name)),
        };
        let message = format!("needs cycle: {}", names.join(" → "));
        return Err(PipelineError::new(&p.job.location.file, line, key, message));
    }
    Ok(parsed.into_iter().map(|p| p.job).collect())
}

/// `needs`/`dependencies` naming a `parallel:` job by its written name → all its instances
/// (each keeping the line and key of the entry that named it); a `needs: parallel: matrix`
/// combination that names no instance, such as `{ARCH: x64}` of a matrix over `OS` and `ARCH`,
/// → every instance with those values.
fn expand_parallel_references(parsed: &mut [ParsedJob]) {
    let mut instances: HashMap<String, Vec<(String, read::Combo)>> = HashMap::new();
    for p in parsed.iter() {
        if let Some(instance) = &p.job.instance {
            instances.entry(instance.base.clone()).or_default().push((p.job.name.clone(), p.matrix.clone()));
        }
    }
    if instances.is_empty() {
        return;
    }
    let names: std::collections::HashSet<String> = parsed.iter().map(|p| p.job.name.clone()).collect();
    let of = |name: &str| instances.get(name).filter(|_| !names.contains(name));
    let selected = |need: &Need, matrix: Option<&(String, read::Combo)>| -> Option<Vec<String>> {
        if names.contains(&need.job) {
            return None;
        }
        if let Some((base, combo)) = matrix {
            let picked: Vec<String> = instances
                .get(base)?
                .iter()
                .filter(|(_, values)| combo.iter().all(|pair| values.contains(pair)))
                .map(|(name, _)| name.clone())
                .collect();
            return (!picked.is_empty()).then_some(picked);
        }
        Some(of(&need.job)?.iter().map(|(name, _)| name.clone()).collect())
    };
    for p in parsed.iter_mut() {
        let matrices = std::mem::take(&mut p.needs_matrix);
        if let Some(needs) = &mut p.job.needs {
            let mut kept = Vec::new();
            let mut kept_at = Vec::new();
            for (i, (need, at)) in needs.drain(..).zip(p.needs_at.drain(..)).enumerate() {
                match selected(&need, matrices.get(i).and_then(Option::as_ref)) {
                    Some(list) => {
                        for name in list {
                            if !kept.iter().any(|n: &Need| n.job == name) {
                                kept.push(Need { job: name, ..need.clone() });
                                kept_at.push(at.clone());
                            }
                        }
                    }
                    None => {
                        kept.push(need);
                        kept_at.push(at);
                    }
                }
            }
            *needs = kept;
            p.needs_at = kept_at;
        }
        if let Some(deps) = &mut p.job.dependencies {
            let mut kept = Vec::new();
            let mut kept_at = Vec::new();
            for (dep, at) in deps.drain(..).zip(p.dependencies_at.drain(..)) {
                match of(&dep) {
                    Some(list) => {
                        kept.extend(list.iter().map(|(name, _)| name.clone()));
                        kept_at.extend(list.iter().map(|_| at.clone()));
                    }
                    None => {
                        kept.push(dep);
                        kept_at.push(at);
                    }
                }
            }
            *deps = kept;
            p.dependencies_at = kept_at;
        }
    }
}

fn unknown_job(name: &str, instances: &[(String, Vec<String>)]) -> String {
    let instance_of = instances.iter().find(|(base, _)| {
        name.strip_prefix(base.as_str()).is_some_and(|rest| rest.starts_with(": [") || rest.starts_with(' '))
    });
    if let Some((base, names)) = instance_of {
        let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
        let more = if names.len() > shown.len() { ", ..." } else { "" };
        format!("`{name}` is not an instance of the parallel job `{base}` (instances: {}{more})", shown.join(", "))
    } else if name.starts_with('.') {
        format!("`{name}` is a hidden template, not a job")
    } else {
        format!("`{name}` is not a job in this pipeline")
    }
}

/// A cycle in `needs` as job indexes, the first repeated last; depth-first in file order.
fn needs_cycle(parsed: &[ParsedJob]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = parsed.iter().enumerate().map(|(i, p)| (p.job.name.as_str(), i)).collect();
    let edges: Vec<Vec<usize>> = parsed
        .iter()
        .map(|p| p.job.needs.iter().flatten().filter_map(|n| index.get(n.job.as_str()).copied()).collect())
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; parsed.len()];
    for start in 0..parsed.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative, so a long chain of needs cannot overflow the stack: the path, and for
        // each job on it the next of its needs to follow.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Open;
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let Some(&to) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match marks[to] {
                Mark::New => {
                    marks[to] = Mark::Open;
                    path.push((to, 0));
                }
                Mark::Open => {
                    let from = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                    cycle.push(to);
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    use crate::pipeline::model::{
        AllowFailure, Artifacts, ArtifactsWhen, Image, Location, Need, Service, Variable, When,
    };
    use crate::pipeline::rules::evaluate;

    const FILE: &str = "/p/.gitlab-ci.yml";

    fn fixture(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pipelines").join(case).join(".gitlab-ci.yml")
    }

    /// Parses `text` as `/p/.gitlab-ci.yml`, included files from `files` (paths under `/p`).
    fn parse_files(text: &str, files: &[(&str, &str)]) -> Result<Pipeline, PipelineError> {
        let table: HashMap<PathBuf, String> =
            files.iter().map(|(p, t)| (Path::new("/p").join(p), t.to_string())).collect();
        let read = move |path: &Path| table.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
        parse_with(text, Path::new(FILE), &read)
    }

    fn parse(text: &str) -> Pipeline {
        parse_files(text, &[]).unwrap_or_else(|e| panic!("{text}\n→ {e}"))
    }

    fn parse_err(text: &str) -> PipelineError {
        match parse_files(text, &[]) {
            Ok(p) => panic!("{text}\n→ parsed: {:?}", p.jobs.iter().map(|j| &j.name).collect::<Vec<_>>()),
            Err(e) => e,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn var(name: &str, value: &str) -> Variable {
        Variable { name: name.to_owned(), value: value.to_owned() }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn full_fixture() {
        let file = fixture("full");
        let p = load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.file, file);
        assert_eq!(p.stages, strings(&[".pre", "build", "test", "deploy", ".post"]));
        assert_eq!(p.variables, [var("GREETING", "hello"), var("RETRIES", "3"), var("DEPLOY_TARGET", "staging")]);
        assert!(p.workflow_rules.is_empty());
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["build", "test:unit", "test:flaky", "deploy"]);
        let busybox = Some(Image { name: "busybox:latest".into(), ..Image::default() });
        let default_before = strings(&["echo \"$GREETING from $CI_JOB_NAME\""]);

        let build = p.job("build").unwrap();
        assert_eq!(build.location, Location { file: file.clone(), line: 35 });
        assert_eq!(build.stage, "build");
        assert_eq!(build.image, busybox);
        assert_eq!(build.before_script, default_before);
        assert_eq!(
            build.script,
            strings(&[
                "echo \"setup from ci/templates.yml\"",
                "mkdir -p dist",
                "echo \"built in $BUILD_MODE mode\" > dist/app.txt"
            ])
        );
        assert_eq!(build.after_script, strings(&["echo \"build finished\""]), "from the included template");
        assert_eq!(build.variables, [var("BUILD_MODE", "release")]);
        assert_eq!(
            build.artifacts,
            Some(Artifacts {
                paths: strings(&["dist/"]),
                exclude: vec![],
                when: ArtifactsWhen::OnSuccess,
                expire_in: Some("1 hour".into()),
                dotenv: vec![],
                notes: vec![],
                untracked: false,
                reports: vec![],
            })
        );
        assert_eq!((build.needs.as_ref(), build.when, build.retry), (None, When::OnSuccess, 0));

        let unit = p.job("test:unit").unwrap();
        assert_eq!(unit.stage, "test");
        assert_eq!(unit.retry, 1, "from the merged anchor");
        assert_eq!(unit.variables, [var("SUITE", "unit")]);
        assert_eq!(unit.needs, Some(vec![Need { job: "build".into(), artifacts: true, optional: false }]));
        assert_eq!(
            unit.services,
            [Service {
                name: "busybox:latest".into(),
                alias: Some("cache".into()),
                entrypoint: None,
                command: Some(strings(&["sh", "-c", "while true; do echo pong | nc -l -p 6379; done"])),
                ..Service::default()
            }]
        );
        assert_eq!(
            unit.script,
            strings(&[
                "echo \"listening\"",
                "test -n \"$CI_JOB_STAGE\"",
                "cat dist/app.txt",
                "echo ping | nc cache 6379 | grep pong"
            ])
        );

        let flaky = p.job("test:flaky").unwrap();
        assert_eq!((flaky.stage.as_str(), flaky.allow_failure.clone()), ("test", AllowFailure::Yes));
        assert_eq!(flaky.variables, [var("SUITE", "flaky")], "the job's own map replaces the merged one");
        assert_eq!(flaky.needs, Some(vec![]));
        assert_eq!(flaky.script, strings(&["exit 1"]));
        assert_eq!(flaky.after_script, strings(&["echo \"after_script runs after a failure\""]));

        let deploy = p.job("deploy").unwrap();
        assert_eq!(
            deploy.needs,
            Some(vec![
                Need { job: "build".into(), artifacts: true, optional: false },
                Need { job: "test:unit".into(), artifacts: false, optional: false },
            ])
        );
        assert_eq!(deploy.timeout, Some(Duration::from_secs(600)));
        assert_eq!(deploy.rules.len(), 3);
        assert_eq!(deploy.rules[0].when, Some(When::Manual));
        assert_eq!(deploy.rules[0].location, Location { file: file.clone(), line: 76 });
        assert_eq!(deploy.rules[2].when, Some(When::Never));
        assert!(deploy.rules[2].condition.is_none());
        let second = deploy.rules[1].condition.as_ref().unwrap();
        assert!(evaluate(second, &env(&[("CI_COMMIT_BRANCH", "main"), ("CI_DEFAULT_BRANCH", "main")])));
        assert!(evaluate(
            second,
            &env(&[("CI_COMMIT_BRANCH", "dev"), ("CI_DEFAULT_BRANCH", "main"), ("FORCE_DEPLOY", "1")])
        ));
        assert!(!evaluate(second, &env(&[("CI_COMMIT_BRANCH", "dev"), ("CI_DEFAULT_BRANCH", "main")])));
    }

    #[test]
    fn load_reports_an_unreadable_file() {
        let e = load(Path::new("/nonexistent/.gitlab-ci.yml")).unwrap_err();
        assert_eq!(e.line, None);
        assert!(e.to_string().starts_with("/nonexistent/.gitlab-ci.yml: cannot read: "), "{e}");
    }

    #[test]
    fn parse_str_reads_includes_beside_the_file() {
        let file = fixture("full");
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(parse_str(&text, &file).unwrap(), load(&file).unwrap());
        let e =
            parse_str("include: ci/templates.yml\njob: {script: x}\n", Path::new("/nonexistent/x.yml")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(1), "include"));
        assert_eq!(e.message, "local file `ci/templates.yml` does not exist");
    }

    #[test]
    fn stages_defaults_and_edges() {
        assert_eq!(parse("j: {script: x}").stages, strings(&[".pre", "build", "test", "deploy", ".post"]));
        assert_eq!(parse("stages: [a, b]\nj: {script: x, stage: a}").stages, strings(&[".pre", "a", "b", ".post"]));
        assert_eq!(
            parse("stages: [.post, a, .pre, a]\nj: {script: x, stage: a}").stages,
            strings(&[".pre", "a", ".post"]),
            "edges stay at the ends, duplicates go"
        );
        assert_eq!(parse("types: [x]\nj: {script: s, stage: x}").stages, strings(&[".pre", "x", ".post"]));
        let p = parse(
            "stages: [a]\nfirst: {script: x, stage: .pre}\nj: {script: x, stage: a}\nlast: {script: x, stage: .post}",
        );
        assert_eq!(p.jobs.iter().map(|j| p.stage_index(&j.stage)).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn reserved_words_are_not_jobs_and_pages_is() {
        let p = parse(
            "image: alpine\nservices: [pg]\nbefore_script: [b]\nafter_script: [a]\ncache: {paths: [x]}\n\
             variables: {A: 1}\nworkflow: {rules: [{when: always}]}\npages:\n  script: [x]\n  \
             artifacts: {paths: [public]}\n.hidden:\n  script: [x]\n",
        );
        assert_eq!(p.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["pages"]);
        let pages = &p.jobs[0];
        assert_eq!(pages.image.as_ref().map(|i| i.name.as_str()), Some("alpine"), "global image is a default");
        assert_eq!((pages.before_script.clone(), pages.after_script.clone()), (strings(&["b"]), strings(&["a"])));
        assert_eq!(pages.services.len(), 1);
        assert_eq!(p.workflow_rules.len(), 1);
    }

    #[test]
    fn default_wins_over_deprecated_globals() {
        let p = parse("image: old\ndefault:\n  image: new\n  retry: 2\nj: {script: x}\n");
        assert_eq!(p.jobs[0].image.as_ref().map(|i| i.name.as_str()), Some("new"));
        assert_eq!(p.jobs[0].retry, 2);
    }

    #[test]
    fn workflow_rules() {
        let p = parse(
            "workflow:\n  name: pipeline\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"schedule\"\n      when: never\n    \
             - when: always\n      variables: {X: y}\nj: {script: x}\n",
        );
        assert_eq!(p.workflow_rules.len(), 2);
        assert_eq!(p.name.as_deref(), Some("pipeline"));
        assert_eq!(p.workflow_rules[0].location.line, 4);
        assert_eq!(p.workflow_rules[1].variables, [var("X", "y")]);
        let p = parse(
            "workflow:\n  auto_cancel: {on_new_commit: interruptible, on_job_failure: all}\n  rules:\n    \
             - auto_cancel: {on_new_commit: none}\nj: {script: x}\n",
        );
        assert_eq!((p.name, p.workflow_rules.len()), (None, 1));
    }

    #[test]
    fn extends_and_default_together() {
        let p = parse(
            "default:\n  image: base\n  after_script: [default-after]\n.t:\n  image: templ\n  script: [t]\n  variables: {A: t, B: t}\n\
             j:\n  extends: .t\n  variables: {B: j}\n",
        );
        let j = &p.jobs[0];
        assert_eq!(j.image.as_ref().map(|i| i.name.as_str()), Some("templ"));
        assert_eq!(j.after_script, strings(&["default-after"]));
        assert_eq!(j.variables, [var("A", "t"), var("B", "j")]);
        assert_eq!(j.location.line, 8);
    }

    #[test]
    fn references_in_rules_and_scripts_are_flattened() {
        let p = parse(
            ".rules:\n  rules:\n    - if: $A\n    - if: $B\n.s:\n  before_script: [one, two]\n\
             j:\n  rules:\n    - !reference [.rules, rules]\n    - when: never\n  \
             script:\n    - !reference [.s, before_script]\n    - three\n",
        );
        assert_eq!(p.jobs[0].rules.len(), 3);
        assert_eq!(p.jobs[0].script, strings(&["one", "two", "three"]));
    }

    #[test]
    fn optional_needs_of_missing_jobs_are_dropped() {
        let p =
            parse("a: {script: x, needs: [{job: gone, optional: true}, {job: b, optional: true}]}\nb: {script: x}\n");
        assert_eq!(p.jobs[0].needs, Some(vec![Need { job: "b".into(), artifacts: true, optional: true }]));
    }

    #[test]
    fn needs_and_dependencies_on_parallel_jobs_name_their_instances() {
        let p = parse(
            "stages: [build, test]\n.b:\n  stage: build\n  parallel: 2\nbuild:\n  extends: .b\n  script: x\n\
             matrix:\n  stage: build\n  script: x\n  parallel:\n    matrix:\n      - {OS: [linux, mac], ARCH: amd64}\n\
             test:\n  stage: test\n  script: x\n  needs:\n    - build\n    - job: matrix\n      parallel:\n        \
             matrix:\n          - {OS: mac, ARCH: amd64}\n  dependencies: [build]\n\
             all:\n  stage: test\n  script: x\n  dependencies: [matrix, build 2/2]\n",
        );
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["build 1/2", "build 2/2", "matrix: [linux, amd64]", "matrix: [mac, amd64]", "test", "all"]);
        assert_eq!(p.jobs[1].stage, "build", "extends applies to every instance");
        let test = p.job("test").unwrap();
        let needs: Vec<&str> = test.needs.iter().flatten().map(|n| n.job.as_str()).collect();
        assert_eq!(needs, ["build 1/2", "build 2/2", "matrix: [mac, amd64]"]);
        assert_eq!(test.dependencies, Some(strings(&["build 1/2", "build 2/2"])));
        let all = p.job("all").unwrap();
        assert_eq!(all.dependencies, Some(strings(&["matrix: [linux, amd64]", "matrix: [mac, amd64]", "build 2/2"])));

        let e = parse_err(
            "m:\n  script: x\n  parallel:\n    matrix:\n      - {OS: [linux, mac]}\n\
             t:\n  script: x\n  needs:\n    - job: m\n      parallel: {matrix: [{OS: bsd}]}\n",
        );
        assert_eq!((e.line, e.key.as_str()), (Some(9), "t.needs[0]"));
        assert_eq!(
            e.message,
            "`m: [bsd]` is not an instance of the parallel job `m` (instances: m: [linux], m: [mac])"
        );
        let e = parse_err(
            "stages: [a, b]\nm:\n  stage: b\n  script: x\n  parallel: 2\nt:\n  stage: a\n  script: x\n  needs: [m]\n",
        );
        assert_eq!((e.line, e.key.as_str()), (Some(9), "t.needs[0]"));
        assert!(e.message.contains("`m 1/2` is in a later stage"), "{e}");
    }

    #[test]
    fn partial_matrix_selectors_pick_every_instance_with_those_values() {
        let p = parse(
            "stages: [build, test]\nb:\n  stage: build\n  script: x\n  parallel:\n    matrix:\n      \
             - {OS: [linux, mac], ARCH: [x64, arm]}\n\
             t:\n  stage: test\n  script: x\n  needs:\n    - job: b\n      parallel:\n        \
             matrix:\n          - {ARCH: x64}\n          - {OS: mac, ARCH: arm}\n",
        );
        let needs: Vec<&str> = p.job("t").unwrap().needs.iter().flatten().map(|n| n.job.as_str()).collect();
        assert_eq!(needs, ["b: [linux, x64]", "b: [mac, x64]", "b: [mac, arm]"]);
        let e = parse_err(
            "b:\n  script: x\n  parallel:\n    matrix:\n      - {OS: [linux, mac], ARCH: [x64]}\n\
             t:\n  script: x\n  needs:\n    - job: b\n      parallel: {matrix: [{ARCH: riscv}]}\n",
        );
        assert_eq!((e.line, e.key.as_str()), (Some(9), "t.needs[0]"));
        assert!(e.message.contains("`b: [riscv]` is not an instance of the parallel job `b`"), "{e}");
    }

    #[test]
    fn cross_project_needs_become_notes_once_per_job() {
        let p = parse(
            "a: {script: x}\nb:\n  script: x\n  parallel: 2\n  needs:\n    - a\n    \
             - {project: g/lib, job: build, ref: main}\n",
        );
        assert_eq!(p.jobs[1].needs.as_ref().map(Vec::len), Some(1));
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        assert!(p.notes[0].starts_with("/p/.gitlab-ci.yml:7: b.needs[1]: left out: `needs: project`"), "{:?}", p.notes);
    }

    #[test]
    fn needs_in_the_same_stage_are_allowed() {
        let p = parse("a: {script: x, needs: [b]}\nb: {script: x}\n");
        assert_eq!(p.jobs[0].needs.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn dependencies_rules() {
        let p = parse("stages: [a, b]\nx: {stage: a, script: s}\ny: {stage: b, script: s, dependencies: [x]}\nz: {stage: b, script: s, dependencies: []}\n");
        assert_eq!(p.jobs[1].dependencies, Some(strings(&["x"])));
        assert_eq!(p.jobs[2].dependencies, Some(vec![]));
        let p = parse("x: {script: s}\ny: {script: s, needs: [x], dependencies: [x]}\n");
        assert_eq!(p.jobs[1].dependencies, Some(strings(&["x"])));
    }

    #[test]
    fn variables_keep_file_order_and_psych_typing() {
        let p = parse("variables:\n  Z: 1\n  A: 1.10\n  M: on\n  O: 0755\nj: {script: x}\n");
        assert_eq!(p.variables, [var("Z", "1"), var("A", "1.1"), var("M", "true"), var("O", "493")]);
    }

    /// Every configuration error names file, line and key (issue 7: "every parse error above
    /// reported with its line").
    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            // YAML itself.
            ("j:\n  script: [x\n", 3, "", "invalid YAML"),
            ("- a\n- b\n", 1, "", "top level must be a map"),
            // Keys and values.
            (
                "j:\n  script: x\n  scirpt: y\n",
                3,
                "j.scirpt",
                "unknown key (accepted: after_script, allow_failure, artifacts",
            ),
            ("\nbuild:\n  stage: build\n", 2, "build", "`build` has no `script`"),
            ("build:\n  script: {a: 1}\n", 2, "build.script", "expected a string or a list of strings, found a map"),
            ("j:\n  script: x\n  only: main\n", 3, "j.only", "expected a list of refs"),
            ("j:\n  script: x\n  when: delayed\n", 3, "j.when", "`when: delayed` needs `start_in`"),
            (
                "j:\n  script: x\n  rules:\n    - if: $A = \"b\"\n",
                4,
                "j.rules[0].if",
                "invalid expression: unexpected `=` at column 4",
            ),
            ("j:\n  script: x\n  timeout: forever\n", 3, "j.timeout", "invalid duration"),
            ("j:\n  script: x\n  retry: 5\n", 3, "j.retry", "retry must be 0, 1 or 2"),
            ("j:\n  script: x\n  image: {nme: x}\n", 3, "j.image.nme", "unknown key"),
            ("variables:\n  A: [1]\nj: {script: x}\n", 2, "variables.A", "expected a string, a number"),
            ("stages: build\nj: {script: x}\n", 1, "stages", "expected a list of stage names"),
            (
                "workflow:\n  rules:\n    - when: manual\nj: {script: x}\n",
                3,
                "workflow.rules[0].when",
                "workflow rules take",
            ),
            ("workflow:\n  rulez: []\nj: {script: x}\n", 2, "workflow.rulez", "unknown key"),
            (
                "workflow:\n  auto_cancel:\n    on_new_commit: always\nj: {script: x}\n",
                3,
                "workflow.auto_cancel.on_new_commit",
                "unknown value \"always\" (use conservative, interruptible, none)",
            ),
            (
                "workflow:\n  rules:\n    - auto_cancel: {on_job_failure: some}\nj: {script: x}\n",
                3,
                "workflow.rules[0].auto_cancel.on_job_failure",
                "(use all, none)",
            ),
            ("default:\n  script: [x]\nj: {script: x}\n", 2, "default.script", "unknown key"),
            ("stage: build\nj: {script: x}\n", 1, "stage", "`stage` is not a job"),
            ("spec:\n  inputs: {}\nj: {script: x}\n", 1, "spec", "belongs in a header"),
            // Stages.
            (
                "stages: [build]\nj:\n  stage: tset\n  script: x\n",
                3,
                "j.stage",
                "stage `tset` is not in stages (.pre, build, .post)",
            ),
            ("stages: [build]\n\nj:\n  script: x\n", 3, "j", "the default stage `test` is not in stages"),
            // needs and dependencies.
            (
                "a:\n  script: x\n  needs:\n    - b\n    - nope\nb: {script: x}\n",
                5,
                "a.needs[1]",
                "`nope` is not a job in this pipeline",
            ),
            (
                "a:\n  script: x\n  needs: [.t]\n.t: {script: x}\n",
                3,
                "a.needs[0]",
                "`.t` is a hidden template, not a job",
            ),
            (
                "a:\n  stage: build\n  script: x\n  needs: [b]\nb: {stage: deploy, script: x}\n",
                4,
                "a.needs[0]",
                "`b` is in a later stage (deploy) than this job (build)",
            ),
            ("a:\n  script: x\n  dependencies: [nope]\n", 3, "a.dependencies[0]", "`nope` is not a job"),
            (
                "a: {script: x}\nb:\n  script: x\n  dependencies: [a]\n",
                4,
                "b.dependencies[0]",
                "`a` is not in an earlier stage",
            ),
            (
                "a: {script: x}\nb:\n  script: x\n  needs: []\n  dependencies: [a]\n",
                5,
                "b.dependencies[0]",
                "`a` must also be in `needs`",
            ),
            // extends, include, !reference.
            ("j:\n  extends: .base\n  script: x\n", 2, "j.extends", "`j` extends `.base`, which is not defined"),
            (
                "include:\n  - remote: https://example.com/ci.yml\nj: {script: x}\n",
                2,
                "include[0].remote",
                "no GitLab instance",
            ),
            (
                "include:\n  - template: Jobs/Build.gitlab-ci.yml\nj: {script: x}\n",
                2,
                "include[0].template",
                "no GitLab instance",
            ),
            ("j:\n  script: !reference [.nope, script]\n", 2, "j.script", "`.nope` is not defined"),
        ];
        for &(text, line, key, want) in cases {
            let e = parse_err(text);
            assert_eq!(e.file, Path::new(FILE), "{text}\n→ {e}");
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}\n→ {e}");
            assert!(e.message.contains(want), "{text}\n→ {e}\nwant: {want}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn error_display_matches_the_documented_form() {
        let e = parse_err("build:\n  script: 42\n");
        assert_eq!(
            e.to_string(),
            "/p/.gitlab-ci.yml:2: build.script: expected a string or a list of strings, found a number"
        );
    }

    #[test]
    fn needs_cycles_name_every_job_in_the_cycle() {
        let e =
            parse_err("a:\n  script: x\n  needs: [b]\nb:\n  script: x\n  needs: [c]\nc:\n  script: x\n  needs: [a]\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "a.needs[0]"));
        assert_eq!(e.message, "needs cycle: a → b → c → a");
        let e = parse_err("ok: {script: x}\nself:\n  script: x\n  needs: [ok, self]\n");
        assert_eq!(
            (e.line, e.key.as_str(), e.message.as_str()),
            (Some(4), "self.needs[1]", "needs cycle: self → self")
        );
        // A diamond is not a cycle.
        parse(
            "a: {script: x}\nb: {script: x, needs: [a]}\nc: {script: x, needs: [a]}\nd: {script: x, needs: [b, c]}\n",
        );
    }

    #[test]
    fn long_needs_chains_do_not_overflow() {
        let mut text = String::from("j0: {script: x}\n");
        for i in 1..3000 {
            text.push_str(&format!("j{i}: {{script: x, needs: [j{}]}}\n", i - 1));
        }
        assert_eq!(parse(&text).jobs.len(), 3000);
        text.push_str("j0b: {script: x, needs: [j2999]}\n");
        text = text.replacen("j0: {script: x}", "j0: {script: x, needs: [j0b]}", 1);
        let e = parse_err(&text);
        assert!(e.message.starts_with("needs cycle: j0 → j0b → j2999 → j2998"), "{}", &e.message[..80]);
    }

    #[test]
    fn errors_in_included_files_name_that_file() {
        let e = parse_files(
            "include: ci/t.yml\nj: {script: x}\n",
            &[("ci/t.yml", "\n.t:\n  script: x\nk:\n  script: x\n  bogus: 1\n")],
        )
        .unwrap_err();
        assert_eq!(e.file, Path::new("/p/ci/t.yml"));
        assert_eq!((e.line, e.key.as_str()), (Some(6), "k.bogus"));
    }

    #[test]
    fn no_jobs_is_an_error() {
        let e = parse_err(".hidden: {script: x}\nvariables: {A: 1}\n");
        assert_eq!(e.to_string(), "/p/.gitlab-ci.yml: no jobs (names starting with `.` are templates, not jobs)");
        let e = parse_err("");
        assert_eq!(e.line, None);
    }

    #[test]
    fn project_dir_of_a_bare_file_name() {
        // `.gitlab-ci.yml` alone: includes are read from the current directory.
        let read = |path: &Path| -> io::Result<String> {
            assert_eq!(path, Path::new("./t.yml"));
            Ok("j: {script: x}\n".to_owned())
        };
        let p = parse_with("include: /t.yml\n", Path::new(".gitlab-ci.yml"), &read).unwrap();
        assert_eq!(p.jobs[0].location.file, Path::new("./t.yml"));
    }
}
