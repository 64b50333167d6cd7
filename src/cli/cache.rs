//! `glci cache list [--project P] [--json]` and `glci cache clear [--project P] [KEY]`: what
//! `cache:` keeps under `$GLCI_HOME/cache` (`pipeline::cache_store`). Flags → store → output.

use std::time::SystemTime;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{age, human_bytes, print_json};
use super::{print_stdout, CliError};
use crate::config::{glci_home, process_env};
use crate::encoding::rfc3339;
use crate::pipeline::cache_store::{self, CacheStore, StoredCache};

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List the caches jobs saved: project, key, size, last used.
    List(ListArgs),
    /// Remove the caches of --project (all of them, or KEY), or of every project.
    Clear(ClearArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this project path (group/project).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Print JSON (exact bytes, RFC 3339 times) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ClearArgs {
    /// Only this project path (group/project); needed with KEY.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only this cache key.
    #[arg(value_name = "KEY", requires = "project")]
    pub key: Option<String>,
}

#[derive(Serialize)]
struct Row {
    project: String,
    key: String,
    size: u64,
    last_used: String,
}

pub fn run(command: CacheCommand) -> Result<(), CliError> {
    let root = cache_store::root(&glci_home(&process_env));
    match command {
        CacheCommand::List(args) => {
            let caches = match &args.project {
                Some(project) => CacheStore::new(&root, project).list(),
                None => cache_store::list_all(&root),
            };
            if args.json {
                let rows: Vec<Row> = caches
                    .into_iter()
                    .map(|c| Row { project: c.project, key: c.key, size: c.size, last_used: rfc3339(c.last_used) })
                    .collect();
                return print_json(&rows);
            }
            print_stdout(&table(&caches, SystemTime::now()));
            Ok(())
        }
        CacheCommand::Clear(args) => {
            let removed = match &args.project {
                Some(project) => CacheStore::new(&root, project)
                    .clear(args.key.as_deref())
                    .map_err(|e| CliError::Failed(format!("clearing the caches of {project}: {e}")))?,
                None => {
                    let count = cache_store::list_all(&root).len();
                    match std::fs::remove_dir_all(&root) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(CliError::Failed(format!("clearing {}: {e}", root.display())))
                        }
                        _ => count,
                    }
                }
            };
            print_stdout(&format!("removed {removed} cache{}\n", if removed == 1 { "" } else { "s" }));
            Ok(())
        }
    }
}

fn table(caches: &[StoredCache], now: SystemTime) -> String {
    if caches.is_empty() {
        return "no caches\n".to_string();
    }
    let rows: Vec<[String; 4]> = caches
        .iter()
        .map(|c| [c.project.clone(), c.key.clone(), human_bytes(c.size), age(now, c.last_used, &rfc3339(c.last_used))])
        .collect();
    let headers = ["PROJECT", "KEY", "SIZE", "LAST USED"];
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", text.join("  ").trim_end())
    };
    let mut out = line(&headers.map(String::from));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}
