//! YAML text → a [`Node`] tree in which every value keeps its file and line, for `parse`'s
//! error messages. Owns what YAML itself defines: anchors and aliases, `<<` merge keys
//! (`<<: *a`, `<<: [*a, *b]`), scalar typing, tags (`!reference [job, key]` becomes
//! [`Value::Reference`], resolved later by `compose`). Knows nothing of GitLab keys. Pure.
//!
//! Built on `saphyr-parser`'s event stream (spans with lines, tags, anchor ids). Scalars are
//! typed as GitLab's YAML loader (Ruby's Psych, YAML 1.1) types them, because that decides what
//! a variable's value becomes: `yes`/`on` are booleans, `0755` is octal, `1.10` is the float
//! `1.1`. `<<` merges are positional as in Psych: keys after `<<` override merged ones, keys
//! before it are overridden; a later duplicate key replaces an earlier one in place.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};

use crate::pipeline::error::PipelineError;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub file: Rc<Path>,
    /// 1-based.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
    /// `!reference [job, key, ...]`, not yet resolved.
    Reference(Vec<String>),
}

/// A mapping in insertion order; keys are unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    /// Line of the key.
    pub line: usize,
    pub value: Node,
}

impl Map {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Replaces an entry with the same key where it stands, else appends.
    pub fn insert(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.as_str())
    }
}

impl IntoIterator for Map {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl FromIterator<Entry> for Map {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Map {
        let mut map = Map::default();
        for entry in iter {
            map.insert(entry);
        }
        map
    }
}

impl Value {
    /// "a string", "a list", ...: for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
            Value::Reference(_) => "an unresolved !reference",
        }
    }

    /// The value as GitLab turns a scalar into a variable's string (Ruby's `to_s`); `None` for
    /// null, lists and maps.
    pub fn scalar_string(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(ruby_float(*f)),
            Value::Null | Value::Seq(_) | Value::Map(_) | Value::Reference(_) => None,
        }
    }
}

/// Parses one YAML document; an empty file gives [`Value::Null`].
pub fn load(text: &str, file: &Rc<Path>) -> Result<Node, PipelineError> {
    let mut documents = load_all(text, file)?;
    if documents.len() > 1 {
        let line = documents[1].line;
        return Err(PipelineError::new(file, line, "", "a second YAML document (`---`): only one is expected here"));
    }
    Ok(documents.pop().unwrap_or(Node { value: Value::Null, file: Rc::clone(file), line: 1 }))
}

/// Parses every document of a stream (`---` separated); an empty file gives none.
pub fn load_all(text: &str, file: &Rc<Path>) -> Result<Vec<Node>, PipelineError> {
    let mut builder = Builder {
        events: Parser::new_from_str(text),
        file: Rc::clone(file),
        anchors: HashMap::new(),
        nodes: 0,
        last_line: 1,
    };
    builder.documents()
}

/// Bounds alias expansion ("billion laughs"): far above any real pipeline.
const MAX_NODES: usize = 1_000_000;
/// Bounds recursion on deeply nested input.
const MAX_DEPTH: usize = 200;

struct Builder<'t> {
    events: Parser<'t, StrInput<'t>>,
    file: Rc<Path>,
    /// Anchor id → the anchored node and how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes built so far, aliases counted at their full size.
    nodes: usize,
    last_line: usize,
}

impl<'t> Builder<'t> {
    fn error(&self, line: usize, message: impl Into<String>) -> PipelineError {
        PipelineError::new(&self.file, line, "", message)
    }

    fn scan_error(&self, e: &ScanError) -> PipelineError {
        self.error(e.marker().line().max(1), format!("invalid YAML: {}", e.info()))
    }

    fn next(&mut self) -> Result<(Event<'t>, Span), PipelineError> {
        match self.events.next() {
            Some(Ok((event, span))) => {
                self.last_line = span.start.line().max(1);
                Ok((event, span))
            }
            Some(Err(e)) => Err(self.scan_error(&e)),
            None => Err(self.error(self.last_line, "invalid YAML: unexpected end of input")),
        }
    }

