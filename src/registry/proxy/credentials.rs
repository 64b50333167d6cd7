//! Credentials for upstream registries: `[registry.upstream]` for its host, then the host's
//! `~/.docker/config.json` (`auths`, and `credHelpers`/`credsStore` through
//! `docker-credential-<name> get`). Read once; helper answers cached.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;

use super::canonical_host;
use super::upstream::{CredentialSource, Credentials};
use crate::encoding::base64_decode;
use crate::secret::Secret;

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://index.docker.io/v1/` → `registry-1.docker.io`; `host:port/path` → `host:port`.
fn host_of(key: &str) -> String {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    canonical_host(key.split('/').next().unwrap_or(key))
}

/// The server name a credential helper knows a host by.
fn helper_server(host: &str) -> String {
    if host == "registry-1.docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

fn decode_entry(entry: &AuthEntry) -> Option<Credentials> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = String::from_utf8(base64_decode(auth)?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return Some(Credentials { username: user.to_string(), password: Secret::new(password.to_string()) });
    }
    Some(Credentials { username: entry.username.clone()?, password: Secret::new(entry.password.clone()?) })
}

/// Builds the lookup: `configured` (host, credentials) first, then `docker_config_dir`/config.json.
pub fn source(configured: Option<(String, Credentials)>, docker_config_dir: Option<&Path>) -> CredentialSource {
    let config: DockerConfig = docker_config_dir
        .map(|d| d.join("config.json"))
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let auths: HashMap<String, Credentials> =
        config.auths.iter().filter_map(|(k, v)| decode_entry(v).map(|c| (host_of(k), c))).collect();
    let helpers: HashMap<String, String> = config.cred_helpers.iter().map(|(k, v)| (host_of(k), v.clone())).collect();
    let store = config.creds_store;
    let answers: Mutex<HashMap<String, Option<Credentials>>> = Mutex::new(HashMap::new());
    Box::new(move |host: &str| {
        if let Some((configured_host, credentials)) = &configured {
            if canonical_host(configured_host) == host {
                return Some(credentials.clone());
            }
        }
        let helper = helpers.get(host).or(store.as_ref());
        if let Some(helper) = helper {
            let mut answers = answers.lock().unwrap_or_else(|p| p.into_inner());
            let answer = answers.entry(host.to_string()).or_insert_with(|| {
                crate::docker::credential_helper_get(helper, &helper_server(host))
                    .ok()
                    .map(|(username, password)| Credentials { username, password })
            });
            if answer.is_some() {
                return answer.clone();
            }
        }
        auths.get(host).cloned()
    })
}

/// Every credential the host's `docker_config_dir/config.json` gives, keyed as written there
/// (`https://index.docker.io/v1/`, `host:port`): `auths`, then `credsStore` (its `list`), then
/// `credHelpers`, later ones winning per host as the docker CLI does. For `DOCKER_AUTH_CONFIG`
/// (issue 8). A helper that fails is skipped.
pub fn all(docker_config_dir: Option<&Path>) -> Vec<(String, Credentials)> {
    let config: DockerConfig = docker_config_dir
        .map(|d| d.join("config.json"))
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut out: BTreeMap<String, (String, Credentials)> = BTreeMap::new();
    for (key, entry) in &config.auths {
        if let Some(credentials) = decode_entry(entry) {
            out.insert(host_of(key), (key.clone(), credentials));
        }
    }
    let ask = |helper: &str, server: &str| {
        crate::docker::credential_helper_get(helper, server)
            .ok()
            .map(|(username, password)| Credentials { username, password })
    };
    if let Some(store) = &config.creds_store {
        for server in crate::docker::credential_helper_list(store).unwrap_or_default() {
            if let Some(credentials) = ask(store, &server) {
                out.insert(host_of(&server), (server, credentials));
            }
        }
    }
    for (key, helper) in &config.cred_helpers {
        if let Some(credentials) = ask(helper, key) {
            out.insert(host_of(key), (key.clone(), credentials));
        }
    }
    out.into_values().collect()
}

/// The host a `DOCKER_AUTH_CONFIG`/`config.json` key names (`https://index.docker.io/v1/` →
/// `registry-1.docker.io`).
pub fn key_host(key: &str) -> String {
    host_of(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"registry.gitlab.com":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let lookup = source(None, Some(dir.path()));
        let hub = lookup("registry-1.docker.io").unwrap();
        assert_eq!((hub.username.as_str(), hub.password.expose()), ("user", "pass"));
        assert_eq!(lookup("registry.gitlab.com").unwrap().username, "u");
        assert!(lookup("example.com").is_none());
        let configured = Credentials { username: "deploy".into(), password: Secret::new("t".into()) };
        let lookup = source(Some(("registry.gitlab.com".into(), configured)), Some(dir.path()));
        assert_eq!(lookup("registry.gitlab.com").unwrap().username, "deploy");
    }
}
