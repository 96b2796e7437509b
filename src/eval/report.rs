//! `--html OUT.html`: evaluation reports as self-contained pages a person would rather look at
//! than read. Inline CSS and inline SVG drawn here, no scripts, nothing fetched when the page is
//! viewed. Every piece of text from the data (queries, intent names, replies) goes through
//! [`escape`]: the data contains `<`, `&` and quotes.

use std::fmt::Write as _;
use std::path::Path;

use crate::eval::conversations::{ConversationsReport, Mismatch, Transcript, TranscriptTurn};
use crate::eval::intents::{Confusion, IntentsReport, OOS_LABEL};
use crate::eval::retrieval::RetrievalReport;
use crate::eval::EvalError;

/// Escape text for HTML and SVG, in element content and in quoted attributes alike.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

pub fn write_html(path: &Path, html: &str) -> Result<(), EvalError> {
    let write_error = |reason: String| EvalError::Write {
        path: path.display().to_string(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| write_error(e.to_string()))?;
    }
    std::fs::write(path, html).map_err(|e| write_error(e.to_string()))?;
    println!("HTML report written to {}", path.display());
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Pages.

/// Per-intent F1 bars shown (worst first): enough to see the weak spots of 150 intents without
/// a page of bars.
const WORST_INTENTS_SHOWN: usize = 30;
/// Retrieval misses listed in full; beyond this the table is cut (the JSON has them all).
const MISSES_SHOWN: usize = 200;

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

    let mut intents: Vec<(&String, &crate::eval::intents::ClassMetrics)> =
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

pub fn conversations_page(report: &ConversationsReport) -> String {
    let counts = &report.counts;
    let maybe = |value: Option<f64>| value.map(pct).unwrap_or_else(|| "-".into());
    let mut body = String::new();
    section_cards(
        &mut body,
        &[
            card(
                "decision accuracy",
                &pct(report.decision_accuracy),
                &format!("{} of {} turns", counts.correct_decisions, report.turns),
            ),
            card(
                "handoff precision",
                &maybe(report.handoff_precision),
                &format!(
                    "{} of {} handoffs wanted",
                    counts.handoffs_acceptable, counts.handoffs
                ),
            ),
            card(
                "handoff recall",
                &maybe(report.handoff_recall),
                &format!(
                    "{} of {} needed handoffs made",
                    counts.handoffs_required_made, counts.handoffs_required
                ),
            ),
            card(
                "containment",
                &maybe(report.containment),
                &format!(
                    "{} of {} bot-only conversations",
                    counts.conversations_contained, counts.conversations_to_contain
                ),
            ),
            card(
                "intent accuracy",
                &maybe(report.intent_accuracy),
                &format!(
                    "{} of {} checked",
                    counts.intents_correct, counts.intent_checks
                ),
            ),
            card(
                "source accuracy",
                &maybe(report.source_accuracy),
                &format!(
                    "{} of {} checked",
                    counts.sources_correct, counts.source_checks
                ),
            ),
        ],
    );

    // The decision confusion matrix as a heat map.
    let decisions = ["answer", "clarify", "handoff"];
    let max = report
        .confusion
        .values()
        .flat_map(|row| row.values())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let mut matrix = String::from(
        "<table class=\"matrix\"><thead><tr><th class=\"corner\">expected &darr; / made &rarr;</th>",
    );
    for decision in decisions {
        let _ = write!(matrix, "<th>{decision}</th>");
    }
    matrix.push_str("<th>turns</th></tr></thead><tbody>");
    for expected in decisions {
        let row = report.confusion.get(expected);
        let total: usize = row.map(|r| r.values().sum()).unwrap_or(0);
        let _ = write!(matrix, "<tr><th>{expected}</th>");
        for made in decisions {
            let count = row.and_then(|r| r.get(made)).copied().unwrap_or(0);
            let strength = count as f64 / max as f64;
            let (color, class) = if expected == made {
                (GREEN, "hit")
            } else {
                (RED, "miss")
            };
            let background = if count == 0 {
                "transparent".to_string()
            } else {
                format!("{color}{:02x}", (40.0 + 200.0 * strength) as u8)
            };
            let _ = write!(
                matrix,
                "<td class=\"{class}\" style=\"background:{background}\">{count}</td>"
            );
        }
        let _ = write!(matrix, "<td class=\"total\">{total}</td></tr>");
    }
    matrix.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<section><h2>Decisions</h2><p class=\"hint\">Rows: what the script expects; columns: \
         what the bot decided. A turn with several acceptable decisions counts on the diagonal \
         when the bot made one of them. {} of {} conversations went entirely as scripted.</p>\
         {matrix}</section>",
        counts.conversations_fully_correct, report.conversations
    );

    let _ = write!(
        body,
        "<section><h2>Every conversation at a glance</h2><p class=\"hint\">One dot per turn: \
         <span class=\"dot ok\"></span> as scripted, <span class=\"dot partial\"></span> right \
         decision but a wrong intent, source or reason, <span class=\"dot wrong\"></span> wrong \
         decision. Hover a dot for the message.</p><div class=\"glance\">{}</div></section>",
        report
            .transcripts
            .iter()
            .map(glance_row)
            .collect::<String>()
    );

    let mut cards = String::new();
    for mismatch in &report.mismatches {
        let transcript = report
            .transcripts
            .iter()
            .find(|t| t.conversation == mismatch.conversation);
        cards.push_str(&mismatch_card(mismatch, transcript));
    }
    let _ = write!(
        body,
        "<section><h2>Mismatched turns ({})</h2><p class=\"hint\">Each with what the bot \
         understood: the intent and its alternatives, the out-of-scope score and the knowledge \
         hits the decision was based on.</p>{cards}</section>",
        report.mismatches.len()
    );
    let subtitle = format!(
        "scripts {} · knowledge folder {} · {} conversations, {} turns · {:.1} s",
        report.data, report.knowledge, report.conversations, report.turns, report.seconds
    );
    page("Scripted conversations", &subtitle, &body)
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

fn turn_class(turn: &TranscriptTurn) -> &'static str {
    if turn.problems.is_empty() {
        "ok"
    } else if turn.problems.contains(&"decision") {
        "wrong"
    } else {
        "partial"
    }
}

