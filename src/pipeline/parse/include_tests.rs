//! Tests of `include.rs`: forms, merge order, wildcards, variables, rules, limits and errors.

use super::*;
use std::collections::HashMap;
use std::io;

const MAIN: &str = "/p/.gitlab-ci.yml";

fn tree(text: &str) -> Node {
    let file: Rc<Path> = Rc::from(Path::new(MAIN));
    yaml::load(text, &file).unwrap()
}

/// Composes `text` as `/p/.gitlab-ci.yml` with the project files of `table` and `vars`.
fn compose_with(text: &str, table: &[(&str, &str)], vars: &[(&str, &str)]) -> Result<Map, PipelineError> {
    let contents: HashMap<PathBuf, String> =
        table.iter().map(|(p, t)| (Path::new("/p").join(p), t.to_string())).collect();
    let read = move |path: &Path| contents.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
    let files: Vec<String> = table.iter().map(|(p, _)| p.to_string()).collect();
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |name: &str| vars.get(name).cloned();
    let sources = Sources {
        project: Path::new("/p"),
        read: &read,
        files: &files,
        variables: &lookup,
        inputs: &[],
        fetch: None,
        changed: &nothing_known,
    };
    includes(tree(text), &sources)
}

fn compose(text: &str, table: &[(&str, &str)]) -> Result<Map, PipelineError> {
    compose_with(text, table, &[])
}

/// The tree as plain text for comparisons: `{k: v, ...}`, `[...]`.
fn show(node: &Node) -> String {
    match &node.value {
        Value::Map(m) => {
            let inner: Vec<String> = m.iter().map(|e| format!("{}: {}", e.key, show(&e.value))).collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Seq(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => other.scalar_string().unwrap_or_else(|| format!("{other:?}")),
    }
}

fn job<'m>(map: &'m Map, name: &str) -> &'m Node {
    &map.get(name).unwrap_or_else(|| panic!("no {name}")).value
}

fn keys(map: &Map) -> Vec<&str> {
    map.keys().collect()
}

#[test]
fn includes_merge_under_the_main_file() {
    let map = compose(
        "include:\n  - local: ci/a.yml\n  - /ci/b.yml\nvariables:\n  X: main\njob:\n  script: main\n",
        &[
            ("ci/a.yml", "variables:\n  X: a\n  Y: a\njob:\n  script: a\n  stage: build\n.t:\n  image: i\n"),
            ("ci/b.yml", "variables:\n  Y: b\n"),
        ],
    )
    .unwrap();
    assert_eq!(show(job(&map, "variables")), "{X: main, Y: b}");
    assert_eq!(show(job(&map, "job")), "{script: main, stage: build}");
    assert_eq!(show(job(&map, ".t")), "{image: i}");
    assert!(!map.contains("include"));
    // Values keep the file they were written in.
    let stage = match &job(&map, "job").value {
        Value::Map(m) => m.get("stage").cloned().unwrap(),
        _ => panic!(),
    };
    assert_eq!((&*stage.value.file, stage.line), (Path::new("/p/ci/a.yml"), 6));
}

#[test]
fn include_forms() {
    let table = [("x.yml", "x:\n  script: x\n")];
    for text in ["include: x.yml\n", "include: /x.yml\n", "include:\n  local: x.yml\n", "include: [{local: /x.yml}]\n"]
    {
        let map = compose(text, &table).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(map.contains("x"), "{text}");
    }
}

#[test]
fn nested_includes_and_loops() {
    let map = compose("include: a.yml\n", &[("a.yml", "include: b.yml\na: {}\n"), ("b.yml", "b: {}\n")]).unwrap();
    assert_eq!(keys(&map), ["b", "a"]);
    let e = compose("include: a.yml\n", &[("a.yml", "include: b.yml\n"), ("b.yml", "include: /a.yml\n")]).unwrap_err();
    assert_eq!(e.file, Path::new("/p/b.yml"));
    assert_eq!((e.line, e.key.as_str()), (Some(1), "include"));
    assert!(e.message.contains("include loop: /p/a.yml → /p/b.yml → /p/a.yml"), "{e}");
    let e = compose("include: .gitlab-ci.yml\n", &[(".gitlab-ci.yml", "")]).unwrap_err();
    assert!(e.message.contains("include loop"), "{e}");
}

