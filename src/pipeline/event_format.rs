//! Pure: `execute` events as text for people (each log line prefixed by its job, colours only
//! on a terminal, a summary table at the end) or as line-delimited JSON for scripts. Job output
//! is outside text: control characters and escape sequences are removed before a terminal sees
//! them (colour sequences survive on a terminal). `cli::run` writes what this returns.

use std::time::Duration;

use serde_json::json;

use super::execute::{Event, JobReport, JobStatus, LogSource, PipelineStatus};

/// The longest job-name prefix; longer names are cut.
const MAX_PREFIX: usize = 24;
const RESET: &str = "\x1b[0m";
/// Colours of job prefixes, one per job in turn.
const PALETTE: [&str; 6] = ["\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[32m", "\x1b[96m"];

/// How text output looks.
#[derive(Clone, Debug)]
pub struct TextStyle {
    /// Colours (stdout is a terminal).
    pub color: bool,
    /// Prefix width: the longest planned job name, capped.
    pub width: usize,
    /// Job names in plan order (a job's colour is its position).
    pub jobs: Vec<String>,
}

impl TextStyle {
    pub fn new(color: bool, jobs: Vec<String>) -> Self {
        let width = jobs.iter().map(|j| j.chars().count()).max().unwrap_or(0).min(MAX_PREFIX);
        TextStyle { color, width, jobs }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    fn prefix(&self, job: &str) -> String {
        let mut name: String = job.chars().take(self.width.max(1)).collect();
        let pad = self.width.saturating_sub(name.chars().count());
        name.push_str(&" ".repeat(pad));
        let colour = self.jobs.iter().position(|j| j == job).map(|i| PALETTE[i % PALETTE.len()]).unwrap_or("");
        format!("{} |", self.paint(colour, &name))
    }
}

/// Removes control characters and escape sequences; keeps `ESC[…m` colours when `keep_color`.
pub fn sanitize(line: &str, keep_color: bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                let mut seq = String::new();
                let mut last = None;
                for d in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&d) {
                        last = Some(d);
                        break;
                    }
                    seq.push(d);
                }
                let is_color = last == Some('m') && seq.chars().all(|d| d.is_ascii_digit() || d == ';');
                if keep_color && is_color {
                    out.push_str(&format!("\x1b[{seq}m"));
                }
            } else if chars.peek() == Some(&']') {
                // OSC (window titles, links): up to BEL or ESC \.
                while let Some(d) = chars.next() {
                    if d == '\x07' || (d == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            } else {
                // Other two-char escapes (charset…).
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    if keep_color && out.contains('\x1b') {
        out.push_str(RESET);
    }
    out
}

/// `850ms`, `12.3s`, `2m 5s`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let secs = d.as_secs();
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

fn status_text(report: &JobReport) -> String {
    let status = if report.status == JobStatus::Failed && report.allowed_failure {
        "failed (allowed)".to_string()
    } else {
        report.status.as_str().to_string()
    };
    match report.delayed {
        Some(delay) => format!("{status} (delayed {})", duration(delay)),
        None => status,
    }
}

fn status_color(report: &JobReport) -> &'static str {
    match (report.status, report.allowed_failure) {
        (JobStatus::Success, _) => "\x1b[32m",
        (JobStatus::Failed, false) => "\x1b[31m",
        (JobStatus::Failed, true) => "\x1b[33m",
        _ => "\x1b[90m",
    }
}

/// The text for one event: zero or more lines, each ending in `\n`.
pub fn text(event: &Event, style: &TextStyle) -> String {
    match event {
        Event::PipelineStarted { pipeline_id, jobs, .. } => {
            let line = format!("Running pipeline #{pipeline_id}: {} job{}", jobs.len(), plural(jobs.len()));
            format!("{}\n", style.paint("\x1b[1m", &line))
        }
        Event::JobStarted { job, stage, attempt, .. } => {
            let again = if *attempt > 1 { format!(", attempt {attempt}") } else { String::new() };
            let line = format!("Running job {job} (stage {stage}{again})");
            format!("{} {}\n", style.prefix(job), style.paint("\x1b[1m", &line))
        }
        Event::Log { job, source, line } => {
            let line = sanitize(line, style.color);
            match source {
                LogSource::Job => format!("{} {line}\n", style.prefix(job)),
                LogSource::Glci => format!("{} {}\n", style.prefix(job), style.paint("\x1b[1m", &line)),
            }
        }
        Event::JobFinished(report) if report.attempts == 0 => {
            let reason = report.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            let line = format!("{}{reason}", capitalize(report.status.as_str()));
            format!("{} {}\n", style.prefix(&report.job), style.paint("\x1b[90m", &line))
        }
        Event::JobFinished(_) => String::new(),
        Event::PipelineFinished { status, duration: took, jobs } => summary(jobs, *status, *took, style),
        Event::Downstream { pipeline, event } => match event.as_ref() {
            Event::PipelineStarted { pipeline_id, jobs, .. } => {
                let n = jobs.len();
                let line = format!("Running child pipeline #{pipeline_id} of {pipeline}: {n} job{}", plural(n));
                format!("{} {}\n", style.prefix(pipeline), style.paint("\x1b[1m", &line))
            }
            // The root's summary lists a child's jobs; here one line.
            Event::PipelineFinished { status, duration: took, .. } => {
                let line = format!("Child pipeline {} after {}", status.as_str(), duration(*took));
                format!("{} {}\n", style.prefix(pipeline), style.paint("\x1b[1m", &line))
            }
            inner => text(inner, style),
        },
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The table at the end: job, stage, status, duration (and coverage when a job has one); then
/// the verdict.
pub fn summary(jobs: &[JobReport], status: PipelineStatus, took: Duration, style: &TextStyle) -> String {
    let with_coverage = jobs.iter().any(|r| r.coverage.is_some());
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|r| {
            let mut row = vec![
                r.job.clone(),
                r.stage.clone(),
                status_text(r),
                r.duration.map(duration).unwrap_or_else(|| "-".into()),
            ];
            if with_coverage {
                row.push(r.coverage.as_ref().map(|c| format!("{c}%")).unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut header: Vec<String> = ["JOB", "STAGE", "STATUS", "DURATION"].map(String::from).to_vec();
    if with_coverage {
        header.push("COVERAGE".into());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let pad = |text: &str, width: usize| format!("{text}{}", " ".repeat(width.saturating_sub(text.chars().count())));
    // Every column padded but the last.
    let line = |cells: &[String], status: Option<&JobReport>| {
        let last = cells.len() - 1;
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let text = if i == last { cell.clone() } else { pad(cell, widths[i]) };
                match status {
                    Some(report) if i == 2 => style.paint(status_color(report), &text),
                    _ => text,
                }
            })
            .collect();
        parts.join("  ")
    };
    let mut out = String::from("\n");
    out.push_str(&style.paint("\x1b[1m", &line(&header, None)));
    out.push('\n');
    for (row, report) in rows.iter().zip(jobs) {
        out.push_str(&line(row, Some(report)));
        out.push('\n');
    }
    let verdict = match status {
        PipelineStatus::Success => style.paint("\x1b[32;1m", &format!("Pipeline passed in {}", duration(took))),
        PipelineStatus::Canceled => style.paint("\x1b[33;1m", &format!("Pipeline canceled after {}", duration(took))),
        PipelineStatus::Failed => {
            let failed: Vec<&str> = jobs
                .iter()
                .filter(|r| r.status == JobStatus::Failed && !r.allowed_failure)
                .map(|r| r.job.as_str())
                .collect();
            style.paint("\x1b[31;1m", &format!("Pipeline failed in {}: {} failed", duration(took), failed.join(", ")))
        }
    };
    let kept: Vec<&JobReport> = jobs.iter().filter(|r| r.artifacts.is_some()).collect();
    if !kept.is_empty() {
        out.push('\n');
    }
    for report in kept {
        let dir = report.artifacts.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        out.push_str(&format!("Artifacts of {}: {dir}\n", report.job));
    }
    out.push('\n');
    out.push_str(&verdict);
    out.push('\n');
    out
}

fn report_json(r: &JobReport) -> serde_json::Value {
    json!({
        "job": r.job,
        "stage": r.stage,
        "status": r.status.as_str(),
        "allow_failure": r.allowed_failure,
        "exit_code": r.exit_code,
        "duration_ms": r.duration.map(|d| d.as_millis() as u64),
        "attempts": r.attempts,
        "reason": r.reason,
        "coverage": r.coverage.as_ref().and_then(|c| c.parse::<f64>().ok()),
        "delayed_ms": r.delayed.map(|d| d.as_millis() as u64),
        "pipeline": r.pipeline,
        "artifacts": r.artifacts.as_ref().map(|p| p.display().to_string()),
    })
}

/// One JSON object (no newline) for an event; see the README for the schema. Every event has
/// `pipeline`: `null` for the root pipeline, a child's trigger job name (issue 17).
pub fn json(event: &Event) -> String {
    let mut value = json_value(event);
    if value.get("pipeline").is_none() {
        value["pipeline"] = serde_json::Value::Null;
    }
    value.to_string()
}

fn json_value(event: &Event) -> serde_json::Value {
    match event {
        Event::PipelineStarted { run_id, pipeline_id, jobs } => json!({
            "event": "pipeline_started",
            "run_id": run_id,
            "pipeline_id": pipeline_id,
            "jobs": jobs.iter().map(|(j, s)| json!({"job": j, "stage": s})).collect::<Vec<_>>(),
        }),
        Event::JobStarted { job, stage, image, attempt } => json!({
            "event": "job_started", "job": job, "stage": stage, "image": image, "attempt": attempt,
        }),
        Event::Log { job, source, line } => json!({
            "event": "log",
            "job": job,
            "source": match source { LogSource::Job => "job", LogSource::Glci => "glci" },
            // Plain text for scripts: colours and control characters removed.
            "line": sanitize(line, false),
        }),
        Event::JobFinished(report) => {
            let mut value = report_json(report);
            value["event"] = json!("job_finished");
            value
        }
        Event::PipelineFinished { status, duration: took, jobs } => json!({
            "event": "pipeline_finished",
            "status": status.as_str(),
            "duration_ms": took.as_millis() as u64,
            "jobs": jobs.iter().map(report_json).collect::<Vec<_>>(),
        }),
        Event::Downstream { pipeline, event } => {
            let mut value = json_value(event);
            value["pipeline"] = json!(pipeline);
            value
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(job: &str, status: JobStatus, allowed: bool) -> JobReport {
        JobReport {
            job: job.into(),
            stage: "test".into(),
            status,
            allowed_failure: allowed,
            exit_code: Some(1),
            duration: Some(Duration::from_millis(1500)),
            attempts: 1,
            reason: None,
            coverage: None,
            delayed: None,
            pipeline: None,
            artifacts: None,
        }
    }

    #[test]
    fn sanitizes_outside_text() {
        assert_eq!(sanitize("a\x1b[31mred\x1b[0m\x07\r", false), "ared");
        assert_eq!(sanitize("a\x1b[31mred", true), "a\x1b[31mred\x1b[0m");
        assert_eq!(sanitize("x\x1b[2Jy\x1b]0;title\x07z", true), "xyz");
        assert_eq!(sanitize("tab\there", false), "tab\there");
    }

    #[test]
    fn log_lines_are_prefixed_and_plain_without_colour() {
        let style = TextStyle::new(false, vec!["build".into(), "test-long".into()]);
        let event = Event::Log { job: "build".into(), source: LogSource::Job, line: "hello".into() };
        assert_eq!(text(&event, &style), "build     | hello\n");
        let coloured = TextStyle::new(true, vec!["build".into()]);
        assert_eq!(text(&event, &coloured), "\x1b[36mbuild\x1b[0m | hello\n");
    }

    #[test]
    fn summary_table_and_verdict() {
        let style = TextStyle::new(false, vec![]);
        let jobs = vec![
            report("build", JobStatus::Success, false),
            report("lint", JobStatus::Failed, true),
            JobReport { duration: None, attempts: 0, ..report("deploy", JobStatus::Skipped, false) },
        ];
        let text = summary(&jobs, PipelineStatus::Success, Duration::from_secs(3), &style);
        let expected = "\nJOB     STAGE  STATUS            DURATION\n\
                        build   test   success           1.5s\n\
                        lint    test   failed (allowed)  1.5s\n\
                        deploy  test   skipped           -\n\
                        \nPipeline passed in 3.0s\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn json_events() {
        let line = json(&Event::Log { job: "b".into(), source: LogSource::Glci, line: "x\"y".into() });
        assert_eq!(line, r#"{"event":"log","job":"b","line":"x\"y","pipeline":null,"source":"glci"}"#);
        let done = json(&Event::JobFinished(report("t", JobStatus::Failed, true)));
        let v: serde_json::Value = serde_json::from_str(&done).expect("JSON");
        assert_eq!(v["event"], "job_finished");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["allow_failure"], true);
        assert_eq!(v["duration_ms"], 1500);
        assert_eq!(v["pipeline"], serde_json::Value::Null);
        // A child pipeline's events carry its name (issue 17).
        let child = report("child: t", JobStatus::Success, false);
        let child = JobReport { pipeline: Some("child".into()), ..child };
        let wrapped =
            Event::Downstream { pipeline: "child".into(), event: Box::new(Event::JobFinished(child.clone())) };
        let v: serde_json::Value = serde_json::from_str(&json(&wrapped)).expect("JSON");
        assert_eq!((v["job"].as_str(), v["pipeline"].as_str()), (Some("child: t"), Some("child")));
        let finished = Event::PipelineFinished {
            status: PipelineStatus::Success,
            duration: Duration::from_secs(1),
            jobs: vec![report("trigger", JobStatus::Success, false), child],
        };
        let v: serde_json::Value = serde_json::from_str(&json(&finished)).expect("JSON");
        assert_eq!(v["pipeline"], serde_json::Value::Null);
        assert_eq!(v["jobs"][0]["pipeline"], serde_json::Value::Null);
        assert_eq!(v["jobs"][1]["pipeline"], "child");
    }
}
