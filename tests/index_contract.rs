//! The contract every `VectorIndex` backend must honour. Each case is a generic async function over
//! `Arc<dyn VectorIndex>`; `backend_contract!` runs every case against one backend. To add a
//! backend, write an `open_*` function returning a fresh, empty index (or `None`, after saying so
//! loudly, when the backend cannot run here) and add one `backend_contract!` line at the bottom.
//!
//! The Qdrant server backend runs against a real server (tests/common/qdrant.rs says how it is
//! found); each case gets its own collection, dropped when the case ends.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use baton::index::edge::{EdgeIndex, EdgeIndexSettings};
use baton::index::server::{QdrantServerIndex, ServerIndexSettings};
use baton::index::{IndexError, IndexedChunk, ScoredChunk, SparseVector, VectorIndex};
use baton::model::Chunk;
use uuid::Uuid;

/// Dense dimension used by every case: small keeps the suite fast, and nothing in the contract
/// depends on the embedding size.
const DIMENSION: usize = 16;
/// Slack for float rounding in scores that are mathematically exact.
const SCORE_TOLERANCE: f32 = 1e-4;

/// A fresh, empty index plus whatever must outlive it (a temporary directory, a server
/// collection guard...). The index is declared first so it is dropped (and flushed) first.
struct TestIndex {
    index: Arc<dyn VectorIndex>,
    _resources: Box<dyn Send>,
}

async fn open_edge() -> Option<TestIndex> {
    Some(open_edge_with(EdgeIndexSettings::default()))
}

/// Edge with thresholds so low that every `flush` turns segments into HNSW-indexed ones and HNSW
/// search is used (rather than the exhaustive fallback): exercises the optimiser, copy-on-write of
/// indexed points, and approximate search with a few hundred points.
async fn open_edge_indexed() -> Option<TestIndex> {
    Some(open_edge_with(EdgeIndexSettings {
        indexing_threshold_kb: Some(1),
        full_scan_threshold_kb: Some(1),
        ..EdgeIndexSettings::default()
    }))
}

/// Edge with every read sent to the blocking pool, as on a shard too large to search inline: the
/// default settings read a small shard on the caller's thread.
async fn open_edge_reading_on_the_pool() -> Option<TestIndex> {
    Some(open_edge_with(EdgeIndexSettings {
        inline_read_chunk_limit: Some(0),
        ..EdgeIndexSettings::default()
    }))
}

fn server_settings(url: &str, collection: &str) -> ServerIndexSettings {
    ServerIndexSettings {
        url: url.to_string(),
        collection: collection.to_string(),
        api_key: None,
        timeout: std::time::Duration::from_secs(10),
    }
}

/// A fresh collection on the test Qdrant server; `None` when there is no server (said loudly).
async fn open_qdrant_server() -> Option<TestIndex> {
    let (url, collection, guard) = common::qdrant::scratch_collection().await?;
    let index = QdrantServerIndex::connect(&server_settings(&url, &collection), DIMENSION)
        .await
        .expect("connect to the test Qdrant server");
    Some(TestIndex {
        index: Arc::new(index),
        _resources: Box::new(guard),
    })
}

fn open_edge_with(settings: EdgeIndexSettings) -> TestIndex {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let index = EdgeIndex::open_with_settings(dir.path(), DIMENSION, settings)
        .expect("open an edge index in an empty directory");
    TestIndex {
        index: Arc::new(index),
        _resources: Box::new(dir),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn chunk_id(name: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

fn chunk(document_id: &str, name: &str, text: &str) -> Chunk {
    Chunk {
        id: chunk_id(name),
        document_id: document_id.to_string(),
        ordinal: 0,
        title: format!("{document_id} title"),
        heading_path: vec!["Section".to_string()],
        text: text.to_string(),
        question: None,
        source: format!("{document_id}.md"),
        url: None,
        content_hash: format!("hash of {text}"),
    }
}

fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|value| *value /= norm);
    }
    vector
}

