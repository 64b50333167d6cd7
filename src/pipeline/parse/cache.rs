//! `cache:` (of a job, of `default:`, or the deprecated top level) → [`Cache`] list, with
//! GitLab's validation (`lib/gitlab/ci/config/entry/cache.rb`, `key.rb`, `caches.rb`): one map
//! or a list of up to four, keys `key` (a string or `{files, prefix}`), `paths`, `untracked`,
//! `policy`, `when`, `fallback_keys`, `unprotect`. Pure; errors name file, line and key.

use super::read::Field;
use super::yaml::Value;
use crate::pipeline::cache::{check_key, parse_policy};
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{ArtifactsWhen, Cache, CacheKey};

/// GitLab: "no more than 4 caches can be created".
pub const MAX_CACHES: usize = 4;
/// `key: files:` takes one or two files.
const MAX_KEY_FILES: usize = 2;
/// `fallback_keys:` holds at most five keys.
const MAX_FALLBACK_KEYS: usize = 5;

const CACHE_KEYS: [&str; 7] = ["fallback_keys", "key", "paths", "policy", "unprotect", "untracked", "when"];

/// `cache:`: a map or a list of maps (an empty list: no cache).
pub fn caches(field: &Field) -> Result<Vec<Cache>, PipelineError> {
    match &field.node.value {
        Value::Map(_) => Ok(vec![cache(field)?]),
        Value::Seq(_) => {
            let items = field.items("a list of caches")?;
            if items.len() > MAX_CACHES {
                return Err(field.error(format!("no more than {MAX_CACHES} caches can be created")));
            }
            items.iter().map(cache).collect()
        }
        Value::Null => Ok(Vec::new()),
        _ => Err(field.expected("a cache map or a list of them")),
    }
}

