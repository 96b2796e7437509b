//! `baton eval conversations`: scripted conversations, each a list of customer turns with the
//! decision a good support lead would expect, run through the real engine (the same encoder,
//! intents training, retrieval, policy and store as `baton serve`) on a scratch data directory
//! loaded from a knowledge folder. The script format is documented in docs/evals.md.
//!
//! Scripts are checked against the knowledge folder while they are parsed, so a misspelt intent,
//! source document, decision or reason stops the run with the file and line instead of quietly
//! counting as a mismatch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::app::AppState;
use crate::bot::policy::{DecisionKind, Reason};
use crate::bot::{TurnResult, Understanding};
use crate::config::Settings;
use crate::knowledge::loaders;
use crate::nlp::intents::IntentsFile;
use crate::tools::eval::{percent, progress_bar, report, resolve_data, write_json, EvalError};

mod page;
mod script;

pub use script::parse_script;

#[derive(Debug, Args)]
pub struct ConversationsArgs {
    /// A folder of conversation scripts (*.yaml, *.yml) or one script file. The knowledge folder
    /// they run against is the global --knowledge (default: paths.knowledge).
    #[arg(value_name = "DIR", required_unless_present = "data")]
    pub scripts: Option<PathBuf>,
    /// The scripts, as a flag (same as DIR).
    #[arg(long, conflicts_with = "scripts")]
    pub data: Option<PathBuf>,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// One scripted conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The script file, relative to the scripts folder.
    pub file: String,
    pub name: String,
    pub turns: Vec<ScriptedTurn>,
}

impl Conversation {
    /// How reports name it: `file: name`.
    pub fn label(&self) -> String {
        format!("{}: {}", self.file, self.name)
    }

    /// The bot should handle it alone: no turn accepts a handoff.
    fn should_be_contained(&self) -> bool {
        !self
            .turns
            .iter()
            .any(|turn| turn.expect.contains(&DecisionKind::Handoff))
    }
}

/// One customer message and what should come of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedTurn {
    pub say: String,
    /// Acceptable decisions (one or several).
    pub expect: Vec<DecisionKind>,
    /// The top intent the classifier should report.
    pub intent: Option<String>,
    /// Acceptable sources of the best knowledge hit (paths relative to the knowledge folder).
    pub sources: Vec<String>,
    /// Reasons that must all be among the decision's reasons.
    pub reasons: Vec<Reason>,
    /// Why the expectation is what it is (shown next to mismatches).
    pub note: Option<String>,
}

impl ScriptedTurn {
    /// Handoff is the only acceptable decision.
    fn requires_handoff(&self) -> bool {
        self.expect == [DecisionKind::Handoff]
    }
}

/// What the scripts may refer to: the intents of the knowledge folder's intents.yaml and its
/// knowledge documents.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub intents: BTreeSet<String>,
    pub sources: BTreeSet<String>,
}

impl Catalog {
    /// The intents and documents that `settings` (its knowledge folder and intents file) serve.
    pub fn from_settings(settings: &Settings) -> Result<Self, EvalError> {
        let knowledge = &settings.paths.knowledge;
        if !knowledge.is_dir() {
            return Err(EvalError::data(
                knowledge,
                None,
                "knowledge folder not found (set it with --knowledge)",
            ));
        }
        let (intents_file, _) =
            IntentsFile::read(&settings.intents_file()).map_err(EvalError::pipeline)?;
        let sources = loaders::discover_files(knowledge)
            .map_err(EvalError::pipeline)?
            .into_iter()
            .map(|(_, source)| source)
            .collect();
        Ok(Self {
            intents: intents_file.intents.into_iter().map(|i| i.name).collect(),
            sources,
        })
    }
}

