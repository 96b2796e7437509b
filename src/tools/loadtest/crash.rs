//! `baton crashtest`: kill -9 a server in the middle of a load, restart it on the same data, and
//! count what survived. The generator starts the server itself (this binary, `serve`), runs
//! customers that each send numbered messages over their WebSocket and wait for every `ack`,
//! kills the server with SIGKILL once `--kill-after` messages are acknowledged, starts it again on the same port, and
//! lets every customer reconnect, `resume` and send again what was not acknowledged (with the
//! same `client_message_id`, as a well-behaved client does). At the end it reads every
//! transcript and counts: acknowledged messages that are missing (lost), client message ids
//! stored twice (duplicated), and message ids delivered twice to one customer across the restart.
//! Any of those non-zero fails the run.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use super::{
    ask_for_a_person, connect, http_err, new_conversation, LoadError, SendRetrying, Socket,
};

#[derive(Debug, Args)]
pub struct CrashArgs {
    /// Data directory for the server (default: a fresh temporary one, removed after a clean run).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Customers sending at once.
    #[arg(long, default_value_t = 100)]
    pub customers: usize,
    /// Messages each customer sends, one after the other's acknowledgement.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
    /// Share of customers who first ask for a person (their messages wait in the human queue);
    /// the others talk to the bot.
    #[arg(long, default_value_t = 0.5)]
    pub handed_off: f64,
    /// Kill the server once this many messages are acknowledged (default: half of them), so
    /// the kill always lands mid-stream however fast the machine is.
    #[arg(long)]
    pub kill_after: Option<usize>,
    /// How long a customer keeps trying to reconnect after the server went away.
    #[arg(long, default_value_t = 120)]
    pub reconnect_secs: u64,
}

/// What one customer saw and did.
#[derive(Debug, Default)]
struct CustomerRecord {
    id: String,
    token: String,
    /// seq -> the message id the server acknowledged.
    acked: BTreeMap<usize, i64>,
    /// Message ids delivered on this customer's sockets, with how often.
    delivered: HashMap<i64, usize>,
    reconnects: usize,
    resent: usize,
}

/// The counts the run is judged by.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CrashCounts {
    pub acknowledged: usize,
    pub acknowledged_before_kill: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub delivered_twice: usize,
    pub resent: usize,
    pub reconnects: usize,
}

impl CrashCounts {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.delivered_twice == 0
    }
}

/// A server child process and where it listens.
struct Server {
    child: Child,
    base: String,
}

async fn start_server(
    global: &[OsString],
    data: &Path,
    bind: &str,
    log: &Path,
) -> Result<Server, LoadError> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LoadError::Protocol(format!("cannot write {}: {e}", log.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| LoadError::Protocol(format!("cannot find this program: {e}")))?;
    let mut child = Command::new(exe)
        .args(global)
        .arg("serve")
        .arg("--bind")
        .arg(bind)
        .arg("--data")
        .arg(data)
        // The generator is one address sending as fast as it can: the abuse limits are for
        // other clients.
        .env("BATON_LIMITS__REQUESTS_PER_IP_PER_SECOND", "0")
        .env("BATON_LIMITS__MESSAGES_PER_CONVERSATION_PER_MINUTE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LoadError::Protocol(format!("cannot start the server: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(180), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(base) = line.strip_prefix("Baton is ready on ") {
                return Some(base.trim().to_string());
            }
        }
        None
    })
    .await;
    let Ok(Some(base)) = ready else {
        let _ = child.start_kill();
        return Err(LoadError::Protocol(format!(
            "the server did not become ready (its log: {})",
            log.display()
        )));
    };
    // Keep reading stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server { child, base })
}

