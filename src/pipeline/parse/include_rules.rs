//! Which include entries are kept: `rules:` on an include (`if`, `exists`, `changes`,
//! `when: never`/`always`), as GitLab's `External::Rules` evaluates them, with the variables
//! `include` sees and the project's files and changes from [`Sources`](super::Sources). In a
//! file of another project, as GitLab's nested include context does: `exists` looks at that
//! project's files at its ref (fetched), `changes` at the running pipeline's changes;
//! `exists: {paths, project, ref}` names the project to look in.

use super::{Expander, Origin};
use crate::pipeline::changes::{self, ChangedPaths};
use crate::pipeline::error::PipelineError;
use crate::pipeline::parse::read::Field;
use crate::pipeline::parse::rule;
use crate::pipeline::parse::yaml::Value;
use crate::pipeline::{glob, rules, variables};

impl Expander<'_> {
    /// `rules:` of an include entry: kept when the first rule that matches is not `when: never`;
    /// dropped when none matches. No `rules`: kept.
    pub(super) fn rules_keep(&self, item: &Field, origin: &Origin) -> Result<bool, PipelineError> {
        let Some(rules) = item.get("rules")? else {
            return Ok(true);
        };
        for rule in rules.items("a list of rules")? {
            rule.map()?;
            rule.check_keys(&["if", "exists", "changes", "when"])?;
            let when = match rule.get("when")? {
                None => true,
                Some(when) => match when.string().ok().as_deref() {
                    Some("never") => false,
                    Some("always") => true,
                    _ => return Err(when.error("`when` in include rules is `never` or `always`")),
                },
            };
            if self.rule_matches(&rule, origin)? {
                return Ok(when);
            }
        }
        Ok(false)
    }

    fn rule_matches(&self, rule: &Field, origin: &Origin) -> Result<bool, PipelineError> {
        let vars = self.sources.variables;
        if let Some(condition) = rule.get("if")? {
            let expr = rules::parse_condition(&condition.string()?)
                .map_err(|e| condition.error(format!("invalid expression: {e}")))?;
            if !rules::evaluate(&expr, vars) {
                return Ok(false);
            }
        }
        if let Some(field) = rule.get("changes")? {
            if !self.changes_hold(&field)? {
                return Ok(false);
            }
        }
        let Some(exists) = rule.get("exists")? else {
            return Ok(true);
        };
        let mut elsewhere: Option<(String, String)> = match origin {
            Origin::Project { project, reference } => Some((project.clone(), reference.clone())),
            Origin::Here { .. } => None,
        };
        let patterns = match &exists.node.value {
            Value::Str(s) => vec![s.clone()],
            Value::Map(_) => {
                exists.check_keys(&["paths", "project", "ref"])?;
                if let Some(project) = exists.get("project")? {
                    let project = variables::expand(&project.name("a project path")?, vars);
                    let reference = exists.get("ref")?.map(|r| r.name("a ref")).transpose()?;
                    let reference = reference.map(|r| variables::expand(&r, vars)).unwrap_or_else(|| "HEAD".into());
                    elsewhere = Some((project, reference));
                } else if let Some(reference) = exists.get("ref")? {
                    return Err(reference.error("`ref` goes with `project` (the project whose files to look in)"));
                }
                exists.get("paths")?.ok_or_else(|| exists.error("missing `paths`"))?.strings()?
            }
            _ => exists.strings()?,
        };
        let fetched;
        let files: &[String] = match &elsewhere {
            None => self.sources.files,
            Some((project, reference)) => {
                fetched = self.project_files(project, reference, &exists)?;
                &fetched
            }
        };
        Ok(patterns.iter().any(|pattern| {
            let globs = glob::Globs::new(&glob::expand_braces(&variables::expand(pattern, vars)));
            files.iter().any(|f| globs.matches(f))
        }))
    }

    /// `rules: changes` of an include, as GitLab's `Clause::Changes` evaluates it for jobs.
    fn changes_hold(&self, field: &Field) -> Result<bool, PipelineError> {
        let clause = rule::changes(field)?;
        let vars = self.sources.variables;
        let mut changed = ChangedPaths::default();
        let known = |result: Result<Option<Vec<String>>, String>| result.map_err(|e| field.error(e));
        match &clause.compare_to {
            None => changed.default = known((self.sources.changed)(None))?,
            Some((reference, _)) => {
                let reference = changes::expand_existing(reference, vars);
                match (self.sources.changed)(Some(&reference)) {
                    Ok(Some(paths)) => {
                        changed.against.insert(reference, Ok(paths));
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        changed.against.insert(reference, Err(reason));
                    }
                }
            }
        }
        changes::holds(&clause, &changed, vars).map_err(|e| {
            let message = format!("compare_to `{}`: {}", e.reference, e.reason);
            match &clause.compare_to {
                Some((_, at)) => PipelineError::new(&at.file, at.line, format!("{}.compare_to", field.key), message),
                None => field.error(message),
            }
        })
    }
}
