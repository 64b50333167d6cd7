//! Job and `default:` keys GitLab accepts that mean nothing on a local run: `tags`,
//! `interruptible`, `hooks`, `id_tokens`, `identity`, `release`, `pages`, `publish`,
//! `manual_confirmation`, `dast_configuration`, `kubernetes:` of an image or service, and the
//! `artifacts:` keys `expose_as`, `public`, `access` and `reports` (but `dotenv`), and
//! `workflow: auto_cancel`. Each
//! value is checked as GitLab's config entries check it (lib/gitlab/ci/config/entry/*.rb: a bad
//! one is an error naming file, line and key, exit 2), then said in ONE note per key for the
//! whole pipeline ([`summarize`]), never silently dropped. Pure; `job.rs` and `mod.rs` call it.

use super::read::Field;
use super::yaml::Value;
use crate::pipeline::error::PipelineError;

/// A key that was accepted and ignored, where it was written and why it means nothing here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedNote {
    pub key: &'static str,
    /// `file:line: job.key`.
    pub at: String,
    pub why: &'static str,
}

/// The keys this file owns, with why each means nothing locally.
const KEYS: [(&str, &str); 10] = [
    ("dast_configuration", "glci runs no DAST scans (site and scanner profiles live on GitLab)"),
    ("hooks", "glci fetches no sources (it copies the project in), so no `pre_get_sources_script` runs"),
    ("id_tokens", "glci issues no OIDC ID tokens: those variables are not set"),
    ("identity", "glci federates no cloud identity: no credentials are set"),
    ("interruptible", "glci never cancels a running job for a newer pipeline"),
    ("manual_confirmation", "glci asks no confirmation: a manual job runs when you name it"),
    ("pages", "glci deploys no Pages site (the job and its artifacts run as usual)"),
    ("publish", "glci deploys no Pages site (the job and its artifacts run as usual)"),
    ("release", "glci creates no releases"),
    ("tags", "runner tags choose a runner; glci runs every job on this machine"),
];

/// `artifacts:` keys that mean nothing locally, with why.
const ARTIFACT_KEYS: [(&str, &str); 3] = [
    ("access", "glci keeps artifacts on this machine: who may download them means nothing here"),
    ("expose_as", "glci has no merge request page to show artifacts on"),
    ("public", "glci keeps artifacts on this machine: who may download them means nothing here"),
];

/// GitLab's `artifacts: reports` types (entry/reports.rb); glci reads `dotenv` only.
const REPORTS: [&str; 27] = [
    "accessibility",
    "annotations",
    "api_fuzzing",
    "browser_performance",
    "cluster_applications",
    "cluster_image_scanning",
    "cobertura",
    "codequality",
    "container_scanning",
    "coverage_fuzzing",
    "coverage_report",
    "cyclonedx",
    "dast",
    "dependency_scanning",
    "dotenv",
    "junit",
    "license_scanning",
    "load_performance",
    "lsif",
    "metrics",
    "performance",
    "repository_xray",
    "requirements",
    "requirements_v2",
    "sast",
    "secret_detection",
    "terraform",
];

const REPORTS_WHY: &str = "glci reads only `reports: dotenv`; other reports are not shown (list their files in \
                           `paths` to keep them)";

/// What `kubernetes:` of an image or service is for.
const KUBERNETES_WHY: &str = "it is for GitLab's Kubernetes executor; glci runs jobs in Docker";

/// Checks the value of `key` (one of [`KEYS`]; others give no note) as GitLab does; the note saying it is ignored.
pub fn check(key: &str, field: &Field) -> Result<Option<AcceptedNote>, PipelineError> {
    let Some(&(key, why)) = KEYS.iter().find(|(k, _)| *k == key) else { return Ok(None) };
    match key {
        "tags" => {
            field.strings()?;
        }
        "interruptible" => {
            field.boolean()?;
        }
        "hooks" => hooks(field)?,
        "id_tokens" => id_tokens(field)?,
        "identity" => {
            let value = field.string()?;
            if value != "google_cloud" {
                return Err(field.error(format!("unknown identity {value:?} (GitLab has google_cloud)")));
            }
        }
        "release" => release(field)?,
        "pages" => pages(field)?,
        "publish" | "manual_confirmation" => {
            field.string()?;
        }
        "dast_configuration" => {
            field.check_keys(&["scanner_profile", "site_profile"])?;
            for key in ["scanner_profile", "site_profile"] {
                if let Some(f) = field.get(key)? {
                    f.string()?;
                }
            }
        }
        _ => {}
    }
    Ok(Some(note(key, field, why)))
}

