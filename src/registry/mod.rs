//! The registry: one `handle(Request) -> Response` over the store and upload sessions, either
//! on the filesystem (`storage`, `uploads`) or in an S3 bucket (`s3`), behind `backend`'s traits.
//! Routing is pure (`routes`), handlers are short (`api/*`), errors map once (`error`).
//! Headers every response carries are added here, in one place.

pub mod api;
pub mod backend;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod mirror;
pub mod names;
pub mod proxy;
pub mod routes;
pub mod s3;
pub mod storage;
pub mod uploads;
pub mod usage;

use std::time::Duration;

use crate::auth::{Auth, Claims, Decision, Identity};
use crate::clock::Clock;
use crate::http::{Handler, Request, Response};
use backend::{Storage, UploadSessions};
use error::{ApiError, OciCode};
use routes::{Action, Method, Route};
use storage::{Layout, Store, StoreError};
use uploads::Uploads;

pub const API_VERSION_HEADER: &str = "Docker-Distribution-API-Version";
pub const API_VERSION: &str = "registry/2.0";
pub const DIGEST_HEADER: &str = "Docker-Content-Digest";
/// The `service` of our Bearer challenge.
pub const SERVICE: &str = "glci";

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
    }
}

#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Largest manifest accepted on PUT; larger ones get 413.
    pub max_manifest_bytes: u64,
    /// Upload sessions untouched this long are removed.
    pub upload_expiry: Duration,
    /// "Now" for token expiry (tests move it: `clock`).
    pub clock: Clock,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            max_manifest_bytes: 8 * 1024 * 1024,
            upload_expiry: Duration::from_secs(24 * 3600),
            clock: Clock::system(),
        }
    }
}

pub struct Registry {
    /// The filesystem store, or S3 (`backend`).
    pub store: Box<dyn Storage>,
    pub uploads: Box<dyn UploadSessions>,
    pub options: RegistryOptions,
    /// `None` with `glci serve --no-auth`: everyone may do everything.
    pub auth: Option<Auth>,
    /// The pull-through cache; `None` when no upstream is configured.
    pub proxy: Option<proxy::Proxy>,
    /// Push-through, for tokens that ask for it.
    pub mirror: Option<mirror::Mirror>,
}

impl Registry {
    pub fn open(root: &std::path::Path, options: RegistryOptions) -> Result<Registry, StoreError> {
        let layout = Layout::new(root);
        let store = Store::open(layout.clone())?;
        Ok(Registry::on(Box::new(store), Box::new(Uploads::new(layout)), options))
    }

    /// A registry on any backend (`backend::Storage`), e.g. an `s3::S3Store`.
    pub fn on(store: Box<dyn Storage>, uploads: Box<dyn UploadSessions>, options: RegistryOptions) -> Registry {
        Registry { store, uploads, options, auth: None, proxy: None, mirror: None }
    }

    pub fn with_auth(mut self, auth: Auth) -> Registry {
        self.auth = Some(auth);
        self
    }

    pub fn with_mirror(mut self, mirror: mirror::Mirror) -> Registry {
        self.mirror = Some(mirror);
        self
    }

    pub fn with_proxy(mut self, proxy: proxy::Proxy) -> Registry {
        self.proxy = Some(proxy);
        self
    }

