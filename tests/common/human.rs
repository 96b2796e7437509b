//! `human_side()`: a server whose human side runs on a manual clock with sweeps on demand, and
//! helpers for agents (created through the admin API and logged in) and customer sockets.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use baton::config::Settings;
use baton::handoff::clock::ManualClock;
use serde_json::{json, Value};

use super::app::{spawn_with_clock, test_settings, TestApp, ADMIN_KEY};
use super::ws::WsClient;

pub struct Human {
    pub app: TestApp,
    pub clock: ManualClock,
}

pub async fn human_side(configure: impl FnOnce(&mut Settings)) -> Human {
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    // Sweeps run when a test says so.
    settings.handoff.sweep_interval_ms = 3_600_000;
    configure(&mut settings);
    let clock = ManualClock::new();
    let mut app = spawn_with_clock(settings, Arc::new(clock.clone())).await;
    app.own_dir(scratch);
    Human { app, clock }
}

impl Human {
    /// Create an agent through the admin API and log in; returns (agent id, token).
    pub async fn agent(&self, name: &str, skills: &[&str], capacity: i64) -> (String, String) {
        create_agent(&self.app.client, &self.app.address, name, skills, capacity).await
    }

    pub async fn agent_socket(&self, token: &str) -> WsClient {
        let mut socket = WsClient::connect(&self.app.address, "/v1/agents/ws", token).await;
        socket.until_type("hello").await;
        socket
    }

    pub async fn customer_socket(&self, id: &str, token: &str) -> WsClient {
        let mut socket = WsClient::connect(
            &self.app.address,
            &format!("/v1/conversations/{id}/ws"),
            token,
        )
        .await;
        socket.until_type("hello").await;
        socket.send(json!({"type": "resume", "after": 0})).await;
        socket
    }

    /// A conversation that asks for a person; returns (id, token).
    pub async fn handed_off(&self, text: &str) -> (String, String) {
        let (id, token) = self.app.conversation().await;
        let (status, body) = self.app.say(&id, &token, text).await;
        assert_eq!(status, 200);
        assert_eq!(body["decision"], "handoff", "{body}");
        (id, token)
    }

    pub async fn sweep_after(&self, by: Duration) {
        self.clock.advance(by);
        self.app.state.handoff.sweep().await.expect("sweep");
    }

    pub async fn post(&self, path: String, token: &str, body: Value) -> u16 {
        self.app
            .client
            .post(self.app.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Create an agent (display name: the name capitalised) through the admin API of the server at
/// `address` and log in there; returns (agent id, token).
pub async fn create_agent(
    client: &reqwest::Client,
    address: &str,
    name: &str,
    skills: &[&str],
    capacity: i64,
) -> (String, String) {
    let response = client
        .post(format!("{address}/v1/admin/agents"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "name": name, "display_name": capitalise(name), "password": "s3cret-passw0rd", "skills": skills, "capacity": capacity }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let login: Value = client
        .post(format!("{address}/v1/agents/login"))
        .json(&json!({ "name": name, "password": "s3cret-passw0rd" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        login["agent"]["id"].as_str().unwrap().to_string(),
        login["token"].as_str().unwrap().to_string(),
    )
}

pub fn capitalise(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

pub fn is_assigned(conversation: &str) -> impl Fn(&Value) -> bool + '_ {
    move |frame: &Value| {
        frame["type"] == "assigned" && frame["conversation"]["conversation_id"] == conversation
    }
}
