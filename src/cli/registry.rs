//! `glci registry …`: credentials for the embedded registry (`token`, `login`).

use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::{print_stdout, CliError};
use crate::auth::{Auth, Claims, ADMIN_USER};
use crate::config::{glci_home, parse_duration, process_env, Config};
use crate::registry::names::Name;
use crate::secret::Secret;

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Print a job token for a project (what a pipeline job gets as CI_REGISTRY_PASSWORD).
    Token(TokenArgs),
    /// Log the host's Docker into the embedded registry with the admin credential.
    Login(LoginArgs),
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

pub fn run(command: RegistryCommand, config: &Config) -> Result<(), CliError> {
    match command {
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