    /// The one authorization check, before any handler runs (DESIGN §6).
    fn authorize(&self, request: &Request<'_>, method: Method, route: &Route) -> Result<Identity, ApiError> {
        let Some(auth) = &self.auth else {
            return Ok(Identity::Token(Claims::admin(Duration::ZERO, self.options.clock.now())));
        };
        if *route == Route::Token {
            // `/token` checks the credentials it is given itself.
            return Ok(Identity::Anonymous);
        }
        let challenge = |scope: Option<String>| {
            // The Host header is the client's: only a plain host[:port] goes into the header.
            let host = request
                .header("Host")
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
                .unwrap_or("localhost");
            let mut value = format!("Bearer realm=\"{}://{host}/token\",service=\"{SERVICE}\"", request.scheme);
            if let Some(scope) = scope {
                value.push_str(&format!(",scope=\"{scope}\""));
            }
            value
        };
        let name = route.name().map(|n| n.as_str().to_string());
        let action = method.action();
        let scope = match (&name, route) {
            (Some(n), _) => Some(format!("repository:{n}:{}", action_word(action))),
            (None, Route::Catalog) => Some("registry:catalog:*".to_string()),
            _ => None,
        };
        let identity = match auth.identify(request.header("Authorization"), self.options.clock.now()) {
            Ok(identity) => identity,
            Err(e) => {
                return Err(ApiError::new(OciCode::Unauthorized, e.to_string())
                    .with_header("WWW-Authenticate", challenge(scope)))
            }
        };
        // The admin API (`glci registry list|stats|clean`): the admin credential only.
        if matches!(route, Route::Admin(_)) {
            if identity.is_admin() {
                return Ok(identity);
            }
            if identity == Identity::Anonymous {
                return Err(ApiError::new(OciCode::Unauthorized, "the admin API needs the admin credential")
                    .with_header("WWW-Authenticate", challenge(None)));
            }
            return Err(ApiError::new(OciCode::Denied, "only the admin credential may use the admin API"));
        }
        let decision = match route {
            // `/v2/` tells clients whether and how to authenticate: anonymous is asked to.
            Route::Base if identity == Identity::Anonymous => Decision::Challenge,
            Route::Base => Decision::Allow,
            _ => auth.decide(&identity, name.as_deref(), action),
        };
        match decision {
            Decision::Allow => Ok(identity),
            Decision::Challenge => Err(ApiError::new(OciCode::Unauthorized, "authentication required")
                .with_header("WWW-Authenticate", challenge(scope))),
            Decision::Deny => Err(ApiError::new(
                OciCode::Denied,
                format!(
                    "these credentials may not {} {}",
                    action_word(action),
                    name.as_deref().unwrap_or("the catalog")
                ),
            )),
        }
    }

    fn dispatch(&self, request: &mut Request<'_>) -> Result<Response, ApiError> {
        let (method, route) = routes::parse(&request.method, &request.path)?;
        let identity = self.authorize(request, method, &route)?;
        match (method, route) {
            (_, Route::Token) => api::token::issue(self, request),
            (_, Route::Base) => Ok(Response::json(200, &serde_json::json!({}))),
            (_, Route::Catalog) => api::listing::catalog(self, request),
            (_, Route::Tags { name }) => api::listing::tags(self, request, &name),
            (_, Route::Referrers { name, digest }) => api::listing::referrers(self, request, &name, &digest),
            (Method::Get | Method::Head, Route::Manifest { name, reference }) => {
                api::manifests::get(self, request, &name, &reference)
            }
            (Method::Put, Route::Manifest { name, reference }) => {
                api::manifests::put(self, request, &identity, &name, &reference)
            }
            (_, Route::Manifest { name, reference }) => api::manifests::delete(self, &name, &reference),
            (Method::Get | Method::Head, Route::Blob { name, digest }) => {
                api::blobs::get(self, request, &name, &digest)
            }
            (_, Route::Blob { name, digest }) => api::blobs::delete(self, &name, &digest),
            (_, Route::UploadStart { name }) => api::uploads::start(self, request, &name),
            (Method::Get, Route::Upload { name, id }) => api::uploads::status(self, &name, &id),
            (Method::Patch, Route::Upload { name, id }) => api::uploads::patch(self, request, &name, &id),
            (Method::Put, Route::Upload { name, id }) => api::uploads::put(self, request, &name, &id),
            (_, Route::Upload { name, id }) => api::uploads::cancel(self, &name, &id),
            (_, Route::Admin(route)) => api::admin::handle(self, request, route),
        }
    }
}

impl Handler for Registry {
    fn handle(&self, request: &mut Request<'_>) -> Response {
        let mut response = self.dispatch(request).unwrap_or_else(ApiError::into_response);
        response.headers.push((API_VERSION_HEADER.to_string(), API_VERSION.to_string()));
        response
    }
}
