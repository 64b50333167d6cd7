//! A CI/CD component's context (issue 17): `spec: component: [name, sha, version, reference]`
//! in a template's header declares which of them its `$[[ component.<field> ]]` blocks read, as
//! GitLab's component context interpolation does (gitlab-org/gitlab MRs 206183, 208965): `name`
//! the component's name (the address's last part before `@`), `sha` the commit the reference
//! resolved to, `version` the semantic version it resolved to (`@1.0` → `1.0.2`, `~latest` →
//! the latest release; none for a branch, a SHA or a project without such releases), and
//! `reference` the reference as written after `@`. Pure; `inputs` interpolates, `include`
//! hands the context of the fetched component.

use super::read::Field;
use super::yaml::Value;
use crate::pipeline::error::PipelineError;

/// The fields `spec: component` may name.
pub const FIELDS: [&str; 4] = ["name", "sha", "version", "reference"];

/// What the instance told about a fetched component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentContext {
    pub name: String,
    /// `None` when the commit could not be asked for (offline, no cached answer).
    pub sha: Option<String>,
    pub version: Option<String>,
    pub reference: String,
}

/// `spec: component`: a list of [`FIELDS`].
pub fn declared(field: &Field) -> Result<Vec<String>, PipelineError> {
    let items = field.items("a list of component fields (name, sha, version, reference)")?;
    let mut out = Vec::new();
    for item in items {
        let name = item.string()?;
        if !FIELDS.contains(&name.as_str()) {
            return Err(item.error(format!("unknown component field {name:?} (use name, sha, version or reference)")));
        }
        out.push(name);
    }
    Ok(out)
}

/// The `component.` half of a file's interpolation: what its header declared, and the context
/// when the file is a component's template.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    pub declared: &'a [String],
    pub context: Option<&'a ComponentContext>,
}

impl Scope<'_> {
    /// The value of `$[[ component.<field> ]]`; a version that did not resolve is null, as on
    /// GitLab (written as an empty string inside a longer text).
    pub fn value(&self, field: &str) -> Result<Value, String> {
        if !FIELDS.contains(&field) {
            return Err(format!(
                "unknown interpolation key: `component.{field}` (use name, sha, version or reference)"
            ));
        }
        if !self.declared.iter().any(|d| d == field) {
            return Err(format!("`component.{field}` is not declared in the header's `spec: component` list"));
        }
        let Some(context) = self.context else {
            return Err(format!(
                "`component.{field}` has no value: the file was not included with `include: component`"
            ));
        };
        Ok(match field {
            "name" => Value::Str(context.name.clone()),
            "reference" => Value::Str(context.reference.clone()),
            "version" => context.version.clone().map(Value::Str).unwrap_or(Value::Null),
            _ => match &context.sha {
                Some(sha) => Value::Str(sha.clone()),
                None => return Err("`component.sha`: the component's commit could not be asked for".to_string()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_only_when_declared_and_included_as_a_component() {
        let context = ComponentContext {
            name: "build".into(),
            sha: Some("a".repeat(40)),
            version: Some("1.2.3".into()),
            reference: "1.2".into(),
        };
        let declared: Vec<String> = ["name", "version", "reference", "sha"].map(String::from).to_vec();
        let scope = Scope { declared: &declared, context: Some(&context) };
        assert_eq!(scope.value("name"), Ok(Value::Str("build".into())));
        assert_eq!(scope.value("version"), Ok(Value::Str("1.2.3".into())));
        assert_eq!(scope.value("reference"), Ok(Value::Str("1.2".into())));
        assert_eq!(scope.value("sha"), Ok(Value::Str("a".repeat(40))));
        assert!(scope.value("path").unwrap_err().contains("unknown interpolation key"));
        let branch = ComponentContext { version: None, sha: None, ..context.clone() };
        let scope = Scope { declared: &declared, context: Some(&branch) };
        assert_eq!(scope.value("version"), Ok(Value::Null));
        assert!(scope.value("sha").unwrap_err().contains("could not be asked for"));
        let only_name = vec!["name".to_string()];
        let scope = Scope { declared: &only_name, context: Some(&context) };
        assert!(scope.value("version").unwrap_err().contains("not declared"));
        let scope = Scope { declared: &only_name, context: None };
        assert!(scope.value("name").unwrap_err().contains("not included with `include: component`"));
    }
}
