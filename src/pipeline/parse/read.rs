//! Typed readers for the values of `.gitlab-ci.yml` keys: a [`Field`] (a node with its dotted
//! key and line) → a model value (`Image`, `Service`, `Artifacts`, `Rule`, durations...)
//! or a [`PipelineError`] naming file, line and key. Shared by the job, `default` and top-level
//! readers in `job.rs` and `mod.rs`. Pure.

use std::time::Duration;

use super::duration;
use super::yaml::{Entry, Map, Node, Value};
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{
    AllowFailure, Artifacts, ArtifactsWhen, Image, Location, PullPolicy, Service, Variable, When,
};

/// GitLab flattens nested lists in scripts (and rules, needs) up to this depth.
const MAX_LIST_NESTING: usize = 10;

/// A value with the key it was written under and the line to report.
#[derive(Clone, Debug)]
pub struct Field<'a> {
    pub node: &'a Node,
    /// Dotted key: `build.script`, `build.services[0].alias`.
    pub key: String,
    /// The key's line for a map entry, the item's line for a list item.
    pub line: usize,
}

impl<'a> Field<'a> {
    /// A map entry, under `parent` (empty for top-level keys).
    pub fn entry(parent: &str, entry: &'a Entry) -> Field<'a> {
        let key = if parent.is_empty() { entry.key.clone() } else { format!("{parent}.{}", entry.key) };
        Field { node: &entry.value, key, line: entry.line }
    }

    pub fn error(&self, message: impl Into<String>) -> PipelineError {
        PipelineError::new(&self.node.file, self.line, self.key.clone(), message)
    }

    /// `expected {what}, found {kind}`.
    pub fn expected(&self, what: &str) -> PipelineError {
        self.error(format!("expected {what}, found {}", self.node.value.kind()))
    }

    pub fn location(&self) -> Location {
        Location { file: self.node.file.to_path_buf(), line: self.line }
    }

    pub fn string(&self) -> Result<String, PipelineError> {
        match &self.node.value {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.expected("a string")),
        }
    }

    /// A non-empty string.
    pub fn name(&self, what: &str) -> Result<String, PipelineError> {
        match &self.node.value {
            Value::Str(s) if s.trim().is_empty() => Err(self.error(format!("expected {what}, found an empty string"))),
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.expected(what)),
        }
    }

    pub fn boolean(&self) -> Result<bool, PipelineError> {
        match self.node.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.expected("true or false")),
        }
    }

    pub fn integer(&self) -> Result<i64, PipelineError> {
        match self.node.value {
            Value::Int(i) => Ok(i),
            _ => Err(self.expected("a whole number")),
        }
    }

    pub fn map(&self) -> Result<&'a Map, PipelineError> {
        match &self.node.value {
            Value::Map(m) => Ok(m),
            _ => Err(self.expected("a map")),
        }
    }

    /// The entry `name` of a map value, if present.
    pub fn get(&self, name: &str) -> Result<Option<Field<'a>>, PipelineError> {
        Ok(self.map()?.get(name).map(|e| Field::entry(&self.key, e)))
    }

    /// The items of a list value; nested lists (from `!reference`) flattened as GitLab does.
    pub fn items(&self, what: &str) -> Result<Vec<Field<'a>>, PipelineError> {
        let Value::Seq(items) = &self.node.value else {
            return Err(self.expected(what));
        };
        let mut out = Vec::new();
        flatten(items, &self.key, 0, &mut out)
            .map_err(|()| self.error(format!("lists nested too deeply in {what}")))?;
        Ok(out)
    }

    /// A list of strings (nested lists flattened).
    pub fn strings(&self) -> Result<Vec<String>, PipelineError> {
        let what = "a list of strings";
        self.items(what)?.iter().map(|item| item.string().map_err(|_| item.expected("a string"))).collect()
    }

    /// Fails on the first key not in `allowed`, listing them.
    pub fn check_keys(&self, allowed: &[&str]) -> Result<(), PipelineError> {
        for entry in self.map()?.iter() {
            if !allowed.contains(&entry.key.as_str()) {
                let field = Field::entry(&self.key, entry);
                return Err(field.error(format!("unknown key (accepted: {})", allowed.join(", "))));
            }
        }
        Ok(())
    }
}

