//! Tests of child pipelines (issue 17): how `parse` composes them (every `trigger: include`
//! form, errors with file, line and key, the depth limit) and how `downstream` plans them
//! (names, ids, forwarded variables, `needs: pipeline`, dynamic children).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::*;
use crate::pipeline::facts::RunFacts;
use crate::pipeline::model::DownstreamKind;
use crate::pipeline::parse::{self, nothing_known, Fetched, Source, Sources};
use crate::pipeline::plan::ChildPlan;

const MAIN: &str = "/p/.gitlab-ci.yml";
const IMAGE: &str = "image: alpine\n";

/// Parses `main` as `/p/.gitlab-ci.yml` with the project files of `table`; templates come from
/// `templates` through the fetcher.
fn load_with(main: &str, table: &[(&str, &str)], templates: &[(&str, &str)]) -> Result<Pipeline, PipelineError> {
    let contents: HashMap<PathBuf, String> =
        table.iter().map(|(p, t)| (Path::new("/p").join(p), t.to_string())).collect();
    let read = move |path: &Path| contents.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
    let templates: HashMap<String, String> = templates.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    let fetch = move |source: &Source| match source {
        Source::Template(name) => templates
            .get(name)
            .map(|text| Fetched {
                text: text.clone(),
                name: format!("template {name}"),
                project: None,
                component: None,
            })
            .ok_or_else(|| "no such template".to_string()),
        _ => Err("not served here".to_string()),
    };
    let files: Vec<String> = table.iter().map(|(p, _)| p.to_string()).collect();
    let sources = Sources {
        project: Path::new("/p"),
        read: &read,
        files: &files,
        variables: &|_| None,
        inputs: &[],
        fetch: Some(&fetch),
        changed: &nothing_known,
    };
    parse::parse_sources(main, Path::new(MAIN), &sources)
}

fn load(main: &str, table: &[(&str, &str)]) -> Pipeline {
    load_with(main, table, &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn facts() -> RunFacts {
    RunFacts {
        project_dir: PathBuf::from("/p"),
        project_path: "g/p".into(),
        pipeline_id: 7,
        cli_variables: vec![("FROM_CLI".into(), "cli".into())],
        ..Default::default()
    }
}

fn child_of<'p>(plan: &'p Plan, trigger: &str) -> &'p Plan {
    let job = plan.jobs.iter().find(|j| j.name == trigger).unwrap_or_else(|| panic!("no {trigger}"));
    match job.downstream.as_deref().map(|d| &d.child) {
        Some(ChildPlan::Ready(child)) => child,
        other => panic!("{trigger}: not a ready child: {other:?}"),
    }
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.jobs.iter().map(|j| j.name.as_str()).collect()
}

const CHILD: &str =
    "stages: [one, two]\nimage: alpine\nc1:\n  stage: one\n  script: [x]\nc2:\n  stage: two\n  script: [y]\n";

#[test]
fn every_include_form_composes_a_child_pipeline() {
    let table = [("child.yml", CHILD), ("more.yml", "c3:\n  image: alpine\n  stage: two\n  script: [z]\n")];
    for trigger in [
        "include: child.yml",
        "include: [child.yml]",
        "include:\n      - local: child.yml\n      - local: /more.yml",
        "include: [{template: Child.gitlab-ci.yml}]",
    ] {
        let main = format!("{IMAGE}a:\n  script: [x]\nkid:\n  trigger:\n    {trigger}\n");
        let pipeline = load_with(&main, &table, &[("Child.gitlab-ci.yml", CHILD)]).unwrap_or_else(|e| panic!("{e}"));
        let kid = pipeline.job("kid").expect("kid");
        let Some(DownstreamKind::Child(child)) = kid.downstream.as_deref().map(|d| &d.kind) else {
            panic!("{trigger}: no child")
        };
        assert_eq!(child.stages, [".pre", "one", "two", ".post"], "{trigger}");
        assert!(child.job("c1").is_some() && child.job("c2").is_some(), "{trigger}");
        assert_eq!(child.job("c3").is_some(), trigger.contains("more.yml"), "{trigger}");
        // The parent's own jobs are not the child's.
        assert!(child.job("a").is_none());
    }
}

