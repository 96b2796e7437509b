//! Answers written by a chat model on any OpenAI-compatible server (llama.cpp's llama-server,
//! vLLM, a hosted API), through async-openai, streamed. The model sees the top chunks as numbered
//! passages and the recent conversation, with personal data masked; what it writes is judged by
//! [`grounding::judge`]. Anything that goes wrong (refused connection, timeout, a broken stream,
//! an empty reply) is an [`AnswerError::Unavailable`] the engine answers extractively instead,
//! and a circuit breaker stops calling a server that keeps failing.

use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest,
};
use async_openai::Client;
use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedSender;

use crate::bot::answer::grounding::{self, showable_prefix};
use crate::bot::answer::prompt::{AnswerPrompt, PromptTurns};
use crate::bot::answer::{Answer, AnswerError, AnswerRequest, AnswerWriter, Assist};
use crate::config::LlmSettings;
use crate::knowledge::retrieval::KnowledgeHit;
use crate::metrics::Metrics;
use crate::privacy::Masker;

pub struct LlmAnswerWriter {
    client: Client<OpenAIConfig>,
    settings: LlmSettings,
    prompt: AnswerPrompt,
    masker: Masker,
    breaker: Breaker,
    metrics: Metrics,
    name: String,
}

impl LlmAnswerWriter {
    /// The API key is read from the environment variable `settings.api_key_env` names, here and
    /// nowhere else; it is never logged.
    pub fn new(
        settings: &LlmSettings,
        prompt: AnswerPrompt,
        masker: Masker,
        metrics: Metrics,
    ) -> Self {
        let mut config = OpenAIConfig::new().with_api_base(settings.base_url.trim_end_matches('/'));
        if let Some(key) = std::env::var(&settings.api_key_env)
            .ok()
            .filter(|key| !key.is_empty())
        {
            config = config.with_api_key(key);
        }
        // Without async-openai's default retry layer (three retries of a refused connection,
        // 0.7 s of back-off per message): the timeout and the breaker decide instead.
        let transport = async_openai::middleware::ReqwestService::new(openai_http::Client::new());
        Self {
            client: Client::with_config(config).with_http_service(transport),
            settings: settings.clone(),
            prompt,
            masker,
            breaker: Breaker::new(
                settings.breaker_failures,
                Duration::from_secs(settings.breaker_cooldown_secs),
            ),
            metrics,
            name: format!("llm:{}", settings.model),
        }
    }

    /// The messages sent for one question: customer text masked (it is masked before storage
    /// already; this keeps the promise even for text that came another way). Knowledge passages
    /// are the business's own published text and go as they are.
    pub fn messages(&self, request: &AnswerRequest<'_>) -> Vec<ChatCompletionRequestMessage> {
        let passages = grounding::passages(request.hits, self.settings.passages);
        let conversation = self.conversation(request.history, self.settings.history_turns);
        let question = self.masker.mask(request.question).text;
        chat_messages(
            self.prompt
                .answer_turns(&passages, &conversation, &question),
        )
    }

    /// The last `turns` turns as `role: text` lines, masked; "(none)" when there are none.
    fn conversation(&self, history: &[(String, String)], turns: usize) -> String {
        let recent = history.len().saturating_sub(turns);
        let lines: Vec<String> = history[recent..]
            .iter()
            .map(|(role, text)| format!("{role}: {}", self.masker.mask(text).text))
            .collect();
        if lines.is_empty() {
            "(none)".to_string()
        } else {
            lines.join("\n")
        }
    }

    /// One completion, streamed, within `timeout`, behind the circuit breaker, counted in
    /// `baton_llm_requests_total{task, outcome}` (outcomes other than failures are counted by
    /// the caller, who judges the text). What may be shown goes to `deltas` as it comes; nothing
    /// is shown while the text could still be `hold_back` (the decline marker).
    async fn complete(
        &self,
        task: &'static str,
        messages: Vec<ChatCompletionRequestMessage>,
        max_tokens: u32,
        timeout: Duration,
        deltas: Option<&UnboundedSender<String>>,
        hold_back: &str,
    ) -> Result<String, AnswerError> {
        let result = if !self.breaker.allows() {
            Err(unavailable(
                "circuit_open",
                "the LLM failed repeatedly; not called until the cool-down ends",
            ))
        } else {
            let streamed = self.stream_reply(messages, max_tokens, deltas, hold_back);
            let result = match tokio::time::timeout(timeout, streamed).await {
                Ok(result) => result,
                Err(_) => Err(unavailable(
                    "timeout",
                    format!("no complete reply within {} ms", timeout.as_millis()),
                )),
            };
            let result = result.and_then(|reply| {
                if reply.trim().is_empty() {
                    Err(unavailable("empty", "the model returned no text"))
                } else {
                    Ok(reply)
                }
            });
            self.breaker.record(result.is_ok());
            result
        };
        if let Err(AnswerError::Unavailable { cause, .. }) = &result {
            self.count(task, cause);
        }
        result
    }

