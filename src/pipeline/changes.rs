//! `rules: changes` and `only/except: changes`, evaluated as GitLab's
//! `Gitlab::Ci::Build::Rules::Rule::Clause::Changes` does: the globs (variables expanded, braces
//! as Ruby's `FNM_EXTGLOB`) are matched against the paths that changed; when nothing is known
//! about changes (no git repository, no base commit) the clause is true. Pure: which files
//! changed comes in as [`ChangedPaths`], filled by `cli::run` through `git.rs` (the comparison
//! it makes is described in the README's "rules: changes" section).

use std::collections::BTreeMap;

use super::glob;
use super::model::{Changes, Pipeline};
use super::variables;

/// The paths that differ, relative to the project and `/`-separated, for the run's default base
/// and for every `compare_to` ref the pipeline names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangedPaths {
    /// Against the run's base (merge base with the default branch, the previous commit on the
    /// default branch, or `--changes-against`); `None` when unknown (every `changes` is true).
    pub default: Option<Vec<String>>,
    /// Against each `compare_to` ref as expanded: the paths, or why the ref is no commit.
    pub against: BTreeMap<String, Result<Vec<String>, String>>,
    /// What `default` compares with, for `--list` (`merge base of HEAD and main (1a2b3c4)`).
    pub base: Option<String>,
}

/// Why a `changes:` clause could not be evaluated: its `compare_to` names no commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompareToError {
    pub reference: String,
    pub reason: String,
}

/// Whether a `changes:` clause holds, `lookup` giving the job's variables. GitLab expands
/// variables in paths and `compare_to` with `expand_existing` (unknown ones stay as written).
pub fn holds(
    changes: &Changes,
    changed: &ChangedPaths,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<bool, CompareToError> {
    let paths = match &changes.compare_to {
        None => changed.default.as_deref(),
        Some((reference, _)) => {
            let reference = expand_existing(reference, lookup);
            match changed.against.get(&reference) {
                Some(Ok(paths)) => Some(paths.as_slice()),
                Some(Err(reason)) => return Err(CompareToError { reference, reason: reason.clone() }),
                None if changed.default.is_none() && changed.against.is_empty() => None,
                None => {
                    return Err(CompareToError {
                        reference,
                        reason: "not resolved before the run (glci expands `compare_to` with the pipeline's \
                                 global, predefined and --env variables only)"
                            .into(),
                    })
                }
            }
        }
    };
    let Some(paths) = paths else { return Ok(true) };
    let patterns: Vec<String> =
        changes.paths.iter().flat_map(|p| glob::expand_braces(&expand_existing(p, lookup))).collect();
    let globs = glob::Globs::new(&patterns);
    Ok(paths.iter().any(|path| globs.matches(path)))
}

/// `$NAME`/`${NAME}` replaced where the variable is set; unset ones kept as written.
pub fn expand_existing(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let keep = |name: &str| lookup(name).or_else(|| Some(format!("${{{name}}}")));
    if !text.contains('$') {
        return text.to_string();
    }
    variables::expand(text, &keep)
}

/// Every `changes:` clause of the pipeline: workflow rules, each job's rules, `only`/`except`.
pub fn clauses(pipeline: &Pipeline) -> impl Iterator<Item = &Changes> {
    let jobs = pipeline.jobs.iter().flat_map(|job| job.rules.iter());
    let rules = pipeline.workflow_rules.iter().chain(jobs).filter_map(|rule| rule.changes.as_ref());
    let policies = pipeline.jobs.iter().flat_map(|job| job.only.iter().chain(job.except.iter()));
    rules.chain(policies.filter_map(|policy| policy.changes.as_ref()))
}

/// Every `compare_to` ref written in the pipeline (job and workflow rules, `only`/`except`),
/// expanded with `lookup` (the pipeline-level variables), each once: what the caller resolves.
pub fn compare_to_refs<'c>(
    clauses: impl Iterator<Item = &'c Changes>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut refs: Vec<String> = Vec::new();
    for changes in clauses {
        if let Some((reference, _)) = &changes.compare_to {
            let reference = expand_existing(reference, lookup);
            if !refs.contains(&reference) {
                refs.push(reference);
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::model::Location;

    fn clause(paths: &[&str], compare_to: Option<&str>) -> Changes {
        Changes {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            compare_to: compare_to.map(|r| (r.to_string(), Location::default())),
        }
    }

    fn changed(paths: &[&str]) -> ChangedPaths {
        ChangedPaths { default: Some(paths.iter().map(|p| p.to_string()).collect()), ..Default::default() }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn globs_match_the_changed_paths() {
        let files = changed(&["src/main.rs", "docs/a.md", ".gitlab/ci.yml"]);
        let cases: [(&[&str], bool); 9] = [
            (&["src/main.rs"], true),
            (&["src/*.rs"], true),
            (&["**/*.rs"], true),
            (&["*.rs"], false),
            (&["docs/**/*"], true),
            (&["src/*.{toml,rs}"], true),
            (&["Dockerfile"], false),
            (&[".gitlab/*"], true),
            (&[], false),
        ];
        for (paths, want) in cases {
            assert_eq!(holds(&clause(paths, None), &files, &none), Ok(want), "{paths:?}");
        }
        assert_eq!(holds(&clause(&["a"], None), &changed(&[]), &none), Ok(false), "nothing changed");
    }

    #[test]
    fn unknown_changes_are_true() {
        let unknown = ChangedPaths::default();
        assert_eq!(holds(&clause(&["nothing/matches"], None), &unknown, &none), Ok(true));
        assert_eq!(holds(&clause(&["x"], Some("main")), &unknown, &none), Ok(true));
    }

    #[test]
    fn variables_expand_in_paths_and_refs() {
        let lookup = |name: &str| match name {
            "DIR" => Some("src".to_string()),
            "BASE" => Some("release".to_string()),
            _ => None,
        };
        let files = changed(&["src/a.rs"]);
        assert_eq!(holds(&clause(&["$DIR/*.rs"], None), &files, &lookup), Ok(true));
        assert_eq!(holds(&clause(&["${DIR}/b.rs"], None), &files, &lookup), Ok(false));
        assert_eq!(expand_existing("$NOPE/x/$DIR", &lookup), "${NOPE}/x/src");

        let mut files = changed(&[]);
        files.against.insert("release".into(), Ok(vec!["lib/x.c".into()]));
        files.against.insert("gone".into(), Err("not a commit".into()));
        assert_eq!(holds(&clause(&["lib/*"], Some("$BASE")), &files, &lookup), Ok(true));
        assert_eq!(holds(&clause(&["lib/*"], None), &files, &lookup), Ok(false), "the default base is another");
        let e = holds(&clause(&["x"], Some("gone")), &files, &lookup).unwrap_err();
        assert_eq!((e.reference.as_str(), e.reason.as_str()), ("gone", "not a commit"));
        let e = holds(&clause(&["x"], Some("$JOB_ONLY")), &files, &lookup).unwrap_err();
        assert!(e.reason.contains("not resolved before the run"), "{e:?}");
    }

    #[test]
    fn refs_to_resolve_are_listed_once() {
        let clauses = [clause(&["a"], Some("main")), clause(&["b"], None), clause(&["c"], Some("main"))];
        assert_eq!(compare_to_refs(clauses.iter(), &none), ["main"]);
    }
}
