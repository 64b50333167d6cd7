//! Unit tests of `plan` on pipelines built by hand (the model is plain data).

use super::*;
use std::path::Path;

use crate::pipeline::model::{Need, Rule};
use crate::pipeline::rules;

fn loc(line: usize) -> Location {
    Location { file: PathBuf::from("/p/.gitlab-ci.yml"), line }
}

fn job(name: &str, stage: &str) -> Job {
    Job {
        name: name.into(),
        location: loc(10),
        stage: stage.into(),
        image: Some(Image { name: "busybox:1".into(), ..Image::default() }),
        services: vec![],
        before_script: vec![],
        script: vec![format!("echo {name}")],
        after_script: vec![],
        variables: vec![],
        needs: None,
        dependencies: None,
        artifacts: None,
        rules: vec![],
        when: When::OnSuccess,
        allow_failure: AllowFailure::No,
        timeout: None,
        retry: 0,
        instance: None,
        inherit_variables: None,
        only: None,
        except: None,
        cache: Vec::new(),
        run_keys: Default::default(),
        trigger: None,
        downstream: None,
        pipeline_needs: vec![],
    }
}

fn var(name: &str, value: &str) -> Variable {
    Variable { name: name.into(), value: value.into() }
}

fn need(name: &str) -> Need {
    Need { job: name.into(), artifacts: true, optional: false }
}

fn rule(condition: Option<&str>, when: Option<When>) -> Rule {
    Rule {
        condition: condition.map(|c| rules::parse_condition(c).expect("test condition parses")),
        exists: vec![],
        when,
        allow_failure: None,
        variables: vec![],
        location: loc(20),
        changes: None,
        needs: None,
        start_in: None,
        exists_in: None,
    }
}

fn pipeline(jobs: Vec<Job>) -> Pipeline {
    Pipeline {
        file: PathBuf::from("/p/.gitlab-ci.yml"),
        stages: [".pre", "build", "test", "deploy", ".post"].map(String::from).to_vec(),
        variables: vec![],
        workflow_rules: vec![],
        jobs,
        name: None,
        notes: vec![],
    }
}

fn facts() -> RunFacts {
    RunFacts {
        project_dir: PathBuf::from("/p"),
        project_path: "group/sub/my-proj".into(),
        git: crate::git::Facts {
            sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
            branch: Some("feature/Thing".into()),
            default_branch: Some("main".into()),
            remote_url: Some("git@gitlab.example.com:group/sub/my-proj.git".into()),
            title: Some("Add thing".into()),
            message: Some("Add thing\n\nLonger text".into()),
            ..Default::default()
        },
        files: vec!["Cargo.toml".into(), "src/main.rs".into()],
        cli_variables: vec![],
        selected: vec![],
        pipeline_id: 42,
        predefined: vec![],
        changes: Default::default(),
        ..Default::default()
    }
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.jobs.iter().map(|j| j.name.as_str()).collect()
}

fn planned<'a>(plan: &'a Plan, name: &str) -> &'a PlannedJob {
    plan.jobs.iter().find(|j| j.name == name).unwrap_or_else(|| panic!("{name} not planned: {:?}", names(plan)))
}

fn waits<'a>(plan: &'a Plan, name: &str) -> Vec<&'a str> {
    planned(plan, name).waits_for.iter().map(|&i| plan.jobs[i].name.as_str()).collect()
}

fn artifacts_from<'a>(plan: &'a Plan, name: &str) -> Vec<&'a str> {
    planned(plan, name).artifacts_from.iter().map(|&i| plan.jobs[i].name.as_str()).collect()
}

