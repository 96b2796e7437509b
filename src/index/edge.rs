//! Qdrant Edge backend: the vector index lives in-process, in one directory on local disk.
//!
//! Layout of the shard:
//! - one dense named vector ([`DENSE_VECTOR`], cosine) and one sparse named vector
//!   ([`KEYWORD_VECTOR`], IDF modifier, so a dot product with term-frequency weights is BM25-like);
//! - point id = the chunk id (a UUID), so upserting a chunk again replaces it;
//! - payload = the `Chunk` serialised as a JSON object. Its `document_id` field is therefore a
//!   top-level payload key, indexed as a keyword so `delete_document` is a filtered delete.
//!
//! qdrant-edge 0.7.2 is a blocking library with a few sharp edges this module works around:
//! - `EdgeShard::flush` (also run by its `Drop`) does `try_lock().expect(..)` on the WAL and on the
//!   segment holder, so a flush racing an update or an optimisation panics. Every operation that
//!   writes (update, optimise, flush) holds the write side of one `writer` lock of ours.
//! - Reads (searches, chunk reads, counts) never wait for a write. On a small shard they run on the
//!   caller's thread (a brute-force search over it costs less than the hop to the blocking pool,
//!   see `crate::cpu`), but only if the read side of `writer` is free at once: a write in progress
//!   sends the read to the blocking pool instead of stalling the async runtime behind qdrant's
//!   segment locks. On the pool, reads take no lock of ours and rely on those segment locks.
//! - There is no background optimiser: without an explicit `optimize()` the shard stays one
//!   appendable segment searched by brute force, and deleted points are never vacuumed. `flush`
//!   therefore runs the optimisers before persisting.
//! - The WAL is written but never replayed on load (nor truncated): only what was flushed (or
//!   written before the shard was dropped, since `Drop` flushes) survives a crash.
//! - Search results carry no payload unless it is requested explicitly.
//! - The shard takes an exclusive `flock` on its WAL directory, which makes a second open of the
//!   same directory fail in another process; within this process [`EdgeIndex::open`] rejects a
//!   second open up front with a clear [`IndexError::Open`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use qdrant_edge::external::uuid::Uuid;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard,
    EdgeSparseVectorParams, EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter,
    HnswIndexConfig, JsonPath, Match, Modifier, MultiVectorComparator, MultiVectorConfig,
    NamedQuery, OperationError, Payload, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, QueryRequest,
    ScoringQuery, UpdateOperation, VectorInternal, VectorPersisted, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};
use serde_json::Value;

use super::{
    check_dense_query, check_indexed_chunk, check_sparse, chunk_payload, IndexError, IndexedChunk,
    ScoredId, SparseVector, VectorIndex, DENSE_VECTOR, DOCUMENT_ID_KEY, KEYWORD_VECTOR,
};
use crate::model::Chunk;

/// File and directory that qdrant-edge 0.7.2 creates in a shard directory. The crate keeps these
/// names private; we only need them to tell "create a new shard" from "load the existing one".
const EDGE_CONFIG_FILE: &str = "edge_config.json";
const SEGMENTS_DIR: &str = "segments";

/// Points per update operation. Each operation becomes one WAL record; keeping records small keeps
/// them far below the WAL's 32 MiB segment size whatever batch the caller hands us.
const POINTS_PER_UPDATE: usize = 256;

/// Reads run on the caller's thread while the shard holds fewer chunks than this. The dense search
/// is the read whose cost grows with the shard (it is brute force below qdrant's indexing
/// threshold): measured at stop 34 (release build, three 384-d views a chunk, median of 300), it
/// took 0.037 ms over 250 chunks, 0.11 ms over 1,000, 0.21 ms over 2,000 and 0.69 ms over 4,000,
/// while a keyword search and a read of five chunks stayed under 0.025 ms. 1,000 chunks keep a
/// read near the 0.1 ms budget of `crate::cpu`; the demo knowledge base has about 250.
pub const INLINE_READ_CHUNK_LIMIT: usize = 1_000;

/// Tuning of the shard's optimisers and of where reads run. The defaults (qdrant's own) suit
/// production; tests lower the thresholds to exercise HNSW-indexed segments with a few hundred
/// points, and send every read to the blocking pool to exercise that path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeIndexSettings {
    /// Once a segment holds this many KB of vectors, `flush` turns it into an HNSW-indexed segment.
    /// `None`: qdrant's default, 10,000 KB (about 6,500 chunks of 384 dimensions).
    pub indexing_threshold_kb: Option<usize>,
    /// An HNSW-indexed segment holding fewer KB of vectors than this is still searched exhaustively.
    /// `None`: qdrant's default, 10,000 KB.
    pub full_scan_threshold_kb: Option<usize>,
    /// Reads run on the caller's thread while the shard holds fewer chunks than this, on the
    /// blocking pool from then on (0: always on the pool). `None`: [`INLINE_READ_CHUNK_LIMIT`].
    pub inline_read_chunk_limit: Option<usize>,
}

