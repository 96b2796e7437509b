//! `baton loadtest`: many customers and agents on real WebSockets against a running server.
//! Every customer is handed off to a person, gets an agent, and exchanges messages with them; the
//! figures are messages per second and delivery latency in both directions (customer -> agent,
//! agent -> customer), measured with one clock because both ends run in this process. With
//! `--server-pid` it also reads the server's memory before and after the customer sockets open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::tools::bench::LatencySummary;
use crate::tools::process;

pub mod crash;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Agents connect here instead (another instance of a cluster on one PostgreSQL: every
    /// message then crosses instances, customer on `--url`, agent here).
    #[arg(long)]
    pub agent_url: Option<String>,
    /// The server's admin key (agents are created through the admin API).
    #[arg(long, env = "BATON_ADMIN_KEY")]
    pub admin_key: String,
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Messages each customer sends (each answered by its agent).
    #[arg(long, default_value_t = 5)]
    pub messages: usize,
    /// Read this process's memory (VmRSS) before and after the customers connect.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Requests in flight while setting up.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Each customer waits this long (on average) between their messages, starting at a random
    /// offset: a steady load of customers / pace messages per second instead of everyone at once.
    /// 0 sends as fast as replies come back (a burst).
    #[arg(long, default_value_t = 0)]
    pub pace_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Socket(String),
    #[error("{0}")]
    Protocol(String),
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Setting up a thousand customers from one address meets the server's per-address request
/// limit: wait as `Retry-After` says and send again, as a well-behaved client does.
trait SendRetrying {
    async fn send_retrying(self) -> Result<reqwest::Response, reqwest::Error>;
}

impl SendRetrying for reqwest::RequestBuilder {
    async fn send_retrying(self) -> Result<reqwest::Response, reqwest::Error> {
        loop {
            let Some(attempt) = self.try_clone() else {
                return self.send().await;
            };
            let response = attempt.send().await?;
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Ok(response);
            }
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }
}

/// A new conversation: (id, token).
async fn new_conversation(
    client: &reqwest::Client,
    base: &str,
) -> Result<(String, String), LoadError> {
    let conversation: Value = client
        .post(format!("{base}/v1/conversations"))
        .send_retrying()
        .await
        .map_err(http_err)?
        .json()
        .await
        .map_err(http_err)?;
    let field = |name: &str| conversation[name].as_str().unwrap_or_default().to_string();
    Ok((field("id"), field("token")))
}

/// The customer asks for a person; the conversation must be handed off.
async fn ask_for_a_person(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    token: &str,
) -> Result<(), LoadError> {
    let turn: Value = client
        .post(format!("{base}/v1/conversations/{id}/messages"))
        .bearer_auth(token)
        .json(&json!({ "text": "I want to talk to a human" }))
        .send_retrying()
        .await
        .map_err(http_err)?
        .json()
        .await
        .map_err(http_err)?;
    if turn["decision"] != "handoff" {
        return Err(LoadError::Protocol(format!(
            "expected a handoff, got {turn}"
        )));
    }
    Ok(())
}

fn http_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Http(e.to_string())
}

async fn connect(base: &str, path: &str, token: &str) -> Result<Socket, LoadError> {
    let url = format!(
        "{}{}?token={}",
        base.replacen("http://", "ws://", 1),
        path,
        token
    );
    // Nagle off, as a browser's WebSocket has it: the generator's small frames go out at once.
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| LoadError::Socket(format!("cannot connect {path}: {e}")))
}

/// CPU used by `pid` between two readings, as (seconds, cores in use on average).
fn cpu_used(before: Option<f64>, after: Option<f64>, elapsed: f64) -> Option<(f64, f64)> {
    let used = after? - before?;
    Some((used, used / elapsed.max(1e-9)))
}

/// Microseconds since the run started; stamps travel inside message texts.
struct Stopwatch {
    started: Instant,
    /// The wall-clock time of `started`, to tell when a stamp was (Unix milliseconds).
    started_unix_ms: i64,
}

