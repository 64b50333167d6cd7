//! `/token`: the Docker token flow. `GET` with optional Basic credentials (docker, skopeo,
//! crane) and the OAuth2 `POST` form (containerd/BuildKit try it first). Grants the
//! intersection of the scopes asked and allowed; bad credentials are a 401.

use std::io::Read;
use std::time::SystemTime;

use serde_json::json;

use crate::auth::{self, parse_scope, Identity, ACCESS_TOKEN_TTL};
use crate::http::{percent_decode, Request, Response};
use crate::registry::error::{ApiError, OciCode};
use crate::registry::Registry;

const MAX_FORM_BYTES: u64 = 64 * 1024;

pub fn issue(registry: &Registry, request: &mut Request<'_>) -> Result<Response, ApiError> {
    let Some(auth) = &registry.auth else {
        // Open mode: any token works, since none is checked.
        return Ok(token_response("anonymous".to_string(), ACCESS_TOKEN_TTL.as_secs()));
    };
    let now = registry.options.clock.now();
    let (identity, scopes) = if request.method == "POST" {
        let form = read_form(request)?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let identity = match field("grant_type").as_deref() {
            Some("password") => {
                let password = field("password").unwrap_or_default();
                auth.verify(&password, now).map(Identity::Token).map_err(unauthorized)?
            }
            _ => {
                return Err(
                    ApiError::new(OciCode::Unsupported, "only grant_type=password is supported").with_status(400)
                )
            }
        };
        let scopes: Vec<auth::Access> =
            form.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| split_scopes(v)).collect();
        (identity, scopes)
    } else {
        let identity = auth.identify(request.header("Authorization"), now).map_err(unauthorized)?;
        let scopes: Vec<auth::Access> = request.query_params("scope").iter().flat_map(|s| split_scopes(s)).collect();
        (identity, scopes)
    };
    let grant = auth.grant(&identity, &scopes, now);
    Ok(token_response(grant.token, grant.expires_in))
}

/// Several scopes may come space-separated in one parameter.
fn split_scopes(value: &str) -> Vec<auth::Access> {
    value.split(' ').filter_map(parse_scope).collect()
}

fn unauthorized(e: auth::AuthError) -> ApiError {
    ApiError::new(OciCode::Unauthorized, e.to_string())
        .with_header("WWW-Authenticate", format!("Basic realm=\"{}\"", crate::registry::SERVICE))
}

fn token_response(token: String, expires_in: u64) -> Response {
    Response::json(
        200,
        &json!({
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": crate::encoding::rfc3339(SystemTime::now()),
        }),
    )
}

fn read_form(request: &mut Request<'_>) -> Result<Vec<(String, String)>, ApiError> {
    let mut body = Vec::new();
    request
        .body
        .take(MAX_FORM_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(OciCode::Unsupported, format!("could not read the form: {e}")).with_status(400))?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect())
}
