//! `needs:` of a job and of a job rule → [`Need`]s with the line and key each was written at.
//! A need with `parallel: matrix` becomes one need per combination, each keeping the
//! combination so `mod.rs` can pick every instance a partial one (`{ARCH: x64}`) selects. A need
//! from another project (`project:`) is left out with a note, as gitlab-ci-local does: glci runs
//! one project's pipeline. One of another pipeline (`pipeline: $PARENT_PIPELINE_ID, job:`) is
//! kept as a [`PipelineNeed`] with that note: `plan` resolves it in a child pipeline (the
//! parent's job's artifacts) and says the note otherwise. Pure; called by `job.rs`/`read.rs`.

use super::read::{self, Combo, Field};
use super::yaml::Value;
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{Location, Need, PipelineNeed};

/// One need as written.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadNeed {
    pub need: Need,
    pub line: usize,
    pub key: String,
    /// `parallel: matrix` of the need: the job as written and the values of this combination.
    pub matrix: Option<Selector>,
}

/// A `needs:` list: the needs kept and the notes on those left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadNeeds {
    pub needs: Vec<ReadNeed>,
    /// `file:line: key: why it was left out`.
    pub notes: Vec<String>,
    /// `{pipeline, job}` needs, for `plan` (issue 17).
    pub pipelines: Vec<PipelineNeed>,
}

/// A job's `needs:` list of job names or `{job, artifacts, optional, parallel: {matrix}}`,
/// `{project, job, ref, artifacts}` or `{pipeline, job, artifacts}`.
pub fn needs(field: &Field) -> Result<ReadNeeds, PipelineError> {
    let mut out = ReadNeeds::default();
    for item in field.items("a list of jobs")? {
        if let Some((note, need)) = cross_pipeline(&item)? {
            match need {
                Some(need) => out.pipelines.push(need),
                None => out.notes.push(note),
            }
            continue;
        }
        for (need, matrix) in need(&item)? {
            out.needs.push(ReadNeed { need, line: item.line, key: item.key.clone(), matrix });
        }
    }
    Ok(out)
}

/// `rules: needs:` job names or `{job, artifacts, optional}` (GitLab takes no other forms there).
pub fn rule_needs(field: &Field) -> Result<Vec<Need>, PipelineError> {
    let mut out = Vec::new();
    for item in field.items("a list of jobs")? {
        if matches!(item.node.value, Value::Map(_)) {
            item.check_keys(&["job", "artifacts", "optional"])?;
        }
        out.extend(need(&item)?.into_iter().map(|(need, _)| need));
    }
    Ok(out)
}

/// A need of another project's or pipeline's job: the note saying it is left out, and for
/// `{pipeline, job}` the need itself.
fn cross_pipeline(field: &Field) -> Result<Option<(String, Option<PipelineNeed>)>, PipelineError> {
    let Value::Map(map) = &field.node.value else { return Ok(None) };
    let (kind, what) = if map.get("project").is_some() {
        ("project", "a job of another project's pipeline")
    } else if map.get("pipeline").is_some() {
        ("pipeline", "a job of another pipeline")
    } else {
        return Ok(None);
    };
    field.check_keys(&["project", "pipeline", "job", "ref", "artifacts", "optional"])?;
    let source = field.get(kind)?.map(|f| f.name(&format!("a {kind}"))).transpose()?.unwrap_or_default();
    let job_name = field.get("job")?.map(|f| f.name("a job name")).transpose()?;
    let job = job_name.as_ref().map(|j| format!("`{j}` of ")).unwrap_or_default();
    let note = format!(
        "left out: `needs: {kind}` names {what} ({job}{kind} `{source}`); glci runs this project's pipeline \
         only, so that job's status and artifacts are not waited for"
    );
    let note = field.error(note).to_string();
    let need = match job_name {
        Some(job) if kind == "pipeline" => Some(PipelineNeed {
            pipeline: source,
            job,
            artifacts: field.get("artifacts")?.map(|f| f.boolean()).transpose()?.unwrap_or(true),
            location: Location { file: field.node.file.to_path_buf(), line: field.line },
            key: field.key.clone(),
            note: note.clone(),
        }),
        _ => None,
    };
    Ok(Some((note, need)))
}

/// The job a `parallel: matrix` need names, and one combination of its values.
type Selector = (String, Combo);

