//! WebSocket loops for customers and agents (protocol `baton.v1`, docs/protocol.md).
//!
//! Each loop owns its socket and waits on four things: a frame from the client, an ephemeral
//! frame from the hub (bounded: a full queue closes the socket with code 4008 so a slow client
//! cannot make the server buffer without limit), a wake-up for new durable messages (read from the
//! store after the last id sent, so messages arrive in order, once, also after a reconnect), and
//! the ping timer (no pong for two intervals closes the socket).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use serde::Serialize;

use crate::handoff::protocol::{
    AgentCommand, AgentFrame, CustomerCommand, CustomerFrame, MessageView, Typist, PROTOCOL,
};
use crate::handoff::{Actor, HandoffError, TransferTarget};
use crate::http::error::AppError;
use crate::state::AppState;
use crate::store::{AgentRecord, ConversationState, MessageRecord};

/// Close code for a client that did not keep up; it should reconnect and resume.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code when the server shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client that stopped answering pings.
pub const CLOSE_PING_TIMEOUT: u16 = 4000;
/// A write that takes longer than this means the client is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages read per store query when catching a client up.
const SYNC_PAGE: i64 = 200;

type WsSink = futures::stream::SplitSink<WebSocket, Message>;

async fn send_json(sink: &mut WsSink, frame: &impl Serialize) -> bool {
    let Ok(text) = serde_json::to_string(frame) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            WRITE_TIMEOUT,
            sink.send(Message::Text(Utf8Bytes::from(text)))
        )
        .await,
        Ok(Ok(()))
    )
}