fn turn_title(number: usize, turn: &TranscriptTurn) -> String {
    let expected: Vec<&str> = turn.expected.iter().map(|d| d.as_str()).collect();
    let reasons: Vec<&str> = turn.reasons.iter().map(|r| r.as_str()).collect();
    format!(
        "{number}. \"{}\"  expected {}, got {} ({})",
        turn.say,
        expected.join(" or "),
        turn.got.as_str(),
        reasons.join(", ")
    )
}

fn glance_row(transcript: &Transcript) -> String {
    let dots: String = transcript
        .turns
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            format!(
                "<span class=\"dot {}\" title=\"{}\"></span>",
                turn_class(turn),
                escape(&turn_title(i + 1, turn))
            )
        })
        .collect();
    format!(
        "<div class=\"glance-row\"><span class=\"glance-name\">{}</span><span>{dots}</span></div>",
        escape(&transcript.conversation)
    )
}

/// The customer's earlier messages in the conversation and what the bot did with each.
fn earlier_turns(mismatch: &Mismatch, transcript: Option<&Transcript>) -> String {
    let Some(transcript) = transcript else {
        return String::new();
    };
    transcript
        .turns
        .iter()
        .take(mismatch.turn.saturating_sub(1))
        .map(|turn| {
            format!(
                "<div class=\"earlier\"><span class=\"dot {}\"></span><span class=\"said\">{}</span> \
                 <span class=\"made\">&rarr; {}</span></div>",
                turn_class(turn),
                escape(&turn.say),
                turn.got.as_str()
            )
        })
        .collect()
}

/// FAQ entries are keyed `question:<the question>` in retrieval reports; people want the question.
fn document_name(key: &str) -> &str {
    key.strip_prefix("question:").unwrap_or(key)
}

