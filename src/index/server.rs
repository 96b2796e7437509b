//! Qdrant server backend (`qdrant-client`, gRPC): the vector index of several Baton instances
//! sharing one Qdrant server, selected by `index.url`.
//!
//! The collection has the same layout as the Edge shard (see [`super::edge`]): a dense named
//! vector ([`DENSE_VECTOR`], cosine, MaxSim multivector so a chunk scores by its best view), a
//! sparse one ([`KEYWORD_VECTOR`], IDF modifier), point id = chunk id, payload = the chunk with a
//! keyword index on `document_id`. Both run the same Qdrant segment code, so scores agree.
//!
//! Differences from Edge that the trait hides:
//! - every write is sent with `wait = true`, so it is applied (and in the server's WAL) when the
//!   call returns; `flush` has nothing left to do (the server persists and optimises on its own);
//! - the collection and the payload index are created on connect when missing; several instances
//!   starting at once may race to create them, which is why "already exists" is not an error;
//! - the collection may have been created by someone else: its layout is checked on connect and a
//!   collection with another dimension is refused with [`IndexError::Dimension`].

use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::{
    vectors_config, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter,
    GetPointsBuilder, Modifier, MultiVectorComparator, MultiVectorConfigBuilder, NamedVectors,
    PointId, PointStruct, Query, QueryPointsBuilder, ScoredPoint, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};

use super::{
    canonical_chunk_id, check_dense_query, check_indexed_chunk, check_sparse, chunk_payload,
    IndexError, IndexedChunk, ScoredId, SparseVector, VectorIndex, DENSE_VECTOR, DOCUMENT_ID_KEY,
    KEYWORD_VECTOR,
};
use crate::model::Chunk;

/// Points per upsert request: keeps each gRPC message far below the server's 32 MiB default limit
/// whatever batch the caller hands us (a 384-dimension chunk with two views and its text is a few
/// KB).
const POINTS_PER_REQUEST: usize = 256;

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIndexSettings {
    /// The server's gRPC address, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    /// The collection holding this business's chunks.
    pub collection: String,
    /// Sent as the `api-key` header when the server requires one.
    pub api_key: Option<String>,
    /// Limit for each request (connect and call).
    pub timeout: Duration,
}

/// The Qdrant server implementation of [`VectorIndex`]. See the module documentation.
pub struct QdrantServerIndex {
    client: Qdrant,
    collection: String,
    dimension: usize,
}

impl QdrantServerIndex {
    /// Connect to the server, create the collection and its payload index when missing, and check
    /// the layout of an existing one. An unreachable server or a collection that is not a Baton
    /// index is an [`IndexError::Open`] naming the URL and the collection; a collection built for
    /// another embedding size is an [`IndexError::Dimension`].
    pub async fn connect(
        settings: &ServerIndexSettings,
        dimension: usize,
    ) -> Result<Self, IndexError> {
        let open_error = |reason: String| IndexError::Open {
            path: format!("{} (collection {:?})", settings.url, settings.collection),
            reason,
        };
        if dimension == 0 {
            return Err(open_error(
                "the dense vector dimension must be positive".into(),
            ));
        }
        let client =
            client(settings).map_err(|err| open_error(format!("invalid server address: {err}")))?;
        client
            .health_check()
            .await
            .map_err(|err| open_error(format!("the Qdrant server cannot be reached: {err}")))?;

        let index = Self {
            client,
            collection: settings.collection.clone(),
            dimension,
        };
        index
            .ensure_collection()
            .await
            .map_err(|error| match error {
                LayoutError::Dimension(error) => error,
                LayoutError::Incompatible(reason) => open_error(reason),
            })?;
        Ok(index)
    }

