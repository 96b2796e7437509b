//! Shared models at the bottom of the house: what the knowledge base, the vector index and the
//! store all speak about, with no dependency on any of them.

pub mod document;

pub use document::{Chunk, Document, DocumentKind};
