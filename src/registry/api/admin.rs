//! The admin API behind `glci registry list | stats | clean` (routes under
//! `routes::ADMIN_PREFIX`, admin credential only, checked in `Registry::authorize`). Each
//! handler reads its query, calls `usage` or `gc` on the live store, and answers the report as
//! JSON: the same document `--json` prints (README "Managing the registry").

use std::time::Duration;

use crate::http::{Request, Response};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::gc::{self, CleanOptions, CleanReport};
use crate::registry::names::Name;
use crate::registry::routes::AdminRoute;
use crate::registry::s3::S3Store;
use crate::registry::storage::Inventory;
use crate::registry::{usage, Registry};

pub fn handle(registry: &Registry, request: &Request<'_>, route: AdminRoute) -> Result<Response, ApiError> {
    match route {
        AdminRoute::List => list(registry, request),
        AdminRoute::Stats => stats(registry),
        AdminRoute::Clean => clean(registry, request),
    }
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(OciCode::Unsupported, message).with_status(400)
}

fn project(request: &Request<'_>) -> Result<Option<Name>, ApiError> {
    match request.query_param("project").filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => Ok(Some(p.trim_matches('/').parse::<Name>()?)),
    }
}

fn json(value: &impl serde::Serialize) -> Result<Response, ApiError> {
    let value = serde_json::to_value(value).map_err(|e| ApiError::internal("admin report", &e))?;
    Ok(Response::json(200, &value))
}

fn s3(registry: &Registry) -> Option<&S3Store> {
    registry.store.as_any().and_then(|any| any.downcast_ref::<S3Store>())
}

/// What the store holds, on either backend.
fn inventory(registry: &Registry) -> Result<Inventory, ApiError> {
    if let Some(s3) = s3(registry) {
        return Ok(s3.inventory()?);
    }
    match registry.store.filesystem() {
        Some(store) => Ok(store.inventory()?),
        None => Err(unsupported(registry)),
    }
}

fn unsupported(registry: &Registry) -> ApiError {
    ApiError::new(
        OciCode::Unsupported,
        format!("glci registry list, stats and clean are not supported on {}", registry.store.describe()),
    )
    .with_status(501)
}

fn list(registry: &Registry, request: &Request<'_>) -> Result<Response, ApiError> {
    let project = project(request)?;
    json(&usage::list(&inventory(registry)?, project.as_ref()))
}

fn stats(registry: &Registry) -> Result<Response, ApiError> {
    json(&usage::stats(&inventory(registry)?))
}

/// The clean of the store the registry runs on.
fn run_clean(registry: &Registry, options: &CleanOptions) -> Result<CleanReport, ApiError> {
    if let Some(s3) = s3(registry) {
        return Ok(gc::clean_s3(s3, registry.uploads.as_ref(), options, &mut |_| {})?);
    }
    match (registry.store.filesystem(), registry.uploads.filesystem()) {
        (Some(store), Some(uploads)) => Ok(gc::clean(store, uploads, options, &mut |_| {})?),
        _ => Err(unsupported(registry)),
    }
}

fn clean(registry: &Registry, request: &Request<'_>) -> Result<Response, ApiError> {
    let dry_run = match request.query_param("dry_run").as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => return Err(bad_query(format!("dry_run must be true or false, not {other:?}"))),
    };
    let grace = match request.query_param("grace") {
        None => gc::DEFAULT_GRACE,
        Some(secs) => Duration::from_secs(
            secs.parse::<u64>().map_err(|_| bad_query(format!("grace must be a number of seconds, not {secs:?}")))?,
        ),
    };
    let options = CleanOptions { project: project(request)?, grace, dry_run };
    let report = run_clean(registry, &options)?;
    crate::log::info(
        "clean",
        &format!(
            "dry_run={} repositories={} tags={} manifests={} blobs={} bytes={}",
            report.dry_run,
            report.repositories_removed.len(),
            report.tags_removed,
            report.manifests_removed,
            report.blobs_removed,
            report.bytes_reclaimed
        ),
    );
    json(&report)
}
