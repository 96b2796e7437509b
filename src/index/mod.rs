//! The vector index behind retrieval: a small trait so Qdrant Edge (in-process, the default) and a
//! Qdrant server (`qdrant-client`, for scale-out) are two implementations of the same contract.
//!
//! The index stores, per chunk, a dense embedding and a sparse keyword vector, plus the chunk itself
//! as payload so a search needs no second lookup. Fusion of dense and keyword results happens above
//! the index (in `knowledge::retrieval`), so every backend only has to do plain nearest-neighbour
//! and sparse dot-product search.

pub mod edge;
pub mod server;

use async_trait::async_trait;

use crate::model::Chunk;

/// Name of the dense (embedding) vector, in every backend's layout.
pub const DENSE_VECTOR: &str = "dense";
/// Name of the sparse (keyword) vector, in every backend's layout.
pub const KEYWORD_VECTOR: &str = "keywords";
/// Payload key holding the chunk's document id; it comes from `Chunk::document_id`.
pub(crate) const DOCUMENT_ID_KEY: &str = "document_id";

/// A sparse keyword vector: term ids (hashed tokens) and their weights. The index applies IDF.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// One chunk ready to be indexed.
#[derive(Debug, Clone)]
pub struct IndexedChunk {
    pub chunk: Chunk,
    /// One or more L2-normalised dense embeddings ("views") of the chunk, e.g. an FAQ entry's
    /// question alone and its question with the answer. Dense search scores a chunk by its best
    /// view (MaxSim), so a customer's question can match either.
    pub dense_views: Vec<Vec<f32>>,
    pub sparse: SparseVector,
}

/// A search result: the chunk and its score (cosine similarity for dense search, BM25-like score
/// for sparse search).
#[derive(Debug, Clone)]
pub struct ScoredChunk {
    pub chunk: Chunk,
    pub score: f32,
}

/// A search result without its chunk: the chunk id and its score. Retrieval ranks candidates by
/// id and reads only the chunks it keeps (`VectorIndex::chunks`): reading and decoding the
/// payloads of 40 candidates to keep 5 was half of the retrieval time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredId {
    pub chunk_id: String,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector index at {path} could not be opened: {reason}")]
    Open { path: String, reason: String },
    /// A vector (or, when opening, the requested embedding size) does not match the index.
    #[error("vector index has dimension {expected}, but {got} was given")]
    Dimension { expected: usize, got: usize },
    /// A chunk the caller asked to index cannot be stored (e.g. its id is not a UUID).
    #[error("chunk {chunk_id} cannot be indexed: {reason}")]
    InvalidChunk { chunk_id: String, reason: String },
    /// A search query is malformed (e.g. duplicate sparse term ids).
    #[error("invalid vector index query: {0}")]
    InvalidQuery(String),
    #[error("vector index operation failed: {0}")]
    Backend(String),
}

/// The contract every vector backend implements. Implementations are cheap to share (`Arc`), and
/// every method may be called concurrently.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Insert or replace chunks (by chunk id).
    async fn upsert(&self, chunks: Vec<IndexedChunk>) -> Result<(), IndexError>;
    /// Remove every chunk of a document. Removing an unknown document is not an error.
    async fn delete_document(&self, document_id: &str) -> Result<(), IndexError>;
    /// Top `limit` chunk ids by cosine similarity to `query` (already L2-normalised), best
    /// first; a chunk's score is the best among its views.
    async fn nearest_dense(&self, query: &[f32], limit: usize)
        -> Result<Vec<ScoredId>, IndexError>;
    /// Top `limit` chunk ids by sparse (keyword) score, best first. Chunks sharing no term are
    /// absent.
    async fn nearest_sparse(
        &self,
        query: &SparseVector,
        limit: usize,
    ) -> Result<Vec<ScoredId>, IndexError>;
    /// The chunks with these ids, in the order asked; ids not (or no longer) stored are left out.
    async fn chunks(&self, ids: &[String]) -> Result<Vec<Chunk>, IndexError>;
    /// [`VectorIndex::nearest_dense`] with the chunks read.
    async fn search_dense(
        &self,
        query: &[f32],
        limit: usize,
    ) -> Result<Vec<ScoredChunk>, IndexError> {
        let nearest = self.nearest_dense(query, limit).await?;
        with_chunks(self, nearest).await
    }
    /// [`VectorIndex::nearest_sparse`] with the chunks read.
    async fn search_sparse(
        &self,
        query: &SparseVector,
        limit: usize,
    ) -> Result<Vec<ScoredChunk>, IndexError> {
        let nearest = self.nearest_sparse(query, limit).await?;
        with_chunks(self, nearest).await
    }
    /// Number of chunks stored.
    async fn count(&self) -> Result<usize, IndexError>;
    /// Make everything written so far durable.
    async fn flush(&self) -> Result<(), IndexError>;
}