fn cache(field: &Field) -> Result<Cache, PipelineError> {
    field.check_keys(&CACHE_KEYS)?;
    let key = match field.get("key")? {
        None => CacheKey::Name("default".into()),
        Some(f) => key(&f)?,
    };
    let paths = field.get("paths")?.map(|f| f.strings()).transpose()?.unwrap_or_default();
    let untracked = field.get("untracked")?.map(|f| f.boolean()).transpose()?.unwrap_or(false);
    let unprotect = field.get("unprotect")?.map(|f| f.boolean()).transpose()?.unwrap_or(false);
    let policy = match field.get("policy")? {
        None => "pull-push".to_string(),
        Some(f) => {
            let policy = f.string()?;
            if !policy.contains('$') && parse_policy(&policy).is_none() {
                return Err(f.error(format!("unknown policy {policy:?} (use pull-push, pull, push, or a variable)")));
            }
            policy
        }
    };
    let when = match field.get("when")? {
        None => ArtifactsWhen::OnSuccess,
        Some(f) => match f.string()?.as_str() {
            "on_success" => ArtifactsWhen::OnSuccess,
            "on_failure" => ArtifactsWhen::OnFailure,
            "always" => ArtifactsWhen::Always,
            other => return Err(f.error(format!("unknown value {other:?} (use on_success, on_failure or always)"))),
        },
    };
    let fallback_keys = match field.get("fallback_keys")? {
        None => Vec::new(),
        Some(f) => {
            let items = f.items("a list of cache keys")?;
            if items.len() > MAX_FALLBACK_KEYS {
                return Err(f.error(format!("too many fallback keys (at most {MAX_FALLBACK_KEYS})")));
            }
            items.iter().map(key_name).collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(Cache { key, paths, untracked, policy, when, fallback_keys, unprotect, location: field.location() })
}

/// `key:` a string (a number is taken as its text, as GitLab does) or `{files, prefix}`.
fn key(field: &Field) -> Result<CacheKey, PipelineError> {
    if let Value::Map(_) = &field.node.value {
        field.check_keys(&["files", "prefix"])?;
        let Some(files) = field.get("files")? else {
            return Err(field.error("`key` needs `files` (or write the key as a string)"));
        };
        let list = files.strings()?;
        if list.is_empty() || list.len() > MAX_KEY_FILES {
            return Err(files.error(format!("`files` takes 1 or {MAX_KEY_FILES} files, not {}", list.len())));
        }
        let prefix = match field.get("prefix")? {
            None => None,
            Some(f) => Some(key_name(&f)?),
        };
        return Ok(CacheKey::Files { files: list, prefix });
    }
    Ok(CacheKey::Name(key_name(field)?))
}

/// A key as a string, checked as GitLab checks it before variables are expanded.
fn key_name(field: &Field) -> Result<String, PipelineError> {
    let text = match &field.node.value {
        Value::Str(s) => s.clone(),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => field.node.value.scalar_string().unwrap_or_default(),
        _ => return Err(field.expected("a cache key (a string)")),
    };
    check_key(&text).map_err(|why| field.error(why))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::model::CachePolicy;
    use std::path::Path;
    use std::rc::Rc;

    fn parse(text: &str) -> Result<Vec<Cache>, PipelineError> {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        let node = super::super::yaml::load(text, &file).expect("yaml");
        let Value::Map(map) = &node.value else { panic!("map") };
        let entry = map.get("cache").expect("cache");
        caches(&Field::entry("job", entry))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("error").to_string()
    }

    #[test]
    fn defaults_of_a_cache() {
        let c = &parse("cache: {paths: [vendor/]}\n").expect("parse")[0];
        assert_eq!(c.key, CacheKey::Name("default".into()));
        assert_eq!((c.policy.as_str(), c.when, c.untracked), ("pull-push", ArtifactsWhen::OnSuccess, false));
        assert_eq!(parse_policy(&c.policy), Some(CachePolicy::PullPush));
    }

    #[test]
    fn every_form() {
        let text = "cache:\n  - key: $CI_COMMIT_REF_SLUG\n    paths: [node_modules/, '**/*.o']\n    policy: pull\n    \
                    when: always\n    fallback_keys: [main, 12]\n    unprotect: true\n  - key: {files: [Gemfile.lock, \
                    package.json], prefix: $CI_JOB_NAME}\n    untracked: true\n    policy: $POLICY\n";
        let list = parse(text).expect("parse");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].key, CacheKey::Name("$CI_COMMIT_REF_SLUG".into()));
        assert_eq!(list[0].paths, ["node_modules/", "**/*.o"]);
        assert_eq!(list[0].fallback_keys, ["main", "12"]);
        assert_eq!((list[0].when, list[0].unprotect), (ArtifactsWhen::Always, true));
        assert_eq!(
            list[1].key,
            CacheKey::Files {
                files: vec!["Gemfile.lock".into(), "package.json".into()],
                prefix: Some("$CI_JOB_NAME".into())
            }
        );
        assert!(list[1].untracked);
        assert_eq!(list[1].policy, "$POLICY");
        assert_eq!(list[1].location.line, 8);
        assert!(parse("cache: []\n").expect("empty").is_empty());
    }

    #[test]
    fn gitlab_validation_errors() {
        assert!(
            err("cache: {key: a/b}\n").contains("ci.yml:1: job.cache.key: cache key cannot contain"),
            "{}",
            err("cache: {key: a/b}\n")
        );
        assert!(err("cache: {key: ../../x}\n").contains("cannot contain the \"/\""));
        assert!(err("cache: {key: '..'}\n").contains("cannot be \".\" or \"..\""));
        assert!(err("cache: {key: a%2Fb}\n").contains("cannot contain"));
        assert!(err("cache: {key: '%2E%2e'}\n").contains("cannot be"));
        assert!(err(&format!("cache: {{key: {}}}\n", "k".repeat(256))).contains("longer than 255"));
        assert!(err("cache: {key: {files: [a, b, c]}}\n").contains("1 or 2 files, not 3"));
        assert!(err("cache: {key: {prefix: p}}\n").contains("needs `files`"));
        assert!(err("cache: {key: {files: [a], prefix: x/y}}\n").contains("job.cache.key.prefix"));
        assert!(err("cache: {policy: pull-only}\n").contains("unknown policy \"pull-only\""));
        assert!(err("cache: {when: never}\n").contains("job.cache.when: unknown value"));
        assert!(err("cache: {paths: [a], keys: x}\n").contains("job.cache.keys: unknown key (accepted: fallback_keys"));
        assert!(err("cache: {fallback_keys: [a, b, c, d, e, f]}\n").contains("too many fallback keys"));
        assert!(err("cache: {fallback_keys: [a/b]}\n").contains("job.cache.fallback_keys[0]"));
        assert!(err("cache: [{}, {}, {}, {}, {}]\n").contains("no more than 4 caches"));
        assert!(err("cache: x\n").contains("expected a cache map"));
        assert!(err("cache: {untracked: yes-please}\n").contains("true or false"));
    }
}
