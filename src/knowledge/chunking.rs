//! Structure-aware chunking: turning a document's sections into retrievable chunks.
//!
//! The loaders (see `loaders.rs`) turn each format into [`Section`]s: the headings above a run of
//! content plus its blocks (paragraphs, lists, tables, code). This module packs those blocks into
//! chunk texts under three rules:
//!
//! 1. A chunk never spans two sections, so every chunk sits under exactly one heading path.
//! 2. Within a section, whole blocks are packed together up to `max_chars`, balancing the pieces
//!    so a section of 1,100 characters becomes two chunks of ~550 rather than 1,000 + 100.
//! 3. A block longer than `max_chars` is split at line breaks (lists, tables, code), then at
//!    sentence ends, then at whitespace, and only as a last resort inside a word.
//!
//! Fragments shorter than `min_chars` are merged into a neighbour in the same section when the
//! result still fits, so a lone "Note:" line does not become a chunk of its own.
//!
//! Lengths are counted in `char`s, not bytes, so non-Latin text gets the same budget.

/// How large chunks may get. Lengths are in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingOptions {
    /// Upper bound on a chunk's text length (FAQ answers are exempt: an entry is never split).
    pub max_chars: usize,
    /// Chunks shorter than this are merged into a neighbour in the same section when they fit.
    pub min_chars: usize,
}

impl Default for ChunkingOptions {
    fn default() -> Self {
        Self {
            max_chars: 1000,
            min_chars: 80,
        }
    }
}

impl ChunkingOptions {
    /// The options actually applied: a zero `max_chars` would make no progress when splitting, and
    /// a `min_chars` above `max_chars` could never be satisfied.
    fn effective(self) -> Self {
        let max_chars = self.max_chars.max(1);
        Self {
            max_chars,
            min_chars: self.min_chars.min(max_chars),
        }
    }
}

/// A run of content under one heading path, as produced by a format loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// Headings above this content, outermost first.
    pub heading_path: Vec<String>,
    /// Paragraphs, lists, tables and code blocks in reading order. Multi-line blocks (lists,
    /// tables, code) keep their line breaks; paragraphs are single-spaced.
    pub blocks: Vec<String>,
}

impl Section {
    pub fn new(heading_path: Vec<String>) -> Self {
        Self {
            heading_path,
            blocks: Vec::new(),
        }
    }

    /// Adds a block unless it is blank.
    pub fn push_block(&mut self, block: String) {
        if !block.trim().is_empty() {
            self.blocks.push(block);
        }
    }
}

/// A chunk before it gets its ids and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDraft {
    pub heading_path: Vec<String>,
    pub text: String,
    /// Set for FAQ entries only.
    pub question: Option<String>,
}

/// Separator between whole blocks packed into one chunk: a blank line keeps paragraphs apart
/// when the chunk is shown to a customer.
const BLOCK_SEPARATOR: &str = "\n\n";

/// Packs each section's blocks into chunk drafts, in document order.
pub fn chunk_sections(sections: &[Section], options: &ChunkingOptions) -> Vec<ChunkDraft> {
    let options = options.effective();
    let mut drafts = Vec::new();
    for section in sections {
        let pieces: Vec<String> = section
            .blocks
            .iter()
            .flat_map(|block| split_to_fit(block.trim(), options.max_chars))
            .collect();
        let packed = pack_balanced(pieces, options.max_chars, BLOCK_SEPARATOR);
        let merged = merge_tiny(packed, &options, BLOCK_SEPARATOR);
        drafts.extend(merged.into_iter().map(|text| ChunkDraft {
            heading_path: section.heading_path.clone(),
            text,
            question: None,
        }));
    }
    drafts
}

/// Collapses every run of whitespace (including non-breaking spaces and line breaks) into one
/// space, drops invisible characters (zero-width spaces, soft hyphens, byte-order marks, control
/// characters) and trims the ends.
pub fn normalise_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for ch in text.chars() {
        if ch.is_whitespace() {
            pending_space = true;
        } else if is_invisible(ch) {
            continue;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(ch);
        }
    }
    out
}

/// Characters that carry no visible text and would only add noise to embeddings and matching.
fn is_invisible(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
        )
}

