//! `glci serve`: flags → registry → HTTP server in the foreground until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::storage::{self, StorageChoice};
use super::{print_stdout, CliError};
use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::{glci_home, process_env, Config};
use crate::http::{self, Server, ServerOptions};
use crate::registry::mirror::Mirror;
use crate::registry::proxy::upstream::{Credentials, UpstreamClient};
use crate::registry::proxy::{credentials, Proxy, ProxyOptions};
use crate::registry::storage::{Layout, StoreLock};
use crate::registry::{Registry, RegistryOptions};
use crate::tls::{Ca, ServerTls};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:39741")]
    pub listen: String,
    /// Storage root (default: $GLCI_HOME/registry), or s3://BUCKET[/PREFIX] (`[storage.s3]`).
    #[arg(long)]
    pub storage: Option<PathBuf>,
    /// Serve without authentication: anyone who reaches the port may push and delete.
    #[arg(long)]
    pub no_auth: bool,
    /// Serve plain HTTP only (no TLS on the port).
    #[arg(long)]
    pub no_tls: bool,
    /// Worker threads (each serves one connection at a time).
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Do not log one line per request.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: ServeArgs, config: &Config) -> Result<(), CliError> {
    crate::log::set_quiet(args.quiet);
    if args.workers == 0 {
        return Err(CliError::Usage("--workers: must be at least 1".into()));
    }
    let home = glci_home(&process_env);
    let flag = args.storage.as_ref().map(|p| p.to_string_lossy().into_owned());
    let choice = storage::choose(flag.as_deref(), config.storage.url.as_deref(), &home)?;
    let clock = test_clock();
    let options = RegistryOptions { clock: clock.clone(), ..RegistryOptions::default() };
    let expiry = options.upload_expiry;
    let (registry, _storage_lock) = open_registry(&choice, &config.storage.s3, options)?;
    // What a crash left (issue 14 §4): sessions and temp files untouched for the grace window,
    // not only after `upload_expiry`; a client resuming within the window still can.
    let expired = registry.uploads.expire(expiry.min(crate::registry::gc::DEFAULT_GRACE), false);
    if expired.sessions + expired.temp_files > 0 {
        crate::log::info(
            "uploads_expired",
            &format!(
                "{} abandoned upload sessions and {} stale temp files removed",
                expired.sessions, expired.temp_files
            ),
        );
    }
    let registry = if args.no_auth {
        crate::log::warn("auth", "--no-auth: anyone who can reach this port may push and delete");
        registry
    } else {
        let auth =
            Auth::load_or_create(&home, config.registry.anonymous_pull).map_err(|e| CliError::Failed(e.to_string()))?;
        registry.with_auth(auth)
    };
    let client = upstream_client(config);
    // Push-through reads what it forwards from the store, a directory or S3 alike.
    let registry = registry.with_mirror(Mirror::new(host_of(&config.registry.upstream.url), Arc::clone(&client)));
    let registry = match pull_through(config, &client, &clock) {
        Some(proxy) => {
            crate::log::info("pull_through", &format!("upstreams: {}", config.registry.upstreams.join(", ")));
            registry.with_proxy(proxy)
        }
        None => registry,
    };
    let tls = if args.no_tls {
        None
    } else {
        let ca = Ca::load_or_create(&home).map_err(|e| CliError::Failed(e.to_string()))?;
        let tls = ServerTls::new(ca, &config.tls.extra_sans, config.tls.cert_validity, clock.clone())
            .map_err(|e| CliError::Failed(e.to_string()))?;
        crate::log::info(
            "tls",
            &format!("HTTPS and HTTP on one port; CA {}", crate::tls::ca_cert_path(&home).display()),
        );
        Some(Arc::new(tls))
    };
    // Before anything is announced: a signal right after `listening on` must stop us cleanly.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| CliError::Failed(format!("cannot install signal handlers: {e}")))?;
    let registry = Arc::new(registry);
    let listener = http::bind(&args.listen).map_err(|e| CliError::Failed(e.to_string()))?;
    let server_options =
        ServerOptions { workers: args.workers, log_requests: !args.quiet, tls, ..ServerOptions::default() };
    let mut server = Server::start(listener, registry.clone(), server_options)
        .map_err(|e| CliError::Failed(format!("cannot start the server: {e}")))?;
    crate::log::info("storage", &registry.store.describe());
    print_stdout(&format!("listening on {}\n", server.addr()));

    let stopper = server.stopper();
    let janitor_registry = registry.clone();
    std::thread::Builder::new()
        .name("glci-janitor".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(600));
            janitor_registry.uploads.expire(expiry, false);
        })
        .map_err(|e| CliError::Failed(format!("cannot start the janitor: {e}")))?;
    std::thread::Builder::new()
        .name("glci-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                crate::log::info("shutdown", &format!("signal {signal}: finishing in-flight requests"));
                stopper.stop();
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot start the signal thread: {e}")))?;
    server.join();
    crate::log::info("shutdown", "stopped");
    Ok(())
}

