//! `baton eval answers`: how good the bot's answers are, for each answer writer. Questions with
//! the facts a good answer contains and the article it should cite, plus questions the help
//! centre does not cover (the bot must not answer those), are each asked in a fresh conversation
//! through the real engine. Figures: answers containing an expected fact, the expected source
//! cited, declines on uncovered questions, the validity of the citations the model wrote (before
//! Baton removes invalid ones), fallbacks, latency to the first token and per turn. The
//! extractive writer is always measured; the LLM too when one is configured or given.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::bot::answer::grounding::citation_numbers;
use crate::bot::policy::{DecisionKind, Reason};
use crate::config::{AnswerWriterKind, Settings};
use crate::tools::eval::{progress_bar, report, resolve_data, write_json, EvalError};

#[derive(Debug, Args)]
pub struct AnswersArgs {
    /// A YAML file of questions, or a folder of them (see evals/answers/).
    #[arg(value_name = "QUESTIONS")]
    pub questions: PathBuf,
    /// Also measure the LLM at this OpenAI-compatible base URL (e.g. http://127.0.0.1:8081/v1).
    /// Without it, the LLM is measured when the configuration has `answer.writer = "llm"`.
    #[arg(long)]
    pub llm_url: Option<String>,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub ask: String,
    /// A good answer contains at least one of these (case-insensitive).
    #[serde(default)]
    pub facts: Vec<String>,
    /// A good answer cites a source whose title, URL or path contains one of these.
    #[serde(default)]
    pub sources: Vec<String>,
    /// False: the help centre does not answer this; answering it is a mistake.
    #[serde(default = "covered_by_default")]
    pub covered: bool,
}

fn covered_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    pub ask: String,
    pub covered: bool,
    pub decision: DecisionKind,
    pub reasons: Vec<Reason>,
    pub text: String,
    pub sources: Vec<String>,
    pub fact_found: bool,
    pub source_cited: bool,
    /// What the model streamed, before citations were checked (LLM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    pub passages_given: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    pub turn_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriterReport {
    pub writer: String,
    /// Covered questions answered (not handed off or clarified).
    pub answered_covered: f64,
    /// Covered questions whose answer contains an expected fact.
    pub fact_found: f64,
    /// Covered questions whose answer cites one of their `sources`.
    pub source_cited: f64,
    /// Uncovered questions not answered.
    pub declined_uncovered: f64,
    /// Of the citations the model wrote, the share naming a passage it was given.
    pub citation_validity: Option<f64>,
    /// Turns answered by the fallback because the LLM was unavailable.
    pub fallbacks: usize,
    pub first_token_ms_p50: Option<f64>,
    pub first_token_ms_p95: Option<f64>,
    pub turn_ms_p50: f64,
    pub turn_ms_p95: f64,
    pub cases: Vec<CaseOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswersReport {
    pub data: String,
    pub knowledge: String,
    pub questions: usize,
    pub writers: Vec<WriterReport>,
    pub seconds: f64,
}

pub async fn run(settings: &Settings, args: AnswersArgs) -> Result<(), EvalError> {
    let questions_path = resolve_data(settings, &args.questions)?;
    let questions = load_questions(&questions_path)?;
    let started = Instant::now();
    let mut writers = Vec::new();
    let mut extractive = settings.clone();
    extractive.answer.writer = AnswerWriterKind::Extractive;
    writers.push(evaluate(&extractive, &questions).await?);
    let llm = match (&args.llm_url, settings.answer.writer) {
        (Some(url), _) => {
            let mut llm = settings.clone();
            llm.answer.writer = AnswerWriterKind::Llm;
            llm.answer.llm.base_url = url.clone();
            Some(llm)
        }
        (None, AnswerWriterKind::Llm) => Some(settings.clone()),
        (None, AnswerWriterKind::Extractive) => None,
    };
    if let Some(llm) = llm {
        writers.push(evaluate(&llm, &questions).await?);
    }
    let report = AnswersReport {
        data: questions_path.display().to_string(),
        knowledge: settings.paths.knowledge.display().to_string(),
        questions: questions.len(),
        writers,
        seconds: started.elapsed().as_secs_f64(),
    };
    print_summary(&report);
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    if let Some(html) = &args.html {
        report::write_html(html, &page(&report))?;
    }
    Ok(())
}

