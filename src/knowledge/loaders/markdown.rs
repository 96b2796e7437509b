//! Markdown, with optional YAML front matter (title, url).

use pulldown_cmark::{Event, HeadingLevel, Options as MarkdownOptions, Parser, Tag, TagEnd};

use super::structure::{ListBuilder, SectionBuilder, TableBuilder};
use super::*;

pub(super) struct FrontMatter {
    pub(super) title: Option<String>,
    pub(super) url: Option<String>,
}

/// Splits a leading `---` ... `---` (or `...`) YAML block from the Markdown body. A file that
/// starts with `---` but never closes it is plain Markdown (a thematic break).
pub(super) fn split_front_matter<'a>(
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

pub(super) fn parse_front_matter(source: &str, yaml: &str) -> Result<FrontMatter, LoadError> {
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
pub(super) fn yaml_scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(text) => Some(text.clone()),
        serde_yaml::Value::Number(number) => Some(number.to_string()),
        serde_yaml::Value::Bool(flag) => Some(flag.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        serde_yaml::Value::Tagged(tagged) => yaml_scalar_text(&tagged.value),
        serde_yaml::Value::Sequence(_) | serde_yaml::Value::Mapping(_) => None,
    }
}

pub(super) fn parse_markdown(
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
pub(super) struct MarkdownCollector {
    /// The document title once known: from front matter, or the first level-1 heading.
    pub(super) title: Option<String>,
    pub(super) sections: SectionBuilder,
    pub(super) inline: String,
    pub(super) list: ListBuilder,
    pub(super) table: Option<TableBuilder>,
    pub(super) code_block: Option<String>,
    pub(super) image_depth: usize,
}

impl MarkdownCollector {
    pub(super) fn new(front_matter_title: Option<String>) -> Self {
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

    pub(super) fn handle(&mut self, event: Event<'_>) {
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

    pub(super) fn start(&mut self, tag: Tag<'_>) {
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

    pub(super) fn end(&mut self, tag: TagEnd) {
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

    pub(super) fn start_heading(&mut self, level: u8, text: String) {
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

    pub(super) fn flush_inline(&mut self) {
        let text = normalise_whitespace(&std::mem::take(&mut self.inline));
        if !text.is_empty() {
            self.emit_block(text);
        }
    }

    /// Sends a finished block to the open list item, or to the section.
    pub(super) fn emit_block(&mut self, block: String) {
        if block.trim().is_empty() {
            return;
        }
        if self.list.is_active() {
            self.list.append(&normalise_whitespace(&block));
        } else {
            self.sections.push_block(block);
        }
    }

    pub(super) fn finish(mut self) -> (Option<String>, Vec<Section>) {
        self.flush_inline();
        (self.title, self.sections.finish())
    }
}

pub(super) fn heading_level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}
