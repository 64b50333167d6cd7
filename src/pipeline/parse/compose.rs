//! The tree-level steps GitLab takes before reading any key, in GitLab's order
//! (`Gitlab::Ci::Config#build_config`): `include: local` files deep-merged under the file that
//! includes them, then `extends`, then `!reference` tags. Works on [`yaml::Node`] trees so every
//! value keeps the file and line it was written at. Reads included files only through the
//! `read` function it is given; knows no job keys beyond `include` and `extends`.
//!
//! Merging is GitLab's deep merge: maps merge key by key, the later side winning; anything else
//! (lists included) is replaced whole.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::yaml::{self, Entry, Map, Node, Value};
use crate::pipeline::error::PipelineError;

/// Reads an included file (the real file system in `load`, a table in tests).
pub type Read<'r> = &'r dyn Fn(&Path) -> io::Result<String>;

/// GitLab's limit on included files per pipeline.
const MAX_INCLUDES: usize = 150;
/// GitLab's limit on `extends` and `!reference` nesting.
const MAX_NESTING: usize = 10;

fn error(node: &Node, line: usize, key: &str, message: impl Into<String>) -> PipelineError {
    PipelineError::new(&node.file, line, key, message)
}

/// The top-level map of `root` (the main file) with every `include: local` merged in, depth
/// first: included files in order, then the including file over them.
pub fn includes(root: Node, project: &Path, read: Read) -> Result<Map, PipelineError> {
    let mut state = Includes { project, read, count: 0, stack: vec![root.file.to_path_buf()] };
    match root.value {
        Value::Null => Err(PipelineError::whole_file(&root.file, "the file is empty (no jobs)")),
        _ => state.expand(root),
    }
}

struct Includes<'a> {
    project: &'a Path,
    read: Read<'a>,
    count: usize,
    /// Files being expanded, outermost first, to report include cycles.
    stack: Vec<PathBuf>,
}

impl Includes<'_> {
    fn expand(&mut self, node: Node) -> Result<Map, PipelineError> {
        let mut map = match node.value {
            Value::Map(map) => map,
            Value::Null => Map::default(),
            ref other => {
                let message = format!("the top level must be a map of keys and jobs, found {}", other.kind());
                return Err(error(&node, node.line, "", message));
            }
        };
        let Some(include) = map.remove("include") else {
            return Ok(map);
        };
        let mut merged = Map::default();
        for (path, line, key) in local_paths(&include)? {
            let full = self.project.join(&path);
            let at = |message: String| error(&include.value, line, &key, message);
            if let Some(start) = self.stack.iter().position(|f| *f == full) {
                let cycle: Vec<String> =
                    self.stack[start..].iter().chain([&full]).map(|f| f.display().to_string()).collect();
                return Err(at(format!("include cycle: {}", cycle.join(" → "))));
            }
            self.count += 1;
            if self.count > MAX_INCLUDES {
                return Err(at(format!("more than {MAX_INCLUDES} included files")));
            }
            let text = (self.read)(&full).map_err(|e| at(format!("cannot read included file {path}: {e}")))?;
            let file: Rc<Path> = Rc::from(full.as_path());
            let included = yaml::load(&text, &file)?;
            self.stack.push(full);
            let expanded = self.expand(included)?;
            self.stack.pop();
            merged = merge_maps(merged, expanded);
        }
        Ok(merge_maps(merged, map))
    }
}

/// The local paths named by `include:` (project-relative, leading `/` removed), each with its
/// line and key for errors.
fn local_paths(include: &Entry) -> Result<Vec<(String, usize, String)>, PipelineError> {
    let node = &include.value;
    let items: Vec<(&Node, usize, String)> = match &node.value {
        Value::Seq(items) => items.iter().enumerate().map(|(i, n)| (n, n.line, format!("include[{i}]"))).collect(),
        _ => vec![(node, include.line, "include".to_owned())],
    };
    items.into_iter().map(|(node, line, key)| local_path(node, line, key)).collect()
}

const REMOTE_KINDS: [&str; 5] = ["remote", "project", "template", "component", "file"];

