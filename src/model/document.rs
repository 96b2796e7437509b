//! The document and chunk model shared by ingestion, the vector index and the SQL store.

use serde::{Deserialize, Serialize};

/// What kind of source a document came from; decides how it is chunked and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Markdown,
    Text,
    Html,
    Pdf,
    /// A question/answer file (`*.faq.yaml`, `faq.yaml`, or CSV with `question,answer`).
    Faq,
}

/// One source file (or upload) in the knowledge base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable id derived from `source` (see `Document::id_for_source`), so re-ingesting the same path
    /// replaces the same document.
    pub id: String,
    /// Path relative to the knowledge folder, or the upload name.
    pub source: String,
    pub title: String,
    /// Public URL from front matter, if any; shown to customers instead of `source`.
    pub url: Option<String>,
    pub kind: DocumentKind,
    /// sha256 (hex) of the raw file bytes: unchanged files are skipped on re-ingest.
    pub content_hash: String,
    pub chunks: Vec<Chunk>,
}

/// A retrievable unit of a document: a section, a paragraph group, or one FAQ entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Stable id: a UUID v5 of (document id, ordinal, text hash).
    pub id: String,
    pub document_id: String,
    /// Position of the chunk within its document, from 0.
    pub ordinal: u32,
    /// The document title.
    pub title: String,
    /// Headings above this chunk, outermost first (empty for FAQ entries and plain text).
    pub heading_path: Vec<String>,
    /// The text a customer would read. For FAQ entries: the answer.
    pub text: String,
    /// For FAQ entries: the question. Retrieval embeds the question (plus answer) for these.
    pub question: Option<String>,
    pub source: String,
    pub url: Option<String>,
    /// sha256 (hex) of `text` (and question).
    pub content_hash: String,
}

impl Chunk {
    /// What to call this chunk for a reader: the FAQ question, or the document title with the
    /// nearest heading ("Refunds — Refunds for devices"), or the title alone.
    pub fn display_title(&self) -> String {
        match (&self.question, self.heading_path.last()) {
            (Some(question), _) => question.clone(),
            (None, Some(heading)) if heading != &self.title => {
                format!("{} — {}", self.title, heading)
            }
            _ => self.title.clone(),
        }
    }
}
