//! What both sessions share: the sending half of the socket (every write bounded in time), the
//! close codes, the heartbeat, reading client frames, and reading messages after an id.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::error::AppError;
use crate::state::AppState;
use crate::store::MessageRecord;

/// Close code for a client that did not keep up; it should reconnect and resume.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code when the server shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client that stopped answering pings.
pub const CLOSE_PING_TIMEOUT: u16 = 4000;
/// A write that takes longer than this means the client is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages read per store query when catching a client up.
pub(super) const SYNC_PAGE: i64 = 200;

/// The sending half of a socket. Every method answers whether the socket still works.
pub(super) struct Outbox {
    sink: SplitSink<WebSocket, Message>,
}

impl Outbox {
    /// Split a socket into its sending half and the stream of client frames.
    pub(super) fn split(socket: WebSocket) -> (Outbox, SplitStream<WebSocket>) {
        let (sink, stream) = socket.split();
        (Outbox { sink }, stream)
    }

    pub(super) async fn send(&mut self, frame: &impl Serialize) -> bool {
        let Ok(text) = serde_json::to_string(frame) else {
            return false;
        };
        self.write(Message::Text(Utf8Bytes::from(text))).await
    }

    pub(super) async fn ping(&mut self) -> bool {
        self.write(Message::Ping(Default::default())).await
    }

    pub(super) async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        self.write(Message::Close(Some(frame))).await;
    }

    async fn write(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(WRITE_TIMEOUT, self.sink.send(message)).await,
            Ok(Ok(()))
        )
    }
}

/// The liveness rule: a ping every interval, and a client that sent nothing (pongs included)
/// for two intervals is gone.
pub(super) struct Heartbeat {
    every: Duration,
    timer: tokio::time::Interval,
    last_heard: Instant,
}

impl Heartbeat {
    pub(super) async fn start(interval_secs: u64) -> Heartbeat {
        let every = Duration::from_secs(interval_secs.max(1));
        let mut timer = tokio::time::interval(every);
        // The first tick is immediate; the first ping goes one interval after connecting.
        timer.tick().await;
        Heartbeat {
            every,
            timer,
            last_heard: Instant::now(),
        }
    }

    pub(super) fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Wait for the next ping time.
    pub(super) async fn tick(&mut self) {
        self.timer.tick().await;
    }

    pub(super) fn client_silent(&self) -> bool {
        self.last_heard.elapsed() > self.every * 2
    }
}

/// What one frame from the client asks of the session.
pub(super) enum Incoming<C> {
    Command(C),
    /// Not a command: answered with a `bad_frame` error, the socket stays open.
    Bad(AppError),
    Closed,
    /// Pings and pongs: proof of life, nothing to do.
    Nothing,
}

pub(super) fn read_frame<C: DeserializeOwned>(message: Message) -> Incoming<C> {
    match message {
        Message::Text(text) => match serde_json::from_str::<C>(&text) {
            Ok(command) => Incoming::Command(command),
            Err(err) => Incoming::Bad(AppError::BadFrame(format!("not a baton.v1 command: {err}"))),
        },
        Message::Binary(_) => Incoming::Bad(AppError::BadFrame("frames are JSON text".into())),
        Message::Close(_) => Incoming::Closed,
        Message::Ping(_) | Message::Pong(_) => Incoming::Nothing,
    }
}

/// The code and the message an `error` frame carries; an internal cause is logged here and not
/// sent.
pub(super) fn error_parts(err: &AppError) -> (String, String) {
    if let AppError::Internal(cause) = err {
        tracing::error!(%cause, "WebSocket command failed");
    }
    (err.code().as_str().to_string(), err.public_message())
}

/// Messages of a conversation after `after`, in id order (one page).
pub(super) async fn messages_after(
    state: &AppState,
    conversation_id: &str,
    after: i64,
) -> Vec<MessageRecord> {
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
