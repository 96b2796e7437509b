//! Loading documents into the knowledge base and keeping the vector index and the SQL store in
//! step. The store is the record of what is indexed (with each file's content hash), so:
//! - re-ingesting an unchanged file does nothing;
//! - a changed file replaces its chunks (index first, then the store record, so a crash in between
//!   leaves a hash mismatch that the next sync repairs);
//! - if the index and the store disagree (say the index directory was deleted), the index is
//!   rebuilt from the chunks the store holds, without re-reading any file.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::assets::sha256_hex;
use crate::index::{IndexError, IndexedChunk, VectorIndex};
use crate::knowledge::chunking::ChunkingOptions;
use crate::knowledge::loaders::{self, LoadError};
use crate::knowledge::retrieval::{embedding_views, keyword_text};
use crate::model::Document;
use crate::nlp::encoder::{EncoderError, EncoderPool};
use crate::nlp::keywords::KeywordEncoder;
use crate::store::{DocumentSummary, Store, StoreError};

/// Source names of documents uploaded over HTTP start with this, so a folder sync never removes
/// them for being absent from the folder.
pub const UPLOAD_PREFIX: &str = "upload/";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("embedding failed: {0}")]
    Encoder(#[from] EncoderError),
    #[error("vector index: {0}")]
    Index(#[from] IndexError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Added,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IngestOutcome {
    pub document_id: String,
    pub source: String,
    pub title: String,
    pub chunks: usize,
    pub status: IngestStatus,
}

/// What a folder sync did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
    /// Files that could not be loaded, with the reason; the rest of the folder is still synced.
    pub failed: Vec<(String, String)>,
    /// Chunks re-indexed because the index had lost them.
    pub reindexed_chunks: usize,
}

#[derive(Clone)]
pub struct KnowledgeBase {
    store: Arc<dyn Store>,
    index: Arc<dyn VectorIndex>,
    encoder: EncoderPool,
    keywords: Arc<KeywordEncoder>,
    chunking: ChunkingOptions,
}

impl KnowledgeBase {
    pub fn new(
        store: Arc<dyn Store>,
        index: Arc<dyn VectorIndex>,
        encoder: EncoderPool,
        chunking: ChunkingOptions,
    ) -> Self {
        Self {
            store,
            index,
            encoder,
            keywords: Arc::new(KeywordEncoder::default()),
            chunking,
        }
    }

    /// Ingest one file's bytes under a source name (a path relative to the knowledge folder, or
    /// `upload/NAME`).
    pub async fn ingest_bytes(
        &self,
        source: &str,
        bytes: &[u8],
    ) -> Result<IngestOutcome, IngestError> {
        let content_hash = sha256_hex(bytes);
        let existing = self.store.find_document_by_source(source).await?;
        if let Some(existing) = &existing {
            if existing.content_hash == content_hash {
                return Ok(IngestOutcome {
                    document_id: existing.id.clone(),
                    source: existing.source.clone(),
                    title: existing.title.clone(),
                    chunks: existing.chunk_count as usize,
                    status: IngestStatus::Unchanged,
                });
            }
        }
        let document = loaders::load_document(source, bytes, &self.chunking)?;
        self.index_document(&document).await?;
        self.store.upsert_document(&document).await?;
        tracing::info!(source, chunks = document.chunks.len(), "ingested document");
        Ok(IngestOutcome {
            document_id: document.id.clone(),
            source: document.source.clone(),
            title: document.title.clone(),
            chunks: document.chunks.len(),
            status: if existing.is_some() {
                IngestStatus::Updated
            } else {
                IngestStatus::Added
            },
        })
    }

