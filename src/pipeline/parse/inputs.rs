//! `spec: inputs` headers and `$[[ inputs.name ]]` interpolation, as GitLab's
//! `Gitlab::Ci::Config::Interpolation` does them: a file of two YAML documents whose first holds
//! `spec:` declares its inputs (`type` string/number/boolean/array, `default`, `options`,
//! `regex`, `description`); the values given (`include: inputs`, or `glci run --input` for the
//! main file) are checked against it, and every `$[[ inputs.name | fn ... ]]` block in the
//! content's keys and strings is replaced. A string that is one block and nothing else takes
//! the input's type (a number, a boolean, a list); elsewhere the value is written as text.
//! Functions: `expand_vars` (the variables `include` sees) and `truncate(offset, length)`, at
//! most three per block. Pure.

use std::collections::HashMap;
use std::path::Path;

use super::component::{self, ComponentContext};
use super::read::Field;
use super::yaml::{Entry, Map, Node, Value};
use crate::pipeline::error::PipelineError;
use crate::pipeline::variables;

/// GitLab's limit on functions in one interpolation block.
const MAX_FUNCTIONS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Type {
    String,
    Number,
    Boolean,
    Array,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Boolean => "boolean",
            Type::Array => "array",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (Type::String, Value::Str(_))
                | (Type::Number, Value::Int(_) | Value::Float(_))
                | (Type::Boolean, Value::Bool(_))
                | (Type::Array, Value::Seq(_))
        )
    }
}

/// One declared input.
struct Input {
    name: String,
    kind: Type,
    default: Option<Node>,
    options: Option<Vec<Node>>,
    regex: Option<regex::Regex>,
    /// Where it is declared, for errors.
    line: usize,
    key: String,
}

/// A file's `spec: inputs` (and `spec: component`).
pub struct Spec {
    inputs: Vec<Input>,
    /// `spec: component`: the component fields its blocks may read.
    component: Vec<String>,
    file: std::path::PathBuf,
    line: usize,
}

/// Values given for a file's inputs.
pub enum Given<'a> {
    /// `include: inputs:` (the entry, for errors).
    Include(Option<Field<'a>>, &'a Path, usize, &'a str),
    /// `glci run --input name=value` for the main file (named).
    CommandLine(&'a [(String, String)], &'a Path),
}

/// Splits a file's documents into its `spec:` header (when the first of two documents holds
/// `spec`) and its content.
pub fn split(mut documents: Vec<Node>, file: &Path) -> Result<(Option<Spec>, Option<Node>), PipelineError> {
    let has_spec = |node: &Node| matches!(&node.value, Value::Map(m) if m.get("spec").is_some());
    match documents.len() {
        0 => Ok((None, None)),
        1 => Ok((None, documents.pop())),
        2 if has_spec(&documents[0]) => {
            let content = documents.pop();
            let header = documents.pop().expect("two documents");
            Ok((Some(read_spec(&header)?), content))
        }
        2 => {
            let line = documents[1].line;
            Err(PipelineError::new(file, line, "", "a second YAML document (`---`) only follows a `spec:` header"))
        }
        _ => {
            let line = documents[2].line;
            Err(PipelineError::new(file, line, "", "more than two YAML documents (a `spec:` header and the content)"))
        }
    }
}

fn read_spec(header: &Node) -> Result<Spec, PipelineError> {
    let Value::Map(map) = &header.value else { unreachable!("split checked the header is a map") };
    for entry in map.iter() {
        if entry.key != "spec" {
            return Err(Field::entry("", entry).error("unknown key in the header (only `spec`)"));
        }
    }
    let spec = Field::entry("", map.get("spec").expect("split checked `spec`"));
    spec.check_keys(&["component", "inputs"])?;
    let component = spec.get("component")?.map(|f| component::declared(&f)).transpose()?.unwrap_or_default();
    let mut inputs = Vec::new();
    if let Some(declared) = spec.get("inputs")? {
        for entry in declared.map()?.iter() {
            inputs.push(read_input(&Field::entry(&declared.key, entry), &entry.key)?);
        }
    }
    Ok(Spec { inputs, component, file: header.file.to_path_buf(), line: spec.line })
}

