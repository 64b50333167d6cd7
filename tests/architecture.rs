//! The shape of `src/` the compiler does not check (issue 19): no import circles. Module A uses
//! B and B uses A (or a longer ring) through `use crate::…`, `super::…`, `self::…`, a child
//! module's name, or a path written in code. A directory's `mod.rs` and the files under it are
//! one unit (the parent declares its children and they use what it declares), so edges between
//! a module and its own ancestors do not count. `#[cfg(test)]` items and test-only files are
//! left out. A `pub use` re-export is followed to the module that defines the name.
//!
//! Reads the sources as tokens (comments, strings and character literals skipped); no Docker,
//! no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path below the crate root: `["pipeline", "plan"]`.
type Module = Vec<String>;

#[test]
fn src_has_no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.expect("walk src");
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") && path != root.join("main.rs") {
            let relative = path.strip_prefix(&root).expect("under src").to_string_lossy().into_owned();
            files.insert(relative, std::fs::read_to_string(path).expect("read source"));
        }
    }
    let circles = circles(&files);
    assert!(
        circles.is_empty(),
        "import circles in src/ (break each; see tests/architecture.rs):\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_between_siblings_is_found() {
    let files = sources(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c; mod d;"),
        ("a.rs", "use crate::b::Thing; pub fn f() {}"),
        ("b.rs", "pub struct Thing; fn g() { crate::a::f() }"),
        (
            "c.rs",
            "// use crate::a; in a comment\nconst S: &str = \"crate::a::f\"; fn h<'a>(x: &'a str) -> char { 'a' }",
        ),
        ("d.rs", "pub use crate::c::*;"),
    ]);
    assert_eq!(circles(&files), ["a → b → a (a: crate::b::Thing; b: crate::a::f)"]);
}

#[test]
fn a_ring_through_a_re_export_and_nested_use_trees_is_found() {
    let files = sources(&[
        ("lib.rs", "pub mod p;"),
        ("p/mod.rs", "mod x; mod y; mod z; pub use self::z::Z;"),
        ("p/x.rs", "use super::{y::{self, Y}};"),
        ("p/y.rs", "use super::Z;"),
        ("p/z.rs", "pub struct Z; fn f() { let _ = super::x::X; }"),
    ]);
    assert_eq!(circles(&files), ["p::x → p::y → p::z → p::x (p::x: super::y; p::y: super::Z; p::z: super::x::X)"]);
}

#[test]
fn parents_children_and_test_code_do_not_count() {
    let files = sources(&[
        ("lib.rs", "pub mod p; pub mod q;"),
        ("p/mod.rs", "mod x; pub struct Ctx; fn f() { x::go() }"),
        ("p/x.rs", "use super::Ctx; pub fn go() {}"),
        ("q.rs", "#[cfg(test)]\nmod tests { use crate::p::x; }\n#[cfg(test)]\n#[path = \"q_tests.rs\"]\nmod more;"),
        ("q_tests.rs", "use crate::p;"),
    ]);
    assert_eq!(circles(&files), Vec::<String>::new());
}

fn sources(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect()
}

/// Every ring of modules that use each other, one line each: the modules in order and, for
/// each, the path by which it uses the next.
fn circles(files: &BTreeMap<String, String>) -> Vec<String> {
    let parsed: BTreeMap<Module, Vec<String>> =
        files.iter().map(|(path, text)| (module_of(path), without_test_items(&tokens(text)))).collect();
    let modules = reachable(&parsed);
    let reexports: BTreeMap<&Module, BTreeMap<String, Module>> =
        modules.iter().map(|m| (m, uses(m, &parsed[m], &modules).1)).collect();
    let mut edges: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for module in &modules {
        let out = edges.entry(module.clone()).or_default();
        for (path, shown) in references(module, &parsed[module], &modules) {
            let Some(target) = target(&path, &modules, &reexports, 0) else { continue };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                out.entry(target).or_insert(shown);
            }
        }
    }
    rings(&edges)
        .into_iter()
        .map(|ring| {
            let name = |m: &Module| m.join("::");
            let mut order = ring.clone();
            order.push(ring[0].clone());
            let names: Vec<String> = order.iter().map(name).collect();
            let why: Vec<String> =
                order.windows(2).map(|w| format!("{}: {}", name(&w[0]), edges[&w[0]][&w[1]])).collect();
            format!("{} ({})", names.join(" → "), why.join("; "))
        })
        .collect()
}

