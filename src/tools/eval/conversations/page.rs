//! The HTML page of `baton eval conversations --html`.

use std::fmt::Write as _;

use super::{ConversationsReport, Mismatch, Transcript, TranscriptTurn};
use crate::tools::eval::report::{
    card, escape, inline_bar, page, pct, section_cards, BLUE, GREEN, MUTED, RED,
};

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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::eval::report::tests::{assert_safe_and_self_contained, HOSTILE};

    #[test]
    fn conversations_page_escapes_messages_replies_and_names() {
        use crate::bot::policy::{DecisionKind, Reason};
        use crate::tools::eval::conversations::{score, Conversation, ScriptedTurn, TurnOutcome};
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
                    crate::tools::eval::conversations::tests::understanding("<intent>", "faq.yaml");
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
}