impl Stopwatch {
    fn start() -> Self {
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        Self {
            started: Instant::now(),
            started_unix_ms,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn unix_ms(&self, stamp_us: u64) -> i64 {
        self.started_unix_ms + (stamp_us / 1000) as i64
    }
}

/// The latency that counts as the tail in the per-second report (the p99 goal).
const TAIL_MS: f64 = 50.0;

/// One delivered message: when it was sent (the run's stopwatch, us) and how long it took.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    sent_us: u64,
    latency_ms: f64,
}

impl Delivery {
    fn since(sent_us: u64, now_us: u64) -> Self {
        Self {
            sent_us,
            latency_ms: now_us.saturating_sub(sent_us) as f64 / 1000.0,
        }
    }
}

fn latencies_ms(deliveries: &[Delivery]) -> Vec<f64> {
    deliveries
        .iter()
        .map(|delivery| delivery.latency_ms)
        .collect()
}

/// The messages sent within one second of the run (by the stopwatch), and how many of them were slow.
#[derive(Debug, PartialEq)]
struct SecondOfRun {
    start_us: u64,
    messages: usize,
    over_tail: usize,
    max_ms: f64,
}

/// The `count` seconds with the most deliveries over `tail_ms` (ties: the slowest one first),
/// in time order; seconds with none over the tail are left out.
fn slowest_seconds(deliveries: &[Delivery], tail_ms: f64, count: usize) -> Vec<SecondOfRun> {
    let mut seconds: HashMap<u64, SecondOfRun> = HashMap::new();
    for delivery in deliveries {
        let second = delivery.sent_us / 1_000_000;
        let entry = seconds.entry(second).or_insert(SecondOfRun {
            start_us: second * 1_000_000,
            messages: 0,
            over_tail: 0,
            max_ms: 0.0,
        });
        entry.messages += 1;
        if delivery.latency_ms > tail_ms {
            entry.over_tail += 1;
        }
        entry.max_ms = entry.max_ms.max(delivery.latency_ms);
    }
    let mut slow: Vec<SecondOfRun> = seconds
        .into_values()
        .filter(|second| second.over_tail > 0)
        .collect();
    slow.sort_by(|a, b| {
        b.over_tail
            .cmp(&a.over_tail)
            .then(b.max_ms.total_cmp(&a.max_ms))
    });
    slow.truncate(count);
    slow.sort_by_key(|second| second.start_us);
    slow
}

/// "HH:MM:SS.mmm" of a Unix time in milliseconds, to find the moment in the server's log.
fn utc_time(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms).map_or_else(
        || unix_ms.to_string(),
        |time| time.format("%H:%M:%S%.3f").to_string(),
    )
}