fn read_input(field: &Field, name: &str) -> Result<Input, PipelineError> {
    let mut input = Input {
        name: name.to_owned(),
        kind: Type::String,
        default: None,
        options: None,
        regex: None,
        line: field.line,
        key: field.key.clone(),
    };
    if let Value::Null = field.node.value {
        return Ok(input);
    }
    field.check_keys(&["type", "default", "options", "regex", "description"])?;
    if let Some(kind) = field.get("type")? {
        input.kind = match kind.string()?.as_str() {
            "string" => Type::String,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            "array" => Type::Array,
            other => return Err(kind.error(format!("unknown input type `{other}` (string, number, boolean, array)"))),
        };
    }
    if let Some(description) = field.get("description")? {
        description.string()?;
    }
    if let Some(default) = field.get("default")? {
        if !input.kind.accepts(&default.node.value) {
            return Err(default.error(format!("`{name}` input: default value is not a {}", input.kind.name())));
        }
        input.default = Some(default.node.clone());
    }
    if let Some(options) = field.get("options")? {
        let items = options.items("a list of options")?;
        for item in &items {
            if !input.kind.accepts(&item.node.value) {
                return Err(item.error(format!("`{name}` input: option is not a {}", input.kind.name())));
            }
        }
        input.options = Some(items.iter().map(|i| i.node.clone()).collect());
    }
    if let Some(pattern) = field.get("regex")? {
        if input.kind != Type::String {
            return Err(pattern.error(format!("`{name}` input: RegEx validation can only be used with string inputs")));
        }
        let text = pattern.string()?;
        let text = text.strip_prefix('/').and_then(|t| t.strip_suffix('/')).unwrap_or(&text).to_owned();
        input.regex = Some(regex::Regex::new(&text).map_err(|e| pattern.error(format!("invalid regex: {e}")))?);
    }
    Ok(input)
}

