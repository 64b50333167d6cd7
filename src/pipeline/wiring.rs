//! What a job container gets from the registry (DESIGN §10, issue 8), as a [`JobWiring`]:
//! `CI_REGISTRY*` (the embedded `glci-mock`, or an external registry), a job token as
//! `CI_REGISTRY_PASSWORD`, `DOCKER_AUTH_CONFIG` (the host's credentials, helpers included,
//! plus the job's; the pipeline's own wins per host), and with the embedded registry: the
//! `glci-net` network, the CA (`/glci-registry-certs/ca.crt`, appended to the image's bundles,
//! `certs.d` entries), `/etc/buildkit/buildkitd.toml`, and for a DinD service
//! `/etc/docker/daemon.json` (merged with what the image has) and privileged mode. Images named
//! `glci-mock:<port>/…` are pulled by the host daemon through `127.0.0.1:<port>`.
//! Every secret handed out is recorded so the CLI can mask it in all output. Called by
//! `execute` through the trait; Docker work through `docker.rs`; prints nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::execute::{ExtraFile, JobWiring, Wiring};
use super::image_files::ImageFiles;
use super::plan::{PlannedJob, PlannedService};
use crate::auth::{Auth, Claims};
use crate::docker;
use crate::encoding::base64_encode;
use crate::registry::proxy::credentials;
use crate::registry::proxy::upstream::Credentials;
use crate::secret::Secret;

/// `CI_REGISTRY_USER` of the embedded registry (GitLab's name for job tokens).
pub const JOB_USER: &str = "gitlab-ci-token";
/// Where jobs find the CA.
pub const CA_PATH: &str = "/glci-registry-certs/ca.crt";
/// The image bundles the CA is appended to, where the image has them.
pub const CA_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem", "/etc/pki/tls/certs/ca-bundle.crt"];
pub const BUILDKITD_TOML: &str = "/etc/buildkit/buildkitd.toml";
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Job tokens outlive the job's timeout by this much.
const TOKEN_SLACK: Duration = Duration::from_secs(600);
/// Host pulls use a short admin token.
const PULL_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Which registry the run's jobs get.
pub enum Registry {
    /// `glci-mock` on `network`, at `glci-mock:<port>` (127.0.0.1:<port> from the host).
    Embedded { port: u16, network: String, auth: Auth, ca_pem: String, push_through: bool, privileged: bool },
    /// `--registry`/`[registry] url`: only variables and credentials, nothing mounted.
    External { host: String, username: String, password: Secret },
}

pub struct RegistryWiring {
    registry: Registry,
    project: String,
    pipeline_id: u64,
    /// The host's docker credentials (key as written, credentials), resolved once per run.
    host_credentials: Vec<(String, Credentials)>,
    /// Where temporary docker configs for host pulls are written (0700).
    work_dir: PathBuf,
    secrets: Arc<Mutex<Vec<String>>>,
    /// The image files `prepare` reads, once per image.
    image_files: ImageFiles,
}

impl RegistryWiring {
    pub fn new(
        registry: Registry,
        project: &str,
        pipeline_id: u64,
        docker_config_dir: Option<&Path>,
        work_dir: PathBuf,
        image_files: ImageFiles,
    ) -> RegistryWiring {
        let host_credentials = credentials::all(docker_config_dir);
        let wiring = RegistryWiring {
            registry,
            project: project.to_string(),
            pipeline_id,
            host_credentials,
            work_dir,
            secrets: Arc::new(Mutex::new(Vec::new())),
            image_files,
        };
        if let Registry::External { password, .. } = &wiring.registry {
            wiring.remember(password.expose());
        }
        for (_, c) in &wiring.host_credentials {
            wiring.remember(c.password.expose());
            wiring.remember(&base64_encode(format!("{}:{}", c.username, c.password.expose()).as_bytes()));
        }
        wiring
    }

    /// The values to mask in all output (tokens, passwords, `DOCKER_AUTH_CONFIG`), shared with
    /// the output side; grows as jobs start.
    pub fn secrets(&self) -> Arc<Mutex<Vec<String>>> {
        self.secrets.clone()
    }

    fn remember(&self, secret: &str) {
        if secret.len() < 4 {
            return;
        }
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if !secrets.iter().any(|s| s == secret) {
            secrets.push(secret.to_string());
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self.registry, Registry::Embedded { .. })
    }

