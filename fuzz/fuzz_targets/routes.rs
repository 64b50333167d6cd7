//! The route parser (`registry::routes::parse`) and the name grammar (`registry::names`).
//! Input: `METHOD PATH`. Invariants: no panic; an accepted route holds names, tags and
//! digests that are themselves valid and path-safe, and the canonical path of the route
//! parses back to the same route.

#![no_main]

use glci::registry::names::{Digest, Name, Reference, Tag};
use glci::registry::routes::{self, AdminRoute, Route};
use libfuzzer_sys::fuzz_target;

fn check_name(name: &Name) {
    let s = name.as_str();
    assert!(!s.is_empty() && s.len() <= glci::registry::names::MAX_NAME_LEN, "{s:?}");
    assert_eq!(s.parse::<Name>().as_ref(), Ok(name));
    for c in name.components() {
        assert!(!c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\\', '\0']), "{s:?}");
    }
}

fn check_reference(reference: &Reference) {
    let s = reference.to_string();
    assert_eq!(s.parse::<Reference>().as_ref(), Ok(reference));
    if let Reference::Tag(t) = reference {
        assert!(!t.as_str().contains(['/', '\0']) && !t.as_str().starts_with('.'), "{s:?}");
    }
}

/// The path a client would send for `route` (upload ids are echoed back encoded).
fn render(route: &Route) -> String {
    match route {
        Route::Base => "/v2/".to_string(),
        Route::Catalog => "/v2/_catalog".to_string(),
        Route::Token => "/token".to_string(),
        Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
        Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
        Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
        Route::Upload { name, id } => format!("/v2/{name}/blobs/uploads/{}", encode(id)),
        Route::Tags { name } => format!("/v2/{name}/tags/list"),
        Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
        Route::Admin(admin) => admin.path(),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, path) = text.split_once(' ').unwrap_or(("GET", &text));

    // The name grammar on its own.
    if let Ok(name) = path.parse::<Name>() {
        assert_eq!(name.as_str(), path);
        check_name(&name);
    }
    if let Ok(tag) = path.parse::<Tag>() {
        assert_eq!(tag.as_str(), path);
        assert!(path.len() <= 128 && !path.contains(['/', ':']));
    }
    if let Ok(reference) = path.parse::<Reference>() {
        assert_eq!(reference.to_string(), path);
        check_reference(&reference);
    }
    if let Ok(digest) = path.parse::<Digest>() {
        assert_eq!(digest.to_string(), path);
    }

    let Ok((parsed_method, route)) = routes::parse(method, path) else { return };
    assert!(path.starts_with("/v2") || path.starts_with("/token") || path.starts_with(routes::ADMIN_PREFIX));
    if let Some(name) = route.name() {
        check_name(name);
    }
    match &route {
        Route::Manifest { reference, .. } => check_reference(reference),
        Route::Admin(a) => assert!(matches!(a, AdminRoute::List | AdminRoute::Stats | AdminRoute::Clean)),
        _ => {}
    }
    let again = routes::parse(method, &render(&route));
    assert_eq!(again.as_ref().ok(), Some(&(parsed_method, route.clone())), "{path:?} -> {}", render(&route));
});
