//! Tests of `inputs.rs`: headers, types, defaults, options, regex, interpolation and functions,
//! through `include: inputs` and `--input` as a user writes them.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::pipeline::model::Pipeline;
use crate::pipeline::parse::{parse_sources, PipelineError, Sources};

/// Parses `main` as `/p/.gitlab-ci.yml` with the files of `table`, `--input`s and variables.
fn parse(
    main: &str,
    table: &[(&str, &str)],
    inputs: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> Result<Pipeline, PipelineError> {
    let contents: HashMap<PathBuf, String> =
        table.iter().map(|(p, t)| (Path::new("/p").join(p), t.to_string())).collect();
    let read = move |path: &Path| contents.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
    let files: Vec<String> = table.iter().map(|(p, _)| p.to_string()).collect();
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |name: &str| vars.get(name).cloned();
    let inputs: Vec<(String, String)> = inputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let sources = Sources {
        project: Path::new("/p"),
        read: &read,
        files: &files,
        variables: &lookup,
        inputs: &inputs,
        fetch: None,
        changed: &crate::pipeline::parse::include::nothing_known,
    };
    parse_sources(main, Path::new("/p/.gitlab-ci.yml"), &sources)
}

const TEMPLATE: &str = "spec:\n  inputs:\n    stage:\n      default: test\n    job-prefix:\n      description: the job names' prefix\n\
    \x20   replicas:\n      type: number\n      default: 1\n    verbose:\n      type: boolean\n      default: false\n\
    \x20   tags:\n      type: array\n      default: [a, b]\n    env:\n      options: [dev, prod]\n      default: dev\n\
    \x20   version:\n      regex: ^v\\d+\\.\\d+$\n      default: v1.0\n---\n\
    \"$[[ inputs.job-prefix ]]-build\":\n  stage: $[[ inputs.stage ]]\n  image: alpine\n\
    \x20 parallel: $[[ inputs.replicas ]]\n  tags: $[[ inputs.tags ]]\n\
    \x20 variables:\n    VERBOSE: $[[ inputs.verbose ]]\n    WHERE: \"deploy to $[[ inputs.env ]] with $[[ inputs.version ]]\"\n\
    \x20 script:\n    - echo $[[ inputs.job-prefix | truncate(0,3) ]]\n";

fn include(inputs: &str) -> String {
    format!("stages: [test, deploy]\ninclude:\n  - local: t.yml\n    inputs:\n{inputs}")
}

#[test]
fn inputs_fill_in_the_template_with_types_and_defaults() {
    let p = parse(
        &include("      job-prefix: service\n      replicas: 2\n      stage: deploy\n"),
        &[("t.yml", TEMPLATE)],
        &[],
        &[],
    )
    .unwrap();
    let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["service-build 1/2", "service-build 2/2"], "a whole-block number stays a number");
    let job = &p.jobs[0];
    assert_eq!(job.stage, "deploy");
    assert_eq!(job.script, ["echo ser"]);
    let vars: Vec<(&str, &str)> = job.variables.iter().map(|v| (v.name.as_str(), v.value.as_str())).collect();
    assert_eq!(vars, [("VERBOSE", "false"), ("WHERE", "deploy to dev with v1.0")]);
    assert_eq!(job.location.file, Path::new("/p/t.yml"));
}