fn local_path(node: &Node, line: usize, key: String) -> Result<(String, usize, String), PipelineError> {
    let offline = "only `include: local` files can be used offline";
    let (path, line, key) = match &node.value {
        Value::Str(s) if s.starts_with("https://") || s.starts_with("http://") => {
            return Err(error(node, line, &key, format!("{s} is a remote include: {offline}")));
        }
        Value::Str(s) => (s.clone(), line, key),
        Value::Map(map) => {
            for entry in map.iter() {
                let key = format!("{key}.{}", entry.key);
                match entry.key.as_str() {
                    "local" => {}
                    k if REMOTE_KINDS.contains(&k) => {
                        return Err(error(
                            node,
                            entry.line,
                            &key,
                            format!("`include: {k}` is not supported: {offline}"),
                        ));
                    }
                    "rules" | "inputs" | "cache" | "integrity" | "ref" => {
                        let message = format!("`include: {}` is not supported", entry.key);
                        return Err(error(node, entry.line, &key, message));
                    }
                    _ => {
                        let message = "unknown key (an include is a path or `{local: path}`)";
                        return Err(error(node, entry.line, &key, message));
                    }
                }
            }
            let entry = map.get("local").ok_or_else(|| {
                error(node, line, &key, format!("expected `local: path` (one of `local`, `remote`, ...): {offline}"))
            })?;
            let key = format!("{key}.local");
            match &entry.value.value {
                Value::Str(s) => (s.clone(), entry.line, key),
                other => return Err(error(node, entry.line, &key, format!("expected a path, found {}", other.kind()))),
            }
        }
        other => {
            let message = format!("expected a path or `{{local: path}}`, found {}", other.kind());
            return Err(error(node, line, &key, message));
        }
    };
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return Err(error(node, line, &key, "empty include path"));
    }
    if relative.contains(['*', '?', '[']) {
        return Err(error(node, line, &key, format!("{path}: wildcard include paths are not supported")));
    }
    Ok((relative.to_owned(), line, key))
}

/// GitLab's deep merge of `over` onto `base`: maps merge key by key, anything else is replaced.
/// The result keeps `over`'s file and line.
pub fn deep_merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => Node { value: Value::Map(merge_maps(b, o)), ..over },
        (_, value) => Node { value, ..over },
    }
}

fn merge_maps(mut base: Map, over: Map) -> Map {
    for entry in over {
        let entry = match base.get(&entry.key) {
            Some(old) if matches!((&old.value.value, &entry.value.value), (Value::Map(_), Value::Map(_))) => {
                Entry { value: deep_merge(old.value.clone(), entry.value), ..entry }
            }
            _ => entry,
        };
        base.insert(entry);
    }
    base
}

/// Resolves `extends` in every top-level map that has it: the parents (resolved first, in the
/// order listed) deep-merged, then the job itself over them.
pub fn extends(map: Map) -> Result<Map, PipelineError> {
    let mut resolved: HashMap<String, Node> = HashMap::new();
    for entry in map.iter() {
        resolve_extends(entry, &map, &mut resolved, &mut Vec::new())?;
    }
    Ok(map
        .into_iter()
        .map(|entry| match resolved.remove(&entry.key) {
            Some(value) => Entry { value, ..entry },
            None => entry,
        })
        .collect())
}