/// Pairs scored ids with their chunks; a chunk deleted between the search and the read is left
/// out rather than failing the search.
async fn with_chunks<I: VectorIndex + ?Sized>(
    index: &I,
    scored: Vec<ScoredId>,
) -> Result<Vec<ScoredChunk>, IndexError> {
    let ids: Vec<String> = scored.iter().map(|hit| hit.chunk_id.clone()).collect();
    let mut chunks = chunks_by_id(index, &ids).await?;
    Ok(scored
        .into_iter()
        .filter_map(|hit| {
            chunks.remove(&hit.chunk_id).map(|chunk| ScoredChunk {
                chunk,
                score: hit.score,
            })
        })
        .collect())
}

/// The chunks with these ids (as search results carry them), keyed by that id; a chunk no
/// longer stored is absent.
pub(crate) async fn chunks_by_id<I: VectorIndex + ?Sized>(
    index: &I,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Chunk>, IndexError> {
    Ok(index
        .chunks(ids)
        .await?
        .into_iter()
        .map(|chunk| (canonical_chunk_id(&chunk.id), chunk))
        .collect())
}

/// A chunk id as backends report it in search results: the point id, a UUID in its hyphenated
/// lower-case form (a chunk's own id may be written another way that parses to the same UUID).
pub(crate) fn canonical_chunk_id(id: &str) -> String {
    uuid::Uuid::parse_str(id)
        .map(|uuid| uuid.to_string())
        .unwrap_or_else(|_| id.to_string())
}

/// The checks every backend makes on a chunk before writing it, so a bad chunk gets the same typed
/// error whatever the backend and a batch can be rejected whole before anything is written.
/// Returns the chunk id as a UUID (the point id in Qdrant).
pub(crate) fn check_indexed_chunk(
    indexed: &IndexedChunk,
    dimension: usize,
) -> Result<uuid::Uuid, IndexError> {
    let invalid = |reason: String| IndexError::InvalidChunk {
        chunk_id: indexed.chunk.id.clone(),
        reason,
    };
    if indexed.dense_views.is_empty() {
        return Err(invalid("the chunk has no dense vector".into()));
    }
    for view in &indexed.dense_views {
        if view.len() != dimension {
            return Err(IndexError::Dimension {
                expected: dimension,
                got: view.len(),
            });
        }
        if view.iter().any(|value| !value.is_finite()) {
            return Err(invalid(
                "the dense vector contains a NaN or infinite value".into(),
            ));
        }
    }
    check_sparse(&indexed.sparse).map_err(invalid)?;
    uuid::Uuid::parse_str(&indexed.chunk.id)
        .map_err(|err| invalid(format!("the chunk id is not a UUID: {err}")))
}

/// The checks every backend makes on a dense query.
pub(crate) fn check_dense_query(query: &[f32], dimension: usize) -> Result<(), IndexError> {
    if query.len() != dimension {
        return Err(IndexError::Dimension {
            expected: dimension,
            got: query.len(),
        });
    }
    if query.iter().any(|value| !value.is_finite()) {
        return Err(IndexError::InvalidQuery(
            "the dense query contains a NaN or infinite value".into(),
        ));
    }
    Ok(())
}

/// A sparse vector Qdrant accepts: as many weights as term ids, finite weights, no term twice.
/// The error is a reader-facing reason.
pub(crate) fn check_sparse(sparse: &SparseVector) -> Result<(), String> {
    if sparse.indices.len() != sparse.values.len() {
        return Err(format!(
            "invalid sparse vector: {} term ids but {} weights",
            sparse.indices.len(),
            sparse.values.len()
        ));
    }
    if sparse.values.iter().any(|value| !value.is_finite()) {
        return Err("the sparse vector contains a NaN or infinite weight".into());
    }
    let mut seen = std::collections::HashSet::with_capacity(sparse.indices.len());
    if let Some(duplicate) = sparse.indices.iter().find(|term| !seen.insert(**term)) {
        return Err(format!(
            "invalid sparse vector: term id {duplicate} appears more than once"
        ));
    }
    Ok(())
}

/// The payload stored with a chunk's point: the whole chunk as a JSON object, so its
/// `document_id` is a top-level key (indexed as a keyword for `delete_document`) and a search
/// needs no second lookup.
pub(crate) fn chunk_payload(
    chunk: &Chunk,
) -> Result<serde_json::Map<String, serde_json::Value>, IndexError> {
    let invalid = |reason: String| IndexError::InvalidChunk {
        chunk_id: chunk.id.clone(),
        reason,
    };
    match serde_json::to_value(chunk) {
        Ok(serde_json::Value::Object(fields)) => Ok(fields),
        Ok(other) => Err(invalid(format!(
            "the chunk does not serialise to a JSON object but to {other}"
        ))),
        Err(err) => Err(invalid(format!("the chunk does not serialise: {err}"))),
    }
}
