//! The checks that need the whole pipeline, after every job is read: each job's stage is in
//! `stages`, `needs` and `dependencies` name jobs that exist in an earlier (or, for `needs`,
//! the same) stage, `needs` form no cycle; a need or dependency naming a `parallel:` job by its
//! written name becomes one per instance. Errors name file, line and key. Pure; called by
//! `mod.rs` once the jobs are read. (`plan` checks again after `rules: needs` replaced them.)

use std::collections::HashMap;

use super::job::ParsedJob;
use super::read;
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{Job, Need};

/// The checks that need every job: stages, `needs`, `dependencies`, `needs` cycles. Optional
/// needs of jobs that do not exist are dropped, as GitLab ignores them. A need or dependency
/// naming a `parallel:` job becomes one for each of its instances.
pub fn validate(mut parsed: Vec<ParsedJob>, stages: &[String]) -> Result<Vec<Job>, PipelineError> {
    expand_parallel_references(&mut parsed);
    let stage_index = |stage: &str| stages.iter().position(|s| s == stage);
    let shown_stages = stages.join(", ");
    for p in &parsed {
        let job = &p.job;
        if stage_index(&job.stage).is_none() {
            let (line, key, message) = match &p.stage_at {
                Some((line, key)) => {
                    (*line, key.as_str(), format!("stage `{}` is not in stages ({shown_stages})", job.stage))
                }
                None => (
                    job.location.line,
                    job.name.as_str(),
                    format!("no `stage:`, and the default stage `test` is not in stages ({shown_stages})"),
                ),
            };
            return Err(PipelineError::new(&job.location.file, line, key, message));
        }
    }
    let stage_of: HashMap<String, usize> =
        parsed.iter().filter_map(|p| Some((p.job.name.clone(), stage_index(&p.job.stage)?))).collect();
    let mut instances: Vec<(String, Vec<String>)> = Vec::new();
    for p in &parsed {
        if let Some(instance) = &p.job.instance {
            match instances.iter_mut().find(|(base, _)| *base == instance.base) {
                Some((_, names)) => names.push(p.job.name.clone()),
                None => instances.push((instance.base.clone(), vec![p.job.name.clone()])),
            }
        }
    }
    let unknown_job = |name: &str| unknown_job(name, &instances);
    for p in &mut parsed {
        let job = &mut p.job;
        let own_stage = stage_of.get(&job.name).copied().unwrap_or(0);
        let at = |(line, key): &(usize, String), message: String| {
            PipelineError::new(&job.location.file, *line, key.clone(), message)
        };
        if let Some(needs) = &mut job.needs {
            let mut kept = Vec::new();
            let mut kept_at = Vec::new();
            for (need, need_at) in needs.drain(..).zip(p.needs_at.drain(..)) {
                match stage_of.get(&need.job) {
                    None if need.optional => {}
                    None => return Err(at(&need_at, unknown_job(&need.job))),
                    Some(&stage) if stage > own_stage => {
                        let message = format!(
                            "`{}` is in a later stage ({}) than this job ({})",
                            need.job, stages[stage], job.stage
                        );
                        return Err(at(&need_at, message));
                    }
                    Some(_) => {
                        kept.push(need);
                        kept_at.push(need_at);
                    }
                }
            }
            *needs = kept;
            p.needs_at = kept_at;
        }
        for (dep, dep_at) in job.dependencies.iter().flatten().zip(&p.dependencies_at) {
            let Some(&stage) = stage_of.get(dep) else {
                return Err(at(dep_at, unknown_job(dep)));
            };
            match &job.needs {
                Some(needs) if !needs.iter().any(|n| n.job == *dep) => {
                    return Err(at(dep_at, format!("`{dep}` must also be in `needs`")));
                }
                None if stage >= own_stage => {
                    return Err(at(
                        dep_at,
                        format!("`{dep}` is not in an earlier stage than this job ({})", job.stage),
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(cycle) = needs_cycle(&parsed) {
        let names: Vec<&str> = cycle.iter().map(|&i| parsed[i].job.name.as_str()).collect();
        let p = &parsed[cycle[0]];
        let next = names.get(1).copied().unwrap_or_default();
        let need = p.job.needs.iter().flatten().position(|n| n.job == next);
        let (line, key) = match need.and_then(|i| p.needs_at.get(i)) {
            Some((line, key)) => (*line, key.clone()),
            None => (p.job.location.line, format!("{}.needs", p.job.name)),
        };
        let message = format!("needs cycle: {}", names.join(" → "));
        return Err(PipelineError::new(&p.job.location.file, line, key, message));
    }
    Ok(parsed.into_iter().map(|p| p.job).collect())
}

/// `needs`/`dependencies` naming a `parallel:` job by its written name → all its instances
/// (each keeping the line and key of the entry that named it); a `needs: parallel: matrix`
/// combination that names no instance, such as `{ARCH: x64}` of a matrix over `OS` and `ARCH`,
/// → every instance with those values.
fn expand_parallel_references(parsed: &mut [ParsedJob]) {
    let mut instances: HashMap<String, Vec<(String, read::Combo)>> = HashMap::new();
    for p in parsed.iter() {
        if let Some(instance) = &p.job.instance {
            instances.entry(instance.base.clone()).or_default().push((p.job.name.clone(), p.matrix.clone()));
        }
    }
    if instances.is_empty() {
        return;
    }
    let names: std::collections::HashSet<String> = parsed.iter().map(|p| p.job.name.clone()).collect();
    let of = |name: &str| instances.get(name).filter(|_| !names.contains(name));
    let selected = |need: &Need, matrix: Option<&(String, read::Combo)>| -> Option<Vec<String>> {
        if names.contains(&need.job) {
            return None;
        }
        if let Some((base, combo)) = matrix {
            let picked: Vec<String> = instances
                .get(base)?
                .iter()
                .filter(|(_, values)| combo.iter().all(|pair| values.contains(pair)))
                .map(|(name, _)| name.clone())
                .collect();
            return (!picked.is_empty()).then_some(picked);
        }
        Some(of(&need.job)?.iter().map(|(name, _)| name.clone()).collect())
    };
    for p in parsed.iter_mut() {
        let matrices = std::mem::take(&mut p.needs_matrix);
        if let Some(needs) = &mut p.job.needs {
            let mut kept = Vec::new();
            let mut kept_at = Vec::new();
            for (i, (need, at)) in needs.drain(..).zip(p.needs_at.drain(..)).enumerate() {
                match selected(&need, matrices.get(i).and_then(Option::as_ref)) {
                    Some(list) => {
                        for name in list {
                            if !kept.iter().any(|n: &Need| n.job == name) {
                                kept.push(Need { job: name, ..need.clone() });
                                kept_at.push(at.clone());
                            }
                        }
                    }
                    None => {
                        kept.push(need);
                        kept_at.push(at);
                    }
                }
            }
            *needs = kept;
            p.needs_at = kept_at;
        }
        if let Some(deps) = &mut p.job.dependencies {
            let mut kept = Vec::new();
            let mut kept_at = Vec::new();
            for (dep, at) in deps.drain(..).zip(p.dependencies_at.drain(..)) {
                match of(&dep) {
                    Some(list) => {
                        kept.extend(list.iter().map(|(name, _)| name.clone()));
                        kept_at.extend(list.iter().map(|_| at.clone()));
                    }
                    None => {
                        kept.push(dep);
                        kept_at.push(at);
                    }
                }
            }
            *deps = kept;
            p.dependencies_at = kept_at;
        }
    }
}

fn unknown_job(name: &str, instances: &[(String, Vec<String>)]) -> String {
    let instance_of = instances.iter().find(|(base, _)| {
        name.strip_prefix(base.as_str()).is_some_and(|rest| rest.starts_with(": [") || rest.starts_with(' '))
    });
    if let Some((base, names)) = instance_of {
        let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
        let more = if names.len() > shown.len() { ", ..." } else { "" };
        format!("`{name}` is not an instance of the parallel job `{base}` (instances: {}{more})", shown.join(", "))
    } else if name.starts_with('.') {
        format!("`{name}` is a hidden template, not a job")
    } else {
        format!("`{name}` is not a job in this pipeline")
    }
}

/// A cycle in `needs` as job indexes, the first repeated last; depth-first in file order.
fn needs_cycle(parsed: &[ParsedJob]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = parsed.iter().enumerate().map(|(i, p)| (p.job.name.as_str(), i)).collect();
    let edges: Vec<Vec<usize>> = parsed
        .iter()
        .map(|p| p.job.needs.iter().flatten().filter_map(|n| index.get(n.job.as_str()).copied()).collect())
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; parsed.len()];
    for start in 0..parsed.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative, so a long chain of needs cannot overflow the stack: the path, and for
        // each job on it the next of its needs to follow.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Open;
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let Some(&to) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match marks[to] {
                Mark::New => {
                    marks[to] = Mark::Open;
                    path.push((to, 0));
                }
                Mark::Open => {
                    let from = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                    cycle.push(to);
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}
