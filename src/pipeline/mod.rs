//! Pipelines: `.gitlab-ci.yml` → model (`parse`, with `rules` expressions; `changes` clauses) → an ordered plan of
//! jobs (`plan`; with child pipelines: `downstream`) → containers (`execute`), whose
//! caches (`cache_store`) and kept artifacts (`artifact_store`) live under `$GLCI_HOME`.

pub mod artifact_store;
pub mod cache;
pub mod cache_store;
pub mod changes;
pub mod decide;
pub mod dotenv;
pub mod downstream;
pub mod error;
pub mod event_format;
pub mod execute;
pub mod facts;
pub mod glob;
pub mod image_files;
pub mod model;
pub mod parse;
pub mod plan;
pub mod predefined;
pub mod rules;
pub mod variables;
pub mod wiring;
