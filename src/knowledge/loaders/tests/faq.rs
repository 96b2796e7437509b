//! FAQ files (YAML and CSV).

use super::*;

#[test]
fn faq_yaml_makes_one_chunk_per_entry() {
    let document = load("faq.yaml", FAQ_YAML_FIXTURE);
    assert_eq!(document.kind, DocumentKind::Faq);
    assert_eq!(document.title, "FAQ");
    assert_eq!(document.chunks.len(), 3);
    let questions: Vec<&str> = document
        .chunks
        .iter()
        .filter_map(|chunk| chunk.question.as_deref())
        .collect();
    assert_eq!(
        questions,
        vec![
            "How do I reset my password?",
            "Can I change my delivery address?",
            "Do you ship internationally?"
        ]
    );
    assert_eq!(
        document.chunks[1].text,
        "Yes, until the order ships.\n\nOpen the order in your account and choose \"Change address\"."
    );
    for chunk in &document.chunks {
        assert!(chunk.heading_path.is_empty());
        let question = chunk.question.as_deref().unwrap_or_default();
        let expected = hex::encode(Sha256::digest(format!("{question}\n{}", chunk.text)));
        assert_eq!(chunk.content_hash, expected);
    }
}

#[test]
fn faq_yaml_accepts_a_faqs_or_questions_mapping_with_title_and_url() {
    let document = load(
        "billing.faq.yaml",
        b"title: Billing questions\nurl: https://help.example.com/billing\nfaqs:\n  - question: When am I charged?\n    answer: On the first of each month.\n",
    );
    assert_eq!(document.title, "Billing questions");
    assert_eq!(
        document.url.as_deref(),
        Some("https://help.example.com/billing")
    );
    assert_eq!(
        document.chunks[0].question.as_deref(),
        Some("When am I charged?")
    );

    let document = load(
        "billing.faq.yml",
        b"questions:\n  - question: Is VAT included?\n    answer: 20\n",
    );
    assert_eq!(document.title, "Billing FAQ");
    assert_eq!(document.chunks[0].text, "20");
}

#[test]
fn faq_yaml_empty_answer_names_the_entry_and_line() {
    let yaml = b"- question: First?\n  answer: Yes.\n- question: Second?\n  answer: \"  \"\n";
    let err = load_error("faq.yaml", yaml);
    match &err {
        LoadError::Parse { path, line, reason } => {
            assert_eq!(path, "faq.yaml");
            assert_eq!(*line, Some(3));
            assert_eq!(reason, "entry 2: the answer is missing or empty");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "faq.yaml:3: entry 2: the answer is missing or empty"
    );
}

#[test]
fn faq_yaml_structural_problems_are_reported_with_lines() {
    let cases: [(&[u8], Option<usize>, &str); 5] = [
        (
            b"faqs:\n  - question: Fine?\n    answer: Yes.\n  - answer: No question here.\n",
            Some(4),
            "entry 2: the question is missing or empty",
        ),
        (
            b"- question: Fine?\n  answer: Yes.\n- just a string\n",
            Some(3),
            "entry 2: expected `question:` and `answer:` fields",
        ),
        (
            b"- question: [not, text]\n  answer: Yes.\n",
            Some(1),
            "entry 1: `question` must be text, not a list or mapping",
        ),
        (
            b"title: Orphan\nentries: []\n",
            Some(1),
            "expected a list of {question, answer} entries, or a `faqs:` (or `questions:`) list",
        ),
        (b"- question: ok\n  answer: [unclosed\n", Some(3), ""),
    ];
    for (yaml, expected_line, expected_reason) in cases {
        let err = load_error("help.faq.yaml", yaml);
        let LoadError::Parse { line, reason, .. } = &err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert_eq!(*line, expected_line, "{err}");
        if !expected_reason.is_empty() {
            assert_eq!(reason, expected_reason);
        }
    }
}

#[test]
fn faq_yaml_with_no_entries_is_empty() {
    assert!(matches!(
        load_error("faq.yaml", b"# nothing yet\n"),
        LoadError::Empty { .. }
    ));
    assert!(matches!(
        load_error("faq.yml", b"faqs: []\n"),
        LoadError::Empty { .. }
    ));
}

#[test]
fn faq_csv_makes_one_chunk_per_row() {
    let document = load("returns-faq.csv", FAQ_CSV_FIXTURE);
    assert_eq!(document.kind, DocumentKind::Faq);
    assert_eq!(document.title, "Returns FAQ");
    assert_eq!(document.chunks.len(), 3);
    assert_eq!(
        document.chunks[2].question.as_deref(),
        Some("Can I return a gift, and who gets the refund?")
    );
    assert_eq!(
        document.chunks[2].text,
        "Yes. The refund goes to the original payment method, not to the gift recipient."
    );
}

#[test]
fn faq_csv_header_columns_are_found_by_name() {
    let document = load(
        "support.csv",
        b"id,Answer,QUESTION\n1,Within a day.,How fast do you reply?\n,,\n2,Yes.,Is there a phone line?\n",
    );
    assert_eq!(document.chunks.len(), 2, "the blank spacer row is skipped");
    assert_eq!(
        document.chunks[0].question.as_deref(),
        Some("How fast do you reply?")
    );
    assert_eq!(document.chunks[0].text, "Within a day.");
}

#[test]
fn faq_csv_problems_name_the_line() {
    let err = load_error("faq.csv", b"q,a\nWhy?,Because.\n");
    assert!(
        matches!(err, LoadError::Parse { line: Some(1), .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("expected `question` and `answer`"),
        "{err}"
    );

    // The quoted answer spans lines 2-3, so the broken row starts on line 4.
    let csv = b"question,answer\nFirst?,\"Line one\nline two\"\nSecond?,\n";
    let err = load_error("faq.csv", csv);
    match &err {
        LoadError::Parse { line, reason, .. } => {
            assert_eq!(*line, Some(4));
            assert_eq!(reason, "entry 2: the answer is missing or empty");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn faq_chunk_ids_depend_on_the_question_too() {
    let document = load(
        "faq.yaml",
        b"- question: Do you ship to Norway?\n  answer: Yes.\n- question: Do you ship to Mars?\n  answer: Yes.\n",
    );
    assert_ne!(
        document.chunks[0].content_hash,
        document.chunks[1].content_hash
    );
    assert_ne!(document.chunks[0].id, document.chunks[1].id);
}
