//! Pure routing: method + path → a typed `Route`, or the spec error for a bad name, tag or
//! digest. No I/O. Names are matched from the end of the path, because a repository name may
//! itself contain components such as `manifests` or `blobs`.
//!
//! A manifest reference that is neither a tag nor a digest names nothing: GET, HEAD and DELETE
//! answer 404 `MANIFEST_UNKNOWN` (the OCI conformance suite's `.INVALID_MANIFEST_NAME`; Debian's
//! distribution 2.8 answers 404 too, its route does not match), a PUT 400 (issue 14 §3).

use super::error::{ApiError, OciCode};
use super::names::{Digest, Name, NameError, Reference};
use crate::http::percent_decode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// `GET /v2/`
    Base,
    /// `GET /v2/_catalog`
    Catalog,
    /// `GET /token` (and the OAuth2 `POST /token`): Bearer tokens for the Docker auth flow.
    Token,
    Manifest {
        name: Name,
        reference: Reference,
    },
    Blob {
        name: Name,
        digest: Digest,
    },
    /// `POST /v2/<name>/blobs/uploads/`
    UploadStart {
        name: Name,
    },
    Upload {
        name: Name,
        id: String,
    },
    Tags {
        name: Name,
    },
    Referrers {
        name: Name,
        digest: Digest,
    },
    /// The admin API behind `glci registry list|stats|clean`, under [`ADMIN_PREFIX`] (outside
    /// `/v2/`); the admin credential only.
    Admin(AdminRoute),
}

/// Where the admin API lives.
pub const ADMIN_PREFIX: &str = "/glci/admin/v1/";

/// The admin endpoints. Query parameters (`project`, `dry_run`, `grace`) are read by
/// `api/admin.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /glci/admin/v1/list[?project=P]`
    List,
    /// `GET /glci/admin/v1/stats`
    Stats,
    /// `POST /glci/admin/v1/clean[?project=P][&dry_run=true][&grace=SECONDS]`
    Clean,
}

impl AdminRoute {
    /// The request path, e.g. `/glci/admin/v1/list`.
    pub fn path(self) -> String {
        let last = match self {
            AdminRoute::List => "list",
            AdminRoute::Stats => "stats",
            AdminRoute::Clean => "clean",
        };
        format!("{ADMIN_PREFIX}{last}")
    }
}

