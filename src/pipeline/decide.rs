//! Which jobs are in the pipeline, and why: job `rules` (`if`, `exists`, `changes`, their
//! `when`/`allow_failure`/`variables`/`needs`), else `only`/`except` (GitLab's
//! `Gitlab::Ci::Build::Policy`: `refs` with keywords and `/regex/`, `variables`, `changes`,
//! `kubernetes`), else the job's own `when`. Also the rule matching `workflow: rules` uses. Pure:
//! the variables, project files and changed paths come in. Called by `plan`.

use super::changes;
use super::error::PipelineError;
use super::facts::RunFacts;
use super::glob;
use super::model::{AllowFailure, Job, Location, Need, Policy, Rule, When};
use super::rules::{self, Pattern};
use super::variables::{self, VarSet};

/// What the rules (or `only`/`except`) of one job decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// `Never`: the job is not in the pipeline.
    pub when: When,
    pub allow_failure: AllowFailure,
    /// The matching rule's `variables` (raw).
    pub rule_variables: VarSet,
    /// The job's `needs`, or the matching rule's when it has some.
    pub needs: Option<Vec<Need>>,
    /// Why, for `glci run --list`: `rule 2 (.gitlab-ci.yml:14) matched`, `no rule matched`...
    pub reason: String,
    /// `when: delayed`: how long the job waits (the job's own `start_in`, or the rule's).
    pub start_in: Option<std::time::Duration>,
}

fn error_at(location: &Location, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
    PipelineError::new(&location.file, location.line.max(1), key, message)
}

/// Decides `job` with its variables `vars`: [`job_rules`], then a `trigger: project` job that
/// they keep is left out with the reason, unless `[gitlab.projects]` maps its project to a
/// local checkout (issue 17: then it runs that checkout's pipeline).
pub fn job(job: &Job, vars: &VarSet, facts: &RunFacts, workflow_rules: bool) -> Result<Decision, PipelineError> {
    let decision = job_rules(job, vars, facts, workflow_rules)?;
    match &job.trigger {
        Some(project) if decision.when != When::Never && !facts.projects.contains_key(project) => Ok(Decision {
            when: When::Never,
            reason: format!(
                "trigger: project `{project}`: skipped, multi-project pipelines are not run locally unless \
                 `[gitlab.projects]` maps the project to a checkout ({})",
                decision.reason
            ),
            ..decision
        }),
        _ => Ok(decision),
    }
}

/// What `rules` or `only`/`except` decide for `job`. Without `rules`, a job has GitLab's default
/// `only: [branches, tags]` unless it writes `only` or the pipeline has `workflow: rules`
/// (`Entry::Job#compose!` drops the defaults then), so by default a merge request pipeline
/// holds only the jobs that ask for it.
fn job_rules(job: &Job, vars: &VarSet, facts: &RunFacts, workflow_rules: bool) -> Result<Decision, PipelineError> {
    let own = |reason: String| Decision {
        when: job.when,
        allow_failure: job.allow_failure.clone(),
        rule_variables: VarSet::new(),
        needs: job.needs.clone(),
        reason,
        start_in: job.run_keys.start_in,
    };
    if !job.rules.is_empty() {
        let Some((i, rule)) = first_match(&job.rules, vars, facts, &job.name)? else {
            return Ok(Decision { when: When::Never, reason: "no rule matched".into(), ..own(String::new()) });
        };
        let allow_failure = match rule.allow_failure {
            Some(true) => AllowFailure::Yes,
            Some(false) => AllowFailure::No,
            None => job.allow_failure.clone(),
        };
        let needs = rule.needs.clone().or_else(|| job.needs.clone());
        let at = format!("{}:{}", rule.location.file.display(), rule.location.line);
        return Ok(Decision {
            when: rule.when.unwrap_or(job.when),
            allow_failure,
            rule_variables: set_of(&rule.variables),
            needs,
            reason: format!("rule {} ({at}) matched", i + 1),
            start_in: rule.start_in,
        });
    }
    if job.only.is_none() && job.except.is_none() && workflow_rules {
        return Ok(own("no rules".into()));
    }
    let lookup = |name: &str| vars.get(name).map(String::from);
    let default_only = Policy {
        refs: Some(vec!["branches".into(), "tags".into()]),
        variables: None,
        changes: None,
        kubernetes: false,
        location: job.location.clone(),
    };
    let only = job.only.as_ref().or((!workflow_rules).then_some(&default_only));
    let key = format!("{}.only", job.name);
    if let Some(only) = only {
        if let Some(failed) = unmet(only, &lookup, facts, &key)?.into_iter().next() {
            let shown = if job.only.is_some() { "only" } else { "default only: [branches, tags]" };
            return Ok(Decision { when: When::Never, reason: format!("{shown}: {failed}"), ..own(String::new()) });
        }
    }
    if let Some(except) = &job.except {
        let key = format!("{}.except", job.name);
        if let Some(met) = met(except, &lookup, facts, &key)?.into_iter().next() {
            return Ok(Decision { when: When::Never, reason: format!("except: {met}"), ..own(String::new()) });
        }
    }
    let shown = match (&job.only, &job.except) {
        (None, None) => "no rules",
        (Some(_), _) => "only/except allow it",
        (None, Some(_)) => "except does not exclude it",
    };
    Ok(own(shown.into()))
}

