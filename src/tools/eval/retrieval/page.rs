//! The HTML page of `baton eval retrieval --html`.

use std::fmt::Write as _;

use super::RetrievalReport;
use crate::tools::eval::report::{
    card, column_chart, document_name, escape, page, pct, section_cards,
};

/// Retrieval misses listed in full; beyond this the table is cut (the JSON has them all).
const MISSES_SHOWN: usize = 200;

pub fn retrieval_page(report: &RetrievalReport) -> String {
    let mut body = String::new();
    section_cards(
        &mut body,
        &[
            card("recall@1", &pct(report.recall_at_1), "first result answers"),
            card(
                "MRR@10",
                &format!("{:.3}", report.mrr),
                "mean reciprocal rank",
            ),
            card(
                "nDCG@10",
                &format!("{:.3}", report.ndcg_at_10),
                "ranking quality",
            ),
            card(
                "queries",
                &report.queries.to_string(),
                &format!("{} documents, {} chunks", report.documents, report.chunks),
            ),
        ],
    );
    let columns = [
        ("recall@1", report.recall_at_1),
        ("recall@3", report.recall_at_3),
        ("recall@5", report.recall_at_5),
        ("recall@10", report.recall_at_10),
    ];
    let _ = write!(
        body,
        "<section><h2>Recall at k</h2><p class=\"hint\">Share of queries with a relevant \
         document among the first k results ({}).</p>{}</section>",
        if report.hybrid {
            "dense + keyword fusion"
        } else {
            "dense only"
        },
        column_chart(&columns)
    );

    let mut rows = String::new();
    for miss in report.misses.iter().take(MISSES_SHOWN) {
        // The relevant document among the top three, if it is there, stands out.
        let top: Vec<String> = miss
            .top
            .iter()
            .map(|t| {
                let class = if miss.relevant.contains(t) {
                    " class=\"relevant\""
                } else {
                    ""
                };
                format!("<li{class}>{}</li>", escape(document_name(t)))
            })
            .collect();
        let rank = match miss.rank {
            Some(rank) => format!("<span class=\"badge warn\">{rank}</span>"),
            None => "<span class=\"badge bad\">&gt;10</span>".to_string(),
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{rank}</td><td><ol class=\"top\">{}</ol></td></tr>",
            escape(&miss.query),
            escape(
                &miss
                    .relevant
                    .iter()
                    .map(|r| document_name(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            top.join("")
        );
    }
    let cut = if report.misses.len() > MISSES_SHOWN {
        format!(
            " The first {MISSES_SHOWN} are listed; the JSON report has all {}.",
            report.misses.len()
        )
    } else {
        String::new()
    };
    let _ = write!(
        body,
        "<section><h2>Queries not answered by the first result ({})</h2><p class=\"hint\">Rank \
         of the first relevant document, and the top three documents returned.{cut}</p>\
         <table class=\"list misses\"><thead><tr><th>query</th><th>relevant</th>\
         <th class=\"num\">rank</th><th>returned</th></tr></thead><tbody>{rows}</tbody></table></section>",
        report.misses.len()
    );
    let subtitle = format!(
        "{} · {} documents, {} chunks, {} queries",
        report.data, report.documents, report.chunks, report.queries
    );
    page("Knowledge retrieval", &subtitle, &body)
}

#[cfg(test)]
mod tests {
    use super::super::Miss;
    use super::*;
    use crate::tools::eval::report::tests::{assert_safe_and_self_contained, HOSTILE};

    #[test]
    fn retrieval_page_lists_misses_escaped() {
        let report = RetrievalReport {
            kind: "retrieval",
            data: "stackfaq".into(),
            documents: 3,
            chunks: 5,
            queries: 10,
            index: "qdrant-edge",
            hybrid: true,
            recall_at_1: 0.8,
            recall_at_3: 0.9,
            recall_at_5: 0.95,
            recall_at_10: 1.0,
            mrr: 0.87,
            ndcg_at_10: 0.9,
            misses: vec![Miss {
                query: HOSTILE.into(),
                relevant: vec!["question:a < b?".into()],
                rank: Some(2),
                top: vec!["x & y".into(), "question:a < b?".into()],
            }],
        };
        let html = retrieval_page(&report);
        assert_safe_and_self_contained(&html);
        assert!(html.contains("<td>a &lt; b?</td>"));
        assert!(html.contains("<li>x &amp; y</li>"));
        assert!(html.contains("<li class=\"relevant\">a &lt; b?</li>"));
    }
}
