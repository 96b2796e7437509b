//! A scripted demo of the human side: two agents and five customers on real WebSockets against a
//! real server (demo knowledge, scratch data directory), printed as a timeline.
//!
//! ```text
//! cargo run --release --example handoff_demo
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::app::AppState;
use baton::config::Settings;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ADMIN_KEY: &str = "demo-admin-key-0123456789";

struct Timeline {
    started: Instant,
    lines: Mutex<Vec<String>>,
}

impl Timeline {
    fn log(&self, who: &str, what: impl AsRef<str>) {
        let line = format!(
            "{:>7.2}s  {:<10} {}",
            self.started.elapsed().as_secs_f64(),
            who,
            what.as_ref()
        );
        println!("{line}");
        self.lines.lock().push(line);
    }
}

async fn connect(base: &str, path: &str, token: &str) -> Socket {
    let url = format!(
        "{}{}?token={}",
        base.replacen("http://", "ws://", 1),
        path,
        token
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
}

async fn next_frame(socket: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Reads frames until `want` matches, logging what a person would see on the way.
async fn until(
    socket: &mut Socket,
    timeline: &Timeline,
    who: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let frame = next_frame(socket)
            .await
            .unwrap_or_else(|| panic!("{who}: socket ended"));
        describe(timeline, who, &frame);
        if want(&frame) {
            return frame;
        }
    }
}

fn describe(timeline: &Timeline, who: &str, frame: &Value) {
    match frame["type"].as_str().unwrap_or_default() {
        "message" => {
            let message = &frame["message"];
            let author = match message["role"].as_str() {
                Some("agent") => message["author"].as_str().unwrap_or("agent").to_string(),
                Some(role) => role.to_string(),
                None => String::new(),
            };
            let kind = message["kind"]
                .as_str()
                .map(|k| format!(" [{k}]"))
                .unwrap_or_default();
            let text: String = message["text"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(90)
                .collect();
            timeline.log(who, format!("sees {author}{kind}: {text}"));
        }
        "queue" if frame.get("queue").is_some() => {}
        "queue" => timeline.log(
            who,
            format!(
                "is #{} in the queue, about {} s, {} agents online",
                frame["position"], frame["estimated_wait_secs"], frame["agents_online"]
            ),
        ),
        "assigned" => {
            let conversation = &frame["conversation"];
            timeline.log(
                who,
                format!(
                    "gets a conversation ({}, {}, reasons {}): {}",
                    conversation["skill"].as_str().unwrap_or_default(),
                    conversation["priority"].as_str().unwrap_or_default(),
                    conversation["reasons"],
                    conversation["summary"].as_str().unwrap_or_default()
                ),
            );
        }
        "unassigned" => timeline.log(
            who,
            format!(
                "lets go of a conversation ({})",
                frame["reason"].as_str().unwrap_or_default()
            ),
        ),
        "rated" => timeline.log(who, format!("is rated {}/5", frame["score"])),
        _ => {}
    }
}

#[tokio::main]
async fn main() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().expect("scratch directory");
    let mut settings = Settings::default();
    settings.paths.knowledge = repo.join("knowledge");
    settings.paths.models = repo.join("models");
    settings.paths.prompts = repo.join("prompts");
    settings.paths.data = scratch.path().to_path_buf();
    settings.admin_key = Some(ADMIN_KEY.into());
    settings.log.level = "warn".into();
    baton::telemetry::init(&settings.log);
    let state = AppState::build(settings).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton::app::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let timeline = Arc::new(Timeline {
        started: Instant::now(),
        lines: Mutex::new(Vec::new()),
    });
    let http = reqwest::Client::new();

    // Two agents: Maya (general, billing), Tom (technical, general); two conversations each.
    let mut agents = HashMap::new();
    for (name, display, skills) in [
        ("maya", "Maya", vec!["general", "billing"]),
        ("tom", "Tom", vec!["technical", "general"]),
    ] {
        http.post(format!("{base}/v1/admin/agents"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": name, "display_name": display, "password": "demo-password", "skills": skills, "capacity": 2}))
            .send()
            .await
            .expect("create agent");
        let login: Value = http
            .post(format!("{base}/v1/agents/login"))
            .json(&json!({"name": name, "password": "demo-password"}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let mut socket = connect(
            &base,
            "/v1/agents/ws",
            login["token"].as_str().unwrap_or_default(),
        )
        .await;
        next_frame(&mut socket).await;
        timeline.log(display, format!("is online ({})", skills.join(", ")));
        agents.insert(display, socket);
    }

    // Five customers, each starting with a message the bot reads first.
    let scripts = [
        ("Ana", "I want to talk to a real person please"),
        ("Ben", "cancel my brightloop plus subscription"),
        ("Chloe", "there's a charge on my card I never made"),
        ("Dev", "my thermostat is not heating"),
        ("Eve", "this is the worst service I've ever had"),
    ];
    let mut customers = HashMap::new();
    for (name, text) in scripts {
        let conversation: Value = http
            .post(format!("{base}/v1/conversations"))
            .send()
            .await
            .expect("conversation")
            .json()
            .await
            .expect("json");
        let id = conversation["id"].as_str().unwrap_or_default().to_string();
        let token = conversation["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut socket = connect(&base, &format!("/v1/conversations/{id}/ws"), &token).await;
        next_frame(&mut socket).await;
        timeline.log(name, format!("writes: {text}"));
        send(&mut socket, json!({"type": "message", "text": text})).await;
        until(&mut socket, &timeline, name, |f| {
            f["type"] == "message" && f["message"]["role"] == "bot"
        })
        .await;
        customers.insert(name, (id, socket));
    }
    // Dev was answered by the bot; it did not help.
    {
        let (_, dev) = customers.get_mut("Dev").expect("Dev");
        timeline.log("Dev", "writes: that didn't help, get me a human");
        send(
            dev,
            json!({"type": "message", "text": "that didn't help, get me a human"}),
        )
        .await;
        until(dev, &timeline, "Dev", |f| {
            f["type"] == "message" && f["message"]["role"] == "bot"
        })
        .await;
    }

    // Agents take what the queue gives them (capacity 2 each: one customer waits).
    let mut held: HashMap<String, &str> = HashMap::new();
    for agent in ["Maya", "Tom"] {
        let socket = agents.get_mut(agent).expect("agent");
        for _ in 0..2 {
            let frame = until(socket, &timeline, agent, |f| f["type"] == "assigned").await;
            held.insert(
                frame["conversation"]["conversation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                agent,
            );
        }
    }
    let waiting: Vec<&str> = customers
        .iter()
        .filter(|(_, (id, _))| !held.contains_key(id))
        .map(|(name, _)| *name)
        .collect();
    timeline.log("queue", format!("still waiting: {}", waiting.join(", ")));

    // Each agent greets their customers; the customers answer.
    let ordered: Vec<(String, &str)> = {
        let mut pairs: Vec<(String, &str)> = held
            .iter()
            .map(|(id, agent)| (id.clone(), *agent))
            .collect();
        pairs.sort();
        pairs
    };
    for (id, agent) in &ordered {
        let customer = customers
            .iter()
            .find(|(_, (cid, _))| cid == id)
            .map(|(name, _)| *name)
            .unwrap_or_default();
        let socket = agents.get_mut(agent).expect("agent");
        let text =
            format!("Hi {customer}, {agent} here. I've read what you wrote; let me sort this out.");
        timeline.log(agent, format!("writes to {customer}: {text}"));
        send(
            socket,
            json!({"type": "message", "conversation_id": id, "text": text}),
        )
        .await;
        let (_, customer_socket) = customers.get_mut(customer).expect("customer");
        until(customer_socket, &timeline, customer, |f| {
            f["type"] == "message" && f["message"]["role"] == "agent"
        })
        .await;
        timeline.log(customer, "writes: thank you!");
        send(
            customer_socket,
            json!({"type": "message", "text": "thank you!"}),
        )
        .await;
        let socket = agents.get_mut(agent).expect("agent");
        until(socket, &timeline, agent, |f| {
            f["type"] == "message" && f["message"]["role"] == "customer"
        })
        .await;
    }

    // Maya resolves her first conversation: the waiting customer flows to her.
    let (first_of_maya, _) = ordered
        .iter()
        .find(|(_, a)| *a == "Maya")
        .cloned()
        .expect("Maya holds one");
    let resolved_customer = customers
        .iter()
        .find(|(_, (id, _))| *id == first_of_maya)
        .map(|(n, _)| *n)
        .unwrap_or_default();
    timeline.log(
        "Maya",
        format!("resolves {resolved_customer}'s conversation"),
    );
    send(
        agents.get_mut("Maya").expect("Maya"),
        json!({"type": "resolve", "conversation_id": first_of_maya}),
    )
    .await;
    {
        let (_, socket) = customers.get_mut(resolved_customer).expect("customer");
        until(socket, &timeline, resolved_customer, |f| {
            f["type"] == "message" && f["message"]["kind"] == "resolved"
        })
        .await;
        timeline.log(resolved_customer, "rates the conversation 5/5");
        send(socket, json!({"type": "rate", "score": 5})).await;
    }
    let maya = agents.get_mut("Maya").expect("Maya");
    until(maya, &timeline, "Maya", |f| f["type"] == "assigned").await;

    // Tom hands one conversation back to the bot, which answers again.
    let (first_of_tom, _) = ordered
        .iter()
        .find(|(_, a)| *a == "Tom")
        .cloned()
        .expect("Tom holds one");
    let handed_back = customers
        .iter()
        .find(|(_, (id, _))| *id == first_of_tom)
        .map(|(n, _)| *n)
        .unwrap_or_default();
    timeline.log("Tom", format!("hands {handed_back} back to the bot"));
    send(
        agents.get_mut("Tom").expect("Tom"),
        json!({"type": "hand_back", "conversation_id": first_of_tom}),
    )
    .await;
    {
        let (_, socket) = customers.get_mut(handed_back).expect("customer");
        until(socket, &timeline, handed_back, |f| {
            f["type"] == "message" && f["message"]["kind"] == "handed_back"
        })
        .await;
        timeline.log(handed_back, "writes: how do I reset my password?");
        send(
            socket,
            json!({"type": "message", "text": "how do I reset my password?"}),
        )
        .await;
        until(socket, &timeline, handed_back, |f| {
            f["type"] == "message" && f["message"]["role"] == "bot"
        })
        .await;
    }

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    println!("\nmetrics:");
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("baton_queue_length")
                || l.starts_with("baton_time_to_assignment_seconds_count")
                || l.starts_with("baton_handle_time_seconds_count")
                || l.starts_with("baton_first_agent_response_seconds_count")
                || l.starts_with("baton_connected_"))
    }) {
        println!("  {line}");
    }
    let _ = stop.send(());
    let _ = server.await;
}