impl EdgeIndexSettings {
    fn optimizers_config(&self) -> EdgeOptimizersConfig {
        EdgeOptimizersConfig {
            indexing_threshold: self.indexing_threshold_kb,
            ..EdgeOptimizersConfig::default()
        }
    }

    fn hnsw_config(&self) -> HnswIndexConfig {
        let defaults = HnswIndexConfig::default();
        HnswIndexConfig {
            full_scan_threshold: self
                .full_scan_threshold_kb
                .unwrap_or(defaults.full_scan_threshold),
            ..defaults
        }
    }
}

/// The Qdrant Edge implementation of [`VectorIndex`]. See the module documentation for the layout
/// and the locking rules.
pub struct EdgeIndex {
    shared: Arc<SharedShard>,
    dimension: usize,
    inline_read_chunk_limit: usize,
}

/// Everything a blocking task needs; shared between the index and its in-flight tasks so that a
/// cancelled search or upsert can still finish safely after the caller went away.
struct SharedShard {
    /// Written by every operation that writes to the shard (update, optimise, flush), inside
    /// blocking tasks; read by reads on the caller's thread, for the length of the read only.
    /// Never held across an `.await`. See the module documentation for why.
    writer: RwLock<()>,
    /// Points in the shard after the last write, which decides where reads run.
    chunks: AtomicUsize,
    shard: EdgeShard,
    /// Declared after `shard` so the directory is released only once the shard has been dropped,
    /// i.e. flushed and its WAL lock released.
    _directory: OpenDirectoryClaim,
}

impl EdgeIndex {
    /// Open the index stored in `dir`, creating it (and the directory) if there is none yet.
    /// `dimension` is the size of the dense embeddings; opening an index built with another
    /// dimension fails with [`IndexError::Dimension`].
    ///
    /// Blocking (disk I/O): call it at startup or from `spawn_blocking`. A directory can be open
    /// only once at a time; a second open in this process fails with [`IndexError::Open`].
    pub fn open(dir: &Path, dimension: usize) -> Result<Self, IndexError> {
        Self::open_with_settings(dir, dimension, EdgeIndexSettings::default())
    }

