//! HTML: the article content, without page chrome (navigation, footers, scripts).

use scraper::{ElementRef, Html, Node};

use super::structure::{ListBuilder, SectionBuilder, TableBuilder};
use super::*;

pub(super) fn parse_html(source: &str, text: &str, options: &ChunkingOptions) -> Parsed {
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
pub(super) fn first_element<'a>(
    root: ElementRef<'a>,
    predicate: impl Fn(&ElementRef<'a>) -> bool,
) -> Option<ElementRef<'a>> {
    root.descendants()
        .filter_map(ElementRef::wrap)
        .find(|element| predicate(element))
}

/// Page chrome and invisible content that must not become knowledge.
pub(super) fn is_html_boilerplate(element: ElementRef<'_>) -> bool {
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
pub(super) fn visible_text(element: ElementRef<'_>) -> String {
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

pub(super) fn is_html_heading(name: &str) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

pub(super) fn is_html_block(name: &str) -> bool {
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

pub(super) struct HtmlCollector {
    pub(super) title: Option<String>,
    seen_first_h1: bool,
    pub(super) sections: SectionBuilder,
    pub(super) inline: String,
    pub(super) list: ListBuilder,
    pub(super) table: Option<TableBuilder>,
    /// Depth of open table cells: block boundaries inside a cell must not split its text.
    pub(super) cell_depth: usize,
}

impl HtmlCollector {
    pub(super) fn new(title: Option<String>) -> Self {
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

    pub(super) fn walk(&mut self, element: ElementRef<'_>) {
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

    pub(super) fn visit(&mut self, element: ElementRef<'_>) {
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

    pub(super) fn start_heading(&mut self, level: u8, text: String) {
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

    pub(super) fn flush_inline(&mut self) {
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

    pub(super) fn finish(mut self) -> Vec<Section> {
        self.flush_inline();
        self.sections.finish()
    }
}