#[test]
fn the_same_file_twice_is_merged_twice_the_last_winning() {
    // GitLab's documented example: the file included last overrides the earlier ones.
    let table = [
        ("defaults.yml", "default:\n  before_script: [default]\n"),
        ("unit.yml", "include: [defaults.yml]\ndefault:\n  before_script: [unit]\nunit: {script: u}\n"),
        ("smoke.yml", "include: [defaults.yml]\ndefault:\n  before_script: [smoke]\nsmoke: {script: s}\n"),
    ];
    let map = compose("include: [unit.yml, smoke.yml]\n", &table).unwrap();
    assert_eq!(show(job(&map, "default")), "{before_script: [smoke]}");
    let map = compose("include: [smoke.yml, unit.yml]\n", &table).unwrap();
    assert_eq!(show(job(&map, "default")), "{before_script: [unit]}");
}

#[test]
fn too_many_includes() {
    let e = compose("include: a.yml\n", &[("a.yml", "include: [b.yml, b.yml]\n"), ("b.yml", "")]);
    assert!(e.is_ok(), "the same file twice, not nested, is fine");
    let many = format!("include: [{}]\n", vec!["b.yml"; 150].join(", "));
    assert!(compose(&many, &[("b.yml", "")]).is_ok(), "150 is the limit");
    let many = format!("include:\n{}", "  - b.yml\n".repeat(151));
    let e = compose(&many, &[("b.yml", "")]).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(152), "include[150]"));
    assert!(e.message.contains("Maximum of 150 nested includes are allowed"), "{e}");
}

#[test]
fn wildcards_follow_gitlab() {
    let table = [
        ("configs/a.yml", "a: {}\n"),
        ("configs/b.yml", "b: {}\n"),
        ("configs/sub/c.yml", "c: {}\n"),
        ("configs/sub/deeper/d.yml", "d: {}\n"),
        ("configs/e.yaml", "e: {}\n"),
        ("other/f.yml", "f: {}\n"),
    ];
    let cases: &[(&str, &[&str])] = &[
        ("include: 'configs/*.yml'\n", &["a", "b"]),
        ("include: 'configs/**.yml'\n", &["a", "b", "c", "d"]),
        ("include: 'configs/**/*.yml'\n", &["c", "d"]),
        ("include: {local: '/configs/*.y*ml'}\n", &["a", "b", "e"]),
        ("include: '**/f.yml'\n", &["f"]),
        ("include: 'none/*.yml'\n", &[]),
        // Only `*` is special: `?` and `[` are literal, as in GitLab.
        ("include: 'configs/?.yml'\nx: {}\n", &["x"]),
    ];
    for (text, want) in cases {
        match compose(text, &table) {
            Ok(map) => assert_eq!(keys(&map), *want, "{text}"),
            Err(e) => assert!(text.contains('?') && e.message.contains("does not exist"), "{text}: {e}"),
        }
    }
    // A wildcard in an included file does not include that file again.
    let map =
        compose("include: 'ci/*.yml'\n", &[("ci/a.yml", "include: 'ci/*.yml'\na: {}\n"), ("ci/b.yml", "b: {}\n")])
            .unwrap();
    assert_eq!(keys(&map), ["b", "a"]);
}

#[test]
fn variables_in_paths() {
    let table = [("ci/main.yml", "m: {}\n"), ("ci/g/p.yml", "p: {}\n"), ("ci/x.yml", "x: {}\n")];
    let vars = [("CI_COMMIT_REF_NAME", "main"), ("CI_PROJECT_PATH", "g/p"), ("DIR", "ci")];
    let map = compose_with(
        "include:\n  - 'ci/$CI_COMMIT_REF_NAME.yml'\n  - local: 'ci/${CI_PROJECT_PATH}.yml'\n",
        &table,
        &vars,
    )
    .unwrap();
    assert_eq!(keys(&map), ["m", "p"]);
    // The string form expands before the wildcard; the map form after it (GitLab's order).
    let map = compose_with("include: '$DIR/*.yml'\n", &table, &vars).unwrap();
    assert_eq!(keys(&map), ["m", "x"]);
    let map = compose_with("include: {local: '$DIR/*.yml'}\nk: {}\n", &table, &vars).unwrap();
    assert_eq!(keys(&map), ["k"]);
    // The file's own `variables:` are not seen by `include`; an unknown variable is empty.
    let e = compose_with("variables: {F: x}\ninclude: ci/$F.yml\n", &table, &vars).unwrap_err();
    assert_eq!(e.message, "local file `ci/.yml` does not exist");
}

