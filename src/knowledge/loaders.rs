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

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, HeadingLevel, Options as MarkdownOptions, Parser, Tag, TagEnd};
use scraper::{ElementRef, Html, Node};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use walkdir::WalkDir;

use super::chunking::{chunk_sections, normalise_whitespace, ChunkDraft, ChunkingOptions, Section};
use crate::model::{Chunk, Document, DocumentKind};

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

// ---------------------------------------------------------------------------------------------
// Shared builders for structured formats (Markdown and HTML).

/// Tracks the heading stack and collects sections as headings open new ones.
#[derive(Default)]
struct SectionBuilder {
    heading_stack: Vec<(u8, String)>,
    sections: Vec<Section>,
    current: Section,
}

impl SectionBuilder {
    /// Closes the current section and opens one under `text`. Headings at the same or a deeper
    /// level leave the path; `in_path: false` (the title heading) still closes deeper headings.
    fn start_heading(&mut self, level: u8, text: String, in_path: bool) {
        self.heading_stack
            .retain(|(open_level, _)| *open_level < level);
        if in_path && !text.is_empty() {
            self.heading_stack.push((level, text));
        }
        let heading_path = self
            .heading_stack
            .iter()
            .map(|(_, text)| text.clone())
            .collect();
        let finished = std::mem::replace(&mut self.current, Section::new(heading_path));
        if !finished.blocks.is_empty() {
            self.sections.push(finished);
        }
    }

    fn push_block(&mut self, block: String) {
        self.current.push_block(block);
    }

    fn finish(mut self) -> Vec<Section> {
        if !self.current.blocks.is_empty() {
            self.sections.push(self.current);
        }
        self.sections
    }
}

/// One rendered list line: "  2. " prefix plus the item's text.
struct ListLine {
    prefix: String,
    content: String,
}

/// Renders (possibly nested) lists as one block of lines: "- item", "1. item", indented by depth,
/// so a list stays together and reads like a list.
#[derive(Default)]
struct ListBuilder {
    lines: Vec<ListLine>,
    /// One entry per open list: the next number for ordered lists, `None` for bullets.
    open_lists: Vec<Option<u64>>,
}

impl ListBuilder {
    fn is_active(&self) -> bool {
        !self.open_lists.is_empty()
    }

    fn open_list(&mut self, first_number: Option<u64>) {
        self.open_lists.push(first_number);
    }

    /// Closes the innermost list; returns the rendered block when the outermost one closes.
    fn close_list(&mut self) -> Option<String> {
        self.open_lists.pop();
        if self.is_active() {
            return None;
        }
        let block = std::mem::take(&mut self.lines)
            .into_iter()
            .filter(|line| !line.content.is_empty())
            .map(|line| format!("{}{}", line.prefix, line.content))
            .collect::<Vec<_>>()
            .join("\n");
        Some(block)
    }

    fn open_item(&mut self) {
        let depth = self.open_lists.len().saturating_sub(1);
        let marker = match self.open_lists.last_mut() {
            Some(Some(number)) => {
                let marker = format!("{number}.");
                *number += 1;
                marker
            }
            _ => "-".to_string(),
        };
        self.lines.push(ListLine {
            prefix: format!("{}{marker} ", "  ".repeat(depth)),
            content: String::new(),
        });
    }

    /// Appends text to the current item (text before any item gets a bullet of its own).
    fn append(&mut self, text: &str) {
        if self.lines.is_empty() {
            self.open_item();
        }
        if let Some(line) = self.lines.last_mut() {
            if !line.content.is_empty() {
                line.content.push(' ');
            }
            line.content.push_str(text);
        }
    }
}

/// Collects table rows as "cell | cell" lines.
#[derive(Default)]
struct TableBuilder {
    rows: Vec<String>,
    cells: Vec<String>,
}

impl TableBuilder {
    fn end_row(&mut self) {
        let cells = std::mem::take(&mut self.cells);
        if cells.iter().any(|cell| !cell.is_empty()) {
            self.rows.push(cells.join(" | "));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Markdown

struct FrontMatter {
    title: Option<String>,
    url: Option<String>,
}

/// Splits a leading `---` ... `---` (or `...`) YAML block from the Markdown body. A file that
/// starts with `---` but never closes it is plain Markdown (a thematic break).
fn split_front_matter<'a>(
    source: &str,
    text: &'a str,
) -> Result<(Option<FrontMatter>, &'a str), LoadError> {
    let Some(after_opening) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Ok((None, text));
    };
    let mut offset = 0;
    for line in after_opening.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed == "..." {
            let yaml = &after_opening[..offset];
            let body = &after_opening[offset + line.len()..];
            return Ok((Some(parse_front_matter(source, yaml)?), body));
        }
        offset += line.len();
    }
    Ok((None, text))
}

fn parse_front_matter(source: &str, yaml: &str) -> Result<FrontMatter, LoadError> {
    // The opening `---` is line 1 of the file; a leading newline makes serde_yaml's line numbers
    // (in both `location()` and its messages) match the file's.
    let padded = format!("\n{yaml}");
    let value: serde_yaml::Value = serde_yaml::from_str(&padded).map_err(|err| {
        LoadError::parse(
            source,
            err.location().map(|location| location.line()),
            format!("invalid front matter: {err}"),
        )
    })?;
    let mapping = match value {
        serde_yaml::Value::Null => {
            return Ok(FrontMatter {
                title: None,
                url: None,
            })
        }
        serde_yaml::Value::Mapping(mapping) => mapping,
        _ => {
            return Err(LoadError::parse(
                source,
                Some(1),
                "front matter must be a mapping such as `title: ...` and `url: ...`",
            ))
        }
    };
    let text_field = |key: &str| -> Result<Option<String>, LoadError> {
        match mapping.get(key) {
            None | Some(serde_yaml::Value::Null) => Ok(None),
            Some(value) => yaml_scalar_text(value).map(non_empty).ok_or_else(|| {
                // The parsed value has no position; a top-level key starts its own line.
                let line = yaml
                    .lines()
                    .position(|line| line.starts_with(&format!("{key}:")))
                    .map(|index| index + 2);
                LoadError::parse(source, line, format!("front matter `{key}` must be text"))
            }),
        }
    };
    Ok(FrontMatter {
        title: text_field("title")?,
        url: text_field("url")?,
    })
}

/// Text of a YAML scalar (strings, numbers, booleans); `None` for lists and mappings.
fn yaml_scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(text) => Some(text.clone()),
        serde_yaml::Value::Number(number) => Some(number.to_string()),
        serde_yaml::Value::Bool(flag) => Some(flag.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        serde_yaml::Value::Tagged(tagged) => yaml_scalar_text(&tagged.value),
        serde_yaml::Value::Sequence(_) | serde_yaml::Value::Mapping(_) => None,
    }
}

fn parse_markdown(
    source: &str,
    text: &str,
    options: &ChunkingOptions,
) -> Result<Parsed, LoadError> {
    let (front_matter, body) = split_front_matter(source, text)?;
    let (front_title, url) = match front_matter {
        Some(front_matter) => (front_matter.title, front_matter.url),
        None => (None, None),
    };
    let mut collector = MarkdownCollector::new(front_title);
    let parser_options = MarkdownOptions::ENABLE_TABLES
        | MarkdownOptions::ENABLE_STRIKETHROUGH
        | MarkdownOptions::ENABLE_TASKLISTS;
    for event in Parser::new_ext(body, parser_options) {
        collector.handle(event);
    }
    let (title, sections) = collector.finish();
    Ok(Parsed {
        title: title.unwrap_or_else(|| humanised_file_stem(source)),
        url,
        drafts: chunk_sections(&sections, options),
    })
}

/// Walks pulldown-cmark events, turning inline runs into blocks and headings into sections.
struct MarkdownCollector {
    /// The document title once known: from front matter, or the first level-1 heading.
    title: Option<String>,
    sections: SectionBuilder,
    inline: String,
    list: ListBuilder,
    table: Option<TableBuilder>,
    code_block: Option<String>,
    image_depth: usize,
}

impl MarkdownCollector {
    fn new(front_matter_title: Option<String>) -> Self {
        Self {
            title: front_matter_title,
            sections: SectionBuilder::default(),
            inline: String::new(),
            list: ListBuilder::default(),
            table: None,
            code_block: None,
            image_depth: 0,
        }
    }