    /// Replace a document's chunks in the index.
    async fn index_document(&self, document: &Document) -> Result<(), IngestError> {
        // All views of all chunks in one encoder call, then dealt back to their chunks.
        let views: Vec<Vec<String>> = document.chunks.iter().map(embedding_views).collect();
        let texts: Vec<String> = views.iter().flatten().cloned().collect();
        let mut embeddings = self.encoder.embed_many(texts).await?.into_iter();
        let indexed: Vec<IndexedChunk> = document
            .chunks
            .iter()
            .zip(&views)
            .map(|(chunk, chunk_views)| IndexedChunk {
                sparse: self.keywords.document_vector(&keyword_text(chunk)),
                chunk: chunk.clone(),
                dense_views: embeddings.by_ref().take(chunk_views.len()).collect(),
            })
            .collect();
        self.index.delete_document(&document.id).await?;
        self.index.upsert(indexed).await?;
        Ok(())
    }

    /// Bring the knowledge base in line with a folder: new and changed files are (re)ingested,
    /// documents whose file is gone are removed, unchanged files are not re-embedded. A file that
    /// fails to load is reported and skipped; it does not stop the sync.
    pub async fn sync_folder(&self, dir: &Path) -> Result<SyncReport, IngestError> {
        let mut report = SyncReport {
            reindexed_chunks: self.repair_index().await?,
            ..SyncReport::default()
        };
        let files = loaders::discover_files(dir)?;
        let mut present = HashSet::new();
        for (path, source) in files {
            present.insert(source.clone());
            let bytes = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(err) => {
                    report.failed.push((source, err.to_string()));
                    continue;
                }
            };
            match self.ingest_bytes(&source, &bytes).await {
                Ok(outcome) => match outcome.status {
                    IngestStatus::Added => report.added.push(source),
                    IngestStatus::Updated => report.updated.push(source),
                    IngestStatus::Unchanged => report.unchanged += 1,
                },
                Err(IngestError::Load(err)) => {
                    tracing::warn!(%source, error = %err, "skipping a knowledge file that could not be loaded");
                    report.failed.push((source, err.to_string()));
                }
                Err(other) => return Err(other),
            }
        }
        for document in self.store.list_documents().await? {
            if !document.source.starts_with(UPLOAD_PREFIX) && !present.contains(&document.source) {
                self.remove(&document.id).await?;
                report.removed.push(document.source);
            }
        }
        self.index.flush().await?;
        Ok(report)
    }

    /// Remove a document (by id or source) and its chunks. False when there was none.
    pub async fn remove(&self, id_or_source: &str) -> Result<bool, IngestError> {
        let id = match self.store.find_document_by_source(id_or_source).await? {
            Some(document) => document.id,
            None => id_or_source.to_string(),
        };
        self.index.delete_document(&id).await?;
        let removed = self.store.delete_document(&id).await?;
        self.index.flush().await?;
        Ok(removed)
    }

    pub async fn list(&self) -> Result<Vec<DocumentSummary>, IngestError> {
        Ok(self.store.list_documents().await?)
    }

    /// When the index holds a different number of chunks than the store says it should, or was
    /// embedded by another encoder model than the one running (embeddings of two models are not
    /// comparable), rebuild it from the store. Returns the number of chunks re-indexed.
    pub async fn repair_index(&self) -> Result<usize, IngestError> {
        let documents = self.store.list_documents().await?;
        let expected: i64 = documents.iter().map(|d| d.chunk_count).sum();
        let actual = self.index.count().await? as i64;
        let running = self.encoder.model_digest();
        let recorded = self.store.index_encoder().await?;
        let same_encoder = recorded.as_deref() == Some(running);
        if expected == actual && same_encoder {
            return Ok(0);
        }
        if !same_encoder && expected > 0 {
            tracing::warn!(
                recorded = recorded.as_deref().unwrap_or("unrecorded"),
                running,
                "the encoder model changed since the index was built; re-embedding the knowledge base"
            );
        } else if expected != actual {
            tracing::warn!(
                expected,
                actual,
                "vector index out of step with the store; re-indexing"
            );
        }
        let mut reindexed = 0;
        for summary in documents {
            if let Some(document) = self.store.get_document(&summary.id).await? {
                self.index_document(&document).await?;
                reindexed += document.chunks.len();
            }
        }
        self.index.flush().await?;
        // Recorded only once every document is embedded: an interrupted rebuild starts again.
        self.store.set_index_encoder(running).await?;
        Ok(reindexed)
    }
}
