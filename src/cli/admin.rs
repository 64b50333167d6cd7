//! Where `glci registry list | stats | clean | pull` get their answers: the running server's
//! admin API (plain HTTP to `--server`, default `127.0.0.1:<mock_server_port>`, with an admin
//! credential signed from `$GLCI_HOME`), or, given `--storage DIR`, the same library calls
//! (`registry::usage`, `registry::gc`) on the directory itself, which is refused while a
//! `glci serve` holds it, or given `--storage s3://BUCKET[/PREFIX]` on the bucket, which servers
//! may share meanwhile. Prints nothing: `registry.rs` renders the reports.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;

use super::storage::StorageChoice;
use super::CliError;
use crate::auth::{Auth, Claims};
use crate::config::{glci_home, process_env, Config};
use crate::http::percent_encode;
use crate::registry::gc::{self, CleanOptions, CleanReport, Progress};
use crate::registry::names::{Name, Tag};
use crate::registry::routes::AdminRoute;
use crate::registry::s3::{S3Store, S3Uploads};
use crate::registry::storage::{Layout, Store, StoreLock};
use crate::registry::uploads::Uploads;
use crate::registry::usage::{self, ListReport, StatsReport};
use crate::registry::DIGEST_HEADER;
use crate::secret::Secret;

/// How long the admin credential the CLI signs for one command lives.
const CREDENTIAL_TTL: Duration = Duration::from_secs(15 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A clean of a large store can take a while; nothing else comes close.
const READ_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest answer read (a list of a very large registry is tens of MiB).
const MAX_ANSWER: u64 = 1 << 30;

/// `host:port` of the server: `--server` (with or without `http://`), else the configured port.
pub fn server_address(flag: Option<&str>, config: &Config) -> Result<String, CliError> {
    let Some(value) = flag else { return Ok(format!("127.0.0.1:{}", config.mock_server_port)) };
    if value.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--server {value}: give host:port; the CLI speaks plain HTTP, which the server answers on the same port"
        )));
    }
    let address = value.strip_prefix("http://").unwrap_or(value).trim_end_matches('/');
    if address.is_empty() || address.contains('/') || !address.contains(':') {
        return Err(CliError::Usage(format!("--server {value}: expected HOST:PORT, e.g. 127.0.0.1:39741")));
    }
    Ok(address.to_string())
}

/// The server's admin API, as one client.
pub struct AdminClient {
    address: String,
    agent: ureq::Agent,
    credential: Secret,
}

impl AdminClient {
    pub fn new(address: String, config: &Config) -> Result<AdminClient, CliError> {
        let auth = Auth::load_or_create(&glci_home(&process_env), config.registry.anonymous_pull)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let credential = Secret::new(auth.sign(&Claims::admin(CREDENTIAL_TTL, SystemTime::now())));
        let agent =
            ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout_read(READ_TIMEOUT).redirects(0).build();
        Ok(AdminClient { address, agent, credential })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// One request; a transport failure is the error, any status an answer.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Result<Result<ureq::Response, (u16, ureq::Response)>, CliError> {
        let url = format!("http://{}{path_and_query}", self.address);
        let result = self
            .agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.credential.expose()))
            .call();
        match result {
            Ok(response) => Ok(Ok(response)),
            Err(ureq::Error::Status(status, response)) => Ok(Err((status, response))),
            Err(ureq::Error::Transport(t)) => Err(CliError::Failed(format!(
                "cannot reach the glci registry at {}: {} (is `glci serve` running there? --server names another address)",
                self.address,
                t.message().map(str::to_string).unwrap_or_else(|| t.kind().to_string())
            ))),
        }
    }

    fn call(&self, method: &str, path_and_query: &str) -> Result<ureq::Response, CliError> {
        self.send(method, path_and_query)?.map_err(|(status, response)| self.refused(status, response))
    }

    fn refused(&self, status: u16, response: ureq::Response) -> CliError {
        let address = &self.address;
        match status {
            401 => CliError::Failed(format!(
                "the registry at {address} did not accept the admin credential; it is signed with \
                 $GLCI_HOME/admin.secret, so run glci with the GLCI_HOME the server uses"
            )),
            403 => CliError::Failed(format!("the registry at {address} refused: the admin credential is required")),
            _ => {
                // The server's own error message (spec JSON), else the status alone.
                let message = serde_json::from_reader::<_, serde_json::Value>(response.into_reader().take(MAX_ANSWER))
                    .ok()
                    .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
                    .unwrap_or_default();
                CliError::Failed(format!("the registry at {address} answered {status}: {message}"))
            }
        }
    }

    fn json<T: DeserializeOwned>(&self, method: &str, path_and_query: &str) -> Result<T, CliError> {
        let answer = self.call(method, path_and_query)?;
        serde_json::from_reader::<_, T>(answer.into_reader().take(MAX_ANSWER)).map_err(|e| {
            CliError::Failed(format!("the registry at {} sent an answer glci cannot read: {e}", self.address))
        })
    }

    /// The digest `name:tag` resolves to, or `None` when the registry does not hold it (HEAD).
    pub fn manifest_digest(&self, name: &Name, tag: &Tag) -> Result<Option<String>, CliError> {
        match self.send("HEAD", &format!("/v2/{name}/manifests/{tag}"))? {
            Ok(response) => Ok(Some(response.header(DIGEST_HEADER).unwrap_or_default().to_string())),
            Err((404, _)) => Ok(None),
            Err((status, response)) => Err(self.refused(status, response)),
        }
    }
}

