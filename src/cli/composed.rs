//! `glci run --list` and `glci run --preview`: the composed pipeline shown instead of run. The
//! list is every job with its stage, `when`, `needs`, `allow_failure` and whether its rules
//! keep it (and why), a child pipeline's jobs (`trigger: job`) right after their trigger job
//! (issue 17; a dynamic child's are known only once it is created, its trigger's row says so);
//! the preview is the full configuration (`parse::preview`). Rendering only: strings for
//! `cli::run` to print through `print_stdout`.

use crate::pipeline::model::{AllowFailure, When};
use crate::pipeline::plan::{ChildPlan, JobDecision, Plan};

/// Every decision of `plan` in file order, each trigger job's child's after it, with the
/// child pipeline it belongs to (`None`: the root).
fn decisions(plan: &Plan, pipeline: Option<&str>) -> Vec<(Option<String>, JobDecision)> {
    let mut out = Vec::new();
    for d in &plan.decisions {
        let downstream = plan.jobs.iter().find(|j| j.name == d.name).and_then(|j| j.downstream.as_deref());
        let mut d = d.clone();
        if let Some(ChildPlan::Dynamic(dynamic)) = downstream.map(|d| &d.child) {
            let files: Vec<String> =
                dynamic.files.iter().map(|(from, path)| format!("{path} of {}", plan.jobs[*from].name)).collect();
            d.reason = format!(
                "{}; creates a dynamic child pipeline from {} (its jobs are known once that has run)",
                d.reason,
                files.join(", ")
            );
        }
        let name = d.name.clone();
        out.push((pipeline.map(String::from), d));
        if let Some(ChildPlan::Ready(child)) = downstream.map(|d| &d.child) {
            out.extend(decisions(child, Some(&name)));
        }
    }
    out
}

fn when_name(when: When) -> &'static str {
    match when {
        When::OnSuccess => "on_success",
        When::OnFailure => "on_failure",
        When::Always => "always",
        When::Manual => "manual",
        When::Never => "never",
    }
}

fn allow_failure_text(allow: &AllowFailure) -> String {
    match allow {
        AllowFailure::No => "false".into(),
        AllowFailure::Yes => "true".into(),
        AllowFailure::ExitCodes(codes) => {
            format!("exit codes {}", codes.iter().map(i32::to_string).collect::<Vec<_>>().join(", "))
        }
    }
}

fn needs_text(decision: &JobDecision) -> String {
    match &decision.needs {
        None => "(stage order)".into(),
        Some(needs) if needs.is_empty() => "[]".into(),
        Some(needs) => needs.join(", "),
    }
}

/// The `--list` table: one row per job, in file order.
pub fn list_text(plan: &Plan) -> String {
    let header = ["JOB", "STAGE", "WHEN", "ALLOW_FAILURE", "NEEDS", "IN PIPELINE"].map(String::from);
    let mut rows: Vec<[String; 6]> = vec![header];
    for (_, d) in &decisions(plan, None) {
        let kept = if d.when == When::Never { "no" } else { "yes" };
        rows.push([
            d.name.clone(),
            d.stage.clone(),
            when_name(d.when).into(),
            allow_failure_text(&d.allow_failure),
            needs_text(d),
            format!("{kept}: {}", d.reason),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    if let Some(name) = &plan.name {
        out.push_str(&format!("Pipeline: {name}\n"));
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--list --json`: one object per job per line.
pub fn list_json(plan: &Plan) -> String {
    let mut out = String::new();
    for (pipeline, d) in &decisions(plan, None) {
        let allow = match &d.allow_failure {
            AllowFailure::No => serde_json::json!(false),
            AllowFailure::Yes => serde_json::json!(true),
            AllowFailure::ExitCodes(codes) => serde_json::json!({ "exit_codes": codes }),
        };
        let value = serde_json::json!({
            "job": d.name,
            "stage": d.stage,
            "when": when_name(d.when),
            "allow_failure": allow,
            "needs": d.needs,
            "included": d.when != When::Never,
            "reason": d.reason,
            "pipeline": pipeline,
        });
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

/// `--preview`: the root's configuration, then each child pipeline's as a YAML document of its
/// own that says whose it is; with `--json` the root's object on the first line, then one
/// `{"child_pipeline": name, "config": {...}}` per child.
pub fn preview_text(preview: &crate::pipeline::parse::Preview, json: bool) -> String {
    let mut out = if json { format!("{}\n", preview.json) } else { preview.yaml.clone() };
    for (name, yaml, value) in &preview.children {
        if json {
            out.push_str(&format!("{}\n", serde_json::json!({ "child_pipeline": name, "config": value })));
        } else {
            let body = yaml.strip_prefix("---\n").unwrap_or(yaml);
            out.push_str(&format!("---\n# child pipeline of trigger job `{name}` (trigger: include)\n{body}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(name: &str, when: When, needs: Option<Vec<&str>>, reason: &str) -> JobDecision {
        JobDecision {
            name: name.into(),
            stage: "build".into(),
            when,
            allow_failure: AllowFailure::No,
            needs: needs.map(|n| n.into_iter().map(String::from).collect()),
            reason: reason.into(),
        }
    }

    fn plan_of(decisions: Vec<JobDecision>) -> Plan {
        Plan {
            pipeline_id: 1,
            project_dir: "/p".into(),
            project_path: "p".into(),
            project_dir_in_job: "/builds/p".into(),
            jobs: vec![],
            excluded_by_workflow: None,
            name: Some("nightly".into()),
            decisions,
            notes: vec![],
            cli_variables: vec![],
        }
    }

    #[test]
    fn table_and_json() {
        let mut manual = decision("deploy-long-name", When::Manual, Some(vec!["a", "b"]), "rule 1 (ci.yml:3) matched");
        manual.allow_failure = AllowFailure::ExitCodes(vec![3, 4]);
        let plan = plan_of(vec![
            decision("a", When::OnSuccess, None, "no rules"),
            manual,
            decision("c", When::Never, Some(vec![]), "no rule matched"),
        ]);
        assert_eq!(
            list_text(&plan),
            "Pipeline: nightly\n\
             JOB               STAGE  WHEN        ALLOW_FAILURE    NEEDS          IN PIPELINE\n\
             a                 build  on_success  false            (stage order)  yes: no rules\n\
             deploy-long-name  build  manual      exit codes 3, 4  a, b           yes: rule 1 (ci.yml:3) matched\n\
             c                 build  never       false            []             no: no rule matched\n"
        );
        let lines: Vec<serde_json::Value> =
            list_json(&plan).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[1]["allow_failure"], serde_json::json!({"exit_codes": [3, 4]}));
        assert_eq!(lines[0]["needs"], serde_json::Value::Null);
        assert_eq!((lines[2]["included"].as_bool(), lines[2]["when"].as_str()), (Some(false), Some("never")));
    }
}