/// The system clock, or for tests only (never documented for users) the system clock plus the
/// seconds in the file `GLCI_TEST_CLOCK_FILE` names, so tests jump over `tag_ttl`, token expiry
/// and certificate renewal instead of sleeping (`clock`).
fn test_clock() -> Clock {
    match process_env("GLCI_TEST_CLOCK_FILE").filter(|p| !p.is_empty()) {
        Some(path) => Clock::offset_by_file(path.into()),
        None => Clock::system(),
    }
}

/// The one upstream client, shared by pull-through and push-through: endpoints from
/// `[registry.upstream_urls]`, credentials from `[registry.upstream]` and ~/.docker/config.json.
fn upstream_client(config: &Config) -> Arc<UpstreamClient> {
    let upstream = &config.registry.upstream;
    let configured = match (&upstream.username, &upstream.password) {
        (Some(username), Some(password)) => {
            Some((host_of(&upstream.url), Credentials { username: username.clone(), password: password.clone() }))
        }
        _ => None,
    };
    let docker_config = process_env("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| process_env("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let mut endpoints: std::collections::BTreeMap<String, String> =
        config.registry.upstream_urls.clone().into_iter().collect();
    // `[registry.upstream] url = "http://host:port"` names its own endpoint (unless mapped).
    if upstream.url.starts_with("http://") || upstream.url.starts_with("https://") {
        let url = upstream.url.trim_end_matches('/');
        let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
        let authority_end = url[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(url.len());
        endpoints.entry(host_of(url)).or_insert_with(|| url[..authority_end].to_string());
    }
    let credentials = credentials::source(configured, docker_config.as_deref());
    Arc::new(UpstreamClient::new(endpoints, credentials, config.registry.upstream_timeout))
}

/// `https://registry.gitlab.com/x` → `registry.gitlab.com`.
fn host_of(url: &str) -> String {
    let host = url.trim_start_matches("https://").trim_start_matches("http://");
    host.split('/').next().unwrap_or(host).to_string()
}

/// The registry on the storage chosen, with the directory's lock (none on S3: many instances
/// share a bucket by design).
fn open_registry(
    choice: &StorageChoice,
    s3: &crate::config::S3Config,
    options: RegistryOptions,
) -> Result<(Registry, Option<StoreLock>), CliError> {
    match choice {
        StorageChoice::Directory(dir) => {
            // Held for the server's lifetime: `glci registry … --storage` and a second server
            // refuse this directory while we run (released when we exit, kill -9 included).
            let lock = lock_storage(dir)?;
            let registry = Registry::open(dir, options)
                .map_err(|e| CliError::Failed(format!("cannot open storage {}: {e}", dir.display())))?;
            Ok((registry, Some(lock)))
        }
        StorageChoice::S3 { bucket, prefix } => {
            let (store, uploads) = storage::open_s3(bucket, prefix, s3, &process_env)?;
            Ok((Registry::on(Box::new(store), Box::new(uploads), options), None))
        }
    }
}

/// Takes the storage directory's lock (`storage/lock.rs`), creating the directory if needed.
fn lock_storage(storage: &std::path::Path) -> Result<StoreLock, CliError> {
    let cannot =
        |e: &dyn std::fmt::Display| CliError::Failed(format!("cannot open storage {}: {e}", storage.display()));
    std::fs::create_dir_all(storage).map_err(|e| cannot(&e))?;
    match StoreLock::try_acquire(&Layout::new(storage).lock_file()) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(CliError::Failed(format!(
            "storage {} is in use by another glci process (a running `glci serve`, or `glci registry … --storage`)",
            storage.display()
        ))),
        Err(e) => Err(cannot(&e)),
    }
}

/// The pull-through cache from `[registry]` upstreams; `None` when there are none.
fn pull_through(config: &Config, client: &Arc<UpstreamClient>, clock: &Clock) -> Option<Proxy> {
    if config.registry.upstreams.is_empty() {
        return None;
    }
    let options = ProxyOptions {
        upstreams: config.registry.upstreams.clone(),
        tag_ttl: config.registry.tag_ttl,
        max_manifest_bytes: RegistryOptions::default().max_manifest_bytes,
        clock: clock.clone(),
    };
    Some(Proxy::new(options, Arc::clone(client)))
}
