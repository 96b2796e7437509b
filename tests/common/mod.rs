//! Helpers shared by the integration tests. Each test binary compiles this module on its own and
//! uses only part of it, hence the `dead_code` allowances in the submodules.

pub mod app;
pub mod backends;
pub mod cluster;
pub mod human;
pub mod llm;
pub mod pg;
pub mod qdrant;
pub mod ws;
