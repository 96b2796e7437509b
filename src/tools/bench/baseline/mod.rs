//! `baton bench --baseline`: Baton against the reference Python service (evals/baseline/), side by
//! side in one run.
//!
//! Both run as child processes of the bench on loopback, on the same model files, and are driven
//! the same way over HTTP: Baton's `POST /v1/understand` (encoder, sentiment, intent, hybrid
//! retrieval, frustration) and the Python service's `POST /understand` (encoder, sentiment, the
//! logistic regression Baton trained, top-5 cosine retrieval). The Python service gets Baton's
//! trained intent weights and the knowledge chunks' text from an export this bench writes, so both
//! answer from the same model and the same knowledge.
//!
//! Runs alternate (Baton first on even runs, Python first on odd ones) so that a noisy neighbour
//! on the shared machine does not favour one side. Each run measures one client (sequential
//! requests), then `--concurrency` clients at once, then reads each process's resident memory.
//! Figures are printed and written, never asserted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::{Child, Command};

use super::{BenchArgs, BenchError, LatencySummary, SAMPLE_MESSAGES};
use crate::app::{AppState, StartupError};
use crate::config::Settings;
use crate::knowledge::retrieval::embedding_views;
use crate::nlp::classifier::LinearExport;
use crate::tools::process;

mod page;

/// How long either service may take to become ready (Baton syncs the knowledge and trains the
/// intents; Python embeds every chunk).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The admin key the bench gives its own Baton child (the understand endpoint is an admin one).
const BENCH_ADMIN_KEY: &str = "baton-bench-admin-key";

/// What the Python service reads at start: Baton's trained intent weights and the knowledge.
#[derive(Debug, Serialize)]
struct BaselineInput {
    intent_model: LinearExport,
    chunks: Vec<ExportedChunk>,
}

#[derive(Debug, Serialize)]
struct ExportedChunk {
    id: String,
    title: String,
    /// The texts Baton embeds for this chunk (see `embedding_views`).
    views: Vec<String>,
}

/// One side of the comparison, as the bench drives it.
struct Service {
    endpoint: Endpoint,
    child: Child,
    log: PathBuf,
}

/// Where a service answers `understand`: cheap to clone into each concurrent client.
#[derive(Clone)]
struct Endpoint {
    name: &'static str,
    understand_url: String,
    bearer: Option<String>,
}

impl Service {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn name(&self) -> &'static str {
        self.endpoint.name
    }
}

impl Endpoint {
    async fn understand(
        &self,
        client: &reqwest::Client,
        text: &str,
    ) -> Result<serde_json::Value, String> {
        let response = self.send(client, text).await?;
        response.json().await.map_err(|e| e.to_string())
    }

    /// The request, checked for a success status; the body is left to the caller.
    async fn send(
        &self,
        client: &reqwest::Client,
        text: &str,
    ) -> Result<reqwest::Response, String> {
        let mut request = client
            .post(&self.understand_url)
            .json(&serde_json::json!({ "text": text }));
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{} answered {status}: {body}", self.name));
        }
        Ok(response)
    }
}

#[derive(Debug, Serialize)]
pub struct RunFigures {
    pub run: usize,
    pub one_client: LatencySummary,
    pub concurrent_clients: usize,
    pub concurrent: LatencySummary,
    pub throughput_msg_per_s: f64,
    /// Resident memory after the run, and the peak so far (VmRSS / VmHWM).
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Baton only: the server's own understanding time from its responses (one client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_understanding: Option<LatencySummary>,
    /// Baton only: its encoder alone (tokenise + model + pooling, in process, one message at a
    /// time), measured just before this run, which the understanding time is divided by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_alone: Option<LatencySummary>,
}

#[derive(Debug, Serialize)]
pub struct ServiceFigures {
    pub name: &'static str,
    pub runs: Vec<RunFigures>,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Python's one-client p50 over Baton's (above 1: Baton is faster).
    pub one_client_p50_speedup: f64,
    pub one_client_p99_speedup: f64,
    /// Baton's throughput over Python's at the same concurrency (goal: at least 2).
    pub throughput: f64,
    /// Python's resident memory over Baton's.
    pub rss: f64,
    /// Baton's server-side understanding p50 over its encoder alone (goal: at most 1.3): the
    /// median over runs of each run's ratio, since the encoder's own speed moves between runs
    /// on a shared machine (seen: p50 1.5 to 2.4 ms in three invocations).
    pub understanding_over_encoder: f64,
}