fn flatten<'a>(items: &'a [Node], key: &str, depth: usize, out: &mut Vec<Field<'a>>) -> Result<(), ()> {
    if depth > MAX_LIST_NESTING {
        return Err(());
    }
    for (i, node) in items.iter().enumerate() {
        let key = format!("{key}[{i}]");
        match &node.value {
            Value::Seq(inner) => flatten(inner, &key, depth + 1, out)?,
            _ => out.push(Field { node, key, line: node.line }),
        }
    }
    Ok(())
}

/// `script`, `before_script`, `after_script`: a string or a (nested) list of strings.
pub fn script(field: &Field) -> Result<Vec<String>, PipelineError> {
    let what = "a string or a list of strings";
    match &field.node.value {
        Value::Str(s) => Ok(vec![s.clone()]),
        Value::Seq(_) => field
            .items(what)?
            .iter()
            .map(|line| match &line.node.value {
                Value::Str(s) => Ok(s.clone()),
                Value::Null => Err(line.error("empty script line")),
                Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                    Err(line.error(format!("expected a string, found {} (quote it)", line.node.value.kind())))
                }
                _ => Err(line.expected("a string")),
            })
            .collect(),
        _ => Err(field.expected(what)),
    }
}

/// `variables:` (global, job, service or rule): names to strings, numbers, booleans or
/// `{value, description, expand, options}`.
pub fn variables(field: &Field) -> Result<Vec<Variable>, PipelineError> {
    let what = "a map of variable names to values";
    if !matches!(field.node.value, Value::Map(_)) {
        return Err(field.expected(what));
    }
    field.map()?.iter().map(|entry| variable(&entry.key, &Field::entry(&field.key, entry))).collect()
}

fn variable(name: &str, field: &Field) -> Result<Variable, PipelineError> {
    let name = name.to_owned();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(field.error("invalid variable name (use letters, digits and _)"));
    }
    if let Some(value) = field.node.value.scalar_string() {
        return Ok(Variable { name, value });
    }
    if !matches!(field.node.value, Value::Map(_)) {
        return Err(field.expected("a string, a number, true/false, or {value, description}"));
    }
    field.check_keys(&["value", "description", "expand", "options"])?;
    let mut value = match field.get("value")? {
        Some(v) => v.node.value.scalar_string().ok_or_else(|| v.expected("a string, a number or true/false"))?,
        None => String::new(),
    };
    if let Some(description) = field.get("description")? {
        description.string()?;
    }
    if let Some(options) = field.get("options")? {
        let options = options.strings()?;
        if !options.is_empty() && !options.contains(&value) {
            return Err(field.error(format!("value {value:?} is not one of the options {options:?}")));
        }
    }
    if let Some(expand) = field.get("expand")? {
        if !expand.boolean()? {
            // GitLab's escape for a literal `$`: the value is then used as written.
            value = value.replace('$', "$$");
        }
    }
    Ok(Variable { name, value })
}

/// `image:` a name or `{name, entrypoint, docker, kubernetes, pull_policy}` (GitLab's
/// `Imageable` entry and `executor_opts.json` schema).
pub fn image(field: &Field) -> Result<Image, PipelineError> {
    match &field.node.value {
        Value::Str(_) => Ok(Image { name: field.name("an image name")?, ..Image::default() }),
        Value::Map(_) => {
            field.check_keys(&["name", "entrypoint", "docker", "kubernetes", "pull_policy"])?;
            let name = field.get("name")?.ok_or_else(|| field.error("missing `name`"))?.name("an image name")?;
            let entrypoint = field.get("entrypoint")?.map(|f| command(&f)).transpose()?;
            let (user, platform) = executor_options(field)?;
            let pull_policy = field.get("pull_policy")?.map(|f| pull_policy(&f)).transpose()?.unwrap_or_default();
            Ok(Image { name, entrypoint, user, platform, pull_policy })
        }
        _ => Err(field.expected("an image name or {name, entrypoint}")),
    }
}