#[test]
fn predefined_variables_as_gitlab_sets_them() {
    let plan = plan(&pipeline(vec![job("build", "build")]), &facts()).expect("plans");
    let v = &planned(&plan, "build").variables;
    let get = |n: &str| v.get(n).unwrap_or_else(|| panic!("{n} unset"));
    assert_eq!(get("CI"), "true");
    assert_eq!(get("GITLAB_CI"), "true");
    assert_eq!(get("CI_PROJECT_DIR"), "/builds/group/sub/my-proj");
    assert_eq!(get("CI_PROJECT_PATH"), "group/sub/my-proj");
    assert_eq!(get("CI_PROJECT_NAME"), "my-proj");
    assert_eq!(get("CI_PROJECT_NAMESPACE"), "group/sub");
    assert_eq!(get("CI_COMMIT_SHA"), "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(get("CI_COMMIT_SHORT_SHA"), "01234567");
    assert_eq!(get("CI_COMMIT_BRANCH"), "feature/Thing");
    assert_eq!(get("CI_COMMIT_REF_NAME"), "feature/Thing");
    assert_eq!(get("CI_COMMIT_REF_SLUG"), "feature-thing");
    assert_eq!(get("CI_COMMIT_TITLE"), "Add thing");
    assert_eq!(get("CI_DEFAULT_BRANCH"), "main");
    assert_eq!(get("CI_JOB_NAME"), "build");
    assert_eq!(get("CI_JOB_STAGE"), "build");
    assert_eq!(get("CI_PIPELINE_ID"), "42");
    assert_eq!(get("CI_PIPELINE_SOURCE"), "push");
    assert_eq!(get("CI_SERVER_HOST"), "gitlab.example.com");
    assert_eq!(get("CI_JOB_IMAGE"), "busybox:1");
    assert!(get("CI_JOB_ID").starts_with("42"));
    assert_eq!(plan.project_dir_in_job, "/builds/group/sub/my-proj");
}

#[test]
fn variables_layer_global_job_rule_cli_and_expand_in_images() {
    let mut p = pipeline(vec![]);
    p.variables = vec![var("TAG", "global"), var("REPO", "glci-test/busybox"), var("ONLY_GLOBAL", "g-$TAG")];
    let mut build = job("build", "build");
    build.image = Some(Image { name: "$REPO:${TAG}".into(), ..Image::default() });
    build.variables = vec![var("TAG", "job"), var("FROM_JOB", "$CI_PROJECT_NAME-$TAG")];
    let mut r = rule(Some("$TAG == 'job'"), None);
    r.variables = vec![var("RULED", "yes"), var("TAG", "1")];
    build.rules = vec![r];
    p.jobs = vec![build];
    let mut f = facts();
    f.cli_variables = vec![("CLI".into(), "$TAG".into())];
    let plan = plan(&p, &f).expect("plans");
    let j = planned(&plan, "build");
    assert_eq!(j.variables.get("TAG"), Some("1"), "the matching rule's variables win over the job's");
    assert_eq!(j.variables.get("RULED"), Some("yes"));
    assert_eq!(j.variables.get("FROM_JOB"), Some("my-proj-1"));
    assert_eq!(j.variables.get("ONLY_GLOBAL"), Some("g-1"));
    assert_eq!(j.variables.get("CLI"), Some("$TAG"), "command-line values are taken literally");
    assert_eq!(j.image.as_ref().map(|i| i.name.as_str()), Some("glci-test/busybox:1"));

    f.cli_variables = vec![("TAG".into(), "cli".into())];
    let err = super::plan(&p, &f).map(|plan| names(&plan).len());
    assert_eq!(err, Ok(0), "with TAG=cli no rule matches, so the job is left out");
}

#[test]
fn stages_order_jobs_and_hand_on_artifacts() {
    let jobs = vec![job("test", "test"), job("compile", "build"), job("lint", "build"), job("ship", "deploy")];
    let p = pipeline(jobs);
    let plan = plan(&p, &facts()).expect("plans");
    assert_eq!(names(&plan), ["compile", "lint", "test", "ship"]);
    assert_eq!(waits(&plan, "test"), ["compile", "lint"]);
    assert_eq!(waits(&plan, "ship"), ["compile", "lint", "test"]);
    assert_eq!(artifacts_from(&plan, "test"), ["compile", "lint"]);
    assert!(waits(&plan, "compile").is_empty());
}

#[test]
fn pre_and_post_run_first_and_last() {
    let p = pipeline(vec![job("cleanup", ".post"), job("b", "build"), job("setup", ".pre")]);
    let plan = plan(&p, &facts()).expect("plans");
    assert_eq!(names(&plan), ["setup", "b", "cleanup"]);
    assert_eq!(waits(&plan, "cleanup"), ["setup", "b"]);
}

#[test]
fn needs_make_a_dag_and_choose_artifacts() {
    let mut test = job("test", "test");
    test.needs = Some(vec![need("b1"), Need { artifacts: false, ..need("b2") }]);
    let mut early = job("early", "deploy");
    early.needs = Some(vec![]);
    let mut deps = job("deps", "deploy");
    deps.dependencies = Some(vec!["b2".into()]);
    let p = pipeline(vec![job("b1", "build"), job("b2", "build"), test, early, deps]);
    let plan = plan(&p, &facts()).expect("plans");
    assert_eq!(waits(&plan, "test"), ["b1", "b2"]);
    assert_eq!(artifacts_from(&plan, "test"), ["b1"]);
    assert!(waits(&plan, "early").is_empty());
    assert_eq!(artifacts_from(&plan, "deps"), ["b2"]);
    assert_eq!(waits(&plan, "deps"), ["b1", "b2", "test"]);
}

#[test]
fn named_jobs_bring_what_they_need() {
    let mut test = job("test", "test");
    test.needs = Some(vec![need("compile")]);
    let mut compile = job("compile", "build");
    compile.needs = Some(vec![need("gen")]);
    let p = pipeline(vec![job("gen", "build"), compile, job("lint", "build"), test, job("ship", "deploy")]);
    let mut f = facts();
    f.selected = vec!["test".into()];
    let plan = super::plan(&p, &f).expect("plans");
    assert_eq!(names(&plan), ["gen", "compile", "test"]);

    // Without `needs`, a job waits for every job of the earlier stages.
    f.selected = vec!["ship".into()];
    let plan = super::plan(&p, &f).expect("plans");
    assert_eq!(names(&plan), ["gen", "compile", "lint", "test", "ship"]);

    f.selected = vec!["nope".into()];
    let err = super::plan(&p, &f).expect_err("unknown job");
    assert_eq!(err.to_string(), "/p/.gitlab-ci.yml: no job named `nope` (jobs: gen, compile, lint, test, ship)");
}

#[test]
fn needs_errors_name_the_job_and_line() {
    let mut a = job("a", "build");
    a.needs = Some(vec![need("b")]);
    let mut b = job("b", "build");
    b.needs = Some(vec![need("a")]);
    b.location = loc(7);
    let err = plan(&pipeline(vec![a.clone(), b]), &facts()).expect_err("cycle");
    assert_eq!(err.to_string(), "/p/.gitlab-ci.yml:10: a.needs: `needs` form a cycle among: a, b");

    // The parser checks the needs it reads; a rule's `needs` replaces them only here, so a
    // cycle made by rules is this check's to find (the parse passes, the plan refuses).
    let ruled = "image: busybox:1\n\
        a:\n  script: x\n  rules:\n    - if: $CI_PIPELINE_SOURCE\n      needs: [b]\n\
        b:\n  script: x\n  needs: [a]\n";
    let err = plan_yaml(ruled, &[]).expect_err("a cycle made by rules: needs");
    assert!(err.to_string().ends_with("a.needs: `needs` form a cycle among: a, b"), "{err}");

    let mut later = job("x", "build");
    later.needs = Some(vec![need("t")]);
    let err = plan(&pipeline(vec![later, job("t", "test")]), &facts()).expect_err("later stage");
    assert!(err.to_string().contains("x.needs: job `x` needs `t`, which is in a later stage"), "{err}");

    let err = plan(&pipeline(vec![a.clone()]), &facts()).expect_err("unknown need");
    assert!(err.to_string().contains("needs `b`, which is not a job of this pipeline"), "{err}");

    a.needs = Some(vec![Need { optional: true, ..need("b") }]);
    assert!(plan(&pipeline(vec![a]), &facts()).is_ok(), "an optional need may be missing");

    let mut d = job("d", "build");
    d.dependencies = Some(vec!["zzz".into()]);
    let err = plan(&pipeline(vec![d]), &facts()).expect_err("unknown dependency");
    assert!(err.to_string().contains("d.dependencies: job `d` depends on `zzz`"), "{err}");
}

#[test]
fn rules_first_match_wins() {
    let mut docs = job("docs", "build");
    let mut manual = rule(Some("$MODE == 'docs'"), Some(When::Manual));
    manual.allow_failure = Some(true);
    docs.rules = vec![rule(Some("$MODE == 'skip'"), Some(When::Never)), manual, rule(Some("$MODE"), None)];
    let p = pipeline(vec![docs, job("always", "test")]);
    let mut f = facts();

    assert_eq!(names(&super::plan(&p, &f).expect("plans")), ["always"], "no rule matches: left out");

    f.cli_variables = vec![("MODE".into(), "skip".into())];
    assert_eq!(names(&super::plan(&p, &f).expect("plans")), ["always"]);

    f.cli_variables = vec![("MODE".into(), "docs".into())];
    let plan = super::plan(&p, &f).expect("plans");
    let docs = planned(&plan, "docs");
    assert_eq!(docs.when, RunWhen::Manual);
    assert_eq!(docs.allow_failure, AllowFailure::Yes);

    f.cli_variables = vec![("MODE".into(), "other".into())];
    assert_eq!(planned(&super::plan(&p, &f).expect("plans"), "docs").when, RunWhen::OnSuccess);

    f.cli_variables = vec![];
    f.selected = vec!["docs".into()];
    let err = super::plan(&p, &f).expect_err("excluded job named");
    assert!(err.to_string().contains("docs: job `docs` is not in this pipeline"), "{err}");
}

#[test]
fn rules_exists_globs_the_project_files() {
    let mut rust = job("rust", "build");
    rust.rules = vec![Rule { exists: vec!["**/*.rs".into()], ..rule(None, None) }];
    let mut node = job("node", "build");
    node.rules = vec![Rule { exists: vec!["package.json".into()], ..rule(None, None) }];
    let plan = plan(&pipeline(vec![rust, node]), &facts()).expect("plans");
    assert_eq!(names(&plan), ["rust"]);
}

fn changes(paths: &[&str], compare_to: Option<&str>) -> Option<crate::pipeline::model::Changes> {
    Some(crate::pipeline::model::Changes {
        paths: paths.iter().map(|p| p.to_string()).collect(),
        compare_to: compare_to.map(|r| (r.to_string(), loc(33))),
    })
}

#[test]
fn rules_changes_match_changed_files_and_are_true_when_nothing_is_known() {
    let mut docs = job("docs", "build");
    docs.rules = vec![Rule { changes: changes(&["docs/**/*", "*.md"], None), ..rule(None, None) }];
    let mut code = job("code", "build");
    code.rules = vec![
        Rule { changes: changes(&["src/*.{rs,toml}"], None), ..rule(Some("$CI_COMMIT_BRANCH"), None) },
        Rule { when: Some(When::Manual), ..rule(None, None) },
    ];
    let mut release = job("release", "build");
    release.variables = vec![var("DIR", "lib")];
    release.rules = vec![Rule { changes: changes(&["$DIR/*"], Some("$BASE")), ..rule(None, None) }];
    let mut p = pipeline(vec![docs, code, release]);
    p.variables = vec![var("BASE", "v1")];

    let unknown = plan(&p, &facts()).expect("plans");
    assert_eq!(names(&unknown), ["docs", "code", "release"], "no git facts: every `changes` holds");

    let mut f = facts();
    f.changes.default = Some(vec!["src/main.rs".into()]);
    f.changes.against.insert("v1".into(), Ok(vec!["lib/a.c".into()]));
    let p1 = plan(&p, &f).expect("plans");
    assert_eq!(names(&p1), ["code", "release"]);
    assert_eq!(planned(&p1, "code").when, RunWhen::OnSuccess);

    f.changes.default = Some(vec!["README.md".into()]);
    f.changes.against.insert("v1".into(), Ok(vec![]));
    let p2 = plan(&p, &f).expect("plans");
    assert_eq!(names(&p2), ["docs", "code"]);
    assert_eq!(planned(&p2, "code").when, RunWhen::Manual, "the second rule");

    f.changes.against.insert("v1".into(), Err("no such branch, tag or commit in this repository".into()));
    let e = plan(&p, &f).expect_err("bad compare_to");
    assert_eq!((e.line, e.key.as_str()), (Some(33), "release.rules[0].changes.compare_to"));
    assert!(e.message.contains("`v1` is not a valid ref: no such branch"), "{e}");
}

#[test]
fn workflow_name_is_ci_pipeline_name_with_workflow_variables() {
    let mut p = pipeline(vec![job("b", "build")]);
    p.name = Some("$KIND pipeline for $CI_COMMIT_REF_NAME".into());
    let mut w = rule(None, None);
    w.variables = vec![var("KIND", "nightly")];
    p.workflow_rules = vec![w];
    let plan = plan(&p, &facts()).expect("plans");
    assert_eq!(plan.name.as_deref(), Some("nightly pipeline for feature/Thing"));
    assert_eq!(planned(&plan, "b").variables.get("CI_PIPELINE_NAME"), Some("nightly pipeline for feature/Thing"));
    p.name = None;
    assert_eq!(planned(&super::plan(&p, &facts()).expect("plans"), "b").variables.get("CI_PIPELINE_NAME"), None);
}

#[test]
fn rules_needs_replace_the_jobs_needs_when_the_rule_matches() {
    let build = job("build", "build");
    let mut lint = job("lint", "build");
    lint.instance = Some(crate::pipeline::model::Instance { base: "lint".into(), index: 1, total: 1 });
    lint.name = "lint 1/1".into();
    let mut test = job("test", "test");
    test.needs = Some(vec![need("build")]);
    test.rules = vec![Rule { needs: Some(vec![need("lint")]), ..rule(Some("$FAST"), None) }, rule(None, None)];
    let p = pipeline(vec![build, lint, test]);
    let plan = plan(&p, &facts()).expect("plans");
    let test = planned(&plan, "test");
    assert_eq!(test.waits_for.iter().map(|&i| plan.jobs[i].name.as_str()).collect::<Vec<_>>(), ["build"]);
    let mut f = facts();
    f.cli_variables = vec![("FAST".into(), "1".into())];
    let plan = super::plan(&p, &f).expect("plans");
    let test = planned(&plan, "test");
    assert_eq!(
        test.waits_for.iter().map(|&i| plan.jobs[i].name.as_str()).collect::<Vec<_>>(),
        ["lint 1/1"],
        "the rule's needs, a parallel job's name meaning its instances"
    );
    let decision = plan.decisions.iter().find(|d| d.name == "test").expect("decided");
    assert_eq!(decision.needs, Some(vec!["lint 1/1".to_string()]));
    assert!(decision.reason.starts_with("rule 1 (/p/.gitlab-ci.yml:20) matched"), "{}", decision.reason);

    let mut p = p;
    p.jobs[2].rules[0].needs = Some(vec![need("nope")]);
    let e = super::plan(&p, &f).expect_err("unknown need");
    assert!(e.to_string().contains("needs `nope`, which is not a job of this pipeline"), "{e}");
}

#[test]
fn inherit_variables_picks_the_global_and_workflow_variables_a_job_takes() {
    let all = job("all", "build");
    let mut none = job("none", "build");
    none.inherit_variables = Some(vec![]);
    let mut some = job("some", "build");
    some.inherit_variables = Some(vec!["A".into(), "W".into()]);
    some.variables = vec![var("B", "own")];
    let mut p = pipeline(vec![all, none, some]);
    p.variables = vec![var("A", "a"), var("B", "b")];
    let mut w = rule(None, None);
    w.variables = vec![var("W", "w"), var("X", "x")];
    p.workflow_rules = vec![w];
    let plan = plan(&p, &facts()).expect("plans");
    let get = |job: &str, name: &str| planned(&plan, job).variables.get(name).map(String::from);
    assert_eq!(
        [get("all", "A"), get("all", "B"), get("all", "W")],
        [Some("a".into()), Some("b".into()), Some("w".into())]
    );
    assert_eq!([get("none", "A"), get("none", "B"), get("none", "W")], [None, None, None]);
    assert_eq!(get("none", "CI_PROJECT_PATH").as_deref(), Some("group/sub/my-proj"), "predefined ones stay");
    assert_eq!(
        [get("some", "A"), get("some", "B"), get("some", "W"), get("some", "X")],
        [Some("a".into()), Some("own".into()), Some("w".into()), None]
    );
}

fn policy(refs: Option<&[&str]>) -> crate::pipeline::model::Policy {
    crate::pipeline::model::Policy {
        refs: refs.map(|r| r.iter().map(|s| s.to_string()).collect()),
        variables: None,
        changes: None,
        kubernetes: false,
        location: loc(40),
    }
}

#[test]
fn only_and_except_as_gitlab_evaluates_them() {
    let plain = job("plain", "build");
    let mut release = job("release", "build");
    release.only = Some(policy(Some(&["/^release\\//", "main"])));
    let mut not_main = job("not-main", "build");
    not_main.except = Some(policy(Some(&["main"])));
    let mut mr = job("mr", "build");
    mr.only = Some(policy(Some(&["merge_requests"])));
    let mut vars = job("vars", "build");
    vars.only = Some(crate::pipeline::model::Policy {
        variables: Some(vec![rules::parse_condition("$DEPLOY == 'yes'").expect("parses")]),
        ..policy(Some(&["branches"]))
    });
    let mut changed = job("changed", "build");
    changed.only = Some(crate::pipeline::model::Policy { changes: changes(&["src/**/*"], None), ..policy(None) });
    let mut k8s = job("k8s", "build");
    k8s.only = Some(crate::pipeline::model::Policy { kubernetes: true, ..policy(None) });
    let mut no_k8s = job("no-k8s", "build");
    no_k8s.except = Some(crate::pipeline::model::Policy { kubernetes: true, ..policy(None) });
    let p = pipeline(vec![plain, release, not_main, mr, vars, changed, k8s, no_k8s]);

    let mut f = facts();
    f.changes.default = Some(vec!["README.md".into()]);
    assert_eq!(names(&plan(&p, &f).expect("plans")), ["plain", "not-main", "no-k8s"]);

    f.git.branch = Some("release/1.0".into());
    f.cli_variables = vec![("DEPLOY".into(), "yes".into())];
    f.changes.default = Some(vec!["src/a/b.rs".into()]);
    assert_eq!(names(&plan(&p, &f).expect("plans")), ["plain", "release", "not-main", "vars", "changed", "no-k8s"]);

    f.git.branch = Some("main".into());
    let planned_main = plan(&p, &f).expect("plans");
    assert_eq!(names(&planned_main), ["plain", "release", "vars", "changed", "no-k8s"]);
    let reason = |name: &str| planned_main.decisions.iter().find(|d| d.name == name).expect("decided").reason.clone();
    assert_eq!(reason("not-main"), "except: refs [main] (branch `main`, source push)");
    assert_eq!(reason("mr"), "only: refs [merge_requests] (branch `main`, source push)");
    assert_eq!(reason("k8s"), "only: kubernetes: active (never locally)");
    assert_eq!(reason("plain"), "no rules");

    // A merge request pipeline: GitLab's default `only: [branches, tags]` leaves out the jobs
    // without rules, `only` (and `except`-only ones too)...
    f.cli_variables = vec![("CI_PIPELINE_SOURCE".into(), "merge_request_event".into())];
    let mr_plan = plan(&p, &f).expect("plans");
    assert_eq!(names(&mr_plan), ["mr", "changed"]);
    let reason = mr_plan.decisions.iter().find(|d| d.name == "plain").expect("decided").reason.clone();
    assert_eq!(
        reason,
        "default only: [branches, tags]: refs [branches, tags] (merge request `main`, source merge_request)"
    );
    // ...unless the pipeline has workflow rules, which drop that default.
    let mut p = p;
    p.workflow_rules = vec![rule(None, None)];
    assert_eq!(names(&plan(&p, &f).expect("plans")), ["plain", "not-main", "mr", "changed", "no-k8s"]);
}

#[test]
fn workflow_rules_can_drop_the_pipeline() {
    let mut p = pipeline(vec![job("b", "build")]);
    let mut w = rule(Some("$CI_COMMIT_BRANCH == 'main'"), None);
    w.variables = vec![var("DEPLOY", "prod")];
    p.workflow_rules = vec![w, rule(Some("$FORCE"), None)];
    let plan = plan(&p, &facts()).expect("plans");
    assert!(plan.jobs.is_empty());
    assert!(plan.excluded_by_workflow.is_some());

    let mut f = facts();
    f.git.branch = Some("main".into());
    let plan = super::plan(&p, &f).expect("plans");
    assert_eq!(planned(&plan, "b").variables.get("DEPLOY"), Some("prod"));
}

#[test]
fn manual_jobs_run_only_when_named_or_needed() {
    let mut deploy = job("deploy", "deploy");
    deploy.when = When::Manual;
    let mut after = job("after", ".post");
    after.needs = Some(vec![need("deploy")]);
    let p = pipeline(vec![job("b", "build"), deploy, after, job("t", "test")]);
    let plan = plan(&p, &facts()).expect("plans");
    assert_eq!(planned(&plan, "deploy").when, RunWhen::Manual);

    let mut f = facts();
    f.selected = vec!["deploy".into()];
    let plan = super::plan(&p, &f).expect("plans");
    assert_eq!(names(&plan), ["b", "t", "deploy"]);
    assert_eq!(planned(&plan, "deploy").when, RunWhen::OnSuccess);
    assert_eq!(planned(&plan, "deploy").variables.get("CI_JOB_MANUAL"), Some("true"));

    f.selected = vec!["after".into()];
    let plan = super::plan(&p, &f).expect("plans");
    assert_eq!(names(&plan), ["b", "t", "deploy", "after"]);
    assert_eq!(planned(&plan, "deploy").when, RunWhen::OnSuccess, "needed by a named job: it runs");

    // A later stage-ordered job does not pull in an earlier manual job.
    let p2 = pipeline(vec![
        job("b", "build"),
        {
            let mut m = job("m", "build");
            m.when = When::Manual;
            m
        },
        job("t", "test"),
    ]);
    f.selected = vec!["t".into()];
    assert_eq!(names(&super::plan(&p2, &f).expect("plans")), ["b", "t"]);
}

#[test]
fn a_job_without_image_is_a_configuration_error() {
    let mut b = job("b", "build");
    b.image = None;
    let err = plan(&pipeline(vec![b]), &facts()).expect_err("no image");
    assert!(err.to_string().starts_with("/p/.gitlab-ci.yml:10: b.image: no image"), "{err}");
}

#[test]
fn services_get_aliases_and_variables() {
    let mut b = job("b", "build");
    b.variables = vec![var("DB", "app")];
    b.services = vec![
        Service {
            name: "registry.example.com/group/postgres:15".into(),
            alias: Some("db, pg".into()),
            entrypoint: None,
            command: Some(vec!["postgres".into()]),
            variables: vec![var("POSTGRES_DB", "$DB")],
            ..Service::default()
        },
        Service { name: "redis:7@sha256:abc".into(), ..Service::default() },
    ];
    let plan = plan(&pipeline(vec![b]), &facts()).expect("plans");
    let s = &planned(&plan, "b").services;
    assert_eq!(
        s[0].aliases,
        ["db", "pg", "registry.example.com__group__postgres", "registry.example.com-group-postgres"]
    );
    assert_eq!(s[0].variables.get("POSTGRES_DB"), Some("app"));
    assert_eq!(s[0].variables.get("CI_JOB_NAME"), Some("b"));
    assert_eq!(s[1].aliases, ["redis"]);
}

#[test]
fn default_aliases_follow_gitlab() {
    assert_eq!(default_aliases("postgres:15"), ["postgres"]);
    assert_eq!(default_aliases("registry/group/img:tag"), ["registry__group__img", "registry-group-img"]);
    assert_eq!(default_aliases("localhost:5000/img:1"), ["localhost__img", "localhost-img"]);
    assert_eq!(default_aliases("tutum/wordpress:latest"), ["tutum__wordpress", "tutum-wordpress"]);
}

#[test]
fn project_paths_from_dirs_and_flags() {
    assert_eq!(project_path_from_dir(Path::new("/home/me/My Project")), "my-project");
    assert_eq!(project_path_from_dir(Path::new("/")), "project");
    assert!(validate_project_path("group/sub/p.x").is_ok());
    assert!(validate_project_path("group//p").is_err());
    assert!(validate_project_path("../p").is_err());
    assert!(validate_project_path("g/p q").is_err());
}

/// Parses `text` (the parser makes the instances of `parallel:` jobs) and plans it.
fn plan_yaml(text: &str, selected: &[&str]) -> Result<Plan, PipelineError> {
    let pipeline = crate::pipeline::parse::parse_str(text, Path::new("/p/.gitlab-ci.yml")).expect("parses");
    let mut f = facts();
    f.selected = selected.iter().map(|s| s.to_string()).collect();
    plan(&pipeline, &f)
}

const PARALLEL: &str = "image: busybox:1\nstages: [build, test]\n\
    build:\n  stage: build\n  script: x\n  parallel: 2\n\
    matrix:\n  stage: build\n  script: x\n  variables: {OS: none, KEEP: k}\n  parallel:\n    matrix:\n      \
    - {OS: [linux, mac], ARCH: amd64}\n\
    test:\n  stage: test\n  script: x\n  needs: [build]\n\
    pick:\n  stage: test\n  script: x\n  needs:\n    - job: matrix\n      artifacts: false\n      \
    parallel: {matrix: [{OS: mac, ARCH: amd64}]}\n\
    later:\n  stage: test\n  script: x\n";

#[test]
fn parallel_instances_get_node_index_and_total() {
    let plan = plan_yaml(PARALLEL, &[]).expect("plans");
    let node = |name: &str| {
        let v = &planned(&plan, name).variables;
        (v.get("CI_NODE_INDEX").map(String::from), v.get("CI_NODE_TOTAL").unwrap_or_default().to_string())
    };
    assert_eq!(node("build 1/2"), (Some("1".into()), "2".into()));
    assert_eq!(node("build 2/2"), (Some("2".into()), "2".into()));
    assert_eq!(node("matrix: [mac, amd64]"), (Some("2".into()), "2".into()));
    assert_eq!(node("test"), (None, "1".into()));
    let v = &planned(&plan, "matrix: [linux, amd64]").variables;
    assert_eq!((v.get("OS"), v.get("ARCH"), v.get("KEEP")), (Some("linux"), Some("amd64"), Some("k")));
    assert_eq!(v.get("CI_JOB_NAME"), Some("matrix: [linux, amd64]"));
    let ids: BTreeSet<u64> = plan.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), plan.jobs.len(), "every instance has its own CI_JOB_ID");
}

