//! `glci registry …`: credentials for the embedded registry (`token`, `login`), and what it
//! holds: `list`, `stats`, `clean` (through the server's admin API, or `--storage DIR`, see
//! `admin.rs`) and `pull` (an image from the registry into the host's Docker, under the name a
//! CI job uses). Flags → options → library call → `output.rs`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::admin::{server_address, AdminClient, Backend};
use super::output::{self, print_json, Progress};
use super::{print_stdout, CliError};
use crate::auth::{Auth, Claims, ADMIN_USER};
use crate::config::{glci_home, parse_duration, process_env, Config};
use crate::registry::gc::CleanOptions;
use crate::registry::names::{Name, Reference, Tag};
use crate::secret::Secret;

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Print a job token for a project (what a pipeline job gets as CI_REGISTRY_PASSWORD).
    Token(TokenArgs),
    /// Log the host's Docker into the embedded registry with the admin credential.
    Login(LoginArgs),
    /// List the images the registry holds: repository, tag, digest, size, pushed or cached, age.
    List(ListArgs),
    /// Show counts, bytes (pushed, cached per upstream, saved by dedup), uploads, free space.
    Stats(StatsArgs),
    /// Pull IMAGE (e.g. registry.gitlab.com/group/project/app:latest) from the local registry
    /// into the host's Docker, tagged IMAGE, or PREFIX/group/project/app:latest.
    Pull(PullArgs),
    /// Remove every tag and manifest of the repositories (all, or --project's), whatever their
    /// age, then delete blobs nothing references. Safe while pushes run: unreferenced blobs,
    /// layer links and upload sessions younger than --grace stay.
    Clean(CleanArgs),
}

/// Where the registry is: a running server (default) or a storage directory.
#[derive(Args, Debug)]
pub struct Location {
    /// Address of the running glci server [default: 127.0.0.1:<mock_server_port>].
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// Work on this storage directory directly, without a server (refused while one runs on
    /// it), or on an S3 bucket, s3://BUCKET[/PREFIX] ([storage.s3] settings; servers may share it).
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]", conflicts_with = "server")]
    pub storage: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this project path and everything under it, e.g. group/project.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Print JSON (exact bytes, RFC 3339 times) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print JSON (exact bytes) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image as a CI job names it, e.g. registry.gitlab.com/group/project/app:latest.
    pub image: String,
    /// Tag it PREFIX/group/project/app:latest instead of IMAGE.
    pub prefix: Option<String>,
    /// Address of the running glci server [default: 127.0.0.1:<mock_server_port>].
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Only remove this project path and everything under it (blobs are collected globally).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced blobs, layer links, upload sessions and temp files written or used
    /// more recently than this (0 when nothing is pushing). The default is
    /// `registry::gc::DEFAULT_GRACE`.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Project path the token may push under, e.g. group/project.
    #[arg(long)]
    pub project: String,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Mirror this token's pushes to the upstream registry.
    #[arg(long)]
    pub push_through: bool,
    #[arg(long, default_value_t = 0)]
    pub pipeline: u64,
    #[arg(long, default_value_t = 0)]
    pub job: u64,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry address (default: 127.0.0.1:<mock_server_port>).
    #[arg(long)]
    pub server: Option<String>,
    /// Print the admin password instead of running `docker login` (user: glci-admin).
    #[arg(long)]
    pub print: bool,
    /// Lifetime of the admin credential.
    #[arg(long, default_value = "30d")]
    pub ttl: String,
}

fn ttl(flag: &str, value: &str) -> Result<Duration, CliError> {
    parse_duration(value).map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

fn load_auth(config: &Config) -> Result<Auth, CliError> {
    Auth::load_or_create(&glci_home(&process_env), config.registry.anonymous_pull)
        .map_err(|e| CliError::Failed(e.to_string()))
}

fn project(flag: Option<&str>) -> Result<Option<Name>, CliError> {
    flag.map(|p| p.trim_matches('/').parse::<Name>().map_err(|e| CliError::Usage(format!("--project {p}: {e}"))))
        .transpose()
}

fn grace(value: &str) -> Result<Duration, CliError> {
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(value).map_err(|e| CliError::Usage(format!("--grace: {e} (or 0)")))
}

fn backend(location: Location, config: &Config) -> Result<Backend, CliError> {
    Backend::open(location.server.as_deref(), location.storage.as_deref(), config)
}

fn list(args: ListArgs, config: &Config) -> Result<(), CliError> {
    let project = project(args.project.as_deref())?;
    let backend = backend(args.location, config)?;
    let report = Progress::around("listing", || backend.list(project.as_ref()))?;
    if args.json {
        return print_json(&report);
    }
    print_stdout(&output::list_table(&report, SystemTime::now()));
    Ok(())
}

fn stats(args: StatsArgs, config: &Config) -> Result<(), CliError> {
    let backend = backend(args.location, config)?;
    let report = Progress::around("counting", || backend.stats())?;
    if args.json {
        return print_json(&report);
    }
    print_stdout(&output::stats_text(&report));
    Ok(())
}

fn clean(args: CleanArgs, config: &Config) -> Result<(), CliError> {
    let options =
        CleanOptions { project: project(args.project.as_deref())?, grace: grace(&args.grace)?, dry_run: args.dry_run };
    let backend = backend(args.location, config)?;
    let report = if backend.is_server() {
        Progress::around("cleaning", || backend.clean(&options, &mut |_| {}))?
    } else {
        let mut line = Progress::stderr();
        let report = backend.clean(&options, &mut |p| {
            if p.total > 0 {
                line.update(&format!("clean: {} {}/{}", p.phase, p.done, p.total));
            } else {
                line.update(&format!("clean: {}…", p.phase));
            }
        });
        line.finish();
        report?
    };
    if args.json {
        return print_json(&report);
    }
    print_stdout(&output::clean_text_report(&report));
    Ok(())
}

/// An image name as a CI job writes it, mapped onto the local registry (pure).
#[derive(Debug, PartialEq, Eq)]
pub struct PullTarget {
    /// The repository in the local registry: the name without its registry host.
    pub name: Name,
    pub tag: Tag,
    /// What the pulled image is tagged as in the host's Docker.
    pub target: String,
}

/// `registry.gitlab.com/group/project/app:1` → repository `group/project/app`, tag `1`. The
/// first component is dropped when it names a registry host, as docker decides: it holds a
/// `.` or a `:`, or is `localhost`, and more components follow. No tag means `latest`. The
/// image is tagged IMAGE (with `:latest` added when it had no tag), or
/// `PREFIX/group/project/app:1` when a prefix is given.
pub fn pull_target(image: &str, prefix: Option<&str>) -> Result<PullTarget, String> {
    if image.contains('@') {
        return Err(format!("{image}: pull names a tag, not a digest"));
    }
    let (path, tag) = match image.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (image, "latest"),
    };
    let path = match path.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
        _ => path,
    };
    let name: Name = path.parse().map_err(|e| format!("{image}: {e}"))?;
    let tag: Tag = tag.parse().map_err(|e| format!("{image}: {e}"))?;
    let target = match prefix.map(|p| p.trim_end_matches('/')).filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{prefix}/{name}:{tag}"),
        None if image.ends_with(&format!(":{tag}")) => image.to_string(),
        None => format!("{image}:{tag}"),
    };
    Ok(PullTarget { name, tag, target })
}