#[test]
fn input_errors_name_the_file_line_and_input() {
    let table = [("t.yml", TEMPLATE)];
    let cases = [
        ("      replicas: 2\n", 3, "include[0].local", "`job-prefix` input: required value has not been provided"),
        (
            "      job-prefix: x\n      replicas: two\n",
            6,
            "include[0].inputs.replicas",
            "`replicas` input: provided value is not a number",
        ),
        (
            "      job-prefix: x\n      verbose: \"yes\"\n",
            6,
            "include[0].inputs.verbose",
            "provided value is not a boolean",
        ),
        ("      job-prefix: x\n      tags: a\n", 6, "include[0].inputs.tags", "provided value is not a array"),
        ("      job-prefix: 3\n", 5, "include[0].inputs.job-prefix", "provided value is not a string"),
        (
            "      job-prefix: x\n      env: qa\n",
            6,
            "include[0].inputs.env",
            "`qa` cannot be used because it is not in the list of allowed options",
        ),
        (
            "      job-prefix: x\n      version: \"1.0\"\n",
            6,
            "include[0].inputs.version",
            "does not match required RegEx pattern",
        ),
        ("      job-prefix: x\n      nope: 1\n", 6, "include[0].inputs.nope", "unknown input arguments: nope"),
    ];
    for (given, line, key, want) in cases {
        let e = parse(&include(given), &table, &[], &[]).unwrap_err();
        assert_eq!(e.file, Path::new("/p/.gitlab-ci.yml"), "{given}: {e}");
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{given}: {e}");
        assert!(e.message.contains(want), "{given}: {e}");
    }
    // Errors in the template itself name the template.
    let cases = [
        ("spec:\n  inputs:\n    n:\n      type: integer\n---\nj: {script: x}\n", 4, "spec.inputs.n.type", "unknown input type `integer`"),
        ("spec:\n  inputs:\n    n:\n      type: number\n      default: x\n---\nj: {script: x}\n", 5, "spec.inputs.n.default", "default value is not a number"),
        ("spec:\n  inputs:\n    n:\n      type: number\n      regex: x\n---\nj: {script: x}\n", 5, "spec.inputs.n.regex", "only be used with string inputs"),
        ("spec:\n  inputs:\n    n:\n      colour: red\n---\nj: {script: x}\n", 4, "spec.inputs.n.colour", "unknown key"),
        ("spec:\n  inputs:\n    n:\n---\nj:\n  script:\n    - $[[ inputs.m ]]\n", 7, "j.script[0]", "unknown interpolation key: `m`"),
        ("spec:\n  inputs:\n    n:\n---\nj:\n  script: $[[ input.n ]]\n", 6, "j.script", "invalid interpolation access pattern"),
        ("spec:\n  inputs:\n    n:\n---\nj:\n  script: $[[ inputs.n | upcase ]]\n", 6, "j.script", "no function matching `upcase`"),
        ("spec:\n  inputs:\n    n:\n---\nj:\n  script: $[[ inputs.n | expand_vars | expand_vars | expand_vars | expand_vars ]]\n", 6, "j.script", "too many functions"),
        ("a: 1\n---\nj: {script: x}\n", 3, "", "only follows a `spec:` header"),
    ];
    for (template, line, key, want) in cases {
        let e =
            parse("include:\n  - local: t.yml\n    inputs: {n: x}\n", &[("t.yml", template)], &[], &[]).unwrap_err();
        assert_eq!(e.file, Path::new("/p/t.yml"), "{template}: {e}");
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{template}: {e}");
        assert!(e.message.contains(want), "{template}: {e}");
    }
    let e = parse("include: t.yml\n", &[("t.yml", "j: {script: x}\n")], &[], &[]).unwrap();
    assert_eq!(e.jobs.len(), 1, "no inputs, no header: fine");
    let e =
        parse("include:\n  local: t.yml\n  inputs: {a: 1}\n", &[("t.yml", "j: {script: x}\n")], &[], &[]).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "include.inputs"));
    assert!(e.message.contains("Given inputs not defined in the `spec` section"), "{e}");
}

#[test]
fn functions_expand_vars_and_truncate() {
    let template = "spec:\n  inputs:\n    path:\n---\nj:\n  script:\n    - echo $[[ inputs.path | expand_vars | truncate(2, 6) ]]\n    - echo $[[ inputs.path ]]\n";
    let p = parse(
        "include:\n  - local: t.yml\n    inputs:\n      path: $CI_PROJECT_NAME/$UNSET/x\n",
        &[("t.yml", template)],
        &[],
        &[("CI_PROJECT_NAME", "project")],
    )
    .unwrap();
    assert_eq!(p.jobs[0].script, ["echo oject/", "echo $CI_PROJECT_NAME/$UNSET/x"]);
}

#[test]
fn command_line_inputs_fill_the_main_file() {
    let main = "spec:\n  inputs:\n    target:\n      options: [staging, production]\n    count:\n      type: number\n      default: 1\n---\n\
        deploy:\n  image: alpine\n  parallel: $[[ inputs.count ]]\n  script:\n    - deploy $[[ inputs.target ]]\n";
    let p = parse(main, &[], &[("target", "production"), ("count", "2")], &[]).unwrap();
    assert_eq!(p.jobs.len(), 2);
    assert_eq!(p.jobs[0].script, ["deploy production"]);
    let e = parse(main, &[], &[], &[]).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(1), "spec"));
    assert!(e.message.contains("`target` input: required value has not been provided (--input)"), "{e}");
    let e = parse(main, &[], &[("target", "production"), ("count", "many")], &[]).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(5), "spec.inputs.count"));
    assert_eq!(e.message, "--input count=many: `count` input: provided value is not a number");
    let e = parse(main, &[], &[("target", "qa")], &[]).unwrap_err();
    assert!(e.message.contains("`qa` cannot be used"), "{e}");
    let e = parse(main, &[], &[("target", "staging"), ("colour", "red")], &[]).unwrap_err();
    assert_eq!(e.message, "--input colour=red: unknown input arguments: colour");
    let e = parse("j: {script: x}\n", &[], &[("a", "b")], &[]).unwrap_err();
    assert!(e.message.contains("no `spec: inputs` header"), "{e}");
}
