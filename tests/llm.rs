//! LLM answers end to end, on a real OpenAI-compatible server (llama.cpp's llama-server with
//! SmolLM2-135M, installed by `make llm`): citations checked and mapped to sources, streaming over
//! the customer WebSocket, a decline that hands off, a timeout and a server killed mid-stream that
//! fall back to the extractive answer with nothing lost, and the circuit breaker.
//!
//! A 135M model answers badly, so most tests give it a prompt it follows reliably ("repeat this
//! text"), with the citations in the customer's message: what is tested is Baton's plumbing and
//! rules, on the real HTTP/SSE path. The shipped prompt gets one test of its own, and the quality
//! of answers is the evaluation's business.

mod common;

use std::path::Path;

use baton::config::{AnswerWriterKind, Settings};
use common::app::{repo, spawn_with, test_settings, TestApp};
use common::human::human_side;
use common::llm::LlamaServer;
use common::ws::WsClient;
use serde_json::Value;

/// A question the demo knowledge answers with `knowledge_match`.
const QUESTION: &str = "my thermostat won't connect to the wifi anymore";

/// A 135M model copies a worked example far more reliably than it follows instructions: the
/// tests' prompts show one answer and ask for the same again.
const SAME_AGAIN: &str = "You always give the same answer.";

/// Writes a prompts folder: the shipped replies, and an answer prompt whose worked examples all
/// answer `example_answer` (three of them: with one, the model's choice still wavers).
fn write_prompts(dir: &Path, example_answer: &str) {
    std::fs::copy(
        repo().join("prompts/replies.toml"),
        dir.join("replies.toml"),
    )
    .unwrap();
    // Rust's debug quoting of ASCII text is a valid TOML basic string.
    let mut answer = format!(
        "system = {SAME_AGAIN:?}\ndecline_marker = \"NO_ANSWER\"\nuser = \"Question: {{question}}\"\n"
    );
    for question in [
        "my device is offline",
        "the app says my sensor is disconnected",
        "my hub lost its connection",
    ] {
        answer.push_str(&format!(
            "[[example]]\nquestion = {question:?}\nanswer = {example_answer:?}\n"
        ));
    }
    // Follow-ups are rewritten as a password question, whatever they say.
    answer.push_str(&format!(
        "[rewrite]\nsystem = {SAME_AGAIN:?}\nuser = \"Follow-up: {{follow_up}}\"\n"
    ));
    for follow_up in ["and that one?", "what about those?", "and then?"] {
        answer.push_str(&format!(
            "[[rewrite.example]]\nfollow_up = {follow_up:?}\nanswer = {REWRITTEN:?}\n"
        ));
    }
    // The agent's assistant drafts and summarises the same way.
    for (task, example) in [("draft", DRAFT), ("summary", SUMMARY)] {
        answer.push_str(&format!(
            "[{task}]\nsystem = {SAME_AGAIN:?}\nuser = \"Conversation: {{conversation}}\"\n"
        ));
        // Shaped like a real handoff (the customer, the bot's handoff reply, system lines).
        for conversation in [
            "customer: my device is offline\nbot: I'm connecting you with our team.\n\
             system: Tom from our team has joined the conversation.",
            "customer: I need a human\nbot: Of course, connecting you now.\n\
             system: Nobody is available right now.\n\
             system: Ana from our team has joined the conversation.",
            "customer: can I talk to someone\nbot: One moment please.\n\
             system: Sam from our team has joined the conversation.",
        ] {
            answer.push_str(&format!(
                "[[{task}.example]]\nconversation = {conversation:?}\nanswer = {example:?}\n"
            ));
        }
    }
    std::fs::write(dir.join("answer.toml"), answer).unwrap();
}

/// What the tests' assistant prompts draft and summarise, whatever the conversation.
const DRAFT: &str = "Please restart the thermostat and your router [1] [9].";
const SUMMARY: &str = "The customer wants a person.";

/// What the tests' rewrite prompt turns every follow-up into.
const REWRITTEN: &str = "How do I reset my password?";

struct LlmApp {
    app: TestApp,
    _prompts: Option<tempfile::TempDir>,
}