/// A deterministic pseudo-random unit vector (splitmix64), so runs are reproducible.
fn random_unit_vector(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let vector = (0..DIMENSION)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut mixed = state;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            mixed ^= mixed >> 31;
            (mixed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    normalized(vector)
}

/// A unit vector along one axis.
fn axis(dimension_index: usize) -> Vec<f32> {
    let mut vector = vec![0.0; DIMENSION];
    vector[dimension_index] = 1.0;
    vector
}

fn sparse(terms: &[(u32, f32)]) -> SparseVector {
    SparseVector {
        indices: terms.iter().map(|(term, _)| *term).collect(),
        values: terms.iter().map(|(_, weight)| *weight).collect(),
    }
}

fn indexed(chunk: Chunk, dense: Vec<f32>, keywords: &[(u32, f32)]) -> IndexedChunk {
    IndexedChunk {
        chunk,
        dense_views: vec![dense],
        sparse: sparse(keywords),
    }
}

fn ids(results: &[ScoredChunk]) -> Vec<String> {
    results
        .iter()
        .map(|result| result.chunk.id.clone())
        .collect()
}

fn assert_sorted_best_first(results: &[ScoredChunk]) {
    for pair in results.windows(2) {
        assert!(
            pair[0].score >= pair[1].score,
            "results are not sorted best first: {} then {}",
            pair[0].score,
            pair[1].score
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Contract cases

async fn empty_index_counts_zero_and_finds_nothing(index: Arc<dyn VectorIndex>) {
    assert_eq!(index.count().await.expect("count"), 0);
    let dense = index.search_dense(&axis(0), 5).await.expect("dense search");
    assert!(dense.is_empty());
    let keywords = index
        .search_sparse(&sparse(&[(1, 1.0)]), 5)
        .await
        .expect("sparse search");
    assert!(keywords.is_empty());
}

async fn dense_search_ranks_nearest_first_with_cosine_scores(index: Arc<dyn VectorIndex>) {
    let query = normalized(vec![
        1.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ]);
    let opposite: Vec<f32> = query.iter().map(|value| -value).collect();
    let near = normalized(vec![
        1.0, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ]);
    let chunks = vec![
        indexed(
            chunk("doc", "orthogonal", "orthogonal"),
            axis(5),
            &[(1, 1.0)],
        ),
        indexed(chunk("doc", "opposite", "opposite"), opposite, &[(1, 1.0)]),
        indexed(chunk("doc", "exact", "exact"), query.clone(), &[(1, 1.0)]),
        indexed(chunk("doc", "near", "near"), near.clone(), &[(1, 1.0)]),
    ];
    index.upsert(chunks).await.expect("upsert");

    let results = index.search_dense(&query, 10).await.expect("dense search");
    assert_eq!(
        ids(&results),
        vec![
            chunk_id("exact"),
            chunk_id("near"),
            chunk_id("orthogonal"),
            chunk_id("opposite")
        ]
    );
    assert_sorted_best_first(&results);
    for result in &results {
        assert!(
            (-1.0 - SCORE_TOLERANCE..=1.0 + SCORE_TOLERANCE).contains(&result.score),
            "cosine score out of range: {}",
            result.score
        );
    }
    let expected_near: f32 = query.iter().zip(&near).map(|(a, b)| a * b).sum();
    let expected_scores = [1.0, expected_near, 0.0, -1.0];
    for (result, expected) in results.iter().zip(expected_scores) {
        assert!(
            (result.score - expected).abs() < SCORE_TOLERANCE,
            "chunk {:?} scored {} instead of the cosine similarity {expected}",
            result.chunk.text,
            result.score
        );
    }
    // The payload comes back whole.
    assert_eq!(results[0].chunk, chunk("doc", "exact", "exact"));

    let top_two = index.search_dense(&query, 2).await.expect("dense search");
    assert_eq!(ids(&top_two), vec![chunk_id("exact"), chunk_id("near")]);
}

async fn a_chunk_scores_by_its_best_view(index: Arc<dyn VectorIndex>) {
    // Two views: one along axis 0, one along axis 1. A query on either finds the chunk with a
    // cosine of 1; a single-view chunk between the two axes scores lower on both.
    let between = normalized({
        let mut v = axis(0);
        v[1] = 1.0;
        v
    });
    let mut two_views = indexed(chunk("faq", "two views", "two views"), axis(0), &[(1, 1.0)]);
    two_views.dense_views.push(axis(1));
    index
        .upsert(vec![
            two_views,
            indexed(chunk("doc", "between", "between"), between, &[(1, 1.0)]),
        ])
        .await
        .expect("upsert");
    assert_eq!(
        index.count().await.expect("count"),
        2,
        "views are not separate chunks"
    );
    for query in [axis(0), axis(1)] {
        let results = index.search_dense(&query, 5).await.expect("dense search");
        assert_eq!(
            ids(&results),
            vec![chunk_id("two views"), chunk_id("between")]
        );
        assert!(
            (results[0].score - 1.0).abs() < SCORE_TOLERANCE,
            "{}",
            results[0].score
        );
        assert!(results[1].score < 0.8);
    }
}

async fn dense_search_accepts_unnormalised_vectors(index: Arc<dyn VectorIndex>) {
    let scaled: Vec<f32> = axis(3).iter().map(|value| value * 7.0).collect();
    index
        .upsert(vec![indexed(
            chunk("doc", "scaled", "scaled"),
            scaled,
            &[(1, 1.0)],
        )])
        .await
        .expect("upsert");
    let results = index.search_dense(&axis(3), 1).await.expect("dense search");
    assert_eq!(ids(&results), vec![chunk_id("scaled")]);
    assert!(
        (results[0].score - 1.0).abs() < SCORE_TOLERANCE,
        "score {}",
        results[0].score
    );
}

async fn upsert_with_existing_id_replaces_the_chunk(index: Arc<dyn VectorIndex>) {
    let other = indexed(chunk("doc", "other", "other"), axis(2), &[(9, 1.0)]);
    let original = indexed(chunk("doc", "replaced", "old text"), axis(0), &[(1, 1.0)]);
    index
        .upsert(vec![original, other])
        .await
        .expect("first upsert");
    assert_eq!(index.count().await.expect("count"), 2);

    let replacement = indexed(chunk("doc", "replaced", "new text"), axis(1), &[(2, 1.0)]);
    index
        .upsert(vec![replacement])
        .await
        .expect("second upsert");
    assert_eq!(
        index.count().await.expect("count"),
        2,
        "replacing must not add a point"
    );

    let by_new_vector = index.search_dense(&axis(1), 1).await.expect("dense search");
    assert_eq!(by_new_vector[0].chunk.id, chunk_id("replaced"));
    assert_eq!(by_new_vector[0].chunk.text, "new text");
    assert!((by_new_vector[0].score - 1.0).abs() < SCORE_TOLERANCE);

    // The old vector and the old keywords are gone with the old version.
    let by_old_vector = index.search_dense(&axis(0), 2).await.expect("dense search");
    assert!(by_old_vector
        .iter()
        .all(|result| result.score.abs() < SCORE_TOLERANCE));
    let by_old_keyword = index
        .search_sparse(&sparse(&[(1, 1.0)]), 5)
        .await
        .expect("sparse search");
    assert!(
        by_old_keyword.is_empty(),
        "old keywords still match: {by_old_keyword:?}"
    );
    let by_new_keyword = index
        .search_sparse(&sparse(&[(2, 1.0)]), 5)
        .await
        .expect("sparse search");
    assert_eq!(ids(&by_new_keyword), vec![chunk_id("replaced")]);
    assert_eq!(by_new_keyword[0].chunk.text, "new text");
}

async fn sparse_search_ranks_by_keyword_overlap(index: Arc<dyn VectorIndex>) {
    index
        .upsert(vec![
            indexed(
                chunk("doc", "all", "all terms"),
                axis(0),
                &[(1, 1.0), (2, 1.0), (3, 1.0)],
            ),
            indexed(
                chunk("doc", "two", "two terms"),
                axis(1),
                &[(1, 1.0), (2, 1.0), (40, 1.0)],
            ),
            indexed(
                chunk("doc", "one", "one term"),
                axis(2),
                &[(3, 1.0), (50, 1.0)],
            ),
            indexed(
                chunk("doc", "none", "no shared term"),
                axis(3),
                &[(60, 1.0), (70, 1.0)],
            ),
            indexed(chunk("doc", "empty", "no terms at all"), axis(4), &[]),
        ])
        .await
        .expect("upsert");

    let results = index
        .search_sparse(&sparse(&[(1, 1.0), (2, 1.0), (3, 1.0)]), 10)
        .await
        .expect("sparse search");
    assert_eq!(
        ids(&results),
        vec![chunk_id("all"), chunk_id("two"), chunk_id("one")]
    );
    assert_sorted_best_first(&results);
    assert!(results.iter().all(|result| result.score > 0.0));

    let limited = index
        .search_sparse(&sparse(&[(1, 1.0), (2, 1.0), (3, 1.0)]), 1)
        .await
        .expect("sparse search");
    assert_eq!(ids(&limited), vec![chunk_id("all")]);

    let unknown_term = index
        .search_sparse(&sparse(&[(999, 1.0)]), 10)
        .await
        .expect("sparse search");
    assert!(unknown_term.is_empty());
    let empty_query = index
        .search_sparse(&SparseVector::default(), 10)
        .await
        .expect("sparse search");
    assert!(empty_query.is_empty());
}

async fn sparse_search_weights_rare_terms_above_common_ones(index: Arc<dyn VectorIndex>) {
    // Term 1 is in 9 of 10 chunks, term 2 in one. Without IDF "common" (weight 2 on term 1) would
    // beat "rare" (weight 1 on term 2); with IDF the rare term must win.
    let mut chunks = vec![
        indexed(chunk("doc", "common", "common"), axis(0), &[(1, 2.0)]),
        indexed(chunk("doc", "rare", "rare"), axis(1), &[(2, 1.0)]),
    ];
    for filler in 0..8 {
        let name = format!("filler {filler}");
        chunks.push(indexed(
            chunk("doc", &name, &name),
            axis(2),
            &[(1, 1.0), (100 + filler, 1.0)],
        ));
    }
    index.upsert(chunks).await.expect("upsert");

    let results = index
        .search_sparse(&sparse(&[(1, 1.0), (2, 1.0)]), 10)
        .await
        .expect("sparse search");
    assert_eq!(results.len(), 10);
    assert_eq!(
        results[0].chunk.id,
        chunk_id("rare"),
        "results: {results:?}"
    );
    assert_eq!(results[1].chunk.id, chunk_id("common"));
    assert!(results[0].score > results[1].score);
}

async fn delete_document_removes_exactly_its_chunks(index: Arc<dyn VectorIndex>) {
    let mut chunks = Vec::new();
    for ordinal in 0..3 {
        let name = format!("doomed {ordinal}");
        chunks.push(indexed(
            chunk("doomed", &name, &name),
            random_unit_vector(ordinal),
            &[(1, 1.0)],
        ));
    }
    for ordinal in 0..2 {
        let name = format!("kept {ordinal}");
        chunks.push(indexed(
            chunk("kept", &name, &name),
            random_unit_vector(10 + ordinal),
            &[(1, 1.0)],
        ));
    }
    // A document id that is a prefix of another must not be caught by its deletion.
    chunks.push(indexed(
        chunk("doomed-2", "cousin", "cousin"),
        random_unit_vector(20),
        &[(1, 1.0)],
    ));
    index.upsert(chunks).await.expect("upsert");
    assert_eq!(index.count().await.expect("count"), 6);

    index.delete_document("doomed").await.expect("delete");
    assert_eq!(index.count().await.expect("count"), 3);

    let remaining_dense = index
        .search_dense(&random_unit_vector(0), 10)
        .await
        .expect("dense search");
    let remaining_keywords = index
        .search_sparse(&sparse(&[(1, 1.0)]), 10)
        .await
        .expect("sparse search");
    for results in [&remaining_dense, &remaining_keywords] {
        let documents: HashSet<&str> = results
            .iter()
            .map(|result| result.chunk.document_id.as_str())
            .collect();
        assert_eq!(documents, HashSet::from(["kept", "doomed-2"]));
        assert_eq!(results.len(), 3);
    }

    index
        .delete_document("never indexed")
        .await
        .expect("deleting an unknown document is fine");
    index
        .delete_document("doomed")
        .await
        .expect("deleting twice is fine");
    assert_eq!(index.count().await.expect("count"), 3);
}

async fn count_tracks_upserts_and_deletes(index: Arc<dyn VectorIndex>) {
    for batch in 0..3u64 {
        let chunks = (0..7u64)
            .map(|ordinal| {
                let name = format!("batch {batch} chunk {ordinal}");
                indexed(
                    chunk(&format!("doc {batch}"), &name, &name),
                    random_unit_vector(batch * 10 + ordinal),
                    &[(1, 1.0)],
                )
            })
            .collect();
        index.upsert(chunks).await.expect("upsert");
        assert_eq!(
            index.count().await.expect("count"),
            7 * (batch as usize + 1)
        );
    }
    index
        .upsert(Vec::new())
        .await
        .expect("an empty upsert is fine");
    index.delete_document("doc 1").await.expect("delete");
    assert_eq!(index.count().await.expect("count"), 14);
}

async fn flush_keeps_everything_searchable(index: Arc<dyn VectorIndex>) {
    index
        .flush()
        .await
        .expect("flushing an empty index is fine");
    let chunks = (0..40u64)
        .map(|seed| {
            let name = format!("flushed {seed}");
            indexed(
                chunk("doc", &name, &name),
                random_unit_vector(seed),
                &[(seed as u32, 1.0)],
            )
        })
        .collect();
    index.upsert(chunks).await.expect("upsert");
    index.flush().await.expect("flush");
    index.flush().await.expect("flushing twice is fine");

    assert_eq!(index.count().await.expect("count"), 40);
    let dense = index
        .search_dense(&random_unit_vector(7), 1)
        .await
        .expect("dense search");
    assert_eq!(ids(&dense), vec![chunk_id("flushed 7")]);
    let keywords = index
        .search_sparse(&sparse(&[(7, 1.0)]), 5)
        .await
        .expect("sparse search");
    assert_eq!(ids(&keywords), vec![chunk_id("flushed 7")]);

    // Writes after a flush (and after the optimiser possibly sealed the segment) still work.
    index
        .upsert(vec![indexed(
            chunk("doc", "flushed 7", "rewritten"),
            random_unit_vector(7),
            &[(7, 1.0)],
        )])
        .await
        .expect("upsert after flush");
    index
        .delete_document("nobody")
        .await
        .expect("delete after flush");
    let rewritten = index
        .search_dense(&random_unit_vector(7), 1)
        .await
        .expect("dense search");
    assert_eq!(rewritten[0].chunk.text, "rewritten");
    assert_eq!(index.count().await.expect("count"), 40);
}

async fn rejects_malformed_input_without_writing(index: Arc<dyn VectorIndex>) {
    let good = indexed(chunk("doc", "good", "good"), axis(0), &[(1, 1.0)]);
    let wrong_dimension = indexed(
        chunk("doc", "short", "short"),
        vec![1.0; DIMENSION - 1],
        &[],
    );
    assert!(index
        .upsert(vec![good.clone(), wrong_dimension])
        .await
        .is_err());

    let mut not_a_uuid = chunk("doc", "bad id", "bad id");
    not_a_uuid.id = "not-a-uuid".to_string();
    assert!(index
        .upsert(vec![good.clone(), indexed(not_a_uuid, axis(1), &[])])
        .await
        .is_err());

    let duplicate_terms = indexed(chunk("doc", "dup", "dup"), axis(2), &[(1, 1.0), (1, 2.0)]);
    assert!(index.upsert(vec![good, duplicate_terms]).await.is_err());

    assert_eq!(
        index.count().await.expect("count"),
        0,
        "a rejected batch writes nothing"
    );
    assert!(index.search_dense(&[1.0; DIMENSION + 1], 3).await.is_err());
    assert!(index
        .search_sparse(
            &SparseVector {
                indices: vec![1, 2],
                values: vec![1.0]
            },
            3
        )
        .await
        .is_err());
}

async fn concurrent_writers_and_readers_lose_nothing(index: Arc<dyn VectorIndex>) {
    const WRITERS: u64 = 4;
    const BATCHES_PER_WRITER: u64 = 5;
    const CHUNKS_PER_BATCH: u64 = 20;

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let index = Arc::clone(&index);
        tasks.push(tokio::spawn(async move {
            for batch in 0..BATCHES_PER_WRITER {
                let chunks = (0..CHUNKS_PER_BATCH)
                    .map(|ordinal| {
                        let seed =
                            (writer * BATCHES_PER_WRITER + batch) * CHUNKS_PER_BATCH + ordinal;
                        let name = format!("concurrent {seed}");
                        indexed(
                            chunk(&format!("writer {writer}"), &name, &name),
                            random_unit_vector(seed),
                            &[(seed as u32, 1.0), (100_000, 0.5)],
                        )
                    })
                    .collect();
                index.upsert(chunks).await.expect("concurrent upsert");
                if batch % 2 == 1 {
                    index.flush().await.expect("concurrent flush");
                }
            }
        }));
    }
    for reader in 0..3u64 {
        let index = Arc::clone(&index);
        tasks.push(tokio::spawn(async move {
            for round in 0..30 {
                index
                    .search_dense(&random_unit_vector(reader * 1000 + round), 5)
                    .await
                    .expect("concurrent dense search");
                index
                    .search_sparse(&sparse(&[(100_000, 1.0), (round as u32, 1.0)]), 5)
                    .await
                    .expect("concurrent sparse search");
                index.count().await.expect("concurrent count");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task must not panic");
    }

    let total = WRITERS * BATCHES_PER_WRITER * CHUNKS_PER_BATCH;
    assert_eq!(index.count().await.expect("count"), total as usize);
    for seed in [0, total / 2, total - 1] {
        let found = index
            .search_dense(&random_unit_vector(seed), 1)
            .await
            .expect("dense search");
        assert_eq!(ids(&found), vec![chunk_id(&format!("concurrent {seed}"))]);
    }
}

async fn hundreds_of_chunks_stay_searchable(index: Arc<dyn VectorIndex>) {
    const CHUNKS: u64 = 600;
    const BATCH: u64 = 100;
    // Written in batches with a flush after each, so thresholds (segment sealing, HNSW
    // building, merging) are crossed while data keeps arriving.
    for start in (0..CHUNKS).step_by(BATCH as usize) {
        let chunks = (start..start + BATCH)
            .map(|seed| {
                let name = format!("bulk {seed}");
                indexed(
                    chunk(&format!("doc {}", seed % 10), &name, &name),
                    random_unit_vector(seed),
                    &[(seed as u32, 1.0), (10_000 + (seed % 10) as u32, 1.0)],
                )
            })
            .collect();
        index.upsert(chunks).await.expect("upsert");
        index.flush().await.expect("flush");
    }
    assert_eq!(index.count().await.expect("count"), CHUNKS as usize);

    for seed in (0..CHUNKS).step_by(37) {
        let dense = index
            .search_dense(&random_unit_vector(seed), 3)
            .await
            .expect("dense search");
        assert_eq!(
            dense[0].chunk.id,
            chunk_id(&format!("bulk {seed}")),
            "dense search for {seed}"
        );
        assert!((dense[0].score - 1.0).abs() < SCORE_TOLERANCE);
        let keywords = index
            .search_sparse(&sparse(&[(seed as u32, 1.0)]), 3)
            .await
            .expect("sparse search");
        assert_eq!(
            ids(&keywords),
            vec![chunk_id(&format!("bulk {seed}"))],
            "sparse search for {seed}"
        );
    }

    // Deleting and replacing points that now live in sealed (possibly indexed) segments.
    index.delete_document("doc 3").await.expect("delete");
    assert_eq!(
        index.count().await.expect("count"),
        (CHUNKS - CHUNKS / 10) as usize
    );
    let deleted = index
        .search_sparse(&sparse(&[(10_003, 1.0)]), 100)
        .await
        .expect("sparse search");
    assert!(deleted.is_empty());
    index
        .upsert(vec![indexed(
            chunk("doc 0", "bulk 0", "replaced"),
            random_unit_vector(0),
            &[(0, 1.0)],
        )])
        .await
        .expect("upsert");
    index.flush().await.expect("flush");
    let replaced = index
        .search_dense(&random_unit_vector(0), 1)
        .await
        .expect("dense search");
    assert_eq!(replaced[0].chunk.text, "replaced");
    assert_eq!(
        index.count().await.expect("count"),
        (CHUNKS - CHUNKS / 10) as usize
    );
}

// ---------------------------------------------------------------------------------------------
// Backends

/// Runs every contract case against one backend, each case in a fresh index.
/// Searches rank ids; `chunks` reads the chunks asked for, in the order asked, leaving out ids
/// that are not stored (deleted meanwhile, never written, or not UUIDs at all).
async fn ids_rank_first_and_chunks_are_read_in_the_order_asked(index: Arc<dyn VectorIndex>) {
    let near = chunk("doc-a", "near", "the nearest chunk");
    let far = chunk("doc-b", "far", "a farther chunk");
    index
        .upsert(vec![
            indexed(near.clone(), axis(0), &[(1, 1.0)]),
            indexed(
                far.clone(),
                normalized(vec![
                    1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                ]),
                &[(1, 1.0), (2, 1.0)],
            ),
        ])
        .await
        .expect("upsert");
    index.flush().await.expect("flush");

    let dense = index.nearest_dense(&axis(0), 5).await.expect("dense ids");
    let dense_ids: Vec<&str> = dense.iter().map(|hit| hit.chunk_id.as_str()).collect();
    assert_eq!(dense_ids, vec![near.id.as_str(), far.id.as_str()]);
    assert!((dense[0].score - 1.0).abs() < SCORE_TOLERANCE, "{dense:?}");
    let keyword = index
        .nearest_sparse(&sparse(&[(2, 1.0)]), 5)
        .await
        .expect("sparse ids");
    assert_eq!(keyword.len(), 1, "only the chunk with term 2: {keyword:?}");
    assert_eq!(keyword[0].chunk_id, far.id);

    let asked = vec![
        far.id.clone(),
        chunk_id("never written"),
        "not a uuid".to_string(),
        near.id.clone(),
    ];
    let read = index.chunks(&asked).await.expect("chunks");
    assert_eq!(read, vec![far.clone(), near.clone()]);
    assert!(index.chunks(&[]).await.expect("no ids").is_empty());

    index.delete_document("doc-b").await.expect("delete");
    let read = index.chunks(&asked).await.expect("chunks after delete");
    assert_eq!(read, vec![near]);
}

macro_rules! backend_contract {
    ($backend:ident, $open:path) => {
        mod $backend {
            backend_contract!(@cases $open;
                empty_index_counts_zero_and_finds_nothing,
                dense_search_ranks_nearest_first_with_cosine_scores,
                dense_search_accepts_unnormalised_vectors,
                a_chunk_scores_by_its_best_view,
                upsert_with_existing_id_replaces_the_chunk,
                sparse_search_ranks_by_keyword_overlap,
                sparse_search_weights_rare_terms_above_common_ones,
                delete_document_removes_exactly_its_chunks,
                count_tracks_upserts_and_deletes,
                flush_keeps_everything_searchable,
                rejects_malformed_input_without_writing,
                concurrent_writers_and_readers_lose_nothing,
                hundreds_of_chunks_stay_searchable,
                ids_rank_first_and_chunks_are_read_in_the_order_asked,
            );
        }
    };
    (@cases $open:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $open().await else {
                    return;
                };
                super::$case(std::sync::Arc::clone(&backend.index)).await;
            }
        )+
    };
}

backend_contract!(edge, super::open_edge);
backend_contract!(edge_indexed, super::open_edge_indexed);
backend_contract!(
    edge_reading_on_the_pool,
    super::open_edge_reading_on_the_pool
);
backend_contract!(qdrant_server, super::open_qdrant_server);

// ---------------------------------------------------------------------------------------------
// What only the server backend has: a collection that outlives the client, someone else's
// collection, a server that is not there.

/// A second client on the same collection (another instance, or this one after a restart) sees
/// everything the first wrote, and searches score the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_reconnecting_keeps_the_collection() {
    let Some((url, collection, _guard)) = common::qdrant::scratch_collection().await else {
        return;
    };
    let settings = server_settings(&url, &collection);
    let first = QdrantServerIndex::connect(&settings, DIMENSION)
        .await
        .expect("first connect creates the collection");
    let chunks = (0..20)
        .map(|seed| {
            let name = format!("kept {seed}");
            indexed(
                chunk("doc", &name, &name),
                random_unit_vector(seed),
                &[(seed as u32, 1.0)],
            )
        })
        .collect();
    first.upsert(chunks).await.expect("upsert");
    let before = first
        .search_dense(&random_unit_vector(3), 5)
        .await
        .expect("search");
    drop(first);

    let second = QdrantServerIndex::connect(&settings, DIMENSION)
        .await
        .expect("second connect uses the existing collection");
    assert_eq!(second.count().await.expect("count"), 20);
    let after = second
        .search_dense(&random_unit_vector(3), 5)
        .await
        .expect("search");
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(ids(&after)[0], chunk_id("kept 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_refuses_a_collection_of_another_dimension() {
    let Some((url, collection, _guard)) = common::qdrant::scratch_collection().await else {
        return;
    };
    let settings = server_settings(&url, &collection);
    QdrantServerIndex::connect(&settings, DIMENSION)
        .await
        .expect("create the collection");
    match QdrantServerIndex::connect(&settings, DIMENSION * 2).await {
        Err(IndexError::Dimension { expected, got }) => {
            assert_eq!((expected, got), (DIMENSION, DIMENSION * 2));
        }
        Err(other) => panic!("expected a dimension error, got {other}"),
        Ok(_) => panic!("a collection of another dimension was accepted"),
    }
}

/// A collection someone else made (one plain vector, no keywords) is not used as a Baton index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_refuses_a_collection_that_is_not_a_baton_index() {
    use qdrant_client::qdrant::{CreateCollectionBuilder, Distance, VectorParamsBuilder};
    let Some((url, collection, _guard)) = common::qdrant::scratch_collection().await else {
        return;
    };
    let client = qdrant_client::Qdrant::from_url(&url)
        .skip_compatibility_check()
        .build()
        .expect("client");
    client
        .create_collection(
            CreateCollectionBuilder::new(&collection)
                .vectors_config(VectorParamsBuilder::new(DIMENSION as u64, Distance::Cosine)),
        )
        .await
        .expect("create a foreign collection");
    let error = QdrantServerIndex::connect(&server_settings(&url, &collection), DIMENSION)
        .await
        .err()
        .expect("a foreign collection is refused");
    let message = error.to_string();
    assert!(
        matches!(error, IndexError::Open { .. }) && message.contains("not a Baton index"),
        "{message}"
    );
    assert!(message.contains(&collection), "{message}");
}

/// Nothing listening: a clear error naming the address, within the timeout (no server needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_that_is_not_there_is_a_clear_open_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut settings = server_settings(&url, "baton_chunks");
    settings.timeout = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    let error = QdrantServerIndex::connect(&settings, DIMENSION)
        .await
        .err()
        .expect("no server, no index");
    let message = error.to_string();
    assert!(matches!(error, IndexError::Open { .. }), "{message}");
    assert!(
        message.contains(&url) && message.contains("cannot be reached"),
        "{message}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "connect must give up (took {:?})",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// The knowledge base over each backend with the real encoder: a folder synced by content hash
// (unchanged files are not re-embedded), an edit, a removal, and a restart of the index.

const KNOWLEDGE_DIMENSION: usize = baton::nlp::encoder::EMBEDDING_DIM;

async fn knowledge_sync_by_hash_edit_remove_and_restart<F, Fut>(reopen: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn VectorIndex>>,
{
    use baton::knowledge::ingest::KnowledgeBase;
    let folder = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("refunds.md"),
        "# Refunds\n\nRefunds go back to the card you paid with within 5 working days.\n",
    )
    .unwrap();
    std::fs::write(
        folder.path().join("shipping.md"),
        "# Shipping\n\nWe ship to the United Kingdom, Ireland and France. Express delivery takes one day.\n",
    )
    .unwrap();
    let store: Arc<dyn baton::store::Store> = Arc::new(
        baton::store::SqlStore::connect(&format!(
            "sqlite://{}",
            data.path().join("baton.db").display()
        ))
        .await
        .unwrap(),
    );
    let encoder = common::app::shared_encoder();
    let open = |index: Arc<dyn VectorIndex>| {
        KnowledgeBase::new(
            store.clone(),
            index,
            encoder.clone(),
            baton::knowledge::chunking::ChunkingOptions::default(),
        )
    };
    let top_source = |index: Arc<dyn VectorIndex>, question: &'static str| {
        let encoder = encoder.clone();
        async move {
            let query = encoder.embed(question).await.unwrap();
            index.search_dense(&query, 1).await.unwrap()[0]
                .chunk
                .source
                .clone()
        }
    };

    let index = reopen().await;
    let knowledge = open(index.clone());
    let first = knowledge.sync_folder(folder.path()).await.unwrap();
    assert_eq!(first.added.len(), 2, "{first:?}");
    let chunks = index.count().await.unwrap();
    assert!(chunks >= 2);
    let again = knowledge.sync_folder(folder.path()).await.unwrap();
    assert_eq!(
        (
            again.unchanged,
            again.added.len(),
            again.updated.len(),
            again.reindexed_chunks
        ),
        (2, 0, 0, 0),
        "{again:?}"
    );
    assert_eq!(index.count().await.unwrap(), chunks);

    std::fs::write(
        folder.path().join("refunds.md"),
        "# Refunds\n\nRefunds go back to the card you paid with within 10 working days; PayPal refunds take 2 days.\n",
    )
    .unwrap();
    let edited = knowledge.sync_folder(folder.path()).await.unwrap();
    assert_eq!(
        (edited.updated.len(), edited.unchanged),
        (1, 1),
        "{edited:?}"
    );
    assert_eq!(
        top_source(index.clone(), "how long does a refund take").await,
        "refunds.md"
    );

    std::fs::remove_file(folder.path().join("shipping.md")).unwrap();
    let removed = knowledge.sync_folder(folder.path()).await.unwrap();
    assert_eq!(
        removed.removed,
        vec!["shipping.md".to_string()],
        "{removed:?}"
    );
    assert_eq!(
        top_source(index.clone(), "do you ship to France").await,
        "refunds.md",
        "the removed document is not found"
    );
    let left = index.count().await.unwrap();
    drop(knowledge);
    drop(index);

    // A restart: the index is opened again and the folder synced as at start-up.
    let index = reopen().await;
    assert_eq!(index.count().await.unwrap(), left);
    let restarted = open(index.clone())
        .sync_folder(folder.path())
        .await
        .unwrap();
    assert_eq!(
        (
            restarted.unchanged,
            restarted.added.len(),
            restarted.reindexed_chunks
        ),
        (1, 0, 0),
        "{restarted:?}"
    );
    assert_eq!(
        top_source(index.clone(), "PayPal refund time").await,
        "refunds.md"
    );

    // An index embedded by another encoder model (as after `encoder.precision` changes) is
    // rebuilt at the next sync, and the running model is recorded.
    store.set_index_encoder("another-model").await.unwrap();
    let rebuilt = open(index.clone())
        .sync_folder(folder.path())
        .await
        .unwrap();
    assert_eq!(rebuilt.reindexed_chunks, left, "{rebuilt:?}");
    assert_eq!(
        store.index_encoder().await.unwrap().as_deref(),
        Some(encoder.model_digest())
    );
    assert_eq!(index.count().await.unwrap(), left);
    assert_eq!(top_source(index, "PayPal refund time").await, "refunds.md");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_knowledge_sync_by_hash_edit_remove_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    knowledge_sync_by_hash_edit_remove_and_restart(|| {
        let path = path.clone();
        async move {
            // The previous handle may still be closing its files on the blocking pool.
            for _ in 0..50 {
                match EdgeIndex::open(&path, KNOWLEDGE_DIMENSION) {
                    Ok(index) => return Arc::new(index) as Arc<dyn VectorIndex>,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
            Arc::new(EdgeIndex::open(&path, KNOWLEDGE_DIMENSION).expect("reopen the edge index"))
                as Arc<dyn VectorIndex>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_server_knowledge_sync_by_hash_edit_remove_and_restart() {
    let Some((url, collection, _guard)) = common::qdrant::scratch_collection().await else {
        return;
    };
    let settings = server_settings(&url, &collection);
    knowledge_sync_by_hash_edit_remove_and_restart(|| {
        let settings = settings.clone();
        async move {
            Arc::new(
                QdrantServerIndex::connect(&settings, KNOWLEDGE_DIMENSION)
                    .await
                    .expect("connect"),
            ) as Arc<dyn VectorIndex>
        }
    })
    .await;
}
