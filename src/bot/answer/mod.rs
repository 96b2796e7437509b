//! Writing the answer once the policy has decided to answer from knowledge. Without an LLM the
//! answer is the best chunk itself, trimmed to a readable length ([`ExtractiveAnswerer`]); with
//! one ([`llm::LlmAnswerWriter`], any OpenAI-compatible server through async-openai) the top
//! chunks become numbered passages, the answer must cite them, and an answer that cites nothing
//! is a decline the engine turns into a handoff.

pub mod grounding;
pub mod llm;
pub mod prompt;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;

use crate::knowledge::retrieval::KnowledgeHit;

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no knowledge to answer from")]
    NoKnowledge,
    /// The writer could not produce an answer (server down, too slow, circuit open, garbage):
    /// the engine falls back to the extractive answer. `cause` is a short machine-readable label
    /// (the metric's outcome), `detail` is for the log.
    #[error("answer writer unavailable ({cause}): {detail}")]
    Unavailable { cause: &'static str, detail: String },
}

/// What an answer writer is given.
pub struct AnswerRequest<'a> {
    pub question: &'a str,
    /// Best first; the policy only asks for an answer when the first is strong enough.
    pub hits: &'a [KnowledgeHit],
    /// Earlier turns, oldest first, as (role, text).
    pub history: &'a [(String, String)],
    /// Where to send the answer's text as it is written (the customer's WebSocket). The final
    /// reply is authoritative: it may differ from the deltas (citations checked, a decline).
    pub deltas: Option<&'a UnboundedSender<String>>,
}

/// A written answer, or a reasoned refusal to answer from the knowledge given.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Written {
        text: String,
        /// Indexes into `AnswerRequest::hits` of the knowledge the answer rests on, in the
        /// order first cited; never empty.
        cited: Vec<usize>,
    },
    /// The writer says the knowledge does not answer the question (or it cited nothing valid).
    Declined { why: String },
}

/// What the assistant offers an agent; each part is None when its prompt is missing or the
/// model failed at it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assist {
    pub summary: Option<String>,
    /// The draft, with the indexes of the hits it cites (only passages that were given).
    pub draft: Option<(String, Vec<usize>)>,
}

#[async_trait]
pub trait AnswerWriter: Send + Sync {
    /// The answer. Implementations must only use the given knowledge.
    async fn write(&self, request: AnswerRequest<'_>) -> Result<Answer, AnswerError>;
    /// For the agent who holds a conversation: a summary of it and a drafted reply grounded in
    /// `hits` (the knowledge found for the latest customer message). `transcript` is oldest
    /// first, as (role, text). None: this writer does not assist agents.
    async fn assist(
        &self,
        _hits: &[KnowledgeHit],
        _transcript: &[(String, String)],
    ) -> Option<Result<Assist, AnswerError>> {
        None
    }
    /// A short follow-up rewritten to stand alone with the question it follows, for retrieval.
    /// None: this writer does not rewrite (or could not); the engine joins the two instead.
    async fn rewrite_follow_up(&self, _previous: &str, _follow_up: &str) -> Option<String> {
        None
    }
    /// Short name for logs and the understanding ("extractive", "llm:MODEL").
    fn name(&self) -> &str;
}

/// Answers with the best chunk's text, cut at a sentence boundary.
pub struct ExtractiveAnswerer {
    pub max_chars: usize,
}

#[async_trait]
impl AnswerWriter for ExtractiveAnswerer {
    async fn write(&self, request: AnswerRequest<'_>) -> Result<Answer, AnswerError> {
        let best = request.hits.first().ok_or(AnswerError::NoKnowledge)?;
        Ok(Answer::Written {
            text: trim_to_sentences(&best.chunk.text, self.max_chars),
            cited: vec![0],
        })
    }

    fn name(&self) -> &str {
        "extractive"
    }
}

/// The longest prefix of whole sentences within `max_chars` (characters, not bytes). If even the
/// first sentence is longer, cut at a word boundary and add an ellipsis.
pub fn trim_to_sentences(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut end = 0;
    let mut chars_seen = 0;
    let mut previous: Option<char> = None;
    for (index, ch) in text.char_indices() {
        chars_seen += 1;
        if chars_seen > max_chars {
            break;
        }
        // A sentence ends at . ! ? or a line break, followed by whitespace.
        if ch.is_whitespace() && matches!(previous, Some('.' | '!' | '?' | '\n')) {
            end = index;
        }
        if ch == '\n' {
            end = index;
        }
        previous = Some(ch);
    }
    if end > 0 {
        return text[..end].trim_end().to_string();
    }
    let cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(space) if space > 0 => &cut[..space],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_text_and_cuts_long_text_at_sentences() {
        assert_eq!(trim_to_sentences("  Short.  ", 100), "Short.");
        let text = "First sentence here. Second one is longer than that. Third.";
        assert_eq!(trim_to_sentences(text, 30), "First sentence here.");
        assert_eq!(
            trim_to_sentences(text, 55),
            "First sentence here. Second one is longer than that."
        );
    }

    #[test]
    fn cuts_a_single_long_sentence_at_a_word_with_ellipsis() {
        let text = "word ".repeat(50);
        let trimmed = trim_to_sentences(&text, 22);
        assert!(trimmed.ends_with('…'));
        assert!(trimmed.chars().count() <= 22);
        assert!(!trimmed.contains("wor…"));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "Ça coûte 10 €. Épargnez davantage avec le forfait annuel à 99 €.";
        let trimmed = trim_to_sentences(text, 20);
        assert_eq!(trimmed, "Ça coûte 10 €.");
    }
}