fn mismatch_card(mismatch: &Mismatch, transcript: Option<&Transcript>) -> String {
    let expected: Vec<&str> = mismatch
        .expected
        .decision
        .iter()
        .map(|d| d.as_str())
        .collect();
    let got = mismatch.got.decision.as_str();
    let reasons: Vec<&str> = mismatch.got.reasons.iter().map(|r| r.as_str()).collect();
    let problem = |name: &str| mismatch.problems.contains(&name);
    let mut checks = String::new();
    let mut check = |name: &str, wanted: String, got: String| {
        let class = if problem(name) { "bad" } else { "ok" };
        let _ = write!(
            checks,
            "<tr class=\"{class}\"><th>{name}</th><td>{}</td><td>{}</td></tr>",
            escape(&wanted),
            escape(&got)
        );
    };
    check(
        "decision",
        expected.join(" or "),
        format!("{got} ({})", reasons.join(", ")),
    );
    if let Some(intent) = &mismatch.expected.intent {
        check(
            "intent",
            intent.clone(),
            mismatch.got.intent.clone().unwrap_or_else(|| "-".into()),
        );
    }
    if !mismatch.expected.source.is_empty() {
        check(
            "source",
            mismatch.expected.source.join(" or "),
            mismatch.got.source.clone().unwrap_or_else(|| "-".into()),
        );
    }
    if !mismatch.expected.reasons.is_empty() {
        let wanted: Vec<&str> = mismatch
            .expected
            .reasons
            .iter()
            .map(|r| r.as_str())
            .collect();
        check("reasons", wanted.join(", "), reasons.join(", "));
    }

    let understanding = &mismatch.understanding;
    let mut intents = String::new();
    for (rank, intent) in understanding
        .intent
        .iter()
        .chain(&understanding.alternatives)
        .enumerate()
    {
        let _ = write!(
            intents,
            "<tr><td>{}</td><td class=\"num\">{:.2}</td><td class=\"spark\">{}</td></tr>",
            escape(&intent.name),
            intent.confidence,
            inline_bar(
                f64::from(intent.confidence),
                if rank == 0 { BLUE } else { MUTED }
            )
        );
    }
    let mut hits = String::new();
    for hit in &understanding.knowledge {
        let heading = hit.heading_path.last().filter(|h| **h != hit.title);
        let _ = write!(
            hits,
            "<tr><td>{}{}<div class=\"source\">{}</div></td><td class=\"num\">{:.3}</td>\
             <td class=\"num\">{}</td></tr>",
            escape(&hit.title),
            heading
                .map(|h| format!(" &mdash; {}", escape(h)))
                .unwrap_or_default(),
            escape(&hit.source),
            hit.score,
            hit.keyword_score
                .map(|k| format!("{k:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let reply = mismatch
        .got
        .reply
        .as_ref()
        .map(|r| format!("<div class=\"bubble bot\">{}</div>", escape(r)))
        .unwrap_or_else(|| "<div class=\"bubble bot silent\">(no reply)</div>".into());
    let note = mismatch
        .note
        .as_ref()
        .map(|n| format!("<p class=\"note\">{}</p>", escape(n)))
        .unwrap_or_default();
    let raw = serde_json::to_string_pretty(understanding).unwrap_or_default();
    format!(
        "<article class=\"mismatch\"><header><span class=\"conv\">{conversation}</span> \
         <span class=\"turn\">turn {turn}</span>{badges}</header>{earlier}\
         <div class=\"bubble customer\">{say}</div>{reply}{note}\
         <div class=\"cols\"><div><h3>expected vs got</h3><table class=\"checks\"><thead><tr><th></th>\
         <th>expected</th><th>got</th></tr></thead><tbody>{checks}</tbody></table></div>\
         <div><h3>intents <span class=\"scope {scope_class}\">{scope}, in-scope score {score:.3}</span></h3>\
         <table class=\"list small\"><tbody>{intents}</tbody></table></div></div>\
         <h3>knowledge hits</h3><table class=\"list small\"><thead><tr><th>chunk</th>\
         <th class=\"num\">cosine</th><th class=\"num\">keyword</th></tr></thead><tbody>{hits}</tbody></table>\
         <details><summary>full understanding (JSON)</summary><pre>{raw}</pre></details></article>",
        conversation = escape(&mismatch.conversation),
        turn = mismatch.turn,
        badges = mismatch
            .problems
            .iter()
            .map(|p| format!(" <span class=\"badge bad\">{}</span>", escape(p)))
            .collect::<String>(),
        say = escape(&mismatch.say),
        earlier = earlier_turns(mismatch, transcript),
        scope_class = if understanding.out_of_scope { "out" } else { "in" },
        scope = if understanding.out_of_scope {
            "out of scope"
        } else {
            "in scope"
        },
        score = understanding.in_scope_score,
        raw = escape(&raw),
    )
}

// ------------------------------------------------------------------------------------------------
// Building blocks.

const BLUE: &str = "#2f6fdf";
const ORANGE: &str = "#e07b22";
const GREEN: &str = "#2e9d5b";
const AMBER: &str = "#d9a21b";
const RED: &str = "#d64545";
const INK: &str = "#1d2433";
const MUTED: &str = "#8a93a6";

pub fn pct(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

fn quality_color(value: f64) -> &'static str {
    if value >= 0.9 {
        GREEN
    } else if value >= 0.75 {
        AMBER
    } else {
        RED
    }
}

pub fn card(label: &str, value: &str, hint: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"value\">{}</div><div class=\"label\">{}</div>\
         <div class=\"hint\">{}</div></div>",
        escape(value),
        escape(label),
        escape(hint)
    )
}

pub fn section_cards(body: &mut String, cards: &[String]) {
    let _ = write!(
        body,
        "<section class=\"cards\">{}</section>",
        cards.join("")
    );
}

/// A small horizontal bar for table cells, `fraction` in [0, 1].
fn inline_bar(fraction: f64, color: &str) -> String {
    let width = (fraction.clamp(0.0, 1.0) * 90.0).max(1.0);
    format!(
        "<svg width=\"90\" height=\"10\" role=\"img\"><rect width=\"90\" height=\"10\" \
         rx=\"2\" fill=\"#eef1f6\"/><rect width=\"{width:.1}\" height=\"10\" rx=\"2\" \
         fill=\"{color}\"/></svg>"
    )
}

struct Series {
    name: &'static str,
    color: &'static str,
    /// (x, y) with y in [0, 1].
    points: Vec<(f64, f64)>,
}

/// A vertical line across the chart, labelled.
struct Marker {
    x: f64,
    label: String,
    color: &'static str,
}

/// Lines over x, with y in [0, 1] shown as percentages.
fn line_chart(series: &[Series], markers: &[Marker], x_label: &str) -> String {
    let (width, height) = (900.0, 380.0);
    let (left, right, top, bottom) = (58.0, 24.0, 34.0, 50.0);
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(markers.iter().map(|m| m.x));
    let (mut x_min, mut x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !x_min.is_finite() || !x_max.is_finite() || x_max - x_min < 1e-9 {
        (x_min, x_max) = (0.0, 1.0);
    }
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| top + (1.0 - y.clamp(0.0, 1.0)) * plot_h;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for i in 0..=5 {
        let y = f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y1:.1}\" y2=\"{y1:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{:.0}%</text>",
            width - right,
            left - 8.0,
            sy(y) + 4.0,
            y * 100.0,
            y1 = sy(y)
        );
    }
    for i in 0..=5 {
        let x = x_min + (x_max - x_min) * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{x1:.1}\" x2=\"{x1:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>\
             <text x=\"{x1:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{x:.2}</text>",
            top + plot_h,
            top + plot_h + 5.0,
            top + plot_h + 20.0,
            x1 = sx(x)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"axis\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-label\" text-anchor=\"middle\">{}</text>",
        width - right,
        left + plot_w / 2.0,
        height - 8.0,
        escape(x_label),
        y = top + plot_h
    );
    // Labels sit at the foot of their line: the rightmost marker's to its right, the others' to
    // their left, so two close markers (chosen and recommended thresholds) don't overprint.
    let mut by_x: Vec<&Marker> = markers.iter().collect();
    by_x.sort_by(|a, b| a.x.total_cmp(&b.x));
    for (index, marker) in by_x.iter().enumerate() {
        let x = sx(marker.x);
        let rightmost = index + 1 == by_x.len();
        let near_right_edge = x > left + plot_w * 0.75;
        let (anchor, dx, row) = if rightmost && !near_right_edge {
            ("start", 6.0, 0.0)
        } else if rightmost {
            ("end", -6.0, 0.0)
        } else {
            ("end", -6.0, if near_right_edge { 1.0 } else { 0.0 })
        };
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"{color}\" \
             stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             class=\"marker\" fill=\"{color}\" text-anchor=\"{anchor}\">{}</text>",
            top + plot_h,
            x + dx,
            top + plot_h - 10.0 - 16.0 * row,
            escape(&marker.label),
            color = marker.color
        );
    }
    for line in series {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.5\" \
             stroke-linejoin=\"round\"/>",
            points.join(" "),
            line.color
        );
        for marker in markers.iter().take(1) {
            if let Some(y) = interpolate(&line.points, marker.x) {
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"{}\" stroke=\"white\" \
                     stroke-width=\"1.5\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"value-label\" \
                     fill=\"{}\">{}</text>",
                    sx(marker.x),
                    sy(y),
                    line.color,
                    sx(marker.x) + 8.0,
                    sy(y) - 8.0,
                    line.color,
                    pct(y)
                );
            }
        }
    }
    // Legend, top left inside the plot.
    let mut legend_x = left + 12.0;
    for line in series {
        let _ = write!(
            svg,
            "<rect x=\"{legend_x:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" rx=\"2\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>",
            top - 20.0,
            line.color,
            legend_x + 20.0,
            top - 14.0,
            escape(line.name)
        );
        legend_x += 30.0 + 7.5 * line.name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// y at `x` on a polyline sorted by x (None outside it).
fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    points.windows(2).find_map(|pair| {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x >= x0.min(x1) && x <= x0.max(x1) {
            Some(if (x1 - x0).abs() < 1e-12 {
                y0
            } else {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            })
        } else {
            None
        }
    })
}

