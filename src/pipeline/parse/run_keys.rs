//! Readers for the job keys of issue 15 that shape how a job runs rather than what it runs:
//! `environment:` (a name, or `{name, url, action, deployment_tier, on_stop, auto_stop_in,
//! kubernetes}`), `coverage:` (a `/regex/`) and `resource_group:` (a name). Values GitLab
//! rejects are errors naming file, line and key; what GitLab accepts but means nothing locally
//! (`on_stop`, `auto_stop_in`, `kubernetes`) is read and reported as a note. Pure.

use super::read::Field;
use super::yaml::Value;
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::Environment;

/// `environment: action` values (GitLab's CI/CD YAML reference).
const ACTIONS: [&str; 5] = ["start", "prepare", "stop", "verify", "access"];
/// `environment: deployment_tier` values.
const TIERS: [&str; 5] = ["production", "staging", "testing", "development", "other"];
/// `environment:` keys that name things only a GitLab server has.
const SERVER_ONLY: [&str; 3] = ["on_stop", "auto_stop_in", "kubernetes"];

/// `environment:`; the notes are about keys that have no local meaning.
pub fn environment(field: &Field) -> Result<(Environment, Vec<String>), PipelineError> {
    let mut notes = Vec::new();
    let env = match &field.node.value {
        Value::Str(_) => Environment { name: environment_name(field)?, ..Environment::default() },
        Value::Map(_) => {
            field.check_keys(&["action", "auto_stop_in", "deployment_tier", "kubernetes", "name", "on_stop", "url"])?;
            let name = field.get("name")?.ok_or_else(|| field.error("missing `name` (the environment's name)"))?;
            let mut env = Environment { name: environment_name(&name)?, ..Environment::default() };
            if let Some(url) = field.get("url")? {
                let value = url.string()?;
                if value.chars().count() > 255 {
                    return Err(url.error("the URL is longer than 255 characters"));
                }
                env.url = Some(value);
            }
            // The server-only keys still have GitLab's types (entry/environment.rb).
            if let Some(on_stop) = field.get("on_stop")? {
                on_stop.name("a job name")?;
            }
            if let Some(kubernetes) = field.get("kubernetes")? {
                kubernetes.map()?;
            }
            if let Some(stop) = field.get("auto_stop_in")? {
                let text = stop.string()?;
                if text != "never" {
                    super::duration::parse_human(&text).map_err(|e| stop.error(e))?;
                }
            }
            if let Some(action) = field.get("action")? {
                let value = action.string()?;
                if !ACTIONS.contains(&value.as_str()) {
                    return Err(action.error(format!("`{value}` is not an action ({})", ACTIONS.join(", "))));
                }
                env.action = Some(value);
            }
            if let Some(tier) = field.get("deployment_tier")? {
                let value = tier.string()?;
                if !TIERS.contains(&value.as_str()) {
                    return Err(tier.error(format!("`{value}` is not a deployment tier ({})", TIERS.join(", "))));
                }
                env.tier = Some(value);
            }
            for key in SERVER_ONLY {
                if field.get(key)?.is_some() {
                    notes.push(format!(
                        "{}:{}: {}.{key}: accepted, but glci keeps no environments (nothing is stopped or deployed)",
                        field.node.file.display(),
                        field.line,
                        field.key
                    ));
                }
            }
            env
        }
        _ => return Err(field.expected("an environment name or {name, url, action, deployment_tier}")),
    };
    Ok((env, notes))
}

/// An environment name as GitLab's `environment_name_regex` allows it: letters, digits, `-`,
/// `_`, `/`, `$`, `{`, `}`, `.` and spaces, not starting or ending with `/`.
fn environment_name(field: &Field) -> Result<String, PipelineError> {
    let name = field.name("an environment name")?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '$' | '{' | '}' | '.' | ' ');
    if !name.chars().all(allowed) || name.starts_with('/') || name.ends_with('/') {
        return Err(field.error(format!(
            "{name:?}: an environment name can contain only letters, digits, '-', '_', '/', '$', '{{', '}}', '.' \
             and spaces, and does not start or end with '/'"
        )));
    }
    Ok(name)
}