#[derive(Debug, Serialize)]
pub struct BaselineReport {
    pub build_profile: &'static str,
    pub messages_per_run: usize,
    pub concurrent_messages_per_run: usize,
    pub concurrency: usize,
    pub baton: ServiceFigures,
    pub python: ServiceFigures,
    /// From the medians over runs.
    pub ratios: Ratios,
}

/// Kills the children however the bench ends (an error half-way must not leave servers behind).
struct Children(Vec<Service>);

impl Drop for Children {
    fn drop(&mut self) {
        for service in &mut self.0 {
            let _ = service.child.start_kill();
        }
    }
}

pub async fn run(settings: Settings, args: BenchArgs) -> Result<(), BenchError> {
    let baseline_dir = args.baseline_dir.clone();
    install_python_packages(&baseline_dir).await?;

    let scratch = tempfile::tempdir().map_err(|e| io_error("temporary directory", e))?;
    let mut settings = settings;
    settings.database.url = None;
    settings.admin_key = Some(BENCH_ADMIN_KEY.to_string());
    // One client address sends everything: the per-address limit would measure itself.
    settings.limits.requests_per_ip_per_second = 0;
    settings.paths.models = absolute(&settings.paths.models)?;
    settings.paths.knowledge = absolute(&settings.paths.knowledge)?;

    // The export and the encoder-alone figures come from an in-process Baton on its own data
    // directory. It stays open, idle, while the children are measured: the encoder alone is
    // measured again before each of Baton's runs, so each run's understanding is compared with
    // the encoder as fast as the machine is at that moment.
    let export_path = scratch.path().join("baseline-input.json");
    let in_process = {
        let mut export_settings = settings.clone();
        export_settings.paths.data = scratch.path().join("export-data");
        export_settings.server.bind = "127.0.0.1:0".into();
        AppState::build(export_settings).await?
    };
    write_export(&in_process, &export_path).await?;

    let mut children = Children(Vec::new());
    children
        .0
        .push(start_baton(&settings, scratch.path()).await?);
    children.0.push(
        start_python(
            &baseline_dir,
            &settings.paths.models,
            settings.encoder.precision.model_file(),
            &export_path,
            scratch.path(),
        )
        .await?,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()
        .map_err(|e| BenchError::Http(e.to_string()))?;
    for service in children.0.iter_mut() {
        wait_until_ready(service, &client).await?;
    }
    check_same_answers(&children.0, &client).await?;

    let mut figures: [Vec<RunFigures>; 2] = [Vec::new(), Vec::new()];
    for run in 0..args.runs {
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let service = &children.0[index];
            let encoder_alone = if service.name() == "baton" {
                let encoder =
                    super::measure_encoder(&in_process, args.warmup, args.messages).await?;
                println!(
                    "run {} encoder alone (Baton, in process)  {}",
                    run + 1,
                    encoder.line()
                );
                Some(encoder)
            } else {
                None
            };
            let mut run_figures = measure(service, &client, &args, run).await?;
            run_figures.encoder_alone = encoder_alone;
            println!(
                "run {} {:<7} one client: p50 {:.2} p95 {:.2} p99 {:.2} ms | {} clients: {:.0} msg/s, p50 {:.2} p99 {:.2} ms | RSS {:.0} MiB (peak {:.0})",
                run + 1,
                service.name(),
                run_figures.one_client.p50_ms,
                run_figures.one_client.p95_ms,
                run_figures.one_client.p99_ms,
                run_figures.concurrent_clients,
                run_figures.throughput_msg_per_s,
                run_figures.concurrent.p50_ms,
                run_figures.concurrent.p99_ms,
                run_figures.rss_mib,
                run_figures.peak_rss_mib,
            );
            figures[index].push(run_figures);
        }
    }
    drop(children);
    drop(in_process);

    let [baton_runs, python_runs] = figures;
    let ratios = ratios(&baton_runs, &python_runs);
    let report = BaselineReport {
        build_profile: super::build_profile(),
        messages_per_run: args.messages,
        concurrent_messages_per_run: args.concurrent_messages,
        concurrency: args.concurrency,
        baton: ServiceFigures {
            name: "baton",
            runs: baton_runs,
        },
        python: ServiceFigures {
            name: "python",
            runs: python_runs,
        },
        ratios,
    };
    print_summary(&report);
    if cfg!(debug_assertions) {
        println!("note: this is a debug build of Baton; use a release build for figures");
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| BenchError::Write(path.display().to_string(), e.to_string()))?;
        write_file(path, &json)?;
    }
    if let Some(path) = &args.html {
        write_file(path, page::baseline_page(&report).as_bytes())?;
        println!("HTML report written to {}", path.display());
    }
    Ok(())
}

