//! glci runs a project's `.gitlab-ci.yml` locally in Docker and gives its jobs an embedded OCI
//! registry (shared/DESIGN.md).
//!
//! # Brief overview
//!
//! The request path of `glci serve`:
//!
//! ```text
//! http::listener (accept → channel → workers) → http::conn (parse head, stream body)
//!   → registry::Registry::handle → registry::routes::parse (pure) → registry::api::* handlers
//!   → registry::storage (temp + hash + fsync + rename) / registry::uploads (sessions on disk)
//!   → registry::error::ApiError (spec codes → status + JSON) → http::conn writes the response
//! ```
//!
//! Floors: pure parsers (`registry::names`, `registry::routes`, `registry::manifest`, `config`)
//! and I/O owners (`registry::storage`, `registry::uploads`, `http`) at the bottom; the registry
//! services above them; `cli` on top. Calls go down or sideways. Nothing below `cli` prints to
//! stdout or exits the process.

pub mod auth;
pub mod cli;
pub mod config;
pub mod docker;
pub mod git;
pub mod http;
pub mod log;
pub mod mock;
pub mod pipeline;
pub mod registry;
pub mod secret;
pub mod tls;
