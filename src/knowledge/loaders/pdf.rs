//! PDF: text extracted page by page, the metadata title, repaired line wraps and ligatures.

use super::text::{append_wrapped, plain_paragraphs};
use super::*;

/// Text pulled out of a PDF, before cleaning.
pub(super) struct PdfText {
    pub(super) metadata_title: Option<String>,
    pub(super) pages: Vec<String>,
}

pub(super) fn parse_pdf(
    source: &str,
    bytes: &[u8],
    options: &ChunkingOptions,
) -> Result<Parsed, LoadError> {
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

pub(super) fn extract_pdf_text(bytes: &[u8]) -> Result<PdfText, String> {
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

pub(super) fn pdf_metadata_title(document: &pdf_extract::Document) -> Option<String> {
    let info = match resolve_pdf_reference(document, document.trailer.get(b"Info").ok()?)? {
        pdf_extract::Object::Dictionary(info) => info,
        _ => return None,
    };
    let title = resolve_pdf_reference(document, info.get(b"Title").ok()?)?;
    pdf_extract::decode_text_string(title)
        .ok()
        .and_then(non_empty)
}

pub(super) fn resolve_pdf_reference<'a>(
    document: &'a pdf_extract::Document,
    object: &'a pdf_extract::Object,
) -> Option<&'a pdf_extract::Object> {
    match object {
        pdf_extract::Object::Reference(id) => document.get_object(*id).ok(),
        other => Some(other),
    }
}

/// Paragraphs of all pages, with paragraphs wrongly split by the extractor rejoined.
pub(super) fn pdf_paragraphs(pages: &[String]) -> Vec<String> {
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
pub(super) fn continues_paragraph(previous: &str, next: &str) -> bool {
    !previous.ends_with(['.', '!', '?', ':', ';'])
        && next.chars().next().is_some_and(char::is_lowercase)
}

/// PDF fonts often encode "fi", "fl" etc. as single ligature glyphs, which would not match the
/// words customers type.
pub(super) fn expand_ligatures(text: &str) -> String {
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
pub(super) fn is_meaningful_pdf_title(title: &str) -> bool {
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
pub(super) fn drop_leading_title(mut paragraphs: Vec<String>, title: &str) -> Vec<String> {
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

pub(super) fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    let boundary = text[prefix.len()..].starts_with(char::is_whitespace);
    (head.eq_ignore_ascii_case(prefix) && boundary).then(|| &text[prefix.len()..])
}