async fn install_python_packages(baseline_dir: &Path) -> Result<(), BenchError> {
    let setup = baseline_dir.join("setup.sh");
    if !setup.is_file() {
        return Err(BenchError::Baseline(format!(
            "{} not found: run the bench from the repository root or give --baseline-dir",
            setup.display()
        )));
    }
    let status = Command::new("bash")
        .arg(&setup)
        .status()
        .await
        .map_err(|e| BenchError::Baseline(format!("cannot run {}: {e}", setup.display())))?;
    if !status.success() {
        return Err(BenchError::Baseline(format!(
            "{} failed ({status}); the reference service needs python3 with pip",
            setup.display()
        )));
    }
    Ok(())
}

async fn write_export(state: &AppState, path: &Path) -> Result<(), BenchError> {
    let store = &state.components.store;
    let documents = store.list_documents().await.map_err(StartupError::from)?;
    let mut chunks = Vec::new();
    for summary in documents {
        let Some(document) = store
            .get_document(&summary.id)
            .await
            .map_err(StartupError::from)?
        else {
            continue; // deleted between the two calls: nothing to export
        };
        chunks.extend(document.chunks.iter().map(|chunk| ExportedChunk {
            id: chunk.id.clone(),
            title: chunk.title.clone(),
            views: embedding_views(chunk),
        }));
    }
    if chunks.is_empty() {
        return Err(BenchError::Baseline(
            "the knowledge folder gave no chunks: the comparison needs a knowledge base".into(),
        ));
    }
    let input = BaselineInput {
        intent_model: state.engine.intents().model().linear_export(),
        chunks,
    };
    let json = serde_json::to_vec(&input)
        .map_err(|e| BenchError::Write(path.display().to_string(), e.to_string()))?;
    write_file(path, &json)
}

async fn start_baton(settings: &Settings, scratch: &Path) -> Result<Service, BenchError> {
    let port = free_port()?;
    let config_path = scratch.join("baton-bench.toml");
    let mut child_settings = settings.clone();
    child_settings.paths.data = scratch.join("baton-data");
    let toml = toml::to_string(&child_settings)
        .map_err(|e| BenchError::Baseline(format!("cannot write the child's settings: {e}")))?;
    write_file(&config_path, toml.as_bytes())?;
    let log = scratch.join("baton.log");
    let executable = std::env::current_exe().map_err(|e| io_error("the baton executable", e))?;
    let mut command = Command::new(executable);
    command
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .env("BATON_ADMIN_KEY", BENCH_ADMIN_KEY);
    let child = spawn_logged(command, &log)?;
    Ok(Service {
        endpoint: Endpoint {
            name: "baton",
            understand_url: format!("http://127.0.0.1:{port}/v1/understand"),
            bearer: Some(BENCH_ADMIN_KEY.to_string()),
        },
        child,
        log,
    })
}

async fn start_python(
    baseline_dir: &Path,
    models: &Path,
    encoder_file: &str,
    export: &Path,
    scratch: &Path,
) -> Result<Service, BenchError> {
    let port = free_port()?;
    let log = scratch.join("python.log");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = Command::new(python);
    command
        .arg(baseline_dir.join("service.py"))
        .arg("--models")
        .arg(models)
        .arg("--encoder")
        .arg(models.join(encoder_file))
        .arg("--input")
        .arg(export)
        .arg("--port")
        .arg(port.to_string())
        .env("PYTHONPATH", absolute(&baseline_dir.join("site"))?)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let child = spawn_logged(command, &log)?;
    Ok(Service {
        endpoint: Endpoint {
            name: "python",
            understand_url: format!("http://127.0.0.1:{port}/understand"),
            bearer: None,
        },
        child,
        log,
    })
}

fn spawn_logged(mut command: Command, log: &Path) -> Result<Child, BenchError> {
    let file = std::fs::File::create(log).map_err(|e| io_error(&log.display().to_string(), e))?;
    let err = file
        .try_clone()
        .map_err(|e| io_error(&log.display().to_string(), e))?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Baseline(format!("cannot start {command:?}: {e}")))
}

/// A port the kernel just handed out and released. Another process could take it before the
/// child binds it; the child then fails to start and the bench says so.
fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io_error("port", e))?;
    Ok(listener
        .local_addr()
        .map_err(|e| io_error("port", e))?
        .port())
}

