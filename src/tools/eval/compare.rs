//! `baton eval compare OLD.json NEW.json`: figure by figure, what got better or worse between two
//! reports of the same kind (intents, retrieval, conversations, sentiment or frustration), plus
//! what moved underneath (per-intent F1, queries newly missed or fixed, conversation turns newly
//! failing or fixed).
//!
//! Reports are read as JSON values rather than as the report structs, so an older report that
//! lacks a newer figure still compares (the figure shows as "-").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use crate::tools::eval::EvalError;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The earlier report (written by an eval command's --json).
    pub old: PathBuf,
    /// The later report, of the same kind.
    pub new: PathBuf,
}

/// Which direction of change is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// A setting or a size, not a quality (a threshold, the number of test queries).
    Neither,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A ratio shown as a percentage; changes in percentage points.
    Percent,
    Number,
    Count,
    Seconds,
}

/// Where a figure lives in a report.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A number at this JSON pointer.
    Number(&'static str),
    /// The length of the array at this JSON pointer.
    Length(&'static str),
}

struct Metric {
    label: &'static str,
    field: Field,
    better: Better,
    unit: Unit,
}

const fn metric(label: &'static str, field: Field, better: Better, unit: Unit) -> Metric {
    Metric {
        label,
        field,
        better,
        unit,
    }
}

use Better::{Higher, Lower, Neither};
use Field::{Length, Number};
use Unit::{Count, Percent, Seconds};

const INTENT_METRICS: &[Metric] = &[
    metric(
        "in-scope accuracy",
        Number("/in_scope_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "out-of-scope recall",
        Number("/oos_recall"),
        Higher,
        Percent,
    ),
    metric(
        "out-of-scope precision",
        Number("/oos_precision"),
        Higher,
        Percent,
    ),
    metric("accuracy (all)", Number("/accuracy"), Higher, Percent),
    metric("macro F1", Number("/macro_f1"), Higher, Unit::Number),
    metric(
        "in-scope accuracy, no threshold",
        Number("/in_scope_accuracy_no_threshold"),
        Higher,
        Percent,
    ),
    metric("threshold", Number("/threshold"), Neither, Unit::Number),
    metric(
        "in-scope acc. at target OOS recall",
        Number("/recommended/test_in_scope_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "OOS recall at target",
        Number("/recommended/test_oos_recall"),
        Higher,
        Percent,
    ),
    metric("intents", Number("/intents"), Neither, Count),
    metric(
        "test queries in scope",
        Number("/test_in_scope"),
        Neither,
        Count,
    ),
    metric(
        "test queries out of scope",
        Number("/test_oos"),
        Neither,
        Count,
    ),
    metric("embedding time", Number("/embed_seconds"), Lower, Seconds),
    metric("training time", Number("/train_seconds"), Lower, Seconds),
];

const RETRIEVAL_METRICS: &[Metric] = &[
    metric("recall@1", Number("/recall_at_1"), Higher, Percent),
    metric("recall@3", Number("/recall_at_3"), Higher, Percent),
    metric("recall@5", Number("/recall_at_5"), Higher, Percent),
    metric("recall@10", Number("/recall_at_10"), Higher, Percent),
    metric("MRR@10", Number("/mrr"), Higher, Unit::Number),
    metric("nDCG@10", Number("/ndcg_at_10"), Higher, Unit::Number),
    metric("queries not first", Length("/misses"), Lower, Count),
    metric("queries", Number("/queries"), Neither, Count),
    metric("documents", Number("/documents"), Neither, Count),
    metric("chunks", Number("/chunks"), Neither, Count),
];

const CONVERSATION_METRICS: &[Metric] = &[
    metric(
        "decision accuracy",
        Number("/decision_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "handoff precision",
        Number("/handoff_precision"),
        Higher,
        Percent,
    ),
    metric("handoff recall", Number("/handoff_recall"), Higher, Percent),
    metric("containment", Number("/containment"), Higher, Percent),
    metric(
        "intent accuracy",
        Number("/intent_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "source accuracy",
        Number("/source_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "reasons accuracy",
        Number("/reasons_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "turns fully right",
        Number("/turn_accuracy"),
        Higher,
        Percent,
    ),
    metric(
        "conversations fully right",
        Number("/conversation_accuracy"),
        Higher,
        Percent,
    ),
    metric("mismatched turns", Length("/mismatches"), Lower, Count),
    metric("conversations", Number("/conversations"), Neither, Count),
    metric("turns", Number("/turns"), Neither, Count),
    metric("run time", Number("/seconds"), Lower, Seconds),
];

const SENTIMENT_METRICS: &[Metric] = &[
    metric("macro recall", Number("/macro_recall"), Higher, Percent),
    metric("accuracy", Number("/accuracy"), Higher, Percent),
    metric("negative F1", Number("/negative_f1"), Higher, Unit::Number),
    metric(
        "negative recall",
        Number("/per_class/negative/recall"),
        Higher,
        Percent,
    ),
    metric(
        "neutral recall",
        Number("/per_class/neutral/recall"),
        Higher,
        Percent,
    ),
    metric(
        "positive recall",
        Number("/per_class/positive/recall"),
        Higher,
        Percent,
    ),
    metric("items", Number("/items"), Neither, Count),
    metric("run time", Number("/seconds"), Lower, Seconds),
];

const FRUSTRATION_METRICS: &[Metric] = &[
    metric(
        "conversation AUC",
        Number("/conversation_auc"),
        Higher,
        Unit::Number,
    ),
    metric("message AUC", Number("/message_auc"), Higher, Unit::Number),
    metric(
        "precision at 50% recall",
        Number("/precision_at_recall_50"),
        Higher,
        Percent,
    ),
    metric(
        "CCPE conversation AUC",
        Number("/per_source/CCPE/conversation_auc"),
        Higher,
        Unit::Number,
    ),
    metric(
        "MWOZ conversation AUC",
        Number("/per_source/MWOZ/conversation_auc"),
        Higher,
        Unit::Number,
    ),
    metric(
        "ReDial conversation AUC",
        Number("/per_source/ReDial/conversation_auc"),
        Higher,
        Unit::Number,
    ),
    metric(
        "SGD conversation AUC",
        Number("/per_source/SGD/conversation_auc"),
        Higher,
        Unit::Number,
    ),
    metric(
        "fitted conversation AUC",
        Number("/overall/fitted_conversation_auc"),
        Higher,
        Unit::Number,
    ),
    metric("user turns", Number("/overall/turns"), Neither, Count),
    metric(
        "dissatisfied turns",
        Number("/overall/dissatisfied"),
        Neither,
        Count,
    ),
];

/// The report kinds and their figures.
const KINDS: &[(&str, &[Metric])] = &[
    ("intents", INTENT_METRICS),
    ("retrieval", RETRIEVAL_METRICS),
    ("conversations", CONVERSATION_METRICS),
    ("sentiment", SENTIMENT_METRICS),
    ("frustration", FRUSTRATION_METRICS),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Better,
    Worse,
    Same,
    /// Changed, but neither direction is better.
    Changed,
    /// Missing from one of the reports.
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub label: &'static str,
    pub old: Option<f64>,
    pub new: Option<f64>,
    pub unit: Unit,
    pub verdict: Verdict,
}

/// Items that moved underneath the figures (intents, queries, turns).
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub title: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub kind: String,
    /// Set when the reports were measured on different data.
    pub data_differs: Option<(String, String)>,
    pub changes: Vec<Change>,
    pub details: Vec<Detail>,
}

impl Comparison {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.changes.iter().filter(|c| c.verdict == verdict).count()
    }
}

pub fn run(args: CompareArgs) -> Result<(), EvalError> {
    let old = read_report(&args.old)?;
    let new = read_report(&args.new)?;
    let comparison = compare(&old, &new).map_err(|reason| {
        EvalError::data(
            &args.new,
            None,
            format!("{reason} (old report: {})", args.old.display()),
        )
    })?;
    print_comparison(&comparison, &args.old, &args.new);
    Ok(())
}

/// A report file: JSON with a known `kind`.
pub fn read_report(path: &Path) -> Result<Value, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::data(path, None, e.to_string()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| EvalError::data(path, Some(e.line()), format!("not a JSON report: {e}")))?;
    report_kind(&value).map_err(|reason| EvalError::data(path, None, reason))?;
    Ok(value)
}

fn report_kind(report: &Value) -> Result<&str, String> {
    let kind = report
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("not a baton eval report (no \"kind\" field; write reports with --json)")?;
    if KINDS.iter().any(|(known, _)| *known == kind) {
        Ok(kind)
    } else {
        Err(format!(
            "unknown report kind {kind:?} (expected intents, retrieval, conversations, sentiment \
             or frustration)"
        ))
    }
}

/// Compare two reports; an error (as a sentence) when they cannot be compared.
pub fn compare(old: &Value, new: &Value) -> Result<Comparison, String> {
    let old_kind = report_kind(old)?;
    let new_kind = report_kind(new)?;
    if old_kind != new_kind {
        return Err(format!(
            "cannot compare a {old_kind} report with a {new_kind} report: give two reports of the same kind"
        ));
    }
    let metrics = KINDS
        .iter()
        .find(|(kind, _)| *kind == new_kind)
        .map(|(_, metrics)| *metrics)
        .unwrap_or_default();
    let changes = metrics
        .iter()
        .map(|metric| {
            let old_value = read_field(old, metric.field);
            let new_value = read_field(new, metric.field);
            Change {
                label: metric.label,
                old: old_value,
                new: new_value,
                unit: metric.unit,
                verdict: verdict(old_value, new_value, metric.better),
            }
        })
        .collect();
    let data = |report: &Value| {
        report
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let data_differs = (data(old) != data(new)).then(|| (data(old), data(new)));
    let details = match new_kind {
        "intents" => intent_details(old, new),
        "retrieval" => moved_items(
            old,
            new,
            "/misses",
            |miss| {
                miss.get("query")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            },
            ("queries newly not first", "queries now first"),
        ),
        "conversations" => moved_items(
            old,
            new,
            "/mismatches",
            |mismatch| {
                Some(format!(
                    "{} #{} {:?}",
                    mismatch.get("conversation")?.as_str()?,
                    mismatch.get("turn")?.as_u64()?,
                    mismatch.get("say")?.as_str()?
                ))
            },
            ("turns newly mismatched", "turns fixed"),
        ),
        // Sentiment and frustration reports are figures only: no items to list.
        _ => Vec::new(),
    };
    Ok(Comparison {
        kind: new_kind.to_string(),
        data_differs,
        changes,
        details,
    })
}

fn read_field(report: &Value, field: Field) -> Option<f64> {
    match field {
        Field::Number(pointer) => report.pointer(pointer).and_then(Value::as_f64),
        Field::Length(pointer) => report
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|items| items.len() as f64),
    }
}

/// Differences below this are rounding, not change.
const EPSILON: f64 = 1e-9;

fn verdict(old: Option<f64>, new: Option<f64>, better: Better) -> Verdict {
    let (Some(old), Some(new)) = (old, new) else {
        return if old.is_none() && new.is_none() {
            Verdict::Same
        } else {
            Verdict::Missing
        };
    };
    let delta = new - old;
    if delta.abs() < EPSILON {
        return Verdict::Same;
    }
    match (better, delta > 0.0) {
        (Better::Neither, _) => Verdict::Changed,
        (Better::Higher, true) | (Better::Lower, false) => Verdict::Better,
        _ => Verdict::Worse,
    }
}

/// Per-intent F1 movers: the intents that gained and lost the most.
fn intent_details(old: &Value, new: &Value) -> Vec<Detail> {
    const SHOWN: usize = 8;
    let f1 = |report: &Value, intent: &str| {
        report
            .pointer(&format!("/per_intent/{}", escape_pointer(intent)))
            .and_then(|m| m.get("f1"))
            .and_then(Value::as_f64)
    };
    let Some(new_intents) = new.get("per_intent").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut moves: Vec<(f64, String)> = new_intents
        .keys()
        .filter_map(|intent| {
            let delta = f1(new, intent)? - f1(old, intent)?;
            (delta.abs() >= EPSILON).then(|| (delta, intent.clone()))
        })
        .collect();
    moves.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let line = |(delta, intent): &(f64, String)| {
        format!(
            "{intent}: F1 {:.3} -> {:.3} ({delta:+.3})",
            f1(old, intent).unwrap_or_default(),
            f1(new, intent).unwrap_or_default()
        )
    };
    let gained: Vec<String> = moves
        .iter()
        .filter(|(delta, _)| *delta > 0.0)
        .take(SHOWN)
        .map(line)
        .collect();
    let lost: Vec<String> = moves
        .iter()
        .rev()
        .filter(|(delta, _)| *delta < 0.0)
        .take(SHOWN)
        .map(line)
        .collect();
    let mut details = Vec::new();
    if !lost.is_empty() {
        details.push(Detail {
            title: "intents whose F1 fell the most".into(),
            lines: lost,
        });
    }
    if !gained.is_empty() {
        details.push(Detail {
            title: "intents whose F1 rose the most".into(),
            lines: gained,
        });
    }
    details
}

/// JSON pointer escaping of one path segment (RFC 6901).
fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Items of a failure list (misses, mismatches) that appear only in the new report (regressions)
/// or only in the old one (fixes).
fn moved_items(
    old: &Value,
    new: &Value,
    pointer: &str,
    key: impl Fn(&Value) -> Option<String>,
    (worse_title, better_title): (&str, &str),
) -> Vec<Detail> {
    let keys = |report: &Value| -> BTreeSet<String> {
        report
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(&key).collect())
            .unwrap_or_default()
    };
    let (old_keys, new_keys) = (keys(old), keys(new));
    let newly: Vec<String> = new_keys.difference(&old_keys).cloned().collect();
    let fixed: Vec<String> = old_keys.difference(&new_keys).cloned().collect();
    let mut details = Vec::new();
    if !newly.is_empty() {
        details.push(Detail {
            title: format!("{worse_title} ({})", newly.len()),
            lines: newly,
        });
    }
    if !fixed.is_empty() {
        details.push(Detail {
            title: format!("{better_title} ({})", fixed.len()),
            lines: fixed,
        });
    }
    details
}

/// A figure as shown: percentages with one decimal, seconds with one, counts whole.
pub fn format_value(value: Option<f64>, unit: Unit) -> String {
    match value {
        None => "-".into(),
        Some(v) => match unit {
            Unit::Percent => format!("{:.1}%", v * 100.0),
            Unit::Number => format!("{v:.4}"),
            Unit::Count => format!("{v:.0}"),
            Unit::Seconds => format!("{v:.1} s"),
        },
    }
}

/// The change as shown: percentage points for ratios.
pub fn format_delta(change: &Change) -> String {
    match (change.old, change.new) {
        (Some(old), Some(new)) => {
            let delta = new - old;
            match change.unit {
                Unit::Percent => format!("{:+.1} pp", delta * 100.0),
                Unit::Number => format!("{delta:+.4}"),
                Unit::Count => format!("{delta:+.0}"),
                Unit::Seconds => format!("{delta:+.1} s"),
            }
        }
        _ => String::new(),
    }
}

fn print_comparison(comparison: &Comparison, old: &Path, new: &Path) {
    println!("comparing {} reports", comparison.kind);
    println!("  old: {}", old.display());
    println!("  new: {}", new.display());
    if let Some((old_data, new_data)) = &comparison.data_differs {
        println!(
            "  note: measured on different data ({old_data} vs {new_data}); the figures may not be comparable"
        );
    }
    println!();
    println!(
        "  {:<36} {:>10} {:>10} {:>11}",
        "figure", "old", "new", "change"
    );
    for change in &comparison.changes {
        let verdict = match change.verdict {
            Verdict::Better => "better",
            Verdict::Worse => "WORSE",
            Verdict::Same => "",
            Verdict::Changed => "changed",
            Verdict::Missing => "missing in one",
        };
        println!(
            "  {:<36} {:>10} {:>10} {:>11}  {}",
            change.label,
            format_value(change.old, change.unit),
            format_value(change.new, change.unit),
            format_delta(change),
            verdict
        );
    }
    println!();
    println!(
        "  {} better, {} worse, {} unchanged",
        comparison.count(Verdict::Better),
        comparison.count(Verdict::Worse),
        comparison.count(Verdict::Same)
    );
    for detail in &comparison.details {
        println!("  {}:", detail.title);
        for line in detail.lines.iter().take(20) {
            println!("    {line}");
        }
        if detail.lines.len() > 20 {
            println!("    ... and {} more", detail.lines.len() - 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change<'a>(comparison: &'a Comparison, label: &str) -> &'a Change {
        comparison
            .changes
            .iter()
            .find(|c| c.label == label)
            .unwrap_or_else(|| panic!("no {label}"))
    }

    #[test]
    fn knows_which_direction_is_better() {
        let old = json!({
            "kind": "retrieval", "data": "stackfaq", "recall_at_1": 0.90, "mrr": 0.95,
            "queries": 100, "misses": [{"query": "a"}, {"query": "b"}]
        });
        let new = json!({
            "kind": "retrieval", "data": "stackfaq", "recall_at_1": 0.92, "mrr": 0.94,
            "queries": 100, "misses": [{"query": "b"}, {"query": "c"}, {"query": "d"}]
        });
        let comparison = compare(&old, &new).unwrap();
        assert_eq!(change(&comparison, "recall@1").verdict, Verdict::Better);
        assert_eq!(change(&comparison, "MRR@10").verdict, Verdict::Worse);
        // More misses is worse: lower is better for that one.
        assert_eq!(
            change(&comparison, "queries not first").verdict,
            Verdict::Worse
        );
        assert_eq!(change(&comparison, "queries").verdict, Verdict::Same);
        assert_eq!(change(&comparison, "recall@3").verdict, Verdict::Same);
        assert_eq!(comparison.data_differs, None);
        assert_eq!(
            comparison.details,
            vec![
                Detail {
                    title: "queries newly not first (2)".into(),
                    lines: vec!["c".into(), "d".into()]
                },
                Detail {
                    title: "queries now first (1)".into(),
                    lines: vec!["a".into()]
                },
            ]
        );
        assert_eq!(format_delta(change(&comparison, "recall@1")), "+2.0 pp");
    }

    #[test]
    fn lower_is_better_for_time_and_neutral_figures_only_change() {
        assert_eq!(
            verdict(Some(2.0), Some(1.0), Better::Lower),
            Verdict::Better
        );
        assert_eq!(verdict(Some(1.0), Some(2.0), Better::Lower), Verdict::Worse);
        assert_eq!(
            verdict(Some(0.3), Some(0.4), Better::Neither),
            Verdict::Changed
        );
        assert_eq!(verdict(None, Some(0.4), Better::Higher), Verdict::Missing);
        assert_eq!(verdict(None, None, Better::Higher), Verdict::Same);
    }

    #[test]
    fn kinds_must_match_and_be_known() {
        let intents = json!({"kind": "intents", "in_scope_accuracy": 0.9});
        let retrieval = json!({"kind": "retrieval"});
        let err = compare(&intents, &retrieval).unwrap_err();
        assert!(
            err.contains("intents report with a retrieval report"),
            "{err}"
        );
        let err = compare(&json!({"accuracy": 0.5}), &intents).unwrap_err();
        assert!(err.contains("no \"kind\""), "{err}");
        let err = compare(&json!({"kind": "bench"}), &intents).unwrap_err();
        assert!(err.contains("unknown report kind"), "{err}");
    }

    #[test]
    fn files_that_are_not_reports_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\n  \"kind\": \"intents\",\n  oops\n}").unwrap();
        let err = read_report(&broken).unwrap_err().to_string();
        assert!(err.contains("broken.json:3"), "{err}");
        let plain = dir.path().join("plain.json");
        std::fs::write(&plain, "[1, 2]").unwrap();
        let err = read_report(&plain).unwrap_err().to_string();
        assert!(
            err.contains("plain.json") && err.contains("not a baton eval report"),
            "{err}"
        );
    }

    #[test]
    fn intent_reports_list_f1_movers_and_conversations_list_turns() {
        let old = json!({"kind": "intents", "data": "a", "per_intent": {
            "greet": {"f1": 0.9}, "bill/pay": {"f1": 0.5}, "same": {"f1": 0.7}}});
        let new = json!({"kind": "intents", "data": "b", "per_intent": {
            "greet": {"f1": 0.8}, "bill/pay": {"f1": 0.75}, "same": {"f1": 0.7}}});
        let comparison = compare(&old, &new).unwrap();
        assert_eq!(comparison.data_differs, Some(("a".into(), "b".into())));
        assert_eq!(comparison.details.len(), 2);
        assert_eq!(comparison.details[0].lines.len(), 1);
        assert!(comparison.details[0].lines[0].starts_with("greet: F1 0.900 -> 0.800"));
        assert!(comparison.details[1].lines[0].starts_with("bill/pay: F1 0.500 -> 0.750"));

        let turn = |n: u64| json!({"conversation": "billing.yaml: refund", "turn": n, "say": "hi"});
        let old = json!({"kind": "conversations", "decision_accuracy": 0.8,
                         "handoff_recall": null, "mismatches": [turn(1)]});
        let new = json!({"kind": "conversations", "decision_accuracy": 0.8,
                         "handoff_recall": 0.5, "mismatches": [turn(2)]});
        let comparison = compare(&old, &new).unwrap();
        assert_eq!(
            change(&comparison, "decision accuracy").verdict,
            Verdict::Same
        );
        assert_eq!(
            change(&comparison, "handoff recall").verdict,
            Verdict::Missing
        );
        assert_eq!(
            comparison.details[0].lines,
            vec!["billing.yaml: refund #2 \"hi\"".to_string()]
        );
        assert_eq!(comparison.details[1].title, "turns fixed (1)");
    }

    #[test]
    fn sentiment_and_frustration_reports_compare_figure_by_figure() {
        let old = json!({"kind": "sentiment", "data": "t", "macro_recall": 0.70, "accuracy": 0.68,
                         "per_class": {"negative": {"recall": 0.87}}, "items": 12284});
        let new = json!({"kind": "sentiment", "data": "t", "macro_recall": 0.71, "accuracy": 0.67,
                         "per_class": {"negative": {"recall": 0.87}}, "items": 12284});
        let comparison = compare(&old, &new).unwrap();
        assert_eq!(change(&comparison, "macro recall").verdict, Verdict::Better);
        assert_eq!(change(&comparison, "accuracy").verdict, Verdict::Worse);
        assert_eq!(
            change(&comparison, "negative recall").verdict,
            Verdict::Same
        );
        assert!(comparison.details.is_empty());

        let old = json!({"kind": "frustration", "data": "u", "conversation_auc": 0.86,
                         "per_source": {"SGD": {"conversation_auc": 0.875}},
                         "overall": {"turns": 20646}});
        let new = json!({"kind": "frustration", "data": "u", "conversation_auc": 0.85,
                         "per_source": {"SGD": {"conversation_auc": 0.88}},
                         "overall": {"turns": 20646}});
        let comparison = compare(&old, &new).unwrap();
        assert_eq!(
            change(&comparison, "conversation AUC").verdict,
            Verdict::Worse
        );
        assert_eq!(
            change(&comparison, "SGD conversation AUC").verdict,
            Verdict::Better
        );
        assert_eq!(change(&comparison, "user turns").verdict, Verdict::Same);
        let err = compare(&old, &json!({"kind": "sentiment"})).unwrap_err();
        assert!(
            err.contains("frustration report with a sentiment report"),
            "{err}"
        );
    }
}