/// What a route does, for authorization and logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Route {
    pub fn name(&self) -> Option<&Name> {
        match self {
            Route::Base | Route::Catalog | Route::Token | Route::Admin(_) => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

impl Method {
    pub fn parse(method: &str) -> Option<Method> {
        Some(match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    pub fn action(self) -> Action {
        match self {
            Method::Get | Method::Head => Action::Pull,
            Method::Put | Method::Post | Method::Patch => Action::Push,
            Method::Delete => Action::Delete,
        }
    }
}

/// Parses the request target into a route and checks that the method is one the route has.
pub fn parse(method: &str, path: &str) -> Result<(Method, Route), ApiError> {
    let route = parse_path(method, path)?;
    let method = Method::parse(method)
        .ok_or_else(|| ApiError::new(OciCode::Unsupported, format!("method {method} is not supported")))?;
    let allowed: &[Method] = match route {
        Route::Base | Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => &[Method::Get, Method::Head],
        Route::Token => &[Method::Get, Method::Post],
        Route::Manifest { .. } => &[Method::Get, Method::Head, Method::Put, Method::Delete],
        Route::Blob { .. } => &[Method::Get, Method::Head, Method::Delete],
        Route::UploadStart { .. } => &[Method::Post],
        Route::Upload { .. } => &[Method::Get, Method::Patch, Method::Put, Method::Delete],
        Route::Admin(AdminRoute::List | AdminRoute::Stats) => &[Method::Get],
        Route::Admin(AdminRoute::Clean) => &[Method::Post],
    };
    if !allowed.contains(&method) {
        return Err(
            ApiError::new(OciCode::Unsupported, format!("{method:?} is not allowed on this endpoint")).with_status(405)
        );
    }
    Ok((method, route))
}

fn not_found() -> ApiError {
    ApiError::new(OciCode::Unsupported, "no such endpoint").with_status(404)
}

/// The error for a manifest reference that is not a tag or a digest: only a PUT is told that
/// the reference itself is wrong; for a read or delete it is a manifest that is not there.
fn bad_reference(method: &str, name: &Name, reference: &str, error: NameError) -> ApiError {
    match method {
        "GET" | "HEAD" | "DELETE" => ApiError::new(
            OciCode::ManifestUnknown,
            format!("manifest {:?} is unknown to {name}: {error}", reference.escape_debug().to_string()),
        ),
        _ => error.into(),
    }
}

fn parse_path(method: &str, path: &str) -> Result<Route, ApiError> {
    if path == "/token" || path == "/token/" {
        return Ok(Route::Token);
    }
    if let Some(rest) = path.strip_prefix(ADMIN_PREFIX) {
        return match rest {
            "list" => Ok(Route::Admin(AdminRoute::List)),
            "stats" => Ok(Route::Admin(AdminRoute::Stats)),
            "clean" => Ok(Route::Admin(AdminRoute::Clean)),
            _ => Err(not_found()),
        };
    }
    let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Base);
    }
    let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segments: Vec<String> = rest.split('/').map(|s| percent_decode(s, false)).collect();
    let n = segments.len();
    let seg = |i: usize| segments[i].as_str();
    let name_of = |end: usize| -> Result<Name, ApiError> {
        if end == 0 {
            return Err(not_found());
        }
        Ok(segments[..end].join("/").parse::<Name>()?)
    };
    if n >= 3 && seg(n - 3) == "blobs" && seg(n - 2) == "uploads" {
        let name = name_of(n - 3)?;
        let id = seg(n - 1);
        if id.is_empty() {
            return Ok(Route::UploadStart { name });
        }
        return Ok(Route::Upload { name, id: id.to_string() });
    }
    if n >= 2 && seg(n - 2) == "blobs" && seg(n - 1) == "uploads" {
        return Ok(Route::UploadStart { name: name_of(n - 2)? });
    }
    if n >= 3 && seg(n - 2) == "tags" && seg(n - 1) == "list" {
        return Ok(Route::Tags { name: name_of(n - 2)? });
    }
    if n >= 2 {
        let last = seg(n - 1);
        match seg(n - 2) {
            "manifests" => {
                let name = name_of(n - 2)?;
                let reference = last.parse().map_err(|e| bad_reference(method, &name, last, e))?;
                return Ok(Route::Manifest { name, reference });
            }
            "blobs" => {
                let name = name_of(n - 2)?;
                return Ok(Route::Blob { name, digest: last.parse()? });
            }
            "referrers" => {
                let name = name_of(n - 2)?;
                return Ok(Route::Referrers { name, digest: last.parse()? });
            }
            _ => {}
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn route(method: &str, path: &str) -> Result<Route, ApiError> {
        parse(method, path).map(|(_, r)| r)
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/v2/").unwrap(), Route::Base);
        assert_eq!(route("GET", "/v2").unwrap(), Route::Base);
        assert_eq!(route("GET", "/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(route("GET", "/token").unwrap(), Route::Token);
        assert!(
            matches!(route("GET", "/v2/a/b/manifests/latest").unwrap(), Route::Manifest { name, .. } if name.as_str() == "a/b")
        );
        assert!(
            matches!(route("GET", "/v2/x/manifests/manifests/v1").unwrap(), Route::Manifest { name, .. } if name.as_str() == "x/manifests")
        );
        assert!(matches!(route("GET", &format!("/v2/a/blobs/{D}")).unwrap(), Route::Blob { .. }));
        assert!(matches!(route("GET", &format!("/v2/a/blobs/{}", D.replace(':', "%3A"))).unwrap(), Route::Blob { .. }));
        assert!(matches!(route("POST", "/v2/a/blobs/uploads/").unwrap(), Route::UploadStart { .. }));
        assert!(matches!(route("POST", "/v2/a/blobs/uploads").unwrap(), Route::UploadStart { .. }));
        assert!(matches!(route("PATCH", "/v2/a/blobs/uploads/abc").unwrap(), Route::Upload { id, .. } if id == "abc"));
        assert!(matches!(route("GET", "/v2/a/tags/list").unwrap(), Route::Tags { .. }));
        assert!(matches!(route("GET", &format!("/v2/a/referrers/{D}")).unwrap(), Route::Referrers { .. }));
        assert_eq!(route("GET", "/glci/admin/v1/list").unwrap(), Route::Admin(AdminRoute::List));
        assert_eq!(route("GET", "/glci/admin/v1/stats").unwrap(), Route::Admin(AdminRoute::Stats));
        assert_eq!(route("POST", &AdminRoute::Clean.path()).unwrap(), Route::Admin(AdminRoute::Clean));
        assert_eq!(route("GET", "/glci/admin/v1/clean").unwrap_err().status, 405);
        assert_eq!(route("GET", "/glci/admin/v1/nope").unwrap_err().status, 404);
    }

    #[test]
    fn errors() {
        assert_eq!(route("GET", "/v2/A/manifests/x").unwrap_err().code, OciCode::NameInvalid);
        assert_eq!(route("GET", "/v2/../manifests/x").unwrap_err().code, OciCode::NameInvalid);
        assert_eq!(route("GET", "/v2/a%2F..%2Fb/manifests/x").unwrap_err().code, OciCode::NameInvalid);
        assert_eq!(route("PUT", "/v2/a/manifests/-bad").unwrap_err().code, OciCode::ManifestInvalid);
        assert_eq!(route("PUT", "/v2/a/manifests/sha256:zz").unwrap_err().code, OciCode::DigestInvalid);
        assert_eq!(route("POST", "/v2/a/manifests/.x").unwrap_err().code, OciCode::ManifestInvalid);
        for method in ["GET", "HEAD", "DELETE"] {
            for reference in [".INVALID_MANIFEST_NAME", "-bad", "sha256:zz", "md5:abc", &"t".repeat(129)] {
                let e = route(method, &format!("/v2/a/manifests/{reference}")).unwrap_err();
                assert_eq!((e.status, e.code), (404, OciCode::ManifestUnknown), "{method} {reference}");
            }
        }
        assert_eq!(route("GET", "/v2/A/manifests/.bad").unwrap_err().code, OciCode::NameInvalid);
        assert_eq!(route("GET", "/v2/a/blobs/sha256:zz").unwrap_err().code, OciCode::DigestInvalid);
        assert_eq!(route("GET", "/v2/a/blobs/md5:abc").unwrap_err().code, OciCode::DigestInvalid);
        assert_eq!(route("GET", "/v3/").unwrap_err().status, 404);
        assert_eq!(route("GET", "/v2/a/nothing").unwrap_err().status, 404);
        assert_eq!(route("GET", "/v2/manifests/x").unwrap_err().status, 404);
        assert_eq!(route("POST", "/v2/a/manifests/x").unwrap_err().status, 405);
        assert_eq!(route("BREW", "/v2/").unwrap_err().code, OciCode::Unsupported);
    }
}
