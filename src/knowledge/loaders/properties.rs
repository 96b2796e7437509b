use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::test_support::{mutated, noise};

const FIXTURES: [(&str, &[u8]); 6] = [
    (
        "guide.md",
        include_bytes!("../../../tests/fixtures/knowledge/getting-started.md"),
    ),
    (
        "help.html",
        include_bytes!("../../../tests/fixtures/knowledge/help-center.html"),
    ),
    (
        "hours.txt",
        include_bytes!("../../../tests/fixtures/knowledge/opening-hours.txt"),
    ),
    (
        "faq.yaml",
        include_bytes!("../../../tests/fixtures/knowledge/faq.yaml"),
    ),
    (
        "returns-faq.csv",
        include_bytes!("../../../tests/fixtures/knowledge/returns-faq.csv"),
    ),
    (
        "shipping.pdf",
        include_bytes!("../../../tests/fixtures/knowledge/shipping-guide.pdf"),
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
