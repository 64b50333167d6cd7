//! The composed pipeline as text, for `glci run --preview`: the configuration after `include`,
//! `extends` and `!reference`, hidden jobs and `extends:` keys kept, as GitLab's "Full
//! configuration" view (the CI Lint API's `merged_yaml`) shows it: a `---` document with block
//! maps and lists written at their key's indent, as Ruby's YAML emitter does. Also the same as
//! JSON. Pure; called by `mod.rs`.

use super::yaml::{Map, Node, Value};

/// The map as a YAML document.
pub fn yaml(map: &Map) -> String {
    let mut out = String::from("---\n");
    write_map(map, 0, &mut out);
    out
}

/// The map as JSON (key order kept where the JSON library keeps it).
pub fn json(map: &Map) -> serde_json::Value {
    serde_json::Value::Object(map.iter().map(|e| (e.key.clone(), json_node(&e.value))).collect())
}

fn json_node(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(json_node).collect()),
        Value::Map(map) => json(map),
        // Resolved before a preview; shown as GitLab writes the tag if one is left.
        Value::Reference(path) => serde_json::Value::String(format!("!reference [{}]", path.join(", "))),
    }
}

fn indent(level: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', level * 2));
}

fn write_map(map: &Map, level: usize, out: &mut String) {
    for entry in map.iter() {
        indent(level, out);
        out.push_str(&scalar_text(&entry.key));
        out.push(':');
        write_value(&entry.value, level, out);
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection on the next lines.
fn write_value(node: &Node, level: usize, out: &mut String) {
    match &node.value {
        Value::Map(map) if map.iter().next().is_some() => {
            out.push('\n');
            write_map(map, level + 1, out);
        }
        Value::Seq(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(items, level, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(node));
            out.push('\n');
        }
    }
}

/// List items at the indent of their key (Ruby's style: `script:\n- make`).
fn write_seq(items: &[Node], level: usize, out: &mut String) {
    for item in items {
        indent(level, out);
        out.push('-');
        match &item.value {
            Value::Map(map) if map.iter().next().is_some() => {
                // The first entry on the dash's line, the others under it.
                let mut first = true;
                for entry in map.iter() {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(level + 1, out);
                    }
                    out.push_str(&scalar_text(&entry.key));
                    out.push(':');
                    write_value(&entry.value, level + 1, out);
                }
            }
            Value::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(inner, level + 1, out);
            }
            _ => {
                out.push(' ');
                out.push_str(&inline(item));
                out.push('\n');
            }
        }
    }
}

fn inline(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => scalar_text(s),
        Value::Seq(_) => "[]".into(),
        Value::Map(_) => "{}".into(),
        Value::Reference(path) => format!("!reference [{}]", path.join(", ")),
    }
}

/// A string plain when YAML reads it back as the same string, else double-quoted with escapes.
fn scalar_text(text: &str) -> String {
    if is_plain(text) {
        return text.to_string();
    }
    serde_json::Value::String(text.to_string()).to_string()
}

fn is_plain(text: &str) -> bool {
    let Some(first) = text.chars().next() else { return false };
    let reserved = ["true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"];
    if reserved.contains(&text.to_ascii_lowercase().as_str()) || text.parse::<f64>().is_ok() {
        return false;
    }
    if text.starts_with("0x") || text.starts_with("0o") || text.trim() != text {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`$.".contains(first) && !(first == '.' && text.len() > 1 && !text.contains(": ")) {
        return false;
    }
    text.chars().all(|c| c.is_alphanumeric() || " _-./=+()<>^~$,;@".contains(c))
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::rc::Rc;

    use crate::pipeline::parse::yaml;

    fn map_of(text: &str) -> Map {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        match yaml::load(text, &file).unwrap().value {
            Value::Map(map) => map,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn ruby_style_blocks_and_quoting() {
        let text = ".tmpl:\n  image: alpine:3\n  variables:\n    BUILD: Debug\n    NUM: 3\njob:\n  extends: .tmpl\n  \
                    script:\n    - echo \"hi\"\n    - make\n  needs: []\n  services:\n    - name: pg\n      alias: db\n  \
                    rules:\n    - if: $A == \"1\"\n      when: manual\n  allow_failure: true\n  flag: 'true'\n  empty: ''\n";
        let out = yaml(&map_of(text));
        assert_eq!(
            out,
            "---\n.tmpl:\n  image: \"alpine:3\"\n  variables:\n    BUILD: Debug\n    NUM: 3\njob:\n  extends: .tmpl\n  \
             script:\n  - \"echo \\\"hi\\\"\"\n  - make\n  needs: []\n  services:\n  - name: pg\n    alias: db\n  \
             rules:\n  - if: \"$A == \\\"1\\\"\"\n    when: manual\n  allow_failure: true\n  flag: \"true\"\n  empty: \"\"\n"
        );
        // What is written reads back as the same values.
        let again = map_of(out.trim_start_matches("---\n"));
        assert_eq!(json(&again), json(&map_of(text)));
    }

    #[test]
    fn awkward_strings_survive_a_round_trip() {
        for s in
            ["a: b", "#x", "- y", "x #y", "multi\nline", " lead", "trail ", "1.5", "0x1F", "yes", "null", "a:", "*a"]
        {
            let map = map_of(&format!("k: {}\n", serde_json::Value::String(s.into())));
            let again = map_of(yaml(&map).trim_start_matches("---\n"));
            assert_eq!(json(&again)["k"], serde_json::Value::String(s.into()), "{s:?} → {}", yaml(&map));
        }
    }
}