fn set_of(vars: &[super::model::Variable]) -> VarSet {
    let mut set = VarSet::new();
    for v in vars {
        set.set(&v.name, v.value.clone());
    }
    set
}

/// The first rule that matches, with its index. `owner` names the rules in errors (`build`,
/// `workflow`).
pub fn first_match<'r>(
    rules: &'r [Rule],
    vars: &VarSet,
    facts: &RunFacts,
    owner: &str,
) -> Result<Option<(usize, &'r Rule)>, PipelineError> {
    for (i, rule) in rules.iter().enumerate() {
        if rule_matches(rule, vars, facts, &format!("{owner}.rules[{i}]"))? {
            return Ok(Some((i, rule)));
        }
    }
    Ok(None)
}

/// Whether one rule matches: its `if` holds, one of its `exists` globs names a file and one of
/// its `changes` globs a changed file (GitLab's clauses: all of them must hold).
fn rule_matches(rule: &Rule, vars: &VarSet, facts: &RunFacts, key: &str) -> Result<bool, PipelineError> {
    let lookup = |name: &str| vars.get(name).map(String::from);
    if let Some(condition) = &rule.condition {
        if !rules::evaluate(condition, &lookup) {
            return Ok(false);
        }
    }
    // `exists: {project, ref}` looks at that project's files (Rules::Rule::Clause::Exists
    // with a changed context), asked for through the facts.
    let elsewhere = match &rule.exists_in {
        None => None,
        Some((project, reference)) => {
            let project = variables::expand(project, &lookup);
            let reference = reference.as_ref().map_or_else(|| "HEAD".to_string(), |r| variables::expand(r, &lookup));
            let problem = |why: String| {
                error_at(
                    &rule.location,
                    format!("{key}.exists.project"),
                    format!("`{project}` at `{reference}`: {why}"),
                )
            };
            let Some(list) = &facts.project_files.0 else {
                return Err(problem("no GitLab instance to ask for its files".into()));
            };
            Some(list(&project, &reference).map_err(problem)?)
        }
    };
    let files = elsewhere.as_deref().unwrap_or(&facts.files);
    let exists = rule.exists.is_empty()
        || rule.exists.iter().any(|pattern| {
            let pattern = variables::expand(pattern, &lookup);
            let globs = glob::Globs::new(&glob::expand_braces(&pattern));
            files.iter().any(|f| globs.matches(f))
        });
    if !exists {
        return Ok(false);
    }
    match &rule.changes {
        None => Ok(true),
        Some(clause) => changes_hold(clause, &rule.location, &lookup, facts, key),
    }
}