/// The input values of a file: those given, checked against `spec`, else the defaults.
pub fn resolve(spec: Option<&Spec>, given: Given) -> Result<HashMap<String, Value>, PipelineError> {
    let Some(spec) = spec else {
        return match given {
            Given::Include(Some(inputs), ..) => {
                Err(inputs.error("Given inputs not defined in the `spec` section of the included configuration file"))
            }
            Given::CommandLine(values, file) if !values.is_empty() => Err(PipelineError::whole_file(
                file,
                "--input: the file has no `spec: inputs` header (a first YAML document) to take inputs",
            )),
            _ => Ok(HashMap::new()),
        };
    };
    // Each given value with where to report it.
    let mut values: Vec<(String, Value, PipelineError)> = Vec::new();
    match &given {
        Given::Include(Some(inputs), ..) => {
            for entry in inputs.map()?.iter() {
                let field = Field::entry(&inputs.key, entry);
                values.push((entry.key.clone(), entry.value.value.clone(), field.error("")));
                // (the message is filled in by `with_message`)
            }
        }
        Given::Include(None, ..) => {}
        Given::CommandLine(pairs, _) => {
            for (name, text) in pairs.iter() {
                let declared = spec.inputs.iter().find(|i| i.name == *name);
                let (line, key) = declared.map(|i| (i.line, i.key.clone())).unwrap_or((spec.line, "spec".into()));
                let at = PipelineError::new(&spec.file, line, key, format!("--input {name}={text}: "));
                let kind = declared.map(|i| i.kind).unwrap_or(Type::String);
                values.push((name.clone(), command_line_value(text, kind), at));
            }
        }
    }
    // `at` carries a prefix for the message (the `--input` flag), else none.
    let with_message = |at: &PipelineError, message: String| {
        let mut e = at.clone();
        e.message = format!("{}{message}", at.message);
        e
    };
    let missing_at = |message: String| match &given {
        Given::Include(_, file, line, key) => PipelineError::new(file, *line, *key, message),
        Given::CommandLine(..) => PipelineError::new(&spec.file, spec.line, "spec", format!("{message} (--input)")),
    };
    for (name, _, at) in &values {
        if !spec.inputs.iter().any(|i| i.name == *name) {
            return Err(with_message(at, format!("unknown input arguments: {name}")));
        }
    }
    let mut out = HashMap::new();
    for input in &spec.inputs {
        let name = &input.name;
        let (value, at) = match values.iter().find(|(n, ..)| n == name) {
            Some((_, value, at)) => (value.clone(), at.clone()),
            None => match &input.default {
                Some(default) => {
                    (default.value.clone(), PipelineError::new(&spec.file, input.line, input.key.clone(), ""))
                }
                None => return Err(missing_at(format!("`{name}` input: required value has not been provided"))),
            },
        };
        if !input.kind.accepts(&value) {
            return Err(with_message(&at, format!("`{name}` input: provided value is not a {}", input.kind.name())));
        }
        if let Some(options) = &input.options {
            if !options.iter().any(|o| o.value == value) {
                let shown = text_of(&value);
                return Err(with_message(
                    &at,
                    format!(
                        "`{name}` input: `{shown}` cannot be used because it is not in the list of allowed options"
                    ),
                ));
            }
        }
        if let (Some(regex), Value::Str(text)) = (&input.regex, &value) {
            if !regex.is_match(text) {
                return Err(with_message(
                    &at,
                    format!("`{name}` input: provided value does not match required RegEx pattern"),
                ));
            }
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// A `--input` value as the input's type reads it: a string stays text; a number, boolean or
/// array is read as YAML (`3`, `true`, `[a, b]`), so a wrong one fails the type check.
fn command_line_value(text: &str, kind: Type) -> Value {
    if kind == Type::String {
        return Value::Str(text.to_owned());
    }
    let file: std::rc::Rc<Path> = std::rc::Rc::from(Path::new("--input"));
    match super::yaml::load(text, &file) {
        Ok(node) => node.value,
        Err(_) => Value::Str(text.to_owned()),
    }
}

/// `value` written into a string.
fn text_of(value: &Value) -> String {
    match value {
        Value::Seq(items) => {
            let shown: Vec<String> = items
                .iter()
                .map(|i| match &i.value {
                    Value::Str(s) => format!("{s:?}"),
                    other => text_of(other),
                })
                .collect();
            format!("[{}]", shown.join(", "))
        }
        other => other.scalar_string().unwrap_or_default(),
    }
}

/// What the blocks of one file may read.
struct Scope<'a> {
    inputs: &'a HashMap<String, Value>,
    component: component::Scope<'a>,
}

/// Replaces every `$[[ inputs.name ]]` block in the keys and strings of `node`, a file with a
/// `spec:` header, `$[[ component.field ]]` blocks included:
/// the fields `spec` declares, from `context` when the file is a component's template.
pub fn interpolate_with(
    node: Node,
    spec: &Spec,
    inputs: &HashMap<String, Value>,
    context: Option<&ComponentContext>,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Node, PipelineError> {
    let component = component::Scope { declared: &spec.component, context };
    interpolate_node(node, &Scope { inputs, component }, vars, "")
}

fn interpolate_node(
    node: Node,
    scope: &Scope,
    vars: &dyn Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Node, PipelineError> {
    let at = |line: usize, message: String| PipelineError::new(&node.file, line, key, message);
    let value = match node.value {
        Value::Str(ref text) if text.contains("$[[") => {
            interpolate_text(text, scope, vars).map_err(|message| at(node.line, message))?
        }
        Value::Seq(ref items) => Value::Seq(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| interpolate_node(item.clone(), scope, vars, &format!("{key}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(ref map) => Value::Map(interpolate_map(map, scope, vars, key)?),
        ref other => other.clone(),
    };
    Ok(Node { value, ..node })
}

fn interpolate_map(
    map: &Map,
    scope: &Scope,
    vars: &dyn Fn(&str) -> Option<String>,
    parent: &str,
) -> Result<Map, PipelineError> {
    map.iter()
        .map(|entry| {
            let shown = if parent.is_empty() { entry.key.clone() } else { format!("{parent}.{}", entry.key) };
            let name = if entry.key.contains("$[[") {
                match interpolate_text(&entry.key, scope, vars) {
                    Ok(value) => text_of(&value),
                    Err(message) => return Err(PipelineError::new(&entry.value.file, entry.line, shown, message)),
                }
            } else {
                entry.key.clone()
            };
            let value = interpolate_node(entry.value.clone(), scope, vars, &shown)?;
            Ok(Entry { key: name, value, ..entry.clone() })
        })
        .collect()
}

/// A string with blocks → its value (typed when the string is one block).
fn interpolate_text(text: &str, scope: &Scope, vars: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$[[") {
        let Some(len) = rest[start..].find("]]") else { break };
        let block = &rest[start + 3..start + len];
        let value = evaluate_block(block.trim(), scope, vars)?;
        if start == 0 && len + 2 == rest.len() && out.is_empty() {
            return Ok(value);
        }
        out.push_str(&rest[..start]);
        out.push_str(&text_of(&value));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(Value::Str(out))
}

/// `inputs.name | fn | fn(args)`, or `component.field` (with functions too).
fn evaluate_block(block: &str, scope: &Scope, vars: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    let mut parts = block.split('|').map(str::trim);
    let access = parts.next().unwrap_or_default();
    let mut value = if let Some(name) = access.strip_prefix("inputs.") {
        scope.inputs.get(name).cloned().ok_or_else(|| format!("unknown interpolation key: `{name}`"))?
    } else if let Some(field) = access.strip_prefix("component.") {
        scope.component.value(field)?
    } else {
        return Err(format!(
            "invalid interpolation access pattern `{access}` (expected `inputs.<name>` or `component.<field>`)"
        ));
    };
    let functions: Vec<&str> = parts.collect();
    if functions.len() > MAX_FUNCTIONS {
        return Err(format!("too many functions in interpolation block (at most {MAX_FUNCTIONS})"));
    }
    for function in functions {
        let Value::Str(text) = &value else {
            return Err(format!("invalid input type: `{function}` can only be used with string inputs"));
        };
        value = Value::Str(apply(function, text, vars)?);
    }
    Ok(value)
}

fn apply(function: &str, text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if function == "expand_vars" {
        return Ok(variables::expand(text, vars));
    }
    let no_match =
        || format!("no function matching `{function}`: check that the function name, arguments, and types are correct");
    let args = function.strip_prefix("truncate").map(str::trim).and_then(|a| a.strip_prefix('(')?.strip_suffix(')'));
    let Some(args) = args else { return Err(no_match()) };
    let numbers: Vec<usize> =
        args.split(',').map(|a| a.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|_| no_match())?;
    let [offset, length] = numbers[..] else { return Err(no_match()) };
    Ok(text.chars().skip(offset).take(length).collect())
}

#[cfg(test)]
#[path = "inputs_tests.rs"]
mod tests;