pub async fn run(args: LoadArgs) -> Result<(), LoadError> {
    let client = reqwest::Client::new();
    let base = args.url.trim_end_matches('/').to_string();
    let agent_base = args
        .agent_url
        .as_deref()
        .map_or(base.clone(), |url| url.trim_end_matches('/').to_string());
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let clock = Arc::new(Stopwatch::start());
    let capacity = args.customers.div_ceil(args.agents.max(1)).max(1) as i64;

    // Agents.
    println!("creating {} agents (capacity {capacity} each)", args.agents);
    let mut agent_tokens = Vec::new();
    for index in 0..args.agents {
        let name = format!("load-{run_id}-{index}");
        let response = client
            .post(format!("{agent_base}/v1/admin/agents"))
            .bearer_auth(&args.admin_key)
            .json(&json!({ "name": name, "password": "load-test-password", "skills": ["*"], "capacity": capacity }))
            .send_retrying()
            .await
            .map_err(http_err)?;
        if !response.status().is_success() {
            return Err(LoadError::Http(format!(
                "creating an agent: {}",
                response.text().await.unwrap_or_default()
            )));
        }
        let login: Value = client
            .post(format!("{agent_base}/v1/agents/login"))
            .json(&json!({ "name": name, "password": "load-test-password" }))
            .send_retrying()
            .await
            .map_err(http_err)?
            .json()
            .await
            .map_err(http_err)?;
        agent_tokens.push(login["token"].as_str().unwrap_or_default().to_string());
    }
    let assigned = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let to_agent_log = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let mut agent_tasks = Vec::new();
    for (index, token) in agent_tokens.iter().enumerate() {
        let mut socket = connect(&agent_base, "/v1/agents/ws", token).await?;
        let assigned = assigned.clone();
        let latencies = to_agent_log.clone();
        let clock = clock.clone();
        agent_tasks.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                match frame["type"].as_str() {
                    Some("assigned") => {
                        if let Some(id) = frame["conversation"]["conversation_id"].as_str() {
                            assigned.lock().insert(id.to_string(), index);
                        }
                    }
                    Some("message") if frame["message"]["role"] == "customer" => {
                        // "load <seq> <sent_us>": answer at once with our own send stamp.
                        let body = frame["message"]["text"].as_str().unwrap_or_default();
                        let parts: Vec<&str> = body.split(' ').collect();
                        if parts.len() == 3 && parts[0] == "load" {
                            if let Ok(sent) = parts[2].parse::<u64>() {
                                latencies.lock().push(Delivery::since(sent, clock.now()));
                            }
                            let reply = json!({
                                "type": "message",
                                "conversation_id": frame["conversation_id"],
                                "text": format!("reply {} {}", parts[1], clock.now()),
                            });
                            if socket
                                .send(Message::Text(reply.to_string().into()))
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }));
    }

    // Customers hand off.
    println!("{} customers ask for a person", args.customers);
    let gate = Arc::new(Semaphore::new(args.parallel.max(1)));
    let mut setups = Vec::new();
    for _ in 0..args.customers {
        let client = client.clone();
        let base = base.clone();
        let gate = gate.clone();
        setups.push(tokio::spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .map_err(|e| LoadError::Http(e.to_string()))?;
            let (id, token) = new_conversation(&client, &base).await?;
            ask_for_a_person(&client, &base, &id, &token).await?;
            Ok::<_, LoadError>((id, token))
        }));
    }
    let mut customers = Vec::new();
    for setup in setups {
        customers.push(setup.await.map_err(|e| LoadError::Http(e.to_string()))??);
    }
    let waited = Instant::now();
    while assigned.lock().len() < customers.len() {
        if waited.elapsed() > Duration::from_secs(120) {
            return Err(LoadError::Protocol(format!(
                "only {} of {} conversations were assigned",
                assigned.lock().len(),
                customers.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "all {} conversations assigned in {:.1} s",
        customers.len(),
        waited.elapsed().as_secs_f64()
    );

    // Customers connect and talk.
    let rss_before = args.server_pid.and_then(process::resident_kib);
    let mut sockets = Vec::new();
    for (id, token) in &customers {
        let mut socket = connect(&base, &format!("/v1/conversations/{id}/ws"), token).await?;
        // hello
        socket.next().await;
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = args.server_pid.and_then(process::resident_kib);
    println!("{} customer sockets open", sockets.len());

    let to_customer_log = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let server_cpu_before = args.server_pid.and_then(process::cpu_seconds);
    let server_switches_before = args.server_pid.and_then(process::context_switches);
    let own_cpu_before = process::cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut talks = Vec::new();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let clock = clock.clone();
        let latencies = to_customer_log.clone();
        let messages = args.messages;
        let pace = args.pace_ms;
        // Spread the starts evenly over one pace interval.
        let offset = if pace == 0 {
            0
        } else {
            pace * index as u64 / customers.len().max(1) as u64
        };
        talks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(offset)).await;
            for seq in 0..messages {
                if seq > 0 && pace > 0 {
                    tokio::time::sleep(Duration::from_millis(pace)).await;
                }
                let frame =
                    json!({ "type": "message", "text": format!("load {seq} {}", clock.now()) });
                socket
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .map_err(|e| LoadError::Socket(e.to_string()))?;
                // Wait for the agent's reply to this message.
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
                        .await
                        .map_err(|_| LoadError::Protocol("no reply within 30 s".into()))?;
                    let Some(Ok(Message::Text(text))) = next else {
                        if matches!(next, Some(Ok(_))) {
                            continue;
                        }
                        return Err(LoadError::Socket("customer socket closed".into()));
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if frame["type"] == "message" && frame["message"]["role"] == "agent" {
                        let body = frame["message"]["text"].as_str().unwrap_or_default();
                        let parts: Vec<&str> = body.split(' ').collect();
                        if parts.len() == 3 && parts[1] == seq.to_string() {
                            if let Ok(sent) = parts[2].parse::<u64>() {
                                latencies.lock().push(Delivery::since(sent, clock.now()));
                            }
                            break;
                        }
                    }
                }
            }
            let _ = socket.close(None).await;
            Ok::<_, LoadError>(())
        }));
    }
    let mut failures = 0;
    for talk in talks {
        if !matches!(talk.await, Ok(Ok(()))) {
            failures += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = cpu_used(
        server_cpu_before,
        args.server_pid.and_then(process::cpu_seconds),
        elapsed,
    );
    let own_cpu = cpu_used(
        own_cpu_before,
        process::cpu_seconds(std::process::id()),
        elapsed,
    );
    let server_switches = server_switches_before
        .zip(args.server_pid.and_then(process::context_switches))
        .map(|(before, after)| after.saturating_sub(before));
    for task in agent_tasks {
        task.abort();
    }
    let to_agent_deliveries = std::mem::take(&mut *to_agent_log.lock());
    let to_customer_deliveries = std::mem::take(&mut *to_customer_log.lock());
    let to_agent = LatencySummary::from_millis(latencies_ms(&to_agent_deliveries));
    let to_customer = LatencySummary::from_millis(latencies_ms(&to_customer_deliveries));
    let delivered = to_agent.samples + to_customer.samples;
    println!(
        "{} customers x {} messages with {} agents{}: {} messages delivered in {:.1} s = {:.0} messages/s ({} customers failed)",
        customers.len(),
        args.messages,
        args.agents,
        if args.pace_ms > 0 { format!(", one message per customer every {} ms", args.pace_ms) } else { " (burst)".to_string() },
        delivered,
        elapsed,
        delivered as f64 / elapsed.max(1e-9),
        failures
    );
    println!(
        "customer -> agent  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        to_agent.p50_ms, to_agent.p99_ms, to_agent.max_ms
    );
    println!(
        "agent -> customer  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        to_customer.p50_ms, to_customer.p99_ms, to_customer.max_ms
    );
    // Where the tail sits in time: one slow second (a stalled disk, a pause) makes the whole p99
    // of a short run, and its wall-clock time is what to look for in the server's log.
    for (direction, deliveries) in [
        ("customer -> agent", &to_agent_deliveries),
        ("agent -> customer", &to_customer_deliveries),
    ] {
        for second in slowest_seconds(deliveries, TAIL_MS, 3) {
            println!(
                "  slowest second {direction}: {} UTC, {} messages sent, {} over {TAIL_MS} ms, max {:.1} ms",
                utc_time(clock.unix_ms(second.start_us)),
                second.messages,
                second.over_tail,
                second.max_ms
            );
        }
    }
    if let Some((seconds, cores)) = server_cpu {
        println!(
            "server CPU while talking: {seconds:.2} s ({cores:.2} cores) = {:.0} us per delivered message",
            seconds * 1e6 / delivered.max(1) as f64
        );
    }
    if let Some(switches) = server_switches {
        println!(
            "server context switches while talking: {switches} = {:.1} per delivered message",
            switches as f64 / delivered.max(1) as f64
        );
    }
    if let Some((seconds, cores)) = own_cpu {
        println!("load generator CPU while talking: {seconds:.2} s ({cores:.2} cores)");
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "server memory: {before} KiB before, {after} KiB with {} customer sockets = {:.1} KiB per connection",
            customers.len(),
            (after.saturating_sub(before)) as f64 / customers.len().max(1) as f64
        );
    }
    if failures > 0 {
        return Err(LoadError::Protocol(format!(
            "{failures} customers did not complete"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(sent_ms: u64, latency_ms: f64) -> Delivery {
        Delivery {
            sent_us: sent_ms * 1000,
            latency_ms,
        }
    }

    #[test]
    fn the_seconds_with_most_slow_deliveries_come_out_in_time_order() {
        let deliveries = vec![
            delivery(100, 2.0),
            delivery(900, 3.0),
            // second 1: one slow
            delivery(1_100, 60.0),
            delivery(1_500, 1.0),
            // second 2: none slow
            delivery(2_000, 49.9),
            // second 3: three slow
            delivery(3_000, 51.0),
            delivery(3_400, 120.0),
            delivery(3_999, 80.0),
            // second 5: two slow
            delivery(5_010, 70.0),
            delivery(5_020, 75.0),
        ];
        let slowest = slowest_seconds(&deliveries, 50.0, 2);
        assert_eq!(
            slowest,
            vec![
                SecondOfRun {
                    start_us: 3_000_000,
                    messages: 3,
                    over_tail: 3,
                    max_ms: 120.0
                },
                SecondOfRun {
                    start_us: 5_000_000,
                    messages: 2,
                    over_tail: 2,
                    max_ms: 75.0
                },
            ]
        );
        // Asking for more seconds than are slow lists only the slow ones.
        assert_eq!(slowest_seconds(&deliveries, 50.0, 10).len(), 3);
        assert!(slowest_seconds(&deliveries, 500.0, 3).is_empty());
    }

    #[test]
    fn a_delivery_measures_from_its_send_stamp_and_never_goes_negative() {
        assert_eq!(Delivery::since(1_000, 3_500).latency_ms, 2.5);
        assert_eq!(Delivery::since(5_000, 4_000).latency_ms, 0.0);
        assert_eq!(utc_time(0), "00:00:00.000");
        assert_eq!(utc_time(3_723_004), "01:02:03.004");
    }
}
