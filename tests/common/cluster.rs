//! Several Baton instances on one fresh PostgreSQL database and, when there is one, one Qdrant
//! server collection (see `qdrant.rs`); without a Qdrant server each instance keeps its own Qdrant
//! Edge index of the same knowledge folder (the human side, which these tests are about, does not
//! depend on it), and the bed says so once.
//!
//! Instances run in the test process (`spawn_with`: the real router, hub, relay, presence and
//! election, each with its own PostgreSQL sessions) or as real `baton serve` processes
//! ([`Testbed::process`]) where a test must kill one with SIGKILL.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use baton::config::Settings;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::app::{repo, serve_args, spawn_with, test_settings, TestApp, ADMIN_KEY};
use super::human::create_agent;
use super::pg::TestDatabase;
use super::qdrant::{scratch_collection, CollectionGuard};

/// Quick cluster timings for tests: heartbeats every 100 ms, an instance is dead after 600 ms.
pub const HEARTBEAT_MS: u64 = 100;
pub const INSTANCE_TTL_MS: u64 = 600;

pub struct Testbed {
    pub database: TestDatabase,
    /// The shared Qdrant server collection, when a server is there.
    pub qdrant: Option<(String, String)>,
    _collection: Option<CollectionGuard>,
}

impl Testbed {
    pub async fn new() -> Testbed {
        let database = TestDatabase::create().await;
        let (qdrant, guard) = match scratch_collection().await {
            Some((url, collection, guard)) => (Some((url, collection)), Some(guard)),
            None => {
                super::app::say_loudly(
                    "no Qdrant server: each instance of this cluster test uses its own Qdrant Edge index",
                );
                (None, None)
            }
        };
        Testbed {
            database,
            qdrant,
            _collection: guard,
        }
    }

    /// Settings for one instance with its own data directory.
    pub fn settings(&self, data_dir: &Path) -> Settings {
        let mut settings = test_settings(data_dir);
        settings.database.url = Some(self.database.url().to_string());
        settings.cluster.heartbeat_ms = HEARTBEAT_MS;
        settings.cluster.instance_ttl_ms = INSTANCE_TTL_MS;
        settings.handoff.sweep_interval_ms = 100;
        if let Some((url, collection)) = &self.qdrant {
            settings.index.url = Some(url.clone());
            settings.index.collection = collection.clone();
        }
        settings
    }

    /// An instance in this process.
    pub async fn instance(&self) -> TestApp {
        self.instance_with(|_| {}).await
    }

    pub async fn instance_with(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let scratch = tempfile::tempdir().unwrap();
        let mut settings = self.settings(scratch.path());
        configure(&mut settings);
        let mut app = spawn_with(settings).await;
        app.own_dir(scratch);
        app
    }

    /// A real `baton serve` process on a port of its own, with `env` added.
    pub async fn process(&self, env: &[(&str, String)]) -> Process {
        let data = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .args(serve_args(data.path()))
            .env_remove("RUST_LOG")
            .env("BATON_ADMIN_KEY", ADMIN_KEY)
            .env("BATON_PATHS__PROMPTS", repo().join("prompts"))
            .env("BATON_DATABASE__URL", self.database.url())
            .env("BATON_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env(
                "BATON_CLUSTER__INSTANCE_TTL_MS",
                INSTANCE_TTL_MS.to_string(),
            )
            .env("BATON_LIMITS__REQUESTS_PER_IP_PER_SECOND", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some((url, collection)) = &self.qdrant {
            command
                .env("BATON_INDEX__URL", url)
                .env("BATON_INDEX__COLLECTION", collection);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("baton starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(120), stdout.read_line(&mut line))
            .await
            .expect("baton serve printed its address within 2 minutes")
            .unwrap();
        let address = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(address.starts_with("http://127.0.0.1:"), "{line:?}");
        // Keep reading so the pipe never fills.
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stdout, &mut sink).await;
        });
        Process {
            address,
            child,
            _data: data,
        }
    }
}

/// A `baton serve` process; killed with SIGKILL when dropped.
pub struct Process {
    pub address: String,
    pub child: tokio::process::Child,
    _data: tempfile::TempDir,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }
}

/// Whether the instance at `address` leads now (from /readyz).
pub async fn leads(client: &reqwest::Client, address: &str) -> bool {
    let ready: Value = client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    ready["cluster"]["leader"]
        .as_bool()
        .unwrap_or_else(|| panic!("no cluster section in /readyz: {ready}"))
}

/// Poll until `condition` holds, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create an agent with every skill through the admin API of `address` and log in there;
/// (id, token).
pub async fn agent(
    client: &reqwest::Client,
    address: &str,
    name: &str,
    capacity: i64,
) -> (String, String) {
    create_agent(client, address, name, &["*"], capacity).await
}

/// A conversation started on `address` that asks for a person; (id, token).
pub async fn handed_off(client: &reqwest::Client, address: &str) -> (String, String) {
    let created: Value = client
        .post(format!("{address}/v1/conversations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    let reply: Value = client
        .post(format!("{address}/v1/conversations/{id}/messages"))
        .bearer_auth(&token)
        .json(&json!({ "text": "I want to talk to a real person please" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["decision"], "handoff", "{reply}");
    (id, token)
}
