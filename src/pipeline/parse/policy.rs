//! `only:` / `except:` → [`Policy`]: the array form (ref patterns), or the map form with
//! `refs`, `variables` (expressions), `changes` and `kubernetes: active`, as GitLab's
//! `Gitlab::Ci::Config::Entry::Policy` accepts them. Pure; called by `job.rs`; `decide`
//! evaluates the result.

use super::read::Field;
use super::rule;
use super::yaml::Value;
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::Policy;
use crate::pipeline::rules;

/// Reads `only:` or `except:`.
pub fn policy(field: &Field) -> Result<Policy, PipelineError> {
    let location = field.location();
    match &field.node.value {
        Value::Seq(_) => {
            Ok(Policy { refs: Some(refs(field)?), variables: None, changes: None, kubernetes: false, location })
        }
        Value::Map(_) => {
            field.check_keys(&["refs", "variables", "changes", "kubernetes"])?;
            let refs = field.get("refs")?.map(|f| refs(&f)).transpose()?;
            let variables = match field.get("variables")? {
                None => None,
                Some(f) => Some(
                    f.items("a list of expressions")?
                        .iter()
                        .map(|item| {
                            let text = item.string()?;
                            rules::parse_condition(&text).map_err(|e| item.error(format!("invalid expression: {e}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let changes = field.get("changes")?.map(|f| rule::changes(&f)).transpose()?;
            let kubernetes = match field.get("kubernetes")? {
                None => false,
                Some(f) => match f.string()?.as_str() {
                    "active" => true,
                    other => return Err(f.error(format!("unknown value {other:?} (GitLab takes only `active`)"))),
                },
            };
            Ok(Policy { refs, variables, changes, kubernetes, location })
        }
        _ => Err(field.expected("a list of refs or {refs, variables, changes, kubernetes}")),
    }
}

/// Ref patterns: names, `/regex/` (checked here), keywords, each optionally `@group/project`.
fn refs(field: &Field) -> Result<Vec<String>, PipelineError> {
    let items = field.items("a list of refs")?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = item.name("a ref name, keyword or /regex/")?;
        let pattern = text.split_once('@').map_or(text.as_str(), |(p, _)| p);
        if pattern.len() > 1 && pattern.starts_with('/') {
            rules::Pattern::parse(pattern).map_err(|e| item.error(format!("invalid ref pattern: {e}")))?;
        }
        out.push(text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::rc::Rc;

    use crate::pipeline::parse::yaml;

    fn read(text: &str) -> Result<Policy, PipelineError> {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        let root = yaml::load(text, &file).unwrap();
        let Value::Map(map) = &root.value else { panic!("not a map") };
        policy(&Field::entry("job", map.get("k").unwrap()))
    }

    #[test]
    fn forms() {
        let p = read("k: [main, /^release-/, tags, branches@g/p]").unwrap();
        assert_eq!(p.refs.unwrap(), ["main", "/^release-/", "tags", "branches@g/p"]);
        let p = read(
            "k:\n  refs: [merge_requests]\n  variables: [$A == \"1\", $B]\n  changes: [src/*]\n  kubernetes: active\n",
        )
        .unwrap();
        assert_eq!(p.refs.unwrap(), ["merge_requests"]);
        assert_eq!(p.variables.unwrap().len(), 2);
        assert_eq!(p.changes.unwrap().paths, ["src/*"]);
        assert!(p.kubernetes);
        let p = read("k:\n  changes:\n    paths: [a]\n    compare_to: main\n").unwrap();
        assert_eq!((p.refs, p.changes.unwrap().compare_to.unwrap().0), (None, "main".to_string()));
    }

    #[test]
    fn errors() {
        let cases = [
            ("k: main", "job.k", "expected a list of refs or {refs"),
            ("k: {ref: [main]}", "job.k.ref", "unknown key"),
            ("k: {kubernetes: enabled}", "job.k.kubernetes", "only `active`"),
            ("k: {variables: [$A ==]}", "job.k.variables[0]", "invalid expression"),
            ("k: ['/(/']", "job.k[0]", "invalid ref pattern"),
            ("k: ['']", "job.k[0]", "found an empty string"),
        ];
        for (text, key, want) in cases {
            let e = read(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }
}
