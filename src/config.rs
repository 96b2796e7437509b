//! Layered configuration: built-in defaults, then `baton.toml` (or the file given with `--config`),
//! then `BATON_*` environment variables (nested keys joined by `__`, e.g.
//! `BATON_POLICY__ANSWER_MIN_SCORE=0.5`, `BATON_DATABASE__URL=postgres://...`), then command-line
//! flags. Every threshold the bot decides with lives here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::knowledge::chunking::ChunkingOptions;
pub use crate::knowledge::retrieval::RetrievalSettings;
use crate::nlp::encoder::EncoderOptions;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Bearer key for admin endpoints (knowledge, intents, understanding). Unset: admin endpoints
    /// answer 403 to everyone.
    pub admin_key: Option<String>,
    pub server: ServerSettings,
    pub paths: PathSettings,
    pub database: DatabaseSettings,
    /// Where the knowledge base's vectors live: Qdrant Edge in the data folder (default) or a
    /// Qdrant server shared by several instances.
    pub index: IndexSettings,
    /// Several instances on one PostgreSQL database: fan-out, shared presence, one leader.
    pub cluster: ClusterSettings,
    pub encoder: EncoderOptions,
    pub chunking: ChunkingOptions,
    pub intents: IntentSettings,
    pub retrieval: RetrievalSettings,
    pub policy: PolicySettings,
    /// Who writes answers: the best chunk itself (default) or an LLM grounded on the top chunks.
    pub answer: AnswerSettings,
    pub handoff: HandoffSettings,
    /// What is masked in free text before it is stored, logged or sent anywhere.
    pub privacy: crate::privacy::PrivacySettings,
    /// Requests per address, messages per conversation, open WebSockets.
    pub limits: LimitSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    /// Longest customer message accepted, in characters; longer ones get 413.
    pub max_message_chars: usize,
    /// Largest request body (uploads included), in bytes.
    pub max_body_bytes: usize,
    /// Requests handled at once; more wait (back-pressure rather than overload).
    pub max_concurrent_requests: usize,
    /// A request taking longer than this is cut off with 503.
    pub request_timeout_secs: u64,
    /// On SIGTERM/Ctrl-C, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// Web origins allowed to call the customer API from a browser (pages embedding the widget
    /// on another site), e.g. `https://www.example.com`; `*` allows any. Empty: same origin only.
    pub cors_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_message_chars: 4000,
            max_body_bytes: 20 * 1024 * 1024,
            max_concurrent_requests: 512,
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathSettings {
    /// The knowledge folder: documents, FAQ files and intents.yaml.
    pub knowledge: PathBuf,
    /// Where Baton keeps its state: the SQLite database, the vector index, caches.
    pub data: PathBuf,
    /// Where `make models` installed the model files (with the SHA256SUMS manifest).
    pub models: PathBuf,
    /// Templates of what the bot says (clarify questions, handoff messages).
    pub prompts: PathBuf,
    /// Public evaluation data sets (CLINC150, StackFAQ, ...), for `baton eval`.
    pub eval_data: PathBuf,
}

impl Default for PathSettings {
    fn default() -> Self {
        Self {
            knowledge: "knowledge".into(),
            data: "data".into(),
            models: "models".into(),
            prompts: "prompts".into(),
            eval_data: "../shared/data".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`. Unset: `sqlite://<data>/baton.db`.
    pub url: Option<String>,
    /// SQLite only: `full` (default: acknowledged messages survive power loss) or `normal`
    /// (faster; they survive a crash of the process, not of the machine).
    pub sqlite_synchronous: crate::store::sql::SqliteSynchronous,
}

/// Whether this instance coordinates with others through the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// On with PostgreSQL (other instances may share it), off with SQLite (one instance).
    #[default]
    Auto,
    /// Requires PostgreSQL.
    On,
    /// This instance is alone on its database, even PostgreSQL.
    Off,
}

/// `[cluster]`: many instances behind a load balancer on one PostgreSQL (docs/deploy.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    pub mode: ClusterMode,
    /// How often an instance tells the others it is alive, and checks or takes the leadership.
    pub heartbeat_ms: u64,
    /// An instance silent for this long is dead: its agents' sockets count as closed from its
    /// last heartbeat, and a new leader can be elected.
    pub instance_ttl_ms: u64,
    /// The LISTEN/NOTIFY channel; instances of one deployment must agree on it.
    pub channel: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            mode: ClusterMode::Auto,
            heartbeat_ms: 1_000,
            instance_ttl_ms: 5_000,
            channel: "baton_hub".into(),
        }
    }
}

