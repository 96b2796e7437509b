//! Quality floors on the public evaluation data, through the real pipeline: a build that makes the
//! bot measurably worse fails here. The full runs are `make eval`; these are the fast subsets.
//! Data comes from `BATON_PATHS__EVAL_DATA` (set by `make test`), else `../shared/data`.

mod common;

use std::path::PathBuf;

use baton::config::Settings;
use baton::tools::eval::conversations::evaluate as evaluate_conversations;
use baton::tools::eval::frustration::evaluate as evaluate_frustration;
use baton::tools::eval::intents::{evaluate as evaluate_intents, IntentData};
use baton::tools::eval::retrieval::{evaluate as evaluate_retrieval, prepare};
use baton::tools::eval::sentiment::evaluate as evaluate_sentiment;

fn eval_data() -> PathBuf {
    let dir = std::env::var("BATON_PATHS__EVAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::app::repo().join("../shared/data"));
    assert!(
        dir.is_dir(),
        "evaluation data not found at {} (set BATON_PATHS__EVAL_DATA)",
        dir.display()
    );
    dir
}

fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.paths.models = common::app::repo().join("models");
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinc150_sample_keeps_its_accuracy_and_out_of_scope_recall() {
    let path = eval_data().join("clinc150/data_full.json");
    // A fixed 10% of every split: 1,500 training examples, 450 + 100 test queries.
    let data = IntentData::load(&path).unwrap().sample(0.1);
    let report = evaluate_intents(&settings(), &data, &path, false, 0.75, &Default::default())
        .await
        .unwrap();
    eprintln!(
        "CLINC150 10%: in-scope {:.4}, OOS recall {:?}, threshold {:.4}",
        report.in_scope_accuracy, report.oos_recall, report.threshold
    );
    assert_eq!(report.threshold_source, "validation");
    assert!(
        report.in_scope_accuracy >= FLOOR_IN_SCOPE,
        "in-scope accuracy {}",
        report.in_scope_accuracy
    );
    assert!(
        report.oos_recall.unwrap() >= FLOOR_OOS_RECALL,
        "OOS recall {:?}",
        report.oos_recall
    );
}

/// Set a little under what the sample measures (see evals/RESULTS.md), so noise cannot fail the
/// build but a real regression does. The sample has only 100 out-of-scope test queries and a
/// threshold chosen on 300 validation queries, 10 of them out of scope. Since the classifier reads
/// layer 4 beside the embedding (stop 27) it measures in-scope 0.907 / OOS 0.48 (before: 0.873 /
/// 0.59 with the int8 encoder, 0.876 / 0.67 with fp32), while on the whole test set, threshold on
/// the whole validation split, both rose (94.7 / 75.3 -> 95.0 / 76.1). The floors were 0.85 / 0.55.
const FLOOR_IN_SCOPE: f64 = 0.88;
const FLOOR_OOS_RECALL: f64 = 0.43;

/// Few-shot, as a small team writes intents: CLINC150 with 10 training examples per intent and no
/// validation split (the threshold comes from cross-validation on those examples, as for a
/// business's own file), scored on the same fixed 10% of the test split as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinc150_with_ten_examples_per_intent_keeps_its_accuracy() {
    let path = eval_data().join("clinc150/data_full.json");
    let full = IntentData::load(&path).unwrap();
    let test = full.clone().sample(0.1).test;
    let data = IntentData {
        test,
        ..full.few_shot(10, 0)
    };
    assert_eq!(data.train.len(), 1510, "10 per intent and 10 out-of-scope");
    let report = evaluate_intents(&settings(), &data, &path, false, 0.75, &Default::default())
        .await
        .unwrap();
    eprintln!(
        "CLINC150 10-shot: in-scope {:.4}, OOS recall {:?}, threshold {:.4}",
        report.in_scope_accuracy, report.oos_recall, report.threshold
    );
    assert_eq!(report.threshold_source, "cross-validation");
    assert!(
        report.in_scope_accuracy >= FLOOR_FEW_SHOT_IN_SCOPE,
        "in-scope accuracy {}",
        report.in_scope_accuracy
    );
    assert!(
        report.oos_recall.unwrap() >= FLOOR_FEW_SHOT_OOS_RECALL,
        "OOS recall {:?}",
        report.oos_recall
    );
}

/// Measured 0.918 and 0.410 (on 450 + 100 test queries) when introduced, 0.933 and 0.390 since the
/// classifier reads layer 4 (stop 27; on the whole test split 90.5 / 53.2 -> 91.6 / 57.7); set
/// under them for the same reason as the floors above (the in-scope floor was 0.89).
const FLOOR_FEW_SHOT_IN_SCOPE: f64 = 0.91;
const FLOOR_FEW_SHOT_OOS_RECALL: f64 = 0.33;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stackfaq_retrieval_meets_the_quality_bar() {
    let path = eval_data().join("stackfaq");
    let scratch = tempfile::tempdir().unwrap();
    let (knowledge, queries) = prepare(&path, scratch.path()).unwrap();
    let report = evaluate_retrieval(
        &settings(),
        &knowledge,
        &queries,
        scratch.path(),
        true,
        &path,
    )
    .await
    .unwrap();
    eprintln!(
        "StackFAQ: recall@1 {:.4}, MRR {:.4}",
        report.recall_at_1, report.mrr
    );
    assert_eq!(report.queries, 1249);
    assert!(
        report.recall_at_1 >= 0.95,
        "recall@1 {}",
        report.recall_at_1
    );
    assert!(report.mrr >= 0.97, "MRR {}", report.mrr);
}