    /// [`EdgeIndex::open`] with explicit optimiser settings. The settings are applied on every open
    /// (and persisted by qdrant-edge), so they follow the configuration rather than the history of
    /// the directory.
    pub fn open_with_settings(
        dir: &Path,
        dimension: usize,
        settings: EdgeIndexSettings,
    ) -> Result<Self, IndexError> {
        let open_error = |reason: String| IndexError::Open {
            path: dir.display().to_string(),
            reason,
        };
        if dimension == 0 {
            return Err(open_error(
                "the dense vector dimension must be positive".into(),
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|err| open_error(format!("cannot create the directory: {err}")))?;
        let canonical_dir = dir
            .canonicalize()
            .map_err(|err| open_error(format!("cannot resolve the directory: {err}")))?;
        let directory_claim =
            OpenDirectoryClaim::claim(canonical_dir.clone()).ok_or_else(|| {
                open_error(
                    "the index is already open in this process; share the open EdgeIndex instead"
                        .into(),
                )
            })?;

        let shard = if shard_exists(&canonical_dir) {
            let shard =
                EdgeShard::load(&canonical_dir, None).map_err(|err| open_error(err.to_string()))?;
            check_existing_layout(&shard, dimension).map_err(|error| match error {
                LayoutError::Dimension(error) => error,
                LayoutError::Incompatible(reason) => open_error(reason),
            })?;
            apply_settings(&shard, &settings).map_err(|err| open_error(err.to_string()))?;
            shard
        } else {
            EdgeShard::new(&canonical_dir, new_shard_config(dimension, &settings))
                .map_err(|err| open_error(err.to_string()))?
        };
        // Also on load: a crash between creating the shard and indexing the field leaves a shard
        // without the index, and deleting by filter would then scan every payload.
        ensure_document_id_index(&shard).map_err(|err| open_error(err.to_string()))?;
        let chunks = exact_count(&shard).map_err(|err| open_error(err.to_string()))?;

        Ok(Self {
            shared: Arc::new(SharedShard {
                writer: RwLock::new(()),
                chunks: AtomicUsize::new(chunks),
                shard,
                _directory: directory_claim,
            }),
            dimension,
            inline_read_chunk_limit: settings
                .inline_read_chunk_limit
                .unwrap_or(INLINE_READ_CHUNK_LIMIT),
        })
    }

    /// The dense vector dimension this index was opened with.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Run `operation` on a blocking thread: qdrant-edge does disk I/O and CPU-heavy scoring
    /// synchronously, which must not stall the async runtime.
    async fn run_blocking<T, F>(&self, operation: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&SharedShard) -> Result<T, IndexError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        crate::cpu::run_on_blocking_pool(move || operation(&shared))
            .await
            .map_err(|failed| IndexError::Backend(format!("index task failed: {failed}")))?
    }

    /// Run a read: on the caller's thread while the shard is small and no write is running (see
    /// the module documentation), on the blocking pool otherwise.
    async fn run_read<T, F>(&self, operation: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&SharedShard) -> Result<T, IndexError> + Send + 'static,
    {
        if self.shared.chunks.load(Ordering::Relaxed) < self.inline_read_chunk_limit {
            if let Some(_no_write_running) = self.shared.writer.try_read() {
                return crate::cpu::run_inline(|| operation(&self.shared)).map_err(|failed| {
                    IndexError::Backend(format!("index read failed: {failed}"))
                })?;
            }
        }
        self.run_blocking(operation).await
    }

    /// Run a write under the writer lock, then record the shard's new size.
    async fn run_write<F>(&self, operation: F) -> Result<(), IndexError>
    where
        F: FnOnce(&SharedShard) -> Result<(), IndexError> + Send + 'static,
    {
        self.run_blocking(move |shared| {
            let _writer = shared.writer.write();
            let written = operation(shared);
            // Counted even when the write failed part-way: some of a batch may be in. A count
            // that fails leaves the last known size (it only decides where reads run) and does
            // not turn a write that went in into an error.
            match exact_count(&shared.shard) {
                Ok(chunks) => shared.chunks.store(chunks, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "cannot count the index after a write"),
            }
            written
        })
        .await
    }
}

#[async_trait]
impl VectorIndex for EdgeIndex {
    async fn upsert(&self, chunks: Vec<IndexedChunk>) -> Result<(), IndexError> {
        if chunks.is_empty() {
            return Ok(());
        }
        // Validate and convert everything before writing anything, so a bad chunk rejects the
        // whole batch instead of leaving half of it indexed.
        let points = chunks
            .into_iter()
            .map(|indexed| point_from_chunk(indexed, self.dimension))
            .collect::<Result<Vec<_>, _>>()?;
        self.run_write(move |shared| {
            let mut remaining = points;
            while !remaining.is_empty() {
                let rest = remaining.split_off(remaining.len().min(POINTS_PER_UPDATE));
                shared
                    .shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::UpsertPoints(PointInsertOperations::PointsList(remaining)),
                    ))
                    .map_err(backend_error)?;
                remaining = rest;
            }
            Ok(())
        })
        .await
    }

    async fn delete_document(&self, document_id: &str) -> Result<(), IndexError> {
        let filter = Filter::new_must(Condition::Field(FieldCondition::new_match(
            document_id_path()?,
            Match::from(document_id.to_string()),
        )));
        self.run_write(move |shared| {
            shared
                .shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(backend_error)
        })
        .await
    }

    async fn nearest_dense(
        &self,
        query: &[f32],
        limit: usize,
    ) -> Result<Vec<ScoredId>, IndexError> {
        check_dense_query(query, self.dimension)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A one-row multivector query: MaxSim then scores each chunk by its best view.
        let query = qdrant_edge::Vector::new_multi(vec![query.to_vec()]).map_err(|err| {
            IndexError::InvalidQuery(format!("the dense query cannot be used: {err}"))
        })?;
        let request = nearest_request(query.0, DENSE_VECTOR, limit);
        // Cosine scores come back as the raw cosine similarity: qdrant normalises vectors on
        // insert and the query before scoring, and its cosine post-processing is the identity.
        self.run_read(move |shared| search(&shared.shard, request))
            .await
    }

    async fn nearest_sparse(
        &self,
        query: &SparseVector,
        limit: usize,
    ) -> Result<Vec<ScoredId>, IndexError> {
        if query.indices.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let query_vector = to_edge_sparse(query).map_err(IndexError::InvalidQuery)?;
        let request = nearest_request(VectorInternal::Sparse(query_vector), KEYWORD_VECTOR, limit);
        // With the IDF modifier, qdrant scales each query weight by the term's inverse document
        // frequency over the whole shard before the dot product: sum(idf * query * chunk weight).
        self.run_read(move |shared| search(&shared.shard, request))
            .await
    }

    async fn chunks(&self, ids: &[String]) -> Result<Vec<Chunk>, IndexError> {
        // An id that is not a UUID names no point: it is simply not stored.
        let point_ids: Vec<PointId> = ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .map(PointId::Uuid)
            .collect();
        if point_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.run_read(move |shared| {
            shared
                .shard
                .retrieve(
                    &point_ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(false)),
                )
                .map_err(backend_error)?
                .into_iter()
                .map(|record| chunk_from_payload(&record.id, record.payload))
                .collect()
        })
        .await
    }

    async fn count(&self) -> Result<usize, IndexError> {
        self.run_read(|shared| exact_count(&shared.shard)).await
    }

    async fn flush(&self) -> Result<(), IndexError> {
        self.run_write(|shared| {
            // qdrant-edge never optimises on its own; doing it here, at the end of a write batch,
            // builds HNSW graphs once segments are large enough and vacuums deleted points.
            shared.shard.optimize().map_err(backend_error)?;
            // Panics (instead of returning an error) if the disk write fails; spawn_blocking
            // turns that panic into the IndexError::Backend of run_blocking.
            shared.shard.flush();
            Ok(())
        })
        .await
    }
}

