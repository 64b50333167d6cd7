//! The listing endpoints: `/v2/_catalog`, tags list and referrers, with `n`/`last` pagination
//! and `Link` headers where the spec has them.

use serde_json::json;

use crate::http::{percent_encode, Request, Response};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::manifest::OCI_INDEX;
use crate::registry::names::{Digest, Name};
use crate::registry::Registry;

/// One page of a sorted list: entries after `last`, at most `n`. True when more follow.
/// A binary search finds the start, so a page costs its own entries only.
pub fn paginate(items: &[String], n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let first = last.map_or(0, |last| items.partition_point(|i| i.as_str() <= last));
    let rest = &items[first..];
    match n {
        Some(n) if rest.len() > n => (rest[..n].to_vec(), true),
        _ => (rest.to_vec(), false),
    }
}

fn page_params(request: &Request<'_>) -> Result<(Option<usize>, Option<String>), ApiError> {
    let n = match request.query_param("n") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::new(OciCode::Unsupported, format!("n must be a non-negative integer, not {v:?}")).with_status(400)
        })?),
    };
    Ok((n, request.query_param("last").filter(|l| !l.is_empty())))
}

fn with_link(response: Response, base: &str, n: Option<usize>, page: &[String], more: bool) -> Response {
    match (more, n, page.last()) {
        (true, Some(n), Some(last)) => {
            response.header("Link", format!("<{base}?n={n}&last={}>; rel=\"next\"", percent_encode(last)))
        }
        _ => response,
    }
}

pub fn catalog(registry: &Registry, request: &Request<'_>) -> Result<Response, ApiError> {
    let (n, last) = page_params(request)?;
    let (page, more) = paginate(&registry.store.repositories()?, n, last.as_deref());
    let response = Response::json(200, &json!({ "repositories": page }));
    Ok(with_link(response, "/v2/_catalog", n, &page, more))
}

pub fn tags(registry: &Registry, request: &Request<'_>, name: &Name) -> Result<Response, ApiError> {
    let (n, last) = page_params(request)?;
    let Some((page, more)) = registry.store.tags_page(name, last.as_deref(), n)? else {
        return Err(ApiError::new(OciCode::NameUnknown, format!("repository {name} is unknown")));
    };
    let response = Response::json(200, &json!({ "name": name.as_str(), "tags": page }));
    Ok(with_link(response, &format!("/v2/{name}/tags/list"), n, &page, more))
}

pub fn referrers(
    registry: &Registry,
    request: &Request<'_>,
    name: &Name,
    subject: &Digest,
) -> Result<Response, ApiError> {
    let mut manifests = registry.store.referrers(name, subject)?;
    let filters = request.query_params("artifactType");
    let mut response = Response::new(200);
    if !filters.is_empty() {
        manifests.retain(|d| d["artifactType"].as_str().is_some_and(|t| filters.iter().any(|f| f == t)));
        response = response.header("OCI-Filters-Applied", "artifactType");
    }
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::internal("referrers", &e))?;
    Ok(response.header("Content-Type", OCI_INDEX).body(crate::http::Body::Bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = v(&["a", "b", "c", "d"]);
        assert_eq!(paginate(&all, None, None), (all.clone(), false));
        assert_eq!(paginate(&all, Some(2), None), (v(&["a", "b"]), true));
        assert_eq!(paginate(&all, Some(2), Some("b")), (v(&["c", "d"]), false));
        assert_eq!(paginate(&all, Some(0), None), (v(&[]), true));
        assert_eq!(paginate(&all, None, Some("bb")), (v(&["c", "d"]), false));
        assert_eq!(paginate(&all, Some(10), Some("d")), (v(&[]), false));
    }
}