    /// Delete the whole collection (scratch collections of evaluations and tests). Deleting a
    /// collection that does not exist is not an error.
    pub async fn drop_collection(settings: &ServerIndexSettings) -> Result<(), IndexError> {
        client(settings)
            .map_err(|reason| IndexError::Backend(format!("qdrant server: {reason}")))?
            .delete_collection(&settings.collection)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    /// The dense vector dimension this index was opened with.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The collection this index reads and writes.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    async fn ensure_collection(&self) -> Result<(), LayoutError> {
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(|err| LayoutError::Incompatible(server_reason(&err)))?;
        if !exists {
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(
                DENSE_VECTOR,
                VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine)
                    .multivector_config(MultiVectorConfigBuilder::new(
                        MultiVectorComparator::MaxSim,
                    )),
            );
            let mut keywords = SparseVectorsConfigBuilder::default();
            keywords.add_named_vector_params(
                KEYWORD_VECTOR,
                SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
            );
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(&self.collection)
                        .vectors_config(dense)
                        .sparse_vectors_config(keywords),
                )
                .await;
            // Another instance may have created it between our check and our create; the layout
            // check below decides whether what exists is usable.
            if let Err(err) = created {
                if !is_already_exists(&err) {
                    return Err(LayoutError::Incompatible(format!(
                        "the collection cannot be created: {}",
                        server_reason(&err)
                    )));
                }
            }
        }
        self.check_layout().await?;
        Ok(())
    }

    async fn check_layout(&self) -> Result<(), LayoutError> {
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(|err| LayoutError::Incompatible(server_reason(&err)))?
            .result
            .ok_or_else(|| {
                LayoutError::Incompatible("the server sent no collection info".into())
            })?;
        let params = info
            .config
            .and_then(|config| config.params)
            .ok_or_else(|| {
                LayoutError::Incompatible("the server sent no collection parameters".into())
            })?;
        let dense = match params.vectors_config.and_then(|config| config.config) {
            Some(vectors_config::Config::ParamsMap(map)) => map.map.get(DENSE_VECTOR).copied(),
            Some(vectors_config::Config::Params(_)) | None => None,
        }
        .ok_or_else(|| {
            LayoutError::Incompatible(format!(
                "not a Baton index: it has no dense vector named {DENSE_VECTOR:?}"
            ))
        })?;
        if dense.size != self.dimension as u64 {
            return Err(LayoutError::Dimension(IndexError::Dimension {
                expected: dense.size as usize,
                got: self.dimension,
            }));
        }
        if dense.distance != Distance::Cosine as i32 {
            return Err(LayoutError::Incompatible(
                "the dense vector does not use cosine distance".into(),
            ));
        }
        if dense.multivector_config.map(|config| config.comparator)
            != Some(MultiVectorComparator::MaxSim as i32)
        {
            return Err(LayoutError::Incompatible(
                "the dense vector is not a MaxSim multivector".into(),
            ));
        }
        let keywords = params
            .sparse_vectors_config
            .and_then(|config| config.map.get(KEYWORD_VECTOR).copied())
            .ok_or_else(|| {
                LayoutError::Incompatible(format!(
                    "not a Baton index: it has no sparse vector named {KEYWORD_VECTOR:?}"
                ))
            })?;
        if keywords.modifier != Some(Modifier::Idf as i32) {
            return Err(LayoutError::Incompatible(
                "the keyword vector does not use the IDF modifier".into(),
            ));
        }
        if !info.payload_schema.contains_key(DOCUMENT_ID_KEY) {
            // Without it, deleting a document scans every payload. Creating an index that exists
            // is accepted by the server, so racing instances are harmless here too.
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &self.collection,
                        DOCUMENT_ID_KEY,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(|err| {
                    LayoutError::Incompatible(format!(
                        "the document_id payload index cannot be created: {}",
                        server_reason(&err)
                    ))
                })?;
        }
        Ok(())
    }

    async fn query(&self, query: QueryPointsBuilder) -> Result<Vec<ScoredId>, IndexError> {
        // Ids and scores only: the caller reads the payloads of the chunks it keeps.
        let response = self
            .client
            .query(query.with_payload(false))
            .await
            .map_err(backend_error)?;
        response.result.into_iter().map(scored_id).collect()
    }
}

#[async_trait]
impl VectorIndex for QdrantServerIndex {
    async fn upsert(&self, chunks: Vec<IndexedChunk>) -> Result<(), IndexError> {
        // Validate and convert everything before sending anything, so a bad chunk rejects the
        // whole batch instead of leaving half of it indexed.
        let mut points = chunks
            .into_iter()
            .map(|indexed| point_from_chunk(indexed, self.dimension))
            .collect::<Result<Vec<_>, _>>()?;
        while !points.is_empty() {
            let rest = points.split_off(points.len().min(POINTS_PER_REQUEST));
            self.client
                .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
                .await
                .map_err(backend_error)?;
            points = rest;
        }
        Ok(())
    }

