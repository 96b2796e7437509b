//! The `baton` command line. Each subcommand is a thin wrapper over the library; errors come back
//! as one line for `main` to print.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::{AppState, Components, StartupError};
use crate::config::{ConfigError, Overrides, Settings};
use crate::knowledge::ingest::{IngestError, UPLOAD_PREFIX};
use crate::knowledge::loaders;

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "AI-first customer support with human handoff"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: baton.toml in the working directory, when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Knowledge folder (documents, FAQ files, intents.yaml).
    #[arg(long, global = true)]
    pub knowledge: Option<PathBuf>,
    /// Data directory (database, vector index, caches).
    #[arg(long = "data-dir", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Models directory (installed by `make models`).
    #[arg(long, global = true)]
    pub models: Option<PathBuf>,
    /// Log format: pretty or json.
    #[arg(long, global = true)]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: sync the knowledge folder, train the intents, serve HTTP.
    Serve {
        /// Address to listen on.
        #[arg(long)]
        bind: Option<String>,
        /// Data directory (same as the global --data-dir).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Load files or folders into the knowledge base.
    Ingest {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Inspect or change the knowledge base.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Train the intent classifier from intents.yaml (cached by the file's hash).
    Intents {
        #[command(subcommand)]
        command: IntentsCommand,
    },
    /// Manage agent accounts (works while the server runs).
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Measure the bot on evaluation data.
    Eval {
        #[command(subcommand)]
        command: crate::tools::eval::EvalCommand,
    },
    /// Measure latency: the encoder alone and full customer turns over HTTP.
    Bench(crate::tools::bench::BenchArgs),
    /// Load a running server with customers and agents over WebSockets.
    Loadtest(crate::tools::loadtest::LoadArgs),
    /// Kill -9 a server (started by this command) under load, restart it, and count lost and
    /// duplicated messages.
    Crashtest(crate::tools::loadtest::crash::CrashArgs),
    /// Check that the model files are installed and intact.
    Models,
}

#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// List documents with their chunk counts.
    Ls,
    /// Remove a document (by id or source) and its chunks.
    Rm { document: String },
    /// Show the top chunks for a query, with scores.
    Search {
        query: String,
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Create an agent. Without --password-stdin a password is generated and printed once.
    Add {
        name: String,
        /// Teams whose queues the agent serves, comma-separated (e.g. billing,technical); `*` for all.
        #[arg(long, default_value = "general")]
        skills: String,
        /// Conversations held at once (default: handoff.default_capacity).
        #[arg(long)]
        capacity: Option<i64>,
        /// Name shown to customers (default: the login name).
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List agents with skills, capacity and presence.
    Ls,
    /// Set a new password (read from standard input, or generated and printed).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Issue a bearer token for an integration acting as this agent.
    Token { name: String },
}

#[derive(Debug, Subcommand)]
pub enum IntentsCommand {
    /// Train (or load from cache) and print the training figures.
    Train,
    /// Tell which intents are too thin, too close to each other or overlapping, with examples
    /// (works while the server runs; trains nothing it keeps).
    Check {
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("{0}")]
    Eval(String),
    #[error("{0}")]
    Other(String),
}

impl Cli {
    /// Settings from every layer, with this command line's flags on top.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut overrides = Overrides::default();
        overrides.set_path("paths.knowledge", self.global.knowledge.as_deref());
        overrides.set_path("paths.data", self.global.data_dir.as_deref());
        overrides.set_path("paths.models", self.global.models.as_deref());
        if let Some(format) = &self.global.log_format {
            overrides.set("log.format", format);
        }
        if let Command::Serve { bind, data } = &self.command {
            if let Some(bind) = bind {
                overrides.set("server.bind", bind);
            }
            overrides.set_path("paths.data", data.as_deref());
        }
        Settings::load(self.global.config.as_deref(), &overrides)
    }
}

pub async fn run(cli: Cli, settings: Settings) -> Result<(), CliError> {
    match cli.command {
        Command::Serve { .. } => serve(settings).await,
        Command::Ingest { paths } => ingest(settings, &paths).await,
        Command::Kb { command } => kb(settings, command).await,
        Command::Agents { command } => agents(settings, command).await,
        Command::Intents {
            command: IntentsCommand::Train,
        } => train_intents(settings).await,
        Command::Intents {
            command: IntentsCommand::Check { json },
        } => check_intents(settings, json.as_deref()).await,
        Command::Eval { command } => crate::tools::eval::run(settings, command)
            .await
            .map_err(|e| CliError::Eval(e.to_string())),
        Command::Loadtest(args) => crate::tools::loadtest::run(args)
            .await
            .map_err(|e| CliError::Other(e.to_string())),
        Command::Crashtest(args) => {
            crate::tools::loadtest::crash::run(args, passthrough_args(&cli.global))
                .await
                .map(|_| ())
                .map_err(|e| CliError::Other(e.to_string()))
        }
        Command::Bench(args) => crate::tools::bench::run(settings, args)
            .await
            .map_err(|e| CliError::Other(e.to_string())),
        Command::Models => {
            let files = crate::assets::ModelFiles::verify(
                &settings.paths.models,
                settings.encoder.precision,
            )
            .map_err(StartupError::from)?;
            println!("runtime   {}", files.runtime_library.display());
            println!("encoder   {}", files.encoder_model.display());
            println!("tokenizer {}", files.encoder_tokenizer.display());
            println!("all model files present with the expected sha256");
            Ok(())
        }
    }
}

/// For `baton crashtest`: the global options (`--config`, `--models`, `--knowledge`) the server child is started with.
fn passthrough_args(global: &GlobalArgs) -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    for (flag, value) in [
        ("--config", &global.config),
        ("--models", &global.models),
        ("--knowledge", &global.knowledge),
    ] {
        if let Some(value) = value {
            args.push(flag.into());
            args.push(value.clone().into_os_string());
        }
    }
    args
}

async fn serve(settings: Settings) -> Result<(), CliError> {
    let bind = settings.server.bind.clone();
    let state = AppState::build(settings).await?;
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| StartupError::Bind {
            addr: bind.clone(),
            reason: e.to_string(),
        })?;
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or(bind);
    tracing::info!(%address, "baton is serving");
    println!("Baton is ready on http://{address}");
    crate::app::serve(listener, state, crate::http::shutdown_signal())
        .await
        .map_err(|e| CliError::Other(format!("server stopped with an error: {e}")))
}

