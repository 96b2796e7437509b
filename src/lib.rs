//! Baton: an AI-first support bot with human handoff.
//!
//! The binary (`src/main.rs`) is a thin shell over this library. Read the modules bottom-up, as
//! the layers run (tests/house.rs checks that imports only run down them):
//! `model` (documents, chunks, conversations), `cpu` (where CPU-bound work runs) -> `assets`,
//! `privacy` (masking) -> `index` (vector index trait; Qdrant Edge and a Qdrant server), `metrics`
//! -> `nlp` (encoder, intents, classifier, frustration, keywords) -> `store` (SQL persistence) ->
//! `knowledge` (loaders, chunking, ingestion, retrieval) -> `config` -> `limits`, `telemetry`,
//! `templates` -> `bot` (one customer turn: understanding, policy, reply) -> `handoff` (the human
//! side) -> `cluster` (several instances on PostgreSQL) -> `state` (what the server serves from)
//! -> `http` (axum: translation only) -> `app` (assembly, background work) -> `tools` (eval,
//! bench, loadtest: apart from the product) -> `cli`.

pub mod app;
pub mod assets;
pub mod bot;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cpu;
pub mod handoff;
pub mod http;
pub mod index;
pub mod knowledge;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod nlp;
pub mod privacy;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod templates;
#[cfg(test)]
mod test_support;
pub mod tools;