/// The number of points in the shard. The estimate is not a count once points are spread over
/// several segments.
fn exact_count(shard: &EdgeShard) -> Result<usize, IndexError> {
    shard
        .count(CountRequest {
            filter: None,
            exact: true,
        })
        .map_err(backend_error)
}

fn backend_error(error: OperationError) -> IndexError {
    IndexError::Backend(error.to_string())
}

fn document_id_path() -> Result<JsonPath, IndexError> {
    JsonPath::try_from(DOCUMENT_ID_KEY)
        .map_err(|()| IndexError::Backend(format!("invalid payload key {DOCUMENT_ID_KEY:?}")))
}

fn shard_exists(dir: &Path) -> bool {
    if dir.join(EDGE_CONFIG_FILE).is_file() {
        return true;
    }
    std::fs::read_dir(dir.join(SEGMENTS_DIR))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

fn new_shard_config(dimension: usize, settings: &EdgeIndexSettings) -> EdgeConfig {
    EdgeConfig::builder()
        .vector(
            DENSE_VECTOR,
            EdgeVectorParams::builder(dimension, Distance::Cosine)
                .multivector_config(MultiVectorConfig {
                    comparator: MultiVectorComparator::MaxSim,
                })
                .build(),
        )
        .sparse_vector(
            KEYWORD_VECTOR,
            EdgeSparseVectorParams::builder()
                .modifier(Modifier::Idf)
                .build(),
        )
        .optimizers(settings.optimizers_config())
        .hnsw_config(settings.hnsw_config())
        .build()
}

enum LayoutError {
    Dimension(IndexError),
    Incompatible(String),
}

/// Check that a loaded shard has the vectors this module writes, with the requested dimension.
fn check_existing_layout(shard: &EdgeShard, dimension: usize) -> Result<(), LayoutError> {
    let config = shard.config();
    let dense = config.vectors.get(DENSE_VECTOR).ok_or_else(|| {
        LayoutError::Incompatible(format!(
            "not a Baton index: it has no dense vector named {DENSE_VECTOR:?}"
        ))
    })?;
    if dense.size != dimension {
        return Err(LayoutError::Dimension(IndexError::Dimension {
            expected: dense.size,
            got: dimension,
        }));
    }
    if dense.multivector_config
        != Some(MultiVectorConfig {
            comparator: MultiVectorComparator::MaxSim,
        })
    {
        return Err(LayoutError::Incompatible(
            "the dense vector is not a MaxSim multivector (an index from an older Baton: delete the index directory; it is rebuilt from the store)".into(),
        ));
    }
    if dense.distance != Distance::Cosine {
        return Err(LayoutError::Incompatible(format!(
            "the dense vector uses {:?} distance instead of cosine",
            dense.distance
        )));
    }
    let keywords = config.sparse_vectors.get(KEYWORD_VECTOR).ok_or_else(|| {
        LayoutError::Incompatible(format!(
            "not a Baton index: it has no sparse vector named {KEYWORD_VECTOR:?}"
        ))
    })?;
    if keywords.modifier != Some(Modifier::Idf) {
        return Err(LayoutError::Incompatible(
            "the keyword vector does not use the IDF modifier".into(),
        ));
    }
    Ok(())
}

fn apply_settings(shard: &EdgeShard, settings: &EdgeIndexSettings) -> Result<(), OperationError> {
    // Each statement takes and releases the config read lock: the setters take its write lock.
    let current_optimizers = shard.config().optimizers.clone();
    let current_hnsw = shard.config().hnsw_config;
    let wanted_optimizers = settings.optimizers_config();
    if current_optimizers != wanted_optimizers {
        shard.set_optimizers_config(wanted_optimizers)?;
    }
    let wanted_hnsw = settings.hnsw_config();
    if current_hnsw != wanted_hnsw {
        shard.set_hnsw_config(wanted_hnsw)?;
    }
    Ok(())
}

fn ensure_document_id_index(shard: &EdgeShard) -> Result<(), IndexError> {
    let field_name = document_id_path()?;
    if shard.info().payload_schema.contains_key(&field_name) {
        return Ok(());
    }
    shard
        .update(UpdateOperation::FieldIndexOperation(
            FieldIndexOperations::CreateIndex(CreateIndex {
                field_name,
                field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
            }),
        ))
        .map_err(backend_error)
}

fn point_from_chunk(
    indexed: IndexedChunk,
    dimension: usize,
) -> Result<PointStructPersisted, IndexError> {
    let point_id = check_indexed_chunk(&indexed, dimension)?;
    let IndexedChunk {
        chunk,
        dense_views,
        sparse,
    } = indexed;
    let keywords = to_edge_sparse(&sparse).map_err(|reason| IndexError::InvalidChunk {
        chunk_id: chunk.id.clone(),
        reason,
    })?;
    let payload = Payload(chunk_payload(&chunk)?);
    let vectors = [
        (
            DENSE_VECTOR.to_string(),
            VectorPersisted::MultiDense(dense_views),
        ),
        (
            KEYWORD_VECTOR.to_string(),
            VectorPersisted::Sparse(keywords),
        ),
    ];
    Ok(PointStructPersisted {
        id: PointId::Uuid(Uuid::from_bytes(point_id.into_bytes())),
        vector: VectorStructPersisted::Named(vectors.into_iter().collect()),
        payload: Some(payload),
    })
}

/// Convert (and validate) a sparse vector; the error is a human-readable reason.
fn to_edge_sparse(sparse: &SparseVector) -> Result<qdrant_edge::SparseVector, String> {
    check_sparse(sparse)?;
    qdrant_edge::SparseVector::new(sparse.indices.clone(), sparse.values.clone())
        .map_err(|err| format!("invalid sparse vector: {err}"))
}

fn nearest_request(query: VectorInternal, vector_name: &str, limit: usize) -> QueryRequest {
    QueryRequest {
        prefetches: Vec::new(),
        query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
            query,
            using: Some(vector_name.to_string()),
        }))),
        filter: None,
        score_threshold: None,
        limit,
        offset: 0,
        params: None,
        with_vector: WithVector::Bool(false),
        // Ids and scores only: the caller reads the payloads of the chunks it keeps.
        with_payload: WithPayloadInterface::Bool(false),
    }
}