async fn ingest(settings: Settings, paths: &[PathBuf]) -> Result<(), CliError> {
    let components = Components::open(settings).await?;
    let knowledge_root = components.settings.paths.knowledge.canonicalize().ok();
    let mut failures = 0;
    for path in paths {
        for (file, source) in ingest_targets(path, knowledge_root.as_deref())? {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", file.display())))?;
            match components.knowledge.ingest_bytes(&source, &bytes).await {
                Ok(outcome) => println!(
                    "{:<9} {:>3} chunks  {}  ({})",
                    format!("{:?}", outcome.status).to_lowercase(),
                    outcome.chunks,
                    outcome.source,
                    outcome.title
                ),
                Err(IngestError::Load(err)) => {
                    failures += 1;
                    eprintln!("failed    {err}");
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    components.index.flush().await.map_err(StartupError::from)?;
    if failures > 0 {
        return Err(CliError::Other(format!(
            "{failures} file(s) could not be ingested"
        )));
    }
    Ok(())
}

/// The files under `path` and the source name each is stored under: its path relative to the
/// knowledge folder when it lies inside it (so `serve` keeps syncing it), else `upload/...`
/// (kept until removed with `baton kb rm`).
fn ingest_targets(
    path: &Path,
    knowledge_root: Option<&Path>,
) -> Result<Vec<(PathBuf, String)>, CliError> {
    let absolute = path
        .canonicalize()
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
    let files: Vec<(PathBuf, String)> = if absolute.is_dir() {
        loaders::discover_files(&absolute).map_err(|e| CliError::Other(e.to_string()))?
    } else {
        let name = absolute
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if loaders::document_kind_for(&name).is_none() {
            return Err(CliError::Other(format!(
                "{}: unsupported file type (use .md, .txt, .html, .pdf, faq.yaml, *.faq.yaml or .csv)",
                path.display()
            )));
        }
        vec![(absolute.clone(), name)]
    };
    Ok(files
        .into_iter()
        .map(|(file, relative)| {
            let source = match knowledge_root.and_then(|root| file.strip_prefix(root).ok()) {
                Some(inside) => inside.to_string_lossy().to_string(),
                None => format!("{UPLOAD_PREFIX}{relative}"),
            };
            (file, source)
        })
        .collect())
}

async fn kb(settings: Settings, command: KbCommand) -> Result<(), CliError> {
    let components = Components::open(settings).await?;
    match command {
        KbCommand::Ls => {
            let documents = components.knowledge.list().await?;
            println!(
                "{:<22} {:>6}  {:<8} {:<40} TITLE",
                "ID", "CHUNKS", "KIND", "SOURCE"
            );
            for d in &documents {
                println!(
                    "{:<22} {:>6}  {:<8} {:<40} {}",
                    d.id, d.chunk_count, d.kind, d.source, d.title
                );
            }
            let chunks: i64 = documents.iter().map(|d| d.chunk_count).sum();
            println!("{} documents, {chunks} chunks", documents.len());
        }
        KbCommand::Rm { document } => {
            if components.knowledge.remove(&document).await? {
                println!("removed {document}");
            } else {
                return Err(CliError::Other(format!(
                    "no document {document:?} (see baton kb ls)"
                )));
            }
        }
        KbCommand::Search { query, limit } => {
            let embedding = components
                .encoder
                .embed(&query)
                .await
                .map_err(StartupError::from)?;
            let retriever = crate::knowledge::retrieval::Retriever::new(
                components.index.clone(),
                components.settings.retrieval.clone(),
            );
            let hits = retriever
                .search_top(&query, &embedding, limit.max(1))
                .await
                .map_err(StartupError::from)?;
            if hits.is_empty() {
                println!("no chunks (is the knowledge base empty? see baton kb ls)");
            }
            for (rank, hit) in hits.iter().enumerate() {
                let heading = if hit.chunk.heading_path.is_empty() {
                    String::new()
                } else {
                    format!(" > {}", hit.chunk.heading_path.join(" > "))
                };
                println!(
                    "{}. {:.3}{}  {}{}  [{}]",
                    rank + 1,
                    hit.score,
                    hit.keyword_score
                        .map(|k| format!(" (kw {k:.2})"))
                        .unwrap_or_default(),
                    hit.chunk.title,
                    heading,
                    hit.chunk.source
                );
                let preview: String = hit
                    .chunk
                    .question
                    .clone()
                    .unwrap_or_else(|| hit.chunk.text.clone())
                    .chars()
                    .take(160)
                    .collect();
                println!("   {}", preview.replace('\n', " "));
            }
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<(String, bool), CliError> {
    if !from_stdin {
        return Ok((crate::handoff::accounts::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Other(format!("cannot read the password: {e}")))?;
    Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
}

async fn agents(settings: Settings, command: AgentsCommand) -> Result<(), CliError> {
    use crate::store::{AgentUpdate, HandoffStore, SqlStore};
    // Only the database: this works next to a running server.
    let store = SqlStore::connect_with(
        &settings.database_url(),
        settings.database.sqlite_synchronous,
    )
    .await
    .map_err(StartupError::from)?;
    let other = |e: crate::store::StoreError| CliError::Other(e.to_string());
    match command {
        AgentsCommand::Add {
            name,
            skills,
            capacity,
            display_name,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            let agent = crate::handoff::accounts::new_agent(
                &name,
                display_name.as_deref(),
                Some(&password),
                &[skills],
                capacity.unwrap_or(settings.handoff.default_capacity),
            )
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
            let created = store.create_agent(&agent).await.map_err(other)?;
            println!(
                "agent {} ({}) created: skills {}, capacity {}",
                created.name,
                created.display_name,
                created.skills.join(","),
                created.capacity
            );
            if generated {
                println!("password: {password}   (shown once; change it with baton agents passwd)");
            }
        }
        AgentsCommand::Ls => {
            let agents = store.list_agents().await.map_err(other)?;
            println!(
                "{:<16} {:<20} {:<24} {:>8} {:>6}  STATUS",
                "NAME", "DISPLAY NAME", "SKILLS", "CAPACITY", "ACTIVE"
            );
            for a in &agents {
                println!(
                    "{:<16} {:<20} {:<24} {:>8} {:>6}  {}",
                    a.name,
                    a.display_name,
                    a.skills.join(","),
                    a.capacity,
                    a.active,
                    a.status.as_str()
                );
            }
            println!("{} agents", agents.len());
        }
        AgentsCommand::Passwd {
            name,
            password_stdin,
        } => {
            let agent = store
                .find_agent_by_name(&name)
                .await
                .map_err(other)?
                .ok_or_else(|| {
                    CliError::Other(format!("no agent named {name:?} (see baton agents ls)"))
                })?;
            let (password, generated) = read_password(password_stdin)?;
            let hash = crate::handoff::accounts::hash_password_off_runtime(password.clone())
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            store
                .update_agent(
                    &agent.id,
                    &AgentUpdate {
                        password_hash: Some(hash),
                        ..AgentUpdate::default()
                    },
                )
                .await
                .map_err(other)?;
            println!("password of {name} changed");
            if generated {
                println!("password: {password}   (shown once)");
            }
        }
        AgentsCommand::Token { name } => {
            let agent = store
                .find_agent_by_name(&name)
                .await
                .map_err(other)?
                .ok_or_else(|| {
                    CliError::Other(format!("no agent named {name:?} (see baton agents ls)"))
                })?;
            let (token, hash) = crate::handoff::accounts::new_token();
            let now = crate::handoff::clock::Clock::now(&crate::handoff::clock::SystemClock);
            let expires = now + settings.handoff.token_ttl_hours as i64 * 3_600_000;
            store
                .insert_agent_token(&agent.id, &hash, now, expires)
                .await
                .map_err(other)?;
            println!("{token}");
            eprintln!(
                "token for {name}, valid {} hours (send it as Authorization: Bearer ...)",
                settings.handoff.token_ttl_hours
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn train_intents(settings: Settings) -> Result<(), CliError> {
    // Loading logs each weakness of the file (thin intents, duplicates) as a warning.
    let components = Arc::new(Components::open(settings).await?);
    let recognizer = components.intents().await?;
    let info = recognizer.info();
    println!(
        "{} intents, {} examples{}",
        info.intents,
        info.examples,
        if info.out_of_scope_examples > 0 {
            format!(", {} out-of-scope examples", info.out_of_scope_examples)
        } else {
            String::new()
        }
    );
    println!(
        "cross-validated accuracy {:.1}%; out-of-scope threshold {:.3} accepts {:.1}% of held-out examples{}",
        info.cross_validated_accuracy * 100.0,
        info.learned_threshold,
        info.held_out_acceptance * 100.0,
        info.held_out_oos_recall
            .map(|r| format!(" and rejects {:.1}% of held-out out-of-scope ones", r * 100.0))
            .unwrap_or_default()
    );
    println!(
        "{} (embedding {} ms, training {} ms)",
        if recognizer.from_cache() {
            "loaded from cache"
        } else {
            "trained"
        },
        info.embed_millis,
        info.train_millis
    );
    Ok(())
}

/// `baton intents check`: embeds the examples with the server's encoder, cross-validates them
/// exactly as training does, and reports what to improve. Opens neither the database nor the
/// data directory, so it runs beside a live server.
async fn check_intents(settings: Settings, json: Option<&Path>) -> Result<(), CliError> {
    use crate::nlp::classifier::{cross_validate, FitOptions, TrainingSet};
    use crate::nlp::intent_model::{out_of_scope_texts, training_texts};
    use crate::nlp::intents_check;

    let path = settings.intents_file();
    let origin = path.display().to_string();
    let (file, _) = crate::nlp::intents::IntentsFile::read(&path)
        .map_err(|e| CliError::Other(e.to_string()))?;
    let files =
        crate::assets::ModelFiles::verify(&settings.paths.models, settings.encoder.precision)
            .map_err(StartupError::from)?;
    let encoder = crate::nlp::encoder::EncoderPool::start(&files, &settings.encoder)
        .map_err(StartupError::from)?;
    let (texts, labels) = training_texts(&file);
    let encode = |texts: Vec<String>| {
        let encoder = encoder.clone();
        async move {
            encoder
                .encode_many(texts)
                .await
                .map_err(|e| CliError::Other(format!("embedding the examples failed: {e}")))
        }
    };
    // Closeness between examples is read on the embeddings (what its limits were set on); the
    // cross-validation on the intent features, as the classifier is trained.
    let (embeddings, features): (Vec<_>, Vec<_>) = encode(texts.clone())
        .await?
        .into_iter()
        .map(|text| (text.embedding, text.intent_features))
        .unzip();
    let out_of_scope: Vec<_> = encode(out_of_scope_texts(&file))
        .await?
        .into_iter()
        .map(|text| text.intent_features)
        .collect();
    let class_names: Vec<String> = file.intents.iter().map(|i| i.name.clone()).collect();
    let options = FitOptions::default();
    let (cv_embeddings, cv_labels) = (features, labels.clone());
    // Cross-validation trains one model per fold: CPU work, off the runtime.
    let cross_validation = tokio::task::spawn_blocking(move || {
        cross_validate(
            &TrainingSet {
                embeddings: &cv_embeddings,
                labels: &cv_labels,
                class_names: &class_names,
                out_of_scope: &out_of_scope,
            },
            &options.train,
            options.folds,
        )
    })
    .await
    .map_err(|e| CliError::Other(format!("cross-validation task failed: {e}")))?
    .map_err(|e| CliError::Other(format!("cross-validation failed: {e}")))?;
    let report = intents_check::check(&file, &texts, &embeddings, &labels, &cross_validation);
    print!("{}", intents_check::render(&report, &origin));
    if let Some(json) = json {
        let bytes = serde_json::to_vec_pretty(&report)
            .map_err(|e| CliError::Other(format!("cannot encode the report: {e}")))?;
        std::fs::write(json, bytes)
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", json.display())))?;
    }
    Ok(())
}
