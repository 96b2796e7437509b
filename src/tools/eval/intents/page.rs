//! The HTML page of `baton eval intents --html`.

use std::fmt::Write as _;

use super::{Confusion, IntentsReport, OOS_LABEL};
use crate::tools::eval::report::{
    bar_chart, card, escape, inline_bar, line_chart, page, pct, quality_color, section_cards, Bar,
    Marker, Series, BLUE, INK, MUTED, ORANGE, RED,
};

/// Per-intent F1 bars shown (worst first): enough to see the weak spots of 150 intents without
/// a page of bars.
const WORST_INTENTS_SHOWN: usize = 30;

pub fn intents_page(report: &IntentsReport) -> String {
    let mut body = String::new();
    let mut cards = vec![
        card(
            "in-scope accuracy",
            &pct(report.in_scope_accuracy),
            "accepted and classified right",
        ),
        card(
            "out-of-scope recall",
            &report.oos_recall.map(pct).unwrap_or_else(|| "-".into()),
            "out-of-scope queries rejected",
        ),
        card(
            "out-of-scope precision",
            &report.oos_precision.map(pct).unwrap_or_else(|| "-".into()),
            "rejections that were right",
        ),
        card(
            "macro F1",
            &format!("{:.3}", report.macro_f1),
            "over intents + out of scope",
        ),
        card(
            "threshold",
            &format!("{:.3}", report.threshold),
            &format!("chosen on {}", report.threshold_source),
        ),
    ];
    if report.in_scope_accuracy_no_threshold > 0.0 {
        cards.push(card(
            "with no threshold",
            &pct(report.in_scope_accuracy_no_threshold),
            "in-scope accuracy if nothing is rejected",
        ));
    }
    section_cards(&mut body, &cards);

    let accuracy: Vec<(f64, f64)> = report
        .curve
        .iter()
        .map(|p| (f64::from(p.threshold), f64::from(p.in_scope_accuracy)))
        .collect();
    let recall: Vec<(f64, f64)> = report
        .curve
        .iter()
        .filter_map(|p| p.oos_recall.map(|r| (f64::from(p.threshold), f64::from(r))))
        .collect();
    let mut series = vec![Series {
        name: "in-scope accuracy",
        color: BLUE,
        points: accuracy,
    }];
    if !recall.is_empty() {
        series.push(Series {
            name: "out-of-scope recall",
            color: ORANGE,
            points: recall,
        });
    }
    let mut markers = vec![Marker {
        x: f64::from(report.threshold),
        label: format!("chosen {:.3}", report.threshold),
        color: INK,
    }];
    if let Some(recommended) = &report.recommended {
        markers.push(Marker {
            x: f64::from(recommended.threshold),
            label: format!(
                "{} OOS recall target {:.3}",
                pct(recommended.target_oos_recall),
                recommended.threshold
            ),
            color: MUTED,
        });
    }
    let _ = write!(
        body,
        "<section><h2>Threshold curve</h2><p class=\"hint\">A query whose in-scope score is below \
         the threshold is treated as out of scope. Raising it rejects more out-of-scope queries \
         and more in-scope ones too.</p>{}</section>",
        line_chart(&series, &markers, "out-of-scope threshold")
    );

    let mut intents: Vec<(&String, &crate::tools::eval::intents::ClassMetrics)> =
        report.per_intent.iter().collect();
    intents.sort_by(|a, b| a.1.f1.total_cmp(&b.1.f1).then(a.0.cmp(b.0)));
    let shown = intents.len().min(WORST_INTENTS_SHOWN);
    let bars: Vec<Bar> = intents[..shown]
        .iter()
        .map(|(name, m)| Bar {
            label: (*name).clone(),
            value: m.f1,
            text: format!(
                "F1 {:.2} · P {:.2} · R {:.2} · n={}",
                m.f1, m.precision, m.recall, m.support
            ),
            color: quality_color(m.f1),
        })
        .collect();
    let _ = write!(
        body,
        "<section><h2>Per-intent F1, worst first</h2><p class=\"hint\">{} of {} labels \
         (\"oos\" is out of scope). P = precision, R = recall, n = test queries.</p>{}</section>",
        shown,
        intents.len(),
        bar_chart(&bars)
    );

    if !report.confusions.is_empty() {
        // Mix-ups between two intents and errors of the out-of-scope gate are different problems
        // (training examples vs the threshold) and differ in size by an order of magnitude, so
        // each gets its own list and scale.
        let is_gate = |c: &&Confusion| {
            c.gold == OOS_LABEL || c.predicted == OOS_LABEL || c.predicted == ACCEPTED_OOS
        };
        let (gate, between): (Vec<&Confusion>, Vec<&Confusion>) =
            report.confusions.iter().partition(is_gate);
        let _ = write!(
            body,
            "<section><h2>Top confusions</h2><p class=\"hint\">True label &rarr; what the \
             classifier said. \"oos\" = rejected as out of scope; \"{}\" = an out-of-scope \
             query that was accepted as some intent.</p><div class=\"cols even\">\
             <div><h3>between intents</h3>{}</div><div><h3>at the out-of-scope threshold</h3>{}</div>\
             </div></section>",
            escape(ACCEPTED_OOS),
            confusion_table(&between, RED),
            confusion_table(&gate, ORANGE)
        );
    }
    let subtitle = format!(
        "{} · {} intents, {} training examples{} · test {} in scope, {} out of scope · \
         embedding {:.1} s, training {:.1} s",
        report.data,
        report.intents,
        report.train_examples,
        if report.train_oos_examples > 0 {
            format!(" + {} out of scope", report.train_oos_examples)
        } else {
            String::new()
        },
        report.test_in_scope,
        report.test_oos,
        report.embed_seconds,
        report.train_seconds
    );
    page("Intent classification", &subtitle, &body)
}