pub async fn run(args: CrashArgs, global: Vec<OsString>) -> Result<CrashCounts, LoadError> {
    let scratch = tempfile::tempdir()
        .map_err(|e| LoadError::Protocol(format!("no temporary directory: {e}")))?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| scratch.path().join("data"));
    let log = scratch.path().join("server.log");
    let mut server = start_server(&global, &data, "127.0.0.1:0", &log).await?;
    let base = server.base.clone();
    let bind = base.trim_start_matches("http://").to_string();
    println!("server ready on {base} (data {})", data.display());

    // Conversations: some handed off to the (empty) human queue, the rest with the bot.
    let client = reqwest::Client::new();
    let handed_off = (args.customers as f64 * args.handed_off.clamp(0.0, 1.0)).round() as usize;
    let mut records = Vec::with_capacity(args.customers);
    for index in 0..args.customers {
        let (id, token) = new_conversation(&client, &base).await?;
        if index < handed_off {
            ask_for_a_person(&client, &base, &id, &token).await?;
        }
        records.push(CustomerRecord {
            id,
            token,
            ..CustomerRecord::default()
        });
    }

    // Customers send; the server is killed under them and comes back.
    let acked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for record in records {
        let base = base.clone();
        let acked = acked.clone();
        let messages = args.messages;
        let patience = Duration::from_secs(args.reconnect_secs);
        tasks.push(tokio::spawn(async move {
            customer(base, record, messages, patience, acked).await
        }));
    }
    let total = args.customers * args.messages;
    let kill_after = args
        .kill_after
        .unwrap_or(total / 2)
        .min(total.saturating_sub(1));
    while acked.load(Ordering::SeqCst) < kill_after {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;
    let acknowledged_before_kill = acked.load(Ordering::SeqCst);
    println!(
        "killed the server (SIGKILL) after {:.1} s with {acknowledged_before_kill} messages acknowledged",
        started.elapsed().as_secs_f64()
    );
    let restart = Instant::now();
    let restarted = start_server(&global, &data, &bind, &log).await?;
    println!(
        "restarted on the same data in {:.1} s",
        restart.elapsed().as_secs_f64()
    );
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(record)) => records.push(record),
            Ok(Err(err)) => failures.push(err.to_string()),
            Err(err) => failures.push(err.to_string()),
        }
    }
    println!(
        "all customers done {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );

    // What the server kept.
    let mut counts = CrashCounts {
        acknowledged_before_kill,
        ..CrashCounts::default()
    };
    for record in &records {
        counts.acknowledged += record.acked.len();
        counts.resent += record.resent;
        counts.reconnects += record.reconnects;
        counts.delivered_twice += record.delivered.values().filter(|n| **n > 1).count();
        let transcript: Value = client
            .get(format!(
                "{}/v1/conversations/{}?limit=1000",
                restarted.base, record.id
            ))
            .bearer_auth(&record.token)
            .send_retrying()
            .await
            .map_err(http_err)?
            .json()
            .await
            .map_err(http_err)?;
        let stored = stored_by_client_id(&transcript);
        let (lost, duplicated) = compare(&record.id, &record.acked, &stored);
        counts.lost += lost;
        counts.duplicated += duplicated;
    }
    drop(restarted);
    println!(
        "{} customers x {} messages: {} acknowledged ({} before the kill), {} resent after the restart, {} reconnects",
        records.len(),
        args.messages,
        counts.acknowledged,
        counts.acknowledged_before_kill,
        counts.resent,
        counts.reconnects
    );
    println!(
        "lost {}  duplicated {}  delivered twice {}",
        counts.lost, counts.duplicated, counts.delivered_twice
    );
    if !failures.is_empty() {
        let kept = scratch.keep();
        return Err(LoadError::Protocol(format!(
            "{} customers failed (first: {}); server log kept in {}",
            failures.len(),
            failures[0],
            kept.join("server.log").display()
        )));
    }
    if !counts.clean() {
        let kept = scratch.keep();
        return Err(LoadError::Protocol(format!(
            "messages were lost or duplicated; server log and data kept in {}",
            kept.display()
        )));
    }
    Ok(counts)
}

/// client_message_id -> the ids of the customer messages stored with it.
fn stored_by_client_id(transcript: &Value) -> HashMap<String, Vec<i64>> {
    let mut stored: HashMap<String, Vec<i64>> = HashMap::new();
    for message in transcript["messages"].as_array().into_iter().flatten() {
        if message["role"] != "customer" {
            continue;
        }
        if let (Some(client_id), Some(id)) = (
            message["client_message_id"].as_str(),
            message["id"].as_i64(),
        ) {
            stored.entry(client_id.to_string()).or_default().push(id);
        }
    }
    stored
}

/// (lost, duplicated): acknowledged messages missing or stored under another id, and client ids
/// stored more than once.
fn compare(
    conversation: &str,
    acked: &BTreeMap<usize, i64>,
    stored: &HashMap<String, Vec<i64>>,
) -> (usize, usize) {
    let lost = acked
        .iter()
        .filter(|(seq, id)| {
            stored
                .get(&client_id(conversation, **seq))
                .is_none_or(|ids| !ids.contains(id))
        })
        .count();
    let duplicated = stored.values().filter(|ids| ids.len() > 1).count();
    (lost, duplicated)
}