fn resolve_extends(
    entry: &Entry,
    map: &Map,
    resolved: &mut HashMap<String, Node>,
    stack: &mut Vec<String>,
) -> Result<Node, PipelineError> {
    let name = entry.key.as_str();
    if let Some(node) = resolved.get(name) {
        return Ok(node.clone());
    }
    let Value::Map(job) = &entry.value.value else {
        return Ok(entry.value.clone());
    };
    let Some(extends) = job.get("extends") else {
        return Ok(entry.value.clone());
    };
    let key = format!("{name}.extends");
    let at = |message: String| error(&extends.value, extends.line, &key, message);
    if stack.len() >= MAX_NESTING {
        return Err(at(format!("extends nested more than {MAX_NESTING} levels deep")));
    }
    let parents = match &extends.value.value {
        Value::Str(parent) => vec![parent.clone()],
        Value::Seq(items) => items
            .iter()
            .map(|item| match &item.value {
                Value::Str(parent) => Ok(parent.clone()),
                other => Err(at(format!("expected a job name, found {}", other.kind()))),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(at(format!("expected a job name or a list of them, found {}", other.kind()))),
    };
    stack.push(name.to_owned());
    let mut merged = Node { value: Value::Map(Map::default()), ..entry.value.clone() };
    for parent in &parents {
        if let Some(start) = stack.iter().position(|s| s == parent) {
            let cycle: Vec<&str> = stack[start..].iter().map(String::as_str).chain([parent.as_str()]).collect();
            return Err(at(format!("extends cycle: {}", cycle.join(" → "))));
        }
        let parent_entry = match map.get(parent) {
            None => return Err(at(format!("`{name}` extends `{parent}`, which is not defined"))),
            Some(e) if matches!(e.value.value, Value::Map(_)) => e,
            Some(e) => {
                return Err(at(format!("`{name}` extends `{parent}`, which is {}, not a job", e.value.value.kind())));
            }
        };
        let parent_node = resolve_extends(parent_entry, map, resolved, stack)?;
        merged = deep_merge(merged, parent_node);
    }
    stack.pop();
    let node = deep_merge(merged, entry.value.clone());
    resolved.insert(name.to_owned(), node.clone());
    Ok(node)
}

/// Replaces every `!reference [name, key, ...]` by the value it names (itself resolved).
pub fn references(map: Map) -> Result<Map, PipelineError> {
    let root = map.clone();
    map.into_iter()
        .map(|entry| {
            let value = resolve_references(entry.value, &root, &entry.key, &mut Vec::new())?;
            Ok(Entry { value, ..entry })
        })
        .collect()
}

fn resolve_references(node: Node, root: &Map, key: &str, stack: &mut Vec<Vec<String>>) -> Result<Node, PipelineError> {
    match node.value {
        Value::Reference(ref path) => {
            let target = lookup(&node, path, root, key, stack)?;
            stack.push(path.clone());
            let resolved = resolve_references(target, root, key, stack)?;
            stack.pop();
            Ok(resolved)
        }
        Value::Seq(items) => {
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| resolve_references(item, root, &format!("{key}[{i}]"), stack))
                .collect::<Result<_, _>>()?;
            Ok(Node { value: Value::Seq(items), ..node })
        }
        Value::Map(map) => {
            let map = map
                .into_iter()
                .map(|entry| {
                    let value = resolve_references(entry.value, root, &format!("{key}.{}", entry.key), stack)?;
                    Ok(Entry { value, ..entry })
                })
                .collect::<Result<_, _>>()?;
            Ok(Node { value: Value::Map(map), ..node })
        }
        _ => Ok(node),
    }
}

/// The node a reference names; references met on the way are resolved first.
fn lookup(
    reference: &Node,
    path: &[String],
    root: &Map,
    key: &str,
    stack: &mut Vec<Vec<String>>,
) -> Result<Node, PipelineError> {
    let shown = format!("!reference [{}]", path.join(", "));
    let at = |message: String| error(reference, reference.line, key, message);
    if let Some(start) = stack.iter().position(|p| p == path) {
        let cycle: Vec<String> =
            stack[start..].iter().chain([&path.to_vec()]).map(|p| format!("[{}]", p.join(", "))).collect();
        return Err(at(format!("!reference cycle: {}", cycle.join(" → "))));
    }
    if stack.len() >= MAX_NESTING {
        // GitLab allows 10 levels of `!reference`; name the whole chain so it can be cut.
        let chain: Vec<String> = stack.iter().chain([&path.to_vec()]).map(|p| format!("[{}]", p.join(", "))).collect();
        return Err(at(format!("!reference nested more than {MAX_NESTING} levels deep: {}", chain.join(" → "))));
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(at("empty !reference".to_owned()));
    };
    let mut current =
        root.get(first).map(|e| e.value.clone()).ok_or_else(|| at(format!("{shown}: `{first}` is not defined")))?;
    for (depth, step) in rest.iter().enumerate() {
        if let Value::Reference(_) = current.value {
            stack.push(path.to_vec());
            let resolved = resolve_references(current, root, key, stack);
            stack.pop();
            current = resolved?;
        }
        let parent = path[..=depth].join(".");
        current = match &current.value {
            Value::Map(map) => map
                .get(step)
                .map(|e| e.value.clone())
                .ok_or_else(|| at(format!("{shown}: `{parent}` has no key `{step}`")))?,
            other => return Err(at(format!("{shown}: `{parent}` is {}, not a map", other.kind()))),
        };
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MAIN: &str = "/p/.gitlab-ci.yml";

    fn tree(text: &str) -> Node {
        let file: Rc<Path> = Rc::from(Path::new(MAIN));
        yaml::load(text, &file).unwrap()
    }

    fn files(table: &[(&str, &str)]) -> impl Fn(&Path) -> io::Result<String> {
        let table: HashMap<PathBuf, String> =
            table.iter().map(|(p, t)| (Path::new("/p").join(p), t.to_string())).collect();
        move |path: &Path| table.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn compose(text: &str, table: &[(&str, &str)]) -> Result<Map, PipelineError> {
        let read = files(table);
        let map = includes(tree(text), Path::new("/p"), &read)?;
        references(extends(map)?)
    }

    /// The tree as plain text for comparisons: `{k: v, ...}`, `[...]`.
    fn show(node: &Node) -> String {
        match &node.value {
            Value::Map(m) => {
                let inner: Vec<String> = m.iter().map(|e| format!("{}: {}", e.key, show(&e.value))).collect();
                format!("{{{}}}", inner.join(", "))
            }
            Value::Seq(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
            other => other.scalar_string().unwrap_or_else(|| format!("{other:?}")),
        }
    }

    fn job<'m>(map: &'m Map, name: &str) -> &'m Node {
        &map.get(name).unwrap_or_else(|| panic!("no {name}")).value
    }

    #[test]
    fn includes_merge_under_the_main_file() {
        let map = compose(
            "include:\n  - local: ci/a.yml\n  - /ci/b.yml\nvariables:\n  X: main\njob:\n  script: main\n",
            &[
                ("ci/a.yml", "variables:\n  X: a\n  Y: a\njob:\n  script: a\n  stage: build\n.t:\n  image: i\n"),
                ("ci/b.yml", "variables:\n  Y: b\n"),
            ],
        )
        .unwrap();
        assert_eq!(show(job(&map, "variables")), "{X: main, Y: b}");
        assert_eq!(show(job(&map, "job")), "{script: main, stage: build}");
        assert_eq!(show(job(&map, ".t")), "{image: i}");
        assert!(!map.contains("include"));
        // Values keep the file they were written in.
        let stage = match &job(&map, "job").value {
            Value::Map(m) => m.get("stage").cloned().unwrap(),
            _ => panic!(),
        };
        assert_eq!((&*stage.value.file, stage.line), (Path::new("/p/ci/a.yml"), 6));
    }

    #[test]
    fn include_forms() {
        let table = [("x.yml", "x:\n  script: x\n")];
        for text in
            ["include: x.yml\n", "include: /x.yml\n", "include:\n  local: x.yml\n", "include: [{local: /x.yml}]\n"]
        {
            let map = compose(text, &table).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(map.contains("x"), "{text}");
        }
    }

    #[test]
    fn nested_includes_and_cycles() {
        let map = compose("include: a.yml\n", &[("a.yml", "include: b.yml\na: {}\n"), ("b.yml", "b: {}\n")]).unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["b", "a"]);
        let e =
            compose("include: a.yml\n", &[("a.yml", "include: b.yml\n"), ("b.yml", "include: /a.yml\n")]).unwrap_err();
        assert_eq!(e.file, Path::new("/p/b.yml"));
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("include cycle: /p/a.yml → /p/b.yml → /p/a.yml"), "{e}");
        let e = compose("include: .gitlab-ci.yml\n", &[(".gitlab-ci.yml", "")]).unwrap_err();
        assert!(e.message.contains("include cycle"), "{e}");
    }

    #[test]
    fn include_errors() {
        let cases = [
            ("include: https://example.com/ci.yml\n", 1, "include", "remote include"),
            ("include:\n  remote: https://x/y.yml\n", 2, "include.remote", "only `include: local`"),
            (
                "include:\n  - local: a.yml\n  - template: Auto-DevOps.gitlab-ci.yml\n",
                3,
                "include[1].template",
                "offline",
            ),
            ("include:\n  - project: g/p\n    file: x.yml\n", 2, "include[0].project", "not supported"),
            ("include:\n  - component: x/y@1\n", 2, "include[0].component", "not supported"),
            ("include:\n  local: a.yml\n  rules:\n    - if: $X\n", 3, "include.rules", "not supported"),
            ("include:\n  local: a.yml\n  inputs: {}\n", 3, "include.inputs", "not supported"),
            ("include:\n  locale: a.yml\n", 2, "include.locale", "unknown key"),
            ("include: missing.yml\n", 1, "include", "cannot read included file missing.yml"),
            ("include: ci/*.yml\n", 1, "include", "wildcard"),
            ("include: 3\n", 1, "include", "expected a path"),
            ("include: {local: [a]}\n", 1, "include.local", "expected a path"),
            ("include: /\n", 1, "include", "empty include path"),
            ("include: {}\n", 1, "include", "expected `local: path`"),
        ];
        for (text, line, key, want) in cases {
            let e = compose(text, &[("a.yml", "")]).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
        let e = compose("include: a.yml\n", &[("a.yml", "- x\n")]).unwrap_err();
        assert_eq!(e.file, Path::new("/p/a.yml"));
        assert!(e.message.contains("top level must be a map"), "{e}");
        let e = compose("include: a.yml\n", &[("a.yml", "a: [\n")]).unwrap_err();
        assert_eq!(e.file, Path::new("/p/a.yml"));
    }

    #[test]
    fn empty_main_file_is_an_error() {
        let e = compose("# nothing\n", &[]).unwrap_err();
        assert_eq!(e.to_string(), "/p/.gitlab-ci.yml: the file is empty (no jobs)");
    }

    #[test]
    fn too_many_includes() {
        let e = compose("include: a.yml\n", &[("a.yml", "include: [b.yml, b.yml]\n"), ("b.yml", "")]);
        assert!(e.is_ok(), "the same file twice, not nested, is fine");
        let many = format!("include: [{}]\n", vec!["b.yml"; 151].join(", "));
        let e = compose(&many, &[("b.yml", "")]).unwrap_err();
        assert!(e.message.contains("more than 150"), "{e}");
    }

    #[test]
    fn deep_merge_rules() {
        let base = tree("a: 1\nm: {x: 1, y: [1, 2], n: {p: 1}}\nl: [1]\ns: {k: v}\n");
        let over = tree("m: {y: [3], n: {q: 2}}\nl: [2]\ns: str\nb: 2\n");
        let merged = deep_merge(base, over);
        assert_eq!(show(&merged), "{a: 1, m: {x: 1, y: [3], n: {p: 1, q: 2}}, l: [2], s: str, b: 2}");
        let merged = deep_merge(tree("s: str\n"), tree("s: {k: v}\n"));
        assert_eq!(show(&merged), "{s: {k: v}}");
    }

    #[test]
    fn extends_multi_level_and_lists() {
        let map = compose(
            ".base:\n  image: alpine\n  variables: {A: base, B: base}\n  script: [base]\n\
             .mid:\n  extends: .base\n  variables: {B: mid}\n\
             .other:\n  tags: [x]\n  script: [other]\n\
             job:\n  extends: [.mid, .other]\n  variables: {C: job}\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            show(job(&map, "job")),
            "{image: alpine, variables: {A: base, B: mid, C: job}, script: [other], extends: [.mid, .other], tags: [x]}"
        );
        assert_eq!(map.get("job").map(|e| e.line), Some(11));
        // A visible job can be extended too.
        let map = compose("a:\n  script: [a]\nb:\n  extends: a\n  stage: x\n", &[]).unwrap();
        assert_eq!(show(job(&map, "b")), "{script: [a], extends: a, stage: x}");
    }

    #[test]
    fn extends_errors_name_the_job() {
        let cases = [
            ("job:\n  extends: .nope\n", 2, "job.extends", "`job` extends `.nope`, which is not defined"),
            ("a:\n  extends: b\nb:\n  extends: a\n", 4, "b.extends", "extends cycle: a → b → a"),
            ("a:\n  extends: [a]\n", 2, "a.extends", "extends cycle: a → a"),
            (".v: [1]\njob:\n  extends: .v\n", 3, "job.extends", "which is a list, not a job"),
            ("job:\n  extends: {a: 1}\n", 2, "job.extends", "expected a job name or a list"),
            ("job:\n  extends: [1]\n", 2, "job.extends", "expected a job name, found a number"),
        ];
        for (text, line, key, want) in cases {
            let e = compose(text, &[]).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
        let chain: String =
            (0..12).map(|i| format!(".j{i}:\n  extends: .j{}\n", i + 1)).collect::<String>() + ".j12: {}\n";
        let e = compose(&chain, &[]).unwrap_err();
        assert!(e.message.contains("nested more than 10"), "{e}");
    }

    #[test]
    fn references_resolve_after_extends() {
        let map = compose(
            ".setup:\n  script:\n    - echo setup\n    - echo more\n\
             .vars:\n  variables: {A: a}\n\
             .ext:\n  extends: .setup\n\
             job:\n  script:\n    - !reference [.setup, script]\n    - echo job\n\
               \x20 variables: !reference [.vars, variables]\n\
               \x20 after_script: !reference [.ext, script]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            show(job(&map, "job")),
            "{script: [[echo setup, echo more], echo job], variables: {A: a}, after_script: [echo setup, echo more]}"
        );
    }

    #[test]
    fn nested_references() {
        let map = compose(
            ".a:\n  script: [a]\n.b:\n  script: [!reference [.a, script], b]\n\
             .c:\n  vars: !reference [.d, variables]\n.d:\n  variables: {X: x}\n\
             job:\n  script: !reference [.b, script]\n  v: !reference [.c, vars, X]\n",
            &[],
        )
        .unwrap();
        assert_eq!(show(job(&map, "job")), "{script: [[a], b], v: x}");
    }

    #[test]
    fn references_nest_ten_levels_and_the_eleventh_names_the_chain() {
        let chain = |levels: usize| {
            let mut text = format!("job:\n  script: !reference [.l1, s]\n.l{levels}:\n  s: [deepest]\n");
            for i in 1..levels {
                text.push_str(&format!(".l{i}:\n  s: !reference [.l{}, s]\n", i + 1));
            }
            text
        };
        let map = compose(&chain(10), &[]).unwrap();
        assert_eq!(show(job(&map, "job")), "{script: [deepest]}");
        let e = compose(&chain(11), &[]).unwrap_err();
        assert!(e.message.starts_with("!reference nested more than 10 levels deep: [.l1, s] → [.l2, s] → "), "{e}");
        assert!(e.message.ends_with("→ [.l10, s] → [.l11, s]"), "{e}");
    }

    #[test]
    fn reference_errors() {
        let cases = [
            ("job:\n  script: !reference [.nope, script]\n", 2, "job.script", "`.nope` is not defined"),
            (
                ".a: {x: 1}\njob:\n  script:\n    - !reference [.a, script]\n",
                4,
                "job.script[0]",
                "`.a` has no key `script`",
            ),
            (".a: {x: 1}\njob:\n  s: !reference [.a, x, y]\n", 3, "job.s", "`.a.x` is a number, not a map"),
            (
                ".a:\n  s: !reference [.b, s]\n.b:\n  s: !reference [.a, s]\n",
                2,
                ".a.s",
                "!reference cycle: [.b, s] → [.a, s] → [.b, s]",
            ),
            (".a:\n  s: !reference [.a, s]\n", 2, ".a.s", "!reference cycle"),
        ];
        for (text, line, key, want) in cases {
            let e = compose(text, &[]).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }
}
