//! Masking end to end against the real `baton` binary: card numbers, CVVs, IBANs, emails and
//! phone numbers written by a customer (HTTP and WebSocket) and by an agent (message, note,
//! transfer note) are masked before they are stored or logged. After the server stops, every
//! file in its data directory and everything it logged (at debug level) is searched for the raw
//! values: none may be there, and the masked forms must be what the agent read.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use common::ws::WsClient;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const ADMIN_KEY: &str = "privacy-test-admin-key";

/// Raw values the test writes, in every form it writes them.
const RAW: [&str; 10] = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "5500005555555559",
    "5500-0055-5555-5559",
    "378282246310005",
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "7946 0958",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_card_number_reaches_the_database_or_the_log() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(common::app::serve_args(data.path()))
        .env_remove("RUST_LOG")
        .env("BATON_LOG__LEVEL", "debug")
        .env("BATON_ADMIN_KEY", ADMIN_KEY)
        .env("BATON_PATHS__PROMPTS", repo().join("prompts"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baton starts");
    let log = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut stderr = child.stderr.take().unwrap();
    let stderr_log = log.clone();
    let stderr_task = tokio::spawn(async move {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            stderr_log.lock().extend_from_slice(&buffer[..n]);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line:?}");
    let stdout_log = log.clone();
    let stdout_task = tokio::spawn(async move {
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest).await;
        stdout_log.lock().extend_from_slice(&rest);
    });
    let client = reqwest::Client::new();

    // An agent.
    let created = client
        .post(format!("{base}/v1/admin/agents"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "name": "maya", "password": "s3cret-passw0rd", "skills": ["*"], "capacity": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let login: Value = client
        .post(format!("{base}/v1/agents/login"))
        .json(&json!({ "name": "maya", "password": "s3cret-passw0rd" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent_token = login["token"].as_str().unwrap().to_string();
    let mut agent = WsClient::connect(&base, "/v1/agents/ws", &agent_token).await;
    agent.until_type("hello").await;

    // The customer writes payment and contact details to the bot over HTTP.
    let conversation: Value = client
        .post(format!("{base}/v1/conversations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = conversation["id"].as_str().unwrap().to_string();
    let token = conversation["token"].as_str().unwrap().to_string();
    let say = |text: &'static str| {
        let client = client.clone();
        let url = format!("{base}/v1/conversations/{id}/messages");
        let token = token.clone();
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "text": text }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    say("I was charged twice on my card 4111 1111 1111 1111, cvv 737").await;
    say("my email is jane.doe@example.com and phone +44 20 7946 0958").await;
    let handed = say("I want to talk to a human about refunding DE89 3704 0044 0532 0130 00").await;
    assert_eq!(handed["decision"], "handoff", "{handed}");
    agent
        .until(|f| f["type"] == "assigned" && f["conversation"]["conversation_id"] == id)
        .await;

    // Over the WebSocket to the agent, then the agent's own writing.
    let mut customer =
        WsClient::connect(&base, &format!("/v1/conversations/{id}/ws"), &token).await;
    customer.until_type("hello").await;
    customer.send(json!({ "type": "resume", "after": 0 })).await;
    customer
        .send(json!({ "type": "message", "text": "or use 5500-0055-5555-5559 instead", "client_message_id": "c1" }))
        .await;
    customer.until_type("ack").await;
    let to_agent = agent
        .until(|f| {
            f["type"] == "message"
                && f["message"]["role"] == "customer"
                && f["message"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("or use"))
        })
        .await;
    assert_eq!(
        to_agent["message"]["text"], "or use [card ending 5559] instead",
        "{to_agent}"
    );
    agent
        .send(json!({ "type": "message", "conversation_id": id, "text": "I will refund 378282246310005, security code 1234" }))
        .await;
    let to_customer = customer
        .until(|f| f["type"] == "message" && f["message"]["role"] == "agent")
        .await;
    assert_eq!(
        to_customer["message"]["text"],
        "I will refund [card ending 0005], security code [cvv]"
    );
    agent
        .send(json!({ "type": "note", "conversation_id": id, "text": "customer card 4111111111111111" }))
        .await;
    let note = agent.until_type("note").await;
    assert_eq!(note["note"]["text"], "customer card [card ending 1111]");

    // What the agent reads is the masked text.
    let context: Value = client
        .get(format!("{base}/v1/conversations/{id}/context"))
        .bearer_auth(&agent_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let transcript: Vec<&str> = context["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "customer")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        transcript,
        [
            "I was charged twice on my card [card ending 1111], cvv [cvv]",
            "my email is [email] and phone [phone]",
            "I want to talk to a human about refunding [iban ending 3000]",
            "or use [card ending 5559] instead",
        ],
        "{context}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("baton_pii_masked_total{kind=\"card\"} 4"),
        "{metrics}"
    );

    // Stop the server so everything is flushed, then search what it left.
    drop(agent);
    drop(customer);
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "baton exited with {status}");
    stderr_task.await.unwrap();
    stdout_task.await.unwrap();

    let log = log.lock().clone();
    // Debug level really was on: the HTTP layer logs every request there.
    assert!(
        contains(&log, "finished processing request"),
        "no debug lines in the log: {}",
        String::from_utf8_lossy(&log)
    );
    let files = files_under(data.path());
    assert!(
        files.iter().any(|f| f.ends_with("baton.db")),
        "no database under {:?}: {files:?}",
        data.path()
    );
    // Nor do the bearer tokens (the WebSocket URLs carry them in the query).
    for secret in [&token, &agent_token] {
        assert!(!contains(&log, secret), "a token is in the log");
    }
    for raw in RAW {
        assert!(!contains(&log, raw), "{raw:?} is in the log");
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            assert!(!contains(&bytes, raw), "{raw:?} is in {}", file.display());
        }
    }
}
