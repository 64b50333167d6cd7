//! Pipelines: `.gitlab-ci.yml` → model (`parse`, with `rules` expressions; `changes` clauses) → an ordered plan of
//! jobs (`plan`) → containers (`execute`).

pub mod cache;
pub mod cache_store;
pub mod changes;
pub mod decide;
pub mod dotenv;
pub mod error;
pub mod execute;
pub mod glob;
pub mod image_files;
pub mod model;
pub mod output;
pub mod parse;
pub mod plan;
pub mod predefined;
pub mod rules;
pub mod variables;
pub mod wiring;