    fn count(&self, task: &str, outcome: &str) {
        self.metrics
            .llm_requests
            .with_label_values(&[task, outcome])
            .inc();
    }

    /// The model's whole reply, forwarding what may be shown to `deltas` as it comes.
    async fn stream_reply(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
        max_tokens: u32,
        deltas: Option<&UnboundedSender<String>>,
        hold_back: &str,
    ) -> Result<String, AnswerError> {
        #[allow(deprecated)] // `max_tokens` is what every OpenAI-compatible server understands
        let body = CreateChatCompletionRequest {
            model: self.settings.model.clone(),
            messages,
            max_tokens: Some(max_tokens),
            temperature: Some(self.settings.temperature),
            ..Default::default()
        };
        let started = Instant::now();
        let mut stream = self
            .client
            .chat()
            .create_stream(body)
            .await
            .map_err(|e| unavailable("error", e))?;
        let mut reply = String::new();
        let mut shown = 0usize;
        let mut first_token = true;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| unavailable("error", e))?;
            for choice in chunk.choices {
                let Some(content) = choice.delta.content else {
                    continue;
                };
                if first_token && !content.is_empty() {
                    first_token = false;
                    self.metrics
                        .llm_first_token
                        .observe(started.elapsed().as_secs_f64());
                }
                reply.push_str(&content);
                if let Some(deltas) = deltas {
                    if showable_prefix(&reply, hold_back) && shown < reply.len() {
                        // The customer may have gone: the answer is still stored and sent.
                        let _ = deltas.send(reply[shown..].to_string());
                        shown = reply.len();
                    }
                }
            }
        }
        Ok(reply)
    }
}

fn chat_messages(turns: PromptTurns) -> Vec<ChatCompletionRequestMessage> {
    let mut messages: Vec<ChatCompletionRequestMessage> =
        vec![ChatCompletionRequestSystemMessage::from(turns.system).into()];
    for (example_user, example_answer) in turns.examples {
        messages.push(ChatCompletionRequestUserMessage::from(example_user).into());
        messages.push(ChatCompletionRequestAssistantMessage::from(example_answer).into());
    }
    messages.push(ChatCompletionRequestUserMessage::from(turns.user).into());
    messages
}

/// Turns of the conversation the agent's assistant reads.
const ASSIST_TURNS: usize = 12;
/// Two short sentences.
const SUMMARY_MAX_TOKENS: u32 = 80;
/// Words of four letters or more that carry no topic of their own.
const FUNCTION_WORDS: &[&str] = &[
    "what", "about", "that", "this", "those", "these", "them", "then", "there", "with", "from",
    "have", "does", "your", "also", "which", "when", "will", "would", "could", "should", "into",
    "they", "ones", "more", "just", "like", "still", "some",
];
/// Follow-up rewrites are short: a question, not an answer.
const REWRITE_MAX_TOKENS: u32 = 48;
/// A rewrite is on the path of every follow-up before retrieval: it gets a fraction of the
/// answer's time.
const REWRITE_TIMEOUT_SHARE: u64 = 4;

fn unavailable(cause: &'static str, error: impl std::fmt::Display) -> AnswerError {
    AnswerError::Unavailable {
        cause,
        detail: error.to_string(),
    }
}