/// `kubernetes:` in an `image:` map or in the maps of a `services:` list (the values were
/// checked when the image and services were read).
pub fn kubernetes(field: &Field) -> Result<Vec<AcceptedNote>, PipelineError> {
    let maps = match &field.node.value {
        Value::Map(_) => vec![field.clone()],
        Value::Seq(_) => field.items("a list of services")?,
        _ => Vec::new(),
    };
    let mut notes = Vec::new();
    for map in maps.iter().filter(|m| matches!(m.node.value, Value::Map(_))) {
        if let Some(f) = map.get("kubernetes")? {
            notes.push(note("kubernetes", &f, KUBERNETES_WHY));
        }
    }
    Ok(notes)
}

/// The `artifacts:` keys GitLab checks that glci does not use (entry/artifacts.rb): `expose_as`
/// (a name of letters, digits, `-`, `_`, spaces, at most 100, with `paths` and no `*` in them),
/// `public` (true/false), `access` (`all`, `developer`, `maintainer`, `none`; not with
/// `public`), `reports` (GitLab's types: paths, or `coverage_report: {coverage_format, path}`).
pub fn artifacts(field: &Field) -> Result<Vec<AcceptedNote>, PipelineError> {
    let Value::Map(_) = field.node.value else { return Ok(Vec::new()) };
    let mut notes = Vec::new();
    if let Some(expose) = field.get("expose_as")? {
        let name = expose.string()?;
        let valid = name.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '));
        if !valid || name.chars().count() > 100 {
            return Err(expose.error("can contain only letters, digits, '-', '_' and spaces (at most 100)"));
        }
        let paths = field.get("paths")?.ok_or_else(|| expose.error("`expose_as` needs `paths`"))?;
        for path in paths.items("a list of strings")? {
            if path.string()?.contains('*') {
                return Err(path.error("can't contain '*' when used with 'expose_as'"));
            }
        }
    }
    if let Some(public) = field.get("public")? {
        public.boolean()?;
        if field.get("access")?.is_some() {
            return Err(public.error("`public` and `access` are mutually exclusive"));
        }
    }
    if let Some(access) = field.get("access")? {
        let value = access.string()?;
        if !["all", "developer", "maintainer", "none"].contains(&value.as_str()) {
            return Err(access.error(format!("{value:?} should be one of: all, developer, maintainer, none")));
        }
    }
    for (key, why) in ARTIFACT_KEYS {
        if let Some(f) = field.get(key)? {
            notes.push(note(key, &f, why));
        }
    }
    if let Some(reports) = field.get("reports")? {
        let mut others = None;
        for entry in reports.map()?.iter() {
            let report = Field::entry(&reports.key, entry);
            if !REPORTS.contains(&entry.key.as_str()) {
                return Err(report.error(format!("unknown report type (GitLab's: {})", REPORTS.join(", "))));
            }
            if entry.key == "coverage_report" {
                report.check_keys(&["coverage_format", "path"])?;
                let format = report.get("coverage_format")?.ok_or_else(|| report.error("missing `coverage_format`"))?;
                if !["cobertura", "jacoco"].contains(&format.string()?.as_str()) {
                    return Err(format.error("should be cobertura or jacoco"));
                }
                report.get("path")?.ok_or_else(|| report.error("missing `path`"))?.string()?;
            } else if !matches!(report.node.value, Value::Str(_)) {
                report.strings()?;
            }
            if entry.key != "dotenv" && others.is_none() {
                others = Some(report);
            }
        }
        if let Some(first) = others {
            notes.push(note("reports", &first, REPORTS_WHY));
        }
    }
    Ok(notes)
}