fn search(shard: &EdgeShard, request: QueryRequest) -> Result<Vec<ScoredId>, IndexError> {
    shard
        .query(request)
        .map_err(backend_error)?
        .into_iter()
        .map(|point| {
            Ok(ScoredId {
                chunk_id: chunk_id_of(&point.id)?,
                score: point.score,
            })
        })
        .collect()
}

/// Chunk ids are UUIDs, and so are the point ids written for them; anything else in the shard was
/// not written by Baton.
fn chunk_id_of(id: &PointId) -> Result<String, IndexError> {
    match id {
        PointId::Uuid(uuid) => Ok(uuid.to_string()),
        PointId::NumId(number) => Err(IndexError::Backend(format!(
            "point {number} has a numeric id; chunk ids are UUIDs"
        ))),
    }
}

fn chunk_from_payload(id: &PointId, payload: Option<Payload>) -> Result<Chunk, IndexError> {
    let payload = payload
        .ok_or_else(|| IndexError::Backend(format!("point {id} came back without payload")))?;
    serde_json::from_value(Value::Object(payload.0)).map_err(|err| {
        IndexError::Backend(format!("the payload of point {id} is not a chunk: {err}"))
    })
}

/// Directories currently open by an [`EdgeIndex`] in this process (canonical paths).
static OPEN_DIRECTORIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Membership of one directory in [`OPEN_DIRECTORIES`], released on drop.
struct OpenDirectoryClaim {
    dir: PathBuf,
}

impl OpenDirectoryClaim {
    /// `None` if the directory is already claimed.
    fn claim(dir: PathBuf) -> Option<Self> {
        let mut open = OPEN_DIRECTORIES.lock();
        if open.contains(&dir) {
            return None;
        }
        open.push(dir.clone());
        Some(Self { dir })
    }
}

impl Drop for OpenDirectoryClaim {
    fn drop(&mut self) {
        OPEN_DIRECTORIES.lock().retain(|open| open != &self.dir);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const DIMENSION: usize = 8;

    fn test_chunk(document_id: &str, ordinal: u32, text: &str) -> Chunk {
        Chunk {
            id: Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{document_id}/{ordinal}").as_bytes(),
            )
            .to_string(),
            document_id: document_id.to_string(),
            ordinal,
            title: "Returns".to_string(),
            heading_path: vec!["Policies".to_string(), "Returns".to_string()],
            text: text.to_string(),
            question: Some("Can I return an item?".to_string()),
            source: "returns.md".to_string(),
            url: Some("https://example.com/returns".to_string()),
            content_hash: "abc123".to_string(),
        }
    }

    fn axis(dimension: usize, position: usize) -> Vec<f32> {
        let mut vector = vec![0.0; dimension];
        vector[position % dimension] = 1.0;
        vector
    }

