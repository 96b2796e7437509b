//! Finding the chunks that answer a message: dense nearest neighbours (the message embedding the
//! intent classifier also uses), optionally fused with keyword (BM25) matches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::index::{chunks_by_id, IndexError, ScoredId, VectorIndex};
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
    /// Bonus added to the ranking score of a section written as numbered steps when the message
    /// asks how to do something ("what are the steps to pair a sensor"). A long numbered
    /// procedure reads as less similar to a short question than a short section that shares its
    /// words ("Put a Sensor back in pairing mode"), yet it is the answer. It reorders the top
    /// `top_k` only and never changes `score`, which thresholds read. 0 turns it off.
    pub steps_weight: f32,
    /// Bonus added to the ranking score of a section for each word of its own heading that the
    /// message uses too (stemmed, without stop words; at most three count): "the reset email
    /// isn't coming through" asks the question of "The reset email hasn't arrived" rather than
    /// of "Still can't get in?", a section of the same article that reads about as close as a
    /// whole. Like `steps_weight` it reorders the top `top_k` only and never changes `score`.
    /// 0 turns it off.
    pub heading_weight: f32,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        Self {
            top_k: 5,
            candidates: 20,
            hybrid: true,
            keyword_weight: 0.05,
            steps_weight: 0.03,
            heading_weight: 0.01,
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
        let keyword_query = self
            .settings
            .hybrid
            .then(|| self.keywords.query_vector(text))
            .filter(|query| !query.indices.is_empty());
        // The two searches are independent: side by side, a message waits for the slower one
        // rather than for both. They return ids and scores; only the chunks kept are read.
        let (dense, keyword) =
            tokio::join!(self.index.nearest_dense(embedding, candidates), async {
                match &keyword_query {
                    Some(query) => self.index.nearest_sparse(query, candidates).await,
                    None => Ok(Vec::new()),
                }
            });
        let ranked = fuse(dense?, keyword?, self.settings.keyword_weight, limit);
        let ids: Vec<String> = ranked.iter().map(|hit| hit.chunk_id.clone()).collect();
        let mut chunks = chunks_by_id(self.index.as_ref(), &ids).await?;
        let wants_steps = self.settings.steps_weight > 0.0 && asks_for_steps(text);
        let message_terms = if self.settings.heading_weight > 0.0 {
            heading_terms(&self.keywords, text)
        } else {
            HashSet::new()
        };
        // A chunk deleted between the search and the read (a document removed meanwhile) is
        // left out.
        let mut hits: Vec<KnowledgeHit> = ranked
            .into_iter()
            .filter_map(|hit| {
                chunks.remove(&hit.chunk_id).map(|chunk| {
                    let steps_bonus = if wants_steps && has_numbered_steps(&chunk.text) {
                        self.settings.steps_weight
                    } else {
                        0.0
                    };
                    let heading_bonus = self.settings.heading_weight
                        * heading_overlap(&self.keywords, &chunk, &message_terms) as f32;
                    KnowledgeHit {
                        chunk,
                        score: hit.score,
                        keyword_score: hit.keyword_score,
                        fused: hit.fused + steps_bonus + heading_bonus,
                    }
                })
            })
            .collect();
        // The bonuses above may have changed the order (`ranked` came sorted without them).
        hits.sort_by(|a, b| {
            best_first(
                (a.fused, a.score, &a.chunk.id),
                (b.fused, b.score, &b.chunk.id),
            )
        });
        Ok(hits)
    }
}

/// The terms a heading match counts: stemmed, without stop words, and longer than two letters
/// ("isn't" splits into "isn" and "t", which say nothing).
fn heading_terms(keywords: &KeywordEncoder, text: &str) -> HashSet<String> {
    keywords
        .terms(text)
        .into_iter()
        .filter(|term| term.chars().count() > 2)
        .collect()
}

