//! The registry: one `handle(Request) -> Response` over the store and upload sessions.
//! Routing is pure (`routes`), handlers are short (`api/*`), errors map once (`error`).
//! Headers every response carries are added here, in one place.

pub mod api;
pub mod error;
pub mod manifest;
pub mod names;
pub mod routes;
pub mod storage;
pub mod uploads;

use std::time::Duration;

use crate::http::{Handler, Request, Response};
use error::ApiError;
use routes::{Method, Route};
use storage::{Layout, Store, StoreError};
use uploads::Uploads;

pub const API_VERSION_HEADER: &str = "Docker-Distribution-API-Version";
pub const API_VERSION: &str = "registry/2.0";
pub const DIGEST_HEADER: &str = "Docker-Content-Digest";

#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Largest manifest accepted on PUT; larger ones get 413.
    pub max_manifest_bytes: u64,
    /// Upload sessions untouched this long are removed.
    pub upload_expiry: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions { max_manifest_bytes: 8 * 1024 * 1024, upload_expiry: Duration::from_secs(24 * 3600) }
    }
}

pub struct Registry {
    pub store: Store,
    pub uploads: Uploads,
    pub options: RegistryOptions,
}

impl Registry {
    pub fn open(root: &std::path::Path, options: RegistryOptions) -> Result<Registry, StoreError> {
        let layout = Layout::new(root);
        let store = Store::open(layout.clone())?;
        Ok(Registry { store, uploads: Uploads::new(layout), options })
    }

    fn dispatch(&self, request: &mut Request<'_>) -> Result<Response, ApiError> {
        let (method, route) = routes::parse(&request.method, &request.path)?;
        match (method, route) {
            (_, Route::Base) => Ok(Response::json(200, &serde_json::json!({}))),
            (_, Route::Catalog) => api::listing::catalog(self, request),
            (_, Route::Tags { name }) => api::listing::tags(self, request, &name),
            (_, Route::Referrers { name, digest }) => api::listing::referrers(self, request, &name, &digest),
            (Method::Get | Method::Head, Route::Manifest { name, reference }) => {
                api::manifests::get(self, &name, &reference)
            }
            (Method::Put, Route::Manifest { name, reference }) => api::manifests::put(self, request, &name, &reference),
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