async fn close(sink: &mut WsSink, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// Messages of a conversation after `after`, in id order.
async fn messages_after(state: &AppState, conversation_id: &str, after: i64) -> Vec<MessageRecord> {
    match state
        .engine
        .transcript(conversation_id, Some(after), SYNC_PAGE)
        .await
    {
        Ok(messages) => messages,
        Err(err) => {
            tracing::warn!(conversation_id, error = %err, "could not read messages for a socket");
            Vec::new()
        }
    }
}

// -------------------------------------------------------------------------------------------
// Customers

pub async fn run_customer(state: AppState, conversation_id: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let hub = state.handoff.hub().clone();
    let mut inbox = hub.connect_customer(&conversation_id);
    state
        .metrics
        .connected_customers
        .set(hub.connected_customer_count() as i64);

    let conversation = state
        .engine
        .store()
        .get_conversation(&conversation_id)
        .await
        .ok()
        .flatten();
    let last_id = state
        .engine
        .store()
        .recent_messages(&conversation_id, i64::MAX, 1)
        .await
        .ok()
        .and_then(|m| m.last().map(|m| m.id));
    let hello = CustomerFrame::Hello {
        protocol: PROTOCOL.into(),
        conversation_id: conversation_id.clone(),
        state: conversation
            .map(|c| c.state)
            .unwrap_or(ConversationState::Bot),
        last_message_id: last_id,
    };
    // Until the client asks to resume from an earlier id, it gets messages newer than now.
    let mut last_sent = last_id.unwrap_or(0);
    let ping_every = Duration::from_secs(state.settings.handoff.ping_interval_secs.max(1));
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let closing = hub.closing();
    tokio::pin!(closing);

    let mut greeted = send_json(&mut sink, &hello).await;
    // A waiting customer learns their place straight away, not at the next queue change.
    if greeted {
        if let Ok(Some(position)) = state.handoff.queue_position(&conversation_id).await {
            greeted = send_json(&mut sink, &position).await;
        }
    }
    if greeted {
        loop {
            tokio::select! {
                _ = &mut closing => {
                    close(&mut sink, CLOSE_GOING_AWAY, "server shutting down: reconnect and resume").await;
                    break;
                }
                incoming = stream.next() => {
                    let Some(Ok(message)) = incoming else { break };
                    last_heard = Instant::now();
                    match message {
                        Message::Text(text) => {
                            let reply = match serde_json::from_str::<CustomerCommand>(&text) {
                                Ok(command) => customer_command(&state, &conversation_id, command, &mut last_sent, &mut sink).await,
                                Err(err) => Some(error_frame("bad_frame", &format!("not a baton.v1 command: {err}"))),
                            };
                            if let Some(reply) = reply {
                                if !send_json(&mut sink, &reply).await { break; }
                            }
                        }
                        Message::Binary(_) => {
                            if !send_json(&mut sink, &error_frame("bad_frame", "frames are JSON text")).await { break; }
                        }
                        Message::Close(_) => break,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                frame = inbox.frames.recv() => match frame {
                    Some(frame) => if !send_json(&mut sink, &frame).await { break },
                    None => {
                        close(&mut sink, CLOSE_TOO_SLOW, "too slow: reconnect and resume").await;
                        break;
                    }
                },
                _ = inbox.wake.notified() => {
                    if !sync_customer(&state, &conversation_id, &mut last_sent, &mut sink).await { break; }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        close(&mut sink, CLOSE_PING_TIMEOUT, "no pong").await;
                        break;
                    }
                    if tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default()))).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    hub.disconnect_customer(&conversation_id, inbox.id);
    state
        .metrics
        .connected_customers
        .set(hub.connected_customer_count() as i64);
}

/// Send every message after `last_sent`; false when the socket failed.
async fn sync_customer(
    state: &AppState,
    conversation_id: &str,
    last_sent: &mut i64,
    sink: &mut WsSink,
) -> bool {
    loop {
        let messages = messages_after(state, conversation_id, *last_sent).await;
        let full_page = messages.len() as i64 == SYNC_PAGE;
        for message in &messages {
            let frame = CustomerFrame::Message {
                message: MessageView::from(message),
            };
            if !send_json(sink, &frame).await {
                return false;
            }
            *last_sent = message.id;
        }
        if !full_page {
            return true;
        }
    }
}

fn error_frame(code: &str, message: &str) -> CustomerFrame {
    CustomerFrame::Error {
        code: code.into(),
        message: message.into(),
    }
}

async fn customer_command(
    state: &AppState,
    conversation_id: &str,
    command: CustomerCommand,
    last_sent: &mut i64,
    sink: &mut WsSink,
) -> Option<CustomerFrame> {
    match command {
        CustomerCommand::Ping => Some(CustomerFrame::Pong),
        CustomerCommand::Resume { after } => {
            *last_sent = after.max(0);
            if sync_customer(state, conversation_id, last_sent, sink).await {
                None
            } else {
                Some(error_frame(
                    "resume_failed",
                    "could not send the conversation",
                ))
            }
        }
        CustomerCommand::Message {
            text,
            client_message_id,
        } => {
            let text = text.trim().to_string();
            let limit = state.settings.server.max_message_chars;
            if text.is_empty() {
                return Some(error_frame("bad_request", "text must not be empty"));
            }
            if text.chars().count() > limit {
                return Some(error_frame(
                    "message_too_long",
                    &format!("the limit is {limit} characters"),
                ));
            }
            if client_message_id
                .as_ref()
                .is_some_and(|id| id.is_empty() || id.len() > 128)
            {
                return Some(error_frame(
                    "bad_request",
                    "client_message_id must be 1 to 128 bytes",
                ));
            }
            // Refused before it is stored: the client may send it again after the wait.
            if let Err(refused) = state.limits.check_message(conversation_id) {
                return Some(error_frame(
                    "rate_limited",
                    &AppError::from(refused).to_string(),
                ));
            }
            let bot_answers = state
                .engine
                .store()
                .get_conversation(conversation_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|c| !c.state.human_owned());
            // While the bot works, the customer sees it typing.
            if bot_answers {
                let typing = CustomerFrame::Typing {
                    who: Typist::Bot,
                    name: None,
                    on: true,
                };
                if !send_json(sink, &typing).await {
                    return None;
                }
            }
            // An LLM's answer is forwarded as delta frames while it is written.
            let (deltas, mut written) = tokio::sync::mpsc::unbounded_channel();
            let mut customer_gone = false;
            let result = {
                let turn = state.engine.handle_customer_message_streaming(
                    conversation_id,
                    &text,
                    client_message_id.as_deref(),
                    Some(&deltas),
                );
                tokio::pin!(turn);
                loop {
                    tokio::select! {
                        result = &mut turn => break result,
                        Some(text) = written.recv(), if !customer_gone => {
                            // The turn goes on without a listener: its reply is stored either way.
                            customer_gone = !send_json(sink, &CustomerFrame::Delta { text }).await;
                        }
                    }
                }
            };
            if customer_gone {
                return None;
            }
            if bot_answers {
                let typing = CustomerFrame::Typing {
                    who: Typist::Bot,
                    name: None,
                    on: false,
                };
                let _ = send_json(sink, &typing).await;
            }
            match result {
                Ok(result) => {
                    // The stored messages (the customer's and the reply) follow through the sync.
                    let ack = CustomerFrame::Ack {
                        client_message_id,
                        message_id: result.message_id,
                    };
                    if !send_json(sink, &ack).await {
                        return None;
                    }
                    if sync_customer(state, conversation_id, last_sent, sink).await {
                        None
                    } else {
                        Some(error_frame("sync_failed", "could not send the reply"))
                    }
                }
                Err(err) => {
                    tracing::warn!(conversation_id, error = %err, "customer message over WebSocket failed");
                    Some(error_frame(
                        "unavailable",
                        "your message could not be processed; send it again",
                    ))
                }
            }
        }
        CustomerCommand::Typing { on } => {
            let agent = state
                .handoff
                .handoff_store()
                .get_handoff(conversation_id)
                .await
                .ok()
                .flatten()
                .filter(|h| h.state == ConversationState::Assigned)
                .and_then(|h| h.agent_id);
            state
                .handoff
                .customer_typing(agent.as_deref(), conversation_id, on);
            None
        }
        CustomerCommand::LeaveMessage { email, text } => {
            match state
                .handoff
                .leave_message(conversation_id, &email, &text)
                .await
            {
                Ok(()) => None,
                Err(err) => Some(handoff_error(&err)),
            }
        }
        CustomerCommand::Rate { score, comment } => match state
            .handoff
            .rate(conversation_id, score, comment.as_deref())
            .await
        {
            Ok(()) => None,
            Err(err) => Some(handoff_error(&err)),
        },
    }
}

fn handoff_error(err: &HandoffError) -> CustomerFrame {
    let code = error_code(err);
    if code == "internal" {
        tracing::error!(error = %err, "handoff action failed");
        return error_frame(code, "something went wrong; try again");
    }
    error_frame(code, &err.to_string())
}

pub fn error_code(err: &HandoffError) -> &'static str {
    match err {
        HandoffError::ConversationNotFound(_) | HandoffError::AgentNotFound(_) => "not_found",
        HandoffError::NotHeld(_) => "not_yours",
        HandoffError::NotQueued(_) | HandoffError::NotOffered(_) => "conflict",
        HandoffError::AgentFull(_) => "agent_full",
        HandoffError::Invalid(_) => "bad_request",
        HandoffError::Store(_) => "internal",
    }
}

// -------------------------------------------------------------------------------------------
// Agents

pub async fn run_agent(state: AppState, agent: AgentRecord, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let service = state.handoff.clone();
    let hub = service.hub().clone();
    let mut inbox = hub.connect_agent(&agent.id);
    // Per conversation held: the last message id this connection has sent.
    let mut last_sent: HashMap<String, i64> = HashMap::new();
    let ping_every = Duration::from_secs(state.settings.handoff.ping_interval_secs.max(1));
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();

    let hello = match service.agent_connected(&agent).await {
        Ok(hello) => hello,
        Err(err) => {
            tracing::error!(agent = %agent.id, error = %err, "agent connection failed");
            service.agent_disconnected(&agent.id, inbox.id).await;
            return;
        }
    };
    track(&hello, &mut last_sent);
    let mut alive = send_json(&mut sink, &hello).await;
    if alive {
        if let Err(err) = service.dispatch().await {
            tracing::warn!(error = %err, "dispatch after an agent connected failed");
        }
    }
    let closing = hub.closing();
    tokio::pin!(closing);
    while alive {
        tokio::select! {
            _ = &mut closing => {
                close(&mut sink, CLOSE_GOING_AWAY, "server shutting down: reconnect").await;
                break;
            }
            incoming = stream.next() => {
                let Some(Ok(message)) = incoming else { break };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => {
                        let reply = match serde_json::from_str::<AgentCommand>(&text) {
                            Ok(command) => agent_command(&state, &agent, command, &mut last_sent, &mut sink).await,
                            Err(err) => Some(agent_error("bad_frame", &format!("not a baton.v1 command: {err}"), None)),
                        };
                        if let Some(reply) = reply {
                            alive = send_json(&mut sink, &reply).await;
                        }
                    }
                    Message::Binary(_) => alive = send_json(&mut sink, &agent_error("bad_frame", "frames are JSON text", None)).await,
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            frame = inbox.frames.recv() => match frame {
                Some(frame) => {
                    track(&frame, &mut last_sent);
                    alive = send_json(&mut sink, &frame).await;
                }
                None => {
                    close(&mut sink, CLOSE_TOO_SLOW, "too slow: reconnect").await;
                    break;
                }
            },
            _ = inbox.wake.notified() => {
                if inbox.resync.swap(false, std::sync::atomic::Ordering::AcqRel) {
                    let shown = last_sent.keys().cloned().collect();
                    match service.agent_resync(&agent.id, &shown).await {
                        Ok(frames) => {
                            for frame in frames {
                                track(&frame, &mut last_sent);
                                if !send_json(&mut sink, &frame).await {
                                    alive = false;
                                    break;
                                }
                            }
                            inbox.dirty.lock().extend(last_sent.keys().cloned());
                        }
                        Err(err) => tracing::warn!(agent = %agent.id, error = %err, "agent resync failed"),
                    }
                }
                let dirty: Vec<String> = inbox.dirty.lock().drain().collect();
                for conversation_id in dirty {
                    if !sync_agent(&state, &conversation_id, &mut last_sent, &mut sink).await {
                        alive = false;
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    close(&mut sink, CLOSE_PING_TIMEOUT, "no pong").await;
                    break;
                }
                alive = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default()))).await.is_ok_and(|r| r.is_ok());
            }
        }
    }
    service.agent_disconnected(&agent.id, inbox.id).await;
}

/// Remember which conversations this connection shows, from the frames it sends.
fn track(frame: &AgentFrame, last_sent: &mut HashMap<String, i64>) {
    match frame {
        AgentFrame::Hello { conversations, .. } => {
            for conversation in conversations {
                let last = conversation.transcript.last().map(|m| m.id).unwrap_or(0);
                last_sent.insert(conversation.conversation_id.clone(), last);
            }
        }
        AgentFrame::Offer { conversation, .. } | AgentFrame::Assigned { conversation } => {
            let last = conversation.transcript.last().map(|m| m.id).unwrap_or(0);
            let entry = last_sent
                .entry(conversation.conversation_id.clone())
                .or_insert(0);
            *entry = (*entry).max(last);
        }
        AgentFrame::Unassigned {
            conversation_id, ..
        } => {
            last_sent.remove(conversation_id);
        }
        _ => {}
    }
}

async fn sync_agent(
    state: &AppState,
    conversation_id: &str,
    last_sent: &mut HashMap<String, i64>,
    sink: &mut WsSink,
) -> bool {
    let Some(mut after) = last_sent.get(conversation_id).copied() else {
        return true;
    };
    loop {
        let messages = messages_after(state, conversation_id, after).await;
        let full_page = messages.len() as i64 == SYNC_PAGE;
        for message in &messages {
            let frame = AgentFrame::Message {
                conversation_id: conversation_id.to_string(),
                message: MessageView::from(message),
            };
            if !send_json(sink, &frame).await {
                return false;
            }
            after = message.id;
            last_sent.insert(conversation_id.to_string(), after);
        }
        if !full_page {
            return true;
        }
    }
}

fn agent_error(code: &str, message: &str, conversation_id: Option<&str>) -> AgentFrame {
    AgentFrame::Error {
        code: code.into(),
        message: message.into(),
        conversation_id: conversation_id.map(str::to_string),
    }
}

async fn agent_command(
    state: &AppState,
    agent: &AgentRecord,
    command: AgentCommand,
    last_sent: &mut HashMap<String, i64>,
    sink: &mut WsSink,
) -> Option<AgentFrame> {
    let service = &state.handoff;
    let actor = Actor::Agent(agent.clone());
    let (conversation_id, result): (Option<String>, Result<(), HandoffError>) = match command {
        AgentCommand::Ping => return Some(AgentFrame::Pong),
        AgentCommand::Message {
            conversation_id,
            text,
            ..
        } => {
            let result = service
                .agent_message(agent, &conversation_id, &text)
                .await
                .map(|_| ());
            (Some(conversation_id), result)
        }
        AgentCommand::Typing {
            conversation_id,
            on,
        } => {
            let result = service.agent_typing(agent, &conversation_id, on).await;
            (Some(conversation_id), result)
        }
        AgentCommand::Note {
            conversation_id,
            text,
        } => {
            let result = service
                .note(agent, &conversation_id, &text)
                .await
                .map(|_| ());
            (Some(conversation_id), result)
        }
        AgentCommand::Accept { conversation_id } => {
            let result = service.accept(agent, &conversation_id).await;
            (Some(conversation_id), result)
        }
        AgentCommand::Decline { conversation_id } => {
            let result = service.decline(agent, &conversation_id).await;
            (Some(conversation_id), result)
        }
        AgentCommand::Claim { conversation_id } => {
            let result = service.claim(agent, &conversation_id).await;
            (Some(conversation_id), result)
        }
        AgentCommand::Transfer {
            conversation_id,
            to_agent,
            to_skill,
            note,
        } => {
            let target = match (to_agent, to_skill) {
                (Some(agent), None) => Ok(TransferTarget::Agent(agent)),
                (None, Some(skill)) => Ok(TransferTarget::Skill(skill)),
                _ => Err(HandoffError::Invalid(
                    "give exactly one of to_agent and to_skill".into(),
                )),
            };
            let result = match target {
                Ok(target) => {
                    service
                        .transfer(&actor, &conversation_id, target, note.as_deref())
                        .await
                }
                Err(err) => Err(err),
            };
            (Some(conversation_id), result)
        }
        AgentCommand::Resolve { conversation_id } => {
            let result = service.resolve(&actor, &conversation_id).await;
            (Some(conversation_id), result)
        }
        AgentCommand::HandBack { conversation_id } => {
            let result = service.hand_back(&actor, &conversation_id).await;
            (Some(conversation_id), result)
        }
        AgentCommand::Presence { status } => (None, service.set_presence(&agent.id, status).await),
        AgentCommand::Sync {
            conversation_id,
            after,
        } => {
            if last_sent.contains_key(&conversation_id) {
                last_sent.insert(conversation_id.clone(), after.max(0));
                if !sync_agent(state, &conversation_id, last_sent, sink).await {
                    return None;
                }
                (Some(conversation_id), Ok(()))
            } else {
                (
                    Some(conversation_id.clone()),
                    Err(HandoffError::NotHeld(conversation_id)),
                )
            }
        }
    };
    match result {
        Ok(()) => None,
        Err(err) => {
            let code = error_code(&err);
            if code == "internal" {
                tracing::error!(agent = %agent.id, error = %err, "agent action failed");
                return Some(agent_error(
                    code,
                    "something went wrong; try again",
                    conversation_id.as_deref(),
                ));
            }
            Some(agent_error(
                code,
                &err.to_string(),
                conversation_id.as_deref(),
            ))
        }
    }
}