    /// `host:port` jobs use for the registry.
    pub fn registry_host(&self) -> String {
        match &self.registry {
            Registry::Embedded { port, .. } => format!("{}:{port}", crate::mock::HOSTNAME),
            Registry::External { host, .. } => host.clone(),
        }
    }

    /// `CI_REGISTRY`, `CI_REGISTRY_IMAGE`, `CI_REGISTRY_USER`: predefined for the whole
    /// pipeline (a pipeline may override them, and `image:` may use them).
    pub fn predefined(&self) -> Vec<(String, String)> {
        let host = self.registry_host();
        let user = match &self.registry {
            Registry::Embedded { .. } => JOB_USER.to_string(),
            Registry::External { username, .. } => username.clone(),
        };
        let mut v = vec![
            ("CI_REGISTRY".into(), host.clone()),
            ("CI_REGISTRY_IMAGE".into(), format!("{host}/{}", self.project.to_ascii_lowercase())),
            ("CI_REGISTRY_USER".into(), user),
        ];
        // The dependency proxy is a pull-through cache of Docker Hub: the embedded registry's
        // `docker.io/` names are exactly that (DESIGN §7).
        if self.is_embedded() {
            let prefix = format!("{host}/docker.io");
            v.push(("CI_DEPENDENCY_PROXY_SERVER".into(), host.clone()));
            v.push(("CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX".into(), prefix.clone()));
            v.push(("CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX".into(), prefix));
            v.push(("CI_DEPENDENCY_PROXY_USER".into(), JOB_USER.into()));
        }
        v
    }

    /// The job's registry password: a job token for the project, or the external password.
    fn password(&self, job: &PlannedJob) -> String {
        let secret = match &self.registry {
            Registry::Embedded { auth, push_through, .. } => {
                let claims = Claims::job(
                    &self.project.to_ascii_lowercase(),
                    self.pipeline_id,
                    job.id,
                    *push_through,
                    job.timeout + TOKEN_SLACK,
                    SystemTime::now(),
                );
                auth.sign(&claims)
            }
            Registry::External { password, .. } => password.expose().to_string(),
        };
        self.remember(&secret);
        secret
    }

    /// `{"auths": {...}}`: host credentials, then the job's registry credential, then the
    /// pipeline's own `DOCKER_AUTH_CONFIG` entries (each replacing any entry for its host).
    fn docker_auth_config(&self, user: &str, password: &str, pipeline_own: Option<&str>) -> String {
        let mut by_host: BTreeMap<String, (String, Value)> = BTreeMap::new();
        for (key, c) in &self.host_credentials {
            let auth = base64_encode(format!("{}:{}", c.username, c.password.expose()).as_bytes());
            by_host.insert(credentials::key_host(key), (key.clone(), json!({ "auth": auth })));
        }
        let host = self.registry_host();
        let auth = base64_encode(format!("{user}:{password}").as_bytes());
        self.remember(&auth);
        by_host.insert(credentials::key_host(&host), (host, json!({ "auth": auth })));
        for (key, entry) in pipeline_auths(pipeline_own) {
            if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                self.remember(auth);
            }
            by_host.insert(credentials::key_host(&key), (key, entry));
        }
        let auths: Map<String, Value> = by_host.into_values().collect();
        let text = json!({ "auths": auths }).to_string();
        self.remember(&text);
        text
    }

    /// The CA files every container gets (embedded registry only).
    fn ca_files(&self) -> Vec<ExtraFile> {
        let Registry::Embedded { ca_pem, .. } = &self.registry else { return Vec::new() };
        let host = self.registry_host();
        [
            CA_PATH.to_string(),
            format!("/etc/docker/certs.d/{host}/ca.crt"),
            format!("/etc/containers/certs.d/{host}/ca.crt"),
        ]
        .into_iter()
        .map(|path| ExtraFile { path, contents: ca_pem.as_bytes().to_vec(), mode: 0o644 })
        .collect()
    }
}

