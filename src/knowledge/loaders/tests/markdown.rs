//! Markdown, chunk sizes and stable ids.

use super::*;

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
    assert!(text
        .contains("valid for 24 hours; if it expires, request a new one from the sign-in page."));
    assert!(
        !text.contains("https://example.com/sign-in"),
        "link targets are not content"
    );
    assert!(text.contains(
        "1. Open the sign-up form.\n2. Enter your name, email and a password of at least 12 characters.\n3. Click the link in the confirmation email."
    ));
    assert!(text.contains("Plan | Price per month | Seats\nStarter | $0 | 1\nTeam | $29 | 10"));
    assert!(
        text.contains("curl -H \"Authorization: Bearer $KEY\" https://api.example.com/v1/orders")
    );
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