/// `workflow: auto_cancel` and a workflow rule's `auto_cancel` (values checked by `read`):
/// a local run is never canceled by a newer pipeline.
pub fn of_workflow(field: &Field) -> Result<Vec<AcceptedNote>, PipelineError> {
    const WHY: &str = "glci cancels no pipeline when another starts or a job fails";
    let Value::Map(_) = field.node.value else { return Ok(Vec::new()) };
    let mut notes = Vec::new();
    if let Some(f) = field.get("auto_cancel")? {
        notes.push(note("auto_cancel", &f, WHY));
    }
    if let Some(rules) = field.get("rules")? {
        for rule in rules.items("a list of rules")? {
            if let Some(f) = rule.get("auto_cancel").ok().flatten() {
                notes.push(note("auto_cancel", &f, WHY));
            }
        }
    }
    Ok(notes)
}

/// The notes of a `default:` map (its keys were checked against the `default:` list already).
pub fn of_default(field: &Field) -> Result<Vec<AcceptedNote>, PipelineError> {
    let mut notes = Vec::new();
    for entry in field.map()?.iter() {
        let f = Field::entry(&field.key, entry);
        match entry.key.as_str() {
            "image" | "services" => notes.extend(kubernetes(&f)?),
            "artifacts" => notes.extend(artifacts(&f)?),
            key => notes.extend(check(key, &f)?),
        }
    }
    Ok(notes)
}

fn note(key: &'static str, field: &Field, why: &'static str) -> AcceptedNote {
    AcceptedNote { key, at: format!("{}:{}: {}", field.node.file.display(), field.line, field.key), why }
}

/// One note per key: where it was first written, and in how many other places.
pub fn summarize<'a>(notes: impl IntoIterator<Item = &'a AcceptedNote>) -> Vec<String> {
    let mut order: Vec<(&'static str, &'a AcceptedNote, usize)> = Vec::new();
    for n in notes {
        match order.iter_mut().find(|(key, _, _)| *key == n.key) {
            Some((_, _, more)) => *more += 1,
            None => order.push((n.key, n, 0)),
        }
    }
    order
        .into_iter()
        .map(|(_, first, more)| {
            let also = match more {
                0 => String::new(),
                1 => " (and in 1 other place)".to_string(),
                n => format!(" (and in {n} other places)"),
            };
            format!("{}: accepted, but {}{also}", first.at, first.why)
        })
        .collect()
}

/// `hooks: {pre_get_sources_script: commands}` (entry/hooks.rb).
fn hooks(field: &Field) -> Result<(), PipelineError> {
    field.check_keys(&["pre_get_sources_script"])?;
    if let Some(script) = field.get("pre_get_sources_script")? {
        if !matches!(script.node.value, Value::Str(_)) {
            script.strings()?;
        }
    }
    Ok(())
}

/// `id_tokens: {NAME: {aud: string or list of strings}}` (entry/id_token.rb).
fn id_tokens(field: &Field) -> Result<(), PipelineError> {
    for entry in field.map()?.iter() {
        let token = Field::entry(&field.key, entry);
        token.check_keys(&["aud"])?;
        let aud = token.get("aud")?.ok_or_else(|| token.error("missing `aud` (the token's audience)"))?;
        if !matches!(aud.node.value, Value::Str(_)) {
            aud.strings()?;
        }
    }
    Ok(())
}

/// `release:` (entry/release.rb): `tag_name` and `description` required; strings, `milestones`
/// a list of strings, `assets: {links: [{name, url, ...}]}`.
fn release(field: &Field) -> Result<(), PipelineError> {
    field.check_keys(&[
        "assets",
        "description",
        "milestones",
        "name",
        "ref",
        "released_at",
        "tag_message",
        "tag_name",
    ])?;
    for key in ["tag_name", "description"] {
        if field.get(key)?.is_none() {
            return Err(field.error(format!("missing `{key}` (a release needs tag_name and description)")));
        }
    }
    for key in ["description", "name", "ref", "released_at", "tag_message", "tag_name"] {
        if let Some(f) = field.get(key)? {
            f.string()?;
        }
    }
    if let Some(milestones) = field.get("milestones")? {
        milestones.strings()?;
    }
    if let Some(assets) = field.get("assets")? {
        assets.check_keys(&["links"])?;
        let links = assets.get("links")?.ok_or_else(|| assets.error("missing `links`"))?;
        for link in links.items("a list of links")? {
            link.check_keys(&["direct_asset_path", "filepath", "link_type", "name", "url"])?;
            for key in ["name", "url"] {
                link.get(key)?.ok_or_else(|| link.error(format!("missing `{key}`")))?.string()?;
            }
        }
    }
    Ok(())
}