/// GitLab's `docker:` options of an image or service: `platform` (1 to 64 characters) and
/// `user` (1 to 255), both strings. `kubernetes: {user}` is checked (a string or a number) and
/// left to `mod.rs`'s note: it is for the Kubernetes executor.
fn executor_options(field: &Field) -> Result<(Option<String>, Option<String>), PipelineError> {
    if let Some(kubernetes) = field.get("kubernetes")? {
        kubernetes.check_keys(&["user"])?;
        if let Some(user) = kubernetes.get("user")? {
            if !matches!(user.node.value, Value::Int(_)) {
                user.name("a user name or uid")?;
            }
        }
    }
    let Some(docker) = field.get("docker")? else { return Ok((None, None)) };
    docker.check_keys(&["platform", "user"])?;
    let bounded = |key: &str, what: &str, max: usize| -> Result<Option<String>, PipelineError> {
        let Some(f) = docker.get(key)? else { return Ok(None) };
        let value = f.name(what)?;
        if value.chars().count() > max {
            return Err(f.error(format!("longer than {max} characters")));
        }
        Ok(Some(value))
    };
    Ok((bounded("user", "a user name or uid", 255)?, bounded("platform", "a platform such as linux/arm64", 64)?))
}

/// `pull_policy:` one of `always`, `if-not-present`, `never`, or a non-empty list of them.
fn pull_policy(field: &Field) -> Result<Vec<PullPolicy>, PipelineError> {
    let items = match &field.node.value {
        Value::Seq(_) => field.items("a list of pull policies")?,
        _ => vec![field.clone()],
    };
    if items.is_empty() {
        return Err(field.error("no pull policy (use always, if-not-present or never)"));
    }
    items
        .iter()
        .map(|item| match item.string()?.as_str() {
            "always" => Ok(PullPolicy::Always),
            "if-not-present" => Ok(PullPolicy::IfNotPresent),
            "never" => Ok(PullPolicy::Never),
            other => Err(item.error(format!("unknown pull policy {other:?} (use always, if-not-present or never)"))),
        })
        .collect()
}

/// `entrypoint`/`command`: a list of strings; `[""]` means none.
fn command(field: &Field) -> Result<Vec<String>, PipelineError> {
    if !matches!(field.node.value, Value::Seq(_)) {
        return Err(field.expected("a list of strings"));
    }
    let words = field.strings()?;
    Ok(if words.len() == 1 && words[0].is_empty() { Vec::new() } else { words })
}

/// `services:` a list of names or `{name, alias, entrypoint, command, variables}`.
pub fn services(field: &Field) -> Result<Vec<Service>, PipelineError> {
    field.items("a list of services")?.iter().map(service).collect()
}

fn service(field: &Field) -> Result<Service, PipelineError> {
    match &field.node.value {
        Value::Str(_) => Ok(Service { name: field.name("an image name")?, ..Service::default() }),
        Value::Map(_) => {
            field.check_keys(&[
                "name",
                "alias",
                "entrypoint",
                "command",
                "variables",
                "pull_policy",
                "docker",
                "kubernetes",
            ])?;
            let name = field.get("name")?.ok_or_else(|| field.error("missing `name`"))?.name("an image name")?;
            let alias = field.get("alias")?.map(|f| f.name("an alias")).transpose()?;
            let entrypoint = field.get("entrypoint")?.map(|f| command(&f)).transpose()?;
            let cmd = field.get("command")?.map(|f| command(&f)).transpose()?;
            let variables = field.get("variables")?.map(|f| variables(&f)).transpose()?.unwrap_or_default();
            let (user, platform) = executor_options(field)?;
            let pull_policy = field.get("pull_policy")?.map(|f| pull_policy(&f)).transpose()?.unwrap_or_default();
            Ok(Service { name, alias, entrypoint, command: cmd, variables, user, platform, pull_policy })
        }
        _ => Err(field.expected("an image name or {name, alias, ...}")),
    }
}

/// Most jobs `parallel:` may make of one job (GitLab's limit).
pub const MAX_PARALLEL: usize = 200;

/// The values of one `parallel: matrix` instance: (variable, value) in the order written.
pub type Combo = Vec<(String, String)>;

