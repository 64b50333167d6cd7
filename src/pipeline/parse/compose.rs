//! The tree-level steps GitLab takes before reading any key, in GitLab's order
//! (`Gitlab::Ci::Config#build_config`) after `include` (`include.rs`, which merges with
//! [`merge_maps`]): `extends`, then `!reference` tags. Works on [`yaml::Node`](super::yaml::Node)
//! trees so every value keeps the file and line it was written at; knows no job keys beyond
//! `extends`.
//!
//! Merging is GitLab's deep merge: maps merge key by key, the later side winning; anything else
//! (lists included) is replaced whole.

use std::collections::HashMap;

use super::yaml::{Entry, Map, Node, Value};
use crate::pipeline::error::PipelineError;

/// GitLab's limit on `extends` and `!reference` nesting.
const MAX_NESTING: usize = 10;

fn error(node: &Node, line: usize, key: &str, message: impl Into<String>) -> PipelineError {
    PipelineError::new(&node.file, line, key, message)
}

/// GitLab's deep merge of `over` onto `base`: maps merge key by key, anything else is replaced.
/// The result keeps `over`'s file and line.
pub fn deep_merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => Node { value: Value::Map(merge_maps(b, o)), ..over },
        (_, value) => Node { value, ..over },
    }
}

pub fn merge_maps(mut base: Map, over: Map) -> Map {
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
    use crate::pipeline::parse::yaml;
    use std::path::Path;
    use std::rc::Rc;

    const MAIN: &str = "/p/.gitlab-ci.yml";

    fn tree(text: &str) -> Node {
        let file: Rc<Path> = Rc::from(Path::new(MAIN));
        yaml::load(text, &file).unwrap()
    }

    fn compose(text: &str) -> Result<Map, PipelineError> {
        let Value::Map(map) = tree(text).value else { panic!("not a map: {text}") };
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
        )
        .unwrap();
        assert_eq!(
            show(job(&map, "job")),
            "{image: alpine, variables: {A: base, B: mid, C: job}, script: [other], extends: [.mid, .other], tags: [x]}"
        );
        assert_eq!(map.get("job").map(|e| e.line), Some(11));
        // A visible job can be extended too.
        let map = compose("a:\n  script: [a]\nb:\n  extends: a\n  stage: x\n").unwrap();
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
            let e = compose(text).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
        let chain: String =
            (0..12).map(|i| format!(".j{i}:\n  extends: .j{}\n", i + 1)).collect::<String>() + ".j12: {}\n";
        let e = compose(&chain).unwrap_err();
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
        let map = compose(&chain(10)).unwrap();
        assert_eq!(show(job(&map, "job")), "{script: [deepest]}");
        let e = compose(&chain(11)).unwrap_err();
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
            let e = compose(text).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }
}
