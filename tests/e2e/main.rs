//! The faces of Baton in a real browser (headless Chromium over the DevTools protocol): a customer
//! on the demo page asks the widget a question and gets an answer with its source, asks for a
//! person, waits in the queue (the only agent is away, so the offline form shows), the agent in
//! the console (a second, isolated browser context) goes online, gets the conversation with its
//! context, types (the customer sees it) and replies, the customer answers, the agent resolves and
//! the customer rates; the rating reaches the agent. Then the customer reloads the page and finds
//! the conversation again, and the widget is checked on a phone-sized screen.
//!
//! Screenshots of both sides land in `target/e2e/` (`make test` installs Chromium through
//! `make e2e-deps`; `BATON_TEST_CHROMIUM` points at another binary).

mod cdp;
#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use baton::app::AppState;
use baton::config::Settings;
use cdp::{Browser, Page};
use common::app::{shared_encoder, test_settings, ADMIN_KEY};
use serde_json::{json, Value};

const PASSWORD: &str = "brightloop-demo";

/// One browser scenario at a time: two Chromiums and two servers at once on a small machine make
/// every step slower without testing anything more.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A JS expression for an element inside the widget's shadow root.
fn widget(selector: &str) -> String {
    format!(
        "document.getElementById('baton-widget')?.shadowRoot?.querySelector({})",
        js(selector)
    )
}

/// A JS string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn console(selector: &str) -> String {
    format!("document.querySelector({})", js(selector))
}

/// Text of an element (empty when absent).
fn text_of(element: &str) -> String {
    format!("(({element})?.textContent ?? '')")
}

/// Whether an element exists and is shown.
fn shown(element: &str) -> String {
    format!("(() => {{ const el = {element}; return !!el && el.getClientRects().length > 0; }})()")
}

