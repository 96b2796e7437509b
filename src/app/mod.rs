//! Assembling Baton from its configuration: the pieces every command needs (model files, encoder,
//! store, vector index, knowledge base) and, for the server, the trained intents and the engine.
//! The types assembled are defined in `crate::state` (below `http`, which reads them).
//! Each failure is one line that says what is wrong and how to fix it.

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::state::{AppState, Components, DataDirLock, StartupError};

mod background;

pub use background::Background;

use crate::assets::ModelFiles;
use crate::bot::answer::llm::LlmAnswerWriter;
use crate::bot::answer::prompt::AnswerPrompt;
use crate::bot::answer::{AnswerWriter, ExtractiveAnswerer};
use crate::bot::policy::Policy;
use crate::bot::Engine;
use crate::cluster::Cluster;
use crate::config::{AnswerWriterKind, Settings};
use crate::handoff::clock::{Clock, SystemClock};
use crate::handoff::hours::BusinessHours;
use crate::handoff::hub::Hub;
use crate::handoff::HandoffService;
use crate::index::edge::EdgeIndex;
use crate::index::server::QdrantServerIndex;
use crate::index::VectorIndex;
use crate::knowledge::ingest::{KnowledgeBase, SyncReport};
use crate::knowledge::retrieval::Retriever;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::nlp::classifier::FitOptions;
use crate::nlp::encoder::{EncoderPool, EMBEDDING_DIM};
use crate::nlp::intent_model::{self, IntentModelError, IntentRecognizer, TrainingInfo};
use crate::privacy::Masker;
use crate::store::{HandoffStore, SqlStore, Store};
use crate::templates::Templates;

/// The configured vector index: a Qdrant server when `index.url` is set, Qdrant Edge otherwise.
async fn open_index(settings: &Settings) -> Result<Arc<dyn VectorIndex>, StartupError> {
    match settings.index.server() {
        Some(server) => {
            let index = QdrantServerIndex::connect(&server, EMBEDDING_DIM).await?;
            tracing::info!(url = %server.url, collection = %server.collection, "vector index: Qdrant server");
            Ok(Arc::new(index))
        }
        None => {
            let index_dir = settings.paths.data.join("index");
            Ok(Arc::new(EdgeIndex::open(&index_dir, EMBEDDING_DIM)?))
        }
    }
}

impl Components {
    pub async fn open(settings: Settings) -> Result<Self, StartupError> {
        Self::open_with(settings, None).await
    }

    /// As [`Components::open`], optionally sharing an encoder that is already running (tests start
    /// many servers in one process; each would otherwise load its own ONNX session).
    pub async fn open_with(
        settings: Settings,
        encoder: Option<EncoderPool>,
    ) -> Result<Self, StartupError> {
        // Models first: a missing file is the most likely first-run problem and the cheapest check.
        let model_files = ModelFiles::verify(&settings.paths.models, settings.encoder.precision)?;
        let data_lock = DataDirLock::acquire(&settings.paths.data)?;
        let encoder = match encoder {
            Some(encoder) => encoder,
            None => EncoderPool::start(&model_files, &settings.encoder)?,
        };
        let database = Arc::new(
            SqlStore::connect_with(
                &settings.database_url(),
                settings.database.sqlite_synchronous,
            )
            .await?,
        );
        let store: Arc<dyn Store> = database.clone();
        let handoffs: Arc<dyn HandoffStore> = database;
        let index = open_index(&settings).await?;
        let knowledge = KnowledgeBase::new(
            store.clone(),
            index.clone(),
            encoder.clone(),
            settings.chunking,
        );
        Ok(Self {
            settings: Arc::new(settings),
            model_files,
            encoder,
            store,
            handoffs,
            index,
            knowledge,
            data_lock: Arc::new(data_lock),
        })
    }

    /// Digest of the encoder model, part of the intent cache key (a new model means retraining).
    pub fn encoder_digest(&self) -> String {
        self.encoder.model_digest().to_string()
    }

    /// Train (or load from cache) the intent recogniser for the configured intents file.
    pub async fn intents(&self) -> Result<IntentRecognizer, StartupError> {
        Ok(IntentRecognizer::load_or_train(
            &self.settings.intents_file(),
            &intent_model::cache_dir(&self.settings.paths.data),
            &self.encoder,
            &self.encoder_digest(),
            &FitOptions::default(),
        )
        .await?)
    }

    /// Sync the knowledge folder, when it exists.
    pub async fn sync_knowledge(&self) -> Result<Option<SyncReport>, StartupError> {
        let folder: PathBuf = self.settings.paths.knowledge.clone();
        if !folder.is_dir() {
            tracing::warn!(folder = %folder.display(), "knowledge folder does not exist; starting with what the store holds");
            // Uploaded documents still need an index in step with the store and the encoder.
            self.knowledge.repair_index().await?;
            return Ok(None);
        }
        let report = self.knowledge.sync_folder(&folder).await?;
        tracing::info!(
            added = report.added.len(),
            updated = report.updated.len(),
            unchanged = report.unchanged,
            removed = report.removed.len(),
            failed = report.failed.len(),
            reindexed = report.reindexed_chunks,
            "knowledge folder synced"
        );
        for (source, reason) in &report.failed {
            tracing::warn!(%source, %reason, "knowledge file skipped");
        }
        Ok(Some(report))
    }
}

