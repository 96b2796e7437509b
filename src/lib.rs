//! Baton: an AI-first support bot with human handoff.
//!
//! The binary (`src/main.rs`) is a thin shell over this library. Read the modules in this order:
//! `model` (documents and chunks) -> `config` -> `assets` -> `nlp` (encoder, intents, classifier,
//! keywords) -> `knowledge` (loaders, chunking,
//! ingestion, retrieval) -> `index` (vector store trait; Qdrant Edge and a Qdrant server) -> `store` (SQL
//! persistence) -> `policy` (decisions) -> `privacy` (masking) -> `engine` (one customer turn,
//! end to end) -> `handoff` (the human side) -> `cluster` (several instances on PostgreSQL) ->
//! `state` (what the server serves from) -> `http` (axum API) -> `app` (assembly, background
//! work) -> `cli`, `eval`, `bench`.

pub mod answer;
pub mod app;
pub mod assets;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod eval;
pub mod handoff;
pub mod http;
pub mod index;
pub mod knowledge;
pub mod limits;
pub mod loadtest;
pub mod metrics;
pub mod model;
pub mod nlp;
pub mod policy;
pub mod privacy;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod templates;
#[cfg(test)]
mod test_support;