/// `parallel: matrix:` (of a job or a need): a list of maps from variable names to a value or a
/// list of values; each map makes the cartesian product of its values. The combinations, in
/// order; at most [`MAX_PARALLEL`] of them.
pub fn matrix(field: &Field) -> Result<Vec<Combo>, PipelineError> {
    let what = "a list of maps of variable names to values";
    let items = field.items(what)?;
    if items.is_empty() {
        return Err(field.error("the matrix is empty (give at least one map of variables to values)"));
    }
    let mut out: Vec<Combo> = Vec::new();
    for item in &items {
        let Value::Map(map) = &item.node.value else {
            return Err(item.expected("a map of variable names to values"));
        };
        if map.iter().next().is_none() {
            return Err(item.error("empty matrix entry (give variables and their values)"));
        }
        let mut combos: Vec<Combo> = vec![Vec::new()];
        for entry in map.iter() {
            let f = Field::entry(&item.key, entry);
            if entry.key.is_empty() || !entry.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(f.error("invalid variable name (use letters, digits and _)"));
            }
            let values: Vec<String> = match &f.node.value {
                Value::Seq(_) => f
                    .items("a list of values")?
                    .iter()
                    .map(|v| v.node.value.scalar_string().ok_or_else(|| v.expected("a string")))
                    .collect::<Result<_, _>>()?,
                value => vec![value.scalar_string().ok_or_else(|| f.expected("a string or a list of strings"))?],
            };
            if values.is_empty() {
                return Err(f.error("no values (give a string or a non-empty list)"));
            }
            if combos.len().saturating_mul(values.len()).saturating_add(out.len()) > MAX_PARALLEL {
                return Err(f.error(format!("the matrix makes more than {MAX_PARALLEL} jobs")));
            }
            combos = combos
                .iter()
                .flat_map(|combo| {
                    values.iter().map(move |v| {
                        let mut combo = combo.clone();
                        combo.push((entry.key.clone(), v.clone()));
                        combo
                    })
                })
                .collect();
        }
        out.extend(combos);
    }
    Ok(out)
}

/// GitLab's name for a matrix instance: `build: [aws, app1]`.
pub fn instance_name(base: &str, combo: &[(String, String)]) -> String {
    let values: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
    format!("{base}: [{}]", values.join(", "))
}

/// `dependencies:` a list of job names, each with its line and key.
pub fn dependencies(field: &Field) -> Result<Vec<(String, usize, String)>, PipelineError> {
    let items = field.items("a list of job names")?;
    items.iter().map(|item| Ok((item.name("a job name")?, item.line, item.key.clone()))).collect()
}

/// `artifacts:`; `name`, `expose_as`, `public`, `access` are accepted and mean nothing locally
/// (they name the download, link it in merge requests, or guard it on GitLab).
pub fn artifacts(field: &Field) -> Result<Artifacts, PipelineError> {
    field.check_keys(&[
        "paths",
        "exclude",
        "when",
        "expire_in",
        "name",
        "untracked",
        "reports",
        "expose_as",
        "public",
        "access",
    ])?;
    let paths = field.get("paths")?.map(|f| f.strings()).transpose()?.unwrap_or_default();
    let exclude = field.get("exclude")?.map(|f| f.strings()).transpose()?.unwrap_or_default();
    let when = match field.get("when")? {
        None => ArtifactsWhen::OnSuccess,
        Some(f) => match f.string()?.as_str() {
            "on_success" => ArtifactsWhen::OnSuccess,
            "on_failure" => ArtifactsWhen::OnFailure,
            "always" => ArtifactsWhen::Always,
            other => return Err(f.error(format!("unknown value {other:?} (use on_success, on_failure or always)"))),
        },
    };
    let expire_in = match field.get("expire_in")? {
        None => None,
        Some(f) => {
            let text = f.string()?;
            if !text.trim().eq_ignore_ascii_case("never") {
                super::duration::parse_human(&text).map_err(|e| f.error(e))?;
            }
            Some(text)
        }
    };
    let untracked = field.get("untracked")?.map(|f| f.boolean()).transpose()?.unwrap_or(false);
    for key in ["name", "expose_as"] {
        if let Some(f) = field.get(key)? {
            f.string()?;
        }
    }
    let (dotenv, reports) = match field.get("reports")? {
        None => (Vec::new(), Vec::new()),
        Some(reports) => report_files(&reports)?,
    };
    Ok(Artifacts { paths, exclude, when, expire_in, dotenv, notes: Vec::new(), untracked, reports })
}

/// `artifacts: reports:`: the dotenv files, and every report's files (dotenv's too). Each
/// report is a path or a list of paths; `coverage_report` is `{coverage_format, path}`.
fn report_files(reports: &Field) -> Result<(Vec<String>, Vec<String>), PipelineError> {
    let mut dotenv = Vec::new();
    let mut all = Vec::new();
    for entry in reports.map()?.iter() {
        let (name, report) = (entry.key.as_str(), Field::entry(&reports.key, entry));
        let files = match &report.node.value {
            Value::Str(_) => vec![report.string()?],
            Value::Map(_) => match report.get("path")? {
                Some(path) => vec![path.string()?],
                None => return Err(report.error("missing `path`")),
            },
            _ => report.strings()?,
        };
        if name == "dotenv" {
            dotenv.extend(files.iter().cloned());
        }
        all.extend(files);
    }
    Ok((dotenv, all))
}