/// `coverage: '/regex/'`: the pattern between the slashes, checked to compile.
pub fn coverage(field: &Field) -> Result<String, PipelineError> {
    let text = field.string()?;
    let pattern = text
        .strip_prefix('/')
        .and_then(|rest| rest.strip_suffix('/'))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| field.error(format!("`{text}` is not a regular expression between slashes (`/.../`)")))?;
    regex::Regex::new(pattern).map_err(|e| field.error(format!("`{text}` is not a valid regular expression: {e}")))?;
    Ok(pattern.to_string())
}

/// `start_in:` of a delayed job: a human duration (`30 minutes`, `1 day`), a week at most.
pub fn start_in(field: &Field) -> Result<std::time::Duration, PipelineError> {
    let text = match &field.node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err(field.expected("a duration like \"30 minutes\"")),
    };
    match super::duration::parse_human(&text) {
        Ok(d) if d.is_zero() => Err(field.error("`start_in` must be more than zero")),
        Ok(d) if d > std::time::Duration::from_secs(7 * 24 * 3600) => {
            Err(field.error(format!("`start_in: {text}`: GitLab allows a week or less")))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(field.error(e)),
    }
}

/// `resource_group: NAME`.
pub fn resource_group(field: &Field) -> Result<String, PipelineError> {
    field.name("a resource group name")
}

/// GitLab's environment slug (`Gitlab::Slug::Environment`): lowercase letters, digits and
/// `-`, starting with a letter (else `env-`), no repeated `-`, at most 24 characters; a name
/// that had to change or is too long gets 17 characters, `-` and a 6-character suffix from
/// the SHA-256 of the name.
pub fn environment_slug(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug = format!("env-{slug}");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&slug_suffix(name));
        short
    } else {
        squeezed.trim_end_matches('-').to_string()
    }
}

/// The last 6 base-36 digits of the SHA-256 of `name` read as one big number (Ruby's
/// `Digest::SHA2.hexdigest(name).to_i(16).to_s(36).last(6)`).
fn slug_suffix(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut number: Vec<u8> = Sha256::digest(name.as_bytes()).to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(char::from_digit(remainder, 36).unwrap_or('0'));
    }
    if digits.is_empty() {
        digits.push('0');
    }
    digits.iter().take(6).rev().collect()
}

/// GitLab's guess of a tier from an environment name (`Environment#guess_tier`).
pub fn guess_tier(name: &str) -> &'static str {
    let lower = name.to_lowercase();
    let any = |patterns: &[&str]| patterns.iter().any(|p| lower.contains(p));
    if any(&["dev", "review", "trunk"]) {
        "development"
    } else if any(&["test", "tst", "int", "acpt", "accept", "qa", "qc", "control", "quality"]) {
        "testing"
    } else if any(&["stg", "stag", "modl", "model", "pre", "demo", "non"]) {
        "staging"
    } else if any(&["prd", "prod", "live"]) {
        "production"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_gitlab() {
        // Unchanged and short: kept.
        assert_eq!(environment_slug("production"), "production");
        assert_eq!(environment_slug("staging-1"), "staging-1");
        // Changed: 17 characters, `-`, suffix.
        let review = environment_slug("review/feature/x");
        assert_eq!(review, "review-feature-x-dfs9my");
        assert_eq!(review.len(), 17 + 6);
        assert_eq!(environment_slug("Production").len(), "production-".len() + 6);
        assert!(environment_slug("1env").starts_with("env-1env-"));
        assert!(environment_slug("a-very-long-environment-name-indeed").len() <= 24);
        // The suffix is base 36 of the name's SHA-256.
        assert!(slug_suffix("review/feature/x").chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(slug_suffix("x"), slug_suffix("x"));
        assert_ne!(slug_suffix("x"), slug_suffix("y"));
    }

    #[test]
    fn tiers_are_guessed_from_names() {
        assert_eq!(guess_tier("production"), "production");
        assert_eq!(guess_tier("review/x"), "development");
        assert_eq!(guess_tier("staging"), "staging");
        assert_eq!(guess_tier("qa"), "testing");
        assert_eq!(guess_tier("sandbox"), "other");
    }
}