#[test]
fn needs_on_a_parallel_job_wait_for_all_or_the_matrix_selected_instances() {
    let plan = plan_yaml(PARALLEL, &[]).expect("plans");
    assert_eq!(waits(&plan, "test"), ["build 1/2", "build 2/2"]);
    assert_eq!(artifacts_from(&plan, "test"), ["build 1/2", "build 2/2"]);
    assert_eq!(waits(&plan, "pick"), ["matrix: [mac, amd64]"]);
    assert!(artifacts_from(&plan, "pick").is_empty());
    // Stage order: a job without needs waits for every instance of the earlier stage.
    assert_eq!(waits(&plan, "later").len(), 4);
}

#[test]
fn naming_a_parallel_job_selects_its_instances() {
    let plan = plan_yaml(PARALLEL, &["build"]).expect("plans");
    assert_eq!(names(&plan), ["build 1/2", "build 2/2"]);
    let plan = plan_yaml(PARALLEL, &["build 2/2"]).expect("plans");
    assert_eq!(names(&plan), ["build 2/2"]);
    let plan = plan_yaml(PARALLEL, &["pick"]).expect("plans");
    assert_eq!(names(&plan), ["matrix: [mac, amd64]", "pick"]);
    let e = plan_yaml(PARALLEL, &["nope"]).expect_err("unknown");
    assert!(e.message.contains("(jobs: build, matrix, test, pick, later)"), "{e}");
}

#[test]
fn rules_see_the_matrix_variables_of_each_instance() {
    let text =
        "image: busybox:1\nm:\n  script: x\n  rules: [{if: $OS == \"mac\", when: never}, {when: on_success}]\n  \
                parallel: {matrix: [{OS: [linux, mac]}]}\n";
    let plan = plan_yaml(text, &[]).expect("plans");
    assert_eq!(names(&plan), ["m: [linux]"]);
    let e = plan_yaml(text, &["m: [mac]"]).expect_err("left out");
    assert!(e.message.contains("its `rules` (or `when: never`) leave it out"), "{e}");
    assert_eq!(names(&plan_yaml(text, &["m"]).expect("plans")), ["m: [linux]"]);
}