/// How many words of a section's own heading (the last of its heading path) the message uses, at
/// most [`HEADING_WORDS_COUNTED`]. FAQ entries count none: their question is a dense view of its
/// own already.
fn heading_overlap(
    keywords: &KeywordEncoder,
    chunk: &Chunk,
    message_terms: &HashSet<String>,
) -> usize {
    if chunk.question.is_some() || message_terms.is_empty() {
        return 0;
    }
    let Some(heading) = chunk.heading_path.last() else {
        return 0;
    };
    heading_terms(keywords, heading)
        .intersection(message_terms)
        .count()
        .min(HEADING_WORDS_COUNTED)
}

/// Most heading words a section's bonus counts, so a long heading that repeats the message
/// cannot outweigh the dense similarity.
const HEADING_WORDS_COUNTED: usize = 3;

/// The ranking order of hits given as (ranking score, cosine, chunk id): best ranking score
/// first, then best cosine, then chunk id so equal hits keep a stable order.
fn best_first(a: (f32, f32, &str), b: (f32, f32, &str)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0)
        .then(b.1.total_cmp(&a.1))
        .then_with(|| a.2.cmp(b.2))
}

/// Whether a message asks how to do something, i.e. for a procedure: "what are the steps to
/// pair a sensor", "how do I set up the thermostat", "instructions for installing it".
fn asks_for_steps(text: &str) -> bool {
    let text = text.to_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|word| !word.is_empty())
        .collect();
    let has = |word: &str| words.contains(&word);
    let has_pair = |first: &str, second: &str| {
        words
            .windows(2)
            .any(|pair| pair[0] == first && pair[1] == second)
    };
    has("steps")
        || has("instructions")
        || has("step")
        || has("setup")
        || has_pair("set", "up")
        || has_pair("how", "to")
        || (has("how") && (has_pair("do", "i") || has_pair("can", "i") || has_pair("do", "you")))
}

/// Whether a chunk's text holds a procedure: at least two lines that start with a step number
/// ("1. In the app...", "2) Pull out the tab").
fn has_numbered_steps(text: &str) -> bool {
    text.lines()
        .filter(|line| {
            let line = line.trim_start();
            let digits = line.chars().take_while(char::is_ascii_digit).count();
            (1..=2).contains(&digits)
                && line[digits..].starts_with(['.', ')'])
                && line[digits + 1..].starts_with(' ')
        })
        .take(2)
        .count()
        == 2
}

/// Whether a section's answer is to go to a person: its first sentence sends the reader to the
/// team ("Contact our technical team in chat.", "Contact us with your order number and a photo",
/// "Chat with our team"). In a chat with the bot, that person is who a handoff reaches.
pub fn refers_to_a_person(text: &str) -> bool {
    let first_sentence = text
        .trim_start()
        .split(['.', '!', '?', '\n', ':'])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let words: Vec<&str> = first_sentence
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && !word.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let words = match words.first() {
        Some(&"please") => &words[1..],
        _ => &words[..],
    };
    let names_the_team = |rest: &[&str]| {
        rest.iter()
            .take(4)
            .any(|word| matches!(*word, "us" | "team" | "support" | "agent" | "person"))
    };
    match words {
        ["contact", rest @ ..] => names_the_team(rest),
        ["chat" | "talk" | "speak", "with" | "to", rest @ ..] => names_the_team(rest),
        ["ask", "our", rest @ ..] => names_the_team(rest),
        _ => false,
    }
}

/// A candidate ranked before its chunk is read.
#[derive(Debug, Clone, PartialEq)]
struct RankedId {
    chunk_id: String,
    score: f32,
    keyword_score: Option<f32>,
    fused: f32,
}