/// Every conversation in `path`: one script file, or the *.yaml / *.yml files of a folder
/// (sorted by name, not recursive).
pub fn load_scripts(path: &Path, catalog: &Catalog) -> Result<Vec<Conversation>, EvalError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let entries =
            std::fs::read_dir(path).map_err(|e| EvalError::data(path, None, e.to_string()))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| EvalError::data(path, None, e.to_string()))?;
            let file = entry.path();
            let is_yaml = file
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            if is_yaml && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(EvalError::data(
            path,
            None,
            "no *.yaml conversation scripts",
        ));
    }
    let mut conversations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| EvalError::data(&file, None, e.to_string()))?;
        conversations.extend(parse_script(&text, &file, catalog)?);
    }
    Ok(conversations)
}

// ------------------------------------------------------------------------------------------------
// Running and scoring.

/// What the bot did with one scripted turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    pub decision: DecisionKind,
    pub reasons: Vec<Reason>,
    pub reply: Option<String>,
    pub understanding: Understanding,
}

impl From<TurnResult> for TurnOutcome {
    fn from(result: TurnResult) -> Self {
        Self {
            decision: result.decision,
            reasons: result.reasons,
            reply: result.reply.map(|reply| reply.text),
            understanding: result.understanding,
        }
    }
}

impl TurnOutcome {
    fn intent(&self) -> Option<&str> {
        self.understanding.intent.as_ref().map(|i| i.name.as_str())
    }

