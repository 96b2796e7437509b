//! Finding the chunks that answer a message: dense nearest neighbours (the message embedding the
//! intent classifier also uses), optionally fused with keyword (BM25) matches.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::index::{IndexError, VectorIndex};
use crate::model::Chunk;
use crate::nlp::keywords::KeywordEncoder;

/// `[retrieval]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalSettings {
    /// Chunks returned per query.
    pub top_k: usize,
    /// Candidates fetched from each of the dense and keyword searches before fusion.
    pub candidates: usize,
    /// Fuse keyword (BM25) matches with the dense ranking.
    pub hybrid: bool,
    /// Keyword bonus added to the cosine similarity: the best keyword match of a query gets this
    /// much, others proportionally less.
    pub keyword_weight: f32,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        Self {
            top_k: 5,
            candidates: 20,
            hybrid: true,
            keyword_weight: 0.05,
        }
    }
}

/// One retrieved chunk.
#[derive(Debug, Clone, Serialize)]
pub struct KnowledgeHit {
    pub chunk: Chunk,
    /// Cosine similarity between the message and the chunk: the figure thresholds are set against.
    /// A chunk found only by keywords gets the lowest similarity among the dense candidates, so a
    /// keyword match alone never makes the bot more confident.
    pub score: f32,
    /// BM25-like keyword score, when the chunk matched by keywords.
    pub keyword_score: Option<f32>,
    /// The ranking score: `score` plus the keyword bonus.
    pub fused: f32,
}

pub struct Retriever {
    index: Arc<dyn VectorIndex>,
    keywords: KeywordEncoder,
    settings: RetrievalSettings,
}

impl Retriever {
    pub fn new(index: Arc<dyn VectorIndex>, settings: RetrievalSettings) -> Self {
        Self {
            index,
            keywords: KeywordEncoder::default(),
            settings,
        }
    }

    pub fn settings(&self) -> &RetrievalSettings {
        &self.settings
    }

    /// The top chunks for a message, best first. `embedding` is the message's (normalised) embedding.
    pub async fn search(
        &self,
        text: &str,
        embedding: &[f32],
    ) -> Result<Vec<KnowledgeHit>, IndexError> {
        self.search_top(text, embedding, self.settings.top_k).await
    }

    /// As [`Retriever::search`] with an explicit number of results (evaluations ask for 10).
    pub async fn search_top(
        &self,
        text: &str,
        embedding: &[f32],
        limit: usize,
    ) -> Result<Vec<KnowledgeHit>, IndexError> {
        let candidates = self.settings.candidates.max(limit);
        let dense = self.index.search_dense(embedding, candidates).await?;
        let keyword = if self.settings.hybrid {
            let query = self.keywords.query_vector(text);
            if query.indices.is_empty() {
                Vec::new()
            } else {
                self.index.search_sparse(&query, candidates).await?
            }
        } else {
            Vec::new()
        };
        let floor = dense.last().map(|hit| hit.score).unwrap_or(0.0);

        // Fusion on the cosine scale: the dense similarity plus a small bonus for keyword
        // overlap, scaled by the best keyword score of this query. Rank fusion (RRF) was tried
        // first and cost StackFAQ recall@1 four points: paraphrased questions share few words
        // with their answers, so keyword ranks are noisy and only a light touch helps.
        let mut fused: HashMap<String, KnowledgeHit> = HashMap::new();
        for hit in dense {
            fused.insert(
                hit.chunk.id.clone(),
                KnowledgeHit {
                    fused: hit.score,
                    score: hit.score,
                    keyword_score: None,
                    chunk: hit.chunk,
                },
            );
        }
        let best_keyword = keyword.first().map(|hit| hit.score).filter(|s| *s > 0.0);
        let weight = self.settings.keyword_weight;
        for hit in keyword {
            let bonus = best_keyword
                .map(|best| weight * hit.score / best)
                .unwrap_or(0.0);
            fused
                .entry(hit.chunk.id.clone())
                .and_modify(|existing| {
                    existing.fused += bonus;
                    existing.keyword_score = Some(hit.score);
                })
                .or_insert(KnowledgeHit {
                    fused: floor + bonus,
                    score: floor,
                    keyword_score: Some(hit.score),
                    chunk: hit.chunk,
                });
        }
        let mut hits: Vec<KnowledgeHit> = fused.into_values().collect();
        hits.sort_by(|a, b| {
            b.fused
                .total_cmp(&a.fused)
                .then(b.score.total_cmp(&a.score))
                .then_with(|| a.chunk.id.cmp(&b.chunk.id))
        });
        hits.truncate(limit);
        Ok(hits)
    }
}

/// The texts embedded for a chunk, one dense view each; a chunk scores by its best view.
/// - FAQ entries: the question alone (customers ask questions, and a paraphrase is closest to the
///   question) and the question with its answer (for questions the answer addresses in other
///   words). On StackFAQ the two views lift recall@1 from 94.5% (question + answer only) to
///   about 96%; see evals/RESULTS.md.
/// - Sections: the title and headings with the text, so "Refunds > PayPal" is part of what
///   "refund to paypal?" matches.
pub fn embedding_views(chunk: &Chunk) -> Vec<String> {
    match &chunk.question {
        Some(question) => vec![question.clone(), format!("{question}\n{}", chunk.text)],
        None => vec![section_text(chunk)],
    }
}

fn section_text(chunk: &Chunk) -> String {
    let mut text = chunk.title.clone();
    for heading in &chunk.heading_path {
        text.push_str(" > ");
        text.push_str(heading);
    }
    text.push('\n');
    text.push_str(&chunk.text);
    text
}

/// The text matched by keywords: everything a customer might quote.
pub fn keyword_text(chunk: &Chunk) -> String {
    match &chunk.question {
        Some(question) => format!("{question}\n{}\n{}", chunk.text, chunk.title),
        None => section_text(chunk),
    }
}