struct Bar {
    label: String,
    /// In [0, 1].
    value: f64,
    text: String,
    color: &'static str,
}

/// Horizontal bars, one row each, labels on the left.
fn bar_chart(bars: &[Bar]) -> String {
    let (width, row, label_w, text_w) = (900.0, 22.0, 250.0, 190.0);
    let plot_w = width - label_w - text_w;
    let height = row * bars.len() as f64 + 8.0;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = (bar.value.clamp(0.0, 1.0) * plot_w).max(1.5);
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"bar-label\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{plot_w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#eef1f6\"/>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"bar-text\">{}</text>",
            label_w - 10.0,
            y + row * 0.62,
            escape(&bar.label),
            y + 3.0,
            row - 6.0,
            y + 3.0,
            row - 6.0,
            bar.color,
            label_w + plot_w + 10.0,
            y + row * 0.62,
            escape(&bar.text)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Vertical columns for a handful of ratios.
fn column_chart(columns: &[(&str, f64)]) -> String {
    let (width, height) = (900.0, 300.0);
    let (left, top, bottom) = (58.0, 24.0, 40.0);
    let plot_h = height - top - bottom;
    let slot = (width - left - 20.0) / columns.len().max(1) as f64;
    let sy = |y: f64| top + (1.0 - y.clamp(0.0, 1.0)) * plot_h;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for i in 0..=5 {
        let y = f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y1:.1}\" y2=\"{y1:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{:.0}%</text>",
            width - 20.0,
            left - 8.0,
            sy(y) + 4.0,
            y * 100.0,
            y1 = sy(y)
        );
    }
    for (i, (label, value)) in columns.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.2;
        let w = slot * 0.6;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"4\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"value-label\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-label\" text-anchor=\"middle\">{}</text>",
            sy(*value),
            (top + plot_h - sy(*value)).max(1.0),
            quality_color(*value),
            x + w / 2.0,
            sy(*value) - 8.0,
            pct(*value),
            x + w / 2.0,
            height - 14.0,
            escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn page(title: &str, subtitle: &str, body: &str) -> String {
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Baton · {title}</title><style>{STYLE}</style></head><body><main>\
         <header class=\"top\"><div class=\"brand\">Baton evaluation</div><h1>{title}</h1>\
         <p class=\"subtitle\">{subtitle}</p><p class=\"generated\">generated {generated}</p></header>\
         {body}</main></body></html>\n",
        title = escape(title),
        subtitle = escape(subtitle),
    )
}