    fn handle(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => {
                if let Some(code) = self.code_block.as_mut() {
                    code.push_str(&text);
                } else if self.image_depth == 0 {
                    self.inline.push_str(&text);
                }
            }
            Event::Code(code) | Event::InlineMath(code) | Event::DisplayMath(code) => {
                if self.image_depth == 0 {
                    self.inline.push_str(&code);
                }
            }
            Event::SoftBreak | Event::HardBreak => self.inline.push(' '),
            Event::TaskListMarker(done) => self.inline.push_str(if done { "[x] " } else { "[ ] " }),
            Event::Rule => self.flush_inline(),
            // Raw HTML is markup, not content; footnote markers are noise without their notes.
            Event::Html(_) | Event::InlineHtml(_) | Event::FootnoteReference(_) => {}
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading { .. } => self.flush_inline(),
            Tag::Table(_) => {
                self.flush_inline();
                self.table = Some(TableBuilder::default());
            }
            Tag::List(first_number) => {
                self.flush_inline();
                self.list.open_list(first_number);
            }
            Tag::Item => {
                self.flush_inline();
                self.list.open_item();
            }
            Tag::CodeBlock(_) => {
                self.flush_inline();
                self.code_block = Some(String::new());
            }
            Tag::Image { .. } => self.image_depth += 1,
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(level) => {
                let text = normalise_whitespace(&std::mem::take(&mut self.inline));
                self.start_heading(heading_level_number(level), text);
            }
            TagEnd::Paragraph | TagEnd::Item | TagEnd::BlockQuote(_) => self.flush_inline(),
            TagEnd::List(_) => {
                self.flush_inline();
                if let Some(block) = self.list.close_list() {
                    self.sections.push_block(block);
                }
            }
            TagEnd::CodeBlock => {
                let code = self.code_block.take().unwrap_or_default();
                self.emit_block(code.trim_matches('\n').to_string());
            }
            TagEnd::TableCell => {
                let cell = normalise_whitespace(&std::mem::take(&mut self.inline));
                if let Some(table) = self.table.as_mut() {
                    table.cells.push(cell);
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                if let Some(table) = self.table.as_mut() {
                    table.end_row();
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    self.emit_block(table.rows.join("\n"));
                }
            }
            TagEnd::Image => self.image_depth = self.image_depth.saturating_sub(1),
            _ => {}
        }
    }

    fn start_heading(&mut self, level: u8, text: String) {
        let is_title = level == 1
            && match &self.title {
                Some(title) => same_text(title, &text),
                None => {
                    self.title = non_empty(text.clone());
                    self.title.is_some()
                }
            };
        self.sections.start_heading(level, text, !is_title);
    }

    fn flush_inline(&mut self) {
        let text = normalise_whitespace(&std::mem::take(&mut self.inline));
        if !text.is_empty() {
            self.emit_block(text);
        }
    }

    /// Sends a finished block to the open list item, or to the section.
    fn emit_block(&mut self, block: String) {
        if block.trim().is_empty() {
            return;
        }
        if self.list.is_active() {
            self.list.append(&normalise_whitespace(&block));
        } else {
            self.sections.push_block(block);
        }
    }

    fn finish(mut self) -> (Option<String>, Vec<Section>) {
        self.flush_inline();
        (self.title, self.sections.finish())
    }
}

fn heading_level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

// ---------------------------------------------------------------------------------------------
// HTML

fn parse_html(source: &str, text: &str, options: &ChunkingOptions) -> Parsed {
    let page = Html::parse_document(text);
    let root = page.root_element();
    let page_title = first_element(root, |element| element.value().name() == "title")
        .and_then(|title| non_empty(title.text().collect()))
        .or_else(|| {
            first_element(root, |element| element.value().name() == "h1")
                .and_then(|heading| non_empty(visible_text(heading)))
        });
    let url = first_element(root, |element| {
        element.value().name() == "link"
            && element.value().attr("rel").is_some_and(|rel| {
                rel.split_ascii_whitespace()
                    .any(|token| token.eq_ignore_ascii_case("canonical"))
            })
            && element
                .value()
                .attr("href")
                .is_some_and(|href| !href.trim().is_empty())
    })
    .and_then(|link| link.value().attr("href"))
    .map(|href| href.trim().to_string());

    // Prefer the page's main content when it is marked up; otherwise read the whole body.
    let content_root = first_element(root, |element| {
        element.value().name() == "main" || element.value().attr("role") == Some("main")
    })
    .or_else(|| first_element(root, |element| element.value().name() == "body"))
    .unwrap_or(root);

    let mut collector = HtmlCollector::new(page_title.clone());
    collector.walk(content_root);
    let sections = collector.finish();
    Parsed {
        title: page_title.unwrap_or_else(|| humanised_file_stem(source)),
        url,
        drafts: chunk_sections(&sections, options),
    }
}

/// The first element in document order (including `root`) matching `predicate`.
fn first_element<'a>(
    root: ElementRef<'a>,
    predicate: impl Fn(&ElementRef<'a>) -> bool,
) -> Option<ElementRef<'a>> {
    root.descendants()
        .filter_map(ElementRef::wrap)
        .find(|element| predicate(element))
}

/// Page chrome and invisible content that must not become knowledge.
fn is_html_boilerplate(element: ElementRef<'_>) -> bool {
    let value = element.value();
    let always_skipped = matches!(
        value.name(),
        "head"
            | "script"
            | "style"
            | "nav"
            | "aside"
            | "noscript"
            | "template"
            | "svg"
            | "iframe"
            | "object"
            | "canvas"
            | "button"
            | "select"
            | "textarea"
            | "input"
            | "img"
    );
    // `header`/`footer` are site chrome only outside sectioning content; inside an article they
    // frame the article itself (and often hold its <h1>).
    let page_chrome = matches!(value.name(), "header" | "footer")
        && !element.ancestors().any(|ancestor| {
            matches!(ancestor.value(), Node::Element(parent)
                if matches!(parent.name(), "article" | "main" | "section"))
        });
    let hidden = value.attr("hidden").is_some()
        || value.attr("aria-hidden") == Some("true")
        || matches!(
            value.attr("role"),
            Some("navigation" | "banner" | "contentinfo" | "complementary" | "search")
        );
    always_skipped || page_chrome || hidden
}

/// Visible text of an element, skipping boilerplate descendants.
fn visible_text(element: ElementRef<'_>) -> String {
    let mut text = String::new();
    for child in element.children() {
        match child.value() {
            Node::Text(run) => text.push_str(run),
            Node::Element(_) => {
                if let Some(child) = ElementRef::wrap(child) {
                    if !is_html_boilerplate(child) {
                        text.push(' ');
                        text.push_str(&visible_text(child));
                    }
                }
            }
            _ => {}
        }
    }
    text
}

fn is_html_heading(name: &str) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

fn is_html_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "section"
            | "article"
            | "main"
            | "body"
            | "html"
            | "blockquote"
            | "dl"
            | "dt"
            | "dd"
            | "figure"
            | "figcaption"
            | "address"
            | "details"
            | "summary"
            | "hr"
            | "header"
            | "footer"
            | "form"
            | "fieldset"
            | "legend"
            | "caption"
            | "center"
            | "li"
    )
}

struct HtmlCollector {
    title: Option<String>,
    seen_first_h1: bool,
    sections: SectionBuilder,
    inline: String,
    list: ListBuilder,
    table: Option<TableBuilder>,
    /// Depth of open table cells: block boundaries inside a cell must not split its text.
    cell_depth: usize,
}

impl HtmlCollector {
    fn new(title: Option<String>) -> Self {
        Self {
            title,
            seen_first_h1: false,
            sections: SectionBuilder::default(),
            inline: String::new(),
            list: ListBuilder::default(),
            table: None,
            cell_depth: 0,
        }
    }

    fn walk(&mut self, element: ElementRef<'_>) {
        for child in element.children() {
            match child.value() {
                Node::Text(text) => self.inline.push_str(text),
                Node::Element(_) => {
                    if let Some(child) = ElementRef::wrap(child) {
                        self.visit(child);
                    }
                }
                _ => {}
            }
        }
    }