/// The entries of a pipeline's own `DOCKER_AUTH_CONFIG` (`{"auths": {KEY: {...}}}`).
fn pipeline_auths(text: Option<&str>) -> Vec<(String, Value)> {
    let Some(Ok(Value::Object(root))) = text.map(serde_json::from_str::<Value>) else { return Vec::new() };
    match root.get("auths") {
        Some(Value::Object(auths)) => auths.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => Vec::new(),
    }
}

/// `bundle` with `ca` appended, unless it holds it already.
pub fn append_ca(bundle: &[u8], ca: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(bundle);
    if text.contains(ca.trim()) {
        return bundle.to_vec();
    }
    let mut out = bundle.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(ca.as_bytes());
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// `daemon.json` with the embedded registry as a mirror and insecure registry. The `http://`
/// form: BuildKit honours an insecure registry only with its scheme (shared/notes/dind-offline.md).
pub fn merge_daemon_json(existing: Option<&[u8]>, host: &str) -> Result<Vec<u8>, String> {
    let mut root = match existing {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => serde_json::from_slice::<Value>(bytes)
            .map_err(|e| format!("{DAEMON_JSON} in the image is not JSON: {e}"))?,
        _ => json!({}),
    };
    let Value::Object(map) = &mut root else { return Err(format!("{DAEMON_JSON} in the image is not an object")) };
    let url = format!("http://{host}");
    for key in ["registry-mirrors", "insecure-registries"] {
        let entry = map.entry(key).or_insert_with(|| json!([]));
        if !entry.is_array() {
            *entry = json!([]);
        }
        if let Value::Array(list) = entry {
            if !list.iter().any(|v| v.as_str() == Some(url.as_str())) {
                list.push(Value::String(url.clone()));
            }
        }
    }
    serde_json::to_vec_pretty(&root).map_err(|e| e.to_string())
}

/// `buildkitd.toml` marking `host` `http = true, insecure = true` and a docker.io mirror.
pub fn merge_buildkitd_toml(existing: Option<&[u8]>, host: &str) -> Result<Vec<u8>, String> {
    let mut root: toml::Table = match existing {
        Some(bytes) => toml::from_str(&String::from_utf8_lossy(bytes))
            .map_err(|e| format!("{BUILDKITD_TOML} in the image is not TOML: {e}"))?,
        None => toml::Table::new(),
    };
    let registry = root.entry("registry").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(registry) = registry else {
        return Err(format!("{BUILDKITD_TOML}: `registry` is not a table"));
    };
    let ours = registry.entry(host).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(ours) = ours {
        ours.insert("http".into(), toml::Value::Boolean(true));
        ours.insert("insecure".into(), toml::Value::Boolean(true));
    }
    let hub = registry.entry("docker.io").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(hub) = hub {
        let mirrors = hub.entry("mirrors").or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(list) = mirrors {
            if !list.iter().any(|v| v.as_str() == Some(host)) {
                list.push(toml::Value::String(host.to_string()));
            }
        }
    }
    toml::to_string(&root).map(String::into_bytes).map_err(|e| e.to_string())
}

/// Whether a service is a Docker daemon: a `docker:*dind*` image (any image whose last path
/// component or tag says `dind`), or `dockerd`/`DOCKER_TLS_CERTDIR` in its entrypoint or command.
/// (Not the variable itself: pipelines set `DOCKER_TLS_CERTDIR` globally, and every service gets
/// the job's variables.)
pub fn is_dind(service: &PlannedService) -> bool {
    let image = service.image.to_ascii_lowercase();
    let name = image.split('@').next().unwrap_or(&image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let mut words = service.entrypoint.iter().chain(service.command.iter()).flatten();
    last.contains("dind") || words.any(|w| w.contains("dockerd") || w.contains("DOCKER_TLS_CERTDIR"))
}

/// The host of an image reference, as `config.json` keys it (`docker.io` for Hub names).
fn image_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

impl RegistryWiring {
    /// `docker --config TMP pull` with `auths` written to `TMP/config.json` (0600 in a 0700
    /// directory, removed afterwards).
    fn pull_with(&self, image: &str, platform: Option<&str>, auths: Value) -> Result<(), String> {
        let mut id = [0u8; 6];
        getrandom::getrandom(&mut id).map_err(|e| e.to_string())?;
        let name = crate::encoding::hex(&id);
        let dir = self.work_dir.join(format!("docker-config-{name}"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let result = (|| {
            let path = dir.join("config.json");
            crate::durable::create_new(&path, json!({ "auths": auths }).to_string().as_bytes(), 0o600)
                .map_err(|e| e.to_string())?;
            docker::pull_with_config(&dir, image, platform).map_err(|e| format!("pulling {image}: {}", e.stderr.trim()))
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

impl JobWiring for RegistryWiring {
    fn job(&self, job: &PlannedJob) -> Wiring {
        let user = match &self.registry {
            Registry::Embedded { .. } => JOB_USER.to_string(),
            Registry::External { username, .. } => username.clone(),
        };
        let password = self.password(job);
        let own = job.variables.get("DOCKER_AUTH_CONFIG");
        let auth_config = self.docker_auth_config(&user, &password, own);
        let mut variables =
            vec![("CI_REGISTRY_PASSWORD".into(), password.clone()), ("DOCKER_AUTH_CONFIG".into(), auth_config)];
        if self.is_embedded() {
            // The job token of the run: what the registry accepts from this job.
            variables.push(("CI_JOB_TOKEN".into(), password.clone()));
            variables.push(("CI_DEPENDENCY_PROXY_PASSWORD".into(), password));
        }
        let mut wiring = Wiring { variables, ..Wiring::default() };
        if let Registry::Embedded { network, .. } = &self.registry {
            wiring.networks.push(network.clone());
            wiring.files = self.ca_files();
        }
        wiring
    }

    fn service(&self, _job: &PlannedJob, service: &PlannedService) -> Wiring {
        let mut wiring = Wiring::default();
        if let Registry::Embedded { network, privileged, .. } = &self.registry {
            wiring.networks.push(network.clone());
            wiring.files = self.ca_files();
            wiring.privileged = *privileged && is_dind(service);
        }
        wiring
    }

    fn prepare(
        &self,
        container: &str,
        image_id: Option<&str>,
        job: &PlannedJob,
        service: Option<&PlannedService>,
    ) -> Result<Vec<ExtraFile>, String> {
        let Registry::Embedded { ca_pem, .. } = &self.registry else { return Ok(Vec::new()) };
        let host = self.registry_host();
        let config = match service {
            None => Some(BUILDKITD_TOML),
            Some(service) if is_dind(service) => Some(DAEMON_JSON),
            Some(_) => None,
        };
        let mut paths: Vec<&str> = CA_BUNDLES.to_vec();
        paths.extend(config);
        let platform = match service {
            Some(service) => service.platform.as_deref(),
            None => job.image.as_ref().and_then(|image| image.platform.as_deref()),
        };
        let mut read = self.image_files.read_all(container, image_id, platform, &paths)?.into_iter();
        let mut files: Vec<ExtraFile> = Vec::new();
        for (path, existing) in CA_BUNDLES.iter().zip(read.by_ref()) {
            if let Some(existing) = existing {
                files.push(ExtraFile { path: path.to_string(), contents: append_ca(&existing, ca_pem), mode: 0o644 });
            }
        }
        let existing = read.next().flatten();
        match service {
            None => {
                let contents = merge_buildkitd_toml(existing.as_deref(), &host)?;
                files.push(ExtraFile { path: BUILDKITD_TOML.into(), contents, mode: 0o644 });
            }
            Some(service) if is_dind(service) => {
                let contents = merge_daemon_json(existing.as_deref(), &host)?;
                files.push(ExtraFile { path: DAEMON_JSON.into(), contents, mode: 0o644 });
            }
            Some(_) => {}
        }
        Ok(files)
    }

    fn pull(&self, job: &PlannedJob, image: &str, platform: Option<&str>) -> Option<Result<(), String>> {
        if let Registry::Embedded { port, auth, .. } = &self.registry {
            let prefix = format!("{}/", self.registry_host());
            if let Some(rest) = image.strip_prefix(&prefix) {
                let local = format!("127.0.0.1:{port}/{rest}");
                let token = auth.sign(&Claims::admin(PULL_TOKEN_TTL, SystemTime::now()));
                self.remember(&token);
                let basic = base64_encode(format!("{JOB_USER}:{token}").as_bytes());
                let auths = json!({ format!("127.0.0.1:{port}"): { "auth": basic } });
                return Some(self.pull_with(&local, platform, auths).and_then(|()| {
                    docker::tag(&local, image).map_err(|e| e.to_string())?;
                    let _ = docker::untag(&local);
                    Ok(())
                }));
            }
        }
        // The pipeline's own DOCKER_AUTH_CONFIG for this image's host: the host daemon pulls
        // with it too (the host's own credentials the plain `docker pull` uses anyway).
        let host = credentials::key_host(&image_host(image));
        let own = pipeline_auths(job.variables.get("DOCKER_AUTH_CONFIG"));
        let entry = own.into_iter().find(|(key, _)| credentials::key_host(key) == host)?;
        let mut auths = Map::new();
        auths.insert(entry.0, entry.1);
        Some(self.pull_with(image, platform, Value::Object(auths)))
    }
}

/// Replaces every secret in `line` with `[MASKED]`, as GitLab masks variables.
pub fn mask(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_string();
    // Longest first, so a secret containing another is masked whole.
    let mut sorted: Vec<&String> = secrets.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in sorted {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[MASKED]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_json_is_merged() {
        let merged =
            merge_daemon_json(Some(br#"{"debug": true, "registry-mirrors": ["http://m:1"]}"#), "glci-mock:39741")
                .unwrap();
        let v: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(v["debug"], true);
        assert_eq!(v["registry-mirrors"], json!(["http://m:1", "http://glci-mock:39741"]));
        assert_eq!(v["insecure-registries"], json!(["http://glci-mock:39741"]));
        let again = merge_daemon_json(Some(&merged), "glci-mock:39741").unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&again).unwrap(), v);
        assert!(merge_daemon_json(Some(b"[1]"), "h:1").is_err());
    }

    #[test]
    fn buildkitd_toml_is_merged() {
        let existing = b"debug = true\n[registry.\"docker.io\"]\nmirrors = [\"m.example\"]\n";
        let merged = merge_buildkitd_toml(Some(existing), "glci-mock:39741").unwrap();
        let t: toml::Table = toml::from_str(std::str::from_utf8(&merged).unwrap()).unwrap();
        assert_eq!(t["debug"].as_bool(), Some(true));
        assert_eq!(t["registry"]["glci-mock:39741"]["http"].as_bool(), Some(true));
        assert_eq!(t["registry"]["glci-mock:39741"]["insecure"].as_bool(), Some(true));
        let mirrors: Vec<&str> =
            t["registry"]["docker.io"]["mirrors"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(mirrors, ["m.example", "glci-mock:39741"]);
    }

    #[test]
    fn ca_is_appended_once() {
        let ca = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n";
        let merged = append_ca(b"OTHER", ca);
        assert_eq!(merged, format!("OTHER\n{ca}").into_bytes());
        assert_eq!(append_ca(&merged, ca), merged);
    }

    #[test]
    fn masks_longest_first() {
        let secrets = vec!["abcd".to_string(), "abcdef".to_string()];
        assert_eq!(mask("x abcdef y abcd", &secrets), "x [MASKED] y [MASKED]");
    }

    fn service(image: &str, command: Option<&[&str]>) -> PlannedService {
        PlannedService {
            image: image.into(),
            aliases: vec![],
            entrypoint: None,
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn dind_services() {
        assert!(is_dind(&service("docker:24-dind", None)));
        assert!(is_dind(&service("docker:dind-rootless", None)));
        assert!(is_dind(&service("registry.example.com/tools/dind:1", None)));
        assert!(is_dind(&service("docker:24", Some(&["dockerd", "--tls=false"]))));
        assert!(!is_dind(&service("postgres:15", None)));
        assert!(!is_dind(&service("docker:24", None)));
    }

    #[test]
    fn image_hosts() {
        assert_eq!(image_host("alpine:3"), "docker.io");
        assert_eq!(image_host("library/alpine"), "docker.io");
        assert_eq!(image_host("registry.gitlab.com/g/p:1"), "registry.gitlab.com");
        assert_eq!(image_host("glci-mock:39741/g/p"), "glci-mock:39741");
    }

    #[test]
    fn pipeline_entries() {
        let own = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"eDp5"}}}"#;
        let entries = pipeline_auths(Some(own));
        assert_eq!(entries.len(), 1);
        assert!(pipeline_auths(Some("not json")).is_empty());
    }
}
