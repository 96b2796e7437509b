//! Knowledge base: turning files into documents and chunks (`loaders`, `chunking`), keeping the
//! vector index and the store in step (`ingest`), and finding the chunks that answer a customer's
//! question (`retrieval`). The document and chunk types live in `model`.

pub mod chunking;
pub mod ingest;
pub mod loaders;
pub mod retrieval;
