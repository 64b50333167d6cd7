//! `rules:` entries of a job or of `workflow:` → [`Rule`]s (`if` parsed by `pipeline::rules`,
//! `when`, `start_in`, `variables`, `needs`, `auto_cancel`) and their `changes:` and `exists:`
//! clauses, also read by `only`/`except` (`policy.rs`) and `include: rules` (`include_rules.rs`).
//! Errors name file, line and key. Pure.

use super::read::{auto_cancel, variables, when, Field, WhenIn};
use super::yaml::Value;
use super::{needs, run_keys};
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{Changes, Rule, When};
use crate::pipeline::rules;

/// `rules:` of a job (`workflow == false`) or of `workflow:`.
pub fn rules(field: &Field, workflow: bool) -> Result<Vec<Rule>, PipelineError> {
    field.items("a list of rules")?.iter().map(|item| rule(item, workflow)).collect()
}

fn rule(field: &Field, workflow: bool) -> Result<Rule, PipelineError> {
    if !matches!(field.node.value, Value::Map(_)) {
        return Err(field.expected("a rule (a map with if, exists, when, ...)"));
    }
    let allowed: &[&str] = if workflow {
        &["if", "exists", "changes", "when", "variables", "auto_cancel"]
    } else {
        &["if", "exists", "changes", "when", "allow_failure", "variables", "start_in", "interruptible", "needs"]
    };
    field.check_keys(allowed)?;
    let condition = match field.get("if")? {
        None => None,
        Some(f) => Some(rules::parse_condition(&f.string()?).map_err(|e| f.error(format!("invalid expression: {e}")))?),
    };
    let (exists, exists_in) = field.get("exists")?.map(|f| exists(&f)).transpose()?.unwrap_or_default();
    let place = if workflow { WhenIn::WorkflowRule } else { WhenIn::JobRule };
    // A job rule's `when: delayed` runs the job on_success after its `start_in` (GitLab's
    // Rules::Rule entry: start_in with delayed only, a week at most).
    let delayed =
        !workflow && matches!(field.get("when")?, Some(f) if matches!(&f.node.value, Value::Str(s) if s == "delayed"));
    let when = match field.get("when")? {
        Some(_) if delayed => Some(When::OnSuccess),
        Some(f) => Some(when(&f, place)?),
        None => None,
    };
    let start_in = match (field.get("start_in")?, delayed) {
        (Some(f), true) => Some(run_keys::start_in(&f)?),
        (Some(f), false) => return Err(f.error("`start_in` is used only with `when: delayed`")),
        (None, true) => {
            let at = field.get("when")?.unwrap_or_else(|| field.clone());
            return Err(at.error("`when: delayed` needs `start_in` (how long to wait)"));
        }
        (None, false) => None,
    };
    let allow_failure = field.get("allow_failure")?.map(|f| f.boolean()).transpose()?;
    // Means nothing locally (glci cancels no pipeline), but GitLab checks it is a boolean.
    if let Some(f) = field.get("interruptible")? {
        f.boolean()?;
    }
    let variables = field.get("variables")?.map(|f| variables(&f)).transpose()?.unwrap_or_default();
    let changes = field.get("changes")?.map(|f| changes(&f)).transpose()?;
    if let Some(f) = field.get("auto_cancel")? {
        auto_cancel(&f)?;
    }
    let needs = field.get("needs")?.map(|f| needs::rule_needs(&f)).transpose()?;
    Ok(Rule {
        condition,
        exists,
        when,
        allow_failure,
        variables,
        location: field.location(),
        changes,
        needs,
        start_in,
        exists_in,
    })
}

/// GitLab's limit on `changes` paths (`rules:changes:paths config has too many entries`).
const MAX_CHANGES_PATHS: usize = 50;

/// `changes:` a list of globs or `{paths: [...], compare_to: REF}` (rules and `only`/`except`).
pub fn changes(field: &Field) -> Result<Changes, PipelineError> {
    let (paths_field, compare_to) = match &field.node.value {
        Value::Map(_) => {
            field.check_keys(&["paths", "compare_to"])?;
            let paths = field.get("paths")?.ok_or_else(|| field.error("missing `paths`"))?;
            let compare_to = match field.get("compare_to")? {
                Some(f) => Some((f.name("a ref (branch, tag or commit SHA)")?, f.location())),
                None => None,
            };
            (paths, compare_to)
        }
        _ => (field.clone(), None),
    };
    if !matches!(paths_field.node.value, Value::Seq(_)) {
        return Err(paths_field.expected("a list of paths"));
    }
    let paths = paths_field.strings()?;
    if paths.len() > MAX_CHANGES_PATHS {
        return Err(paths_field.error(format!("too many paths (GitLab allows at most {MAX_CHANGES_PATHS})")));
    }
    Ok(Changes { paths, compare_to })
}

/// `exists:` a list of globs or `{paths: [...]}`.
/// A job rule's `exists:` globs, and the project (and ref) named by `{paths, project, ref}`.
type Exists = (Vec<String>, Option<(String, Option<String>)>);

