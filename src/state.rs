//! What the server serves from: the opened parts (`Components`) and the services built on them
//! (`AppState`), with the errors of starting up. `app` assembles them from the settings and runs
//! the background work; `http` only reads them. Kept apart from `app` so that `http` sits below
//! it: nothing imports upward.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::assets::{AssetError, ModelFiles};
use crate::bot::Engine;
use crate::cluster::{Cluster, ClusterError};
use crate::config::Settings;
use crate::handoff::HandoffService;
use crate::index::{IndexError, VectorIndex};
use crate::knowledge::ingest::{IngestError, IngestOutcome, KnowledgeBase, SyncReport};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::nlp::encoder::{EncoderError, EncoderPool};
use crate::nlp::intent_model::IntentModelError;
use crate::store::{HandoffStore, Store, StoreError};
use crate::templates::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Assets(#[from] AssetError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("data directory {0} is in use by another baton process (stop it, or use the admin API of the running server)")]
    DataDirBusy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("knowledge folder: {0}")]
    Knowledge(#[from] IngestError),
    #[error(transparent)]
    Intents(#[from] IntentModelError),
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error("human handoff: {0}")]
    Handoff(String),
    #[error(transparent)]
    Engine(#[from] crate::bot::EngineError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
}

/// An exclusive lock on the data directory: the in-process vector index and SQLite file must
/// have one owner. Released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<Self, StartupError> {
        let dir_error = |reason: String| StartupError::DataDir {
            path: data_dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| dir_error(e.to_string()))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(".lock"))
            .map_err(|e| dir_error(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(StartupError::DataDirBusy(data_dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(dir_error(e.to_string())),
        }
    }
}

/// What every command that touches the knowledge base needs.
pub struct Components {
    pub settings: Arc<Settings>,
    pub model_files: ModelFiles,
    pub encoder: EncoderPool,
    pub store: Arc<dyn Store>,
    /// The same database, seen through the human-side trait.
    pub handoffs: Arc<dyn HandoffStore>,
    pub index: Arc<dyn VectorIndex>,
    pub knowledge: KnowledgeBase,
    pub data_lock: Arc<DataDirLock>,
}

/// Everything the HTTP server serves from.
#[derive(Clone)]
pub struct AppState {
    pub components: Arc<Components>,
    pub engine: Arc<Engine>,
    pub handoff: Arc<HandoffService>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    /// Request, message and connection limits, shared by every route and socket.
    pub limits: Arc<Limits>,
    /// This instance's membership of a cluster on PostgreSQL (None: it runs alone).
    pub cluster: Option<Arc<Cluster>>,
}

/// Why a change to the knowledge base did not complete. Documents already stored stay stored.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeChangeError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("vector index: {0}")]
    Index(#[from] IndexError),
    /// The documents changed but the bot's vocabulary could not be read again.
    #[error(transparent)]
    Vocabulary(#[from] crate::bot::EngineError),
}

/// Changes to the knowledge base, each followed by what depends on it: the index is flushed and
/// the bot's vocabulary read again (new words are no longer unfamiliar, nor typos).
impl AppState {
    /// Ingest uploaded files (already checked and named `upload/NAME`), in order.
    pub async fn add_documents(
        &self,
        files: Vec<(String, impl AsRef<[u8]>)>,
    ) -> Result<Vec<IngestOutcome>, KnowledgeChangeError> {
        let mut outcomes = Vec::with_capacity(files.len());
        for (source, bytes) in files {
            outcomes.push(
                self.components
                    .knowledge
                    .ingest_bytes(&source, bytes.as_ref())
                    .await?,
            );
        }
        self.components.index.flush().await?;
        self.engine.refresh_vocabulary().await?;
        Ok(outcomes)
    }

    /// Remove a document by id or source; false when there is none.
    pub async fn remove_document(&self, id_or_source: &str) -> Result<bool, KnowledgeChangeError> {
        let removed = self.components.knowledge.remove(id_or_source).await?;
        if removed {
            self.engine.refresh_vocabulary().await?;
        }
        Ok(removed)
    }

    /// Bring the knowledge base in line with a folder.
    pub async fn sync_knowledge_folder(
        &self,
        folder: &Path,
    ) -> Result<SyncReport, KnowledgeChangeError> {
        let report = self.components.knowledge.sync_folder(folder).await?;
        self.engine.refresh_vocabulary().await?;
        Ok(report)
    }
}