fn changes_hold(
    clause: &super::model::Changes,
    location: &Location,
    lookup: &dyn Fn(&str) -> Option<String>,
    facts: &RunFacts,
    key: &str,
) -> Result<bool, PipelineError> {
    changes::holds(clause, &facts.changes, lookup).map_err(|e| {
        let at = clause.compare_to.as_ref().map_or(location, |(_, at)| at);
        error_at(at, format!("{key}.changes.compare_to"), format!("`{}` is not a valid ref: {}", e.reference, e.reason))
    })
}

/// The conditions of `policy` that do not hold, described (`only` needs every one to hold).
fn unmet(
    policy: &Policy,
    lookup: &dyn Fn(&str) -> Option<String>,
    facts: &RunFacts,
    key: &str,
) -> Result<Vec<String>, PipelineError> {
    Ok(conditions(policy, lookup, facts, key)?.into_iter().filter(|(holds, _)| !holds).map(|(_, what)| what).collect())
}

/// The conditions of `policy` that hold, described (`except` excludes when one does).
fn met(
    policy: &Policy,
    lookup: &dyn Fn(&str) -> Option<String>,
    facts: &RunFacts,
    key: &str,
) -> Result<Vec<String>, PipelineError> {
    Ok(conditions(policy, lookup, facts, key)?.into_iter().filter(|(holds, _)| *holds).map(|(_, what)| what).collect())
}

/// Each condition of a policy: whether it holds, and what it is.
fn conditions(
    policy: &Policy,
    lookup: &dyn Fn(&str) -> Option<String>,
    facts: &RunFacts,
    key: &str,
) -> Result<Vec<(bool, String)>, PipelineError> {
    let mut out = Vec::new();
    if let Some(refs) = &policy.refs {
        let pipeline = PipelineRef::of(lookup);
        let holds = refs.iter().any(|pattern| pipeline.matches(pattern));
        out.push((holds, format!("refs [{}] ({})", refs.join(", "), pipeline.shown())));
    }
    if let Some(expressions) = &policy.variables {
        let holds = expressions.iter().any(|e| rules::evaluate(e, lookup));
        out.push((holds, "variables".to_string()));
    }
    if let Some(clause) = &policy.changes {
        let holds = changes_hold(clause, &policy.location, lookup, facts, key)?;
        out.push((holds, format!("changes [{}]", clause.paths.join(", "))));
    }
    if policy.kubernetes {
        // No Kubernetes integration is ever active for a local run.
        out.push((false, "kubernetes: active (never locally)".to_string()));
    }
    Ok(out)
}

/// What `refs` patterns are matched against: the pipeline's ref, kind and source.
struct PipelineRef {
    reference: String,
    tag: bool,
    merge_request: bool,
    /// `CI_PIPELINE_SOURCE` without `_event`, as GitLab's `sanitized_source_name`.
    source: String,
    project: String,
}

impl PipelineRef {
    fn of(lookup: &dyn Fn(&str) -> Option<String>) -> PipelineRef {
        let tag = lookup("CI_COMMIT_TAG").filter(|t| !t.is_empty());
        let source = lookup("CI_PIPELINE_SOURCE").unwrap_or_else(|| "push".into());
        let reference = tag.clone().or_else(|| lookup("CI_COMMIT_REF_NAME")).unwrap_or_default();
        PipelineRef {
            reference,
            tag: tag.is_some(),
            merge_request: source == "merge_request_event",
            source: source.strip_suffix("_event").unwrap_or(&source).to_string(),
            project: lookup("CI_PROJECT_PATH").unwrap_or_default(),
        }
    }

    fn is_branch(&self) -> bool {
        !self.tag && !self.merge_request
    }

    fn shown(&self) -> String {
        let kind = if self.tag {
            "tag"
        } else if self.merge_request {
            "merge request"
        } else {
            "branch"
        };
        format!("{kind} `{}`, source {}", self.reference, self.source)
    }