/// Where list/stats/clean run.
pub enum Backend {
    Server(AdminClient),
    /// The directory, held (`storage/lock.rs`) for as long as the command runs.
    Storage {
        store: Store,
        _lock: StoreLock,
    },
    /// An S3 bucket (`--storage s3://BUCKET[/PREFIX]`), shared with any servers running on it:
    /// nothing is locked, `clean` is safe next to them (`gc/s3.rs`).
    S3 {
        store: S3Store,
        uploads: S3Uploads,
    },
}

fn project_query(project: Option<&Name>) -> String {
    project.map(|p| format!("project={}", percent_encode(p.as_str()))).unwrap_or_default()
}

impl Backend {
    pub fn open(server: Option<&str>, storage: Option<&Path>, config: &Config) -> Result<Backend, CliError> {
        match storage {
            Some(dir) => {
                match dir.to_str().map(|d| super::storage::choose(Some(d), None, Path::new(""))).transpose()? {
                    Some(StorageChoice::S3 { bucket, prefix }) => {
                        let (store, uploads) =
                            super::storage::open_s3(&bucket, &prefix, &config.storage.s3, &process_env)?;
                        Ok(Backend::S3 { store, uploads })
                    }
                    _ => open_storage(&storage_dir(Some(dir.to_path_buf())).unwrap_or_default()),
                }
            }
            None => Ok(Backend::Server(AdminClient::new(server_address(server, config)?, config)?)),
        }
    }

    pub fn list(&self, project: Option<&Name>) -> Result<ListReport, CliError> {
        match self {
            Backend::Server(client) => {
                let query = project_query(project);
                let path = AdminRoute::List.path();
                client.json("GET", &if query.is_empty() { path } else { format!("{path}?{query}") })
            }
            Backend::Storage { store, .. } => Ok(usage::list(&inventory(store)?, project)),
            Backend::S3 { store, .. } => Ok(usage::list(&s3_inventory(store)?, project)),
        }
    }

    pub fn stats(&self) -> Result<StatsReport, CliError> {
        match self {
            Backend::Server(client) => client.json("GET", &AdminRoute::Stats.path()),
            Backend::Storage { store, .. } => Ok(usage::stats(&inventory(store)?)),
            Backend::S3 { store, .. } => Ok(usage::stats(&s3_inventory(store)?)),
        }
    }

    pub fn clean(&self, options: &CleanOptions, progress: &mut dyn FnMut(Progress)) -> Result<CleanReport, CliError> {
        match self {
            Backend::Server(client) => {
                let mut query = format!("dry_run={}&grace={}", options.dry_run, options.grace.as_secs());
                if let Some(project) = &options.project {
                    query.push('&');
                    query.push_str(&project_query(Some(project)));
                }
                client.json("POST", &format!("{}?{query}", AdminRoute::Clean.path()))
            }
            Backend::Storage { store, .. } => {
                // The directory is held: no server is using these sessions.
                let uploads = Uploads::new(store.layout().clone());
                gc::clean(store, &uploads, options, progress).map_err(|e| CliError::Failed(format!("clean: {e}")))
            }
            Backend::S3 { store, uploads } => {
                gc::clean_s3(store, uploads, options, progress).map_err(|e| CliError::Failed(format!("clean: {e}")))
            }
        }
    }

    pub fn is_server(&self) -> bool {
        matches!(self, Backend::Server(_))
    }
}

fn inventory(store: &Store) -> Result<crate::registry::storage::Inventory, CliError> {
    store.inventory().map_err(|e| CliError::Failed(format!("reading the storage: {e}")))
}

fn s3_inventory(store: &S3Store) -> Result<crate::registry::storage::Inventory, CliError> {
    store.inventory().map_err(|e| CliError::Failed(format!("reading the storage: {e}")))
}

fn open_storage(dir: &Path) -> Result<Backend, CliError> {
    let layout = Layout::new(dir);
    if !layout.blobs().is_dir() && !layout.repositories().is_dir() {
        return Err(CliError::Failed(format!(
            "{} is not a glci registry storage directory (no blobs/ or repositories/ in it)",
            dir.display()
        )));
    }
    let lock = match StoreLock::try_acquire(&layout.lock_file()) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(CliError::Failed(format!(
                "storage {} is in use by a running glci serve (it holds {}); stop the server, or \
                 leave out --storage to go through its admin API",
                dir.display(),
                layout.lock_file().display()
            )))
        }
        Err(e) => return Err(CliError::Failed(format!("cannot lock storage {}: {e}", dir.display()))),
    };
    let store =
        Store::open(layout).map_err(|e| CliError::Failed(format!("cannot open storage {}: {e}", dir.display())))?;
    Ok(Backend::Storage { store, _lock: lock })
}

/// The storage directory flag, made absolute for messages.
pub fn storage_dir(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.map(|p| std::path::absolute(&p).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let config = Config::default();
        assert_eq!(server_address(None, &config).unwrap(), "127.0.0.1:39741");
        assert_eq!(server_address(Some("127.0.0.1:5000"), &config).unwrap(), "127.0.0.1:5000");
        assert_eq!(server_address(Some("http://localhost:5000/"), &config).unwrap(), "localhost:5000");
        assert!(matches!(server_address(Some("https://x:1"), &config), Err(CliError::Usage(_))));
        assert!(matches!(server_address(Some("nohost"), &config), Err(CliError::Usage(_))));
    }
}
