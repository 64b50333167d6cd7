//! `include:` as GitLab expands it (`Gitlab::Ci::Config::External::Mapper`), in its order: each
//! entry normalized (a string is a local path or a URL, after its variables are expanded), kept
//! or dropped by its `rules`, a wildcard `local` path expanded against the project's files, the
//! variables of every other value expanded, then the file read and its own includes expanded
//! (depth first), the including file merged over what it includes. Pure: files are read only
//! through the [`Sources`] the caller gives; the variables are the ones GitLab lets `include`
//! see (project, pipeline and predefined ones, never the file's own `variables:`).
//!
//! Limits as GitLab's: 150 included files per pipeline, nested ones counted. The same file may
//! be included more than once (the last time wins in the merge); a file that includes itself,
//! directly or not, is the loop GitLab rejects (there: "Maximum of 150 nested includes").

use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::Digest;

use super::component::ComponentContext;
use super::compose::merge_maps;
use super::inputs::{self, Given};
use super::read::Field;
use super::yaml::{self, Entry, Map, Node, Value};
use crate::pipeline::error::PipelineError;
use crate::pipeline::variables;

/// Reads a file of the project by its full path (the real file system in `load`, a table in tests).
pub type Read<'r> = &'r dyn Fn(&Path) -> std::io::Result<String>;

/// GitLab's default limit on included files per pipeline (`ci_max_includes`).
pub const MAX_INCLUDES: usize = 150;

/// What `include:` can reach, given by the caller.
pub struct Sources<'a> {
    /// The project root: `include: local` paths are relative to it.
    pub project: &'a Path,
    pub read: Read<'a>,
    /// The project's files, relative and `/`-separated: for wildcard paths and `rules: exists`.
    pub files: &'a [String],
    /// The variables `include` may use: project (`--env`), pipeline and predefined ones.
    pub variables: &'a dyn Fn(&str) -> Option<String>,
    /// `glci run --input name=value`: the main file's inputs.
    pub inputs: &'a [(String, String)],
    /// Fetches what is not in the work tree (`remote`, `template`, `project`, `component`);
    /// `None`: such includes are errors.
    pub fetch: Option<Fetch<'a>>,
    /// For `rules: changes`: the paths changed against the run's base (`None`) or a
    /// `compare_to` ref; `Ok(None)` when nothing is known (every `changes` holds).
    pub changed: Changed<'a>,
}

/// See [`Sources::changed`].
pub type Changed<'r> = &'r dyn Fn(Option<&str>) -> Result<Option<Vec<String>>, String>;

/// Nothing is known about changes: every `rules: changes` holds (outside git, as on GitLab).
pub fn nothing_known(_: Option<&str>) -> Result<Option<Vec<String>>, String> {
    Ok(None)
}

/// Fetches a file named by a non-local include; the error is one line for the user.
pub type Fetch<'r> = &'r dyn Fn(&Source) -> Result<Fetched, String>;

/// A fetched file.
pub struct Fetched {
    pub text: String,
    /// What errors in it are reported against (its URL, or `group/project@ref:path`).
    pub name: String,
    /// The project and ref it came from, for its own `local:` includes (`project`, `component`);
    /// `None` for remote files and templates, whose `local:` includes read this project.
    pub project: Option<(String, String)>,
    /// For `include: component`: what `$[[ component.* ]]` reads.
    pub component: Option<ComponentContext>,
}

/// Where one include entry points, its variables expanded.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Project-relative, no leading `/`.
    Local(String),
    Remote(String),
    Template(String),
    Project {
        project: String,
        reference: Option<String>,
        file: String,
    },
    /// `<host>/<group>/<project>/<name>@<version>`.
    Component(String),
    /// The files of a project at a ref, for wildcard `local:` paths and `rules: exists` in a
    /// file of that project: fetched as one path per line.
    Files {
        project: String,
        reference: String,
    },
}

/// The file whose includes are being expanded: of this project (`local` is its path when it
/// was included as a local file), or of another project at a ref.
#[derive(Clone, Debug)]
enum Origin {
    Here { local: Option<String> },
    Project { project: String, reference: String },
}

/// One include entry, where it was written.
struct Located<'n> {
    source: Source,
    node: &'n Node,
    line: usize,
    key: String,
    /// Its `inputs:`, when it has them.
    inputs: Option<Field<'n>>,
    /// `integrity: sha256-<base64>` of a `remote` file.
    integrity: Option<String>,
}

