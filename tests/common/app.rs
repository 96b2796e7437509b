//! `spawn_app()`: the real Baton server (real models, store, vector index, intents trained from the
//! demo intents.yaml) on 127.0.0.1 port 0 with a fresh data directory, and a small client for it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use baton::app::AppState;
use baton::assets::ModelFiles;
use baton::config::Settings;
use baton::nlp::encoder::EncoderPool;
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Settings for a test server: the demo knowledge and models from the repository, a scratch
/// data directory, port 0.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut settings = Settings::default();
    settings.paths.knowledge = repo().join("knowledge");
    settings.paths.models = repo().join("models");
    settings.paths.prompts = repo().join("prompts");
    settings.paths.data = data_dir.to_path_buf();
    settings.server.bind = "127.0.0.1:0".into();
    settings.admin_key = Some(ADMIN_KEY.into());
    // Every test request comes from 127.0.0.1, faster than any real client: the per-address
    // limit has its own tests (tests/api.rs) and is off elsewhere.
    settings.limits.requests_per_ip_per_second = 0;
    settings
}

/// `baton serve` on a free loopback port with the repository's models and demo knowledge and
/// `data` as its data directory: the arguments for the tests that run the real binary.
pub fn serve_args(data: &Path) -> Vec<String> {
    [
        "--models",
        repo().join("models").to_str().unwrap(),
        "--knowledge",
        repo().join("knowledge").to_str().unwrap(),
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// One encoder for the whole test binary: servers come and go, the ONNX session stays.
pub fn shared_encoder() -> EncoderPool {
    static ENCODER: OnceLock<EncoderPool> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            let files = ModelFiles::verify(&repo().join("models"), Default::default())
                .expect("model files: run make models");
            EncoderPool::start(&files, &Default::default()).expect("encoder starts")
        })
        .clone()
}

pub struct TestApp {
    pub address: String,
    /// The server's state: tests reach the handoff service (e.g. to run a sweep) through it.
    pub state: AppState,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Kept alive so the scratch directory outlives the server (when the app owns it).
    _scratch: Option<tempfile::TempDir>,
}

/// A server on a fresh scratch data directory (SQLite).
pub async fn spawn_app() -> TestApp {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let settings = test_settings(scratch.path());
    let mut app = spawn_with(settings).await;
    app._scratch = Some(scratch);
    app
}

/// A server with the given settings (the caller owns the data directory).
pub async fn spawn_with(settings: Settings) -> TestApp {
    spawn_with_clock(
        settings,
        std::sync::Arc::new(baton::handoff::clock::SystemClock),
    )
    .await
}

/// A server whose human side runs on the given clock.
pub async fn spawn_with_clock(
    settings: Settings,
    clock: std::sync::Arc<dyn baton::handoff::clock::Clock>,
) -> TestApp {
    let data_dir = settings.paths.data.clone();
    let state = AppState::build_with_clock(settings, Some(shared_encoder()), clock)
        .await
        .unwrap_or_else(|err| panic!("test server failed to start: {err}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local address"));
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton::app::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        state,
        client: reqwest::Client::new(),
        data_dir,
        shutdown: Some(shutdown),
        server: Some(server),
        _scratch: None,
    }
}

impl TestApp {
    /// Delete `dir` when the app is dropped (kept when the test failed).
    pub fn own_dir(&mut self, dir: tempfile::TempDir) {
        self._scratch = Some(dir);
    }

    /// Stop the server and wait until it has released the data directory.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Start a conversation; returns (id, token).
    pub async fn conversation(&self) -> (String, String) {
        let response = self
            .client
            .post(self.url("/v1/conversations"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        (
            body["id"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
        )
    }

    /// Send a customer message and return (status, body).
    pub async fn say(&self, id: &str, token: &str, text: &str) -> (u16, Value) {
        self.say_json(id, token, json!({ "text": text })).await
    }

    pub async fn say_json(&self, id: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/conversations/{id}/messages")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET an admin endpoint with the admin key; it must answer 200.
    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("json")
    }

    /// Upload one document as raw bytes under `name` with the admin key.
    pub async fn upload(&self, name: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/admin/documents?name={name}")))
            .bearer_auth(ADMIN_KEY)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn transcript(&self, id: &str, token: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/v1/conversations/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }
}

/// A line for CI's log even from a test that passes: the harness captures `eprintln!` of passing
/// tests, not writes to the stderr handle. For tests that could not run here and say so.
pub fn say_loudly(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
}

/// The roles of a transcript's messages, in order.
pub fn roles(transcript: &Value) -> Vec<&str> {
    transcript["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // A failed test drops the app without `stop()`: the server may still be flushing into
        // the data directory, so keep it (also handy for looking at what went wrong).
        if std::thread::panicking() {
            if let Some(scratch) = self._scratch.take() {
                eprintln!(
                    "keeping the data directory of the failed test: {}",
                    scratch.keep().display()
                );
            }
        }
    }
}
