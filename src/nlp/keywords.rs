//! Keyword vectors for BM25-style matching. Dense embeddings miss exact terms (product names, error
//! codes, "2FA"); a sparse vector of stemmed terms catches them. The index applies IDF; this module
//! supplies the term-frequency side, saturated and length-normalised as in BM25.

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};

use crate::index::SparseVector;

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;
/// Typical chunk length in terms; chunk lengths are normalised against it.
const AVERAGE_TERMS: f32 = 60.0;

/// Words too common to say anything about a support question.
const STOPWORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "for", "from", "get", "got", "had", "has", "have", "hi", "hello",
    "how", "i", "if", "im", "in", "into", "is", "it", "its", "just", "me", "my", "of", "on", "or",
    "our", "please", "so", "that", "the", "their", "them", "then", "there", "this", "to", "us",
    "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "would",
    "you", "your",
];

/// Turns text into stemmed terms and sparse vectors. Cheap to build; share one.
pub struct KeywordEncoder {
    stemmer: Stemmer,
}

impl Default for KeywordEncoder {
    fn default() -> Self {
        Self {
            stemmer: Stemmer::create(Algorithm::English),
        }
    }
}

impl KeywordEncoder {
    /// Lower-cased, stemmed terms without stop words, in order.
    pub fn terms(&self, text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
            .map(str::to_lowercase)
            .filter(|word| !STOPWORDS.contains(&word.as_str()))
            .map(|word| self.stemmer.stem(&word).into_owned())
            .collect()
    }

    /// Document side: BM25 term-frequency weights (IDF is applied by the index).
    pub fn document_vector(&self, text: &str) -> SparseVector {
        let terms = self.terms(text);
        let length_norm = 1.0 - B + B * (terms.len() as f32 / AVERAGE_TERMS);
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for term in &terms {
            *counts.entry(term_id(term)).or_default() += 1.0;
        }
        to_sparse(
            counts
                .into_iter()
                .map(|(id, tf)| (id, tf * (K1 + 1.0) / (tf + K1 * length_norm))),
        )
    }

    /// Query side: each distinct term once, weight 1.
    pub fn query_vector(&self, text: &str) -> SparseVector {
        let mut ids: Vec<u32> = self.terms(text).iter().map(|t| term_id(t)).collect();
        ids.sort_unstable();
        ids.dedup();
        to_sparse(ids.into_iter().map(|id| (id, 1.0)))
    }
}

fn to_sparse(weights: impl Iterator<Item = (u32, f32)>) -> SparseVector {
    let mut pairs: Vec<(u32, f32)> = weights.collect();
    pairs.sort_unstable_by_key(|(id, _)| *id);
    SparseVector {
        indices: pairs.iter().map(|(id, _)| *id).collect(),
        values: pairs.iter().map(|(_, w)| *w).collect(),
    }
}

/// Stable 32-bit id of a term (FNV-1a). Collisions among a knowledge base's few thousand terms are
/// rare and only blur two terms together.
fn term_id(term: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in term.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_stemmed_lowercased_and_stopword_free() {
        let encoder = KeywordEncoder::default();
        assert_eq!(
            encoder.terms("How do I reset my Passwords?"),
            vec!["reset", "password"]
        );
        assert_eq!(
            encoder.terms("refunds refunded REFUND"),
            vec!["refund", "refund", "refund"]
        );
        assert!(encoder.terms("the and of").is_empty());
    }

    #[test]
    fn query_and_document_vectors_share_ids_and_saturate() {
        let encoder = KeywordEncoder::default();
        let query = encoder.query_vector("refund refund policy");
        assert_eq!(query.indices.len(), 2);
        assert!(query.indices.windows(2).all(|w| w[0] < w[1]));

        let once = encoder.document_vector("refund policy");
        let thrice = encoder.document_vector("refund refund refund policy");
        let weight = |v: &SparseVector, term: &str| {
            let id = term_id(term);
            v.indices
                .iter()
                .position(|&i| i == id)
                .map(|p| v.values[p])
                .unwrap()
        };
        let (w1, w3) = (weight(&once, "refund"), weight(&thrice, "refund"));
        assert!(w3 > w1, "more occurrences weigh more");
        assert!(w3 < 3.0 * w1, "but saturate");
        assert!(query.indices.contains(&term_id("refund")));
    }
}