#[test]
fn rules_keep_or_drop_an_include() {
    let table = [("a.yml", "a: {}\n"), ("b.yml", "b: {}\n"), ("marker.txt", "")];
    let vars = [("CI_COMMIT_BRANCH", "main")];
    let text = "include:\n\
        \x20 - local: a.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"main\"\n\
        \x20 - local: b.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"dev\"\n";
    assert_eq!(keys(&compose_with(text, &table, &vars).unwrap()), ["a"]);
    let text = "include:\n  - local: a.yml\n    rules:\n      - exists: [marker.txt]\n        when: never\n      - when: always\n\
        \x20 - local: b.yml\n    rules:\n      - exists: ['*.txt']\n";
    assert_eq!(keys(&compose_with(text, &table, &vars).unwrap()), ["b"]);
    let text = "include:\n  - local: a.yml\n    rules:\n      - exists: {paths: [nope.txt]}\nk: {}\n";
    assert_eq!(keys(&compose_with(text, &table, &vars).unwrap()), ["k"], "no rule matches: left out");
    let text = "include:\n  - local: 'a.yml'\n    rules:\n      - if: $CI_COMMIT_BRANCH\n        when: never\n\
        \x20     - when: always\nk: {}\n";
    assert_eq!(keys(&compose_with(text, &table, &vars).unwrap()), ["k"]);
}

#[test]
fn include_errors() {
    let cases = [
        ("include:\n  remote: https://x/y.yml\n", 2, "include.remote", "no GitLab instance to fetch it from"),
        ("include:\n  - local: a.yml\n  - template: Auto-DevOps.gitlab-ci.yml\n", 3, "include[1].template", "template"),
        ("include:\n  - project: g/p\n    file: x.yml\n", 2, "include[0].project", "project `g/p` file `x.yml`"),
        ("include:\n  - project: g/p\n", 2, "include[0]", "missing `file`"),
        ("include:\n  local: a.yml\n  rules:\n    - if: $X = 1\n", 4, "include.rules[0].if", "invalid expression"),
        ("include:\n  local: a.yml\n  rules:\n    - when: manual\n", 4, "include.rules[0].when", "`never` or `always`"),
        ("include:\n  local: a.yml\n  rules:\n    - needs: [x]\n", 4, "include.rules[0].needs", "unknown key"),
        ("include:\n  locale: a.yml\n", 2, "include.locale", "unknown key"),
        ("include:\n  local: a.yml\n  inputs: {a: 1}\n", 3, "include.inputs", "Given inputs not defined"),
        ("include:\n  local: a.yml\n  remote: https://x\n", 1, "include", "only one of `local`, `remote`"),
        ("include: missing.yml\n", 1, "include", "local file `missing.yml` does not exist"),
        ("include: ../up.yml\n", 1, "include", "cannot leave the project"),
        ("include: 3\n", 1, "include", "expected a path"),
        ("include: {local: [a]}\n", 1, "include.local", "expected a non-empty string"),
        ("include: /\n", 1, "include", "empty include path"),
        ("include: {}\n", 1, "include", "needs one of `local`"),
    ];
    for (text, line, key, want) in cases {
        let e = compose(text, &[("a.yml", "")]).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
        assert!(e.message.contains(want), "{text}: {e}");
    }
    let e = compose("include: a.yml\n", &[("a.yml", "- x\n")]).unwrap_err();
    assert_eq!(e.file, Path::new("/p/a.yml"));
    assert!(e.message.contains("top level must be a map"), "{e}");
    let e = compose("include: a.yml\n", &[("a.yml", "a: [\n")]).unwrap_err();
    assert_eq!(e.file, Path::new("/p/a.yml"));
}

#[test]
fn empty_main_file_is_an_error() {
    let e = compose("# nothing\n", &[]).unwrap_err();
    assert_eq!(e.to_string(), "/p/.gitlab-ci.yml: the file is empty (no jobs)");
}