    /// GitLab's `Policy::Refs#satisfied_by?` for one pattern (`pattern@group/project`).
    fn matches(&self, written: &str) -> bool {
        let (pattern, path) = match written.split_once('@') {
            Some((pattern, path)) => (pattern, Some(path)),
            None => (written, None),
        };
        if path.is_some_and(|p| p != self.project) {
            return false;
        }
        if (self.tag && pattern == "tags") || (self.is_branch() && pattern == "branches") {
            return true;
        }
        if self.source == pattern || pluralize(&self.source) == pattern {
            return true;
        }
        if self.source == "external_merge_request" && pattern == "merge_requests" {
            return true;
        }
        // Names and regexes match only branch and tag pipelines.
        if !(self.is_branch() || self.tag) {
            return false;
        }
        match Pattern::parse(pattern) {
            Ok(regex) if pattern.starts_with('/') => regex.is_match(&self.reference),
            _ => pattern == self.reference,
        }
    }
}

/// ActiveSupport's `pluralize` for the pipeline source names (`push` → `pushes`,
/// `schedule` → `schedules`, `merge_request` → `merge_requests`).
fn pluralize(word: &str) -> String {
    if ["s", "x", "z", "sh", "ch"].iter().any(|end| word.ends_with(end)) {
        format!("{word}es")
    } else if word.ends_with('y') && !word.ends_with("ay") && !word.ends_with("ey") && !word.ends_with("oy") {
        format!("{}ies", &word[..word.len() - 1])
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn refs(pairs: &[(&str, &str)]) -> PipelineRef {
        PipelineRef::of(&lookup(pairs))
    }

    #[test]
    fn ref_patterns_as_gitlab_matches_them() {
        let branch =
            refs(&[("CI_COMMIT_REF_NAME", "release-1.2"), ("CI_PIPELINE_SOURCE", "push"), ("CI_PROJECT_PATH", "g/p")]);
        for (pattern, want) in [
            ("branches", true),
            ("tags", false),
            ("release-1.2", true),
            ("release", false),
            ("/^release-/", true),
            ("/^RELEASE-/i", true),
            ("/^main$/", false),
            ("pushes", true),
            ("push", true),
            ("schedules", false),
            ("merge_requests", false),
            ("branches@g/p", true),
            ("branches@other/p", false),
            ("/^release-/@g/p", true),
        ] {
            assert_eq!(branch.matches(pattern), want, "{pattern}");
        }
        let tag = refs(&[("CI_COMMIT_TAG", "v1.0"), ("CI_COMMIT_REF_NAME", "v1.0"), ("CI_PIPELINE_SOURCE", "push")]);
        assert!(tag.matches("tags") && !tag.matches("branches") && tag.matches("/^v\\d/") && tag.matches("v1.0"));
        let mr = refs(&[("CI_COMMIT_REF_NAME", "feature"), ("CI_PIPELINE_SOURCE", "merge_request_event")]);
        assert!(mr.matches("merge_requests") && !mr.matches("branches") && !mr.matches("feature"));
        assert!(!mr.matches("/feature/"), "names and regexes never match merge request pipelines");
        let schedule = refs(&[("CI_COMMIT_REF_NAME", "main"), ("CI_PIPELINE_SOURCE", "schedule")]);
        assert!(schedule.matches("schedules") && schedule.matches("branches") && !schedule.matches("pushes"));
        let web = refs(&[("CI_COMMIT_REF_NAME", "main"), ("CI_PIPELINE_SOURCE", "web")]);
        assert!(web.matches("web") && !web.matches("api"));
        let trigger = refs(&[("CI_COMMIT_REF_NAME", "main"), ("CI_PIPELINE_SOURCE", "trigger")]);
        assert!(trigger.matches("triggers"));
    }

    #[test]
    fn plurals() {
        assert_eq!(
            ["push", "schedule", "merge_request", "trigger", "pipeline", "chat", "api", "external_pull_request"]
                .map(pluralize),
            [
                "pushes",
                "schedules",
                "merge_requests",
                "triggers",
                "pipelines",
                "chats",
                "apis",
                "external_pull_requests"
            ]
        );
    }
}