impl AppState {
    /// Open the components, sync the knowledge folder, train the intents, build the engine.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, None).await
    }

    /// As [`AppState::build`], optionally with a running encoder (see [`Components::open_with`]).
    pub async fn build_with(
        settings: Settings,
        encoder: Option<EncoderPool>,
    ) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, encoder, Arc::new(SystemClock)).await
    }

    /// As [`AppState::build_with`], with the clock the human side runs on (tests use a manual one).
    pub async fn build_with_clock(
        settings: Settings,
        encoder: Option<EncoderPool>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let components = Components::open_with(settings, encoder).await?;
        let settings = components.settings.clone();
        let hub = Arc::new(Hub::new(settings.handoff.connection_queue));
        let cluster = if settings.clustered() {
            let cluster = Cluster::join(
                &settings.database_url(),
                &settings.cluster,
                clock.clone(),
                hub.clone(),
            )
            .await?;
            Some(Arc::new(cluster))
        } else {
            None
        };
        match &cluster {
            // Instances starting together would each add the same new documents.
            Some(cluster) => {
                cluster
                    .exclusively("knowledge", components.sync_knowledge())
                    .await??
            }
            None => components.sync_knowledge().await?,
        };
        let intents = components.intents().await?;
        let state = Self::from_parts(components, intents, clock, hub, cluster)?;
        let words = state.engine.refresh_vocabulary().await?;
        tracing::info!(
            words,
            "business vocabulary read (intents and knowledge base)"
        );
        state
            .handoff
            .recover()
            .await
            .map_err(|e| StartupError::Handoff(e.to_string()))?;
        Ok(state)
    }

    /// The engine and the human side over opened components. With a `cluster`, the hub relays
    /// to the other instances and presence is read from the database.
    pub fn from_parts(
        components: Components,
        intents: IntentRecognizer,
        clock: Arc<dyn Clock>,
        hub: Arc<Hub>,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Self, StartupError> {
        let settings = components.settings.clone();
        let templates = Templates::load(&settings.paths.prompts)?;
        let metrics = Metrics::new();
        let retriever = Retriever::new(components.index.clone(), settings.retrieval.clone());
        let extractive: Arc<dyn AnswerWriter> = Arc::new(ExtractiveAnswerer {
            max_chars: settings.policy.max_answer_chars,
        });
        let (answerer, fallback) = match settings.answer.writer {
            AnswerWriterKind::Extractive => (extractive, None),
            AnswerWriterKind::Llm => {
                let prompt = AnswerPrompt::load(&settings.paths.prompts)?;
                let llm: Arc<dyn AnswerWriter> = Arc::new(LlmAnswerWriter::new(
                    &settings.answer.llm,
                    prompt,
                    Masker::new(settings.privacy),
                    metrics.clone(),
                ));
                tracing::info!(
                    base_url = %settings.answer.llm.base_url,
                    model = %settings.answer.llm.model,
                    "answers are written by the LLM"
                );
                (llm, Some(extractive))
            }
        };
        let engine = Engine::new(
            components.encoder.clone(),
            intents,
            settings.intents.clone(),
            retriever,
            Policy::new(settings.policy.clone()),
            components.store.clone(),
            answerer,
            templates.clone(),
            metrics.clone(),
        )
        .with_human_owned_reading(settings.handoff.human_owned_reading)
        .with_masker(Masker::new(settings.privacy));
        let engine = match fallback {
            Some(fallback) => engine.with_fallback_answerer(fallback),
            None => engine,
        };
        let hours = settings
            .handoff
            .business_hours
            .as_ref()
            .map(BusinessHours::from_config)
            .transpose()
            .map_err(|e| StartupError::Handoff(format!("business hours: {e}")))?;
        let mut handoff = HandoffService::new(
            components.store.clone(),
            components.handoffs.clone(),
            hub.clone(),
            clock,
            settings.handoff.clone(),
            hours,
            templates,
            metrics.clone(),
        )
        .with_masker(Masker::new(settings.privacy));
        if let Some(cluster) = &cluster {
            hub.set_relay(cluster.relay());
            handoff = handoff.with_presence(cluster.presence());
        }
        let handoff = Arc::new(handoff);
        engine.set_listener(handoff.clone());
        Ok(Self {
            components: Arc::new(components),
            engine: Arc::new(engine),
            handoff,
            metrics,
            limits: Arc::new(Limits::new(settings.limits.clone())),
            settings,
            cluster,
        })
    }

    /// Retrain from the intents file on disk (after editing it) and switch to the new model;
    /// with several instances, the others retrain from theirs too.
    pub async fn retrain_intents(&self) -> Result<TrainingInfo, IntentModelError> {
        let info = self.retrain_intents_here().await?;
        if let Some(cluster) = &self.cluster {
            cluster.announce_intents_changed();
        }
        Ok(info)
    }

    async fn retrain_intents_here(&self) -> Result<TrainingInfo, IntentModelError> {
        let recognizer = IntentRecognizer::load_or_train(
            &self.settings.intents_file(),
            &intent_model::cache_dir(&self.settings.paths.data),
            self.engine.encoder(),
            &self.components.encoder_digest(),
            &FitOptions::default(),
        )
        .await?;
        let info = recognizer.info().clone();
        self.engine.replace_intents(recognizer);
        Ok(info)
    }
}

/// The server with its background work: serves until `shutdown` (see `http::serve`), then
/// stops the workers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = state.start_background();
    let served = crate::http::serve(listener, state, shutdown).await;
    background.stop().await;
    served
}