#[test]
fn remote_files_through_the_fetcher_with_integrity() {
    let body = "r:\n  script: x\n";
    let fetch = |source: &Source| match source {
        Source::Remote(url) if url == "https://h/r.yml" => {
            Ok(Fetched { text: body.to_string(), name: url.clone(), project: None, component: None })
        }
        other => Err(format!("no {other:?}")),
    };
    let read = |_: &Path| -> io::Result<String> { Err(io::Error::from(io::ErrorKind::NotFound)) };
    let lookup = |_: &str| None;
    let sources = Sources {
        project: Path::new("/p"),
        read: &read,
        files: &[],
        variables: &lookup,
        inputs: &[],
        fetch: Some(&fetch),
        changed: &nothing_known,
    };
    let digest = format!("sha256-{}", crate::encoding::base64_encode(&sha2::Sha256::digest(body.as_bytes())));
    let text = format!("include:\n  - remote: https://h/r.yml\n    integrity: '{digest}'\n");
    assert_eq!(keys(&includes(tree(&text), &sources).unwrap()), ["r"]);
    let text = "include:\n  - remote: https://h/r.yml\n    integrity: 'sha256-AAAA'\n";
    let e = includes(tree(text), &sources).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "include[0].remote"));
    assert!(e.message.contains("integrity check failed"), "{e}");
    let e = includes(tree("include:\n  - remote: https://h/none.yml\n"), &sources).unwrap_err();
    assert_eq!(e.message, "remote `https://h/none.yml`: no Remote(\"https://h/none.yml\")");
    // A file of the instance is named by what the fetcher calls it.
    let e = includes(
        tree("include: https://h/r.yml\n"),
        &Sources {
            fetch: Some(&|_: &Source| {
                Ok(Fetched { text: "- x\n".into(), name: "https://h/r.yml".into(), project: None, component: None })
            }),
            ..sources
        },
    )
    .unwrap_err();
    assert_eq!(e.file, Path::new("https://h/r.yml"));
}

#[test]
fn rules_changes_keep_an_include_when_a_matching_file_changed() {
    let table = [("a.yml", "a: {}\n"), ("b.yml", "b: {}\n"), ("c.yml", "c: {}\n")];
    let contents: HashMap<PathBuf, String> =
        table.iter().map(|(p, t)| (Path::new("/p").join(p), t.to_string())).collect();
    let read = move |path: &Path| contents.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
    let changed = |reference: Option<&str>| match reference {
        None => Ok(Some(vec!["src/main.rs".to_string(), "Dockerfile".to_string()])),
        Some("refs/heads/stable") => Ok(Some(vec!["docs/x.md".to_string()])),
        Some(other) => Err(format!("`{other}`: no such branch, tag or commit in this repository")),
    };
    let lookup = |_: &str| None;
    let sources = Sources {
        project: Path::new("/p"),
        read: &read,
        files: &[],
        variables: &lookup,
        inputs: &[],
        fetch: None,
        changed: &changed,
    };
    let text = "include:\n\
        \x20 - local: a.yml\n    rules:\n      - changes: ['src/**/*.{rs,toml}']\n\
        \x20 - local: b.yml\n    rules:\n      - changes: {paths: [Dockerfile], compare_to: refs/heads/stable}\n\
        \x20 - local: c.yml\n    rules:\n      - changes: {paths: ['docs/*'], compare_to: refs/heads/stable}\n";
    assert_eq!(keys(&includes(tree(text), &sources).unwrap()), ["a", "c"]);
    let text =
        "include:\n  - local: a.yml\n    rules:\n      - changes:\n          paths: [x]\n          compare_to: nope\n";
    let e = includes(tree(text), &sources).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(6), "include[0].rules[0].changes.compare_to"));
    assert!(e.message.contains("compare_to `nope`: `nope`: no such branch"), "{e}");
    // Nothing known (no git): every `changes` holds, as on GitLab.
    let sources = Sources { changed: &nothing_known, ..sources };
    let text = "include:\n  - local: b.yml\n    rules:\n      - changes: [nothing.txt]\n";
    assert_eq!(keys(&includes(tree(text), &sources).unwrap()), ["b"]);
}