    fn visit(&mut self, element: ElementRef<'_>) {
        if is_html_boilerplate(element) {
            return;
        }
        let name = element.value().name();
        let in_cell = self.cell_depth > 0;
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" if !in_cell && !self.list.is_active() => {
                self.flush_inline();
                let level = name[1..].parse::<u8>().unwrap_or(6);
                let text = normalise_whitespace(&visible_text(element));
                self.start_heading(level, text);
            }
            "ul" | "ol" | "menu" if !in_cell => {
                self.flush_inline();
                let first_number = (name == "ol").then(|| {
                    element
                        .value()
                        .attr("start")
                        .and_then(|start| start.trim().parse().ok())
                        .unwrap_or(1)
                });
                self.list.open_list(first_number);
                self.walk(element);
                self.flush_inline();
                if let Some(block) = self.list.close_list() {
                    self.emit_block(block);
                }
            }
            "li" if !in_cell && self.list.is_active() => {
                self.flush_inline();
                self.list.open_item();
                self.walk(element);
                self.flush_inline();
            }
            "table" if !in_cell && self.table.is_none() => {
                self.flush_inline();
                self.table = Some(TableBuilder::default());
                self.walk(element);
                if let Some(mut table) = self.table.take() {
                    table.end_row();
                    self.emit_block(table.rows.join("\n"));
                }
            }
            "tr" if !in_cell && self.table.is_some() => {
                self.walk(element);
                if let Some(table) = self.table.as_mut() {
                    table.end_row();
                }
            }
            "td" | "th" if !in_cell && self.table.is_some() => {
                self.flush_inline();
                self.cell_depth += 1;
                self.walk(element);
                self.cell_depth -= 1;
                let cell = normalise_whitespace(&std::mem::take(&mut self.inline));
                if let Some(table) = self.table.as_mut() {
                    table.cells.push(cell);
                }
            }
            "pre" if !in_cell => {
                self.flush_inline();
                let code: String = element.text().collect();
                self.emit_block(code.trim_matches('\n').to_string());
            }
            "br" => self.inline.push(' '),
            // Headings inside lists and table cells are treated as plain blocks.
            _ if is_html_block(name) || is_html_heading(name) => {
                self.flush_inline();
                self.walk(element);
                self.flush_inline();
            }
            _ => self.walk(element),
        }
    }

    fn start_heading(&mut self, level: u8, text: String) {
        let is_title = level == 1
            && match &self.title {
                // The first <h1> usually repeats the page title, which often carries a site
                // suffix ("Delivery times | Acme Help Center").
                Some(title) if !self.seen_first_h1 => {
                    !text.is_empty() && title.to_lowercase().contains(&text.to_lowercase())
                }
                Some(title) => same_text(title, &text),
                None => true,
            };
        if level == 1 {
            self.seen_first_h1 = true;
        }
        self.sections.start_heading(level, text, !is_title);
    }

    fn flush_inline(&mut self) {
        if self.cell_depth > 0 {
            // Keep a cell's paragraphs in the cell, separated by a space.
            self.inline.push(' ');
            return;
        }
        let text = normalise_whitespace(&std::mem::take(&mut self.inline));
        if !text.is_empty() {
            self.emit_block(text);
        }
    }

    fn emit_block(&mut self, block: String) {
        if block.trim().is_empty() {
            return;
        }
        if self.list.is_active() {
            self.list.append(&normalise_whitespace(&block));
        } else {
            self.sections.push_block(block);
        }
    }

    fn finish(mut self) -> Vec<Section> {
        self.flush_inline();
        self.sections.finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Plain text and PDF

fn parse_text(source: &str, text: &str, options: &ChunkingOptions) -> Parsed {
    let first_line = text.lines().map(str::trim).find(|line| !line.is_empty());
    let title_line = first_line.filter(|line| looks_like_title(line));
    let body = match title_line {
        Some(title) => without_first_line_matching(text, title).unwrap_or_else(|| text.to_string()),
        None => text.to_string(),
    };
    let section = Section {
        heading_path: Vec::new(),
        blocks: plain_paragraphs(&body, false),
    };
    Parsed {
        title: title_line
            .map(normalise_whitespace)
            .unwrap_or_else(|| humanised_file_stem(source)),
        url: None,
        drafts: chunk_sections(&[section], options),
    }
}

/// A short line that does not read like a sentence or a clause.
fn looks_like_title(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty()
        && line.chars().count() <= MAX_TITLE_LINE_CHARS
        && !line.ends_with(['.', ',', ';', ':', '!', '?'])
}

/// `text` without its first non-empty line when that line is `title`; `None` when nothing else
/// would remain (a one-line file keeps its line as content).
fn without_first_line_matching(text: &str, title: &str) -> Option<String> {
    let mut lines = text.lines();
    let mut skipped_title = false;
    let mut rest = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            continue;
        }
        if same_text(line, title) {
            skipped_title = true;
        } else {
            rest.push(line);
        }
        break;
    }
    rest.extend(lines);
    let rest = rest.join("\n");
    (skipped_title && !rest.trim().is_empty()).then_some(rest)
}

/// Paragraphs separated by blank lines, with wrapped lines joined. Lines that start a list item
/// keep their line break. With `repair_hyphenation`, "busi-" + "ness" becomes "business" (PDFs
/// hyphenate at line ends; hand-written text files rarely do, and "e-" + "mail" is ambiguous).
fn plain_paragraphs(text: &str, repair_hyphenation: bool) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            let paragraph = join_wrapped_lines(&current, repair_hyphenation);
            if !paragraph.is_empty() {
                paragraphs.push(paragraph);
            }
            current.clear();
        } else {
            current.push(line);
        }
    }
    paragraphs
}

fn join_wrapped_lines(lines: &[&str], repair_hyphenation: bool) -> String {
    let mut joined = String::new();
    for line in lines {
        let line = normalise_whitespace(line);
        if line.is_empty() {
            continue;
        }
        if joined.is_empty() {
            joined = line;
        } else if starts_list_item(&line) {
            joined.push('\n');
            joined.push_str(&line);
        } else {
            append_wrapped(&mut joined, &line, repair_hyphenation);
        }
    }
    joined
}

/// Appends a wrapped continuation line, dropping a line-end hyphen when the word continues in
/// lower case.
fn append_wrapped(joined: &mut String, continuation: &str, repair_hyphenation: bool) {
    let mut tail = joined.chars().rev();
    let hyphenated_word = tail.next() == Some('-') && tail.next().is_some_and(char::is_alphabetic);
    let continues_word = continuation.chars().next().is_some_and(char::is_lowercase);
    if repair_hyphenation && hyphenated_word && continues_word {
        joined.pop();
    } else {
        joined.push(' ');
    }
    joined.push_str(continuation);
}

fn starts_list_item(line: &str) -> bool {
    if line.starts_with("- ")
        || line.starts_with("* ")
        || line.starts_with("• ")
        || line.starts_with("+ ")
    {
        return true;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && (line[digits..].starts_with(". ") || line[digits..].starts_with(") "))
}

/// Text pulled out of a PDF, before cleaning.
struct PdfText {
    metadata_title: Option<String>,
    pages: Vec<String>,
}

fn parse_pdf(source: &str, bytes: &[u8], options: &ChunkingOptions) -> Result<Parsed, LoadError> {
    // pdf-extract panics on some malformed files (unwraps deep in font handling); one bad upload
    // must not take the server down. The closure only reads `bytes`, so no state is left broken.
    let extracted = std::panic::catch_unwind(|| extract_pdf_text(bytes))
        .map_err(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|message| message.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown error".to_string());
            LoadError::parse(
                source,
                None,
                format!("the PDF reader failed on this file: {detail}"),
            )
        })?
        .map_err(|reason| LoadError::parse(source, None, reason))?;

    let first_line = extracted
        .pages
        .iter()
        .flat_map(|page| page.lines())
        .map(normalise_whitespace)
        .find(|line| !line.is_empty());
    let title = extracted
        .metadata_title
        .filter(|title| is_meaningful_pdf_title(title))
        .or_else(|| {
            first_line
                .clone()
                .filter(|line| line.chars().count() <= MAX_TITLE_LINE_CHARS)
        })
        .unwrap_or_else(|| humanised_file_stem(source));
    let mut paragraphs = pdf_paragraphs(&extracted.pages);
    // Only a title that sits on a line of its own is removed, so "Returns" as the title does not
    // eat the first word of "Returns are accepted ...".
    if first_line.is_some_and(|line| same_text(&line, &title)) {
        paragraphs = drop_leading_title(paragraphs, &title);
    }
    let blocks = paragraphs;
    let section = Section {
        heading_path: Vec::new(),
        blocks,
    };
    Ok(Parsed {
        title,
        url: None,
        drafts: chunk_sections(&[section], options),
    })
}

fn extract_pdf_text(bytes: &[u8]) -> Result<PdfText, String> {
    let mut document = pdf_extract::Document::load_mem(bytes)
        .map_err(|err| format!("not a readable PDF ({err})"))?;
    if document.is_encrypted() {
        // Many PDFs are "encrypted" with an empty user password just to set permissions.
        document
            .decrypt("")
            .map_err(|_| "the PDF is password-protected".to_string())?;
    }
    let metadata_title = pdf_metadata_title(&document);
    let mut pages = Vec::new();
    for page_number in document.get_pages().keys() {
        let mut text = String::new();
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        pdf_extract::output_doc_page(&document, &mut output, *page_number)
            .map_err(|err| format!("could not read page {page_number} ({err})"))?;
        pages.push(text);
    }
    Ok(PdfText {
        metadata_title,
        pages,
    })
}

fn pdf_metadata_title(document: &pdf_extract::Document) -> Option<String> {
    let info = match resolve_pdf_reference(document, document.trailer.get(b"Info").ok()?)? {
        pdf_extract::Object::Dictionary(info) => info,
        _ => return None,
    };
    let title = resolve_pdf_reference(document, info.get(b"Title").ok()?)?;
    pdf_extract::decode_text_string(title)
        .ok()
        .and_then(non_empty)
}

fn resolve_pdf_reference<'a>(
    document: &'a pdf_extract::Document,
    object: &'a pdf_extract::Object,
) -> Option<&'a pdf_extract::Object> {
    match object {
        pdf_extract::Object::Reference(id) => document.get_object(*id).ok(),
        other => Some(other),
    }
}

/// Paragraphs of all pages, with paragraphs wrongly split by the extractor rejoined.
fn pdf_paragraphs(pages: &[String]) -> Vec<String> {
    let mut paragraphs: Vec<String> = Vec::new();
    for page in pages {
        for paragraph in plain_paragraphs(&expand_ligatures(page), true) {
            match paragraphs.last_mut() {
                Some(previous) if continues_paragraph(previous, &paragraph) => {
                    append_wrapped(previous, &paragraph, true);
                }
                _ => paragraphs.push(paragraph),
            }
        }
    }
    paragraphs
}

/// pdf-extract emits a blank line for every large vertical gap, which includes loose line
/// spacing and page breaks, so "paragraphs" may end mid-sentence. One that stops without closing
/// punctuation, followed by one starting in lower case, is the same paragraph.
fn continues_paragraph(previous: &str, next: &str) -> bool {
    !previous.ends_with(['.', '!', '?', ':', ';'])
        && next.chars().next().is_some_and(char::is_lowercase)
}