/// `[index]`: the vector index behind retrieval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexSettings {
    /// A Qdrant server's gRPC address (e.g. `http://127.0.0.1:6334`). Unset: Qdrant Edge,
    /// in-process, in `<data>/index`.
    pub url: Option<String>,
    /// The server collection holding the chunks (instances of one business share it).
    pub collection: String,
    /// The name of the environment variable holding the server's API key (never put in a file
    /// or logged). Unset or empty variable: no key is sent.
    pub api_key_env: String,
    /// Limit for each call to the server, connecting included.
    pub timeout_ms: u64,
}

impl IndexSettings {
    /// How to reach the Qdrant server, when one is configured; the API key is read from
    /// `api_key_env` now.
    pub fn server(&self) -> Option<crate::index::server::ServerIndexSettings> {
        let url = self.url.as_ref()?;
        Some(crate::index::server::ServerIndexSettings {
            url: url.clone(),
            collection: self.collection.clone(),
            api_key: std::env::var(&self.api_key_env)
                .ok()
                .filter(|key| !key.is_empty()),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        })
    }
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            url: None,
            collection: "baton_chunks".into(),
            api_key_env: "BATON_QDRANT_API_KEY".into(),
            timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntentSettings {
    /// Intents file; relative paths are resolved against the knowledge folder.
    pub file: PathBuf,
    /// In-scope score below which a message is out of scope. Unset: the threshold learned from
    /// held-out examples when the classifier was trained.
    pub oos_threshold: Option<f32>,
    /// How many alternative intents the understanding lists.
    pub alternatives: usize,
}

impl Default for IntentSettings {
    fn default() -> Self {
        Self {
            file: "intents.yaml".into(),
            oos_threshold: None,
            alternatives: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// A knowledge chunk at least this similar (cosine) can be given as the answer.
    pub answer_min_score: f32,
    /// Between this and `answer_min_score` the bot offers the top articles instead of answering.
    pub clarify_min_score: f32,
    /// When the intent is in scope with at least this probability, a knowledge match at or above
    /// `clarify_min_score` is enough to answer: the intent confirms what the question is about.
    pub confident_intent: f32,
    /// Intent probability below which the intent is treated as unknown.
    pub intent_min_confidence: f32,
    /// When the top two intents are closer than this (probability), the bot asks which one.
    pub ambiguity_margin: f32,
    /// Consecutive clarify/failed turns after which the bot hands off (`repeated_failure`).
    pub max_failed_turns: u32,
    /// Longest answer text, in characters, when answering straight from a chunk.
    pub max_answer_chars: usize,
    /// An out-of-scope message with no knowledge hands off straight away (true), or first gets a
    /// request to rephrase, handing off if it happens again (false, the default: on the demo
    /// conversation scripts it raised decision accuracy from 73.9% to 77.4% and handoff
    /// precision from 48.5% to 57.1%, since off-topic chatter and gibberish rarely need a person).
    pub handoff_out_of_scope: bool,
    /// Conversation frustration (0..1) at or above which the bot hands off (`frustration`).
    pub frustration_threshold: f32,
    /// A question that turns on words the business never uses goes to a person (`not_covered`)
    /// unless a knowledge chunk matches it at least this well: then the help centre covers it
    /// in its own words ("broadband" for its "internet").
    pub covered_min_score: f32,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            answer_min_score: 0.55,
            clarify_min_score: 0.40,
            confident_intent: 0.80,
            intent_min_confidence: 0.40,
            ambiguity_margin: 0.15,
            max_failed_turns: 2,
            max_answer_chars: 700,
            handoff_out_of_scope: false,
            frustration_threshold: 0.7,
            covered_min_score: 0.75,
        }
    }
}

/// `[answer]`: how an answer from the knowledge base is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerSettings {
    pub writer: AnswerWriterKind,
    pub llm: LlmSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerWriterKind {
    /// The best chunk, trimmed at a sentence boundary to `policy.max_answer_chars`.
    #[default]
    Extractive,
    /// An OpenAI-compatible chat model, given the top chunks as numbered passages (`[answer.llm]`).
    Llm,
}

/// `[answer.llm]`: any OpenAI-compatible server (llama.cpp's llama-server, vLLM, a hosted API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8081/v1`.
    pub base_url: String,
    pub model: String,
    /// The name of the environment variable that holds the API key (the key itself is never
    /// put in a file or logged). Unset or empty variable: no key is sent.
    pub api_key_env: String,
    /// The whole answer (first token to last) must arrive within this, or the extractive answer
    /// is given instead.
    pub timeout_ms: u64,
    pub max_tokens: u32,
    pub temperature: f32,
    /// How many of the top chunks are given to the model as numbered passages.
    pub passages: usize,
    /// Earlier turns of the conversation given to the model (newest last).
    pub history_turns: usize,
    /// After this many failures in a row the circuit opens: no call is made for
    /// `breaker_cooldown_secs`, so a dead server costs nothing per message.
    pub breaker_failures: u32,
    pub breaker_cooldown_secs: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8081/v1".into(),
            model: "local".into(),
            api_key_env: "BATON_LLM_API_KEY".into(),
            timeout_ms: 8_000,
            max_tokens: 160,
            temperature: 0.2,
            passages: 3,
            history_turns: 4,
            breaker_failures: 3,
            breaker_cooldown_secs: 30,
        }
    }
}

