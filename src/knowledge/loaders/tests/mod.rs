//! The loaders' tests, by format; what every format shares (errors, discovery, the knowledge
//! folder's fixtures) is here.

mod faq;
mod html;
mod markdown;
mod text_and_pdf;

use super::*;

const MARKDOWN_FIXTURE: &[u8] =
    include_bytes!("../../../../tests/fixtures/knowledge/getting-started.md");
const HTML_FIXTURE: &[u8] = include_bytes!("../../../../tests/fixtures/knowledge/help-center.html");
const TEXT_FIXTURE: &[u8] =
    include_bytes!("../../../../tests/fixtures/knowledge/opening-hours.txt");
const FAQ_YAML_FIXTURE: &[u8] = include_bytes!("../../../../tests/fixtures/knowledge/faq.yaml");
const FAQ_CSV_FIXTURE: &[u8] =
    include_bytes!("../../../../tests/fixtures/knowledge/returns-faq.csv");
const PDF_FIXTURE: &[u8] =
    include_bytes!("../../../../tests/fixtures/knowledge/shipping-guide.pdf");
const CORRUPT_PDF_FIXTURE: &[u8] =
    include_bytes!("../../../../tests/fixtures/knowledge-invalid/corrupt.pdf");

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
        let document = load_document_from_path(&file_path, &source, &ChunkingOptions::default())?;
        assert!(!document.chunks.is_empty(), "{source}");
    }
    Ok(())
}