fn client_id(conversation: &str, seq: usize) -> String {
    format!("{}-{seq}", &conversation[..8.min(conversation.len())])
}

/// One customer: send each message and wait for its ack; on any failure reconnect (until
/// `patience` runs out), resume after the last message seen, and send the same message again.
async fn customer(
    base: String,
    mut record: CustomerRecord,
    messages: usize,
    patience: Duration,
    acked: Arc<AtomicUsize>,
) -> Result<CustomerRecord, LoadError> {
    let path = format!("/v1/conversations/{}/ws", record.id);
    let mut socket: Option<Socket> = None;
    let mut last_seen = 0i64;
    let mut seq = 0;
    let mut down_since: Option<Instant> = None;
    while seq < messages {
        if socket.is_none() {
            match connect(&base, &path, &record.token).await {
                Ok(mut fresh) => {
                    let resume = json!({ "type": "resume", "after": last_seen });
                    if fresh
                        .send(Message::Text(resume.to_string().into()))
                        .await
                        .is_ok()
                    {
                        if down_since.take().is_some() {
                            record.reconnects += 1;
                        }
                        socket = Some(fresh);
                    }
                }
                Err(err) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > patience {
                        return Err(LoadError::Socket(format!(
                            "no connection for {} s: {err}",
                            patience.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        }
        let client_message_id = client_id(&record.id, seq);
        let frame = json!({
            "type": "message",
            "text": format!("crash test message {seq}"),
            "client_message_id": client_message_id,
        });
        let live = socket.as_mut().expect("connected above");
        let outcome = match live.send(Message::Text(frame.to_string().into())).await {
            Ok(()) => wait_for_ack(live, &client_message_id, &mut last_seen, &mut record).await,
            Err(_) => None,
        };
        match outcome {
            Some(message_id) => {
                record.acked.insert(seq, message_id);
                acked.fetch_add(1, Ordering::SeqCst);
                seq += 1;
            }
            None => {
                // The server went away (or never answered): the same message goes again on the
                // next socket; the server must not store it twice.
                socket = None;
                record.resent += 1;
                down_since.get_or_insert_with(Instant::now);
            }
        }
    }
    if let Some(mut socket) = socket {
        let _ = socket.close(None).await;
    }
    Ok(record)
}

/// Read frames until the ack for `client_message_id`; None when the socket ends first or stays
/// silent for 10 s. Every delivered message id is counted on the way.
async fn wait_for_ack(
    socket: &mut Socket,
    client_message_id: &str,
    last_seen: &mut i64,
    record: &mut CustomerRecord,
) -> Option<i64> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .ok()??;
        let Ok(Message::Text(text)) = next else {
            if matches!(next, Ok(Message::Ping(_) | Message::Pong(_))) {
                continue;
            }
            return None;
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("message") => {
                if let Some(id) = frame["message"]["id"].as_i64() {
                    *record.delivered.entry(id).or_default() += 1;
                    *last_seen = (*last_seen).max(id);
                }
            }
            Some("ack") if frame["client_message_id"] == client_message_id => {
                return frame["message_id"].as_i64();
            }
            Some("error") => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_moved_ack_is_lost_and_a_repeated_client_id_is_duplicated() {
        let conversation = "0123456789abcdef";
        let acked = BTreeMap::from([(0, 10), (1, 12), (2, 14)]);
        let mut stored = HashMap::new();
        stored.insert(client_id(conversation, 0), vec![10]);
        stored.insert(client_id(conversation, 1), vec![13]);
        assert_eq!(compare(conversation, &acked, &stored), (2, 0));
        stored.insert(client_id(conversation, 2), vec![14, 15]);
        stored.insert(client_id(conversation, 1), vec![12]);
        assert_eq!(compare(conversation, &acked, &stored), (0, 1));
    }

    #[test]
    fn only_customer_messages_with_client_ids_count() {
        let transcript = json!({"messages": [
            {"id": 1, "role": "customer", "client_message_id": "a-0"},
            {"id": 2, "role": "bot"},
            {"id": 3, "role": "customer"},
            {"id": 4, "role": "customer", "client_message_id": "a-0"},
        ]});
        let stored = stored_by_client_id(&transcript);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored["a-0"], vec![1, 4]);
    }
}
