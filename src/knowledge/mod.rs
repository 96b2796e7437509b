//! Knowledge base: turning files into documents and chunks (`loaders`, `chunking`), keeping the
//! vector index and the store in step (`ingest`), and finding the chunks that answer a customer's
//! question (`keywords`, `retrieval`).

pub mod chunk;
pub mod chunking;
pub mod ingest;
pub mod keywords;
pub mod loaders;
pub mod retrieval;

pub use chunk::{Chunk, Document, DocumentKind};
