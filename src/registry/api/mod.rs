//! Request handlers by endpoint family. Each is `fn(&Registry, typed args…) -> Result<Response,
//! ApiError>` and reads like a row of the spec's endpoint table.

pub mod admin;
pub mod blobs;
pub mod listing;
pub mod manifests;
pub mod token;
pub mod uploads;