/// How intents.rs names an out-of-scope query that was given an intent.
const ACCEPTED_OOS: &str = "(an intent)";

fn confusion_table(confusions: &[&Confusion], color: &str) -> String {
    if confusions.is_empty() {
        return "<p class=\"hint\">none</p>".into();
    }
    let max = confusions.iter().map(|c| c.count).max().unwrap_or(1).max(1);
    let rows: String = confusions
        .iter()
        .map(|confusion| {
            format!(
                "<tr><td>{}</td><td class=\"arrow\">&rarr;</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"spark\">{}</td></tr>",
                escape(&confusion.gold),
                escape(&confusion.predicted),
                confusion.count,
                inline_bar(confusion.count as f64 / max as f64, color)
            )
        })
        .collect();
    format!(
        "<table class=\"list small\"><thead><tr><th>true label</th><th></th><th>predicted</th>\
         <th class=\"num\">queries</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

#[cfg(test)]
mod tests {
    use super::super::{ClassMetrics, CurveRow};
    use super::*;
    use crate::tools::eval::report::tests::{assert_safe_and_self_contained, HOSTILE};
    use std::collections::BTreeMap;

    fn intents_report() -> IntentsReport {
        let mut per_intent = BTreeMap::new();
        for (name, f1) in [(HOSTILE, 0.4), ("greet", 0.95), ("oos", 0.7)] {
            per_intent.insert(
                name.to_string(),
                ClassMetrics {
                    precision: f1,
                    recall: f1,
                    f1,
                    support: 10,
                },
            );
        }
        IntentsReport {
            kind: "intents",
            data: "data/<clinc>.json".into(),
            intents: 2,
            train_examples: 20,
            train_oos_examples: 0,
            test_in_scope: 20,
            test_oos: 10,
            threshold_source: "validation",
            threshold: 0.5,
            accuracy: 0.8,
            in_scope_accuracy: 0.85,
            in_scope_accuracy_no_threshold: 0.9,
            oos_recall: Some(0.6),
            oos_precision: Some(0.7),
            macro_f1: 0.68,
            per_intent,
            confusions: vec![
                Confusion {
                    gold: OOS_LABEL.into(),
                    predicted: ACCEPTED_OOS.into(),
                    count: 9,
                },
                Confusion {
                    gold: HOSTILE.into(),
                    predicted: "greet".into(),
                    count: 3,
                },
            ],
            curve: (0..=10)
                .map(|i| CurveRow {
                    threshold: i as f32 / 10.0,
                    in_scope_accuracy: 1.0 - i as f32 / 20.0,
                    oos_recall: Some(i as f32 / 10.0),
                })
                .collect(),
            recommended: None,
            embed_seconds: 1.0,
            train_seconds: 2.0,
        }
    }

    #[test]
    fn intents_page_escapes_data_and_orders_worst_first() {
        let html = intents_page(&intents_report());
        assert_safe_and_self_contained(&html);
        assert!(html.contains("data/&lt;clinc&gt;.json"));
        // Worst F1 first.
        let hostile = html.find("&lt;script&gt;alert").unwrap();
        let greet = html.find(">greet<").unwrap();
        assert!(hostile < greet);
        assert!(html.contains("chosen 0.500"));
        // Intent mix-ups and out-of-scope gate errors are listed apart.
        let between = html.find("<h3>between intents</h3>").unwrap();
        let gate = html.find("<h3>at the out-of-scope threshold</h3>").unwrap();
        let mixup = html.rfind("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;</td><td class=\"arrow\">").unwrap();
        let accepted = html.find("<td>(an intent)</td>").unwrap();
        assert!(between < mixup && mixup < gate && gate < accepted);
        assert!(html.contains("<polyline"));
    }
}