const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;background:#f4f6fa;color:#1d2433;font:15px/1.5 -apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 32px 60px}
header.top{margin-bottom:18px}
.brand{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:#8a93a6;font-weight:600}
h1{margin:2px 0 4px;font-size:30px}
.subtitle{margin:0;color:#4a5368;word-break:break-word}
.generated{margin:2px 0 0;color:#8a93a6;font-size:12px}
h2{font-size:19px;margin:0 0 4px}
h3{font-size:13px;margin:14px 0 6px;color:#4a5368;text-transform:uppercase;letter-spacing:.06em}
section{background:#fff;border-radius:12px;padding:20px 24px;margin:18px 0;box-shadow:0 1px 3px rgba(20,30,60,.08)}
section.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:14px;background:none;box-shadow:none;padding:0}
.card{background:#fff;border-radius:12px;padding:16px 18px;box-shadow:0 1px 3px rgba(20,30,60,.08)}
.card .value{font-size:28px;font-weight:700;letter-spacing:-.01em}
.card .label{font-weight:600;margin-top:2px}
.card .hint{color:#8a93a6;font-size:12px}
p.hint{color:#6b7489;margin:0 0 12px;font-size:13.5px}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#e6e9f0;stroke-width:1}
svg .axis{stroke:#b9c0ce;stroke-width:1}
svg text{font-family:inherit}
svg .tick{font-size:12px;fill:#6b7489}
svg .axis-label{font-size:13px;fill:#4a5368;font-weight:600}
svg .legend{font-size:13px;fill:#1d2433}
svg .marker{font-size:12.5px;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:4px}
svg .value-label{font-size:13px;font-weight:700;paint-order:stroke;stroke:#fff;stroke-width:4px}
svg .bar-label{font-size:12.5px;fill:#1d2433}
svg .bar-text{font-size:12px;fill:#4a5368;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;vertical-align:top}
table.list thead th{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#6b7489;border-bottom:1px solid #e6e9f0}
table.list tbody tr:nth-child(even){background:#f8f9fc}
table.small td,table.small th{padding:3px 6px;font-size:13.5px;overflow-wrap:anywhere}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.arrow{color:#8a93a6;width:1%}
td.spark{width:1%}
ol.top{margin:0;padding-left:20px}
ol.top li.relevant{color:#2e7d4f;font-weight:600}
table.misses td{font-size:13.5px}
table.matrix{width:auto;margin-top:6px}
table.matrix th,table.matrix td{padding:12px 22px;text-align:center;border:1px solid #e6e9f0;font-size:16px}
table.matrix td{font-weight:700;min-width:90px;font-variant-numeric:tabular-nums}
table.matrix th.corner{font-size:12px;color:#6b7489;font-weight:500}
table.matrix td.total{color:#6b7489;font-weight:500}
.badge{display:inline-block;padding:1px 8px;border-radius:99px;font-size:12px;font-weight:600}
.badge.bad{background:#fde8e8;color:#b42323}
.badge.warn{background:#fdf3dc;color:#8a6100}
article.mismatch{border:1px solid #e6e9f0;border-radius:10px;padding:14px 16px;margin:14px 0}
article.mismatch header{margin-bottom:8px}
.conv{font-weight:700}
.turn{color:#6b7489;margin-left:6px}
.bubble{border-radius:14px;padding:8px 14px;margin:6px 0;max-width:80%;white-space:pre-wrap;word-break:break-word}
.bubble.customer{background:#2f6fdf;color:#fff;margin-left:auto;width:fit-content}
.bubble.bot{background:#eef1f6;width:fit-content}
.bubble.silent{color:#8a93a6;font-style:italic}
p.note{margin:6px 0;padding:6px 10px;border-left:3px solid #d9a21b;background:#fdf8ea;font-size:13.5px}
.cols{display:grid;grid-template-columns:1.2fr 1fr;gap:20px}
.cols.even{grid-template-columns:1fr 1fr;gap:28px}
.cols>div{min-width:0}
table.checks td,table.checks th{padding:4px 8px;font-size:13.5px;border-bottom:1px solid #f0f2f6}
table.checks thead th{font-size:12px;color:#6b7489;text-transform:uppercase}
table.checks tr.bad td:last-child{color:#b42323;font-weight:600}
table.checks tr.ok td:last-child{color:#2e7d4f}
.scope{font-size:12px;text-transform:none;letter-spacing:0;font-weight:500;margin-left:6px}
.scope.out{color:#b42323}
.scope.in{color:#2e7d4f}
.source{color:#8a93a6;font-size:12px}
.glance{columns:2;column-gap:28px}
.glance-row{display:flex;justify-content:space-between;gap:10px;padding:3px 0;border-bottom:1px solid #f0f2f6;break-inside:avoid;font-size:13.5px}
.glance-name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.dot{display:inline-block;width:12px;height:12px;border-radius:50%;margin-left:4px;vertical-align:-1px}
.dot.ok{background:#2e9d5b}
.dot.partial{background:#d9a21b}
.dot.wrong{background:#d64545}
.earlier{font-size:13px;color:#6b7489;margin:2px 0}
.earlier .dot{margin:0 6px 0 0;width:9px;height:9px}
.earlier .made{color:#8a93a6}
details{margin-top:8px}
summary{cursor:pointer;color:#4a5368;font-size:13px}
pre{background:#1d2433;color:#e6e9f0;padding:12px;border-radius:8px;overflow:auto;font-size:12px;max-height:360px}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::intents::{ClassMetrics, Confusion, CurveRow};
    use crate::eval::retrieval::Miss;
    use std::collections::BTreeMap;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
        assert_eq!(escape("café £5"), "café £5");
    }

    const HOSTILE: &str = "<script>alert('x')</script> & \"quoted\"";

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

    /// No raw markup from the data survives, and the page needs nothing from elsewhere.
    fn assert_safe_and_self_contained(html: &str) {
        assert!(!html.contains("<script"), "unescaped data or a script");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("src=\"http"), "external resource");
        assert!(!html.contains("href=\"http"), "external resource");
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.trim_end().ends_with("</html>"));
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

    #[test]
    fn conversations_page_escapes_messages_replies_and_names() {
        use crate::eval::conversations::{score, Conversation, ScriptedTurn, TurnOutcome};
        use crate::policy::{DecisionKind, Reason};
        let conversation = Conversation {
            file: "a&b.yaml".into(),
            name: HOSTILE.into(),
            turns: vec![
                ScriptedTurn {
                    say: "hello".into(),
                    expect: vec![DecisionKind::Answer],
                    intent: None,
                    sources: Vec::new(),
                    reasons: Vec::new(),
                    note: None,
                },
                ScriptedTurn {
                    say: HOSTILE.into(),
                    expect: vec![DecisionKind::Answer],
                    intent: None,
                    sources: Vec::new(),
                    reasons: Vec::new(),
                    note: Some("<i>why</i>".into()),
                },
            ],
        };
        let outcome = |decision, reply: &str| TurnOutcome {
            decision,
            reasons: vec![Reason::NoKnowledge],
            reply: Some(reply.into()),
            understanding: {
                let mut understanding =
                    crate::eval::conversations::tests::understanding("<intent>", "faq.yaml");
                understanding.out_of_scope = true;
                understanding
            },
        };
        let report = score(&[(
            conversation,
            vec![
                outcome(DecisionKind::Answer, "hi"),
                outcome(DecisionKind::Handoff, "Tom & Jerry's <team>"),
            ],
        )]);
        let html = conversations_page(&report);
        assert_safe_and_self_contained(&html);
        assert!(html.contains("Tom &amp; Jerry&#39;s &lt;team&gt;"));
        assert!(html.contains("&lt;i&gt;why&lt;/i&gt;"));
        assert!(html.contains("&lt;intent&gt;"));
        assert!(html.contains("a&amp;b.yaml"));
        // The earlier turn is shown above the mismatched one, and the glance row has two dots.
        assert!(html.contains("<span class=\"said\">hello</span>"));
        assert_eq!(html.matches("class=\"dot ok\" title=").count(), 1);
        assert_eq!(html.matches("class=\"dot wrong\" title=").count(), 1);
    }

    #[test]
    fn interpolation_reads_between_points() {
        let points = [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)];
        assert_eq!(interpolate(&points, 0.25), Some(0.75));
        assert_eq!(interpolate(&points, 2.0), None);
    }
}