/// `[limits]`: abuse limits at the edge (enforced by `http::limits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained API requests per second from one client address (0: no limit).
    pub requests_per_ip_per_second: u32,
    /// Requests one address may make at once before the sustained rate applies.
    pub requests_per_ip_burst: u32,
    /// Sustained customer messages per minute in one conversation (0: no limit).
    pub messages_per_conversation_per_minute: u32,
    pub messages_per_conversation_burst: u32,
    /// Customer WebSockets open at once (0: no limit).
    pub max_customer_sockets: usize,
    /// Agent WebSockets open at once (0: no limit).
    pub max_agent_sockets: usize,
    /// Behind a reverse proxy every request comes from the proxy: name the header that carries
    /// the client's address (e.g. `x-forwarded-for`; its first entry is used). Unset: the peer
    /// address. Only set it when the proxy overwrites the header, or clients can pick their own.
    pub client_ip_header: Option<String>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_ip_per_second: 20,
            requests_per_ip_burst: 100,
            messages_per_conversation_per_minute: 60,
            messages_per_conversation_burst: 20,
            max_customer_sockets: 20_000,
            max_agent_sockets: 2_000,
            client_ip_header: None,
        }
    }
}

/// How handed-off conversations reach agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffSettings {
    /// `auto`: assign to a free agent directly; `offer`: offer it, the agent accepts within
    /// `offer_timeout_secs` or it goes to someone else.
    pub assignment: AssignmentMode,
    pub offer_timeout_secs: u64,
    /// An assigned conversation whose customer has waited this long for an agent reply goes back
    /// to the head of the queue.
    pub agent_reply_timeout_secs: u64,
    /// An agent who disconnects and does not return within this loses their conversations.
    pub disconnect_grace_secs: u64,
    /// Capacity of agents created without one.
    pub default_capacity: i64,
    /// How long an agent login token lasts.
    pub token_ttl_hours: u64,
    /// How often timeouts are checked and queue positions sent.
    pub sweep_interval_ms: u64,
    /// Starting estimate of a conversation's handling time, for wait estimates; refined by what
    /// the server observes.
    pub average_handle_secs: u64,
    /// Frames queued per WebSocket before a client counts as too slow and is disconnected.
    pub connection_queue: usize,
    pub ping_interval_secs: u64,
    /// Weekly opening hours; unset: always open.
    pub business_hours: Option<BusinessHoursConfig>,
    /// Outgoing webhooks for handoff, assignment and resolution events.
    pub webhooks: Vec<WebhookTarget>,
    /// What the bot reads of a customer message while a person owns the conversation.
    pub human_owned_reading: HumanOwnedReading,
}