#[async_trait]
impl AnswerWriter for LlmAnswerWriter {
    async fn write(&self, request: AnswerRequest<'_>) -> Result<Answer, AnswerError> {
        if request.hits.is_empty() {
            return Err(AnswerError::NoKnowledge);
        }
        let reply = self
            .complete(
                "answer",
                self.messages(&request),
                self.settings.max_tokens,
                Duration::from_millis(self.settings.timeout_ms),
                request.deltas,
                &self.prompt.decline_marker,
            )
            .await?;
        let given = request.hits.len().min(self.settings.passages);
        let answer = match grounding::judge(&reply, given, &self.prompt.decline_marker) {
            Answer::Written { text, cited } => {
                let cited_texts: Vec<&str> = cited
                    .iter()
                    .filter_map(|&index| request.hits.get(index))
                    .map(|hit| hit.chunk.text.as_str())
                    .collect();
                let invented =
                    grounding::unsupported_numbers(&text, &cited_texts, request.question);
                if invented.is_empty() {
                    Answer::Written { text, cited }
                } else {
                    Answer::Declined {
                        why: format!("unsupported_number: {}", invented.join(", ")),
                    }
                }
            }
            declined => declined,
        };
        let outcome = match &answer {
            Answer::Written { .. } => "answered",
            Answer::Declined { why } => {
                tracing::debug!(why, reply = %reply, "the LLM's reply is not an answer");
                "declined"
            }
        };
        self.count("answer", outcome);
        Ok(answer)
    }

    async fn assist(
        &self,
        hits: &[KnowledgeHit],
        transcript: &[(String, String)],
    ) -> Option<Result<Assist, AnswerError>> {
        if self.prompt.draft.is_none() && self.prompt.summary.is_none() {
            return None;
        }
        let conversation = self.conversation(transcript, ASSIST_TURNS);
        let passages = grounding::passages(hits, self.settings.passages);
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let summary = async {
            let task = self.prompt.summary.as_ref()?;
            let messages = chat_messages(task.turns(&[], &[("conversation", &conversation)]));
            let result = self
                .complete("summary", messages, SUMMARY_MAX_TOKENS, timeout, None, "")
                .await
                .map(|text| text.trim().to_string());
            if result.is_ok() {
                self.count("summary", "answered");
            }
            Some(result)
        };
        let draft = async {
            let task = self.prompt.draft.as_ref()?;
            let messages = chat_messages(task.turns(
                &[],
                &[("passages", &passages), ("conversation", &conversation)],
            ));
            let result = self
                .complete(
                    "draft",
                    messages,
                    self.settings.max_tokens,
                    timeout,
                    None,
                    "",
                )
                .await
                .map(|text| {
                    // An agent edits the draft, so citing nothing is allowed; citing a passage
                    // that was not given is not.
                    let given = hits.len().min(self.settings.passages);
                    grounding::keep_valid_citations(text.trim(), given)
                });
            if result.is_ok() {
                self.count("draft", "answered");
            }
            Some(result)
        };
        let (summary, draft) = tokio::join!(summary, draft);
        let failure = summary
            .as_ref()
            .and_then(|r| r.as_ref().err())
            .or_else(|| draft.as_ref().and_then(|r| r.as_ref().err()))
            .map(|e| e.to_string());
        let assist = Assist {
            summary: summary.and_then(Result::ok),
            draft: draft.and_then(Result::ok),
        };
        match (assist.summary.is_none() && assist.draft.is_none(), failure) {
            (true, Some(failure)) => Some(Err(AnswerError::Unavailable {
                cause: "error",
                detail: failure,
            })),
            _ => Some(Ok(assist)),
        }
    }