/// Every demo conversation script against the demo knowledge base: a policy, intents or retrieval
/// change that makes the bot decide worse on realistic conversations fails here. The scripts say what
/// a good support lead expects, not what the bot does, so the figures are well under 100%; the floors
/// sit a few turns under what was measured (see evals/RESULTS.md) so that a real regression fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_conversations_keep_their_decisions_and_handoffs() {
    let mut settings = settings();
    settings.paths.knowledge = common::app::repo().join("knowledge");
    settings.paths.prompts = common::app::repo().join("prompts");
    let scripts = common::app::repo().join("evals/conversations");
    let report = evaluate_conversations(&settings, &scripts).await.unwrap();
    eprintln!(
        "conversations: {} turns, decision accuracy {:.4}, handoff precision {:?}, recall {:?}, \
         containment {:?}",
        report.turns,
        report.decision_accuracy,
        report.handoff_precision,
        report.handoff_recall,
        report.containment
    );
    assert!(
        report.conversations >= 30,
        "{} scripts",
        report.conversations
    );
    assert!(
        report.decision_accuracy >= FLOOR_DECISION_ACCURACY,
        "decision accuracy {}",
        report.decision_accuracy
    );
    let precision = report.handoff_precision.unwrap_or(0.0);
    assert!(
        precision >= FLOOR_HANDOFF_PRECISION,
        "handoff precision {precision}"
    );
    let recall = report.handoff_recall.unwrap_or(0.0);
    assert!(recall >= FLOOR_HANDOFF_RECALL, "handoff recall {recall}");
}

/// Measured 0.940 / 0.885 / 0.955 on 116 turns (26 live handoffs, 22 required) with the int8
/// encoder at stop 25 (evals/RESULTS.md), 0.931 / 0.889 / 0.955 since the classifier reads layer 4
/// (stop 27: one turn fewer right, so one more lost still passes), 0.914 / 0.889 / 0.909 since
/// the encoder's attention is one ONNX Runtime node (stop 33: its int8 rounding moved a near tie
/// between two sections of the same article in the first turn of "hub offline after a new
/// router", 0.6801 / 0.6759 before and 0.6667 / 0.6759 after, so the third turn no longer
/// repeats an answer already given and the fourth follows; every other turn, and CLINC150,
/// StackFAQ and TweetEval, unchanged). 105 decisions right (0.905) and 19 required handoffs made
/// (0.864) still pass: one more lost turn passes, two fail. One turn sits right at a threshold
/// ("can someone from your team look at it?", 0.8002 against 0.80), and when it flips the turn
/// after it flips too: that would now fail, as it should, since it would take the decisions below
/// issue 12's aim of 90% (handoff recall: 85%). Since stop 34, 0.931 / 0.893 / 0.955: a section
/// whose answer is "contact our team in chat" hands off once its article has been given, which
/// gives "hub offline after a new router" its third and fourth turns back; the floor returns to
/// where stop 27 left it (one more lost turn passes), and handoff recall's to 0.90 (21 of 22
/// required handoffs made: one more lost passes, two fail). Since stop 40, 0.931 / 0.889 / 0.955:
/// leaving ONNX Runtime's skip-layer-norm fusion out moved another near tie by int8 rounding
/// (alone it gave 0.922 / 0.885 / 0.909: the second turn of "password reset that never arrives"
/// got "Still can't get in?", so the third was answered instead of handed off), and the heading
/// bonus (`retrieval.heading_weight`) gives that turn "The reset email hasn't arrived" again; the
/// floors stay.
const FLOOR_DECISION_ACCURACY: f64 = 0.92;
const FLOOR_HANDOFF_PRECISION: f64 = 0.84;
const FLOOR_HANDOFF_RECALL: f64 = 0.90;

/// Every 10th TweetEval test tweet (1,229 of 12,284) through the shipped sentiment model: a
/// model file, tokenizer or truncation change that costs quality fails here (the exact outputs
/// are pinned by tests/encoder.rs against the training reference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tweeteval_sample_keeps_its_macro_recall() {
    let path = eval_data().join("tweeteval/sentiment");
    let report = evaluate_sentiment(&settings(), &path, "test", 10)
        .await
        .unwrap();
    eprintln!(
        "TweetEval 10%: {} tweets, macro recall {:.4}, accuracy {:.4}, negative F1 {:.4}",
        report.items, report.macro_recall, report.accuracy, report.negative_f1
    );
    assert_eq!(report.items, 1229);
    assert!(
        report.macro_recall >= FLOOR_SENTIMENT_MACRO_RECALL,
        "macro recall {}",
        report.macro_recall
    );
}

/// Measured 0.6930 on this sample on 2026-12-02 (the full test set: 0.7033).
const FLOOR_SENTIMENT_MACRO_RECALL: f64 = 0.68;

/// The whole USS evaluation half (20,646 user turns, 122 dissatisfied): the conversation-level
/// frustration score must keep beating message sentiment alone, overall, which is the point of
/// having it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frustration_beats_message_sentiment_on_uss() {
    let path = eval_data().join("uss");
    let report = evaluate_frustration(&settings(), &path, false)
        .await
        .unwrap();
    let overall = &report.overall;
    let message = overall.message_auc.unwrap();
    let conversation = overall.conversation_auc.unwrap();
    eprintln!(
        "USS evaluation half: {} turns, {} dissatisfied, message AUC {message:.4}, \
         conversation AUC {conversation:.4}",
        overall.turns, overall.dissatisfied
    );
    assert_eq!(overall.turns, 20_646);
    assert!(
        conversation > message,
        "conversation AUC {conversation} does not beat message sentiment alone ({message})"
    );
    assert!(
        conversation >= FLOOR_CONVERSATION_AUC,
        "conversation AUC {conversation}"
    );
}

/// Measured 0.862 (message sentiment alone 0.845) on 2026-12-02.
const FLOOR_CONVERSATION_AUC: f64 = 0.84;