/// Every question in a file, or in every *.yaml / *.yml of a folder (sorted by name).
pub fn load_questions(path: &Path) -> Result<Vec<Question>, EvalError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| EvalError::data(path, None, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut questions = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| EvalError::data(&file, None, e.to_string()))?;
        let parsed: Vec<Question> = serde_yaml::from_str(&text)
            .map_err(|e| EvalError::data(&file, e.location().map(|l| l.line()), e.to_string()))?;
        for (index, question) in parsed.iter().enumerate() {
            let problem = if question.ask.trim().is_empty() {
                Some("`ask` is empty")
            } else if question.covered && question.facts.is_empty() {
                Some("a covered question needs `facts`")
            } else if !question.covered
                && (!question.facts.is_empty() || !question.sources.is_empty())
            {
                Some("an uncovered question has no `facts` or `sources`")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(EvalError::data(
                    &file,
                    None,
                    format!("question {} ({:?}): {problem}", index + 1, question.ask),
                ));
            }
        }
        questions.extend(parsed);
    }
    if questions.is_empty() {
        return Err(EvalError::data(path, None, "no questions"));
    }
    Ok(questions)
}

/// Ask every question with the writer `settings` configure, in a scratch data directory.
pub async fn evaluate(
    settings: &Settings,
    questions: &[Question],
) -> Result<WriterReport, EvalError> {
    let scratch = tempfile::tempdir().map_err(EvalError::pipeline)?;
    let mut settings = settings.clone();
    settings.paths.data = scratch.path().join("data");
    settings.database.url = None;
    let passages = match settings.answer.writer {
        AnswerWriterKind::Extractive => 1,
        AnswerWriterKind::Llm => settings.answer.llm.passages,
    };
    let state = AppState::build_with(settings, None)
        .await
        .map_err(EvalError::pipeline)?;
    let engine = &state.engine;
    let bar = progress_bar(questions.len() as u64, "questions");
    let mut cases = Vec::with_capacity(questions.len());
    for question in questions {
        let conversation = engine
            .create_conversation()
            .await
            .map_err(EvalError::pipeline)?;
        let started = Instant::now();
        let (deltas, mut written) = tokio::sync::mpsc::unbounded_channel::<String>();
        let turn = async {
            let deltas = deltas;
            engine
                .handle_customer_message_streaming(
                    &conversation.id,
                    &question.ask,
                    None,
                    Some(&deltas),
                )
                .await
        };
        let collect = async {
            let mut first = None;
            let mut raw = String::new();
            while let Some(delta) = written.recv().await {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
                raw.push_str(&delta);
            }
            (first, raw)
        };
        let (result, (first_token_ms, raw)) = tokio::join!(turn, collect);
        let turn_ms = started.elapsed().as_secs_f64() * 1000.0;
        let result = result.map_err(EvalError::pipeline)?;
        let reply = result.reply.as_ref();
        let text = reply.map(|r| r.text.clone()).unwrap_or_default();
        let sources: Vec<String> = reply
            .map(|r| {
                r.sources
                    .iter()
                    .map(|s| {
                        let place = s.url.clone().or_else(|| s.path.clone()).unwrap_or_default();
                        format!("{} ({place})", s.title)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let answered = result.decision == DecisionKind::Answer;
        let lower = text.to_lowercase();
        let fact_found = answered
            && question
                .facts
                .iter()
                .any(|fact| lower.contains(&fact.to_lowercase()));
        let source_cited = answered
            && question.sources.iter().any(|wanted| {
                let wanted = wanted.to_lowercase();
                sources.iter().any(|s| s.to_lowercase().contains(&wanted))
            });
        cases.push(CaseOutcome {
            ask: question.ask.clone(),
            covered: question.covered,
            decision: result.decision,
            reasons: result.reasons.clone(),
            text,
            sources,
            fact_found,
            source_cited,
            raw: (passages > 1 || first_token_ms.is_some()).then_some(raw),
            passages_given: result.understanding.knowledge.len().min(passages),
            first_token_ms,
            turn_ms,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let writer = match state.settings.answer.writer {
        AnswerWriterKind::Extractive => "extractive".to_string(),
        AnswerWriterKind::Llm => format!("llm:{}", state.settings.answer.llm.model),
    };
    drop(state);
    Ok(score(writer, cases))
}

/// The figures of one writer from its outcomes.
pub fn score(writer: String, cases: Vec<CaseOutcome>) -> WriterReport {
    let share = |hits: usize, of: usize| {
        if of == 0 {
            0.0
        } else {
            hits as f64 / of as f64
        }
    };
    let covered: Vec<&CaseOutcome> = cases.iter().filter(|c| c.covered).collect();
    let uncovered: Vec<&CaseOutcome> = cases.iter().filter(|c| !c.covered).collect();
    let answered = |c: &CaseOutcome| c.decision == DecisionKind::Answer;
    let (mut valid, mut written) = (0usize, 0usize);
    for case in &cases {
        if let Some(raw) = &case.raw {
            for number in citation_numbers(raw) {
                written += 1;
                if (1..=case.passages_given).contains(&number) {
                    valid += 1;
                }
            }
        }
    }
    let mut first_tokens: Vec<f64> = cases.iter().filter_map(|c| c.first_token_ms).collect();
    let mut turns: Vec<f64> = cases.iter().map(|c| c.turn_ms).collect();
    WriterReport {
        writer,
        answered_covered: share(
            covered.iter().filter(|c| answered(c)).count(),
            covered.len(),
        ),
        fact_found: share(
            covered.iter().filter(|c| c.fact_found).count(),
            covered.len(),
        ),
        source_cited: share(
            covered.iter().filter(|c| c.source_cited).count(),
            covered.len(),
        ),
        declined_uncovered: share(
            uncovered.iter().filter(|c| !answered(c)).count(),
            uncovered.len(),
        ),
        citation_validity: (written > 0).then(|| share(valid, written)),
        fallbacks: cases
            .iter()
            .filter(|c| c.reasons.contains(&Reason::LlmUnavailable))
            .count(),
        first_token_ms_p50: quantile(&mut first_tokens, 0.5),
        first_token_ms_p95: quantile(&mut first_tokens, 0.95),
        turn_ms_p50: quantile(&mut turns, 0.5).unwrap_or_default(),
        turn_ms_p95: quantile(&mut turns, 0.95).unwrap_or_default(),
        cases,
    }
}

/// The sample at quantile `q` (nearest rank); None without samples.
fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}

fn print_summary(report: &AnswersReport) {
    println!(
        "answers: {} questions from {} (knowledge {})",
        report.questions, report.data, report.knowledge
    );
    println!(
        "{:<22} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>12} {:>10}",
        "writer",
        "answered",
        "fact",
        "source",
        "declined",
        "cit.valid",
        "fallbacks",
        "first tok p50",
        "turn p50"
    );
    for writer in &report.writers {
        println!(
            "{:<22} {:>8.1}% {:>6.1}% {:>6.1}% {:>8.1}% {:>9} {:>9} {:>13} {:>7.0} ms",
            writer.writer,
            writer.answered_covered * 100.0,
            writer.fact_found * 100.0,
            writer.source_cited * 100.0,
            writer.declined_uncovered * 100.0,
            writer
                .citation_validity
                .map(|v| format!("{:.1}%", v * 100.0))
                .unwrap_or_else(|| "-".into()),
            writer.fallbacks,
            writer
                .first_token_ms_p50
                .map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| "-".into()),
            writer.turn_ms_p50,
        );
    }
    println!("({:.1} s)", report.seconds);
}

/// The HTML page: the figures per writer, then every question side by side.
pub fn page(report: &AnswersReport) -> String {
    let mut body = String::new();
    for writer in &report.writers {
        let cards = [
            report::card(
                "fact in the answer",
                &report::pct(writer.fact_found),
                "covered questions",
            ),
            report::card(
                "source cited",
                &report::pct(writer.source_cited),
                "covered questions",
            ),
            report::card(
                "answered",
                &report::pct(writer.answered_covered),
                "covered questions",
            ),
            report::card(
                "not answered",
                &report::pct(writer.declined_uncovered),
                "questions the help centre does not cover",
            ),
            report::card(
                "valid citations",
                &writer
                    .citation_validity
                    .map(report::pct)
                    .unwrap_or_else(|| "-".into()),
                "of those the model wrote",
            ),
            report::card(
                "first token p50",
                &writer
                    .first_token_ms_p50
                    .map(|v| format!("{v:.0} ms"))
                    .unwrap_or_else(|| "-".into()),
                &format!(
                    "turn p50 {:.0} ms, p95 {:.0} ms",
                    writer.turn_ms_p50, writer.turn_ms_p95
                ),
            ),
        ];
        let _ = write!(body, "<h2>{}</h2>", report::escape(&writer.writer));
        report::section_cards(&mut body, &cards);
    }
    body.push_str("<section><h2>Questions</h2><table><tr><th>question</th>");
    for writer in &report.writers {
        let _ = write!(body, "<th>{}</th>", report::escape(&writer.writer));
    }
    body.push_str("</tr>");
    for (index, first) in report
        .writers
        .first()
        .map(|w| &w.cases)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let _ = write!(
            body,
            "<tr><td>{}{}</td>",
            report::escape(&first.ask),
            if first.covered {
                ""
            } else {
                " <em>(not covered)</em>"
            }
        );
        for writer in &report.writers {
            let case = &writer.cases[index];
            let verdict = match (case.covered, case.decision) {
                (true, _) if case.fact_found => "✓ fact",
                (true, DecisionKind::Answer) => "✗ no fact",
                (true, _) => "✗ not answered",
                (false, DecisionKind::Answer) => "✗ answered",
                (false, _) => "✓ not answered",
            };
            let reasons: Vec<&str> = case.reasons.iter().map(|r| r.as_str()).collect();
            let _ = write!(
                body,
                "<td><b>{}</b> · {} · {}<br>{}<br><small>{}</small></td>",
                verdict,
                case.decision.as_str(),
                reasons.join(", "),
                report::escape(&case.text),
                report::escape(&case.sources.join("; "))
            );
        }
        body.push_str("</tr>");
    }
    body.push_str("</table></section>");
    report::page(
        "Answers",
        &format!("{} questions from {}", report.questions, report.data),
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(covered: bool, decision: DecisionKind, fact: bool, raw: Option<&str>) -> CaseOutcome {
        CaseOutcome {
            ask: "q".into(),
            covered,
            decision,
            reasons: vec![],
            text: String::new(),
            sources: vec![],
            fact_found: fact,
            source_cited: fact,
            raw: raw.map(String::from),
            passages_given: 2,
            first_token_ms: raw.map(|_| 100.0),
            turn_ms: 200.0,
        }
    }

    #[test]
    fn figures_count_covered_and_uncovered_questions_apart() {
        let report = score(
            "llm:test".into(),
            vec![
                case(true, DecisionKind::Answer, true, Some("A [1] and [3].")),
                case(true, DecisionKind::Answer, false, Some("B [2].")),
                case(true, DecisionKind::Handoff, false, None),
                case(false, DecisionKind::Handoff, false, None),
                case(false, DecisionKind::Answer, false, Some("C")),
            ],
        );
        assert!((report.answered_covered - 2.0 / 3.0).abs() < 1e-9);
        assert!((report.fact_found - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.declined_uncovered, 0.5);
        assert_eq!(report.citation_validity, Some(2.0 / 3.0));
        assert_eq!(report.first_token_ms_p50, Some(100.0));
    }

    #[test]
    fn the_shipped_questions_load_and_bad_ones_are_named() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("evals/answers");
        let questions = load_questions(&shipped).unwrap();
        assert!(questions.iter().any(|q| !q.covered));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "- ask: \"what?\"\n").unwrap();
        let err = load_questions(&file).unwrap_err().to_string();
        assert!(err.contains("needs `facts`"), "{err}");
        std::fs::write(&file, "- ask: \"what?\"\n  fact: [x]\n").unwrap();
        let err = load_questions(&file).unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
    }
}
