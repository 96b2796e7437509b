//! Shared builders for the structured formats (Markdown and HTML): sections under a heading path,
//! lists and tables turned into readable text.

use super::*;

/// Tracks the heading stack and collects sections as headings open new ones.
#[derive(Default)]
pub(super) struct SectionBuilder {
    pub(super) heading_stack: Vec<(u8, String)>,
    pub(super) sections: Vec<Section>,
    pub(super) current: Section,
}

impl SectionBuilder {
    /// Closes the current section and opens one under `text`. Headings at the same or a deeper
    /// level leave the path; `in_path: false` (the title heading) still closes deeper headings.
    pub(super) fn start_heading(&mut self, level: u8, text: String, in_path: bool) {
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

    pub(super) fn push_block(&mut self, block: String) {
        self.current.push_block(block);
    }

    pub(super) fn finish(mut self) -> Vec<Section> {
        if !self.current.blocks.is_empty() {
            self.sections.push(self.current);
        }
        self.sections
    }
}

/// One rendered list line: "  2. " prefix plus the item's text.
pub(super) struct ListLine {
    pub(super) prefix: String,
    pub(super) content: String,
}

/// Renders (possibly nested) lists as one block of lines: "- item", "1. item", indented by depth,
/// so a list stays together and reads like a list.
#[derive(Default)]
pub(super) struct ListBuilder {
    pub(super) lines: Vec<ListLine>,
    /// One entry per open list: the next number for ordered lists, `None` for bullets.
    pub(super) open_lists: Vec<Option<u64>>,
}

impl ListBuilder {
    pub(super) fn is_active(&self) -> bool {
        !self.open_lists.is_empty()
    }

    pub(super) fn open_list(&mut self, first_number: Option<u64>) {
        self.open_lists.push(first_number);
    }

    /// Closes the innermost list; returns the rendered block when the outermost one closes.
    pub(super) fn close_list(&mut self) -> Option<String> {
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

    pub(super) fn open_item(&mut self) {
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
    pub(super) fn append(&mut self, text: &str) {
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
pub(super) struct TableBuilder {
    pub(super) rows: Vec<String>,
    pub(super) cells: Vec<String>,
}

impl TableBuilder {
    pub(super) fn end_row(&mut self) {
        let cells = std::mem::take(&mut self.cells);
        if cells.iter().any(|cell| !cell.is_empty()) {
            self.rows.push(cells.join(" | "));
        }
    }
}