/// The top-level map of `root` (the main file) with every include merged in, depth first:
/// included files in order, then the including file over them.
pub fn includes(root: Node, sources: &Sources) -> Result<Map, PipelineError> {
    if let Value::Null = root.value {
        return Err(PipelineError::whole_file(&root.file, "the file is empty (no jobs)"));
    }
    let mut state = Expander { sources, count: 0, stack: vec![root.file.to_path_buf()] };
    state.expand(root, &Origin::Here { local: None })
}

struct Expander<'a> {
    sources: &'a Sources<'a>,
    count: usize,
    /// Files being expanded, outermost first, to report include loops.
    stack: Vec<PathBuf>,
}

impl Expander<'_> {
    /// `node`'s map with its includes merged in.
    fn expand(&mut self, node: Node, origin: &Origin) -> Result<Map, PipelineError> {
        let mut map = match node.value {
            Value::Map(map) => map,
            Value::Null => Map::default(),
            ref other => {
                let message = format!("the top level must be a map of keys and jobs, found {}", other.kind());
                return Err(PipelineError::new(&node.file, node.line, "", message));
            }
        };
        let Some(include) = map.remove("include") else {
            return Ok(map);
        };
        let mut merged = Map::default();
        for located in self.locations(&include, origin)? {
            let at = |message: String| PipelineError::new(&located.node.file, located.line, &located.key, message);
            let mut context = None;
            let (text, id, next) = match &located.source {
                Source::Local(path) => {
                    let full = self.sources.project.join(path);
                    let text = (self.sources.read)(&full).map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => at(format!("local file `{path}` does not exist")),
                        _ => at(format!("cannot read included file {path}: {e}")),
                    });
                    (text, full, Origin::Here { local: Some(path.clone()) })
                }
                other => {
                    let Some(fetch) = self.sources.fetch else {
                        return Err(at(format!("{}: no GitLab instance to fetch it from", describe(other))));
                    };
                    let fetched = fetch(other).map_err(|m| at(format!("{}: {m}", describe(other))));
                    let next = match fetched.as_ref().ok().and_then(|f| f.project.clone()) {
                        Some((project, reference)) => Origin::Project { project, reference },
                        None => Origin::Here { local: None },
                    };
                    let id =
                        PathBuf::from(fetched.as_ref().map(|f| f.name.clone()).unwrap_or_else(|_| describe(other)));
                    context = fetched.as_ref().ok().and_then(|f| f.component.clone());
                    (fetched.map(|f| f.text), id, next)
                }
            };
            if let Some(start) = self.stack.iter().position(|f| *f == id) {
                let chain: Vec<String> =
                    self.stack[start..].iter().chain([&id]).map(|f| f.display().to_string()).collect();
                return Err(at(format!("include loop: {}", chain.join(" → "))));
            }
            self.count += 1;
            if self.count > MAX_INCLUDES {
                return Err(at(format!("Maximum of {MAX_INCLUDES} nested includes are allowed")));
            }
            let text = text?;
            if let Some(want) = &located.integrity {
                let have = format!("sha256-{}", crate::encoding::base64_encode(&sha2::Sha256::digest(text.as_bytes())));
                if have != *want {
                    return Err(at(format!(
                        "{}: integrity check failed: the file is {have}",
                        describe(&located.source)
                    )));
                }
            }
            let file: Rc<Path> = Rc::from(id.as_path());
            let given = Given::Include(located.inputs.clone(), &located.node.file, located.line, &located.key);
            let included = with_inputs_for(&text, &file, given, self.sources.variables, context.as_ref())?;
            self.stack.push(id);
            let expanded = self.expand(included, &next)?;
            self.stack.pop();
            merged = merge_maps(merged, expanded);
        }
        Ok(merge_maps(merged, map))
    }

    /// The entries of `include:` that its rules keep, wildcards expanded, in order.
    fn locations<'n>(&self, include: &'n Entry, origin: &Origin) -> Result<Vec<Located<'n>>, PipelineError> {
        let field = Field::entry("", include);
        let items: Vec<Field<'n>> = match &include.value.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, node)| Field { node, key: format!("include[{i}]"), line: node.line })
                .collect(),
            _ => vec![field],
        };
        let mut out = Vec::new();
        for item in items {
            out.extend(self.entry(item, origin)?);
        }
        Ok(out)
    }

    fn entry<'n>(&self, item: Field<'n>, origin: &Origin) -> Result<Vec<Located<'n>>, PipelineError> {
        let vars = self.sources.variables;
        let expand = |text: &str| variables::expand(text, vars);
        let inputs = match &item.node.value {
            Value::Map(_) => item.get("inputs")?,
            _ => None,
        };
        let located = |source: Source, at: &Field<'n>| Located {
            source,
            node: at.node,
            line: at.line,
            key: at.key.clone(),
            inputs: inputs.clone(),
            integrity: None,
        };
        match &item.node.value {
            // GitLab expands a string entry's variables first, then tells a URL from a path.
            Value::Str(text) => {
                let text = expand(text);
                if is_url(&text) {
                    return Ok(vec![located(Source::Remote(text), &item)]);
                }
                return self
                    .local(&item, &text, origin, &expand)
                    .map(|v| v.into_iter().map(|s| located(s, &item)).collect());
            }
            Value::Map(_) => {}
            other => {
                return Err(
                    item.error(format!("expected a path or a map such as `{{local: path}}`, found {}", other.kind()))
                )
            }
        };
        item.check_keys(&[
            "local",
            "remote",
            "template",
            "project",
            "ref",
            "file",
            "component",
            "rules",
            "inputs",
            "cache",
            "integrity",
        ])?;
        if !self.rules_keep(&item, origin)? {
            return Ok(Vec::new());
        }
        let kinds: Vec<&str> = ["local", "remote", "template", "project", "component"]
            .into_iter()
            .filter(|k| item.get(k).ok().flatten().is_some())
            .collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => {
                return Err(item.error("an include needs one of `local`, `remote`, `template`, `project`, `component`"))
            }
            many => return Err(item.error(format!("an include takes only one of `{}`", many.join("`, `")))),
        };
        let value = |key: &str| -> Result<Field<'n>, PipelineError> {
            item.get(key)?.ok_or_else(|| item.error(format!("missing `{key}`")))
        };
        let string = |key: &str| -> Result<String, PipelineError> {
            let field = value(key)?;
            match &field.node.value {
                Value::Str(s) if !s.trim().is_empty() => Ok(s.clone()),
                _ => Err(field.expected("a non-empty string")),
            }
        };
        let sources: Vec<Source> = match kind {
            "local" => {
                let field = value("local")?;
                let path = string("local")?;
                return self
                    .local(&field, &path, origin, &expand)
                    .map(|v| v.into_iter().map(|s| located(s, &field)).collect());
            }
            "remote" => vec![Source::Remote(expand(&string("remote")?))],
            "template" => vec![Source::Template(expand(&string("template")?))],
            "component" => vec![Source::Component(expand(&string("component")?))],
            _ => {
                let project = expand(&string("project")?);
                let reference = item.get("ref")?.map(|_| string("ref")).transpose()?.map(|r| expand(&r));
                let files = value("file")?;
                let files = match &files.node.value {
                    Value::Str(s) => vec![s.clone()],
                    _ => files.strings()?,
                };
                files
                    .iter()
                    .map(|f| Source::Project {
                        project: project.clone(),
                        reference: reference.clone(),
                        file: expand(f),
                    })
                    .collect()
            }
        };
        let at = value(kind)?;
        let integrity = match item.get("integrity")? {
            Some(field) if kind != "remote" => return Err(field.error("`integrity` is for `remote` includes only")),
            Some(field) => match field.string()? {
                sri if sri.starts_with("sha256-") => Some(sri),
                _ => return Err(field.error("expected `sha256-<base64 digest>`")),
            },
            None => None,
        };
        Ok(sources.into_iter().map(|s| Located { integrity: integrity.clone(), ..located(s, &at) }).collect())
    }

    /// A `local` path: leading `/` dropped; a wildcard expanded against the project's files (as
    /// written: GitLab expands a map entry's variables after its wildcard), else its variables.
    fn local(
        &self,
        field: &Field,
        path: &str,
        origin: &Origin,
        expand: &dyn Fn(&str) -> String,
    ) -> Result<Vec<Source>, PipelineError> {
        let relative = path.trim_start_matches('/');
        let including = match origin {
            Origin::Here { local } => local.as_deref(),
            // GitLab searches the including file's project at its ref for the wildcard.
            Origin::Project { project, reference } if relative.contains('*') => {
                let pattern = WildcardPath::new(relative);
                let mut matched: Vec<String> =
                    self.project_files(project, reference, field)?.into_iter().filter(|f| pattern.matches(f)).collect();
                matched.sort();
                let reference = Some(reference.clone());
                return Ok(matched
                    .into_iter()
                    .map(|file| Source::Project { project: project.clone(), reference: reference.clone(), file })
                    .collect());
            }
            Origin::Project { project, reference } => {
                let file = expand(relative).trim_start_matches('/').to_owned();
                let reference = Some(reference.clone());
                return Ok(vec![Source::Project { project: project.clone(), reference, file }]);
            }
        };
        if relative.contains('*') {
            let pattern = WildcardPath::new(relative);
            let mut matched: Vec<&String> =
                self.sources.files.iter().filter(|f| pattern.matches(f) && Some(f.as_str()) != including).collect();
            matched.sort();
            return Ok(matched.into_iter().map(|f| Source::Local(f.clone())).collect());
        }
        let expanded = expand(relative);
        let relative = expanded.trim_start_matches('/');
        if relative.is_empty() {
            return Err(field.error("empty include path"));
        }
        if relative.split('/').any(|s| s == "..") {
            return Err(field.error(format!("{relative}: a local include cannot leave the project (`..`)")));
        }
        Ok(vec![Source::Local(relative.to_owned())])
    }

    /// The files of `project` at `reference`, through the fetcher (errors at `field`).
    fn project_files(&self, project: &str, reference: &str, field: &Field) -> Result<Vec<String>, PipelineError> {
        let source = Source::Files { project: project.to_owned(), reference: reference.to_owned() };
        let Some(fetch) = self.sources.fetch else {
            return Err(field.error(format!("{}: no GitLab instance to fetch it from", describe(&source))));
        };
        let fetched = fetch(&source).map_err(|m| field.error(format!("{}: {m}", describe(&source))))?;
        Ok(fetched.text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }
}