/// Which `when:` values a place accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenIn {
    Job,
    JobRule,
    WorkflowRule,
}

pub fn when(field: &Field, place: WhenIn) -> Result<When, PipelineError> {
    let text = field.string()?;
    let when = match text.as_str() {
        "on_success" => When::OnSuccess,
        "on_failure" => When::OnFailure,
        "always" => When::Always,
        "manual" => When::Manual,
        "never" => When::Never,
        "delayed" => return Err(field.error("`when: delayed` is not supported")),
        other => {
            return Err(
                field.error(format!("unknown value {other:?} (use on_success, on_failure, always, manual or never)"))
            )
        }
    };
    if place == WhenIn::WorkflowRule && !matches!(when, When::Always | When::Never) {
        return Err(field.error(format!("workflow rules take `when: always` or `when: never`, not {text:?}")));
    }
    Ok(when)
}

/// `allow_failure:` true/false or `{exit_codes: N or [N, ...]}`.
pub fn allow_failure(field: &Field) -> Result<AllowFailure, PipelineError> {
    match &field.node.value {
        Value::Bool(true) => Ok(AllowFailure::Yes),
        Value::Bool(false) => Ok(AllowFailure::No),
        Value::Map(_) => {
            field.check_keys(&["exit_codes"])?;
            let codes = field.get("exit_codes")?.ok_or_else(|| field.error("missing `exit_codes`"))?;
            let list = match codes.node.value {
                Value::Int(_) => vec![codes.clone()],
                _ => codes.items("an exit code or a list of them")?,
            };
            let codes = list
                .iter()
                .map(|f| i32::try_from(f.integer()?).map_err(|_| f.error("exit code out of range")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(AllowFailure::ExitCodes(codes))
        }
        _ => Err(field.expected("true, false or {exit_codes: [...]}")),
    }
}

/// `timeout:` a GitLab human duration (`1h 30m`, `10 minutes`, `3600`).
pub fn timeout(field: &Field) -> Result<Duration, PipelineError> {
    let text = match &field.node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err(field.expected("a duration like \"1h 30m\"")),
    };
    match duration::parse_human(&text) {
        Ok(d) if d.is_zero() => Err(field.error("timeout must be more than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(field.error(e)),
    }
}

/// `auto_cancel:` (of `workflow:` or a workflow rule): `on_new_commit` and `on_job_failure`,
/// with GitLab's values. Accepted for compatibility: a local run cancels nothing.
pub fn auto_cancel(field: &Field) -> Result<(), PipelineError> {
    field.check_keys(&["on_new_commit", "on_job_failure"])?;
    let allowed =
        [("on_new_commit", &["conservative", "interruptible", "none"][..]), ("on_job_failure", &["all", "none"])];
    for (key, values) in allowed {
        if let Some(f) = field.get(key)? {
            let value = f.string()?;
            if !values.contains(&value.as_str()) {
                return Err(f.error(format!("unknown value {value:?} (use {})", values.join(", "))));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::Path;
    use std::rc::Rc;

    use crate::pipeline::parse::yaml;

    /// The value of `k:` in `text`, as a field keyed `job.k`.
    pub(in crate::pipeline::parse) fn with_field<T>(text: &str, f: impl FnOnce(&Field) -> T) -> T {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        let root = yaml::load(text, &file).unwrap();
        let Value::Map(map) = &root.value else { panic!("not a map") };
        let entry = map.get("k").unwrap();
        f(&Field::entry("job", entry))
    }

    pub(in crate::pipeline::parse) fn err<T: std::fmt::Debug>(
        text: &str,
        read: impl FnOnce(&Field) -> Result<T, PipelineError>,
    ) -> PipelineError {
        with_field(text, |f| read(f).expect_err(text))
    }

    #[test]
    fn scripts() {
        assert_eq!(with_field("k: echo hi", script).unwrap(), ["echo hi"]);
        assert_eq!(with_field("k: [a, b]", script).unwrap(), ["a", "b"]);
        assert_eq!(with_field("k:\n  - a\n  - [b, [c]]\n  - d\n", script).unwrap(), ["a", "b", "c", "d"]);
        assert_eq!(with_field("k: |\n  multi\n  line\n", script).unwrap(), ["multi\nline\n"]);
        assert_eq!(with_field("k: []", script).unwrap(), Vec::<String>::new());
        let e = err("k:\n  - ok\n  - true\n", script);
        assert_eq!((e.line, e.key.as_str()), (Some(3), "job.k[1]"));
        assert_eq!(e.message, "expected a string, found a boolean (quote it)");
        let e = err("k: {a: 1}", script);
        assert_eq!(e.to_string(), "ci.yml:1: job.k: expected a string or a list of strings, found a map");
        let e = err("k:\n  -\n", script);
        assert_eq!(e.message, "empty script line");
        let e = err("k: [[a, {b: c}]]", script);
        assert_eq!(e.key, "job.k[0][1]");
        let deep = format!("k: {}a{}", "[".repeat(12), "]".repeat(12));
        assert!(err(&deep, script).message.contains("nested too deeply"));
    }

    #[test]
    fn variable_forms() {
        let vars = with_field(
            "k:\n  S: text\n  N: 10\n  F: 1.10\n  B: true\n  Y: yes\n  E: ''\n  \
             M: {value: v, description: d}\n  D: {description: only}\n  R: {value: $X-$$Y, expand: false}\n  \
             O: {value: b, options: [a, b]}\n",
            variables,
        )
        .unwrap();
        let pairs: Vec<(&str, &str)> = vars.iter().map(|v| (v.name.as_str(), v.value.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("S", "text"),
                ("N", "10"),
                ("F", "1.1"),
                ("B", "true"),
                ("Y", "true"),
                ("E", ""),
                ("M", "v"),
                ("D", ""),
                ("R", "$$X-$$$$Y"),
                ("O", "b")
            ]
        );
        let cases = [
            ("k: [A]", 1, "job.k", "expected a map of variable names"),
            ("k:\n  A:\n", 2, "job.k.A", "expected a string, a number"),
            ("k:\n  A: [1]\n", 2, "job.k.A", "expected a string, a number"),
            ("k:\n  A: {value: 1, secret: x}\n", 2, "job.k.A.secret", "unknown key (accepted: value, description"),
            ("k:\n  A: {value: [1]}\n", 2, "job.k.A.value", "expected a string"),
            ("k:\n  A: {value: c, options: [a, b]}\n", 2, "job.k.A", "not one of the options"),
            ("k:\n  A: {value: c, expand: 1}\n", 2, "job.k.A.expand", "expected true or false"),
            ("k:\n  A B: x\n", 2, "job.k.A B", "invalid variable name"),
        ];
        for (text, line, key, want) in cases {
            let e = err(text, variables);
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn services_take_docker_options_and_pull_policies() {
        let list = with_field(
            "k: [redis:7, {name: pg, docker: {user: '999', platform: linux/arm64}, pull_policy: never}]",
            services,
        )
        .unwrap();
        assert_eq!(list[0], Service { name: "redis:7".into(), ..Service::default() });
        assert_eq!((list[1].user.as_deref(), list[1].platform.as_deref()), (Some("999"), Some("linux/arm64")));
        assert_eq!(list[1].pull_policy, [PullPolicy::Never]);
        let e = err("k: [{name: pg, docker: {privileged: true}}]", services);
        assert_eq!(e.key, "job.k[0].docker.privileged", "{e}");
    }

    #[test]
    fn images() {
        let i = with_field("k: alpine:3", image).unwrap();
        assert_eq!(i, Image { name: "alpine:3".into(), ..Image::default() });
        let i = with_field("k: {name: x, entrypoint: ['']}", image).unwrap();
        assert_eq!(i.entrypoint, Some(vec![]));
        let i = with_field("k: {name: x, entrypoint: [/bin/sh, -c], pull_policy: always}", image).unwrap();
        assert_eq!(i.entrypoint, Some(vec!["/bin/sh".into(), "-c".into()]));
        let i = with_field("k: {name: x, docker: {user: '1234', platform: linux/arm64}}", image).unwrap();
        assert_eq!((i.user.as_deref(), i.platform.as_deref()), (Some("1234"), Some("linux/arm64")));
        let i =
            with_field("k: {name: x, pull_policy: [never, if-not-present], kubernetes: {user: 1000}}", image).unwrap();
        assert_eq!(i.pull_policy, [PullPolicy::Never, PullPolicy::IfNotPresent]);
        let i = with_field("k: {name: x, pull_policy: always}", image).unwrap();
        assert_eq!(i.pull_policy, [PullPolicy::Always]);
        let long = "a".repeat(65);
        let too_long = format!("k: {{name: x, docker: {{platform: {long}}}}}");
        let cases = [
            (too_long.as_str(), "job.k.docker.platform", "longer than 64 characters"),
            ("k: {name: x, pull_policy: sometimes}", "job.k.pull_policy", "unknown pull policy \"sometimes\""),
            ("k: {name: x, pull_policy: [always, 3]}", "job.k.pull_policy[1]", "expected a string"),
            ("k: {name: x, pull_policy: []}", "job.k.pull_policy", "no pull policy"),
            ("k: {name: x, kubernetes: {uid: 1}}", "job.k.kubernetes.uid", "unknown key"),
            ("k: {name: x, docker: {user: ''}}", "job.k.docker.user", "empty string"),
            ("k: {name: x, docker: {user: 1234}}", "job.k.docker.user", "expected a user name or uid"),
            ("k: {name: x, docker: {arch: arm}}", "job.k.docker.arch", "unknown key"),
            ("k: 3", "job.k", "expected an image name or {name, entrypoint}, found a number"),
            ("k: ''", "job.k", "expected an image name, found an empty string"),
            ("k: {entrypoint: [a]}", "job.k", "missing `name`"),
            ("k: {name: x, entrypoint: sh}", "job.k.entrypoint", "expected a list of strings"),
            ("k: {name: x, tag: y}", "job.k.tag", "unknown key"),
        ];
        for (text, key, want) in cases {
            let e = err(text, image);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn service_forms() {
        let s = with_field(
            "k:\n  - postgres:16\n  - name: redis\n    alias: cache,kv\n    command: [redis-server, --port, '6380']\n    \
             entrypoint: ['']\n    variables: {A: 1}\n",
            services,
        )
        .unwrap();
        assert_eq!(s[0], Service { name: "postgres:16".into(), ..Service::default() });
        assert_eq!(s[1].alias.as_deref(), Some("cache,kv"));
        assert_eq!(s[1].command, Some(vec!["redis-server".into(), "--port".into(), "6380".into()]));
        assert_eq!(s[1].entrypoint, Some(vec![]));
        assert_eq!(s[1].variables, [Variable { name: "A".into(), value: "1".into() }]);
        let e = err("k: postgres", services);
        assert_eq!(e.message, "expected a list of services, found a string");
        let e = err("k:\n  - name: a\n    aliases: b\n", services);
        assert_eq!((e.line, e.key.as_str()), (Some(3), "job.k[0].aliases"));
        let e = err("k:\n  - {alias: b}\n", services);
        assert_eq!((e.line, e.message.as_str()), (Some(2), "missing `name`"));
    }

    #[test]
    fn artifact_forms() {
        let a = with_field(
            "k:\n  paths: [dist/, '*.log']\n  exclude: [dist/tmp]\n  when: always\n  expire_in: 1 week\n  \
             name: x\n  untracked: false\n  reports: {junit: r.xml}\n",
            artifacts,
        )
        .unwrap();
        assert_eq!(
            a,
            Artifacts {
                paths: vec!["dist/".into(), "*.log".into()],
                exclude: vec!["dist/tmp".into()],
                when: ArtifactsWhen::Always,
                expire_in: Some("1 week".into()),
                dotenv: vec![],
                notes: vec![],
                untracked: false,
                reports: vec!["r.xml".into()],
            }
        );
        let a = with_field("k: {paths: [a], untracked: true, expose_as: 'the app'}", artifacts).unwrap();
        assert!(a.untracked && a.notes.is_empty());
        assert!(!with_field("k: {paths: [a], untracked: false}", artifacts).unwrap().untracked);
        let a = with_field(
            "k:\n  reports:\n    junit: [a.xml, 'b/*.xml']\n    coverage_report: {coverage_format: cobertura, path: c.xml}\n    \
             dotenv: d.env\n",
            artifacts,
        )
        .unwrap();
        assert_eq!(a.reports, ["a.xml", "b/*.xml", "c.xml", "d.env"]);
        assert_eq!(a.dotenv, ["d.env"]);
        let e = err("k: {reports: {coverage_report: {coverage_format: cobertura}}}", artifacts);
        assert_eq!((e.key.as_str(), e.message.as_str()), ("job.k.reports.coverage_report", "missing `path`"));
        let e = err("k: {reports: {junit: 3}}", artifacts);
        assert_eq!(e.key, "job.k.reports.junit");
        let a = with_field("k: {reports: {dotenv: x.env}}", artifacts).unwrap();
        assert!(a.paths.is_empty());
        assert_eq!(a.dotenv, ["x.env"]);
        let a = with_field("k: {reports: {dotenv: [a.env, b.env], junit: r.xml}}", artifacts).unwrap();
        assert_eq!(a.dotenv, ["a.env", "b.env"]);
        assert_eq!(a.when, ArtifactsWhen::OnSuccess);
        let e = err("k: {paths: dist}", artifacts);
        assert_eq!(e.key, "job.k.paths");
        let e = err("k: {paths: [a], expire_in: soon}", artifacts);
        assert_eq!(e.key, "job.k.expire_in");
        assert!(e.message.contains("invalid duration \"soon\""), "{e}");
        assert_eq!(with_field("k: {expire_in: never}", artifacts).unwrap().expire_in.as_deref(), Some("never"));
        let e = err("k: {when: never}", artifacts);
        assert!(e.message.contains("use on_success, on_failure or always"), "{e}");
        let e = err("k: {path: [a]}", artifacts);
        assert_eq!(e.key, "job.k.path");
        assert!(e.message.contains("accepted: paths, exclude, when, expire_in"), "{e}");
    }

    #[test]
    fn when_values() {
        for (text, want) in [
            ("on_success", When::OnSuccess),
            ("on_failure", When::OnFailure),
            ("always", When::Always),
            ("manual", When::Manual),
            ("never", When::Never),
        ] {
            assert_eq!(with_field(&format!("k: {text}"), |f| when(f, WhenIn::Job)).unwrap(), want);
        }
        assert!(err("k: delayed", |f| when(f, WhenIn::Job)).message.contains("`when: delayed` is not supported"));
        assert!(err("k: sometimes", |f| when(f, WhenIn::Job)).message.contains("unknown value \"sometimes\""));
        assert!(err("k: manual", |f| when(f, WhenIn::WorkflowRule)).message.contains("workflow rules take"));
        assert_eq!(with_field("k: never", |f| when(f, WhenIn::WorkflowRule)).unwrap(), When::Never);
        assert!(err("k: true", |f| when(f, WhenIn::Job)).message.contains("expected a string"));
    }

    #[test]
    fn allow_failure_forms() {
        assert_eq!(with_field("k: true", allow_failure).unwrap(), AllowFailure::Yes);
        assert_eq!(with_field("k: false", allow_failure).unwrap(), AllowFailure::No);
        assert_eq!(with_field("k: {exit_codes: 137}", allow_failure).unwrap(), AllowFailure::ExitCodes(vec![137]));
        assert_eq!(with_field("k: {exit_codes: [1, 2]}", allow_failure).unwrap(), AllowFailure::ExitCodes(vec![1, 2]));
        assert!(err("k: maybe", allow_failure).message.contains("expected true, false or {exit_codes"));
        assert!(err("k: {exit_codes: [a]}", allow_failure).message.contains("expected a whole number"));
        assert!(err("k: {exit_codes: 99999999999}", allow_failure).message.contains("out of range"));
        assert!(err("k: {}", allow_failure).message.contains("missing `exit_codes`"));
        assert_eq!(err("k: {codes: 1}", allow_failure).key, "job.k.codes");
    }

    #[test]
    fn timeouts() {
        assert_eq!(with_field("k: 1h 30m", timeout).unwrap(), Duration::from_secs(5400));
        assert_eq!(with_field("k: 3600", timeout).unwrap(), Duration::from_secs(3600));
        assert_eq!(with_field("k: '3600'", timeout).unwrap(), Duration::from_secs(3600));
        assert!(err("k: 0", timeout).message.contains("more than zero"));
        assert!(err("k: soon", timeout).message.contains("invalid duration \"soon\""));
        assert!(err("k: [1h]", timeout).message.contains("expected a duration"));
    }

    #[test]
    fn check_keys_lists_the_accepted_ones() {
        let e = err("k: {a: 1, c: 2}", |f| f.check_keys(&["a", "b"]));
        assert_eq!(e.to_string(), "ci.yml:1: job.k.c: unknown key (accepted: a, b)");
    }
}