fn exists(field: &Field) -> Result<Exists, PipelineError> {
    match &field.node.value {
        Value::Map(_) => {
            field.check_keys(&["paths", "project", "ref"])?;
            let project = field.get("project")?.map(|f| f.name("a project path")).transpose()?;
            let reference = field.get("ref")?;
            let within = match (project, reference) {
                (Some(project), reference) => Some((project, reference.map(|r| r.name("a ref")).transpose()?)),
                (None, Some(reference)) => {
                    return Err(reference.error("`ref` goes with `project` (the project whose files to look in)"))
                }
                (None, None) => None,
            };
            Ok((field.get("paths")?.ok_or_else(|| field.error("missing `paths`"))?.strings()?, within))
        }
        Value::Str(s) => Ok((vec![s.clone()], None)),
        _ => Ok((field.strings()?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::pipeline::model::{Location, Variable};
    use crate::pipeline::parse::read::tests::{err, with_field};

    #[test]
    fn exists_may_name_another_project() {
        let r = with_field(
            "k: [{exists: {paths: [a], project: $P, ref: v1}}, {exists: {paths: [b], project: g/q}}]",
            |f| rules(f, false),
        )
        .unwrap();
        assert_eq!(
            (r[0].exists.as_slice(), r[0].exists_in.clone()),
            (&["a".to_string()][..], Some(("$P".into(), Some("v1".into()))))
        );
        assert_eq!(r[1].exists_in, Some(("g/q".into(), None)));
    }

    #[test]
    fn delayed_rules_take_start_in() {
        let rules_of = |text: &str| with_field(text, |f| rules(f, false));
        let r = rules_of("k: [{if: $X, when: delayed, start_in: 10 minutes}]").unwrap();
        assert_eq!((r[0].when, r[0].start_in), (Some(When::OnSuccess), Some(Duration::from_secs(600))));
        assert_eq!(rules_of("k: [{when: delayed}]").unwrap_err().key, "job.k[0].when");
        assert_eq!(rules_of("k: [{when: manual, start_in: 1 minute}]").unwrap_err().key, "job.k[0].start_in");
        assert!(rules_of("k: [{when: delayed, start_in: 2 weeks}]").unwrap_err().message.contains("a week or less"));
    }

    #[test]
    fn rule_forms() {
        let r = with_field(
            "k:\n  - if: $CI_COMMIT_BRANCH == \"main\"\n    when: manual\n    allow_failure: true\n    \
             variables: {A: b}\n  - exists: [Dockerfile]\n    changes: [src/**/*]\n  - exists: {paths: [a, b]}\n  \
             - when: never\n",
            |f| rules(f, false),
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert!(r[0].condition.is_some());
        assert_eq!(r[0].when, Some(When::Manual));
        assert_eq!(r[0].allow_failure, Some(true));
        assert_eq!(r[0].variables, [Variable { name: "A".into(), value: "b".into() }]);
        assert_eq!(r[0].location, Location { file: "ci.yml".into(), line: 2 });
        assert_eq!((r[1].condition.as_ref(), r[1].exists.as_slice()), (None, ["Dockerfile".to_owned()].as_slice()));
        assert_eq!(r[2].exists, ["a", "b"]);
        assert_eq!((r[3].when, r[3].location.line), (Some(When::Never), 9));
        assert_eq!(r[1].changes, Some(Changes { paths: vec!["src/**/*".into()], compare_to: None }));
        assert_eq!(r[0].changes, None);

        let cases = [
            ("k:\n  - if: $A ==\n", false, 2, "job.k[0].if", "invalid expression: unexpected end"),
            ("k:\n  - if: [x]\n", false, 2, "job.k[0].if", "expected a string"),
            ("k:\n  - when: manual\n", true, 2, "job.k[0].when", "workflow rules take"),
            ("k:\n  - allow_failure: true\n", true, 2, "job.k[0].allow_failure", "unknown key"),
            ("k:\n  - iff: $A\n", false, 2, "job.k[0].iff", "unknown key (accepted: if, exists, changes"),
            ("k:\n  - needs: a\n", false, 2, "job.k[0].needs", "expected a list of jobs"),
            ("k:\n  - needs: [a]\n", true, 2, "job.k[0].needs", "unknown key"),
            ("k:\n  - $A\n", false, 2, "job.k[0]", "expected a rule"),
            ("k:\n  - exists: {ref: main, paths: [a]}\n", false, 2, "job.k[0].exists.ref", "goes with `project`"),
            ("k: {if: $A}\n", false, 1, "job.k", "expected a list of rules"),
            ("k:\n  - changes: src/a\n", false, 2, "job.k[0].changes", "expected a list of paths, found a string"),
            ("k:\n  - changes: {compare_to: main}\n", false, 2, "job.k[0].changes", "missing `paths`"),
            ("k:\n  - changes: {paths: [a], compare: x}\n", false, 2, "job.k[0].changes.compare", "unknown key"),
            ("k:\n  - changes: {paths: [a], compare_to: ''}\n", false, 2, "job.k[0].changes.compare_to", "empty"),
        ];
        for (text, workflow, line, key, want) in cases {
            let e = err(text, |f| rules(f, workflow));
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn changes_forms() {
        let c = with_field("k: [a.txt, 'src/**/*.{rs,toml}']", changes).unwrap();
        assert_eq!(c, Changes { paths: vec!["a.txt".into(), "src/**/*.{rs,toml}".into()], compare_to: None });
        let c = with_field("k:\n  paths: [a]\n  compare_to: refs/heads/main\n", changes).unwrap();
        assert_eq!(c.paths, ["a"]);
        assert_eq!(c.compare_to, Some(("refs/heads/main".into(), Location { file: "ci.yml".into(), line: 3 })));
        let many = format!("k: [{}]", (0..51).map(|i| format!("f{i}")).collect::<Vec<_>>().join(", "));
        assert!(err(&many, changes).message.contains("at most 50"));
    }
}