    fn documents(&mut self) -> Result<Vec<Node>, PipelineError> {
        let (event, _) = self.next()?;
        if event != Event::StreamStart {
            return Err(self.error(1, "invalid YAML: no stream start"));
        }
        let mut documents = Vec::new();
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamEnd => return Ok(documents),
                Event::DocumentStart(_) => {
                    let (event, span) = self.next()?;
                    documents.push(self.node(event, span, 0)?);
                }
                _ => return Err(self.error(span.start.line(), "invalid YAML: expected a document")),
            }
            let (event, span) = self.next()?;
            if event != Event::DocumentEnd {
                return Err(self.error(span.start.line(), "invalid YAML: expected the end of the document"));
            }
        }
    }

    fn count(&mut self, n: usize, line: usize) -> Result<(), PipelineError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.error(line, format!("more than {MAX_NODES} values after expanding aliases")));
        }
        Ok(())
    }

    fn node(&mut self, event: Event<'t>, span: Span, depth: usize) -> Result<Node, PipelineError> {
        let line = span.start.line().max(1);
        if depth > MAX_DEPTH {
            return Err(self.error(line, format!("values nested more than {MAX_DEPTH} deep")));
        }
        let start = self.nodes;
        self.count(1, line)?;
        let (value, anchor) = match event {
            Event::Alias(id) => {
                let (node, size) =
                    self.anchors.get(&id).cloned().ok_or_else(|| self.error(line, "alias to an unknown anchor"))?;
                self.count(size, line)?;
                return Ok(node);
            }
            Event::Scalar(text, style, anchor, tag) => (self.scalar(&text, style, tag.as_deref(), line)?, anchor),
            Event::SequenceStart(anchor, tag) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(event, span, depth + 1)?);
                }
                (self.tagged_sequence(items, tag.as_deref(), line)?, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag.as_deref().filter(|t| !is_core(t, "map")) {
                    return Err(self.error(line, format!("unsupported tag {} on a map", show_tag(tag))));
                }
                (Value::Map(self.mapping(depth)?), anchor)
            }
            _ => return Err(self.error(line, "invalid YAML: unexpected event")),
        };
        let node = Node { value, file: Rc::clone(&self.file), line };
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), self.nodes - start));
        }
        Ok(node)
    }

    fn scalar(&self, text: &str, style: ScalarStyle, tag: Option<&Tag>, line: usize) -> Result<Value, PipelineError> {
        let Some(tag) = tag else {
            return Ok(if style == ScalarStyle::Plain { plain_scalar(text) } else { Value::Str(text.to_owned()) });
        };
        if is_core(tag, "str") || is_non_specific(tag) {
            return Ok(Value::Str(text.to_owned()));
        }
        if is_reference(tag) {
            return Err(self.error(line, "!reference needs a list: !reference [job, key]"));
        }
        let wanted = match tag.suffix.as_str() {
            "int" => matches!(plain_scalar(text), Value::Int(_)),
            "float" => matches!(plain_scalar(text), Value::Float(_) | Value::Int(_)),
            "bool" => matches!(plain_scalar(text), Value::Bool(_)),
            "null" => matches!(plain_scalar(text), Value::Null),
            _ => false,
        };
        if !is_core(tag, &tag.suffix) || !wanted {
            return Err(self.error(line, format!("unsupported tag {} on {text:?}", show_tag(tag))));
        }
        Ok(match (tag.suffix.as_str(), plain_scalar(text)) {
            ("float", Value::Int(i)) => Value::Float(i as f64),
            (_, value) => value,
        })
    }

    fn tagged_sequence(&self, items: Vec<Node>, tag: Option<&Tag>, line: usize) -> Result<Value, PipelineError> {
        let Some(tag) = tag.filter(|t| !is_core(t, "seq")) else {
            return Ok(Value::Seq(items));
        };
        if !is_reference(tag) {
            return Err(self.error(line, format!("unsupported tag {} on a list", show_tag(tag))));
        }
        let path: Option<Vec<String>> = items
            .into_iter()
            .map(|item| match item.value {
                Value::Str(s) => Some(s),
                _ => None,
            })
            .collect();
        match path {
            Some(path) if !path.is_empty() => Ok(Value::Reference(path)),
            _ => Err(self.error(line, "!reference needs a list of names: !reference [job, key, ...]")),
        }
    }

    /// The entries of a mapping whose `MappingStart` was just read, `<<` merges applied.
    fn mapping(&mut self, depth: usize) -> Result<Map, PipelineError> {
        let mut map = Map::default();
        loop {
            let (event, span) = self.next()?;
            let line = span.start.line().max(1);
            let (key, is_merge) = match event {
                Event::MappingEnd => return Ok(map),
                Event::Scalar(ref text, style, _, ref tag) => {
                    (text.to_string(), text == "<<" && style == ScalarStyle::Plain && tag.is_none())
                }
                Event::Alias(_) => {
                    let node = self.node(event, span, depth + 1)?;
                    let key = node.value.scalar_string().ok_or_else(|| {
                        self.error(line, format!("a map key must be a string, found {}", node.value.kind()))
                    })?;
                    (key, false)
                }
                _ => return Err(self.error(line, "a map key must be a string (complex keys are not supported)")),
            };
            let (event, span) = self.next()?;
            let value = self.node(event, span, depth + 1)?;
            if is_merge {
                self.merge(&mut map, value, line)?;
            } else {
                map.insert(Entry { key, line, value });
            }
        }
    }

    /// `<<: *a` or `<<: [*a, *b]` (the first of the list wins, as in Psych).
    fn merge(&self, map: &mut Map, value: Node, line: usize) -> Result<(), PipelineError> {
        let not_a_map =
            |found: &Value| self.error(line, format!("`<<` merges a map or a list of maps, found {}", found.kind()));
        match value.value {
            Value::Map(merged) => merged.into_iter().for_each(|e| map.insert(e)),
            Value::Seq(items) => {
                let mut merged = Map::default();
                for item in items.into_iter().rev() {
                    match item.value {
                        Value::Map(m) => m.into_iter().for_each(|e| merged.insert(e)),
                        other => return Err(not_a_map(&other)),
                    }
                }
                merged.into_iter().for_each(|e| map.insert(e));
            }
            other => return Err(not_a_map(&other)),
        }
        Ok(())
    }
}

