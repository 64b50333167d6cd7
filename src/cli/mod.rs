//! The command line: clap types and the one match that calls a function per subcommand.

pub mod admin;
pub mod cache;
pub mod composed;
pub mod config;
pub mod downstream;
pub mod error;
pub mod output;
pub mod registry;
pub mod run;
pub mod serve;
pub mod sources;
pub mod storage;

use std::io::Write;

use clap::{Parser, Subcommand};

pub use error::CliError;
pub use output::print_stdout;

#[derive(Parser, Debug)]
#[command(name = "glci", version, about = "Run .gitlab-ci.yml pipelines locally, with an embedded OCI registry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
// One value per process, parsed once: boxing `RunArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the pipeline of .gitlab-ci.yml (or the jobs named) in Docker containers.
    Run(Box<run::RunArgs>),
    /// Run the registry server in the foreground.
    Serve(serve::ServeArgs),
    /// Work with the embedded registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Print the effective configuration, secrets masked.
    Config,
    /// The caches `cache:` keeps under $GLCI_HOME/cache: list, clear.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "glci: error: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let config = crate::config::Config::load_from_process_env()?;
    match cli.command {
        Command::Run(args) => run::run(*args, &config),
        Command::Serve(args) => serve::run(args, &config),
        Command::Registry(command) => registry::run(command, &config),
        Command::Cache(command) => cache::run(command),
        Command::Config => {
            print_stdout(&config::run(&config));
            Ok(())
        }
    }
}