/// `timezone = "Europe/London"`, `weekly = { mon = "09:00-17:30", sat = "10:00-14:00" }`; days not
/// listed are closed. Several ranges per day: `"09:00-12:00,13:00-17:00"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursConfig {
    pub timezone: String,
    pub weekly: std::collections::BTreeMap<String, String>,
}

/// What the bot reads of a customer message while a person owns the conversation (queued,
/// offered or assigned): the bot says nothing then, so the full pipeline would only feed the
/// agent panel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanOwnedReading {
    /// Sentiment and frustration, which the panel's sentiment and mood line show; the intent
    /// and suggested articles stay those of the bot's last full reading. One small sentiment
    /// pass instead of the encoder, the classifier and retrieval.
    #[default]
    Panel,
    /// Everything, as in a bot-owned conversation: intent and suggested articles follow each
    /// new message.
    Full,
}

impl Default for HandoffSettings {
    fn default() -> Self {
        Self {
            assignment: AssignmentMode::Auto,
            offer_timeout_secs: 30,
            agent_reply_timeout_secs: 300,
            disconnect_grace_secs: 60,
            default_capacity: 3,
            token_ttl_hours: 24 * 7,
            sweep_interval_ms: 1000,
            average_handle_secs: 300,
            connection_queue: 128,
            ping_interval_secs: 20,
            business_hours: None,
            webhooks: Vec::new(),
            human_owned_reading: HumanOwnedReading::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentMode {
    Auto,
    Offer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// Identifies the target (and its delivery cursor); keep it stable.
    pub name: String,
    pub url: String,
    /// HMAC-SHA256 key: the body is signed in the `X-Baton-Signature: sha256=<hex>` header.
    pub secret: String,
    /// Event kinds to send; default: handoff, assigned, resolved.
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
    /// Attempts per event before it is given up (logged and counted).
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

fn default_webhook_events() -> Vec<String> {
    vec!["handoff".into(), "assigned".into(), "resolved".into()]
}

fn default_webhook_attempts() -> u32 {
    8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `baton=debug,tower_http=info`. `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info,qdrant_edge=warn,qdrant_edge::common::flags=error".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

/// Values given on the command line; they override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub pairs: Vec<(String, String)>,
}

impl Overrides {
    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.pairs.push((key.to_string(), value.to_string()));
    }

    pub fn set_path(&mut self, key: &str, value: Option<&Path>) {
        if let Some(value) = value {
            self.set(key, value.display());
        }
    }
}

/// `BATON_*` variables are configuration, except `BATON_TEST_*`, which belong to the test harness
/// (which PostgreSQL or browser the tests use) and must not be read as unknown settings.
fn is_configuration_variable(name: &str) -> bool {
    name.starts_with("BATON_") && !name.starts_with(TEST_HARNESS_PREFIX)
}

/// The prefix of environment variables read by tests, never by [`Settings`].
pub const TEST_HARNESS_PREFIX: &str = "BATON_TEST_";

impl Settings {
    /// Load the layers. `file`: an explicit config file (must exist); without it `baton.toml` in the
    /// working directory is read when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests must not depend on the
    /// process environment).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::MissingFile(path.to_path_buf()));
                }
                builder =
                    builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
            }
            None => {
                builder = builder.add_source(
                    config::File::with_name("baton.toml")
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| is_configuration_variable(k))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("BATON")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                // Lists from the environment are comma-separated.
                .list_separator(",")
                .with_list_parse_key("server.cors_origins")
                .source(Some(env)),
        );
        for (key, value) in &overrides.pairs {
            builder = builder.set_override(key.as_str(), value.as_str())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let policy = &self.policy;
        if !(0.0..=1.0).contains(&policy.clarify_min_score)
            || !(0.0..=1.0).contains(&policy.answer_min_score)
            || !(0.0..=1.0).contains(&policy.covered_min_score)
        {
            return Err(ConfigError::Rule(
                "policy scores must be between 0 and 1".into(),
            ));
        }
        if policy.clarify_min_score > policy.answer_min_score {
            return Err(ConfigError::Rule(
                "policy.clarify_min_score must not exceed policy.answer_min_score".into(),
            ));
        }
        if let Some(threshold) = self.intents.oos_threshold {
            if !(0.0..=1.0).contains(&threshold) {
                return Err(ConfigError::Rule(
                    "intents.oos_threshold must be between 0 and 1".into(),
                ));
            }
        }
        for origin in &self.server.cors_origins {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError::Rule(format!(
                    "server.cors_origins: {origin:?} is not a valid origin"
                )));
            }
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::Rule(format!(
                    "server.cors_origins: {origin:?} must look like https://www.example.com"
                )));
            }
        }
        let llm = &self.answer.llm;
        if !(llm.base_url.starts_with("http://") || llm.base_url.starts_with("https://")) {
            return Err(ConfigError::Rule(format!(
                "answer.llm.base_url: {:?} must start with http:// or https://",
                llm.base_url
            )));
        }
        if llm.passages == 0 || llm.max_tokens == 0 || llm.timeout_ms == 0 {
            return Err(ConfigError::Rule(
                "answer.llm.passages, max_tokens and timeout_ms must be positive".into(),
            ));
        }
        if !(0.0..=2.0).contains(&llm.temperature) {
            return Err(ConfigError::Rule(
                "answer.llm.temperature must be between 0 and 2".into(),
            ));
        }
        if let Some(url) = &self.index.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Rule(format!(
                    "index.url: {url:?} must start with http:// or https:// (the server's gRPC port, usually 6334)"
                )));
            }
        }
        let collection = &self.index.collection;
        if collection.is_empty()
            || collection.len() > 255
            || !collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Rule(format!(
                "index.collection: {collection:?} must be 1-255 letters, digits, '_' or '-'"
            )));
        }
        if self.index.timeout_ms == 0 {
            return Err(ConfigError::Rule(
                "index.timeout_ms must be positive".into(),
            ));
        }
        let cluster = &self.cluster;
        if cluster.mode == ClusterMode::On && !self.database_url().starts_with("postgres") {
            return Err(ConfigError::Rule(
                "cluster.mode = \"on\" needs PostgreSQL (database.url = \"postgres://...\"): instances coordinate through it".into(),
            ));
        }
        if cluster.heartbeat_ms == 0 || cluster.instance_ttl_ms < 2 * cluster.heartbeat_ms {
            return Err(ConfigError::Rule(
                "cluster.heartbeat_ms must be positive and cluster.instance_ttl_ms at least twice it".into(),
            ));
        }
        if cluster.channel.is_empty()
            || cluster.channel.len() > 63
            || !cluster
                .channel
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::Rule(format!(
                "cluster.channel: {:?} must be 1-63 lower-case letters, digits or '_'",
                cluster.channel
            )));
        }
        if self.server.max_message_chars == 0 {
            return Err(ConfigError::Rule(
                "server.max_message_chars must be positive".into(),
            ));
        }
        if self.retrieval.top_k == 0 || self.retrieval.candidates < self.retrieval.top_k {
            return Err(ConfigError::Rule(
                "retrieval.top_k must be positive and no larger than retrieval.candidates".into(),
            ));
        }
        if self.handoff.default_capacity < 1 {
            return Err(ConfigError::Rule(
                "handoff.default_capacity must be at least 1".into(),
            ));
        }
        for target in &self.handoff.webhooks {
            if !(target.url.starts_with("http://") || target.url.starts_with("https://")) {
                return Err(ConfigError::Rule(format!(
                    "webhook {}: url must be http(s)",
                    target.name
                )));
            }
            if target.secret.len() < 16 {
                return Err(ConfigError::Rule(format!(
                    "webhook {}: secret must be at least 16 characters",
                    target.name
                )));
            }
        }
        if !(0..=19).contains(&self.encoder.nice) {
            // Below 0 needs privileges a service should not run with; above 19 does not exist.
            return Err(ConfigError::Rule(format!(
                "encoder.nice must be between 0 and 19, not {}",
                self.encoder.nice
            )));
        }
        if let Some(key) = &self.admin_key {
            if key.len() < 12 {
                return Err(ConfigError::Rule(
                    "admin_key must be at least 12 characters".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether this instance runs as one of several (see [`ClusterMode`]).
    pub fn clustered(&self) -> bool {
        match self.cluster.mode {
            ClusterMode::Auto => self.database_url().starts_with("postgres"),
            ClusterMode::On => true,
            ClusterMode::Off => false,
        }
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.paths.data.join("baton.db").display()),
        }
    }

    /// The intents file, resolved against the knowledge folder.
    pub fn intents_file(&self) -> PathBuf {
        if self.intents.file.is_absolute() {
            self.intents.file.clone()
        } else {
            self.paths.knowledge.join(&self.intents.file)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::load_with_env(
            Some(Path::new("/nonexistent.toml")),
            &Overrides::default(),
            env(&[]),
        );
        assert!(matches!(settings, Err(ConfigError::MissingFile(_))));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.toml");
        std::fs::write(&file, "").unwrap();
        let settings =
            Settings::load_with_env(Some(&file), &Overrides::default(), env(&[])).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.database_url(), "sqlite://data/baton.db");
        assert_eq!(
            settings.intents_file(),
            PathBuf::from("knowledge/intents.yaml")
        );
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "[server]\nbind = \"0.0.0.0:9000\"\nmax_message_chars = 100\n[policy]\nanswer_min_score = 0.6\n",
        )
        .unwrap();
        let mut overrides = Overrides::default();
        overrides.set("server.bind", "127.0.0.1:0");
        let settings = Settings::load_with_env(
            Some(&file),
            &overrides,
            env(&[
                ("BATON_SERVER__MAX_MESSAGE_CHARS", "200"),
                ("BATON_ADMIN_KEY", "a-long-admin-key"),
                ("BATON_DATABASE__URL", "postgres://x@localhost/db"),
                (
                    "BATON_SERVER__CORS_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.server.bind, "127.0.0.1:0"); // flag beats file
        assert_eq!(settings.server.max_message_chars, 200); // env beats file
        assert_eq!(settings.policy.answer_min_score, 0.6); // file beats default
        assert_eq!(settings.admin_key.as_deref(), Some("a-long-admin-key"));
        assert_eq!(settings.database_url(), "postgres://x@localhost/db");
        assert_eq!(
            settings.server.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "[policy]\nanswer_min_score = 0.3\nclarify_min_score = 0.5\n",
        )
        .unwrap();
        let err =
            Settings::load_with_env(Some(&file), &Overrides::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("clarify_min_score"), "{err}");

        std::fs::write(&file, "[polciy]\nanswer_min_score = 0.3\n").unwrap();
        let err =
            Settings::load_with_env(Some(&file), &Overrides::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("polciy"), "{err}");

        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("BATON_ADMIN_KEY", "short")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("admin_key"), "{err}");

        for nice in ["-5", "20"] {
            let err = Settings::load_with_env(
                None,
                &Overrides::default(),
                env(&[("BATON_ENCODER__NICE", nice)]),
            )
            .unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "encoder.nice must be between 0 and 19, not {nice}"
                )),
                "{err}"
            );
        }
        let settings = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("BATON_ENCODER__NICE", "0")]),
        )
        .unwrap();
        assert_eq!(settings.encoder.nice, 0);
    }

    #[test]
    fn test_harness_variables_are_not_settings_but_unknown_baton_variables_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.toml");
        std::fs::write(&file, "").unwrap();
        let settings = Settings::load_with_env(
            Some(&file),
            &Overrides::default(),
            env(&[
                ("BATON_TEST_POSTGRES_URL", "postgres://x@127.0.0.1/y"),
                ("BATON_TEST_CHROMIUM", "/usr/bin/chromium"),
                ("BATON_PATHS__EVAL_DATA", "/data/evals"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.paths.eval_data, Path::new("/data/evals"));

        let err = Settings::load_with_env(
            Some(&file),
            &Overrides::default(),
            env(&[("BATON_EVAL_DATA", "/data/evals")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("eval_data"), "{err}");
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("baton.example.toml");
        let settings =
            Settings::load_with_env(Some(&example), &Overrides::default(), env(&[])).unwrap();
        assert_eq!(
            settings,
            Settings::default(),
            "baton.example.toml drifted from the defaults"
        );
    }
}