fn pull(args: PullArgs, config: &Config) -> Result<(), CliError> {
    let wanted = pull_target(&args.image, args.prefix.as_deref()).map_err(CliError::Usage)?;
    let client = AdminClient::new(server_address(args.server.as_deref(), config)?, config)?;
    let reference = Reference::Tag(wanted.tag.clone());
    let Some(digest) = client.manifest_digest(&wanted.name, &wanted.tag)? else {
        return Err(CliError::Failed(format!(
            "{}: the registry at {} holds no {}:{} (see `glci registry list`)",
            args.image,
            client.address(),
            wanted.name,
            wanted.tag
        )));
    };
    let source = format!("{}/{}:{reference}", client.address(), wanted.name);
    let docker_failed = |e: crate::docker::DockerError| CliError::Failed(e.to_string());
    Progress::around(&format!("pulling {source}"), || crate::docker::pull(&source)).map_err(docker_failed)?;
    if wanted.target != source {
        crate::docker::tag(&source, &wanted.target).map_err(docker_failed)?;
        crate::docker::untag(&source).map_err(docker_failed)?;
    }
    print_stdout(&format!("pulled {} ({digest})\n", wanted.target));
    Ok(())
}

pub fn run(command: RegistryCommand, config: &Config) -> Result<(), CliError> {
    match command {
        RegistryCommand::List(args) => list(args, config),
        RegistryCommand::Stats(args) => stats(args, config),
        RegistryCommand::Pull(args) => pull(args, config),
        RegistryCommand::Clean(args) => clean(args, config),
        RegistryCommand::Token(args) => {
            let project: Name = args.project.parse().map_err(|e| CliError::Usage(format!("--project: {e}")))?;
            let ttl = ttl("--ttl", &args.ttl)?;
            // `[registry] push_through = true` makes it the default (DESIGN §8).
            let push_through = args.push_through || config.registry.push_through;
            let claims = Claims::job(project.as_str(), args.pipeline, args.job, push_through, ttl, SystemTime::now());
            print_stdout(&format!("{}\n", load_auth(config)?.sign(&claims)));
            Ok(())
        }
        RegistryCommand::Login(args) => {
            let ttl = ttl("--ttl", &args.ttl)?;
            let password = Secret::new(load_auth(config)?.sign(&Claims::admin(ttl, SystemTime::now())));
            if args.print {
                print_stdout(&format!("{}\n", password.expose()));
                return Ok(());
            }
            let server = args.server.unwrap_or_else(|| format!("127.0.0.1:{}", config.mock_server_port));
            crate::docker::login(&server, ADMIN_USER, &password).map_err(|e| CliError::Failed(e.to_string()))?;
            print_stdout(&format!("logged in to {server} as {ADMIN_USER}\n"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(image: &str, prefix: Option<&str>) -> (String, String, String) {
        let t = pull_target(image, prefix).unwrap();
        (t.name.to_string(), t.tag.to_string(), t.target)
    }

    #[test]
    fn pull_names_map_onto_the_local_registry() {
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            target("registry.gitlab.com/group/project/app:latest", None),
            s("group/project/app", "latest", "registry.gitlab.com/group/project/app:latest")
        );
        assert_eq!(
            target("registry.gitlab.com/group/project/app:1.2", Some("mirror.local/")),
            s("group/project/app", "1.2", "mirror.local/group/project/app:1.2")
        );
        assert_eq!(target("localhost:5000/a/b", None), s("a/b", "latest", "localhost:5000/a/b:latest"));
        assert_eq!(target("localhost/a", None), s("a", "latest", "localhost/a:latest"));
        // No host component: the path is the repository.
        assert_eq!(target("group/app:v1", None), s("group/app", "v1", "group/app:v1"));
        assert_eq!(target("alpine", Some("x")), s("alpine", "latest", "x/alpine:latest"));
        assert!(pull_target("registry.gitlab.com/g/app@sha256:abc", None).is_err());
        assert!(pull_target("registry.gitlab.com/G/App:1", None).is_err());
        assert!(pull_target("registry.gitlab.com/g/app:-bad", None).is_err());
    }
}
