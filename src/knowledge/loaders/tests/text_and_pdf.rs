//! Plain text and PDF.

use super::super::pdf::{drop_leading_title, is_meaningful_pdf_title, pdf_paragraphs};
use super::*;

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
