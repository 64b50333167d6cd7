//! glci runs a project's `.gitlab-ci.yml` locally in Docker and gives its jobs an embedded OCI
//! registry (shared/DESIGN.md).
//!
//! # Brief overview
//!
//! The request path of `glci serve`:
//!
//! ```text
//! http::listener (accept → http::idle: poll, TLS handshake, request head → channel → workers)
//!   → http::conn (parse head, stream body)
//!   → registry::Registry::handle → registry::routes::parse (pure) → registry::api::* handlers
//!   → registry::backend (Storage / UploadSessions traits) → registry::storage (temp + hash +
//!     fsync + rename) and registry::uploads (sessions on disk), or registry::s3 (a shared bucket)
//!   → registry::error::ApiError (spec codes → status + JSON) → http::conn writes the response
//! ```
//!
//! `authorize` (`auth`) runs once per request before any handler; a miss may go to
//! `registry::proxy` (pull-through: `upstream` HTTP, `fetch` single-flight streaming) and a
//! manifest PUT by a push-through job to `registry::mirror`, both on either backend through
//! `registry::backend`; `registry::gc` reclaims space.
//!
//! The path of `glci run`:
//!
//! ```text
//! pipeline::parse (.gitlab-ci.yml → model, errors with file:line:key; rules expressions;
//!   remote includes fetched by `gitlab` through the fetcher `cli` hands it)
//!   → pipeline::plan (variables, rules and `changes`, job selection, DAG; pipeline::downstream plans
//!   child and multi-project pipelines into their trigger jobs) → pipeline::execute (containers
//!   through `docker`, artifacts, logs) with pipeline::wiring (CI_REGISTRY*, CA, DinD/BuildKit,
//!   DOCKER_AUTH_CONFIG) and `mock` (the glci-mock registry container)
//! ```
//!
//! Floors, from the ground up:
//! - ground: `encoding` (hex, base64, RFC 3339), `durable` (temp + write + fsync + rename),
//!   `secret`, `log`, `clock` (the server's "now", which tests move);
//! - pure parsers: `registry::names`, `registry::routes`, `registry::manifest`,
//!   `pipeline::parse`, `pipeline::rules`, `pipeline::plan`; and `config` (the schema and its
//!   reader; also the one reader of the process environment, `config::process_env`);
//! - I/O owners: `registry::storage`, `registry::uploads`, `registry::s3`, `http`, `tls`,
//!   `docker`, `git`, `gitlab`;
//! - services: registry api, `auth`, proxy, mirror, gc, execute, `mock`;
//! - `cli` on top.
//!
//! Calls go down or sideways. Nothing below `cli` prints to stdout or exits the process.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod docker;
pub mod durable;
pub mod encoding;
pub mod git;
pub mod gitlab;
pub mod http;
pub mod log;
pub mod mock;
pub mod pipeline;
pub mod registry;
pub mod secret;
pub mod tls;