async fn wait_until_ready(
    service: &mut Service,
    client: &reqwest::Client,
) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        if let Ok(answer) = service.endpoint.understand(client, "hello").await {
            if answer.get("intent").is_some() {
                println!(
                    "{} ready in {:.1} s",
                    service.name(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        let exited = matches!(service.child.try_wait(), Ok(Some(_)));
        if exited || started.elapsed() > READY_TIMEOUT {
            let log = std::fs::read_to_string(&service.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(BenchError::Baseline(format!(
                "{} did not become ready ({}); the end of its log:\n{}",
                service.name(),
                if exited { "it exited" } else { "timed out" },
                tail.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Both sides must do the same job: the same top intent on the sample messages (they share the
/// weights) and a known chunk first for most of them. A mismatch is printed, not fatal: Baton's
/// scoring also fuses nearest examples and keywords, so a few may differ.
async fn check_same_answers(
    services: &[Service],
    client: &reqwest::Client,
) -> Result<(), BenchError> {
    let mut same_intent = 0;
    let mut same_first_chunk = 0;
    for text in SAMPLE_MESSAGES {
        let baton = services[0]
            .endpoint
            .understand(client, text)
            .await
            .map_err(BenchError::Http)?;
        let python = services[1]
            .endpoint
            .understand(client, text)
            .await
            .map_err(BenchError::Http)?;
        if baton.pointer("/intent/name") == python.pointer("/intent/name") {
            same_intent += 1;
        }
        if baton.pointer("/knowledge/0/chunk_id") == python.pointer("/knowledge/0/chunk_id") {
            same_first_chunk += 1;
        }
    }
    println!(
        "same top intent on {same_intent}/{n} sample messages, same first chunk on {same_first_chunk}/{n}",
        n = SAMPLE_MESSAGES.len()
    );
    Ok(())
}

async fn measure(
    service: &Service,
    client: &reqwest::Client,
    args: &BenchArgs,
    run: usize,
) -> Result<RunFigures, BenchError> {
    let endpoint = &service.endpoint;
    for text in SAMPLE_MESSAGES.iter().cycle().take(args.warmup) {
        endpoint
            .understand(client, text)
            .await
            .map_err(BenchError::Http)?;
    }
    let mut one_client_ms = Vec::with_capacity(args.messages);
    let mut server_ms = Vec::new();
    for text in SAMPLE_MESSAGES.iter().cycle().take(args.messages) {
        let started = Instant::now();
        let answer = endpoint
            .understand(client, text)
            .await
            .map_err(BenchError::Http)?;
        one_client_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if let Some(total) = answer.pointer("/timings/total_ms").and_then(|v| v.as_f64()) {
            server_ms.push(total);
        }
    }

    // `concurrency` clients share one counter of messages left, so the total is fixed and the
    // throughput is messages over wall time.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency.max(1) {
        let next = next.clone();
        let client = client.clone();
        let total = args.concurrent_messages;
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return Ok::<_, String>(latencies);
                }
                let text = SAMPLE_MESSAGES[index % SAMPLE_MESSAGES.len()];
                let sent = Instant::now();
                let response = endpoint.send(&client, text).await?;
                response.bytes().await.map_err(|e| e.to_string())?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut concurrent_ms = Vec::with_capacity(args.concurrent_messages);
    for task in tasks {
        let latencies = task
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?
            .map_err(BenchError::Http)?;
        concurrent_ms.extend(latencies);
    }
    let wall = started.elapsed().as_secs_f64();
    let (rss_mib, peak_rss_mib) = service.pid().map(resident_memory).unwrap_or((0.0, 0.0));
    Ok(RunFigures {
        run: run + 1,
        one_client: LatencySummary::from_millis(one_client_ms),
        concurrent_clients: args.concurrency.max(1),
        throughput_msg_per_s: concurrent_ms.len() as f64 / wall.max(f64::MIN_POSITIVE),
        concurrent: LatencySummary::from_millis(concurrent_ms),
        rss_mib,
        peak_rss_mib,
        server_understanding: (service.name() == "baton")
            .then(|| LatencySummary::from_millis(server_ms)),
        encoder_alone: None,
    })
}

/// VmRSS and VmHWM of a process, in MiB (0 when /proc cannot be read).
fn resident_memory(pid: u32) -> (f64, f64) {
    let mib = |kib: Option<u64>| kib.map_or(0.0, |kib| kib as f64 / 1024.0);
    (
        mib(process::resident_kib(pid)),
        mib(process::peak_resident_kib(pid)),
    )
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

fn ratios(baton: &[RunFigures], python: &[RunFigures]) -> Ratios {
    let p50 = |runs: &[RunFigures]| median(runs.iter().map(|r| r.one_client.p50_ms));
    let p99 = |runs: &[RunFigures]| median(runs.iter().map(|r| r.one_client.p99_ms));
    let throughput = |runs: &[RunFigures]| median(runs.iter().map(|r| r.throughput_msg_per_s));
    let rss = |runs: &[RunFigures]| median(runs.iter().map(|r| r.rss_mib));
    let understanding_over_encoder = median(baton.iter().filter_map(|r| {
        let understanding = r.server_understanding.as_ref()?.p50_ms;
        let encoder = r.encoder_alone.as_ref()?.p50_ms;
        (encoder > 0.0).then(|| understanding / encoder)
    }));
    Ratios {
        one_client_p50_speedup: ratio(p50(python), p50(baton)),
        one_client_p99_speedup: ratio(p99(python), p99(baton)),
        throughput: ratio(throughput(baton), throughput(python)),
        rss: ratio(rss(python), rss(baton)),
        understanding_over_encoder,
    }
}

fn print_summary(report: &BaselineReport) {
    let ratios = &report.ratios;
    println!(
        "\nmedians over {} runs: Python/Baton one-client p50 {:.2}x, p99 {:.2}x; Baton/Python throughput at {} clients {:.2}x (goal >= 2); Python/Baton RSS {:.2}x",
        report.baton.runs.len(),
        ratios.one_client_p50_speedup,
        ratios.one_client_p99_speedup,
        report.concurrency,
        ratios.throughput,
        ratios.rss,
    );
    println!(
        "Baton understanding p50 / encoder alone p50: {:.2}x (goal <= 1.3)",
        ratios.understanding_over_encoder
    );
}

fn absolute(path: &Path) -> Result<PathBuf, BenchError> {
    std::path::absolute(path).map_err(|e| io_error(&path.display().to_string(), e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| BenchError::Write(parent.display().to_string(), e.to_string()))?;
    }
    std::fs::write(path, bytes)
        .map_err(|e| BenchError::Write(path.display().to_string(), e.to_string()))
}

fn io_error(what: &str, error: std::io::Error) -> BenchError {
    BenchError::Write(what.to_string(), error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(p50: f64, p99: f64, throughput: f64, rss: f64) -> RunFigures {
        let summary = |p50: f64, p99: f64| LatencySummary {
            samples: 1,
            p50_ms: p50,
            p90_ms: p50,
            p95_ms: p50,
            p99_ms: p99,
            mean_ms: p50,
            max_ms: p99,
        };
        RunFigures {
            run: 1,
            one_client: summary(p50, p99),
            concurrent_clients: 16,
            concurrent: summary(p50, p99),
            throughput_msg_per_s: throughput,
            rss_mib: rss,
            peak_rss_mib: rss,
            server_understanding: Some(summary(p50 / 2.0, p99)),
            encoder_alone: None,
        }
    }

    #[test]
    fn ratios_come_from_medians_over_runs() {
        let baton = [
            run_with(4.0, 8.0, 400.0, 200.0),
            run_with(5.0, 9.0, 300.0, 210.0),
            run_with(100.0, 200.0, 10.0, 220.0), // one disturbed run does not move the median
        ];
        let python = [
            run_with(10.0, 18.0, 150.0, 420.0),
            run_with(10.0, 18.0, 150.0, 420.0),
            run_with(10.0, 18.0, 150.0, 420.0),
        ];
        // Each run's understanding is divided by the encoder measured before that run: 2.0 /
        // 1.6, 2.5 / 2.0, 50 / 2.5 -> 1.25, 1.25, 20 -> median 1.25.
        let mut baton = baton;
        for (run, encoder) in baton.iter_mut().zip([1.6, 2.0, 2.5]) {
            run.encoder_alone = Some(LatencySummary::from_millis(vec![encoder; 3]));
        }
        let ratios = ratios(&baton, &python);
        assert_eq!(ratios.one_client_p50_speedup, 2.0);
        assert_eq!(ratios.one_client_p99_speedup, 2.0);
        assert_eq!(ratios.throughput, 2.0);
        assert_eq!(ratios.rss, 2.0);
        assert_eq!(ratios.understanding_over_encoder, 1.25);
    }

    #[test]
    fn median_of_even_and_empty_sets() {
        assert_eq!(median([3.0, 1.0, 2.0, 4.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }

    #[test]
    fn resident_memory_of_this_process_is_read() {
        let (rss, peak) = resident_memory(std::process::id());
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
    }
}
