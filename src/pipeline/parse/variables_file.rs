//! The variables file (issue 15), gitlab-ci-local's `.gitlab-ci-local-variables.yml` shape, as
//! `.glci-variables.yml` in the project and `$GLCI_HOME/variables.yml`: what GitLab keeps as
//! project and group CI/CD variables. `KEY: value`, `KEY: {type: file, value: ...}`, or values
//! per environment scope, `KEY: {values: {"production": a, "review/*": b, "*": c}}`. Problems
//! are errors naming file, line and key. Pure but for reading the file.

use std::path::Path;
use std::rc::Rc;

use super::read::Field;
use super::yaml::{self, Value};
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::ProjectVariable;
use crate::pipeline::variables::is_name;

/// Reads `path`; `None` when there is no such file.
pub fn load_variables_file(path: &Path) -> Result<Option<Vec<ProjectVariable>>, PipelineError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_variables_file(&text, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PipelineError::whole_file(path, format!("cannot read: {e}"))),
    }
}

/// Parses the text of a variables file named `path` (in errors).
pub fn parse_variables_file(text: &str, path: &Path) -> Result<Vec<ProjectVariable>, PipelineError> {
    let file: Rc<Path> = Rc::from(path);
    let root = yaml::load(text, &file)?;
    let map = match &root.value {
        Value::Null => return Ok(Vec::new()),
        Value::Map(map) => map,
        other => {
            return Err(PipelineError::new(
                path,
                root.line,
                "",
                format!("expected a map of variables, found {}", other.kind()),
            ))
        }
    };
    let mut out = Vec::new();
    for entry in map.iter() {
        let field = Field::entry("", entry);
        if !is_name(&entry.key) {
            return Err(field.error("not a variable name (letters, digits and `_`, not starting with a digit)"));
        }
        out.push(variable(&entry.key, &field)?);
    }
    Ok(out)
}

fn scalar(field: &Field) -> Result<String, PipelineError> {
    field.node.value.scalar_string().ok_or_else(|| field.expected("a value (string, number or boolean)"))
}

fn variable(name: &str, field: &Field) -> Result<ProjectVariable, PipelineError> {
    let mut variable = ProjectVariable { name: name.to_string(), file: false, values: Vec::new() };
    if !matches!(field.node.value, Value::Map(_)) {
        variable.values.push(("*".into(), scalar(field)?));
        return Ok(variable);
    }
    field.check_keys(&["description", "type", "value", "values"])?;
    if let Some(kind) = field.get("type")? {
        variable.file = match kind.string()?.as_str() {
            "file" => true,
            "variable" | "env_var" => false,
            other => return Err(kind.error(format!("`{other}` is not a variable type (variable, file)"))),
        };
    }
    match (field.get("value")?, field.get("values")?) {
        (Some(value), None) => variable.values.push(("*".into(), scalar(&value)?)),
        (None, Some(values)) => {
            for entry in values.map()?.iter() {
                let scoped = Field::entry(&values.key, entry);
                variable.values.push((entry.key.clone(), scalar(&scoped)?));
            }
        }
        (Some(_), Some(values)) => return Err(values.error("give `value` or `values` (per environment), not both")),
        (None, None) => return Err(field.error("missing `value` (or `values` per environment)")),
    }
    Ok(variable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ProjectVariable>, PipelineError> {
        parse_variables_file(text, Path::new("/p/.glci-variables.yml"))
    }

    #[test]
    fn reads_the_three_forms() {
        let vars = parse(
            "PLAIN: hello\nPORT: 8080\nKEY:\n  type: file\n  value: |\n    line 1\n    line 2\n\
             URL:\n  values:\n    production: https://prod\n    'review/*': https://review\n    '*': http://local\n",
        )
        .expect("parses");
        assert_eq!(
            vars[0],
            ProjectVariable { name: "PLAIN".into(), file: false, values: vec![("*".into(), "hello".into())] }
        );
        assert_eq!(vars[1].values, [("*".to_string(), "8080".to_string())]);
        assert!(vars[2].file);
        assert_eq!(vars[2].values[0].1, "line 1\nline 2\n");
        assert_eq!(vars[3].values.len(), 3);
        assert_eq!(vars[3].value_for(Some("production")), Some("https://prod"));
        assert_eq!(vars[3].value_for(Some("review/x")), Some("https://review"));
        assert_eq!(vars[3].value_for(Some("staging")), Some("http://local"));
        assert_eq!(vars[3].value_for(None), Some("http://local"));
        assert!(parse("").expect("empty").is_empty());
    }

    #[test]
    fn bad_entries_name_line_and_key() {
        let e = parse("A: 1\nB:\n  type: secret\n  value: x\n").expect_err("bad type");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "B.type"), "{e}");
        let e = parse("A:\n  valeu: x\n").expect_err("typo");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "A.valeu"), "{e}");
        let e = parse("A:\n  type: file\n").expect_err("no value");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(parse("1A: x\n").is_err());
        assert!(parse("- a\n").is_err());
    }
}