/// Fusion on the cosine scale: the dense similarity plus a small bonus for keyword overlap,
/// scaled by the best keyword score of this query. Rank fusion (RRF) was tried first and cost
/// StackFAQ recall@1 four points: paraphrased questions share few words with their answers, so
/// keyword ranks are noisy and only a light touch helps. Returns the best `limit`, best first.
fn fuse(dense: Vec<ScoredId>, keyword: Vec<ScoredId>, weight: f32, limit: usize) -> Vec<RankedId> {
    let floor = dense.last().map(|hit| hit.score).unwrap_or(0.0);
    let mut fused: HashMap<String, RankedId> = HashMap::new();
    for hit in dense {
        fused.insert(
            hit.chunk_id.clone(),
            RankedId {
                chunk_id: hit.chunk_id,
                score: hit.score,
                keyword_score: None,
                fused: hit.score,
            },
        );
    }
    let best_keyword = keyword.first().map(|hit| hit.score).filter(|s| *s > 0.0);
    for hit in keyword {
        let bonus = best_keyword
            .map(|best| weight * hit.score / best)
            .unwrap_or(0.0);
        fused
            .entry(hit.chunk_id.clone())
            .and_modify(|existing| {
                existing.fused += bonus;
                existing.keyword_score = Some(hit.score);
            })
            // A chunk found only by keywords gets the lowest dense similarity among the
            // candidates: a keyword match alone never makes the bot more confident.
            .or_insert(RankedId {
                chunk_id: hit.chunk_id,
                score: floor,
                keyword_score: Some(hit.score),
                fused: floor + bonus,
            });
    }
    let mut ranked: Vec<RankedId> = fused.into_values().collect();
    ranked.sort_by(|a, b| {
        best_first(
            (a.fused, a.score, &a.chunk_id),
            (b.fused, b.score, &b.chunk_id),
        )
    });
    ranked.truncate(limit);
    ranked
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(chunk_id: &str, score: f32) -> ScoredId {
        ScoredId {
            chunk_id: chunk_id.to_string(),
            score,
        }
    }

    #[test]
    fn keyword_matches_add_a_bonus_scaled_by_the_best_keyword_score() {
        let dense = vec![scored("a", 0.80), scored("b", 0.78), scored("c", 0.50)];
        let keyword = vec![scored("b", 4.0), scored("a", 1.0)];
        let ranked = fuse(dense, keyword, 0.05, 5);
        let order: Vec<&str> = ranked.iter().map(|hit| hit.chunk_id.as_str()).collect();
        assert_eq!(order, vec!["b", "a", "c"]);
        assert!((ranked[0].fused - 0.83).abs() < 1e-6, "{ranked:?}");
        assert!((ranked[1].fused - 0.8125).abs() < 1e-6, "{ranked:?}");
        assert_eq!(
            ranked[0].score, 0.78,
            "the cosine stays what thresholds read"
        );
        assert_eq!(ranked[0].keyword_score, Some(4.0));
        assert_eq!(ranked[2].keyword_score, None);
    }

    #[test]
    fn a_keyword_only_match_gets_the_lowest_dense_score() {
        let dense = vec![scored("a", 0.80), scored("b", 0.60)];
        let keyword = vec![scored("k", 2.0)];
        let ranked = fuse(dense, keyword, 0.05, 5);
        let only_keyword = ranked.iter().find(|hit| hit.chunk_id == "k").expect("k");
        assert_eq!(only_keyword.score, 0.60);
        assert!((only_keyword.fused - 0.65).abs() < 1e-6);
        // No dense candidates at all: the keyword match scores zero on the cosine scale.
        let ranked = fuse(Vec::new(), vec![scored("k", 2.0)], 0.05, 5);
        assert_eq!(ranked[0].score, 0.0);
    }

    #[test]
    fn sections_that_send_the_reader_to_the_team_are_recognised() {
        for text in [
            "Contact our technical team in chat. Tell us the device and what you tried.",
            "Contact us with your order number and a photo of the item.",
            "**Contact us in chat and ask about an unauthorised charge.** We look at it first.",
            "Please contact our support team: they can verify your identity.",
            "Chat with our team from the Help button in the app.",
            "Talk to a person in our billing team.",
            "Ask our billing team in chat to re-issue the invoice.",
        ] {
            assert!(refers_to_a_person(text), "{text}");
        }
        for text in [
            // The referral is not the section's answer, only one of its later steps.
            "Restart the router first. If that fails, contact our team in chat.",
            "1. Check the power. 2. Contact us if the light stays off.",
            "Contact details are on your invoice.",
            "Contact lenses are not something we sell.",
            "Our team is open Monday to Friday.",
            "",
        ] {
            assert!(!refers_to_a_person(text), "{text}");
        }
    }

    #[test]
    fn procedures_are_recognised_in_questions_and_in_chunks() {
        for question in [
            "what are the steps to pair a sensor",
            "how do I pair a new sensor?",
            "How can I change my email",
            "how to set up the thermostat",
            "instructions for the hub please",
            "thermostat setup",
        ] {
            assert!(asks_for_steps(question), "{question}");
        }
        for question in [
            "do you ship to canada",
            "how long does delivery take",
            "why was I charged twice",
            "my sensor stopped flashing blue",
            "how much is plus",
        ] {
            assert!(!asks_for_steps(question), "{question}");
        }
        assert!(has_numbered_steps(
            "Do this:\n1. In the app, tap +.\n2. Pull out the tab.\n3. Scan the code."
        ));
        assert!(has_numbered_steps("  1) Open it\n  2) Close it"));
        assert!(!has_numbered_steps("1. Only one step here."));
        assert!(!has_numbered_steps(
            "It costs 2.50 a month.\n2026 was a good year.\n3.5 GHz radios"
        ));
    }

    fn section(heading_path: &[&str], question: Option<&str>) -> Chunk {
        Chunk {
            id: "c".into(),
            document_id: "d".into(),
            ordinal: 0,
            title: "Reset your password".into(),
            heading_path: heading_path.iter().map(|h| h.to_string()).collect(),
            text: "Wait 10 minutes and check your spam folder.".into(),
            question: question.map(str::to_string),
            source: "account/reset-password.md".into(),
            url: None,
            content_hash: String::new(),
        }
    }

    #[test]
    fn a_section_counts_the_words_of_its_own_heading_the_message_uses() {
        let keywords = KeywordEncoder::default();
        let message = heading_terms(&keywords, "the reset email isn't coming through");
        let overlap = |heading_path: &[&str]| {
            heading_overlap(&keywords, &section(heading_path, None), &message)
        };
        // "reset" and "email"; the "t" of "hasn't" and "isn't" does not count.
        assert_eq!(
            overlap(&["Reset your password", "The reset email hasn't arrived"]),
            2
        );
        // Only the section's own heading counts, not the ones above it.
        assert_eq!(overlap(&["Reset your password", "Still can't get in?"]), 0);
        assert_eq!(overlap(&[]), 0);
        // Stemmed: "emails" is "email".
        assert_eq!(overlap(&["Emails we send"]), 1);
        // FAQ entries have their question as a view of their own.
        let faq = section(
            &["The reset email hasn't arrived"],
            Some("Where is my reset email?"),
        );
        assert_eq!(heading_overlap(&keywords, &faq, &message), 0);
        // At most three words count.
        let long = heading_terms(&keywords, "reset email link code password arrived");
        let heading = ["Reset email, link, code or password never arrived"];
        assert_eq!(
            heading_overlap(&keywords, &section(&heading, None), &long),
            HEADING_WORDS_COUNTED
        );
    }

    #[test]
    fn ties_break_by_cosine_then_id_and_the_list_is_cut_to_the_limit() {
        let dense = vec![scored("b", 0.7), scored("a", 0.7), scored("c", 0.6)];
        let ranked = fuse(dense, Vec::new(), 0.05, 2);
        let order: Vec<&str> = ranked.iter().map(|hit| hit.chunk_id.as_str()).collect();
        assert_eq!(order, vec!["a", "b"]);
    }
}