    fn indexed(chunk: Chunk, dense: Vec<f32>) -> IndexedChunk {
        IndexedChunk {
            chunk,
            dense_views: vec![dense],
            sparse: SparseVector {
                indices: vec![1, 2],
                values: vec![1.0, 0.5],
            },
        }
    }

    fn open_index(dir: &Path) -> EdgeIndex {
        EdgeIndex::open(dir, DIMENSION).expect("open the index")
    }

    #[tokio::test]
    async fn reopening_after_drop_keeps_flushed_and_unflushed_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flushed = test_chunk("doc", 0, "flushed");
        let unflushed = test_chunk("doc", 1, "written just before the drop");
        {
            let index = open_index(dir.path());
            index
                .upsert(vec![indexed(flushed.clone(), axis(DIMENSION, 0))])
                .await
                .expect("upsert");
            index.flush().await.expect("flush");
            // Not flushed explicitly: EdgeShard's Drop must persist it.
            index
                .upsert(vec![indexed(unflushed.clone(), axis(DIMENSION, 1))])
                .await
                .expect("upsert");
        }

        let reopened = open_index(dir.path());
        assert_eq!(reopened.count().await.expect("count"), 2);
        let found = reopened
            .search_dense(&axis(DIMENSION, 1), 1)
            .await
            .expect("search");
        assert_eq!(found[0].chunk, unflushed);
        let found = reopened
            .search_dense(&axis(DIMENSION, 0), 1)
            .await
            .expect("search");
        assert_eq!(found[0].chunk, flushed);