/// `pages:` true/false or `{publish, path_prefix, expire_in}` (entry/pages.rb).
fn pages(field: &Field) -> Result<(), PipelineError> {
    match &field.node.value {
        Value::Bool(_) => Ok(()),
        Value::Map(_) => {
            field.check_keys(&["expire_in", "path_prefix", "publish"])?;
            for key in ["expire_in", "path_prefix", "publish"] {
                if let Some(f) = field.get(key)? {
                    f.string()?;
                }
            }
            Ok(())
        }
        _ => Err(field.expected("true, false or {publish, path_prefix, expire_in}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::rc::Rc;

    use crate::pipeline::parse::yaml::{self, Map};

    fn map(text: &str) -> Map {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        match yaml::load(text, &file).expect("yaml").value {
            Value::Map(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn checked(text: &str) -> Result<Option<AcceptedNote>, PipelineError> {
        let m = map(text);
        let entry = m.iter().next().expect("one key");
        check(&entry.key, &Field::entry("j", entry))
    }

    #[test]
    fn good_values_become_one_note_per_key() {
        let good = [
            "tags: [docker, linux]",
            "interruptible: true",
            "hooks: {pre_get_sources_script: [echo hi]}",
            "id_tokens: {ID: {aud: https://x}, OTHER: {aud: [a, b]}}",
            "identity: google_cloud",
            "release: {tag_name: v1, description: d, milestones: [m], assets: {links: [{name: n, url: u}]}}",
            "pages: {publish: public}",
            "publish: public",
            "manual_confirmation: sure?",
            "dast_configuration: {site_profile: s}",
        ];
        for text in good {
            let note = checked(text).unwrap_or_else(|e| panic!("{text}: {e}")).expect("a note");
            assert!(note.at.starts_with("ci.yml:1: j."), "{note:?}");
        }
        let notes = [checked("tags: [a]").unwrap().unwrap(), checked("tags: [b]").unwrap().unwrap()];
        let interruptible = checked("interruptible: false").unwrap().unwrap();
        let said = summarize(notes.iter().chain([&interruptible]));
        assert_eq!(
            said,
            [
                "ci.yml:1: j.tags: accepted, but runner tags choose a runner; glci runs every job on this machine \
                 (and in 1 other place)",
                "ci.yml:1: j.interruptible: accepted, but glci never cancels a running job for a newer pipeline",
            ]
        );
    }

    #[test]
    fn values_gitlab_rejects_name_their_key() {
        let bad = [
            ("tags: docker", "j.tags", "expected a list of strings"),
            ("tags: [1]", "j.tags[0]", "expected a string"),
            ("interruptible: maybe", "j.interruptible", "expected true or false"),
            ("hooks: {post: [x]}", "j.hooks.post", "unknown key"),
            ("hooks: {pre_get_sources_script: 3}", "j.hooks.pre_get_sources_script", "list of strings"),
            ("id_tokens: {ID: {audience: x}}", "j.id_tokens.ID.audience", "unknown key"),
            ("id_tokens: {ID: {}}", "j.id_tokens.ID", "missing `aud`"),
            ("id_tokens: [x]", "j.id_tokens", "expected a map"),
            ("identity: aws", "j.identity", "unknown identity"),
            ("release: {name: x}", "j.release", "missing `tag_name`"),
            ("release: {tag_name: v1, description: d, milestones: m}", "j.release.milestones", "list of strings"),
            (
                "release: {tag_name: v1, description: d, assets: {links: [{name: n}]}}",
                "j.release.assets.links[0]",
                "url",
            ),
            ("pages: 3", "j.pages", "expected true, false or"),
            ("pages: {path: x}", "j.pages.path", "unknown key"),
            ("publish: [x]", "j.publish", "expected a string"),
            ("manual_confirmation: 3", "j.manual_confirmation", "expected a string"),
            ("dast_configuration: {site: s}", "j.dast_configuration.site", "unknown key"),
        ];
        for (text, key, want) in bad {
            let e = checked(text).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    fn artifacts_of(text: &str) -> Result<Vec<AcceptedNote>, PipelineError> {
        let m = map(text);
        let entry = m.iter().next().expect("one key");
        artifacts(&Field::entry("j", entry))
    }

    #[test]
    fn artifact_keys_are_checked_and_noted() {
        let notes = artifacts_of(
            "artifacts: {paths: [out/report.html], expose_as: 'Test report', access: developer, \
             reports: {dotenv: a.env, junit: [r.xml], coverage_report: {coverage_format: cobertura, path: c.xml}}}",
        )
        .unwrap();
        let keys: Vec<&str> = notes.iter().map(|n| n.key).collect();
        assert_eq!(keys, ["access", "expose_as", "reports"]);
        assert_eq!(notes[2].at, "ci.yml:1: j.artifacts.reports.junit");
        assert!(artifacts_of("artifacts: {reports: {dotenv: a.env}}").unwrap().is_empty());
        let bad = [
            ("artifacts: {expose_as: 'a/b', paths: [x]}", "j.artifacts.expose_as", "only letters"),
            ("artifacts: {expose_as: report}", "j.artifacts.expose_as", "needs `paths`"),
            ("artifacts: {expose_as: report, paths: ['*.html']}", "j.artifacts.paths[0]", "can't contain '*'"),
            ("artifacts: {public: maybe}", "j.artifacts.public", "expected true or false"),
            ("artifacts: {public: true, access: all}", "j.artifacts.public", "mutually exclusive"),
            ("artifacts: {access: everyone}", "j.artifacts.access", "should be one of"),
            ("artifacts: {reports: {junit: 3}}", "j.artifacts.reports.junit", "list of strings"),
            ("artifacts: {reports: {bogus: a}}", "j.artifacts.reports.bogus", "unknown report type"),
            (
                "artifacts: {reports: {coverage_report: {path: c.xml}}}",
                "j.artifacts.reports.coverage_report",
                "coverage_format",
            ),
            (
                "artifacts: {reports: {coverage_report: {coverage_format: lcov, path: c}}}",
                "j.artifacts.reports.coverage_report.coverage_format",
                "cobertura or jacoco",
            ),
            ("artifacts: {reports: [junit]}", "j.artifacts.reports", "expected a map"),
        ];
        for (text, key, want) in bad {
            let e = artifacts_of(text).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn workflow_auto_cancel_is_noted_once() {
        let m = map("workflow:\n  auto_cancel: {on_new_commit: none}\n  rules:\n    - if: $X\n      auto_cancel: {on_job_failure: all}\n    - when: always\n");
        let entry = m.iter().next().expect("workflow");
        let notes = of_workflow(&Field::entry("", entry)).unwrap();
        let said = summarize(&notes);
        assert_eq!(
            said,
            ["ci.yml:2: workflow.auto_cancel: accepted, but glci cancels no pipeline when another starts or a job fails \
              (and in 1 other place)"]
        );
    }

    #[test]
    fn kubernetes_options_of_images_and_services_are_noted() {
        let m = map("image: {name: x, kubernetes: {user: '1'}}\nservices: [a, {name: b, kubernetes: {user: 2}}]\n");
        let mut notes = Vec::new();
        for entry in m.iter() {
            notes.extend(kubernetes(&Field::entry("j", entry)).unwrap());
        }
        let at: Vec<&str> = notes.iter().map(|n| n.at.as_str()).collect();
        assert_eq!(at, ["ci.yml:1: j.image.kubernetes", "ci.yml:2: j.services[1].kubernetes"]);
        assert_eq!(checked("script: [x]").unwrap(), None);
    }
}
