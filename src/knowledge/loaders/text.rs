//! Plain text: a short first line is the title; paragraphs are rejoined from wrapped lines.

use super::*;

pub(super) fn parse_text(source: &str, text: &str, options: &ChunkingOptions) -> Parsed {
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
pub(super) fn looks_like_title(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty()
        && line.chars().count() <= MAX_TITLE_LINE_CHARS
        && !line.ends_with(['.', ',', ';', ':', '!', '?'])
}

/// `text` without its first non-empty line when that line is `title`; `None` when nothing else
/// would remain (a one-line file keeps its line as content).
pub(super) fn without_first_line_matching(text: &str, title: &str) -> Option<String> {
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
pub(super) fn plain_paragraphs(text: &str, repair_hyphenation: bool) -> Vec<String> {
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

pub(super) fn join_wrapped_lines(lines: &[&str], repair_hyphenation: bool) -> String {
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
pub(super) fn append_wrapped(joined: &mut String, continuation: &str, repair_hyphenation: bool) {
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

pub(super) fn starts_list_item(line: &str) -> bool {
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