/// PDF fonts often encode "fi", "fl" etc. as single ligature glyphs, which would not match the
/// words customers type.
fn expand_ligatures(text: &str) -> String {
    let mut expanded = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            'ﬀ' => expanded.push_str("ff"),
            'ﬁ' => expanded.push_str("fi"),
            'ﬂ' => expanded.push_str("fl"),
            'ﬃ' => expanded.push_str("ffi"),
            'ﬄ' => expanded.push_str("ffl"),
            'ﬅ' | 'ﬆ' => expanded.push_str("st"),
            other => expanded.push(other),
        }
    }
    expanded
}

/// Authoring tools often fill the title field with a file name or a placeholder.
fn is_meaningful_pdf_title(title: &str) -> bool {
    let lower = title.to_lowercase();
    let file_name_like = [
        ".doc", ".docx", ".pdf", ".odt", ".rtf", ".indd", ".pages", ".ppt", ".pptx",
    ]
    .iter()
    .any(|extension| lower.ends_with(extension));
    !file_name_like && !matches!(lower.as_str(), "untitled" | "untitled document" | "title")
}

/// Removes the title line from the start of the body (PDFs usually open with it), keeping the
/// rest of that paragraph. A document that is nothing but its title keeps it.
fn drop_leading_title(mut paragraphs: Vec<String>, title: &str) -> Vec<String> {
    let Some(first) = paragraphs.first() else {
        return paragraphs;
    };
    if same_text(first, title) {
        if paragraphs.len() > 1 {
            paragraphs.remove(0);
        }
    } else if let Some(remainder) = strip_prefix_ignoring_case(first, title) {
        // Line wraps were joined, so a title line not followed by a gap starts the paragraph.
        paragraphs[0] = remainder.trim_start().to_string();
    }
    paragraphs
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    let boundary = text[prefix.len()..].starts_with(char::is_whitespace);
    (head.eq_ignore_ascii_case(prefix) && boundary).then(|| &text[prefix.len()..])
}

// ---------------------------------------------------------------------------------------------
// FAQ files

struct FaqEntry {
    question: String,
    answer: String,
}

fn faq_parsed(
    source: &str,
    title: Option<String>,
    url: Option<String>,
    entries: Vec<FaqEntry>,
) -> Parsed {
    Parsed {
        title: title.unwrap_or_else(|| humanised_file_stem(source)),
        url,
        drafts: entries
            .into_iter()
            .map(|entry| ChunkDraft {
                heading_path: Vec::new(),
                text: entry.answer,
                question: Some(entry.question),
            })
            .collect(),
    }
}

/// Trims each line's end and collapses runs of blank lines, keeping the paragraphs and lists of
/// a multi-line answer (YAML `|` blocks, quoted CSV cells).
fn tidy_multiline(text: &str) -> String {
    let mut tidy = String::new();
    let mut blank_run = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !tidy.is_empty() {
            tidy.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        tidy.push_str(line);
    }
    tidy
}

/// Validates one entry; `Err` carries the reason (the caller adds entry number and line).
fn faq_entry(question: Option<String>, answer: Option<String>) -> Result<FaqEntry, &'static str> {
    let question = question
        .map(|q| normalise_whitespace(&q))
        .unwrap_or_default();
    let answer = answer.map(|a| tidy_multiline(&a)).unwrap_or_default();
    match (question.is_empty(), answer.is_empty()) {
        (true, _) => Err("the question is missing or empty"),
        (_, true) => Err("the answer is missing or empty"),
        _ => Ok(FaqEntry { question, answer }),
    }
}

fn parse_faq_csv(source: &str, text: &str) -> Result<Parsed, LoadError> {
    let csv_error = |err: csv::Error| {
        let line = err.position().map(|position| position.line() as usize);
        LoadError::parse(source, line, err.to_string())
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // Short rows get a clear "answer is missing" instead of a field-count error.
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header.trim().eq_ignore_ascii_case(name))
    };
    let (Some(question_column), Some(answer_column)) = (column("question"), column("answer"))
    else {
        return Err(LoadError::parse(
            source,
            Some(1),
            format!(
                "expected `question` and `answer` header columns, found: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let mut entries = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error)?;
        let question = record.get(question_column).map(str::to_string);
        let answer = record.get(answer_column).map(str::to_string);
        let blank =
            |cell: &Option<String>| cell.as_deref().is_none_or(|text| text.trim().is_empty());
        if blank(&question) && blank(&answer) {
            continue; // a spacer row such as ",", not a broken entry
        }
        let entry = faq_entry(question, answer).map_err(|reason| {
            let line = record.position().map(|position| position.line() as usize);
            LoadError::parse(source, line, format!("entry {}: {reason}", index + 1))
        })?;
        entries.push(entry);
    }
    Ok(faq_parsed(source, None, None, entries))
}

fn parse_faq_yaml(source: &str, text: &str) -> Result<Parsed, LoadError> {
    // serde_yaml reports a comments-only file as a premature end of input, not as no entries.
    let has_content = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    });
    if !has_content {
        return Ok(faq_parsed(source, None, None, Vec::new()));
    }
    let problem = RefCell::new(None);
    let file = FaqFileSeed { problem: &problem }
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|err| {
            let line = err.location().map(|location| location.line());
            // Our own validation messages are recorded as they are raised, without serde_yaml's
            // path and position decorations; anything else (syntax errors) is passed on as is.
            let reason = problem
                .borrow_mut()
                .take()
                .unwrap_or_else(|| err.to_string());
            LoadError::parse(source, line, reason)
        })?;
    Ok(faq_parsed(source, file.title, file.url, file.entries))
}

#[derive(Default)]
struct FaqFile {
    title: Option<String>,
    url: Option<String>,
    entries: Vec<FaqEntry>,
}

/// Where the FAQ deserializers leave a readable reason for the error they raise. serde_yaml adds
/// the line of the node being read to errors raised inside its visitors, which is why validation
/// happens there rather than after deserializing.
type ProblemSlot = RefCell<Option<String>>;

fn report<E: de::Error>(problem: &ProblemSlot, reason: String) -> E {
    let error = E::custom(&reason);
    *problem.borrow_mut() = Some(reason);
    error
}

struct FaqFileSeed<'a> {
    problem: &'a ProblemSlot,
}

impl<'de> DeserializeSeed<'de> for FaqFileSeed<'_> {
    type Value = FaqFile;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<FaqFile, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FaqFileSeed<'_> {
    type Value = FaqFile;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter
            .write_str("a list of {question, answer} entries, or a mapping with a `faqs:` list")
    }

    /// A file holding only comments.
    fn visit_unit<E: de::Error>(self) -> Result<FaqFile, E> {
        Ok(FaqFile::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, entries: A) -> Result<FaqFile, A::Error> {
        Ok(FaqFile {
            entries: collect_faq_entries(entries, self.problem)?,
            ..FaqFile::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FaqFile, A::Error> {
        let mut file = FaqFile::default();
        let mut found_list = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "faqs" | "questions" => {
                    if found_list {
                        return Err(report(
                            self.problem,
                            "use either `faqs:` or `questions:`, not both".to_string(),
                        ));
                    }
                    found_list = true;
                    file.entries = map.next_value_seed(FaqListSeed {
                        problem: self.problem,
                    })?;
                }
                "title" => file.title = map.next_value::<Option<String>>()?.and_then(non_empty),
                "url" => file.url = map.next_value::<Option<String>>()?.and_then(non_empty),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !found_list {
            return Err(report(
                self.problem,
                "expected a list of {question, answer} entries, or a `faqs:` (or `questions:`) list"
                    .to_string(),
            ));
        }
        Ok(file)
    }
}

struct FaqListSeed<'a> {
    problem: &'a ProblemSlot,
}

impl<'de> DeserializeSeed<'de> for FaqListSeed<'_> {
    type Value = Vec<FaqEntry>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FaqListSeed<'_> {
    type Value = Vec<FaqEntry>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of {question, answer} entries")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, entries: A) -> Result<Self::Value, A::Error> {
        collect_faq_entries(entries, self.problem)
    }
}

fn collect_faq_entries<'de, A: SeqAccess<'de>>(
    mut entries: A,
    problem: &ProblemSlot,
) -> Result<Vec<FaqEntry>, A::Error> {
    let mut collected = Vec::new();
    while let Some(entry) = entries.next_element_seed(FaqEntrySeed {
        number: collected.len() + 1,
        problem,
    })? {
        collected.push(entry);
    }
    Ok(collected)
}

struct FaqEntrySeed<'a> {
    /// 1-based, as people count.
    number: usize,
    problem: &'a ProblemSlot,
}

impl FaqEntrySeed<'_> {
    fn not_a_mapping<E: de::Error>(&self) -> E {
        report(
            self.problem,
            format!(
                "entry {}: expected `question:` and `answer:` fields",
                self.number
            ),
        )
    }
}

