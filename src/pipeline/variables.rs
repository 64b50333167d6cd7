//! CI variables: an ordered set where later definitions win, `$VAR`/`${VAR}` expansion (`$$` is
//! a literal `$`, an unknown name expands to nothing, as GitLab's runner does), slugs, and the
//! `--env K=V`/`--env-file` syntax. Pure; used by `plan`.

use std::collections::BTreeMap;
use std::fmt;

/// Variables in definition order; setting an existing name replaces its value in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VarSet {
    entries: Vec<(String, String)>,
}

impl VarSet {
    pub fn new() -> Self {
        VarSet::default()
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name.to_string(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n != name);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Expands `$NAME`, `${NAME}` and `$$` in `text` with `lookup`.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if is_name(&braced[..end]) => {
                    out.push_str(&lookup(&braced[..end]).unwrap_or_default());
                    rest = &braced[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            let len = name_len(after);
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes.first().is_none_or(|b| !(b.is_ascii_alphabetic() || *b == b'_')) {
        return 0;
    }
    bytes.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count()
}

/// A variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(text: &str) -> bool {
    !text.is_empty() && name_len(text) == text.len()
}

/// Layers of definitions, lowest precedence first; `raw` layers are taken literally (predefined
/// and command-line values), the others expanded. A value referring to its own name sees the
/// definition below it (`PATH_EXTRA: "$PATH_EXTRA:/x"`); other names see their winning
/// definition. Returns the winners, expanded, in first-definition order.
pub fn resolve(layers: &[(VarSet, bool)]) -> VarSet {
    let mut order: Vec<&str> = Vec::new();
    let mut defs: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for (index, (set, _)) in layers.iter().enumerate() {
        for (name, value) in set.iter() {
            let list = defs.entry(name).or_default();
            if list.is_empty() {
                order.push(name);
            }
            list.push((index, value));
        }
    }
    let resolver = Resolver { layers, defs: &defs };
    let mut out = VarSet::new();
    for name in order {
        if let Some(list) = defs.get(name) {
            out.set(name, resolver.value(name, list.len() - 1, 0));
        }
    }
    out
}

struct Resolver<'a> {
    layers: &'a [(VarSet, bool)],
    defs: &'a BTreeMap<&'a str, Vec<(usize, &'a str)>>,
}

/// Deeper references than this expand to nothing (a cycle such as `A: $B`, `B: $A`).
const MAX_DEPTH: usize = 16;

impl Resolver<'_> {
    /// The value of definition number `nth` of `name` (0 = lowest layer).
    fn value(&self, name: &str, nth: usize, depth: usize) -> String {
        let Some(&(layer, raw)) = self.defs.get(name).and_then(|l| l.get(nth)) else {
            return String::new();
        };
        if depth > MAX_DEPTH {
            return String::new();
        }
        if self.layers.get(layer).is_some_and(|(_, literal)| *literal) {
            return raw.to_string();
        }
        expand(raw, &|other| {
            let list = self.defs.get(other)?;
            if other == name {
                nth.checked_sub(1).map(|below| self.value(other, below, depth + 1))
            } else {
                Some(self.value(other, list.len() - 1, depth + 1))
            }
        })
    }
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lowercased, every byte but `a-z0-9` made `-`, at most 63
/// bytes, no leading or trailing `-`.
pub fn slug(text: &str) -> String {
    let mapped: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(63).collect();
    mapped.trim_matches('-').to_string()
}

#[derive(Debug, PartialEq, Eq)]
pub struct EnvError {
    /// `--env` or `FILE:LINE`.
    pub origin: String,
    pub message: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for EnvError {}

/// `KEY=VALUE` from `--env`.
pub fn parse_assignment(text: &str) -> Result<(String, String), EnvError> {
    let bad = |message: String| EnvError { origin: "--env".into(), message };
    let (name, value) = text.split_once('=').ok_or_else(|| bad(format!("`{text}` is not KEY=VALUE")))?;
    if !is_name(name) {
        return Err(bad(format!("`{name}` is not a variable name (letters, digits, _)")));
    }
    Ok((name.to_string(), value.to_string()))
}

/// An env file: `KEY=VALUE` lines, `export ` allowed, `#` comments and blank lines skipped, one
/// pair of surrounding quotes removed from the value.
pub fn parse_env_file(file: &str, text: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let origin = format!("{file}:{}", index + 1);
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| EnvError { origin: origin.clone(), message: format!("`{line}` is not KEY=VALUE") })?;
        let name = name.trim();
        if !is_name(name) {
            return Err(EnvError { origin, message: format!("`{name}` is not a variable name") });
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open).and_then(|v| v.strip_suffix(*close)))
            .unwrap_or(value);
        out.push((name.to_string(), unquoted.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> VarSet {
        let mut s = VarSet::new();
        for (n, v) in pairs {
            s.set(n, *v);
        }
        s
    }

    #[test]
    fn expands_both_forms_and_escapes() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$A-${A}-$$A-$B-${B}.", &lookup), "x-x-$A--.");
        assert_eq!(expand("cost: $5 and ${ not}", &lookup), "cost: $5 and ${ not}");
        assert_eq!(expand("trailing $", &lookup), "trailing $");
        assert_eq!(expand("$A_B $A.b", &lookup), " x.b");
    }

    #[test]
    fn resolves_layers_with_self_reference_and_cycles() {
        let predefined = set(&[("CI_PROJECT_DIR", "/builds/g/p"), ("RAW", "$NOT")]);
        let global = set(&[("OUT", "$CI_PROJECT_DIR/out"), ("NAME", "base"), ("A", "$B"), ("B", "$A")]);
        let job = set(&[("NAME", "${NAME}-job"), ("FULL", "$OUT/$NAME")]);
        let cli = set(&[("CLI", "$OUT")]);
        let vars = resolve(&[(predefined, true), (global, false), (job, false), (cli, true)]);
        assert_eq!(vars.get("RAW"), Some("$NOT"));
        assert_eq!(vars.get("OUT"), Some("/builds/g/p/out"));
        assert_eq!(vars.get("NAME"), Some("base-job"));
        assert_eq!(vars.get("FULL"), Some("/builds/g/p/out/base-job"));
        assert_eq!(vars.get("CLI"), Some("$OUT"));
        assert_eq!(vars.get("A"), Some(""), "a cycle ends empty");
        let names: Vec<&str> = vars.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["CI_PROJECT_DIR", "RAW", "OUT", "NAME", "A", "B", "FULL", "CLI"]);
    }

    #[test]
    fn slugs_like_gitlab() {
        assert_eq!(slug("feature/Add_Thing"), "feature-add-thing");
        assert_eq!(slug("-x-"), "x");
        assert_eq!(slug(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn parses_env_assignments_and_files() {
        assert_eq!(parse_assignment("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_assignment("1A=b").is_err());
        assert!(parse_assignment("novalue").is_err());
        let text = "# comment\n\nexport A=1\nB=\"two words\"\nC='$x'\n";
        assert_eq!(
            parse_env_file("f.env", text),
            Ok(vec![("A".into(), "1".into()), ("B".into(), "two words".into()), ("C".into(), "$x".into())])
        );
        let err = parse_env_file("f.env", "A=1\nbad line\n").expect_err("line 2 is bad");
        assert_eq!(err.to_string(), "f.env:2: `bad line` is not KEY=VALUE");
    }
}
