//! The admin API behind `glci registry list | stats | clean` (routes under
//! `routes::ADMIN_PREFIX`, admin credential only, checked in `Registry::authorize`). Each
//! handler reads its query, calls `usage` or `gc` on the live store, and answers the report as
//! JSON: the same document `--json` prints (README "Managing the registry").

use std::time::Duration;

use crate::http::{Request, Response};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::gc::{self, CleanOptions};
use crate::registry::names::Name;
use crate::registry::routes::AdminRoute;
use crate::registry::storage::Store;
use crate::registry::uploads::Uploads;
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

/// The filesystem store: `list`, `stats` and `clean` do not work on S3 yet.
fn filesystem(registry: &Registry) -> Result<(&Store, &Uploads), ApiError> {
    match (registry.store.filesystem(), registry.uploads.filesystem()) {
        (Some(store), Some(uploads)) => Ok((store, uploads)),
        _ => Err(ApiError::new(
            OciCode::Unsupported,
            format!("glci registry list, stats and clean are not supported on {} yet", registry.store.describe()),
        )
        .with_status(501)),
    }
}

fn list(registry: &Registry, request: &Request<'_>) -> Result<Response, ApiError> {
    let project = project(request)?;
    let inventory = filesystem(registry)?.0.inventory()?;
    json(&usage::list(&inventory, project.as_ref()))
}

fn stats(registry: &Registry) -> Result<Response, ApiError> {
    let inventory = filesystem(registry)?.0.inventory()?;
    json(&usage::stats(&inventory))
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
    let (store, uploads) = filesystem(registry)?;
    let report = gc::clean(store, uploads, &options, &mut |_| {})?;
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