impl<'de> DeserializeSeed<'de> for FaqEntrySeed<'_> {
    type Value = FaqEntry;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<FaqEntry, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FaqEntrySeed<'_> {
    type Value = FaqEntry;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an FAQ entry with `question` and `answer`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FaqEntry, A::Error> {
        let mut question = None;
        let mut answer = None;
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let key = yaml_scalar_text(&key)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let slot = match key.as_str() {
                "question" => &mut question,
                "answer" => &mut answer,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<serde_yaml::Value>()?;
            let Some(text) = yaml_scalar_text(&value) else {
                return Err(report(
                    self.problem,
                    format!(
                        "entry {}: `{key}` must be text, not a list or mapping",
                        self.number
                    ),
                ));
            };
            *slot = Some(text);
        }
        faq_entry(question, answer)
            .map_err(|reason| report(self.problem, format!("entry {}: {reason}", self.number)))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_unit<E: de::Error>(self) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<FaqEntry, A::Error> {
        Err(self.not_a_mapping())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKDOWN_FIXTURE: &[u8] =
        include_bytes!("../../tests/fixtures/knowledge/getting-started.md");
    const HTML_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/knowledge/help-center.html");
    const TEXT_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/knowledge/opening-hours.txt");
    const FAQ_YAML_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/knowledge/faq.yaml");
    const FAQ_CSV_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/knowledge/returns-faq.csv");
    const PDF_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/knowledge/shipping-guide.pdf");
    const CORRUPT_PDF_FIXTURE: &[u8] =
        include_bytes!("../../tests/fixtures/knowledge-invalid/corrupt.pdf");

    fn load(source: &str, bytes: &[u8]) -> Document {
        match load_document(source, bytes, &ChunkingOptions::default()) {
            Ok(document) => document,
            Err(err) => panic!("{source} should load: {err}"),
        }
    }

    fn load_with(source: &str, text: &str, max_chars: usize, min_chars: usize) -> Document {
        let options = ChunkingOptions {
            max_chars,
            min_chars,
        };
        match load_document(source, text.as_bytes(), &options) {
            Ok(document) => document,
            Err(err) => panic!("{source} should load: {err}"),
        }
    }

    fn load_error(source: &str, bytes: &[u8]) -> LoadError {
        match load_document(source, bytes, &ChunkingOptions::default()) {
            Ok(document) => panic!("{source} should fail, got {document:#?}"),
            Err(err) => err,
        }
    }

    fn all_text(document: &Document) -> String {
        document
            .chunks
            .iter()
            .map(|chunk| chunk.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    fn chunk_containing<'a>(document: &'a Document, needle: &str) -> &'a Chunk {
        document
            .chunks
            .iter()
            .find(|chunk| chunk.text.contains(needle))
            .unwrap_or_else(|| panic!("no chunk contains {needle:?}: {document:#?}"))
    }

    fn path(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|part| part.to_string()).collect()
    }

    // --- Markdown -----------------------------------------------------------------------------

    #[test]
    fn markdown_front_matter_sets_title_and_url_on_the_document_and_every_chunk() {
        let document = load("guides/getting-started.md", MARKDOWN_FIXTURE);
        assert_eq!(document.kind, DocumentKind::Markdown);
        assert_eq!(document.title, "Getting started with Acme");
        let url = Some("https://help.example.com/getting-started".to_string());
        assert_eq!(document.url, url);
        assert!(document.chunks.len() >= 4);
        for chunk in &document.chunks {
            assert_eq!(chunk.title, document.title);
            assert_eq!(chunk.url, url);
            assert_eq!(chunk.source, "guides/getting-started.md");
            assert_eq!(chunk.document_id, document.id);
            assert_eq!(chunk.question, None);
        }
        assert!(
            !all_text(&document).contains("tags"),
            "front matter leaked into the text"
        );
    }

    #[test]
    fn markdown_headings_build_the_path_without_repeating_the_title() {
        let document = load("getting-started.md", MARKDOWN_FIXTURE);
        let expectations = [
            ("Welcome to Acme.", path(&[])),
            (
                "Sign up with your work email",
                path(&["Creating an account"]),
            ),
            (
                "Passwords must mix letters",
                path(&["Creating an account", "Password rules"]),
            ),
            ("Team | $29 | 10", path(&["Plans and pricing"])),
            ("Authorization", path(&["Using the API"])),
        ];
        for (needle, expected_path) in expectations {
            assert_eq!(
                chunk_containing(&document, needle).heading_path,
                expected_path,
                "chunk with {needle:?}"
            );
        }
        let ordinals: Vec<u32> = document.chunks.iter().map(|chunk| chunk.ordinal).collect();
        assert_eq!(
            ordinals,
            (0..document.chunks.len() as u32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn markdown_lists_tables_code_and_links_become_readable_text() {
        let document = load("getting-started.md", MARKDOWN_FIXTURE);
        let text = all_text(&document);
        assert!(text.contains(
            "valid for 24 hours; if it expires, request a new one from the sign-in page."
        ));
        assert!(
            !text.contains("https://example.com/sign-in"),
            "link targets are not content"
        );
        assert!(text.contains(
            "1. Open the sign-up form.\n2. Enter your name, email and a password of at least 12 characters.\n3. Click the link in the confirmation email."
        ));
        assert!(text.contains("Plan | Price per month | Seats\nStarter | $0 | 1\nTeam | $29 | 10"));
        assert!(text
            .contains("curl -H \"Authorization: Bearer $KEY\" https://api.example.com/v1/orders"));
        assert!(text.contains("with your key in the Authorization header:"));
        assert!(
            !text.contains("Screenshot"),
            "image alt text is not content"
        );
        // Wrapped source lines are joined into one paragraph.
        assert!(text.contains("walks you through creating an account, inviting your team"));
    }

    #[test]
    fn markdown_title_falls_back_to_the_first_h1_then_the_file_name() {
        let with_heading = load_with(
            "billing.md",
            "Intro line before the title.\n\n# Billing basics\n\nInvoices go out monthly.\n\n# Refunds\n\nRefunds take five days.\n",
            1000,
            0,
        );
        assert_eq!(with_heading.title, "Billing basics");
        assert_eq!(
            chunk_containing(&with_heading, "Invoices").heading_path,
            path(&[])
        );
        assert_eq!(
            chunk_containing(&with_heading, "Refunds take").heading_path,
            path(&["Refunds"])
        );

        let without_heading = load(
            "account_security-tips.md",
            b"## Two-factor\n\nTurn it on.\n",
        );
        assert_eq!(without_heading.title, "Account security tips");
        assert_eq!(
            without_heading.chunks[0].heading_path,
            path(&["Two-factor"])
        );
    }

    #[test]
    fn markdown_h1_that_differs_from_the_front_matter_title_stays_in_the_path() {
        let document = load_with(
            "a.md",
            "---\ntitle: Help centre\n---\n# Shipping\n\nWe ship daily.\n",
            1000,
            0,
        );
        assert_eq!(document.title, "Help centre");
        assert_eq!(document.chunks[0].heading_path, path(&["Shipping"]));
    }

    #[test]
    fn markdown_without_closing_front_matter_is_plain_markdown() {
        let document = load_with("rule.md", "---\n\nJust text after a rule.\n", 1000, 0);
        assert_eq!(document.title, "Rule");
        assert_eq!(all_text(&document), "Just text after a rule.");
    }

    #[test]
    fn malformed_front_matter_is_a_parse_error_with_the_file_line() {
        let err = load_error(
            "docs/broken.md",
            b"---\ntitle: Broken\nurl: [unclosed\n---\n\nBody.\n",
        );
        match &err {
            LoadError::Parse { path, line, .. } => {
                assert_eq!(path, "docs/broken.md");
                assert!(
                    matches!(line, Some(3..=4)),
                    "line should point into the front matter, got {line:?}"
                );
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(err.to_string().starts_with("docs/broken.md:"), "{err}");
    }

    #[test]
    fn front_matter_that_is_not_a_mapping_is_rejected() {
        let err = load_error("list.md", b"---\n- a\n- b\n---\nBody\n");
        assert!(
            matches!(err, LoadError::Parse { line: Some(1), .. }),
            "{err:?}"
        );
        let err = load_error("typed.md", b"---\nurl: x\ntitle: [a, b]\n---\nBody\n");
        assert_eq!(
            err.to_string(),
            "typed.md:3: front matter `title` must be text"
        );
    }

    #[test]
    fn markdown_with_only_a_title_is_empty() {
        let err = load_error("title-only.md", b"# Just a title\n");
        assert!(matches!(err, LoadError::Empty { ref path } if path == "title-only.md"));
    }

    // --- Chunk boundaries and ids -------------------------------------------------------------

    fn long_markdown(returns_sentence: &str) -> String {
        let mut text = String::from("# Store policies\n\n");
        for (heading, word) in [("Shipping", "parcel"), ("Warranty", "repair")] {
            text.push_str(&format!("## {heading}\n\n"));
            for paragraph in 0..4 {
                text.push_str(&format!(
                    "Paragraph {paragraph} about the {word}: the {word} rules are explained here in enough words to fill a good part of a chunk on their own.\n\n"
                ));
            }
        }
        text.push_str("## Returns\n\n");
        text.push_str(returns_sentence);
        text.push('\n');
        text
    }

    #[test]
    fn chunks_never_span_two_sections_and_respect_the_size_cap() {
        let document = load_with(
            "policies.md",
            &long_markdown("Returns are accepted for thirty days."),
            300,
            80,
        );
        assert!(document.chunks.len() >= 5, "{document:#?}");
        for chunk in &document.chunks {
            assert!(
                chunk.text.chars().count() <= 300,
                "over cap: {}",
                chunk.text
            );
            let topics = ["parcel", "repair", "Returns"]
                .iter()
                .filter(|topic| chunk.text.contains(*topic))
                .count();
            assert_eq!(topics, 1, "chunk spans sections: {}", chunk.text);
            let expected_heading = if chunk.text.contains("parcel") {
                "Shipping"
            } else if chunk.text.contains("repair") {
                "Warranty"
            } else {
                "Returns"
            };
            assert_eq!(chunk.heading_path, path(&[expected_heading]));
        }
        // The short Returns section stays its own chunk even though it is below min_chars.
        assert_eq!(
            document.chunks.last().map(|chunk| chunk.text.as_str()),
            Some("Returns are accepted for thirty days.")
        );
    }

    #[test]
    fn a_long_paragraph_is_split_at_sentence_boundaries() {
        let sentence = "Every order is packed by hand and checked twice before it leaves.";
        let text = format!("# Packing\n\n{}\n", [sentence; 20].join(" "));
        let document = load_with("packing.md", &text, 250, 50);
        assert!(document.chunks.len() > 1);
        for chunk in &document.chunks {
            assert!(chunk.text.chars().count() <= 250);
            assert!(chunk.text.starts_with("Every order"), "{}", chunk.text);
            assert!(chunk.text.ends_with("leaves."), "{}", chunk.text);
        }
    }

    #[test]
    fn ids_are_stable_across_loads() {
        let first = load("getting-started.md", MARKDOWN_FIXTURE);
        let second = load("getting-started.md", MARKDOWN_FIXTURE);
        assert_eq!(first, second);
        assert!(
            first.id.starts_with("doc_") && first.id.len() == 20,
            "{}",
            first.id
        );
        assert_eq!(first.id, document_id_for_source("getting-started.md"));
        assert_ne!(first.id, document_id_for_source("other/getting-started.md"));
        assert_eq!(
            first.content_hash,
            hex::encode(Sha256::digest(MARKDOWN_FIXTURE))
        );
        let unique_ids: std::collections::HashSet<&str> =
            first.chunks.iter().map(|chunk| chunk.id.as_str()).collect();
        assert_eq!(unique_ids.len(), first.chunks.len());
        for chunk in &first.chunks {
            assert!(Uuid::parse_str(&chunk.id).is_ok());
            assert_eq!(
                chunk.content_hash,
                hex::encode(Sha256::digest(chunk.text.as_bytes()))
            );
        }
    }

    #[test]
    fn editing_one_section_keeps_the_ids_of_the_other_chunks() {
        let before = load_with(
            "policies.md",
            &long_markdown("Returns are accepted for thirty days."),
            300,
            80,
        );
        let after = load_with(
            "policies.md",
            &long_markdown("Returns are accepted for sixty days."),
            300,
            80,
        );
        assert_ne!(before.content_hash, after.content_hash);
        assert_eq!(before.chunks.len(), after.chunks.len());
        let (last_before, unchanged_before) = before.chunks.split_last().expect("chunks");
        let (last_after, unchanged_after) = after.chunks.split_last().expect("chunks");
        for (old, new) in unchanged_before.iter().zip(unchanged_after) {
            assert_eq!(old.id, new.id, "unrelated chunk changed id: {}", old.text);
        }
        assert_ne!(last_before.id, last_after.id);
        assert_ne!(last_before.content_hash, last_after.content_hash);
    }

    // --- HTML ---------------------------------------------------------------------------------

    #[test]
    fn html_keeps_article_content_and_drops_page_chrome() {
        let document = load("help/delivery.html", HTML_FIXTURE);
        assert_eq!(document.kind, DocumentKind::Html);
        assert_eq!(document.title, "Delivery times | Acme Help Center");
        let url = Some("https://help.example.com/delivery-times".to_string());
        assert_eq!(document.url, url);
        let text = all_text(&document);
        for chrome in [
            "Log in",
            "Orders",
            "analytics",
            "trackPageView",
            "font-family",
            "Enable JavaScript",
            "Related:",
            "All rights reserved",
        ] {
            assert!(!text.contains(chrome), "{chrome:?} leaked into {text:?}");
        }
        let intro = chunk_containing(
            &document,
            "Most orders arrive within three to five working days.",
        );
        assert_eq!(
            intro.heading_path,
            path(&[]),
            "the title <h1> is not repeated"
        );
        let express = chunk_containing(&document, "before 2 pm arrive the next working day.");
        assert_eq!(express.heading_path, path(&["Express delivery"]));
        assert!(express
            .text
            .contains("- Available for addresses in the mainland only.\n- Costs $9.99 per order."));
        let tracking = chunk_containing(&document, "tracking link");
        assert_eq!(tracking.heading_path, path(&["Tracking your parcel"]));
        assert!(document.chunks.iter().all(|chunk| chunk.url == url));
    }

    #[test]
    fn html_title_falls_back_to_h1_then_file_name() {
        let with_h1 = load(
            "page.html",
            b"<html><body><h1>Gift cards</h1><p>Gift cards never expire.</p><h2>Balance</h2><p>Check it online.</p></body></html>",
        );
        assert_eq!(with_h1.title, "Gift cards");
        assert_eq!(with_h1.chunks[0].heading_path, path(&[]));
        assert_eq!(with_h1.chunks[1].heading_path, path(&["Balance"]));
        assert_eq!(with_h1.url, None);

        let bare = load(
            "store-locations.htm",
            b"<p>We have shops in Leeds and York.</p>",
        );
        assert_eq!(bare.title, "Store locations");
        assert_eq!(all_text(&bare), "We have shops in Leeds and York.");
    }

    #[test]
    fn html_tables_and_article_headers_are_kept() {
        let page = br#"<html><head><title>Sizes</title></head><body>
            <header>Site banner</header>
            <article><header><h1>Sizes</h1><p>Updated weekly.</p></header>
            <table><tr><th>Size</th><th>Chest</th></tr><tr><td>M</td><td><p>96</p><p>cm</p></td></tr></table>
            <div hidden>Secret draft</div>
            <p>Still <em>unsure</em>?<br>Contact us.</p>
            </article></body></html>"#;
        let document = load("sizes.html", page);
        let text = all_text(&document);
        assert!(!text.contains("Site banner"));
        assert!(!text.contains("Secret draft"));
        assert!(text.contains("Updated weekly."));
        assert!(text.contains("Size | Chest\nM | 96 cm"), "{text}");
        assert!(text.contains("Still unsure? Contact us."), "{text}");
    }

    // --- Plain text ---------------------------------------------------------------------------

    #[test]
    fn text_uses_a_short_first_line_as_title_and_splits_paragraphs() {
        let document = load("opening-hours.txt", TEXT_FIXTURE);
        assert_eq!(document.kind, DocumentKind::Text);
        assert_eq!(document.title, "Opening hours");
        let text = all_text(&document);
        assert!(
            !text.starts_with("Opening hours"),
            "title repeated in the body"
        );
        assert!(text.contains("from 9 am to 6 pm Central European Time."));
        assert!(text.contains("morning.\n\nOn public holidays"));
        assert!(document
            .chunks
            .iter()
            .all(|chunk| chunk.heading_path.is_empty()));
    }

    #[test]
    fn text_with_a_sentence_first_line_is_titled_from_the_file_name() {
        let document = load(
            "notes/contact_us.txt",
            b"You can reach us by phone or email.\nWe reply within a day.\n\n- Phone: 555 0100\n- Email: help@example.com\n",
        );
        assert_eq!(document.title, "Contact us");
        assert_eq!(
            all_text(&document),
            "You can reach us by phone or email. We reply within a day.\n\n- Phone: 555 0100\n- Email: help@example.com"
        );
    }

    #[test]
    fn a_one_line_text_file_keeps_its_line_as_content() {
        let document = load("hotline.txt", b"Hotline 555 0100\n");
        assert_eq!(document.title, "Hotline 555 0100");
        assert_eq!(all_text(&document), "Hotline 555 0100");
    }

    // --- PDF ----------------------------------------------------------------------------------

    #[test]
    fn pdf_text_is_extracted_with_metadata_title_and_repaired_line_wraps() {
        let document = load("manuals/shipping-guide.pdf", PDF_FIXTURE);
        assert_eq!(document.kind, DocumentKind::Pdf);
        assert_eq!(document.title, "Shipping Guide");
        let text = all_text(&document);
        assert!(
            !text.starts_with("Shipping Guide"),
            "title repeated: {text:?}"
        );
        assert!(
            text.contains("dispatched the same business day. Orders placed later"),
            "{text:?}"
        );
        assert!(
            text.contains("Customs fees are paid by the recipient."),
            "{text:?}"
        );
        assert!(
            text.contains("Returns are accepted within thirty days of delivery"),
            "second page missing: {text:?}"
        );
    }

    #[test]
    fn pdf_without_a_metadata_title_uses_its_first_line() {
        let renamed_key = PDF_FIXTURE
            .windows(6)
            .position(|window| window == b"/Title")
            .expect("fixture has a /Title entry");
        let mut bytes = PDF_FIXTURE.to_vec();
        // Same length, so the cross-reference offsets stay valid.
        bytes[renamed_key..renamed_key + 6].copy_from_slice(b"/Xitle");
        let document = load("untitled.pdf", &bytes);
        assert_eq!(document.title, "Shipping Guide");
    }

    #[test]
    fn pdf_titles_only_come_off_the_body_when_they_are_a_line_of_their_own() {
        let paragraphs = vec![
            "Returns Guide Items can be sent back within 30 days.".to_string(),
            "Second paragraph.".to_string(),
        ];
        assert_eq!(
            drop_leading_title(paragraphs.clone(), "Returns Guide"),
            vec![
                "Items can be sent back within 30 days.",
                "Second paragraph."
            ]
        );
        assert_eq!(
            drop_leading_title(paragraphs.clone(), "Returns"),
            vec![
                "Guide Items can be sent back within 30 days.",
                "Second paragraph."
            ],
            "the caller must only strip whole title lines"
        );
        assert_eq!(
            drop_leading_title(vec!["Only a title".to_string()], "only a title"),
            vec!["Only a title"]
        );
        assert!(!is_meaningful_pdf_title("Microsoft Word - returns.docx"));
        assert!(!is_meaningful_pdf_title("Untitled"));
        assert!(is_meaningful_pdf_title("Returns policy"));
    }

    #[test]
    fn corrupt_pdfs_are_parse_errors_not_panics() {
        for (source, bytes) in [
            ("corrupt.pdf", CORRUPT_PDF_FIXTURE),
            ("garbage.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ntrailer << /Root 1 0 R >>\n%%EOF".as_slice()),
            ("not-a-pdf.pdf", b"hello, I am plain text".as_slice()),
        ] {
            let err = load_error(source, bytes);
            assert!(
                matches!(&err, LoadError::Parse { path, .. } if path == source),
                "{source}: {err:?}"
            );
            assert!(err.to_string().starts_with(source), "{err}");
        }
    }

    #[test]
    fn pdf_paragraphs_split_by_loose_spacing_or_page_breaks_are_rejoined() {
        let pages = [
            "\n\nThe ﬁrst paragraph runs over a\n\nloosely spaced line and is hyphen-\n\nated here.\n\nA new paragraph ends at the page".to_string(),
            "\n\nbreak but continues.\n\nAnother one.".to_string(),
        ];
        assert_eq!(
            pdf_paragraphs(&pages),
            vec![
                "The first paragraph runs over a loosely spaced line and is hyphenated here.",
                "A new paragraph ends at the page break but continues.",
                "Another one.",
            ]
        );
    }

    // --- FAQ ----------------------------------------------------------------------------------

    #[test]
    fn faq_yaml_makes_one_chunk_per_entry() {
        let document = load("faq.yaml", FAQ_YAML_FIXTURE);
        assert_eq!(document.kind, DocumentKind::Faq);
        assert_eq!(document.title, "FAQ");
        assert_eq!(document.chunks.len(), 3);
        let questions: Vec<&str> = document
            .chunks
            .iter()
            .filter_map(|chunk| chunk.question.as_deref())
            .collect();
        assert_eq!(
            questions,
            vec![
                "How do I reset my password?",
                "Can I change my delivery address?",
                "Do you ship internationally?"
            ]
        );
        assert_eq!(
            document.chunks[1].text,
            "Yes, until the order ships.\n\nOpen the order in your account and choose \"Change address\"."
        );
        for chunk in &document.chunks {
            assert!(chunk.heading_path.is_empty());
            let question = chunk.question.as_deref().unwrap_or_default();
            let expected = hex::encode(Sha256::digest(format!("{question}\n{}", chunk.text)));
            assert_eq!(chunk.content_hash, expected);
        }
    }

    #[test]
    fn faq_yaml_accepts_a_faqs_or_questions_mapping_with_title_and_url() {
        let document = load(
            "billing.faq.yaml",
            b"title: Billing questions\nurl: https://help.example.com/billing\nfaqs:\n  - question: When am I charged?\n    answer: On the first of each month.\n",
        );
        assert_eq!(document.title, "Billing questions");
        assert_eq!(
            document.url.as_deref(),
            Some("https://help.example.com/billing")
        );
        assert_eq!(
            document.chunks[0].question.as_deref(),
            Some("When am I charged?")
        );

        let document = load(
            "billing.faq.yml",
            b"questions:\n  - question: Is VAT included?\n    answer: 20\n",
        );
        assert_eq!(document.title, "Billing FAQ");
        assert_eq!(document.chunks[0].text, "20");
    }

    #[test]
    fn faq_yaml_empty_answer_names_the_entry_and_line() {
        let yaml = b"- question: First?\n  answer: Yes.\n- question: Second?\n  answer: \"  \"\n";
        let err = load_error("faq.yaml", yaml);
        match &err {
            LoadError::Parse { path, line, reason } => {
                assert_eq!(path, "faq.yaml");
                assert_eq!(*line, Some(3));
                assert_eq!(reason, "entry 2: the answer is missing or empty");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "faq.yaml:3: entry 2: the answer is missing or empty"
        );
    }

    #[test]
    fn faq_yaml_structural_problems_are_reported_with_lines() {
        let cases: [(&[u8], Option<usize>, &str); 5] = [
            (
                b"faqs:\n  - question: Fine?\n    answer: Yes.\n  - answer: No question here.\n",
                Some(4),
                "entry 2: the question is missing or empty",
            ),
            (
                b"- question: Fine?\n  answer: Yes.\n- just a string\n",
                Some(3),
                "entry 2: expected `question:` and `answer:` fields",
            ),
            (
                b"- question: [not, text]\n  answer: Yes.\n",
                Some(1),
                "entry 1: `question` must be text, not a list or mapping",
            ),
            (
                b"title: Orphan\nentries: []\n",
                Some(1),
                "expected a list of {question, answer} entries, or a `faqs:` (or `questions:`) list",
            ),
            (b"- question: ok\n  answer: [unclosed\n", Some(3), ""),
        ];
        for (yaml, expected_line, expected_reason) in cases {
            let err = load_error("help.faq.yaml", yaml);
            let LoadError::Parse { line, reason, .. } = &err else {
                panic!("expected a parse error, got {err:?}");
            };
            assert_eq!(*line, expected_line, "{err}");
            if !expected_reason.is_empty() {
                assert_eq!(reason, expected_reason);
            }
        }
    }

    #[test]
    fn faq_yaml_with_no_entries_is_empty() {
        assert!(matches!(
            load_error("faq.yaml", b"# nothing yet\n"),
            LoadError::Empty { .. }
        ));
        assert!(matches!(
            load_error("faq.yml", b"faqs: []\n"),
            LoadError::Empty { .. }
        ));
    }

    #[test]
    fn faq_csv_makes_one_chunk_per_row() {
        let document = load("returns-faq.csv", FAQ_CSV_FIXTURE);
        assert_eq!(document.kind, DocumentKind::Faq);
        assert_eq!(document.title, "Returns FAQ");
        assert_eq!(document.chunks.len(), 3);
        assert_eq!(
            document.chunks[2].question.as_deref(),
            Some("Can I return a gift, and who gets the refund?")
        );
        assert_eq!(
            document.chunks[2].text,
            "Yes. The refund goes to the original payment method, not to the gift recipient."
        );
    }

    #[test]
    fn faq_csv_header_columns_are_found_by_name() {
        let document = load(
            "support.csv",
            b"id,Answer,QUESTION\n1,Within a day.,How fast do you reply?\n,,\n2,Yes.,Is there a phone line?\n",
        );
        assert_eq!(document.chunks.len(), 2, "the blank spacer row is skipped");
        assert_eq!(
            document.chunks[0].question.as_deref(),
            Some("How fast do you reply?")
        );
        assert_eq!(document.chunks[0].text, "Within a day.");
    }

    #[test]
    fn faq_csv_problems_name_the_line() {
        let err = load_error("faq.csv", b"q,a\nWhy?,Because.\n");
        assert!(
            matches!(err, LoadError::Parse { line: Some(1), .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("expected `question` and `answer`"),
            "{err}"
        );

        // The quoted answer spans lines 2-3, so the broken row starts on line 4.
        let csv = b"question,answer\nFirst?,\"Line one\nline two\"\nSecond?,\n";
        let err = load_error("faq.csv", csv);
        match &err {
            LoadError::Parse { line, reason, .. } => {
                assert_eq!(*line, Some(4));
                assert_eq!(reason, "entry 2: the answer is missing or empty");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn faq_chunk_ids_depend_on_the_question_too() {
        let document = load(
            "faq.yaml",
            b"- question: Do you ship to Norway?\n  answer: Yes.\n- question: Do you ship to Mars?\n  answer: Yes.\n",
        );
        assert_ne!(
            document.chunks[0].content_hash,
            document.chunks[1].content_hash
        );
        assert_ne!(document.chunks[0].id, document.chunks[1].id);
    }

    // --- Bad input ----------------------------------------------------------------------------

    #[test]
    fn invalid_utf8_is_a_parse_error_naming_the_line() {
        let err = load_error("notes.md", b"# Notes\n\nfine\nbad \xFF byte\n");
        assert!(
            matches!(err, LoadError::Parse { line: Some(4), .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("notes.md:4: not valid UTF-8"),
            "{err}"
        );
        let err = load_error("page.txt", b"\xC3\x28");
        assert!(
            matches!(err, LoadError::Parse { line: Some(1), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn blank_documents_are_empty() {
        for source in ["a.md", "b.txt", "c.html", "d.pdf", "faq.yaml", "e.csv"] {
            let err = load_error(source, b" \n\t\r\n");
            assert!(
                matches!(&err, LoadError::Empty { path } if path == source),
                "{err:?}"
            );
        }
        let err = load_error("chrome-only.html", b"<nav>Home</nav><script>x()</script>");
        assert!(matches!(err, LoadError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn byte_order_marks_are_ignored() {
        let document = load(
            "bom.md",
            b"\xEF\xBB\xBF---\ntitle: With BOM\n---\nHello there.\n",
        );
        assert_eq!(document.title, "With BOM");
        assert_eq!(all_text(&document), "Hello there.");
    }

    #[test]
    fn oversized_documents_are_refused() {
        let bytes = vec![b'a'; MAX_DOCUMENT_BYTES as usize + 1];
        let err = load_error("huge.txt", &bytes);
        assert!(matches!(err, LoadError::TooLarge { size, .. } if size == MAX_DOCUMENT_BYTES + 1));
    }

    #[test]
    fn oversized_files_are_refused_before_reading() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file_path = dir.path().join("huge.pdf");
        // A sparse file: large on paper, no disk or memory used.
        std::fs::File::create(&file_path)?.set_len(MAX_DOCUMENT_BYTES + 1)?;
        let result = load_document_from_path(&file_path, "huge.pdf", &ChunkingOptions::default());
        assert!(
            matches!(result, Err(LoadError::TooLarge { .. })),
            "{result:?}"
        );
        Ok(())
    }

    #[test]
    fn unsupported_files_and_intents_are_refused() {
        for source in [
            "intents.yaml",
            "sub/Intents.yml",
            "config.yaml",
            "logo.png",
            "Makefile",
        ] {
            let err = load_error(source, b"content");
            assert!(
                matches!(&err, LoadError::Unsupported { path } if path == source),
                "{err:?}"
            );
        }
    }

    // --- Discovery and naming -----------------------------------------------------------------

    #[test]
    fn kinds_are_chosen_by_file_name() {
        let cases = [
            ("a.md", Some(DocumentKind::Markdown)),
            ("A.MARKDOWN", Some(DocumentKind::Markdown)),
            ("notes.txt", Some(DocumentKind::Text)),
            ("page.htm", Some(DocumentKind::Html)),
            ("Guide.PDF", Some(DocumentKind::Pdf)),
            ("faq.yaml", Some(DocumentKind::Faq)),
            ("dir/faq.yml", Some(DocumentKind::Faq)),
            ("billing.faq.yaml", Some(DocumentKind::Faq)),
            ("returns.csv", Some(DocumentKind::Faq)),
            ("intents.yaml", None),
            ("settings.yaml", None),
            ("README", None),
        ];
        for (source, expected) in cases {
            assert_eq!(document_kind_for(source), expected, "{source}");
        }
    }

    #[test]
    fn file_names_are_humanised_for_titles() {
        assert_eq!(
            humanised_file_stem("docs/getting-started.md"),
            "Getting started"
        );
        assert_eq!(humanised_file_stem("billing.faq.yaml"), "Billing FAQ");
        assert_eq!(humanised_file_stem("faq.yml"), "FAQ");
        assert_eq!(humanised_file_stem("API_keys.txt"), "API keys");
        assert_eq!(humanised_file_stem("---.md"), "---.md");
    }

    #[test]
    fn discovery_walks_the_folder_sorted_and_skips_hidden_files_and_intents(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("guides/advanced"))?;
        std::fs::create_dir_all(root.join(".git"))?;
        for file in [
            "zebra.txt",
            "README.md",
            "intents.yaml",
            "faq.yaml",
            "logo.png",
            ".draft.md",
            ".git/notes.md",
            "guides/setup.md",
            "guides/advanced/api.html",
            "guides/returns.csv",
        ] {
            std::fs::write(root.join(file), "x")?;
        }
        let found = discover_files(root)?;
        let sources: Vec<&str> = found.iter().map(|(_, source)| source.as_str()).collect();
        assert_eq!(
            sources,
            vec![
                "README.md",
                "faq.yaml",
                "guides/advanced/api.html",
                "guides/returns.csv",
                "guides/setup.md",
                "zebra.txt"
            ]
        );
        for (file_path, source) in &found {
            assert_eq!(file_path, &root.join(source));
        }
        Ok(())
    }

    #[test]
    fn discovery_of_a_missing_folder_is_an_io_error() {
        let result = discover_files(Path::new("/nonexistent/baton-knowledge"));
        assert!(matches!(result, Err(LoadError::Io { .. })), "{result:?}");
    }

    #[test]
    fn every_fixture_in_the_knowledge_folder_loads() -> Result<(), LoadError> {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knowledge");
        let found = discover_files(&folder)?;
        assert_eq!(found.len(), 6, "{found:?}");
        for (file_path, source) in found {
            let document =
                load_document_from_path(&file_path, &source, &ChunkingOptions::default())?;
            assert!(!document.chunks.is_empty(), "{source}");
        }
        Ok(())
    }
}

/// Every loader against mutated fixtures and arbitrary bytes: an error or a well-formed document,
/// never a panic; and plain text keeps every word it was given.
#[cfg(test)]
mod properties {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::test_support::{mutated, noise};

    const FIXTURES: [(&str, &[u8]); 6] = [
        (
            "guide.md",
            include_bytes!("../../tests/fixtures/knowledge/getting-started.md"),
        ),
        (
            "help.html",
            include_bytes!("../../tests/fixtures/knowledge/help-center.html"),
        ),
        (
            "hours.txt",
            include_bytes!("../../tests/fixtures/knowledge/opening-hours.txt"),
        ),
        (
            "faq.yaml",
            include_bytes!("../../tests/fixtures/knowledge/faq.yaml"),
        ),
        (
            "returns-faq.csv",
            include_bytes!("../../tests/fixtures/knowledge/returns-faq.csv"),
        ),
        (
            "shipping.pdf",
            include_bytes!("../../tests/fixtures/knowledge/shipping-guide.pdf"),
        ),
    ];

    /// What every loaded document promises whatever the input was.
    fn check_document(source: &str, document: &Document) {
        assert_eq!(document.source, source);
        assert_eq!(document.id, document_id_for_source(source));
        assert!(
            !document.chunks.is_empty(),
            "{source}: a document has chunks"
        );
        let mut ids = HashSet::new();
        for (ordinal, chunk) in document.chunks.iter().enumerate() {
            assert_eq!(chunk.ordinal as usize, ordinal, "{source}");
            assert_eq!(chunk.document_id, document.id);
            assert!(!chunk.text.trim().is_empty(), "{source}: empty chunk");
            assert!(ids.insert(chunk.id.clone()), "{source}: chunk id repeated");
        }
    }

    fn load_any(source: &str, bytes: &[u8]) {
        match load_document(source, bytes, &ChunkingOptions::default()) {
            Ok(document) => check_document(source, &document),
            Err(err) => assert!(
                err.to_string().contains(source),
                "an error names the file: {err}"
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn mutated_files_load_or_fail_cleanly(
            which in 0..FIXTURES.len(),
            bytes in (0..FIXTURES.len()).prop_flat_map(|i| mutated(FIXTURES[i].1)),
        ) {
            // `bytes` mutates one fixture and is loaded as every kind, so each parser also meets
            // the other formats' syntax.
            let (source, _) = FIXTURES[which];
            load_any(source, &bytes);
        }

        #[test]
        fn each_fixture_mutated_loads_as_itself_or_fails_cleanly(
            bytes in mutated(FIXTURES[0].1),
            html in mutated(FIXTURES[1].1),
            text in mutated(FIXTURES[2].1),
            yaml in mutated(FIXTURES[3].1),
            csv in mutated(FIXTURES[4].1),
            pdf in mutated(FIXTURES[5].1),
        ) {
            for (index, input) in [bytes, html, text, yaml, csv, pdf].iter().enumerate() {
                load_any(FIXTURES[index].0, input);
            }
        }

        #[test]
        fn arbitrary_bytes_load_or_fail_cleanly(which in 0..FIXTURES.len(), bytes in noise(4096)) {
            load_any(FIXTURES[which].0, &bytes);
        }

        #[test]
        fn plain_text_keeps_every_word(
            paragraphs in prop::collection::vec(
                prop::collection::vec("[a-z]{1,12}", 1..40),
                1..12,
            ),
        ) {
            let text = paragraphs
                .iter()
                .map(|words| words.join(" ") + ".")
                .collect::<Vec<_>>()
                .join("\n\n");
            let document = load_document("notes.txt", text.as_bytes(), &ChunkingOptions::default())
                .expect("plain words load");
            check_document("notes.txt", &document);
            let kept: HashSet<&str> = document
                .chunks
                .iter()
                .flat_map(|c| c.text.split(|ch: char| !ch.is_ascii_alphabetic()))
                .chain(document.title.split(|ch: char| !ch.is_ascii_alphabetic()))
                .collect();
            for word in paragraphs.iter().flatten() {
                prop_assert!(kept.contains(word.as_str()), "{word:?} was lost from {text:?}");
            }
        }
    }
}