#[test]
fn child_errors_name_file_line_and_key() {
    /// The main file, the project's files, the error's start.
    type Case<'c> = (&'c str, &'c [(&'c str, &'c str)], &'c str);
    let cases: [Case; 4] = [
        (
            "kid:\n  trigger:\n    include: missing.yml\n",
            &[],
            "/p/.gitlab-ci.yml:3: kid.trigger.include: local file `missing.yml` does not exist",
        ),
        (
            "kid:\n  trigger:\n    include:\n      - local: child.yml\n      - local: nope.yml\n",
            &[("child.yml", CHILD)],
            "/p/.gitlab-ci.yml:5: kid.trigger.include[1].local: local file `nope.yml` does not exist",
        ),
        // An error inside the child file names that file.
        (
            "kid:\n  trigger:\n    include: child.yml\n",
            &[("child.yml", "c1:\n  scrip: [x]\n")],
            "/p/child.yml:2: c1.scrip",
        ),
        // A child that triggers itself: GitLab's depth limit.
        (
            "kid:\n  trigger:\n    include: child.yml\n",
            &[("child.yml", "again:\n  trigger:\n    include: child.yml\n")],
            "/p/child.yml:3: again.trigger.include: reached the maximum depth of child pipelines",
        ),
    ];
    for (main, table, want) in cases {
        let e = load_with(main, table, &[]).expect_err(main).to_string();
        assert!(e.starts_with(want), "{main}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn a_child_gets_its_name_id_source_and_the_forwarded_variables() {
    let main =
        "image: alpine\nvariables:\n  GLOBAL: g\nkid:\n  variables:\n    PARENT_PIPELINE_ID: $CI_PIPELINE_ID\n    \
                OWN: own-$GLOBAL\n  trigger:\n    include: child.yml\n    strategy: depend\nkeep:\n  trigger:\n    \
                include: child.yml\n    forward:\n      yaml_variables: false\n      pipeline_variables: true\n";
    let pipeline = load(main, &[("child.yml", "image: alpine\nvariables:\n  GLOBAL: child\nc1:\n  script: [x]\n")]);
    let plan = plan(&pipeline, &facts()).unwrap_or_else(|e| panic!("{e}"));
    let kid = plan.jobs.iter().find(|j| j.name == "kid").expect("kid");
    assert!(kid.downstream.as_ref().is_some_and(|d| d.depend));
    let child = child_of(&plan, "kid");
    assert_eq!(names(child), ["kid: c1"]);
    assert_eq!(child.pipeline_id, 7001);
    let vars = &child.jobs[0].variables;
    assert_eq!(vars.get("CI_JOB_NAME"), Some("c1"));
    assert_eq!(vars.get("CI_PIPELINE_SOURCE"), Some("parent_pipeline"));
    assert_eq!(vars.get("CI_PIPELINE_ID"), Some("7001"));
    // The trigger job's YAML variables, expanded as it sees them, over the child's own.
    assert_eq!(vars.get("PARENT_PIPELINE_ID"), Some("7"));
    assert_eq!(vars.get("OWN"), Some("own-g"));
    assert_eq!(vars.get("GLOBAL"), Some("g"));
    // --env values only with `forward: pipeline_variables`.
    assert_eq!(vars.get("FROM_CLI"), None);
    let keep = child_of(&plan, "keep");
    assert_eq!(names(keep), ["keep: c1"]);
    let vars = &keep.jobs[0].variables;
    assert_eq!((vars.get("GLOBAL"), vars.get("FROM_CLI")), (Some("child"), Some("cli")));
}

#[test]
fn needs_pipeline_resolves_to_the_parent_job() {
    let child = "image: alpine\nc1:\n  needs:\n    - pipeline: $PARENT_PIPELINE_ID\n      job: gen\n  script: [x]\n";
    let main = "image: alpine\nstages: [build, test]\ngen:\n  stage: build\n  script: [x]\nlate:\n  stage: test\n  \
                script: [x]\nkid:\n  stage: test\n  variables:\n    PARENT_PIPELINE_ID: $CI_PIPELINE_ID\n  trigger:\n    \
                include: child.yml\n";
    let plan = plan(&load(main, &[("child.yml", child)]), &facts()).unwrap_or_else(|e| panic!("{e}"));
    let gen = plan.jobs.iter().position(|j| j.name == "gen").expect("gen");
    let c1 = &child_of(&plan, "kid").jobs[0];
    assert_eq!(c1.parent_artifacts, [gen]);
    assert!(c1.waits_for.is_empty());

    // A parent job that runs with (not before) the trigger job cannot be needed.
    let late = child.replace("job: gen", "job: late");
    let e = super::plan(&load(main, &[("child.yml", &late)]), &facts()).expect_err("late").to_string();
    assert!(e.starts_with("/p/child.yml:4: c1.needs[0]: job `late` of the parent pipeline has not finished"), "{e}");

    // Another pipeline's id (or the root pipeline itself): left out with the note.
    let other = child.replace("$PARENT_PIPELINE_ID", "\"123\"");
    let plan = super::plan(&load(main, &[("child.yml", &other)]), &facts()).unwrap_or_else(|e| panic!("{e}"));
    assert!(child_of(&plan, "kid").jobs[0].parent_artifacts.is_empty());
    assert!(
        plan.notes.iter().any(|n| n.starts_with("child pipeline `kid`: /p/child.yml:4: c1.needs[0]: left out")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn a_dynamic_child_reads_the_artifact_of_a_job_it_waits_for() {
    let main = "image: alpine\nstages: [build, test]\ngen:\n  stage: build\n  script: [x]\n  artifacts:\n    paths: \
                [gen.yml]\nkid:\n  stage: test\n  trigger:\n    include:\n      - artifact: gen.yml\n        job: gen\n";
    let plan = plan(&load(main, &[]), &facts()).unwrap_or_else(|e| panic!("{e}"));
    let kid = plan.jobs.iter().find(|j| j.name == "kid").expect("kid");
    let Some(ChildPlan::Dynamic(dynamic)) = kid.downstream.as_deref().map(|d| &d.child) else { panic!("not dynamic") };
    assert_eq!(dynamic.files, [(0, "gen.yml".to_string())]);
    assert_eq!((dynamic.prefix.as_str(), dynamic.depth), ("kid: ", 1));

    // Planned once the file exists: the child's jobs, named after the trigger.
    let text = "c1:\n  image: alpine\n  script: [x]\n".to_string();
    let child = parse::parse_str(&text, Path::new("gen: gen.yml")).unwrap_or_else(|e| panic!("{e}"));
    let planned = plan_dynamic(&child, dynamic, &plan, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&planned), ["kid: c1"]);
    assert_eq!(planned.jobs[0].variables.get("CI_PIPELINE_SOURCE"), Some("parent_pipeline"));

    // The trigger job must wait for the job whose artifact it reads.
    let same_stage = main.replace("stage: test\n  trigger", "stage: build\n  trigger");
    let e = super::plan(&load(&same_stage, &[]), &facts()).expect_err("same stage").to_string();
    assert!(
        e.starts_with("/p/.gitlab-ci.yml:12: kid.trigger.include[0].job: trigger job `kid` does not wait for `gen`"),
        "{e}"
    );
}
