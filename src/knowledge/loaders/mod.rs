//! Turning knowledge files into [`Document`]s with structure-aware chunks.
//!
//! Supported formats, chosen by file name (see [`document_kind_for`]):
//!
//! - Markdown (`.md`, `.markdown`), with optional YAML front matter (`title`, `url`). Parsed with
//!   pulldown-cmark: headings build the heading path; paragraphs, lists, tables and code blocks
//!   become text; links keep their text; images and raw HTML are dropped.
//! - HTML (`.html`, `.htm`), parsed with scraper/html5ever. Page chrome is dropped (`script`,
//!   `style`, `nav`, `aside`, `noscript`, form controls, hidden elements, and `header`/`footer`
//!   unless they sit inside an `article`, `main` or `section`); when the page has a `<main>`, only
//!   it is read. `<link rel="canonical">` becomes the document URL.
//! - Plain text (`.txt`, `.text`): paragraphs split on blank lines.
//! - PDF (`.pdf`) via pdf-extract, with line wraps and hyphenation repaired.
//! - FAQ files: `faq.yaml`, `*.faq.yaml`, `*.faq.yml` (a list of `{question, answer}`, or a
//!   mapping with a `faqs:` or `questions:` list and optional `title`/`url`), and `*.csv` with
//!   `question` and `answer` header columns. One chunk per entry; answers are never split.
//!
//! Title precedence: front matter `title` (FAQ YAML: top-level `title`) > the first level-1
//! heading (HTML: `<title>`, then the first `<h1>`; PDF: metadata title, then the first line;
//! text: the first line when it is short) > the file name, humanised ("getting-started.md" ->
//! "Getting started"). A level-1 heading that repeats the title is not put in `heading_path`.
//!
//! Ids are stable: the document id hashes the source name, and a chunk id is a UUID v5 of the
//! document id, the chunk's ordinal and its content hash, so re-ingesting a file whose section
//! changed keeps the ids of chunks that did not.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;
use walkdir::WalkDir;

use super::chunking::{chunk_sections, normalise_whitespace, ChunkDraft, ChunkingOptions, Section};
use crate::model::{Chunk, Document, DocumentKind};

mod faq;
mod html;
mod markdown;
mod pdf;
mod structure;
mod text;

use faq::{parse_faq_csv, parse_faq_yaml};
use html::parse_html;
use markdown::parse_markdown;
use pdf::parse_pdf;
use text::parse_text;

/// Files above this size are refused: a 20 MB manual is already far more than a support bot
/// should embed in one go, and parsing untrusted PDFs of unbounded size is a denial-of-service
/// risk.
pub const MAX_DOCUMENT_BYTES: u64 = 20 * 1024 * 1024;

/// Namespace for chunk ids (UUID v5). Changing it changes every chunk id, forcing a full re-index.
const CHUNK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b0a_7e3c_91d4_4f6e_8a2b_c7d1_e9f0_3a64);

/// A title line longer than this is treated as body text rather than as the title.
const MAX_TITLE_LINE_CHARS: usize = 100;

/// Why a knowledge file could not be turned into a document. Every message names the file (and
/// the line, when known) so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unsupported file type (expected Markdown, text, HTML, PDF, a *.faq.yaml file or a question,answer CSV)")]
    Unsupported { path: String },
    #[error("{path}{}: {reason}", line_suffix(*.line))]
    Parse {
        path: String,
        line: Option<usize>,
        reason: String,
    },
    #[error("{path}: no text found")]
    Empty { path: String },
    #[error("{path}: {size} bytes is over the {limit}-byte limit for one document")]
    TooLarge { path: String, size: u64, limit: u64 },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|line| format!(":{line}")).unwrap_or_default()
}

impl LoadError {
    fn parse(path: &str, line: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Parse {
            path: path.to_string(),
            line,
            reason: reason.into(),
        }
    }
}

/// `"doc_"` + the first 16 hex digits of sha256(source): stable across runs and machines, so
/// re-ingesting the same path replaces the same document.
pub fn document_id_for_source(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    format!("doc_{}", &hex::encode(digest)[..16])
}

/// The document kind for a file name, or `None` when the file is not a knowledge document
/// (including `intents.yaml`/`intents.yml`, which configure intent detection).
pub fn document_kind_for(source: &str) -> Option<DocumentKind> {
    let name = file_name_of(source).to_ascii_lowercase();
    if matches!(name.as_str(), "intents.yaml" | "intents.yml") {
        return None;
    }
    if matches!(name.as_str(), "faq.yaml" | "faq.yml")
        || name.ends_with(".faq.yaml")
        || name.ends_with(".faq.yml")
    {
        return Some(DocumentKind::Faq);
    }
    let (_, extension) = name.rsplit_once('.')?;
    match extension {
        "md" | "markdown" => Some(DocumentKind::Markdown),
        "txt" | "text" => Some(DocumentKind::Text),
        "html" | "htm" => Some(DocumentKind::Html),
        "pdf" => Some(DocumentKind::Pdf),
        "csv" => Some(DocumentKind::Faq),
        _ => None,
    }
}

