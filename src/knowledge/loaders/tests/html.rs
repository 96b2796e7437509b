//! HTML.

use super::*;

#[test]
fn html_keeps_article_content_and_drops_page_chrome() {
    let document = load("help/delivery.html", HTML_FIXTURE);
    assert_eq!(document.kind, DocumentKind::Html);
    assert_eq!(document.title, "Delivery times | Acme Help Center");
    let url = Some("https://help.example.com/delivery-times".to_string());
    assert_eq!(document.url, url);
    let text = all_text(&document);
    for chrome in [
        "Log in",
        "Orders",
        "analytics",
        "trackPageView",
        "font-family",
        "Enable JavaScript",
        "Related:",
        "All rights reserved",
    ] {
        assert!(!text.contains(chrome), "{chrome:?} leaked into {text:?}");
    }
    let intro = chunk_containing(
        &document,
        "Most orders arrive within three to five working days.",
    );
    assert_eq!(
        intro.heading_path,
        path(&[]),
        "the title <h1> is not repeated"
    );
    let express = chunk_containing(&document, "before 2 pm arrive the next working day.");
    assert_eq!(express.heading_path, path(&["Express delivery"]));
    assert!(express
        .text
        .contains("- Available for addresses in the mainland only.\n- Costs $9.99 per order."));
    let tracking = chunk_containing(&document, "tracking link");
    assert_eq!(tracking.heading_path, path(&["Tracking your parcel"]));
    assert!(document.chunks.iter().all(|chunk| chunk.url == url));
}

#[test]
fn html_title_falls_back_to_h1_then_file_name() {
    let with_h1 = load(
        "page.html",
        b"<html><body><h1>Gift cards</h1><p>Gift cards never expire.</p><h2>Balance</h2><p>Check it online.</p></body></html>",
    );
    assert_eq!(with_h1.title, "Gift cards");
    assert_eq!(with_h1.chunks[0].heading_path, path(&[]));
    assert_eq!(with_h1.chunks[1].heading_path, path(&["Balance"]));
    assert_eq!(with_h1.url, None);

    let bare = load(
        "store-locations.htm",
        b"<p>We have shops in Leeds and York.</p>",
    );
    assert_eq!(bare.title, "Store locations");
    assert_eq!(all_text(&bare), "We have shops in Leeds and York.");
}

#[test]
fn html_tables_and_article_headers_are_kept() {
    let page = br#"<html><head><title>Sizes</title></head><body>
        <header>Site banner</header>
        <article><header><h1>Sizes</h1><p>Updated weekly.</p></header>
        <table><tr><th>Size</th><th>Chest</th></tr><tr><td>M</td><td><p>96</p><p>cm</p></td></tr></table>
        <div hidden>Secret draft</div>
        <p>Still <em>unsure</em>?<br>Contact us.</p>
        </article></body></html>"#;
    let document = load("sizes.html", page);
    let text = all_text(&document);
    assert!(!text.contains("Site banner"));
    assert!(!text.contains("Secret draft"));
    assert!(text.contains("Updated weekly."));
    assert!(text.contains("Size | Chest\nM | 96 cm"), "{text}");
    assert!(text.contains("Still unsure? Contact us."), "{text}");
}