/// A file's content with its `spec: inputs` (if any) filled in from `given`.
pub fn with_inputs(
    text: &str,
    file: &Rc<Path>,
    given: Given,
    variables: &dyn Fn(&str) -> Option<String>,
) -> Result<Node, PipelineError> {
    with_inputs_for(text, file, given, variables, None)
}

/// [`with_inputs`] for a file that may be a component's template (`component`: its context).
pub fn with_inputs_for(
    text: &str,
    file: &Rc<Path>,
    given: Given,
    variables: &dyn Fn(&str) -> Option<String>,
    component: Option<&ComponentContext>,
) -> Result<Node, PipelineError> {
    let (spec, content) = inputs::split(yaml::load_all(text, file)?, file)?;
    let values = inputs::resolve(spec.as_ref(), given)?;
    let content = content.unwrap_or_else(|| Node { value: Value::Null, file: Rc::clone(file), line: 1 });
    match spec {
        Some(spec) => inputs::interpolate_with(content, &spec, &values, component, variables),
        None => Ok(content),
    }
}

fn is_url(text: &str) -> bool {
    text.starts_with("https://") || text.starts_with("http://")
}

fn describe(source: &Source) -> String {
    match source {
        Source::Local(path) => format!("local `{path}`"),
        Source::Remote(url) => format!("remote `{url}`"),
        Source::Template(name) => format!("template `{name}`"),
        Source::Project { project, file, .. } => format!("project `{project}` file `{file}`"),
        Source::Component(address) => format!("component `{address}`"),
        Source::Files { project, reference } => format!("the files of project `{project}` at `{reference}`"),
    }
}

/// GitLab's wildcard paths (`Repository#search_files_by_wildcard_path`): the whole path is
/// literal but for `**` (any characters, `/` included) and `*` (any but `/`), anchored at
/// both ends. So `configs/*.yml` is the files directly in `configs`, `configs/**.yml` those at
/// any depth below it, `configs/**/*.yml` only those in its subdirectories.
struct WildcardPath(regex::Regex);

impl WildcardPath {
    fn new(pattern: &str) -> WildcardPath {
        let escaped = regex::escape(pattern);
        let translated = escaped.replace(r"\*\*", ".*?").replace(r"\*", "([^/])*?");
        WildcardPath(regex::Regex::new(&format!("^{translated}$")).expect("an escaped pattern is a valid regex"))
    }

    fn matches(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

#[path = "include_rules.rs"]
mod entry_rules;

#[cfg(test)]
#[path = "include_tests.rs"]
mod tests;