fn is_core(tag: &Tag, suffix: &str) -> bool {
    tag.handle == "tag:yaml.org,2002:" && tag.suffix == suffix
}

/// `! value`: "a string", whatever it looks like.
fn is_non_specific(tag: &Tag) -> bool {
    (tag.handle.is_empty() && tag.suffix == "!") || (tag.handle == "!" && tag.suffix.is_empty())
}

fn is_reference(tag: &Tag) -> bool {
    tag.handle == "!" && tag.suffix == "reference"
}

fn show_tag(tag: &Tag) -> String {
    if tag.handle == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// Types a plain (unquoted) scalar as Psych does.
fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => return Value::Bool(true),
        "no" | "false" | "off" => return Value::Bool(false),
        _ => {}
    }
    if let Some(i) = integer(text) {
        return Value::Int(i);
    }
    if let Some(f) = float(text) {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

/// `[-+]?` then `0b[01_]+`, `0[0-7_]+` (octal), `0x[0-9a-fA-F_]+` or `0|[1-9][0-9_]*`.
fn integer(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(d) = unsigned.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = unsigned.strip_prefix("0x") {
        (16, d)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (8, &unsigned[1..])
    } else if unsigned.starts_with('_') {
        return None;
    } else {
        (10, unsigned)
    };
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(&digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Psych's base-10 float: `[-+]?([0-9][0-9_]*)?\.[0-9]*([eE][-+][0-9]+)?`, with a digit.
fn float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.')?;
    let whole_ok = whole.is_empty()
        || (whole.starts_with(|c: char| c.is_ascii_digit()) && whole.chars().all(|c| c.is_ascii_digit() || c == '_'));
    let fraction_ok = fraction.chars().all(|c| c.is_ascii_digit());
    let has_digit = mantissa.chars().any(|c| c.is_ascii_digit());
    let exponent_ok =
        exponent.is_none_or(|e| e.len() > 1 && e.starts_with(['-', '+']) && e[1..].chars().all(|c| c.is_ascii_digit()));
    if !(whole_ok && fraction_ok && has_digit && exponent_ok) {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// Ruby's `Float#to_s`: `1.0`, `1.1`, `1.0e+20`, `1.0e-05`.
fn ruby_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let magnitude = f.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        let text = f.to_string();
        return if text.contains('.') { text } else { format!("{text}.0") };
    }
    let text = format!("{f:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exponent),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Rc<Path> {
        Rc::from(Path::new("ci.yml"))
    }

    fn parse(text: &str) -> Node {
        load(text, &file()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn parse_err(text: &str) -> PipelineError {
        load(text, &file()).expect_err(text)
    }

    fn map(node: &Node) -> &Map {
        match &node.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    fn get<'n>(node: &'n Node, key: &str) -> &'n Node {
        &map(node).get(key).unwrap_or_else(|| panic!("no key {key}")).value
    }

    fn str_value(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    #[test]
    fn lines_of_keys_and_values() {
        let root = parse("a: 1\n\nb:\n  - x\n  - y\nc: {d: e}\n");
        let m = map(&root);
        let lines: Vec<(&str, usize)> = m.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(lines, [("a", 1), ("b", 3), ("c", 6)]);
        let Value::Seq(items) = &get(&root, "b").value else { panic!() };
        assert_eq!(items.iter().map(|n| n.line).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(map(get(&root, "c")).get("d").map(|e| e.line), Some(6));
        assert_eq!(&*root.file, Path::new("ci.yml"));
    }

    #[test]
    fn scalars_typed_as_psych_does() {
        let cases: &[(&str, Value)] = &[
            ("x", str_value("x")),
            ("''", str_value("")),
            ("'true'", str_value("true")),
            ("\"1\"", str_value("1")),
            ("", Value::Null),
            ("~", Value::Null),
            ("null", Value::Null),
            ("NULL", Value::Null),
            ("nULL", str_value("nULL")),
            ("true", Value::Bool(true)),
            ("True", Value::Bool(true)),
            ("yes", Value::Bool(true)),
            ("on", Value::Bool(true)),
            ("OFF", Value::Bool(false)),
            ("no", Value::Bool(false)),
            ("y", str_value("y")),
            ("0", Value::Int(0)),
            ("42", Value::Int(42)),
            ("-7", Value::Int(-7)),
            ("+7", Value::Int(7)),
            ("1_000", Value::Int(1000)),
            ("0755", Value::Int(493)),
            ("0x1F", Value::Int(31)),
            ("0b101", Value::Int(5)),
            ("089", str_value("089")),
            ("1.5", Value::Float(1.5)),
            ("1.10", Value::Float(1.1)),
            ("-.5", Value::Float(-0.5)),
            ("1.", Value::Float(1.0)),
            ("1.5e+3", Value::Float(1500.0)),
            ("1.5e3", str_value("1.5e3")),
            ("1e5", str_value("1e5")),
            (".", str_value(".")),
            ("1.2.3", str_value("1.2.3")),
            ("99999999999999999999", str_value("99999999999999999999")),
            ("v1", str_value("v1")),
            ("!!str 12", str_value("12")),
            ("!!int 12", Value::Int(12)),
            ("!!float 12", Value::Float(12.0)),
            ("! 12", str_value("12")),
            ("|\n  a\n  b\n", str_value("a\nb\n")),
        ];
        for (text, want) in cases {
            let root = parse(&format!("k: {text}"));
            assert_eq!(&get(&root, "k").value, want, "{text:?}");
        }
    }

    #[test]
    fn scalar_strings_as_ruby_prints_them() {
        let cases: &[(&str, &str)] = &[
            ("abc", "abc"),
            ("true", "true"),
            ("no", "false"),
            ("10", "10"),
            ("0x10", "16"),
            ("1.0", "1.0"),
            ("1.10", "1.1"),
            ("100.0", "100.0"),
            ("0.0001", "0.0001"),
            ("0.00001", "1.0e-05"),
            ("12345678901234567.0", "1.2345678901234568e+16"),
            ("1.0e+20", "1.0e+20"),
        ];
        for (text, want) in cases {
            let root = parse(&format!("k: {text}"));
            assert_eq!(get(&root, "k").value.scalar_string().as_deref(), Some(*want), "{text:?}");
        }
        assert_eq!(Value::Null.scalar_string(), None);
        assert_eq!(Value::Seq(vec![]).scalar_string(), None);
    }

    #[test]
    fn anchors_and_aliases() {
        let root = parse("a: &x\n  k: v\nb: *x\nc: &s [1, 2]\nd: *s\n");
        assert_eq!(get(&root, "a").value, get(&root, "b").value);
        assert_eq!(get(&root, "c").value, get(&root, "d").value);
        // An alias keeps the line where its anchor was written.
        assert_eq!(map(get(&root, "b")).get("k").map(|e| e.line), Some(2));
    }

    #[test]
    fn merge_keys() {
        let root = parse(
            "base: &base\n  a: 1\n  b: 2\nother: &other\n  b: 3\n  c: 4\n\
             one:\n  <<: *base\n  b: 20\ntwo:\n  <<: [*base, *other]\nthree:\n  a: 10\n  <<: *base\n",
        );
        let one = map(get(&root, "one"));
        assert_eq!(one.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(one.get("b").map(|e| &e.value.value), Some(&Value::Int(20)));
        let two = map(get(&root, "two"));
        assert_eq!(two.get("a").map(|e| &e.value.value), Some(&Value::Int(1)));
        assert_eq!(two.get("b").map(|e| &e.value.value), Some(&Value::Int(2)), "the first map in the list wins");
        assert_eq!(two.get("c").map(|e| &e.value.value), Some(&Value::Int(4)));
        // Psych: a merge overrides keys written before it.
        let three = map(get(&root, "three"));
        assert_eq!(three.get("a").map(|e| &e.value.value), Some(&Value::Int(1)));
        // A quoted "<<" is an ordinary key.
        let root = parse("x:\n  '<<': 1\n");
        assert!(map(get(&root, "x")).contains("<<"));
    }

    #[test]
    fn duplicate_keys_last_wins_in_place() {
        let root = parse("a: 1\nb: 2\na: 3\n");
        let m = map(&root);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.get("a").map(|e| (&e.value.value, e.line)), Some((&Value::Int(3), 3)));
    }

    #[test]
    fn references() {
        let root = parse("s:\n  - !reference [.setup, script]\n  - echo\nv: !reference [.vars, variables, A]\n");
        let Value::Seq(items) = &get(&root, "s").value else { panic!() };
        assert_eq!(items[0].value, Value::Reference(vec![".setup".into(), "script".into()]));
        assert_eq!(items[0].line, 2);
        assert_eq!(get(&root, "v").value, Value::Reference(vec![".vars".into(), "variables".into(), "A".into()]));
    }

    #[test]
    fn non_string_keys_become_strings() {
        let root = parse("1: a\ntrue: b\n");
        assert_eq!(map(&root).keys().collect::<Vec<_>>(), ["1", "true"]);
    }

    #[test]
    fn empty_file_is_null() {
        assert_eq!(parse("").value, Value::Null);
        assert_eq!(parse("# only a comment\n").value, Value::Null);
        assert_eq!(parse("---\n").value, Value::Null);
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            ("a: 1\nb: [\n", 3, "invalid YAML"),
            ("a: 1\n  b: 2\n", 2, "invalid YAML"),
            ("a: *nope\n", 1, "invalid YAML"),
            ("a: 1\n---\nb: 2\n", 3, "a second YAML document"),
            ("a:\n  - !reference .x\n", 2, "!reference needs a list"),
            ("a:\n  - !reference []\n", 2, "!reference needs a list of names"),
            ("a:\n  - !reference [[x], y]\n", 2, "!reference needs a list of names"),
            ("a: !custom x\n", 1, "unsupported tag !custom"),
            ("a: !!int x\n", 1, "unsupported tag !!int"),
            ("a: !custom [x]\n", 1, "unsupported tag !custom on a list"),
            ("a: !custom {x: 1}\n", 1, "unsupported tag !custom on a map"),
            ("x: &x 1\na:\n  <<: *x\n", 3, "`<<` merges a map"),
            ("x: &x 1\na:\n  <<: [*x]\n", 3, "`<<` merges a map"),
            ("? [a]\n: 1\n", 1, "a map key must be a string"),
        ];
        for (text, line, want) in cases {
            let e = parse_err(text);
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.message.contains(want), "{text:?}: {e}");
            assert_eq!(e.file, Path::new("ci.yml"));
        }
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", ")));
        }
        assert!(parse_err(&text).message.contains("after expanding aliases"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        for depth in [230, 500] {
            let text = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
            let e = parse_err(&text);
            assert!(e.message.contains("nested more than") || e.message.contains("recursion limit"), "{e}");
        }
        let text = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        parse(&text);
    }

    #[test]
    fn map_operations() {
        let node = Node { value: Value::Null, file: file(), line: 1 };
        let entry = |k: &str| Entry { key: k.to_owned(), line: 1, value: node.clone() };
        let mut m: Map = [entry("a"), entry("b"), entry("a")].into_iter().collect();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(m.remove("a").is_some());
        assert!(!m.contains("a"));
        assert!(m.remove("a").is_none());
    }
}