/// Lists the supported files under a knowledge folder, recursively, as `(path, source name)`
/// pairs sorted by source name (the path is `dir` joined with the source name). Source names are relative to `dir` and use `/` on every
/// platform, so document ids do not depend on where or on which OS the folder lives. Dotfiles and
/// dot-directories (`.git`, `.DS_Store`) and `intents.yaml` are skipped, as are unsupported files.
pub fn discover_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, LoadError> {
    let mut found = Vec::new();
    let entries = WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
    for entry in entries {
        let entry = entry.map_err(|err| LoadError::Io {
            path: err.path().unwrap_or(dir).display().to_string(),
            source: err.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let source = relative
            .components()
            .map(|component| component.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if document_kind_for(&source).is_some() {
            found.push((entry.path().to_path_buf(), source));
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(found)
}

fn is_hidden(file_name: &std::ffi::OsStr) -> bool {
    file_name.to_string_lossy().starts_with('.')
}

/// Reads and loads one file, refusing oversized files before reading them into memory.
pub fn load_document_from_path(
    path: &Path,
    source: &str,
    options: &ChunkingOptions,
) -> Result<Document, LoadError> {
    let io_error = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_error)?.len();
    check_size(source, size)?;
    let bytes = std::fs::read(path).map_err(io_error)?;
    load_document(source, &bytes, options)
}

/// Turns one file (or upload) into a document. `source` is the path relative to the knowledge
/// folder or the upload name; it decides the format, the document id and what is displayed.
/// An FAQ file becomes one document with one chunk per entry.
pub fn load_document(
    source: &str,
    bytes: &[u8],
    options: &ChunkingOptions,
) -> Result<Document, LoadError> {
    let kind = document_kind_for(source).ok_or_else(|| LoadError::Unsupported {
        path: source.to_string(),
    })?;
    check_size(source, bytes.len() as u64)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(LoadError::Empty {
            path: source.to_string(),
        });
    }
    let parsed = match kind {
        DocumentKind::Markdown => parse_markdown(source, decode_utf8(source, bytes)?, options)?,
        DocumentKind::Text => parse_text(source, decode_utf8(source, bytes)?, options),
        DocumentKind::Html => parse_html(source, decode_utf8(source, bytes)?, options),
        DocumentKind::Pdf => parse_pdf(source, bytes, options)?,
        DocumentKind::Faq if file_name_of(source).to_ascii_lowercase().ends_with(".csv") => {
            parse_faq_csv(source, decode_utf8(source, bytes)?)?
        }
        DocumentKind::Faq => parse_faq_yaml(source, decode_utf8(source, bytes)?)?,
    };
    if parsed.drafts.is_empty() {
        return Err(LoadError::Empty {
            path: source.to_string(),
        });
    }
    Ok(build_document(source, kind, bytes, parsed))
}

fn check_size(source: &str, size: u64) -> Result<(), LoadError> {
    if size > MAX_DOCUMENT_BYTES {
        return Err(LoadError::TooLarge {
            path: source.to_string(),
            size,
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(())
}

/// What a format parser extracts before ids and hashes are assigned.
struct Parsed {
    title: String,
    url: Option<String>,
    drafts: Vec<ChunkDraft>,
}

fn build_document(source: &str, kind: DocumentKind, bytes: &[u8], parsed: Parsed) -> Document {
    let document_id = document_id_for_source(source);
    let chunks = parsed
        .drafts
        .into_iter()
        .enumerate()
        .map(|(position, draft)| {
            // A document can never hold 4 billion chunks (20 MB cap), so saturating is unreachable.
            let ordinal = u32::try_from(position).unwrap_or(u32::MAX);
            let content_hash = chunk_content_hash(draft.question.as_deref(), &draft.text);
            Chunk {
                id: chunk_id(&document_id, ordinal, &content_hash),
                document_id: document_id.clone(),
                ordinal,
                title: parsed.title.clone(),
                heading_path: draft.heading_path,
                text: draft.text,
                question: draft.question,
                source: source.to_string(),
                url: parsed.url.clone(),
                content_hash,
            }
        })
        .collect();
    Document {
        id: document_id,
        source: source.to_string(),
        title: parsed.title,
        url: parsed.url,
        kind,
        content_hash: hex::encode(Sha256::digest(bytes)),
        chunks,
    }
}

/// sha256 of the text, preceded by the question and a newline for FAQ entries.
fn chunk_content_hash(question: Option<&str>, text: &str) -> String {
    let mut hasher = Sha256::new();
    if let Some(question) = question {
        hasher.update(question.as_bytes());
        hasher.update(b"\n");
    }
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

fn chunk_id(document_id: &str, ordinal: u32, content_hash: &str) -> String {
    let name = format!("{document_id}/{ordinal}/{content_hash}");
    Uuid::new_v5(&CHUNK_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Decodes UTF-8 (dropping a byte-order mark); on failure names the line of the first bad byte.
fn decode_utf8<'a>(source: &str, bytes: &'a [u8]) -> Result<&'a str, LoadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|err| {
        let valid = &bytes[..err.valid_up_to()];
        let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
        LoadError::parse(
            source,
            Some(line),
            "not valid UTF-8 text (save the file as UTF-8)",
        )
    })
}

fn file_name_of(source: &str) -> &str {
    source.rsplit(['/', '\\']).next().unwrap_or(source)
}

/// "getting-started.md" -> "Getting started", "billing.faq.yaml" -> "Billing FAQ".
fn humanised_file_stem(source: &str) -> String {
    let name = file_name_of(source);
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let words: Vec<String> = stem
        .split(['-', '_', '.', ' '])
        .filter(|word| !word.is_empty())
        .enumerate()
        .map(|(index, word)| {
            if word.eq_ignore_ascii_case("faq") {
                "FAQ".to_string()
            } else if index == 0 {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            } else {
                word.to_string()
            }
        })
        .collect();
    if words.is_empty() {
        name.to_string()
    } else {
        words.join(" ")
    }
}

fn same_text(a: &str, b: &str) -> bool {
    normalise_whitespace(a).to_lowercase() == normalise_whitespace(b).to_lowercase()
}

fn non_empty(text: String) -> Option<String> {
    let text = normalise_whitespace(&text);
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
