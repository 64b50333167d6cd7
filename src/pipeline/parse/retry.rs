//! `retry:` (entry/retry.rb): a number of extra attempts, 0 to 2, or `{max, when, exit_codes}`;
//! `when` names GitLab's failure reasons (or `always`), `exit_codes` whole numbers. Which
//! failures are retried is decided by [`RetryOn::allows`] as GitLab's AutoRetry does. Pure.

use super::read::Field;
use super::yaml::Value;
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::RetryOn;

/// The `retry: when` values GitLab accepts: its failure reasons and `always`
/// (lib/gitlab/ci/config/entry/retry.rb, lib/gitlab/ci/status/build/failed.rb).
const RETRY_WHEN: [&str; 38] = [
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "protected_environment_failure",
    "pipeline_loop_detected",
    "invalid_bridge_trigger",
    "downstream_bridge_project_not_found",
    "upstream_bridge_project_not_found",
    "insufficient_bridge_permissions",
    "insufficient_upstream_permissions",
    "bridge_pipeline_is_child_pipeline",
    "downstream_pipeline_creation_failed",
    "secrets_provider_not_found",
    "reached_max_descendant_pipelines_depth",
    "reached_max_pipeline_hierarchy_size",
    "project_deleted",
    "user_blocked",
    "ci_quota_exceeded",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "ip_restriction_failure",
    "failed_outdated_deployment_job",
    "reached_downstream_pipeline_trigger_rate_limit",
];

/// `retry: when`: one reason or a list of them; `retry: exit_codes`: a code or a list.
fn retry_conditions(field: &Field) -> Result<RetryOn, PipelineError> {
    let mut on = RetryOn::default();
    if let Some(when) = field.get("when")? {
        let items = if matches!(when.node.value, Value::Seq(_)) {
            when.items("a list of failure reasons")?
        } else {
            vec![when]
        };
        for item in items {
            let reason = item.string()?;
            if !RETRY_WHEN.contains(&reason.as_str()) {
                return Err(item.error(format!(
                    "unknown failure reason {reason:?} (use always, script_failure, job_execution_timeout, \
                     runner_system_failure, ... as GitLab's retry:when lists them)"
                )));
            }
            on.when.get_or_insert_with(Vec::new).push(reason);
        }
    }
    if let Some(codes) = field.get("exit_codes")? {
        let items = if matches!(codes.node.value, Value::Int(_)) {
            vec![codes]
        } else {
            codes.items("an exit code or a list of them")?
        };
        for item in items {
            let code = i32::try_from(item.integer()?).map_err(|_| item.error("exit code out of range"))?;
            on.exit_codes.get_or_insert_with(Vec::new).push(code);
        }
    }
    Ok(on)
}

/// `retry:` N or `{max: N, when, exit_codes}`, N in 0..=2, with the failures it is for.
pub fn retry(field: &Field) -> Result<(u32, RetryOn), PipelineError> {
    let (max, on) = match &field.node.value {
        Value::Int(_) => (field.clone(), RetryOn::default()),
        Value::Map(_) => {
            field.check_keys(&["max", "when", "exit_codes"])?;
            let on = retry_conditions(field)?;
            match field.get("max")? {
                Some(max) => (max, on),
                None => return Ok((0, on)),
            }
        }
        _ => return Err(field.expected("a number of retries (0, 1 or 2) or {max, when}")),
    };
    match max.integer()? {
        n @ 0..=2 => Ok((u32::try_from(n).unwrap_or(0), on)),
        n => Err(max.error(format!("retry must be 0, 1 or 2, not {n}"))),
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
        let root = yaml::load(text, &file).expect("yaml");
        let Value::Map(map) = &root.value else { panic!("not a map") };
        let entry = map.get("k").expect("k");
        f(&Field::entry("job", entry))
    }

    fn err<T: std::fmt::Debug>(text: &str, read: impl FnOnce(&Field) -> Result<T, PipelineError>) -> PipelineError {
        with_field(text, |f| read(f).expect_err(text))
    }

    #[test]
    fn retry_forms() {
        assert_eq!(with_field("k: 2", retry).unwrap(), (2, RetryOn::default()));
        let (max, on) = with_field("k: {max: 1, when: [script_failure], exit_codes: 137}", retry).unwrap();
        assert_eq!((max, on.when, on.exit_codes), (1, Some(vec!["script_failure".into()]), Some(vec![137])));
        assert_eq!(with_field("k: {when: always}", retry).unwrap().0, 0);
        assert_eq!(with_field("k: {max: 2, when: runner_system_failure}", retry).unwrap().1.when.unwrap().len(), 1);
        let e = err("k: {max: 1, when: [script_failure, oops]}", retry);
        assert_eq!(e.key, "job.k.when[1]", "{e}");
        assert!(e.message.contains("unknown failure reason \"oops\""), "{e}");
        assert_eq!(err("k: {max: 1, exit_codes: [1, x]}", retry).key, "job.k.exit_codes[1]");
        assert_eq!(err("k: {max: 1, when: 3}", retry).key, "job.k.when");
        // GitLab's AutoRetry: the reason in `when` (default [always] unless exit_codes), or the code.
        assert!(RetryOn::default().allows("script_failure", Some(1)));
        let on = |text: &str| with_field(text, retry).unwrap().1;
        let system = on("k: {max: 2, when: runner_system_failure}");
        assert!(!system.allows("script_failure", Some(1)) && system.allows("runner_system_failure", None));
        let codes = on("k: {max: 2, exit_codes: [137]}");
        assert!(codes.allows("script_failure", Some(137)) && !codes.allows("script_failure", Some(1)));
        assert!(!codes.allows("runner_system_failure", None));
        let both = on("k: {max: 2, when: job_execution_timeout, exit_codes: 137}");
        assert!(both.allows("job_execution_timeout", None) && both.allows("script_failure", Some(137)));
        assert!(!both.allows("script_failure", Some(2)));
        assert!(err("k: 3", retry).message.contains("retry must be 0, 1 or 2, not 3"));
        assert_eq!(err("k: {max: -1}", retry).key, "job.k.max");
        assert!(err("k: twice", retry).message.contains("expected a number of retries"));
    }
}