pub(crate) fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Splits `text` into pieces of at most `max_chars`, preferring the most meaningful boundary
/// available: line breaks, then sentence ends, then whitespace, then (for a single enormous
/// "word" such as a URL or base64 blob) raw character positions.
fn split_to_fit(text: &str, max_chars: usize) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    if char_len(text) <= max_chars {
        return vec![text.to_string()];
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.len() > 1 {
        let units = lines
            .into_iter()
            .flat_map(|line| split_to_fit(line, max_chars))
            .collect();
        return pack_balanced(units, max_chars, "\n");
    }
    let single_line = normalise_whitespace(text);
    let sentences = split_sentences(&single_line);
    if sentences.len() > 1 {
        let units = sentences
            .into_iter()
            .flat_map(|sentence| split_to_fit(sentence, max_chars))
            .collect();
        return pack_balanced(units, max_chars, " ");
    }
    let words: Vec<String> = single_line.split(' ').map(str::to_string).collect();
    if words.len() > 1 {
        let units = words
            .into_iter()
            .flat_map(|word| split_to_fit(&word, max_chars))
            .collect();
        return pack_balanced(units, max_chars, " ");
    }
    hard_split(&single_line, max_chars)
}

fn hard_split(text: &str, max_chars: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max_chars)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// Joins consecutive units (each already at most `max_chars`) into pieces of at most `max_chars`.
///
/// Plain greedy packing leaves a small tail (1,000 + 100); instead we aim for the average size
/// the minimum number of pieces would need, closing a piece once it reaches that target.
fn pack_balanced(units: Vec<String>, max_chars: usize, separator: &str) -> Vec<String> {
    let separator_len = char_len(separator);
    let unit_lens: Vec<usize> = units.iter().map(|unit| char_len(unit)).collect();
    let total: usize =
        unit_lens.iter().sum::<usize>() + separator_len * units.len().saturating_sub(1);
    if total == 0 {
        return Vec::new();
    }
    let piece_count = total.div_ceil(max_chars);
    let target = total.div_ceil(piece_count);

    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for (unit, unit_len) in units.into_iter().zip(unit_lens) {
        if current.is_empty() {
            current = unit;
            current_len = unit_len;
        } else if current_len >= target || current_len + separator_len + unit_len > max_chars {
            pieces.push(std::mem::take(&mut current));
            current = unit;
            current_len = unit_len;
        } else {
            current.push_str(separator);
            current.push_str(&unit);
            current_len += separator_len + unit_len;
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Merges pieces shorter than `min_chars` into the previous piece, or else the next one, when the
/// merged text still fits in `max_chars`; otherwise the fragment stays a chunk of its own.
fn merge_tiny(pieces: Vec<String>, options: &ChunkingOptions, separator: &str) -> Vec<String> {
    let separator_len = char_len(separator);
    let mut merged: Vec<String> = Vec::with_capacity(pieces.len());
    let mut waiting_for_next: Option<String> = None;
    for piece in pieces {
        let piece = match waiting_for_next.take() {
            Some(tiny)
                if char_len(&tiny) + separator_len + char_len(&piece) <= options.max_chars =>
            {
                format!("{tiny}{separator}{piece}")
            }
            Some(tiny) => {
                merged.push(tiny);
                piece
            }
            None => piece,
        };
        let piece_len = char_len(&piece);
        if piece_len >= options.min_chars {
            merged.push(piece);
            continue;
        }
        match merged.last_mut() {
            Some(previous)
                if char_len(previous) + separator_len + piece_len <= options.max_chars =>
            {
                previous.push_str(separator);
                previous.push_str(&piece);
            }
            _ => waiting_for_next = Some(piece),
        }
    }
    merged.extend(waiting_for_next);
    merged
}

/// Words that end in a full stop without ending a sentence ("Dr. Smith", "approx. 5 days").
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "no", "vs", "etc", "e.g", "i.e", "approx", "inc", "ltd",
    "co", "jr", "sr", "fig", "ca",
];

/// Splits single-line text after `.`, `!`, `?` or `…` (plus any closing quotes or brackets) when
/// the next word starts like a sentence: an uppercase letter, a digit, or an opening quote.
/// Abbreviations and decimals ("3.5") do not end a sentence.
pub(crate) fn split_sentences(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut index = 0;
    while index < chars.len() {
        let (_, ch) = chars[index];
        if !matches!(ch, '.' | '!' | '?' | '…' | '。' | '！' | '？') {
            index += 1;
            continue;
        }
        let mut end = index + 1;
        while end < chars.len() && matches!(chars[end].1, '"' | '\'' | ')' | ']' | '”' | '’' | '»')
        {
            end += 1;
        }
        let Some(&(next_offset, next_char)) = chars.get(end) else {
            break;
        };
        if !next_char.is_whitespace() {
            index = end;
            continue;
        }
        let following = chars[end..]
            .iter()
            .map(|&(_, c)| c)
            .find(|c| !c.is_whitespace());
        let starts_sentence = following.is_some_and(|c| {
            c.is_uppercase()
                || c.is_ascii_digit()
                || matches!(c, '"' | '\'' | '“' | '‘' | '(' | '«')
        });
        let after_abbreviation = ch == '.' && ends_with_abbreviation(&text[start..chars[index].0]);
        if starts_sentence && !after_abbreviation {
            let sentence = text[start..next_offset].trim();
            if !sentence.is_empty() {
                sentences.push(sentence);
            }
            start = next_offset;
        }
        index = end;
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        sentences.push(rest);
    }
    sentences
}

fn ends_with_abbreviation(text_before_stop: &str) -> bool {
    let last_word = text_before_stop
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    // Single capital letters are initials ("J. R. Smith").
    let is_initial = last_word.chars().count() == 1 && last_word.chars().all(char::is_alphabetic);
    is_initial || ABBREVIATIONS.contains(&last_word.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_chars: usize, min_chars: usize) -> ChunkingOptions {
        ChunkingOptions {
            max_chars,
            min_chars,
        }
    }

    fn section(path: &[&str], blocks: &[&str]) -> Section {
        Section {
            heading_path: path.iter().map(|s| s.to_string()).collect(),
            blocks: blocks.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn normalise_whitespace_collapses_runs_and_drops_invisible_characters() {
        let messy = "  Free\u{00A0}shipping \n\t on orders\u{200B} over\u{00AD} $50.  ";
        assert_eq!(
            normalise_whitespace(messy),
            "Free shipping on orders over $50."
        );
        assert_eq!(normalise_whitespace(" \n\t "), "");
    }

    #[test]
    fn sentences_split_at_terminators_but_not_abbreviations_or_decimals() {
        let text =
            "Refunds take 3.5 days. Dr. Smith approves them! Why? \"Policy.\" Then e.g. this one.";
        assert_eq!(
            split_sentences(text),
            vec![
                "Refunds take 3.5 days.",
                "Dr. Smith approves them!",
                "Why?",
                "\"Policy.\"",
                "Then e.g. this one."
            ]
        );
    }

    #[test]
    fn a_lowercase_continuation_does_not_start_a_new_sentence() {
        assert_eq!(
            split_sentences("See section 4. below for details."),
            vec!["See section 4. below for details."]
        );
    }

    #[test]
    fn small_sections_become_one_chunk_each_and_never_merge_across_headings() {
        let sections = vec![
            section(&["Shipping"], &["Short shipping note."]),
            section(&["Returns"], &["Short returns note."]),
        ];
        let drafts = chunk_sections(&sections, &options(1000, 80));
        assert_eq!(drafts.len(), 2);
        assert_eq!(drafts[0].heading_path, vec!["Shipping"]);
        assert_eq!(drafts[0].text, "Short shipping note.");
        assert_eq!(drafts[1].heading_path, vec!["Returns"]);
        assert_eq!(drafts[1].text, "Short returns note.");
    }

    #[test]
    fn paragraphs_are_packed_up_to_the_cap_and_kept_whole() {
        let paragraph = "word ".repeat(30).trim().to_string(); // 149 chars
        let blocks: Vec<&str> = std::iter::repeat_n(paragraph.as_str(), 10).collect();
        let drafts = chunk_sections(&[section(&["Guide"], &blocks)], &options(400, 80));
        assert!(
            drafts.len() >= 4,
            "1,500 chars at 400 need at least 4 chunks"
        );
        for draft in &drafts {
            assert!(
                char_len(&draft.text) <= 400,
                "chunk over cap: {}",
                draft.text.len()
            );
            for part in draft.text.split(BLOCK_SEPARATOR) {
                assert_eq!(part, paragraph, "paragraphs must not be cut when they fit");
            }
        }
    }

    #[test]
    fn packing_balances_instead_of_leaving_a_small_tail() {
        let first = "a".repeat(500);
        let second = "b".repeat(500);
        let third = "c".repeat(100);
        let drafts = chunk_sections(
            &[section(&[], &[&first, &second, &third])],
            &options(1000, 80),
        );
        let lengths: Vec<usize> = drafts.iter().map(|d| char_len(&d.text)).collect();
        assert_eq!(lengths, vec![500, 602]);
    }

    #[test]
    fn a_long_paragraph_is_split_at_sentence_boundaries() {
        let sentence = "Our support team answers every message within one business day.";
        let paragraph = [sentence; 12].join(" ");
        let drafts = chunk_sections(&[section(&["Support"], &[&paragraph])], &options(200, 40));
        assert!(drafts.len() > 1);
        for draft in &drafts {
            assert!(char_len(&draft.text) <= 200);
            assert!(draft.text.starts_with("Our support team"), "{}", draft.text);
            assert!(draft.text.ends_with("business day."), "{}", draft.text);
        }
        let rejoined: Vec<&str> = drafts.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(rejoined.join(" "), paragraph);
    }

    #[test]
    fn a_sentence_longer_than_the_cap_is_split_at_whitespace() {
        let sentence = "lorem ".repeat(100);
        let drafts = chunk_sections(&[section(&[], &[sentence.trim()])], &options(64, 10));
        assert!(drafts.len() > 1);
        for draft in &drafts {
            assert!(char_len(&draft.text) <= 64);
            assert!(!draft.text.starts_with(' ') && !draft.text.ends_with(' '));
            assert!(draft.text.split(' ').all(|word| word == "lorem"));
        }
    }

    #[test]
    fn a_single_enormous_word_is_split_by_characters() {
        let blob = "é".repeat(250);
        let drafts = chunk_sections(&[section(&[], &[&blob])], &options(100, 10));
        let lengths: Vec<usize> = drafts.iter().map(|d| char_len(&d.text)).collect();
        assert_eq!(lengths.iter().sum::<usize>(), 250);
        assert!(lengths.iter().all(|&len| len <= 100));
    }

    #[test]
    fn long_lists_split_between_items() {
        let list: Vec<String> = (1..=30)
            .map(|n| format!("- Item number {n} of the packing list"))
            .collect();
        let block = list.join("\n");
        let drafts = chunk_sections(&[section(&["Packing"], &[&block])], &options(300, 40));
        assert!(drafts.len() > 1);
        for draft in &drafts {
            assert!(char_len(&draft.text) <= 300);
            assert!(draft
                .text
                .lines()
                .all(|line| line.starts_with("- Item number")));
        }
    }

    #[test]
    fn a_tiny_trailing_fragment_merges_into_its_neighbour() {
        let body = "x".repeat(300);
        let drafts = chunk_sections(&[section(&[], &[&body, "Thanks!"])], &options(400, 80));
        assert_eq!(drafts.len(), 1);
        assert!(drafts[0].text.ends_with("\n\nThanks!"));
    }

    #[test]
    fn a_tiny_leading_fragment_merges_forward_when_the_previous_piece_is_full() {
        let pieces = vec!["Note:".to_string(), "y".repeat(300)];
        let merged = merge_tiny(pieces, &options(400, 80), BLOCK_SEPARATOR);
        assert_eq!(merged.len(), 1);
        assert!(merged[0].starts_with("Note:\n\n"));
    }

    #[test]
    fn a_tiny_fragment_stays_alone_when_merging_would_break_the_cap() {
        let full = "z".repeat(395);
        let merged = merge_tiny(
            vec![full.clone(), "Tiny.".to_string(), full.clone()],
            &options(400, 80),
            BLOCK_SEPARATOR,
        );
        assert_eq!(merged, vec![full.clone(), "Tiny.".to_string(), full]);
    }

    #[test]
    fn degenerate_options_do_not_loop_forever() {
        let drafts = chunk_sections(&[section(&[], &["abc def"])], &options(0, 500));
        assert_eq!(drafts.len(), 6);
        assert!(drafts.iter().all(|d| char_len(&d.text) == 1));
    }

    #[test]
    fn blank_blocks_produce_no_chunks() {
        let mut section = Section::new(vec!["Empty".to_string()]);
        section.push_block("   \n ".to_string());
        assert!(section.blocks.is_empty());
        assert!(chunk_sections(&[section], &ChunkingOptions::default()).is_empty());
    }
}