/// Composes `text` with a fetcher serving project `g/lib` at `main`: its files `lib` (path,
/// text), listed by `Source::Files`; `here` are this project's files.
fn compose_with_lib(text: &str, here: &[&str], lib: &[(&str, &str)]) -> Result<Map, PipelineError> {
    let read = |_: &Path| -> io::Result<String> { Err(io::Error::from(io::ErrorKind::NotFound)) };
    let files: Vec<String> = here.iter().map(|f| f.to_string()).collect();
    let lookup = |name: &str| (name == "LIB").then(|| "g/lib".to_string());
    let fetch = |source: &Source| match source {
        Source::Files { project, reference } if project == "g/lib" && reference == "main" => Ok(Fetched {
            text: lib.iter().map(|(p, _)| *p).collect::<Vec<_>>().join("\n"),
            name: "g/lib@main".into(),
            project: None,
            component: None,
        }),
        Source::Project { project, reference: Some(reference), file } if project == "g/lib" && reference == "main" => {
            match lib.iter().find(|(p, _)| p == file) {
                Some((_, text)) => Ok(Fetched {
                    text: text.to_string(),
                    name: format!("g/lib@main:{file}"),
                    project: Some(("g/lib".into(), "main".into())),
                    component: None,
                }),
                None => Err(format!("no {file}")),
            }
        }
        other => Err(format!("no {other:?}")),
    };
    let sources = Sources {
        project: Path::new("/p"),
        read: &read,
        files: &files,
        variables: &lookup,
        inputs: &[],
        fetch: Some(&fetch),
        changed: &nothing_known,
    };
    includes(tree(text), &sources)
}

#[test]
fn wildcards_and_rules_in_a_file_of_another_project_look_at_that_project() {
    let lib = [
        ("ci/entry.yml", "include:\n  - local: ci/parts/*.yml\n  - local: ci/kept.yml\n    rules:\n      - exists: [ci/marker]\n  - local: ci/dropped.yml\n    rules:\n      - exists: [only-here.txt]\n  - local: ci/changed.yml\n    rules:\n      - changes: [src/**/*]\n"),
        ("ci/parts/a.yml", "part-a:\n  script: a\n"),
        ("ci/parts/b.yml", "part-b:\n  script: b\n"),
        ("ci/parts/deeper/c.yml", "part-c:\n  script: c\n"),
        ("ci/marker", ""),
        ("ci/kept.yml", "kept:\n  script: k\n"),
        ("ci/dropped.yml", "dropped:\n  script: d\n"),
        ("ci/changed.yml", "changed:\n  script: c\n"),
    ];
    let map = compose_with_lib(
        "include:\n  - project: g/lib\n    ref: main\n    file: ci/entry.yml\n  - local: mine.yml\n    rules:\n      \
         - exists: {paths: [ci/marker], project: $LIB, ref: main}\nown:\n  script: o\n",
        &["only-here.txt"],
        &lib,
    );
    // `mine.yml` is kept by the rule (it exists in g/lib), then read from this project: absent here.
    let err = map.expect_err("mine.yml is not in this project");
    assert!(err.to_string().contains("local file `mine.yml` does not exist"), "{err}");
    let map = compose_with_lib(
        "include:\n  - project: g/lib\n    ref: main\n    file: ci/entry.yml\nown:\n  script: o\n",
        &["only-here.txt"],
        &lib,
    )
    .unwrap();
    // Wildcards match g/lib's files (`*` not across `/`); `exists` looks in g/lib, where
    // `only-here.txt` is not; `changes` is the pipeline's (nothing known: it holds).
    assert_eq!(keys(&map), ["part-a", "part-b", "kept", "changed", "own"]);
    let map = compose_with_lib(
        "include:\n  - local: none.yml\n    rules:\n      - exists: {paths: [ci/none], project: g/lib, ref: main}\nown:\n  script: o\n",
        &[],
        &lib,
    )
    .unwrap();
    assert_eq!(keys(&map), ["own"]);
    let err = compose_with_lib(
        "include:\n  - local: x.yml\n    rules:\n      - exists: {paths: [a], ref: main}\n",
        &[],
        &lib,
    )
    .expect_err("ref without project");
    assert_eq!((err.line, err.key.as_str()), (Some(4), "include[0].rules[0].exists.ref"), "{err}");
}