        // Versions continue after a reload: a replacement written now wins over the old point.
        let replacement = test_chunk("doc", 0, "replaced after reopening");
        reopened
            .upsert(vec![indexed(replacement.clone(), axis(DIMENSION, 2))])
            .await
            .expect("upsert");
        let found = reopened
            .search_dense(&axis(DIMENSION, 2), 1)
            .await
            .expect("search");
        assert_eq!(found[0].chunk, replacement);
        assert_eq!(reopened.count().await.expect("count"), 2);
    }

    /// A read must not wait for a write on the caller's thread: with the writer lock held (as a
    /// long optimisation holds it), reads on a small shard go to the blocking pool, where they
    /// take no lock of ours, and still answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_during_a_write_go_to_the_pool_instead_of_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = open_index(dir.path());
        let chunk = test_chunk("doc", 0, "searchable while a write runs");
        index
            .upsert(vec![indexed(chunk.clone(), axis(DIMENSION, 3))])
            .await
            .expect("upsert");
        assert_eq!(index.shared.chunks.load(Ordering::Relaxed), 1);

        // A writer on another thread, as a flush on the blocking pool would be; it lets go when
        // told to, or when this test ends (the sender dropped).
        let shared = Arc::clone(&index.shared);
        let (held, writer_holds) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let _write_in_progress = shared.writer.write();
            held.send(()).expect("the test waits");
            let _ = released.recv();
        });
        writer_holds.recv().expect("the writer takes the lock");
        let found = tokio::time::timeout(
            Duration::from_secs(30),
            index.search_dense(&axis(DIMENSION, 3), 1),
        )
        .await
        .expect("a read during a write answers instead of waiting for it")
        .expect("search");
        assert_eq!(found[0].chunk, chunk);
        release.send(()).expect("the writer waits");
        writer.join().expect("the writer ends");
    }

    /// The shard's size, which decides where reads run, follows writes and reopening.
    #[tokio::test]
    async fn the_chunk_count_behind_read_placement_follows_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let index = open_index(dir.path());
            let chunks: Vec<IndexedChunk> = (0..3)
                .map(|ordinal| {
                    indexed(
                        test_chunk("doc", ordinal, "counted"),
                        axis(DIMENSION, ordinal as usize),
                    )
                })
                .collect();
            index.upsert(chunks).await.expect("upsert");
            assert_eq!(index.shared.chunks.load(Ordering::Relaxed), 3);
            index.delete_document("doc").await.expect("delete");
            assert_eq!(index.shared.chunks.load(Ordering::Relaxed), 0);
            index
                .upsert(vec![indexed(
                    test_chunk("kept", 0, "kept"),
                    axis(DIMENSION, 0),
                )])
                .await
                .expect("upsert");
        }
        let reopened = open_index(dir.path());
        assert_eq!(reopened.shared.chunks.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn opening_with_another_dimension_is_a_dimension_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open_index(dir.path()));

        match EdgeIndex::open(dir.path(), DIMENSION * 2) {
            Err(IndexError::Dimension { expected, got }) => {
                assert_eq!((expected, got), (DIMENSION, DIMENSION * 2));
            }
            Err(other) => panic!("expected a dimension error, got {other}"),
            Ok(_) => panic!("opening with another dimension must fail"),
        }
        // The failed attempt neither damaged the index nor kept the directory claimed.
        let index = open_index(dir.path());
        assert_eq!(index.dimension(), DIMENSION);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_rejected_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open_index(dir.path());

        // Another spelling of the same directory is the same directory.
        let same_directory = dir.path().join(".");
        match EdgeIndex::open(&same_directory, DIMENSION) {
            Err(IndexError::Open { reason, .. }) => assert!(reason.contains("already open")),
            Err(other) => panic!("expected an open error, got {other}"),
            Ok(_) => panic!("a second open of the same directory must fail"),
        }

        drop(first);
        open_index(&same_directory);
    }

    #[test]
    fn open_creates_missing_directories_and_rejects_zero_dimension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("data").join("index");
        open_index(&nested);
        assert!(nested.join(EDGE_CONFIG_FILE).is_file());

        let other = dir.path().join("zero");
        assert!(matches!(
            EdgeIndex::open(&other, 0),
            Err(IndexError::Open { .. })
        ));
    }

    #[test]
    fn a_shard_with_another_layout_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let foreign_config = EdgeConfig::builder()
            .vector(
                "image",
                EdgeVectorParams::builder(DIMENSION, Distance::Dot).build(),
            )
            .build();
        drop(EdgeShard::new(dir.path(), foreign_config).expect("create a foreign shard"));

        match EdgeIndex::open(dir.path(), DIMENSION) {
            Err(IndexError::Open { reason, .. }) => assert!(reason.contains(DENSE_VECTOR)),
            Err(other) => panic!("expected an open error, got {other}"),
            Ok(_) => panic!("a foreign shard must be rejected"),
        }
    }

    #[test]
    fn payload_is_the_whole_chunk_with_a_top_level_document_id() {
        let chunk = test_chunk("refunds", 3, "Refunds take five days.");
        let point = point_from_chunk(indexed(chunk.clone(), axis(DIMENSION, 0)), DIMENSION)
            .expect("convert");
        let payload = point.payload.expect("payload");
        assert_eq!(
            payload.0.get(DOCUMENT_ID_KEY),
            Some(&Value::String("refunds".to_string()))
        );
        let decoded: Chunk = serde_json::from_value(Value::Object(payload.0)).expect("decode");
        assert_eq!(decoded, chunk);
        let expected_id = Uuid::parse_str(&chunk.id).expect("uuid");
        assert_eq!(point.id, PointId::Uuid(expected_id));
    }

    #[test]
    fn chunks_that_cannot_be_stored_are_typed_errors() {
        let mut bad_id = test_chunk("doc", 0, "text");
        bad_id.id = "chunk-1".to_string();
        assert!(matches!(
            point_from_chunk(indexed(bad_id, axis(DIMENSION, 0)), DIMENSION),
            Err(IndexError::InvalidChunk { chunk_id, .. }) if chunk_id == "chunk-1"
        ));
        assert!(matches!(
            point_from_chunk(
                indexed(test_chunk("doc", 0, "text"), vec![1.0; 3]),
                DIMENSION
            ),
            Err(IndexError::Dimension {
                expected: DIMENSION,
                got: 3
            })
        ));
        let mut not_finite = axis(DIMENSION, 0);
        not_finite[1] = f32::NAN;
        assert!(matches!(
            point_from_chunk(indexed(test_chunk("doc", 0, "text"), not_finite), DIMENSION),
            Err(IndexError::InvalidChunk { .. })
        ));
    }

    #[test]
    fn document_id_is_indexed_as_a_keyword() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = open_index(dir.path());
        let field = document_id_path().expect("path");
        let schema = index.shared.shard.info().payload_schema;
        let field_index = schema.get(&field).expect("document_id is indexed");
        assert_eq!(field_index.data_type, PayloadSchemaType::Keyword);
    }

    #[tokio::test]
    async fn flush_builds_an_hnsw_index_once_the_threshold_is_crossed() {
        let tiny_thresholds = EdgeIndexSettings {
            indexing_threshold_kb: Some(1),
            full_scan_threshold_kb: Some(1),
            ..EdgeIndexSettings::default()
        };
        const POINTS: usize = 200;
        for (settings, expect_dense_indexed) in [
            (EdgeIndexSettings::default(), false),
            (tiny_thresholds, true),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let index =
                EdgeIndex::open_with_settings(dir.path(), DIMENSION, settings).expect("open");
            let chunks = (0..POINTS as u32)
                .map(|ordinal| {
                    let mut dense = axis(DIMENSION, ordinal as usize);
                    dense[(ordinal as usize + 1) % DIMENSION] = ordinal as f32 / POINTS as f32;
                    indexed(test_chunk("doc", ordinal, "text"), dense)
                })
                .collect();
            index.upsert(chunks).await.expect("upsert");
            // The keyword vectors always count as indexed (their inverted index is built on
            // insert); the dense ones only once the optimiser has built an HNSW graph.
            let keyword_vectors = POINTS;
            assert_eq!(
                index.shared.shard.info().indexed_vectors_count,
                keyword_vectors
            );

            index.flush().await.expect("flush");
            let dense_vectors_indexed =
                index.shared.shard.info().indexed_vectors_count - keyword_vectors;
            let expected = if expect_dense_indexed { POINTS } else { 0 };
            assert_eq!(dense_vectors_indexed, expected, "{settings:?}");
            assert_eq!(index.count().await.expect("count"), POINTS);
        }
    }

    #[test]
    fn settings_follow_the_latest_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tiny_thresholds = EdgeIndexSettings {
            indexing_threshold_kb: Some(1),
            full_scan_threshold_kb: Some(2),
            ..EdgeIndexSettings::default()
        };
        let index =
            EdgeIndex::open_with_settings(dir.path(), DIMENSION, tiny_thresholds).expect("open");
        assert_eq!(
            index.shared.shard.config().optimizers.indexing_threshold,
            Some(1)
        );
        drop(index);

        let index = open_index(dir.path());
        let config = index.shared.shard.config();
        assert_eq!(config.optimizers.indexing_threshold, None);
        assert_eq!(
            config.hnsw_config.full_scan_threshold,
            HnswIndexConfig::default().full_scan_threshold
        );
    }

    /// Latency of the operations retrieval depends on, at the size of a typical knowledge base.
    /// Not an assertion, just a printout:
    /// `cargo test --release --lib index::edge -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing printout, run on demand"]
    async fn report_search_and_upsert_latency() {
        const EMBEDDING_DIMENSION: usize = 384;
        const CHUNKS: usize = 2_000;
        const BATCH: usize = 100;
        const SEARCHES: usize = 200;

        let pseudo_random_vector = |seed: usize| -> Vec<f32> {
            let mut state = (seed as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let vector: Vec<f32> = (0..EMBEDDING_DIMENSION)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
            vector.into_iter().map(|value| value / norm).collect()
        };
        let text = "Orders can be returned within thirty days of delivery. ".repeat(12);

        let dir = tempfile::tempdir().expect("tempdir");
        let index = EdgeIndex::open(dir.path(), EMBEDDING_DIMENSION).expect("open");
        let mut upsert_times = Vec::new();
        for start in (0..CHUNKS).step_by(BATCH) {
            let batch = (start..start + BATCH)
                .map(|seed| IndexedChunk {
                    chunk: test_chunk(&format!("doc {}", seed / 10), seed as u32, &text),
                    dense_views: vec![pseudo_random_vector(seed)],
                    sparse: SparseVector {
                        indices: (0..40)
                            .map(|term| (seed * 7 + term * 13) as u32 % 5_000)
                            .collect(),
                        values: vec![1.0; 40],
                    },
                })
                .collect();
            let started = Instant::now();
            index.upsert(batch).await.expect("upsert");
            upsert_times.push(started.elapsed());
        }
        let started = Instant::now();
        index.flush().await.expect("flush");
        let flush_time = started.elapsed();

        let mut dense_times = Vec::new();
        let mut sparse_times = Vec::new();
        for round in 0..SEARCHES {
            let query = pseudo_random_vector(CHUNKS + round);
            let started = Instant::now();
            let found = index.search_dense(&query, 10).await.expect("dense search");
            dense_times.push(started.elapsed());
            assert_eq!(found.len(), 10);

            let keywords = SparseVector {
                indices: (0..8)
                    .map(|term| (round * 31 + term * 13) as u32 % 5_000)
                    .collect(),
                values: vec![1.0; 8],
            };
            let started = Instant::now();
            index
                .search_sparse(&keywords, 10)
                .await
                .expect("sparse search");
            sparse_times.push(started.elapsed());
        }

        let summary = |times: &mut Vec<Duration>| {
            times.sort();
            format!(
                "median {:?}, p90 {:?}, max {:?}",
                times[times.len() / 2],
                times[times.len() * 9 / 10],
                times[times.len() - 1]
            )
        };
        println!(
            "upsert of {BATCH} chunks ({EMBEDDING_DIMENSION}-d): {}",
            summary(&mut upsert_times)
        );
        println!("flush (optimise + persist) of {CHUNKS} chunks: {flush_time:?}");
        println!(
            "dense search, top 10 of {CHUNKS}: {}",
            summary(&mut dense_times)
        );
        println!(
            "sparse search, top 10 of {CHUNKS}: {}",
            summary(&mut sparse_times)
        );

        // qdrant-edge 0.7.2 never truncates its WAL: this is the disk every write keeps costing.
        // Its segment files are preallocated sparse files, so count allocated blocks, not length.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let wal_bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
                .expect("read the WAL directory")
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.blocks() * 512)
                .sum();
            println!(
                "WAL on disk after writing {CHUNKS} chunks: {} KiB",
                wal_bytes / 1024
            );
        }
    }
}