fn need(field: &Field) -> Result<Vec<(Need, Option<Selector>)>, PipelineError> {
    match &field.node.value {
        Value::Str(_) => Ok(vec![(Need { job: field.name("a job name")?, artifacts: true, optional: false }, None)]),
        Value::Map(_) => {
            field.check_keys(&["job", "artifacts", "optional", "parallel"])?;
            let job = field.get("job")?.ok_or_else(|| field.error("missing `job`"))?.name("a job name")?;
            let artifacts = field.get("artifacts")?.map(|f| f.boolean()).transpose()?.unwrap_or(true);
            let optional = field.get("optional")?.map(|f| f.boolean()).transpose()?.unwrap_or(false);
            let Some(parallel) = field.get("parallel")? else {
                return Ok(vec![(Need { job, artifacts, optional }, None)]);
            };
            if !matches!(parallel.node.value, Value::Map(_)) {
                return Err(parallel.expected("{matrix: [...]}"));
            }
            parallel.check_keys(&["matrix"])?;
            let matrix = parallel.get("matrix")?.ok_or_else(|| parallel.error("missing `matrix`"))?;
            Ok(read::matrix(&matrix)?
                .into_iter()
                .map(|combo| {
                    let need = Need { job: read::instance_name(&job, &combo), artifacts, optional };
                    (need, Some((job.clone(), combo)))
                })
                .collect())
        }
        _ => Err(field.expected("a job name or {job, artifacts, optional}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::rc::Rc;

    use crate::pipeline::parse::yaml;

    fn with_field<T>(text: &str, f: impl FnOnce(&Field) -> T) -> T {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        let root = yaml::load(text, &file).unwrap();
        let Value::Map(map) = &root.value else { panic!("not a map") };
        f(&Field::entry("job", map.get("k").unwrap()))
    }

    fn err<T: std::fmt::Debug>(text: &str, read: impl FnOnce(&Field) -> Result<T, PipelineError>) -> PipelineError {
        with_field(text, |f| read(f).expect_err(text))
    }

    #[test]
    fn need_forms() {
        let n = with_field("k:\n  - a\n  - {job: b, artifacts: false}\n  - job: c\n    optional: true\n", needs)
            .unwrap()
            .needs;
        let got: Vec<(Need, usize)> = n.into_iter().map(|n| (n.need, n.line)).collect();
        assert_eq!(
            got,
            [
                (Need { job: "a".into(), artifacts: true, optional: false }, 2),
                (Need { job: "b".into(), artifacts: false, optional: false }, 3),
                (Need { job: "c".into(), artifacts: true, optional: true }, 4),
            ]
        );
        assert!(with_field("k: []", needs).unwrap().needs.is_empty());
        let cases = [
            ("k: a", "job.k", "expected a list of jobs"),
            ("k: [{artifacts: true}]", "job.k[0]", "missing `job`"),
            ("k: [{job: a, project: g/p, reff: main}]", "job.k[0].reff", "unknown key"),
            ("k: [{job: a, parallel: {matrix: []}}]", "job.k[0].parallel.matrix", "the matrix is empty"),
            ("k: [{job: a, parallel: 2}]", "job.k[0].parallel", "expected {matrix: [...]}, found a number"),
            ("k: [{job: a, parallel: {}}]", "job.k[0].parallel", "missing `matrix`"),
            ("k: [{job: a, parallel: {matrix: [{}]}}]", "job.k[0].parallel.matrix[0]", "empty matrix entry"),
            ("k: [{job: a, artifact: false}]", "job.k[0].artifact", "unknown key"),
            ("k: [1]", "job.k[0]", "expected a job name"),
        ];
        for (text, key, want) in cases {
            let e = err(text, needs);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn needs_of_other_projects_and_pipelines_are_left_out_with_a_note() {
        let n = with_field(
            "k:\n  - a\n  - project: group/lib\n    job: build\n    ref: main\n    artifacts: true\n  \
             - pipeline: $UPSTREAM_ID\n    job: gen\n  - pipeline: other/project\n",
            needs,
        )
        .unwrap();
        assert_eq!(n.needs.iter().map(|n| n.need.job.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(n.notes.len(), 2);
        assert_eq!(
            n.notes[0],
            "ci.yml:3: job.k[1]: left out: `needs: project` names a job of another project's pipeline (`build` of \
             project `group/lib`); glci runs this project's pipeline only, so that job's status and artifacts are \
             not waited for"
        );
        // `{pipeline, job}` is kept for `plan` (a child's parent), its note with it.
        assert_eq!(n.pipelines.len(), 1);
        assert_eq!((n.pipelines[0].pipeline.as_str(), n.pipelines[0].job.as_str()), ("$UPSTREAM_ID", "gen"));
        let note = &n.pipelines[0].note;
        assert!(note.starts_with("ci.yml:7: job.k[2]: left out: `needs: pipeline`"), "{note}");
        assert!(note.contains("(`gen` of pipeline `$UPSTREAM_ID`)"), "{note}");
        assert!(n.notes[1].contains("(pipeline `other/project`)"), "{}", n.notes[1]);
    }

    #[test]
    fn needs_with_parallel_matrix_name_the_instances_and_keep_the_values() {
        let n = with_field(
            "k:\n  - job: build\n    artifacts: false\n    parallel:\n      matrix:\n        \
             - {OS: linux, ARCH: [amd64, arm64]}\n        - {ARCH: arm64}\n  - test\n",
            needs,
        )
        .unwrap()
        .needs;
        let got: Vec<(&str, bool, usize, &str)> =
            n.iter().map(|n| (n.need.job.as_str(), n.need.artifacts, n.line, n.key.as_str())).collect();
        assert_eq!(
            got,
            [
                ("build: [linux, amd64]", false, 2, "job.k[0]"),
                ("build: [linux, arm64]", false, 2, "job.k[0]"),
                ("build: [arm64]", false, 2, "job.k[0]"),
                ("test", true, 8, "job.k[1]"),
            ]
        );
        assert_eq!(n[2].matrix, Some(("build".into(), vec![("ARCH".into(), "arm64".into())])));
        assert_eq!(n[3].matrix, None);
    }

    #[test]
    fn rule_needs_take_names_and_job_maps_only() {
        let n = with_field("k: [a, {job: b, artifacts: false, optional: true}]", rule_needs).unwrap();
        assert_eq!(n[1], Need { job: "b".into(), artifacts: false, optional: true });
        let e = err("k: [{job: a, parallel: {matrix: [{A: 1}]}}]", rule_needs);
        assert_eq!((e.key.as_str(), e.message.contains("unknown key")), ("job.k[0].parallel", true), "{e}");
        let e = err("k: [{project: g/p, job: a}]", rule_needs);
        assert_eq!(e.key, "job.k[0].project");
    }
}