/// `pipeline/plan.rs` → `[pipeline, plan]`; `lib.rs` → `[]`; `http/mod.rs` → `[http]`.
fn module_of(path: &str) -> Module {
    let mut parts: Vec<String> = path.trim_end_matches(".rs").split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The modules `lib.rs` reaches through `mod name;` declarations outside `#[cfg(test)]`.
fn reachable(parsed: &BTreeMap<Module, Vec<String>>) -> BTreeSet<Module> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![Module::new()];
    while let Some(module) = todo.pop() {
        let Some(tokens) = parsed.get(&module) else { continue };
        for w in tokens.windows(3) {
            if w[0] == "mod" && w[2] == ";" {
                let mut child = module.clone();
                child.push(w[1].clone());
                todo.push(child);
            }
        }
        seen.insert(module);
    }
    seen.retain(|m| parsed.contains_key(m));
    seen
}

/// Rust source → tokens: identifiers (`r#` dropped), `::`, one-character punctuation; string,
/// character and number literals become placeholders; comments go.
fn tokens(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
                if depth == 0 || i >= chars.len() {
                    break;
                }
            }
        } else if let Some(end) = raw_string_end(&chars, i) {
            out.push("\"".into());
            i = end;
        } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
            i += if c == '"' { 1 } else { 2 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push("\"".into());
            i += 1;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let start = if c == '\'' { i + 1 } else { i + 2 };
            // A character literal closes within a few characters ('a', '\n', '\u{1F600}');
            // otherwise it is a lifetime or label.
            let close = if at(start) == '\\' {
                (start + 2..chars.len().min(start + 12)).find(|&j| chars[j] == '\'')
            } else {
                (at(start + 1) == '\'').then_some(start + 1)
            };
            match close {
                Some(end) => {
                    out.push("'c".into());
                    i = end + 1;
                }
                None => {
                    i = start;
                    while at(i).is_alphanumeric() || at(i) == '_' {
                        i += 1;
                    }
                    out.push("'lifetime".into());
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            if c == 'r' && at(i + 1) == '#' {
                i += 2;
            }
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
            out.push("0".into());
        } else if c == ':' && at(i + 1) == ':' {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Where a raw string literal (`r"…"`, `br#"…"#`, `cr"…"`) starting at `i` ends, if one does.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// The tokens without the items marked `#[cfg(test)]` (a test module, inline or a file).
fn without_test_items(tokens: &[String]) -> Vec<String> {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i..].iter().take(7).map(String::as_str).eq(CFG_TEST) {
            i = item_end(tokens, i + 7);
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

/// The index after the item starting at `i`: further attributes, then up to a `;` outside
/// brackets or the `}` closing its first block.
fn item_end(tokens: &[String], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < tokens.len() {
        match tokens[i].as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" => depth = depth.saturating_sub(1),
            "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ";" if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// `path` (as written in `module`) made absolute, if it names a module of this crate:
/// `crate::…`, `self::…`, `super::…` or a child module's name first.
fn absolute(module: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some([module.as_slice(), &path[1..]].concat()),
        "super" => {
            let mut base = module.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            if rest.first().is_some_and(|s| s == "self") {
                rest = &rest[1..];
            }
            Some([base.as_slice(), rest].concat())
        }
        name => {
            let mut child = module.clone();
            child.push(name.to_string());
            modules.contains(&child).then(|| [module.as_slice(), path].concat())
        }
    }
}

/// The module an absolute path lands in: its longest prefix that is a module, following a
/// `pub use` of the next name to where it is defined.
fn target(
    path: &[String],
    modules: &BTreeSet<Module>,
    reexports: &BTreeMap<&Module, BTreeMap<String, Module>>,
    depth: usize,
) -> Option<Module> {
    let k = (0..=path.len()).rev().find(|&k| modules.contains(&path[..k]))?;
    let module = path[..k].to_vec();
    let followed = path.get(k).and_then(|name| reexports.get(&module)?.get(name));
    match followed {
        Some(source) if depth < 16 => {
            target(&[source.as_slice(), &path[k + 1..]].concat(), modules, reexports, depth + 1)
        }
        _ => Some(module),
    }
}

/// The `use` declarations of a module: every absolute path with how it was written, and its
/// `pub use` re-exports by the name they export.
fn uses(
    module: &Module,
    tokens: &[String],
    modules: &BTreeSet<Module>,
) -> (Vec<(Module, String)>, BTreeMap<String, Module>) {
    let mut paths = Vec::new();
    let mut reexports = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] != "use" {
            i += 1;
            continue;
        }
        let public = i > 0 && (tokens[i - 1] == "pub" || tokens[i - 1] == ")");
        let mut trees = Vec::new();
        i = use_tree(tokens, i + 1, &mut Vec::new(), &mut trees);
        for (path, alias) in trees {
            let Some(absolute) = absolute(module, &path, modules) else { continue };
            if public && alias != "*" {
                reexports.insert(alias, absolute.clone());
            }
            paths.push((absolute, path.join("::")));
        }
    }
    (paths, reexports)
}

/// Reads one use tree from `i` (`a::b::{c, d::*, e as f}`) into `(path, name bound)` pairs;
/// returns the index after it.
fn use_tree(tokens: &[String], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) -> usize {
    let depth = prefix.len();
    if tokens.get(i).is_some_and(|t| t == "::") {
        i += 1;
    }
    while let Some(token) = tokens.get(i) {
        match token.as_str() {
            "{" => {
                i += 1;
                while tokens.get(i).is_some_and(|t| t != "}") {
                    i = use_tree(tokens, i, prefix, out);
                    if tokens.get(i).is_some_and(|t| t == ",") {
                        i += 1;
                    }
                }
                prefix.truncate(depth);
                return i + 1;
            }
            "*" => {
                out.push((prefix.clone(), "*".into()));
                prefix.truncate(depth);
                return i + 1;
            }
            _ => {
                prefix.push(token.clone());
                i += 1;
                if tokens.get(i).is_some_and(|t| t == "::") {
                    i += 1;
                    continue;
                }
                let mut name = token.clone();
                if tokens.get(i).is_some_and(|t| t == "as") {
                    name = tokens.get(i + 1).cloned().unwrap_or_default();
                    i += 2;
                }
                let path = prefix.clone();
                // `use a::b::{self}` binds `b`, the path `a::b`.
                let path = if name == "self" { path[..path.len() - 1].to_vec() } else { path };
                out.push((path, name));
                prefix.truncate(depth);
                return i;
            }
        }
    }
    i
}

/// Every path of this crate a module names, in `use` declarations and in code, with how it
/// was written.
fn references(module: &Module, tokens: &[String], modules: &BTreeSet<Module>) -> Vec<(Module, String)> {
    let (mut out, _) = uses(module, tokens, modules);
    let mut i = 0;
    while i + 1 < tokens.len() {
        let starts_path = tokens[i + 1] == "::" && (i == 0 || (tokens[i - 1] != "::" && tokens[i - 1] != "use"));
        let first = tokens[i].chars().next().unwrap_or(' ');
        if !starts_path || !(first.is_alphabetic() || first == '_') {
            i += 1;
            continue;
        }
        let mut path = vec![tokens[i].clone()];
        let mut j = i + 1;
        while j + 1 < tokens.len()
            && tokens[j] == "::"
            && tokens[j + 1].starts_with(|c: char| c.is_alphabetic() || c == '_')
        {
            path.push(tokens[j + 1].clone());
            j += 2;
        }
        if let Some(absolute) = absolute(module, &path, modules) {
            out.push((absolute, path.join("::")));
        }
        i = j;
    }
    out
}

/// The strongly connected components of more than one module (Tarjan), each in ring order:
/// every module followed by one it uses, the last using the first.
fn rings(edges: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    let nodes: Vec<&Module> = edges.keys().collect();
    let index_of: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let next: Vec<Vec<usize>> =
        nodes.iter().map(|m| edges[*m].keys().filter_map(|t| index_of.get(t).copied()).collect()).collect();
    let mut components = Vec::new();
    let mut state = Tarjan { index: vec![None; nodes.len()], low: vec![0; nodes.len()], stack: Vec::new(), count: 0 };
    for v in 0..nodes.len() {
        if state.index[v].is_none() {
            state.visit(v, &next, &mut components);
        }
    }
    components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|component| ring_order(&component, &next).into_iter().map(|i| nodes[i].clone()).collect())
        .collect()
}

struct Tarjan {
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    stack: Vec<usize>,
    count: usize,
}

impl Tarjan {
    fn visit(&mut self, v: usize, next: &[Vec<usize>], out: &mut Vec<Vec<usize>>) {
        self.index[v] = Some(self.count);
        self.low[v] = self.count;
        self.count += 1;
        self.stack.push(v);
        for &w in &next[v] {
            match self.index[w] {
                None => {
                    self.visit(w, next, out);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(index) if self.stack.contains(&w) => self.low[v] = self.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let at = self.stack.iter().rposition(|&x| x == v).expect("v is on the stack");
            out.push(self.stack.split_off(at));
        }
    }
}

/// A cycle through the component's first module (in module order), found by depth-first search
/// inside the component; enough to name the modules to untangle.
fn ring_order(component: &[usize], next: &[Vec<usize>]) -> Vec<usize> {
    let start = *component.iter().min().expect("non-empty component");
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    fn walk(path: &mut Vec<usize>, seen: &mut BTreeSet<usize>, inside: &[usize], next: &[Vec<usize>]) -> bool {
        let last = *path.last().expect("non-empty path");
        for &w in &next[last] {
            if w == path[0] {
                return true;
            }
            if inside.contains(&w) && seen.insert(w) {
                path.push(w);
                if walk(path, seen, inside, next) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(&mut path, &mut seen, component, next);
    path
}