    async fn rewrite_follow_up(&self, previous: &str, follow_up: &str) -> Option<String> {
        let task = self.prompt.rewrite.as_ref()?;
        let previous = self.masker.mask(previous).text;
        let follow_up = self.masker.mask(follow_up).text;
        let messages =
            chat_messages(task.turns(&[], &[("previous", &previous), ("follow_up", &follow_up)]));
        let timeout = Duration::from_millis(self.settings.timeout_ms / REWRITE_TIMEOUT_SHARE);
        let reply = self
            .complete("rewrite", messages, REWRITE_MAX_TOKENS, timeout, None, "")
            .await
            .ok()?;
        let rewritten = usable_rewrite(&reply, &previous, &follow_up, &self.prompt.decline_marker);
        let usable = rewritten.is_some();
        self.count("rewrite", if usable { "answered" } else { "declined" });
        rewritten
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The model's rewrite of a follow-up, if it is one: a single line, not much longer than the two
/// messages, not a decline, and keeping one of the follow-up's content words ("cancel" in "and
/// can I cancel it?"); a model that merely repeats the earlier question loses what was asked.
fn usable_rewrite(
    reply: &str,
    previous: &str,
    follow_up: &str,
    decline_marker: &str,
) -> Option<String> {
    let rewritten = reply.trim().lines().next().unwrap_or_default().trim();
    let lower = rewritten.to_lowercase();
    let follow_up_lower = follow_up.to_lowercase();
    let content_words: Vec<&str> = follow_up_lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 4 && !FUNCTION_WORDS.contains(word))
        .collect();
    let keeps_the_follow_up =
        content_words.is_empty() || content_words.iter().any(|word| lower.contains(word));
    let usable = !rewritten.is_empty()
        && keeps_the_follow_up
        && rewritten.chars().count() <= 2 * (previous.chars().count() + follow_up.chars().count())
        && !lower.contains(&decline_marker.to_lowercase());
    usable.then(|| rewritten.to_string())
}

/// Counts failures in a row; after `threshold` of them, refuses calls for `cooldown`, then lets
/// one trial call through (a success closes it, a failure opens it for another `cooldown`).
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures_in_a_row: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// Whether a call may go. Once the cool-down is over, the first caller gets the trial and
    /// the circuit stays open for everyone else until that call is recorded.
    fn allows(&self) -> bool {
        let mut state = self.state.lock();
        match state.open_until {
            None => true,
            Some(until) if Instant::now() >= until => {
                state.open_until = Some(Instant::now() + self.cooldown);
                true
            }
            Some(_) => false,
        }
    }

    fn record(&self, success: bool) {
        let mut state = self.state.lock();
        if success {
            *state = BreakerState::default();
            return;
        }
        state.failures_in_a_row += 1;
        if self.threshold > 0 && state.failures_in_a_row >= self.threshold {
            state.open_until = Some(Instant::now() + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_a_success_closes_it() {
        let breaker = Breaker::new(2, Duration::from_millis(40));
        assert!(breaker.allows());
        breaker.record(false);
        assert!(breaker.allows(), "one failure is not enough");
        breaker.record(true);
        breaker.record(false);
        assert!(breaker.allows(), "a success in between resets the count");
        breaker.record(false);
        assert!(!breaker.allows(), "two in a row open it");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allows(), "after the cool-down one call may try");
        assert!(!breaker.allows(), "and only one, while it is out");
        breaker.record(false);
        assert!(!breaker.allows(), "and a failed trial opens it again");
    }

    #[test]
    fn a_rewrite_that_drops_what_the_follow_up_asks_is_not_used() {
        let previous = "how long does a sensor battery last?";
        let rewrite =
            |reply: &str, follow_up: &str| usable_rewrite(reply, previous, follow_up, "NO_ANSWER");
        assert_eq!(
            rewrite(
                "Can I use rechargeable batteries in the sensor?\nMore text",
                "can I use rechargeable ones?"
            ),
            Some("Can I use rechargeable batteries in the sensor?".into())
        );
        assert_eq!(
            rewrite(
                "How long does a sensor battery last?",
                "and can I cancel it?"
            ),
            None
        );
        assert_eq!(rewrite("NO_ANSWER", "and then?"), None);
        assert_eq!(rewrite(&"very long ".repeat(40), "and then?"), None);
        assert_eq!(
            rewrite(
                "How long does the thermostat battery last?",
                "and that one?"
            ),
            Some("How long does the thermostat battery last?".into())
        );
    }

    #[test]
    fn customer_text_is_masked_before_it_goes_to_the_model() {
        let prompt =
            AnswerPrompt::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts"))
                .unwrap();
        let writer = LlmAnswerWriter::new(
            &LlmSettings::default(),
            prompt,
            Masker::new(Default::default()),
            Metrics::new(),
        );
        let history = vec![(
            "customer".to_string(),
            "mail me at ana@example.com".to_string(),
        )];
        let request = AnswerRequest {
            question: "my card 4111 1111 1111 1111 was charged twice",
            hits: &[],
            history: &history,
            deltas: None,
        };
        let sent = serde_json::to_string(&writer.messages(&request)).unwrap();
        assert!(!sent.contains("4111 1111 1111 1111"), "{sent}");
        assert!(!sent.contains("ana@example.com"), "{sent}");
        assert!(sent.contains("was charged twice"), "{sent}");
    }
}