    async fn delete_document(&self, document_id: &str) -> Result<(), IndexError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(Filter::must([Condition::matches(
                        DOCUMENT_ID_KEY,
                        document_id.to_string(),
                    )]))
                    .wait(true),
            )
            .await
            .map_err(backend_error)?;
        Ok(())
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
        // A one-row multivector query: MaxSim then scores each chunk by its best view. The score
        // is the raw cosine similarity (the server normalises both sides).
        self.query(
            QueryPointsBuilder::new(&self.collection)
                .query(Query::new_nearest(VectorInput::new_multi(vec![
                    query.to_vec()
                ])))
                .using(DENSE_VECTOR)
                .limit(limit as u64),
        )
        .await
    }

    async fn nearest_sparse(
        &self,
        query: &SparseVector,
        limit: usize,
    ) -> Result<Vec<ScoredId>, IndexError> {
        check_sparse(query).map_err(IndexError::InvalidQuery)?;
        if query.indices.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // With the IDF modifier the server scales each query weight by the term's inverse
        // document frequency over the collection: sum(idf * query * chunk weight).
        self.query(
            QueryPointsBuilder::new(&self.collection)
                .query(Query::new_nearest(VectorInput::new_sparse(
                    query.indices.clone(),
                    query.values.clone(),
                )))
                .using(KEYWORD_VECTOR)
                .limit(limit as u64),
        )
        .await
    }

    async fn chunks(&self, ids: &[String]) -> Result<Vec<Chunk>, IndexError> {
        // An id that is not a UUID names no point: it is simply not stored (the server would
        // refuse the whole request for it).
        let point_ids: Vec<PointId> = ids
            .iter()
            .filter(|id| uuid::Uuid::parse_str(id).is_ok())
            .map(|id| PointId::from(id.clone()))
            .collect();
        if point_ids.is_empty() {
            return Ok(Vec::new());
        }
        let response = self
            .client
            .get_points(GetPointsBuilder::new(&self.collection, point_ids).with_payload(true))
            .await
            .map_err(backend_error)?;
        let mut found: std::collections::HashMap<String, Chunk> = response
            .result
            .into_iter()
            .map(|point| {
                let id = point_label(point.id.as_ref());
                let chunk: Chunk = Payload::from(point.payload).deserialize().map_err(|err| {
                    IndexError::Backend(format!("the payload of point {id} is not a chunk: {err}"))
                })?;
                Ok((canonical_chunk_id(&chunk.id), chunk))
            })
            .collect::<Result<_, IndexError>>()?;
        // The server answers in its own order; callers get the order they asked for.
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(&canonical_chunk_id(id)))
            .collect())
    }

    async fn count(&self) -> Result<usize, IndexError> {
        let response = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(backend_error)?;
        Ok(response.result.map_or(0, |result| result.count as usize))
    }

    async fn flush(&self) -> Result<(), IndexError> {
        // Every write already waited for the server to apply it; the server flushes its segments
        // and runs its optimisers by itself.
        Ok(())
    }
}

/// The client for `settings`; the error is the reason the address is unusable.
fn client(settings: &ServerIndexSettings) -> Result<Qdrant, String> {
    Qdrant::from_url(&settings.url)
        .api_key(settings.api_key.clone())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        // The check only prints to stdout; a mismatch shows in the calls themselves.
        .skip_compatibility_check()
        .build()
        .map_err(|err| server_reason(&err))
}

enum LayoutError {
    Dimension(IndexError),
    Incompatible(String),
}

fn point_from_chunk(indexed: IndexedChunk, dimension: usize) -> Result<PointStruct, IndexError> {
    let point_id = check_indexed_chunk(&indexed, dimension)?;
    let payload = Payload::from(chunk_payload(&indexed.chunk)?);
    let IndexedChunk {
        dense_views,
        sparse,
        ..
    } = indexed;
    let vectors = NamedVectors::default()
        .add_vector(DENSE_VECTOR, Vector::new_multi(dense_views))
        .add_vector(
            KEYWORD_VECTOR,
            Vector::new_sparse(sparse.indices, sparse.values),
        );
    Ok(PointStruct::new(point_id.to_string(), vectors, payload))
}

fn scored_id(point: ScoredPoint) -> Result<ScoredId, IndexError> {
    match point
        .id
        .as_ref()
        .and_then(|id| id.point_id_options.as_ref())
    {
        Some(PointIdOptions::Uuid(uuid)) => Ok(ScoredId {
            chunk_id: canonical_chunk_id(uuid),
            score: point.score,
        }),
        _ => Err(IndexError::Backend(format!(
            "point {} does not have a UUID id; chunk ids are UUIDs",
            point_label(point.id.as_ref())
        ))),
    }
}

fn point_label(id: Option<&PointId>) -> String {
    id.map(|id| format!("{id:?}"))
        .unwrap_or_else(|| "without id".into())
}

fn is_already_exists(error: &QdrantError) -> bool {
    match error {
        QdrantError::ResponseError { status } => {
            status.code() == tonic::Code::AlreadyExists
                || status.message().contains("already exists")
        }
        _ => false,
    }
}

/// The server's own message for a failed call (gRPC status and text), without the client's
/// debug wrapping.
fn server_reason(error: &QdrantError) -> String {
    match error {
        QdrantError::ResponseError { status } => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    }
}

fn backend_error(error: QdrantError) -> IndexError {
    IndexError::Backend(format!("qdrant server: {}", server_reason(&error)))
}