    fn top_source(&self) -> Option<&str> {
        self.understanding
            .knowledge
            .first()
            .map(|k| k.source.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Expected {
    pub decision: Vec<DecisionKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Got {
    pub decision: DecisionKind,
    pub reasons: Vec<Reason>,
    pub intent: Option<String>,
    /// Source of the best knowledge hit.
    pub source: Option<String>,
    pub reply: Option<String>,
}

/// A turn where the bot did not do what the script expects.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// `file: name`.
    pub conversation: String,
    /// 1-based.
    pub turn: usize,
    pub say: String,
    /// Which checks failed: decision, intent, source, reasons.
    pub problems: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub expected: Expected,
    pub got: Got,
    pub understanding: Understanding,
}

/// One turn as it went, for the overview of every conversation.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptTurn {
    pub say: String,
    pub expected: Vec<DecisionKind>,
    pub got: DecisionKind,
    pub reasons: Vec<Reason>,
    /// Failed checks (empty: the turn went as scripted).
    pub problems: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    /// `file: name`.
    pub conversation: String,
    pub turns: Vec<TranscriptTurn>,
}

/// The raw counts behind the ratios.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub correct_decisions: usize,
    /// Turns before the script expects the bot to have handed off (handoff precision and recall
    /// are measured on these; later turns only check that the bot stays silent).
    pub live_turns: usize,
    /// Live turns where the bot handed off.
    pub handoffs: usize,
    /// ... and where the script accepts a handoff.
    pub handoffs_acceptable: usize,
    /// Live turns where handoff is the only acceptable decision.
    pub handoffs_required: usize,
    /// ... and where the bot handed off.
    pub handoffs_required_made: usize,
    /// Conversations where no turn accepts a handoff.
    pub conversations_to_contain: usize,
    /// ... that ended without any handoff.
    pub conversations_contained: usize,
    pub intent_checks: usize,
    pub intents_correct: usize,
    pub source_checks: usize,
    pub sources_correct: usize,
    pub reason_checks: usize,
    pub reasons_correct: usize,
    /// Turns that passed every check.
    pub turns_fully_correct: usize,
    /// Conversations where every turn passed every check.
    pub conversations_fully_correct: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationsReport {
    /// "conversations", for `baton eval compare`.
    pub kind: &'static str,
    pub data: String,
    pub knowledge: String,
    pub conversations: usize,
    pub turns: usize,
    /// Turns whose decision is one of the acceptable ones.
    pub decision_accuracy: f64,
    /// Of the live turns the bot handed off, the share where the script accepts a handoff.
    pub handoff_precision: Option<f64>,
    /// Of the live turns that require a handoff, the share the bot handed off.
    pub handoff_recall: Option<f64>,
    /// Of the conversations the bot should handle alone, the share it did without any handoff.
    pub containment: Option<f64>,
    pub intent_accuracy: Option<f64>,
    pub source_accuracy: Option<f64>,
    pub reasons_accuracy: Option<f64>,
    /// Turns that passed every check.
    pub turn_accuracy: f64,
    /// Conversations where every turn passed every check.
    pub conversation_accuracy: f64,
    pub counts: Counts,
    /// Expected decision -> decision made -> turns. A turn with several acceptable decisions
    /// counts on the diagonal when one of them was made, else under the first one listed.
    pub confusion: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    pub mismatches: Vec<Mismatch>,
    /// Every conversation turn by turn, in script order.
    pub transcripts: Vec<Transcript>,
    pub seconds: f64,
}

pub async fn run(settings: &Settings, args: ConversationsArgs) -> Result<(), EvalError> {
    let scripts = args
        .scripts
        .or(args.data)
        .ok_or_else(|| EvalError::Pipeline("give the scripts folder (DIR or --data)".into()))?;
    let scripts = resolve_data(settings, &scripts)?;
    let report = evaluate(settings, &scripts).await?;
    print_summary(&report);
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    if let Some(html) = &args.html {
        report::write_html(html, &page::conversations_page(&report))?;
    }
    Ok(())
}

/// Run every script in `scripts` against the knowledge folder of `settings`, in a scratch data
/// directory (the configured one is never touched).
pub async fn evaluate(
    settings: &Settings,
    scripts: &Path,
) -> Result<ConversationsReport, EvalError> {
    let started = Instant::now();
    let catalog = Catalog::from_settings(settings)?;
    let conversations = load_scripts(scripts, &catalog)?;

    let scratch = tempfile::tempdir().map_err(EvalError::pipeline)?;
    let mut settings = settings.clone();
    settings.paths.data = scratch.path().join("data");
    settings.database.url = None;
    let knowledge = settings.paths.knowledge.clone();
    let state = AppState::build_with(settings, None)
        .await
        .map_err(EvalError::pipeline)?;
    // The start-up sync skips files that fail to load; a second sync (nothing is re-embedded)
    // reports them, and a script run on a partial knowledge base would mislead.
    let sync = state
        .components
        .knowledge
        .sync_folder(&knowledge)
        .await
        .map_err(EvalError::pipeline)?;
    if let Some((source, reason)) = sync.failed.first() {
        return Err(EvalError::data(
            &knowledge.join(source),
            None,
            reason.clone(),
        ));
    }

    let total_turns: usize = conversations.iter().map(|c| c.turns.len()).sum();
    let bar = progress_bar(total_turns as u64, "turns");
    let mut runs = Vec::with_capacity(conversations.len());
    for conversation in conversations {
        let started = state
            .engine
            .create_conversation()
            .await
            .map_err(EvalError::pipeline)?;
        let mut outcomes = Vec::with_capacity(conversation.turns.len());
        for turn in &conversation.turns {
            let result = state
                .engine
                .handle_customer_message(&started.id, &turn.say, None)
                .await
                .map_err(EvalError::pipeline)?;
            outcomes.push(TurnOutcome::from(result));
            bar.inc(1);
        }
        runs.push((conversation, outcomes));
    }
    bar.finish_and_clear();
    drop(state);

    let mut report = score(&runs);
    report.data = scripts.display().to_string();
    report.knowledge = knowledge.display().to_string();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Every figure from the scripts and what the bot did (one outcome per turn, in order).
pub fn score(runs: &[(Conversation, Vec<TurnOutcome>)]) -> ConversationsReport {
    let decisions = [
        DecisionKind::Answer,
        DecisionKind::Clarify,
        DecisionKind::Handoff,
    ];
    let mut confusion: BTreeMap<&'static str, BTreeMap<&'static str, usize>> = decisions
        .iter()
        .map(|expected| {
            (
                expected.as_str(),
                decisions.iter().map(|got| (got.as_str(), 0)).collect(),
            )
        })
        .collect();
    let mut counts = Counts::default();
    let mut mismatches = Vec::new();
    let mut transcripts = Vec::with_capacity(runs.len());
    let mut turns = 0;
    for (conversation, outcomes) in runs {
        let mut transcript = Transcript {
            conversation: conversation.label(),
            turns: Vec::with_capacity(outcomes.len()),
        };
        let mut handed_off = false;
        let mut all_correct = true;
        // Once the script requires a handoff, the bot should stay silent: later turns check
        // that, not whether it would hand off again.
        let mut live = true;
        let to_contain = conversation.should_be_contained();
        for (index, (turn, outcome)) in conversation.turns.iter().zip(outcomes).enumerate() {
            turns += 1;
            let mut problems = Vec::new();
            let decision_ok = turn.expect.contains(&outcome.decision);
            let row = if decision_ok {
                outcome.decision
            } else {
                turn.expect[0]
            };
            *confusion
                .get_mut(row.as_str())
                .and_then(|r| r.get_mut(outcome.decision.as_str()))
                .expect("every decision has a row and a column") += 1;
            if decision_ok {
                counts.correct_decisions += 1;
            } else {
                problems.push("decision");
            }
            if let Some(intent) = &turn.intent {
                counts.intent_checks += 1;
                if outcome.intent() == Some(intent.as_str()) {
                    counts.intents_correct += 1;
                } else {
                    problems.push("intent");
                }
            }
            if !turn.sources.is_empty() {
                counts.source_checks += 1;
                if outcome
                    .top_source()
                    .is_some_and(|top| turn.sources.iter().any(|s| s == top))
                {
                    counts.sources_correct += 1;
                } else {
                    problems.push("source");
                }
            }
            if !turn.reasons.is_empty() {
                counts.reason_checks += 1;
                if turn.reasons.iter().all(|r| outcome.reasons.contains(r)) {
                    counts.reasons_correct += 1;
                } else {
                    problems.push("reasons");
                }
            }
            let bot_handed_off = outcome.decision == DecisionKind::Handoff;
            handed_off |= bot_handed_off;
            if live {
                counts.live_turns += 1;
                if bot_handed_off {
                    counts.handoffs += 1;
                    if turn.expect.contains(&DecisionKind::Handoff) {
                        counts.handoffs_acceptable += 1;
                    }
                }
                if turn.requires_handoff() {
                    counts.handoffs_required += 1;
                    if bot_handed_off {
                        counts.handoffs_required_made += 1;
                    }
                    live = false;
                }
            }
            transcript.turns.push(TranscriptTurn {
                say: turn.say.clone(),
                expected: turn.expect.clone(),
                got: outcome.decision,
                reasons: outcome.reasons.clone(),
                problems: problems.clone(),
            });
            if problems.is_empty() {
                counts.turns_fully_correct += 1;
            } else {
                all_correct = false;
                mismatches.push(Mismatch {
                    conversation: conversation.label(),
                    turn: index + 1,
                    say: turn.say.clone(),
                    problems,
                    note: turn.note.clone(),
                    expected: Expected {
                        decision: turn.expect.clone(),
                        intent: turn.intent.clone(),
                        source: turn.sources.clone(),
                        reasons: turn.reasons.clone(),
                    },
                    got: Got {
                        decision: outcome.decision,
                        reasons: outcome.reasons.clone(),
                        intent: outcome.intent().map(str::to_string),
                        source: outcome.top_source().map(str::to_string),
                        reply: outcome.reply.clone(),
                    },
                    understanding: outcome.understanding.clone(),
                });
            }
        }
        if to_contain {
            counts.conversations_to_contain += 1;
            if !handed_off {
                counts.conversations_contained += 1;
            }
        }
        if all_correct {
            counts.conversations_fully_correct += 1;
        }
        transcripts.push(transcript);
    }
    ConversationsReport {
        kind: "conversations",
        data: String::new(),
        knowledge: String::new(),
        conversations: runs.len(),
        turns,
        decision_accuracy: ratio(counts.correct_decisions, turns).unwrap_or(0.0),
        handoff_precision: ratio(counts.handoffs_acceptable, counts.handoffs),
        handoff_recall: ratio(counts.handoffs_required_made, counts.handoffs_required),
        containment: ratio(
            counts.conversations_contained,
            counts.conversations_to_contain,
        ),
        intent_accuracy: ratio(counts.intents_correct, counts.intent_checks),
        source_accuracy: ratio(counts.sources_correct, counts.source_checks),
        reasons_accuracy: ratio(counts.reasons_correct, counts.reason_checks),
        turn_accuracy: ratio(counts.turns_fully_correct, turns).unwrap_or(0.0),
        conversation_accuracy: ratio(counts.conversations_fully_correct, runs.len()).unwrap_or(0.0),
        counts,
        confusion,
        mismatches,
        transcripts,
        seconds: 0.0,
    }
}

fn print_summary(report: &ConversationsReport) {
    let maybe = |value: Option<f64>| value.map(percent).unwrap_or_else(|| "-".into());
    let counts = &report.counts;
    println!("conversation evaluation on {}", report.data);
    println!(
        "  {} conversations, {} turns, knowledge {}",
        report.conversations, report.turns, report.knowledge
    );
    println!(
        "  decision accuracy   {} ({}/{} turns)",
        percent(report.decision_accuracy),
        counts.correct_decisions,
        report.turns
    );
    println!(
        "  handoff precision   {} ({}/{})",
        maybe(report.handoff_precision),
        counts.handoffs_acceptable,
        counts.handoffs
    );
    println!(
        "  handoff recall      {} ({}/{})",
        maybe(report.handoff_recall),
        counts.handoffs_required_made,
        counts.handoffs_required
    );
    println!(
        "  containment         {} ({}/{} conversations)",
        maybe(report.containment),
        counts.conversations_contained,
        counts.conversations_to_contain
    );
    println!(
        "  intent accuracy     {} ({}/{})",
        maybe(report.intent_accuracy),
        counts.intents_correct,
        counts.intent_checks
    );
    println!(
        "  source accuracy     {} ({}/{})",
        maybe(report.source_accuracy),
        counts.sources_correct,
        counts.source_checks
    );
    println!(
        "  reasons accuracy    {} ({}/{})",
        maybe(report.reasons_accuracy),
        counts.reasons_correct,
        counts.reason_checks
    );
    println!(
        "  turns fully right   {}, conversations fully right {} ({}/{})",
        percent(report.turn_accuracy),
        percent(report.conversation_accuracy),
        counts.conversations_fully_correct,
        report.conversations
    );
    println!("  decisions (expected -> made):");
    println!(
        "    {:>10} {:>7} {:>7} {:>7}",
        "", "answer", "clarify", "handoff"
    );
    for (expected, row) in &report.confusion {
        println!(
            "    {:>10} {:>7} {:>7} {:>7}",
            expected, row["answer"], row["clarify"], row["handoff"]
        );
    }
    if !report.mismatches.is_empty() {
        println!("  {} mismatched turns:", report.mismatches.len());
        for mismatch in &report.mismatches {
            let expected: Vec<&str> = mismatch
                .expected
                .decision
                .iter()
                .map(|d| d.as_str())
                .collect();
            let reasons: Vec<&str> = mismatch.got.reasons.iter().map(|r| r.as_str()).collect();
            println!(
                "    {} #{} {:?}: expected {} got {} [{}] intent {} ({})",
                mismatch.conversation,
                mismatch.turn,
                mismatch.say,
                expected.join("|"),
                mismatch.got.decision.as_str(),
                reasons.join(", "),
                mismatch.got.intent.as_deref().unwrap_or("-"),
                mismatch.problems.join(", ")
            );
        }
    }
    println!("  {:.1} s", report.seconds);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::script::without_position;
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            intents: ["refund_request", "cancel_subscription", "greet"]
                .into_iter()
                .map(String::from)
                .collect(),
            sources: ["billing/refunds.md", "faq.yaml"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }

    fn parse(text: &str) -> Result<Vec<Conversation>, String> {
        parse_script(
            text,
            Path::new("evals/conversations/billing.yaml"),
            &catalog(),
        )
        .map_err(|e| e.to_string())
    }

    const GOOD: &str = "\
conversations:
  - name: refund then thanks
    note: a plain refund question
    turns:
      - say: how long does a refund take?
        expect: answer
        intent: refund_request
        source: [billing/refunds.md, faq.yaml]
        reasons: knowledge_match
      - say: thanks
        expect: [answer, clarify]
  - name: cancel
    turns:
      - say: cancel my plan
        expect: handoff
        reasons: [intent_requires_human]
        note: the retention team is human
";

    #[test]
    fn parses_the_documented_format() {
        let conversations = parse(GOOD).unwrap();
        assert_eq!(conversations.len(), 2);
        let first = &conversations[0];
        assert_eq!(first.file, "billing.yaml");
        assert_eq!(first.label(), "billing.yaml: refund then thanks");
        assert_eq!(first.turns[0].expect, vec![DecisionKind::Answer]);
        assert_eq!(first.turns[0].intent.as_deref(), Some("refund_request"));
        assert_eq!(
            first.turns[0].sources,
            vec!["billing/refunds.md", "faq.yaml"]
        );
        assert_eq!(first.turns[0].reasons, vec![Reason::KnowledgeMatch]);
        assert_eq!(
            first.turns[1].expect,
            vec![DecisionKind::Answer, DecisionKind::Clarify]
        );
        assert!(conversations[1].turns[0].requires_handoff());
        assert_eq!(
            conversations[1].turns[0].note.as_deref(),
            Some("the retention team is human")
        );
        assert!(first.should_be_contained());
        assert!(!conversations[1].should_be_contained());
    }

    fn error_line(text: &str) -> String {
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with("evals/conversations/billing.yaml:"),
            "{err}"
        );
        err
    }

    #[test]
    fn unknown_names_fail_with_file_and_line_of_the_value() {
        let typo = GOOD.replace("intent: refund_request", "intent: refund_requets");
        let err = error_line(&typo);
        assert!(
            err.starts_with("evals/conversations/billing.yaml:7:"),
            "{err}"
        );
        assert!(err.contains("unknown intent \"refund_requets\""), "{err}");

        let source = GOOD.replace("faq.yaml]", "billing/refund.md]");
        let err = error_line(&source);
        assert!(
            err.starts_with("evals/conversations/billing.yaml:8:"),
            "{err}"
        );
        assert!(err.contains("billing/refund.md"), "{err}");

        let decision = GOOD.replace("expect: [answer, clarify]", "expect: [answer, clarfy]");
        let err = error_line(&decision);
        assert!(
            err.starts_with("evals/conversations/billing.yaml:11:"),
            "{err}"
        );
        assert!(err.contains("unknown decision \"clarfy\""), "{err}");

        let reason = GOOD.replace("reasons: knowledge_match", "reasons: knowledge");
        let err = error_line(&reason);
        assert!(
            err.starts_with("evals/conversations/billing.yaml:9:"),
            "{err}"
        );
        assert!(err.contains("unknown reason"), "{err}");
    }

    #[test]
    fn structural_errors_name_the_line() {
        let missing_expect = GOOD.replace("        expect: [answer, clarify]\n", "");
        let err = error_line(&missing_expect);
        assert!(err.contains("missing field `expect`"), "{err}");
        assert!(
            err.starts_with("evals/conversations/billing.yaml:10:"),
            "{err}"
        );

        let unknown_field = GOOD.replace("expect: handoff", "expct: handoff");
        let err = error_line(&unknown_field);
        assert!(err.contains("unknown field `expct`"), "{err}");
        assert!(
            err.starts_with("evals/conversations/billing.yaml:15:"),
            "{err}"
        );

        let duplicate = GOOD.replace("name: cancel", "name: refund then thanks");
        let err = error_line(&duplicate);
        assert!(err.contains("two conversations are named"), "{err}");

        let syntax = GOOD.replace("      - say: thanks", "    - say: [thanks");
        error_line(&syntax);

        let no_turns = "conversations:\n  - name: empty\n    turns: []\n";
        assert!(error_line(no_turns).contains("has no turns"));
        assert!(parse("   \n").unwrap_err().contains("empty script file"));
    }

    #[test]
    fn position_suffix_is_removed_only_when_it_is_one() {
        assert_eq!(
            without_position("turns[0]: unknown field `x` at line 3 column 7"),
            "turns[0]: unknown field `x`"
        );
        let context = "did not find expected key at line 5 column 3, while parsing a block mapping at line 3 column 1";
        assert_eq!(without_position(context), context);
    }

    /// An understanding as the engine reports it, read from JSON so that fields added to it later
    /// (with serde defaults) don't break these tests.
    pub(crate) fn understanding(intent: &str, source: &str) -> Understanding {
        serde_json::from_value(serde_json::json!({
            "intent": {"name": intent, "confidence": 0.9},
            "alternatives": [],
            "out_of_scope": false,
            "in_scope_score": 0.8,
            "knowledge": [{"chunk_id": "c1", "document_id": "d1", "title": "t", "score": 0.7,
                           "source": source}],
            "timings": {"encoder_ms": 1.0, "intent_ms": 1.0, "retrieval_ms": 1.0, "total_ms": 3.0}
        }))
        .expect("an understanding")
    }

    fn outcome(
        decision: DecisionKind,
        reasons: &[Reason],
        intent: &str,
        source: &str,
    ) -> TurnOutcome {
        TurnOutcome {
            decision,
            reasons: reasons.to_vec(),
            reply: None,
            understanding: understanding(intent, source),
        }
    }

    fn turn(expect: &[DecisionKind]) -> ScriptedTurn {
        ScriptedTurn {
            say: "x".into(),
            expect: expect.to_vec(),
            intent: None,
            sources: Vec::new(),
            reasons: Vec::new(),
            note: None,
        }
    }

    fn conversation(name: &str, turns: Vec<ScriptedTurn>) -> Conversation {
        Conversation {
            file: "f.yaml".into(),
            name: name.into(),
            turns,
        }
    }

    #[test]
    fn scores_decisions_handoffs_and_containment() {
        use DecisionKind::{Answer, Clarify, Handoff};
        let mut refund = turn(&[Answer]);
        refund.intent = Some("refund_request".into());
        refund.sources = vec!["billing/refunds.md".into()];
        let runs = vec![
            // Contained and right.
            (
                conversation("a", vec![refund.clone(), turn(&[Answer, Clarify])]),
                vec![
                    outcome(
                        Answer,
                        &[Reason::KnowledgeMatch],
                        "refund_request",
                        "billing/refunds.md",
                    ),
                    outcome(Clarify, &[Reason::WeakKnowledge], "greet", "faq.yaml"),
                ],
            ),
            // Should be contained, the bot handed off on turn 2 (wrongly) and then stayed silent.
            (
                conversation("b", vec![refund.clone(), turn(&[Answer]), turn(&[Answer])]),
                vec![
                    outcome(
                        Answer,
                        &[Reason::KnowledgeMatch],
                        "refund_request",
                        "faq.yaml",
                    ),
                    outcome(Handoff, &[Reason::NoKnowledge], "greet", "faq.yaml"),
                    outcome(Handoff, &[Reason::AwaitingHuman], "greet", "faq.yaml"),
                ],
            ),
            // A required handoff the bot made, then a silent turn; and one it missed.
            (
                conversation("c", vec![turn(&[Handoff]), turn(&[Handoff])]),
                vec![
                    outcome(
                        Handoff,
                        &[Reason::IntentRequiresHuman],
                        "cancel_subscription",
                        "faq.yaml",
                    ),
                    outcome(Handoff, &[Reason::AwaitingHuman], "greet", "faq.yaml"),
                ],
            ),
            (
                conversation("d", vec![turn(&[Handoff])]),
                vec![outcome(
                    Answer,
                    &[Reason::KnowledgeMatch],
                    "refund_request",
                    "faq.yaml",
                )],
            ),
        ];
        let report = score(&runs);
        assert_eq!(report.kind, "conversations");
        assert_eq!((report.conversations, report.turns), (4, 8));
        // Wrong: b#2, b#3, d#1.
        assert!((report.decision_accuracy - 5.0 / 8.0).abs() < 1e-12);
        // Live handoffs: b#2, b#3 (not acceptable), c#1 (acceptable); c#2 is after the required
        // handoff, so not live.
        assert_eq!(report.counts.live_turns, 7);
        assert_eq!(report.handoff_precision, Some(1.0 / 3.0));
        // Required: c#1 (made), d#1 (missed).
        assert_eq!(report.handoff_recall, Some(0.5));
        // a and b should be contained; only a was.
        assert_eq!(report.containment, Some(0.5));
        // b#1 got the FAQ instead of the article.
        assert_eq!(report.source_accuracy, Some(0.5));
        assert_eq!(report.intent_accuracy, Some(1.0));
        assert_eq!(report.confusion["answer"]["handoff"], 2);
        assert_eq!(report.confusion["answer"]["clarify"], 0);
        assert_eq!(report.confusion["clarify"]["clarify"], 1);
        assert_eq!(report.confusion["handoff"]["answer"], 1);
        assert_eq!(report.confusion["handoff"]["handoff"], 2);
        let problems: Vec<(String, usize, Vec<&str>)> = report
            .mismatches
            .iter()
            .map(|m| (m.conversation.clone(), m.turn, m.problems.clone()))
            .collect();
        assert_eq!(
            problems,
            vec![
                ("f.yaml: b".to_string(), 1, vec!["source"]),
                ("f.yaml: b".to_string(), 2, vec!["decision"]),
                ("f.yaml: b".to_string(), 3, vec!["decision"]),
                ("f.yaml: d".to_string(), 1, vec!["decision"]),
            ]
        );
        assert_eq!(report.counts.conversations_fully_correct, 2);
        assert_eq!(report.transcripts.len(), 4);
        assert_eq!(report.transcripts[1].turns[2].got, Handoff);
        assert_eq!(report.transcripts[1].turns[2].problems, vec!["decision"]);
        assert!(report.transcripts[0].turns[1].problems.is_empty());
    }

    #[test]
    fn missing_reasons_are_a_mismatch_even_with_the_right_decision() {
        let mut cancel = turn(&[DecisionKind::Handoff]);
        cancel.reasons = vec![Reason::IntentRequiresHuman];
        let runs = vec![(
            conversation("cancel", vec![cancel]),
            vec![outcome(
                DecisionKind::Handoff,
                &[Reason::LowConfidence, Reason::NoKnowledge],
                "cancel_subscription",
                "faq.yaml",
            )],
        )];
        let report = score(&runs);
        assert_eq!(report.decision_accuracy, 1.0);
        assert_eq!(report.reasons_accuracy, Some(0.0));
        assert_eq!(report.mismatches[0].problems, vec!["reasons"]);
        assert_eq!(report.handoff_recall, Some(1.0));
        assert_eq!(report.containment, None);
    }
}