/// The real server. Unlike `spawn_app` it can come back on the same port after a restart, so the
/// pages already open find it again.
struct Server {
    address: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(settings: Settings, bind: &str) -> Server {
        // After a restart, the sockets of the previous server may hold its state (and with it
        // the vector index) for a moment after they were told to close.
        let deadline = Instant::now() + Duration::from_secs(15);
        let state = loop {
            match AppState::build_with(settings.clone(), Some(shared_encoder())).await {
                Ok(state) => break state,
                Err(err)
                    if err.to_string().contains("already open") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(err) => panic!("the server failed to start: {err}"),
            }
        };
        // The port of a server that just stopped may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(bind).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() > deadline => panic!("cannot bind {bind}: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(baton::app::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server {
            address,
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Graceful stop: open sockets are closed with 1001 ("going away").
    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

/// Creates an agent through the admin API; returns its id.
async fn create_agent(app: &Server, name: &str, display: &str, skills: &[&str]) -> String {
    let response = reqwest::Client::new()
        .post(app.url("/v1/admin/agents"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "name": name, "display_name": display, "password": PASSWORD, "skills": skills, "capacity": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let agent: Value = response.json().await.unwrap();
    agent["id"].as_str().unwrap().to_string()
}

/// Logs in to the console as `name` and waits until it is connected and online.
async fn log_in(agent: &Page, app: &Server, name: &str) {
    agent.goto(&app.url("/console")).await;
    agent.click("the name field", &console("#login-name")).await;
    agent.type_text(name).await;
    agent
        .click("the password field", &console("#login-password"))
        .await;
    agent.type_text(PASSWORD).await;
    agent.click("Log in", &console("#login-submit")).await;
    agent
        .wait_until(
            "the console to connect",
            &format!("{} === 'Connected'", text_of(&console("#conn"))),
        )
        .await;
    agent
        .wait_until(
            "the agent to be online after logging in",
            "document.querySelector('#presence [data-status=online]').getAttribute('aria-pressed') === 'true'",
        )
        .await;
}

/// A customer who asks for a person over the HTTP API (no browser needed on that side);
/// returns (conversation id, token).
async fn customer_wants_a_person(app: &Server) -> (String, String) {
    let client = reqwest::Client::new();
    let created: Value = client
        .post(app.url("/v1/conversations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, token) = (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    let turn = say(app, &id, &token, "I want to talk to a human").await;
    assert_eq!(turn["decision"], "handoff", "{turn}");
    (id, token)
}

async fn say(app: &Server, id: &str, token: &str, text: &str) -> Value {
    reqwest::Client::new()
        .post(app.url(&format!("/v1/conversations/{id}/messages")))
        .bearer_auth(token)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The system messages of a conversation (kind, author), as the customer's transcript has them.
async fn system_kinds(app: &Server, id: &str, token: &str) -> Vec<(String, String)> {
    let transcript: Value = reqwest::Client::new()
        .get(app.url(&format!("/v1/conversations/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    transcript["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {transcript}"))
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| {
            (
                m["kind"].as_str().unwrap_or_default().to_string(),
                m["meta"]["author"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Customer: type a message into the widget and send it with Enter.
async fn customer_sends(customer: &Page, text: &str) {
    customer
        .click("the message box", &widget(".compose textarea"))
        .await;
    customer.type_text(text).await;
    customer.press_enter().await;
}

/// Customer: send a message and wait until the server has stored it (it has an id).
async fn customer_says(customer: &Page, text: &str) {
    customer_sends(customer, text).await;
    wait_stored(customer, text).await;
}

async fn wait_stored(customer: &Page, text: &str) {
    customer
        .wait_until(
            &format!("the customer's message {text:?} to be stored"),
            &format!(
                "[...{}.querySelectorAll('.msg.customer[data-id] .bubble')].some(b => b.textContent === {})",
                widget(".log"),
                js(text)
            ),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_and_an_agent_talk_through_widget_and_console() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let settings = test_settings(scratch.path());
    let app = Server::start(settings.clone(), "127.0.0.1:0").await;
    create_agent(&app, "maya", "Maya", &["*"]).await;

    let browser = Browser::launch().await;

    // ---- The agent logs in, is online, then steps away.
    let agent = browser.new_page("agent", 1360, 860).await;
    log_in(&agent, &app, "maya").await;
    assert!(agent
        .eval(&text_of(&console("#me")))
        .await
        .as_str()
        .unwrap()
        .contains("Maya"));
    agent
        .click("the Away switch", &console("#presence [data-status=away]"))
        .await;
    agent
        .wait_until(
            "Maya to be away",
            "document.querySelector('#presence [data-status=away]').getAttribute('aria-pressed') === 'true'",
        )
        .await;

    // ---- The customer asks the bot and gets an answer with its source.
    let customer = browser.new_page("customer", 1280, 800).await;
    customer.goto(&app.url("/")).await;
    assert_eq!(
        customer.eval("document.title").await,
        "Brightloop Help Centre"
    );
    customer
        .click("the chat launcher", &widget(".launcher"))
        .await;
    customer
        .wait_until("the chat window to open", &shown(&widget(".panel")))
        .await;
    assert_eq!(
        customer
            .eval(&format!(
                "{}.getAttribute('aria-expanded')",
                widget(".launcher")
            ))
            .await,
        "true"
    );
    assert_eq!(
        customer
            .eval("document.activeElement?.shadowRoot?.activeElement?.tagName ?? ''")
            .await,
        "TEXTAREA",
        "opening the chat puts the focus in the message box"
    );
    // The demo FAQ answers this one: its source is named (FAQ entries have no address).
    customer_says(&customer, "how do I reset my password").await;
    customer
        .wait_until(
            "the bot's answer naming its source",
            &format!(
                "{}.includes('How do I reset my password?')",
                text_of(&widget(".msg.bot[data-id] .sources"))
            ),
        )
        .await;
    // An article answers this one: its source is a link.
    customer_says(&customer, "what happens after a password reset").await;
    let source = customer
        .wait_until(
            "the bot's answer with a source link",
            &format!(
                "(() => {{ const a = {}.querySelectorAll('.msg.bot[data-id] .sources a'); return a.length ? a[a.length - 1].href : null; }})()",
                widget(".log")
            ),
        )
        .await;
    assert_eq!(
        source, "https://help.brightloop.example/account/reset-password",
        "the answer links the reset-password article"
    );
    let answer = customer
        .eval(&text_of(&widget(".msg.bot[data-id] .bubble")))
        .await;
    assert!(
        answer.as_str().unwrap().to_lowercase().contains("password"),
        "{answer}"
    );
    assert_eq!(
        customer
            .eval(&text_of(&widget(".msg.bot[data-id] .role")))
            .await,
        "Bot",
        "the answer is labelled as coming from the bot"
    );
    assert_eq!(customer.eval(&text_of(&widget(".head .tag"))).await, "Bot");
    assert_eq!(
        customer
            .eval(&format!("{}.getAttribute('role')", widget(".log")))
            .await,
        "log",
        "new messages are announced to screen readers"
    );
    customer.screenshot("customer-1-answer").await;

    // ---- The customer asks for a person: queued, and nobody is online, so the form shows.
    customer_says(&customer, "I want to talk to a human").await;
    customer
        .wait_until(
            "the queue position",
            &format!(
                "{}.includes(\"You're number 1 in the queue\")",
                text_of(&widget(".status.queue"))
            ),
        )
        .await;
    customer
        .wait_until("the offline form", &shown(&widget("form.offline")))
        .await;
    customer
        .click("Leave a message", &widget("form.offline .link"))
        .await;
    customer
        .wait_until(
            "the offline form's email field",
            &shown(&widget("form.offline input[type=email]")),
        )
        .await;
    assert_eq!(
        customer.eval(&text_of(&widget(".who-now-text"))).await,
        "Connecting you to a person…"
    );
    customer.screenshot("customer-2-queued").await;
    // Leave an email and a message: the form closes, the transcript says so.
    customer
        .click(
            "the offline email field",
            &widget("form.offline input[type=email]"),
        )
        .await;
    customer.type_text("sam@example.com").await;
    customer
        .click(
            "the offline message field",
            &widget("form.offline textarea"),
        )
        .await;
    customer
        .type_text("Please email me if nobody is around.")
        .await;
    customer
        .click("Send message", &widget("form.offline .primary"))
        .await;
    customer
        .wait_until(
            "the message-left confirmation",
            &format!(
                "{}.includes('sam@example.com')",
                text_of(&widget(".sys[data-kind=message_left]"))
            ),
        )
        .await;
    assert_eq!(customer.eval(&shown(&widget("form.offline"))).await, false);
    let conversation = customer
        .eval("JSON.parse(localStorage.getItem('baton.v1:' + location.origin)).id")
        .await;
    let conversation = conversation.as_str().unwrap().to_string();

    // ---- The agent sees the queue, goes online and gets the conversation with its context.
    let item = console(&format!("#queue .qitem[data-id='{conversation}']"));
    agent
        .wait_until("the conversation in the queue", &shown(&item))
        .await;
    let queued = agent.eval(&text_of(&item)).await;
    let queued = queued.as_str().unwrap();
    assert!(queued.contains("Asked for a person"), "{queued}");
    assert!(queued.contains("Claim"), "{queued}");
    assert!(queued.contains("human agent"), "{queued}");
    agent.screenshot("agent-1-queue").await;
    let before = agent.eval("document.title").await;
    assert_eq!(before, "Baton console");
    agent
        .click(
            "the Online switch",
            &console("#presence [data-status=online]"),
        )
        .await;
    let mine = console(&format!("#mine .conv[data-id='{conversation}']"));
    agent
        .wait_until("the conversation to be assigned", &shown(&mine))
        .await;
    agent
        .wait_until(
            "a title notification",
            "document.title.includes('New conversation')",
        )
        .await;
    agent
        .wait_until(
            "the new-assignment sound",
            "Number(document.body.dataset.beeps) >= 1",
        )
        .await;
    agent
        .wait_until(
            "the context panel with the intent",
            &format!(
                "{}.includes('human_agent')",
                text_of(&console("#context .intent"))
            ),
        )
        .await;
    // The mood trend: one bar per customer message the bot read.
    let bars = agent
        .eval("document.querySelectorAll('#context svg.mood rect').length")
        .await;
    assert!(
        bars.as_u64().unwrap() >= 3,
        "one mood bar per customer message the bot read: {bars}"
    );
    let context = agent.eval(&text_of(&console("#context"))).await;
    assert!(
        context.as_str().unwrap().contains("sam@example.com")
            && context
                .as_str()
                .unwrap()
                .contains("Please email me if nobody is around."),
        "the contact details left while offline are in the context: {context}"
    );
    let reasons = agent.eval(&text_of(&console("#context .reasons"))).await;
    assert!(
        reasons.as_str().unwrap().contains("Asked for a person"),
        "{reasons}"
    );
    let transcript = agent.eval(&text_of(&console("#transcript"))).await;
    let transcript = transcript.as_str().unwrap();
    assert!(
        transcript.contains("how do I reset my password")
            && transcript.contains("I want to talk to a human"),
        "the agent reads what happened before the handoff: {transcript}"
    );
    agent.click("the conversation", &mine).await;
    agent
        .wait_until(
            "the notification to clear once the agent looks",
            "document.title === 'Baton console'",
        )
        .await;

    // The customer sees who joined; the offline form and the queue banner go away.
    customer
        .wait_until(
            "Maya joining",
            &format!(
                "{}.includes('Maya')",
                text_of(&widget(".sys[data-kind=agent_joined]"))
            ),
        )
        .await;
    customer
        .wait_until(
            "the header to name the agent",
            &format!(
                "{} === \"You're chatting with Maya\"",
                text_of(&widget(".who-now-text"))
            ),
        )
        .await;
    assert_eq!(
        customer.eval(&text_of(&widget(".head .tag"))).await,
        "Person"
    );
    assert_eq!(customer.eval(&shown(&widget("form.offline"))).await, false);
    assert_eq!(customer.eval(&shown(&widget(".status.queue"))).await, false);

    // ---- The agent types (the customer sees it), adds a suggested article and replies.
    agent.click("the reply box", &console("#reply")).await;
    let greeting = "Hi, I'm Maya from Brightloop. I can help you with your password.";
    agent.type_text(greeting).await;
    customer
        .wait_until(
            "the agent's typing indicator",
            &format!("{}.includes('Maya is typing')", text_of(&widget(".typing"))),
        )
        .await;
    agent
        .click(
            "Insert on the first suggested article",
            &console("#context .suggestion .insert"),
        )
        .await;
    let reply = agent.eval("document.getElementById('reply').value").await;
    let reply = reply.as_str().unwrap().to_string();
    assert!(
        reply.starts_with(&format!("{greeting} Here is our article"))
            || reply.starts_with(&format!("{greeting} Our help article")),
        "the suggestion goes into the reply after what was typed: {reply}"
    );
    agent.press_enter().await;
    let from_agent = customer
        .wait_until(
            "the agent's reply",
            &format!(
                "(() => {{ const m = {}; return m ? m.textContent : null; }})()",
                widget(".msg.agent[data-id]")
            ),
        )
        .await;
    let from_agent = from_agent.as_str().unwrap();
    assert!(from_agent.contains(&reply), "{from_agent}");
    assert!(
        from_agent.contains("Person") && from_agent.contains("Maya"),
        "the reply is labelled with the agent's name and as a person: {from_agent}"
    );
    customer
        .wait_until(
            "the typing indicator to stop",
            &format!("{} === ''", text_of(&widget(".typing"))),
        )
        .await;
    agent
        .wait_until(
            "the reply in the agent's transcript",
            &format!(
                "{}.includes({})",
                text_of(&console("#transcript .m.agent")),
                js(&reply)
            ),
        )
        .await;

    customer_says(&customer, "Thanks! The reset email never arrived.").await;
    agent
        .wait_until(
            "the customer's answer at the agent",
            &format!(
                "[...document.querySelectorAll('#transcript .m.customer .text')].some(t => t.textContent === {})",
                js("Thanks! The reset email never arrived.")
            ),
        )
        .await;
    // Markup in messages is shown as text on both sides, never run (no XSS through a message).
    let markup =
        r#"<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold?</b>"#;
    customer_says(&customer, markup).await;
    agent
        .wait_until(
            "the customer's markup shown as text at the agent",
            &format!(
                "[...document.querySelectorAll('#transcript .m.customer .text')].some(t => t.textContent === {})",
                js(markup)
            ),
        )
        .await;
    agent.click("the reply box", &console("#reply")).await;
    let agent_markup =
        r#"<a href="javascript:window.__pwned=3">click</a><img src=y onerror="window.__pwned=4">"#;
    agent.type_text(agent_markup).await;
    agent.press_enter().await;
    customer
        .wait_until(
            "the agent's markup shown as text at the customer",
            &format!(
                "[...{}.querySelectorAll('.msg.agent[data-id] .bubble')].some(b => b.textContent.includes({}))",
                widget(".log"),
                js(agent_markup)
            ),
        )
        .await;
    for (page, root, side) in [
        (&agent, "document".to_string(), "console"),
        (&customer, widget(".log"), "widget"),
    ] {
        assert_eq!(
            page.eval("typeof window.__pwned").await,
            "undefined",
            "no script from a message ran in the {side}"
        );
        assert_eq!(
            page.eval(&format!(
                "{root}.querySelectorAll('img[src=x], img[src=y], script:not([src]), a[href^=javascript]').length"
            ))
            .await,
            0,
            "no element from a message was created in the {side}"
        );
    }
    // An internal note stays on the agent's side.
    agent
        .click(
            "Internal note",
            "document.querySelector('input[name=mode][value=note]')",
        )
        .await;
    agent.click("the note box", &console("#reply")).await;
    agent
        .type_text("Check the mail logs for this address.")
        .await;
    agent.click("Add note", &console("#send")).await;
    agent
        .wait_until(
            "the note in the context panel",
            &format!(
                "{}.includes('Check the mail logs')",
                text_of(&console("#context .notes"))
            ),
        )
        .await;
    agent.screenshot("agent-2-conversation").await;
    customer.screenshot("customer-3-agent").await;

    // ---- The server restarts. Both pages notice, the customer writes meanwhile (kept and sent
    // later), and both reconnect by themselves and resume where they stopped.
    let bind = app.address.trim_start_matches("http://").to_string();
    app.stop().await;
    customer
        .wait_until(
            "the widget to notice the lost connection",
            &shown(&widget(".status.conn")),
        )
        .await;
    agent
        .wait_until(
            "the console to notice the lost connection",
            &format!("{} === 'Reconnecting…'", text_of(&console("#conn"))),
        )
        .await;
    let offline_text = "Are you still there?";
    customer_sends(&customer, offline_text).await;
    assert_eq!(
        customer
            .eval(&format!(
                "{}.includes({})",
                text_of(&widget(".msg.customer.pending")),
                js(offline_text)
            ))
            .await,
        true,
        "a message written while disconnected waits in the window"
    );
    let app = Server::start(settings, &bind).await;
    wait_stored(&customer, offline_text).await;
    customer
        .wait_until(
            "the widget to be connected again",
            &format!("!{}", shown(&widget(".status.conn"))),
        )
        .await;
    agent
        .wait_until(
            "the console to reconnect",
            &format!("{} === 'Connected'", text_of(&console("#conn"))),
        )
        .await;
    agent
        .wait_until(
            "the message written during the restart at the agent",
            &format!(
                "[...document.querySelectorAll('#transcript .m.customer .text')].some(t => t.textContent === {})",
                js(offline_text)
            ),
        )
        .await;
    agent
        .click(
            "Reply to customer",
            "document.querySelector('input[name=mode][value=reply]')",
        )
        .await;
    agent.click("the reply box", &console("#reply")).await;
    let still_here = "Yes, still here. I'm checking the mail logs now.";
    agent.type_text(still_here).await;
    agent.press_enter().await;
    customer
        .wait_until(
            "the agent's answer after the restart",
            &format!(
                "[...{}.querySelectorAll('.msg.agent[data-id] .bubble')].some(b => b.textContent === {})",
                widget(".log"),
                js(still_here)
            ),
        )
        .await;

    // ---- The agent resolves; the customer rates; the agent sees the rating.
    agent.click("Resolve", &console("#resolve")).await;
    agent
        .wait_until(
            "the resolved conversation to leave the list",
            &format!("!{}", mine),
        )
        .await;
    customer
        .wait_until("the rating card", &shown(&widget(".rating .stars")))
        .await;
    customer
        .click("five stars", &widget(".stars button[data-score='5']"))
        .await;
    customer
        .click("Send rating", &widget(".rate-form .primary"))
        .await;
    customer
        .wait_until(
            "thanks for the rating",
            &format!("{}.includes('5 out of 5')", text_of(&widget(".thanks"))),
        )
        .await;
    agent
        .wait_until(
            "the rating to reach the agent",
            &format!("{}.includes('(5/5)')", text_of(&console("#toasts"))),
        )
        .await;
    customer.screenshot("customer-4-rated").await;
    agent.screenshot("agent-3-rated").await;

    // ---- A reload keeps the conversation (and the rating); the socket resumes.
    customer.reload().await;
    customer
        .wait_until(
            "the conversation after a reload",
            &format!(
                "{}.includes({})",
                text_of(&widget(".msg.agent[data-id]")),
                js(&reply)
            ),
        )
        .await;
    customer
        .wait_until(
            "the rating remembered after a reload",
            &format!("{}.includes('5 out of 5')", text_of(&widget(".thanks"))),
        )
        .await;
    assert_eq!(customer.eval(&shown(&widget(".panel"))).await, true);
    customer
        .wait_until(
            "the socket to be back",
            &format!("!{}.classList.contains('off')", widget(".head .dot")),
        )
        .await;
    let bubbles = customer
        .eval(&format!(
            "{}.querySelectorAll('[data-id]').length",
            widget(".log")
        ))
        .await;
    let unique = customer
        .eval(&format!(
            "new Set([...{}.querySelectorAll('[data-id]')].map(e => e.dataset.id)).size",
            widget(".log")
        ))
        .await;
    assert_eq!(bubbles, unique, "no message is shown twice after a reload");

    // ---- On a phone-sized screen the chat takes the whole screen.
    customer.viewport(390, 844, true).await;
    let width = customer
        .wait_until(
            "the panel to fill the phone screen",
            &format!(
                "(() => {{ const r = {}.getBoundingClientRect(); return r.width === innerWidth && r.height === innerHeight ? r.width : 0; }})()",
                widget(".panel")
            ),
        )
        .await;
    assert_eq!(width, json!(390));
    customer.screenshot("customer-5-phone").await;

    let problems: Vec<String> = customer
        .problems()
        .into_iter()
        .chain(agent.problems())
        .collect();
    assert!(problems.is_empty(), "errors in the pages: {problems:#?}");

    drop(browser);
    app.stop().await;
    drop(scratch);
    eprintln!(
        "browser scenario took {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        cdp::artifacts().display()
    );
}

/// Offer mode, transfer to an agent, decline, claim from the queue and hand back, in the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_transfers_claims_and_hand_backs_in_the_console() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    settings.handoff.assignment = baton::config::AssignmentMode::Offer;
    settings.handoff.offer_timeout_secs = 120;
    let app = Server::start(settings, "127.0.0.1:0").await;
    create_agent(&app, "maya", "Maya", &["*"]).await;
    let tom = create_agent(&app, "tom", "Tom", &["billing"]).await;
    let browser = Browser::launch().await;
    let agent = browser.new_page("console", 1360, 860).await;
    log_in(&agent, &app, "maya").await;

    // An offer: accept or decline, with the time left.
    let (first, first_token) = customer_wants_a_person(&app).await;
    let offer = console(&format!("#offers .offer[data-id='{first}']"));
    agent.wait_until("the offer", &shown(&offer)).await;
    agent
        .wait_until(
            "the offer's countdown",
            &format!("/expires in \\d+ s/.test({})", text_of(&offer)),
        )
        .await;
    agent
        .wait_until(
            "a title notification for the offer",
            "document.title.includes('Conversation offered')",
        )
        .await;
    agent.screenshot("agent-4-offer").await;
    agent
        .click("Accept", &format!("{offer}.querySelector('.primary')"))
        .await;
    let mine = console(&format!("#mine .conv[data-id='{first}']"));
    agent
        .wait_until("the accepted conversation", &shown(&mine))
        .await;
    assert_eq!(agent.eval(&shown(&offer)).await, false);
    assert_eq!(agent.eval("document.title").await, "Baton console");

    // Transfer to another agent by id: it leaves Maya's list and Tom joins for the customer.
    agent.click("Transfer", &console("#transfer-toggle")).await;
    agent
        .eval("document.getElementById('transfer-kind').value = 'agent'")
        .await;
    agent
        .click("the transfer target", &console("#transfer-target"))
        .await;
    agent.type_text(&tom).await;
    agent
        .click(
            "the Transfer button",
            &console("#transfer-form button[type=submit]"),
        )
        .await;
    agent
        .wait_until("the transferred conversation to leave", &format!("!{mine}"))
        .await;
    agent
        .wait_until(
            "the transfer toast",
            &format!("{}.includes('transferred')", text_of(&console("#toasts"))),
        )
        .await;
    let kinds = system_kinds(&app, &first, &first_token).await;
    assert!(
        kinds.contains(&("agent_joined".to_string(), "Tom".to_string())),
        "{kinds:?}"
    );

    // Decline: the conversation waits in the queue, where Maya claims it after all.
    let (second, second_token) = customer_wants_a_person(&app).await;
    let offer = console(&format!("#offers .offer[data-id='{second}']"));
    agent.wait_until("the second offer", &shown(&offer)).await;
    agent
        .click("Decline", &format!("{offer}.querySelector('.ghost')"))
        .await;
    let queued = console(&format!("#queue .qitem[data-id='{second}']"));
    agent
        .wait_until("the declined conversation in the queue", &shown(&queued))
        .await;
    agent
        .click("Claim", &format!("{queued}.querySelector('.claim')"))
        .await;
    let mine = console(&format!("#mine .conv[data-id='{second}']"));
    agent
        .wait_until("the claimed conversation", &shown(&mine))
        .await;
    agent
        .wait_until(
            "the claimed conversation to be open",
            &format!(
                "{}.startsWith('Customer {}')",
                text_of(&console("#chat-title")),
                &second[..8]
            ),
        )
        .await;

    // Hand back: the bot answers the customer again.
    agent
        .click("Hand back to bot", &console("#hand-back"))
        .await;
    agent
        .wait_until("the handed-back conversation to leave", &format!("!{mine}"))
        .await;
    let kinds = system_kinds(&app, &second, &second_token).await;
    assert!(
        kinds.iter().any(|(kind, _)| kind == "handed_back"),
        "{kinds:?}"
    );
    let turn = say(&app, &second, &second_token, "how do I reset my password").await;
    assert_eq!(turn["decision"], "answer", "{turn}");

    let problems = agent.problems();
    assert!(problems.is_empty(), "errors in the console: {problems:#?}");
    drop(browser);
    app.stop().await;
    drop(scratch);
    eprintln!(
        "console scenario took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