/// A Baton server answering through the LLM at `base_url`, with a worked example answering
/// `example_answer` (None: the shipped prompt).
async fn llm_app(
    base_url: &str,
    example_answer: Option<&str>,
    tweak: impl FnOnce(&mut Settings),
) -> LlmApp {
    let data = tempfile::tempdir().unwrap();
    let mut settings = test_settings(data.path());
    let prompts = example_answer.map(|answer| {
        let prompts = tempfile::tempdir().unwrap();
        write_prompts(prompts.path(), answer);
        settings.paths.prompts = prompts.path().to_path_buf();
        prompts
    });
    settings.answer.writer = AnswerWriterKind::Llm;
    settings.answer.llm.base_url = base_url.to_string();
    settings.answer.llm.temperature = 0.0;
    settings.answer.llm.max_tokens = 80;
    // Generous: the tests share two cores with other servers; the timeout has its own test.
    settings.answer.llm.timeout_ms = 60_000;
    tweak(&mut settings);
    let mut app = spawn_with(settings).await;
    app.own_dir(data);
    LlmApp {
        app,
        _prompts: prompts,
    }
}

fn reasons(body: &Value) -> Vec<&str> {
    body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

fn llm_outcomes(app: &TestApp, outcome: &str) -> u64 {
    task_outcomes(app, "answer", outcome)
}

fn task_outcomes(app: &TestApp, task: &str, outcome: &str) -> u64 {
    app.state
        .metrics
        .llm_requests
        .with_label_values(&[task, outcome])
        .get()
}

#[tokio::test]
async fn an_llm_answer_cites_passages_that_map_to_sources_and_streams_over_the_websocket() {
    let Some(llm) = LlamaServer::start().await else {
        return;
    };
    let LlmApp { app, _prompts } = llm_app(
        &llm.base_url,
        Some("Restart the thermostat and your router [2]. Check the Wi-Fi password [7]."),
        |_| {},
    )
    .await;

    // Over HTTP: [2] is the second passage, [7] was never given.
    let (id, token) = app.conversation().await;
    let (status, body) = app.say(&id, &token, QUESTION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "answer", "{body}");
    assert_eq!(reasons(&body), vec!["knowledge_match"], "{body}");
    let text = body["reply"]["text"].as_str().unwrap();
    assert!(text.contains("[2]"), "{text}");
    assert!(!text.contains("[7]"), "an invented citation stays: {text}");
    let sources = body["reply"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{body}");
    let second = &body["understanding"]["knowledge"][1];
    assert_eq!(
        sources[0]["score"], second["score"],
        "[2] is the second chunk: {body}"
    );
    assert_eq!(llm_outcomes(&app, "answered"), 1);

    // Over the WebSocket: the draft arrives as delta frames, then the stored reply.
    let (id, token) = app.conversation().await;
    let mut customer =
        WsClient::connect(&app.address, &format!("/v1/conversations/{id}/ws"), &token).await;
    customer.until_type("hello").await;
    customer
        .send(serde_json::json!({ "type": "message", "text": QUESTION }))
        .await;
    let mut draft = String::new();
    let mut delta_frames = 0;
    let reply = loop {
        let frame = customer.next().await.expect("a frame before the reply");
        match frame["type"].as_str() {
            Some("delta") => {
                delta_frames += 1;
                draft.push_str(frame["text"].as_str().unwrap());
            }
            Some("message") if frame["message"]["role"] == "bot" => break frame,
            _ => {}
        }
    };
    let final_text = reply["message"]["text"].as_str().unwrap();
    assert!(delta_frames >= 2, "streamed in pieces, got {delta_frames}");
    // The draft is what the model wrote; the stored reply is what was checked.
    assert!(draft.contains("[2]") && draft.contains("[7]"), "{draft}");
    assert!(
        final_text.contains("[2]") && !final_text.contains("[7]"),
        "{final_text}"
    );
    customer.close().await;
    app.stop().await;
}

#[tokio::test]
async fn an_answer_citing_no_passage_is_a_handoff_not_an_invention() {
    let Some(llm) = LlamaServer::start().await else {
        return;
    };
    let LlmApp { app, _prompts } = llm_app(
        &llm.base_url,
        Some("Restart the thermostat and your router. Check the Wi-Fi password."),
        |_| {},
    )
    .await;
    let (id, token) = app.conversation().await;
    let (status, body) = app.say(&id, &token, QUESTION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "handoff", "{body}");
    assert_eq!(reasons(&body), vec!["llm_declined"], "{body}");
    assert_eq!(body["conversation_state"], "queued", "{body}");
    assert!(body["reply"]["sources"].as_array().unwrap().is_empty());
    assert_eq!(llm_outcomes(&app, "declined"), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_shipped_prompt_gives_a_cited_answer_or_hands_off() {
    let Some(llm) = LlamaServer::start().await else {
        return;
    };
    let LlmApp { app, _prompts } = llm_app(&llm.base_url, None, |_| {}).await;
    let questions = [
        QUESTION,
        "how do I reset my password?",
        "can I return the thermostat?",
    ];
    for question in questions {
        let (id, token) = app.conversation().await;
        let (status, body) = app.say(&id, &token, question).await;
        assert_eq!(status, 200, "{body}");
        eprintln!(
            "{question:?} -> {} {:?}: {}",
            body["decision"],
            reasons(&body),
            body["reply"]["text"]
        );
        match body["decision"].as_str() {
            Some("answer") => {
                assert!(reasons(&body).contains(&"knowledge_match"), "{body}");
                let scores: Vec<&Value> = body["understanding"]["knowledge"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| &k["score"])
                    .collect();
                let sources = body["reply"]["sources"].as_array().unwrap();
                assert!(!sources.is_empty(), "{body}");
                assert!(
                    sources.iter().all(|s| scores.contains(&&s["score"])),
                    "{body}"
                );
                assert!(
                    body["reply"]["text"].as_str().unwrap().contains('['),
                    "{body}"
                );
            }
            Some("handoff") => {
                assert_eq!(reasons(&body), vec!["llm_declined"], "{body}");
            }
            other => panic!("{question:?}: unexpected decision {other:?}: {body}"),
        }
    }
    // Every answer came from the model, none from the fallback.
    assert_eq!(
        llm_outcomes(&app, "answered") + llm_outcomes(&app, "declined"),
        questions.len() as u64
    );
    app.stop().await;
}

#[tokio::test]
async fn a_slow_llm_gives_way_to_the_extractive_answer() {
    let Some(llm) = LlamaServer::start().await else {
        return;
    };
    // The prompt alone takes the small model longer than this to read.
    let LlmApp { app, _prompts } =
        llm_app(&llm.base_url, None, |s| s.answer.llm.timeout_ms = 30).await;
    let (id, token) = app.conversation().await;
    let (status, body) = app.say(&id, &token, QUESTION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "answer", "{body}");
    assert_eq!(
        reasons(&body),
        vec!["knowledge_match", "llm_unavailable"],
        "{body}"
    );
    assert_eq!(body["reply"]["sources"].as_array().unwrap().len(), 1);
    assert!(!body["reply"]["text"].as_str().unwrap().contains('['));
    assert_eq!(llm_outcomes(&app, "timeout"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_server_killed_mid_stream_falls_back_and_loses_nothing() {
    let Some(mut llm) = LlamaServer::start().await else {
        return;
    };
    // A long reply, so the server can be killed while it streams.
    let count = "one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, \
                 thirteen, fourteen, fifteen, sixteen, seventeen, eighteen, nineteen, twenty";
    let long = format!("Restart the thermostat [1]. {count}, {count}, {count}.");
    let LlmApp { app, _prompts } = llm_app(&llm.base_url, Some(&long), |s| {
        s.answer.llm.max_tokens = 300
    })
    .await;
    let (id, token) = app.conversation().await;
    let mut customer =
        WsClient::connect(&app.address, &format!("/v1/conversations/{id}/ws"), &token).await;
    customer.until_type("hello").await;
    customer
        .send(serde_json::json!({ "type": "message", "text": QUESTION, "client_message_id": "m1" }))
        .await;
    customer.until_type("delta").await;
    llm.kill();
    let reply = customer.until_message(|m| m["role"] == "bot").await;
    let text = reply["text"].as_str().unwrap();
    assert!(
        !text.contains("twenty"),
        "the half-written answer was stored: {text}"
    );
    assert_eq!(llm_outcomes(&app, "error"), 1);

    // The server stays dead: the next message is answered from the knowledge base at once.
    let (status, body) = app.say(&id, &token, "how do I reset my password?").await;
    assert_eq!(status, 200, "{body}");
    assert!(reasons(&body).contains(&"llm_unavailable"), "{body}");

    // Nothing lost, nothing twice: two customer messages, two bot replies.
    let transcript = app.transcript(&id, &token).await;
    let roles = common::app::roles(&transcript);
    assert_eq!(
        roles,
        vec!["customer", "bot", "customer", "bot"],
        "{transcript}"
    );
    customer.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_dead_server_opens_the_circuit_so_it_costs_nothing_per_message() {
    // A port nobody listens on: every call is refused, as with a server that is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let LlmApp { app, _prompts } = llm_app(&format!("http://127.0.0.1:{port}/v1"), None, |s| {
        s.answer.llm.breaker_failures = 2;
        s.answer.llm.breaker_cooldown_secs = 600;
    })
    .await;
    for _ in 0..4 {
        let (id, token) = app.conversation().await;
        let (status, body) = app.say(&id, &token, QUESTION).await;
        assert_eq!(status, 200, "{body}");
        assert!(reasons(&body).contains(&"llm_unavailable"), "{body}");
        assert!(!body["reply"]["text"].as_str().unwrap().is_empty());
    }
    assert_eq!(llm_outcomes(&app, "error"), 2, "two calls tried");
    assert_eq!(llm_outcomes(&app, "circuit_open"), 2, "then none");
    app.stop().await;
}

#[tokio::test]
async fn a_follow_up_is_rewritten_by_the_llm_before_retrieval() {
    let Some(llm) = LlamaServer::start().await else {
        return;
    };
    let LlmApp { app, _prompts } = llm_app(
        &llm.base_url,
        Some("Restart the thermostat and your router [2]."),
        |_| {},
    )
    .await;
    let (id, token) = app.conversation().await;
    let (_, first) = app.say(&id, &token, QUESTION).await;
    assert_eq!(first["decision"], "answer", "{first}");
    let (status, body) = app.say(&id, &token, "and what about that one?").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["understanding"]["rewritten_query"], REWRITTEN,
        "{body}"
    );
    assert_eq!(task_outcomes(&app, "rewrite", "answered"), 1);
    // The rewritten question is what was searched: the answer cites a password article.
    let cited = body["reply"]["sources"][0]["title"].as_str().unwrap();
    assert!(cited.to_lowercase().contains("password"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_agent_gets_a_summary_and_a_drafted_reply_that_is_never_sent_by_itself() {
    let Some(llm) = LlamaServer::start().await else {
        return;
    };
    let prompts = tempfile::tempdir().unwrap();
    write_prompts(
        prompts.path(),
        "Restart the thermostat and your router [2].",
    );
    let (prompts_dir, base_url) = (prompts.path().to_path_buf(), llm.base_url.clone());
    let human = human_side(move |s| {
        s.paths.prompts = prompts_dir;
        s.answer.writer = AnswerWriterKind::Llm;
        s.answer.llm.base_url = base_url;
        s.answer.llm.temperature = 0.0;
        s.answer.llm.timeout_ms = 60_000;
    })
    .await;
    let (_, maya) = human.agent("maya", &["*"], 2).await;
    let (_, tom) = human.agent("tom", &["*"], 2).await;
    let (id, token) = human.handed_off("I want to talk to a person").await;
    let claim = format!("/v1/conversations/{id}/claim");
    assert_eq!(human.post(claim, &maya, serde_json::json!({})).await, 204);

    let assist = |agent: String| {
        let request = human
            .app
            .client
            .post(human.app.url(&format!("/v1/conversations/{id}/assist")))
            .bearer_auth(agent);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = assist(maya.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"], SUMMARY, "{body}");
    // [9] was never given: it goes; [1] maps to the first chunk found.
    assert_eq!(
        body["draft"], "Please restart the thermostat and your router [1].",
        "{body}"
    );
    assert_eq!(body["sources"].as_array().unwrap().len(), 1, "{body}");
    assert!(body.get("unavailable").is_none(), "{body}");

    // Only the agent holding the conversation asks; nothing reached the customer.
    let (status, _) = assist(tom).await;
    assert_eq!(status, 403);
    let transcript = human.app.transcript(&id, &token).await;
    let texts: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(!texts.iter().any(|t| t.contains("restart")), "{transcript}");
    assert_eq!(task_outcomes(&human.app, "draft", "answered"), 1);
    assert_eq!(task_outcomes(&human.app, "summary", "answered"), 1);
}
