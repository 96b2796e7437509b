//! A WebSocket client for tests: sends and receives protocol frames as JSON values, with timeouts
//! so a missing frame fails the test instead of hanging it.

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(10);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct WsClient {
    socket: Socket,
    /// Every JSON frame received so far, in order.
    pub seen: Vec<Value>,
}

/// How a socket ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    Code(u16),
    Gone,
}

impl WsClient {
    /// Connect to `http://...` (rewritten to `ws://`) with a `?token=`.
    pub async fn connect(base: &str, path: &str, token: &str) -> WsClient {
        let url = format!(
            "{}{}?token={}",
            base.replacen("http://", "ws://", 1),
            path,
            token
        );
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        WsClient {
            socket,
            seen: Vec::new(),
        }
    }

    /// The HTTP status a refused upgrade answered with (panics if the socket opened instead).
    /// An empty `token` sends none at all.
    pub async fn refused(base: &str, path: &str, token: &str) -> u16 {
        let query = if token.is_empty() {
            String::new()
        } else {
            format!("?token={token}")
        };
        let url = format!("{}{}{}", base.replacen("http://", "ws://", 1), path, query);
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => panic!("the socket {path} opened with token {token:?}"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Err(other) => panic!("the socket {path} failed without an HTTP answer: {other}"),
        }
    }

    /// Send any text (not necessarily JSON) as a text frame.
    pub async fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("websocket send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .expect("websocket send");
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("websocket send");
    }

    /// The next JSON frame (pings are answered by tungstenite itself).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                    self.seen.push(value.clone());
                    return Some(value);
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
                Ok(Some(Ok(Message::Binary(_)))) => panic!("binary frame"),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
                Err(_) => panic!("no frame within {WAIT:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Frames until one matches; panics on timeout or close.
    pub async fn until(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some(frame) if matches(&frame) => return frame,
                Some(_) => continue,
                None => panic!(
                    "socket closed before the expected frame; seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    pub async fn until_type(&mut self, kind: &str) -> Value {
        self.until(|f| f["type"] == kind).await
    }

    /// Frames until every predicate has matched one of them, in whatever order they come (a state
    /// change and its system message are separate frames with no order between them); returns
    /// the matching frames in the predicates' order.
    pub async fn until_all(&mut self, predicates: &[&dyn Fn(&Value) -> bool]) -> Vec<Value> {
        let mut found: Vec<Option<Value>> = vec![None; predicates.len()];
        while found.iter().any(Option::is_none) {
            let Some(frame) = self.next().await else {
                panic!(
                    "socket closed before the expected frames; seen: {:#?}",
                    self.seen
                );
            };
            for (slot, matches) in found.iter_mut().zip(predicates) {
                if slot.is_none() && matches(&frame) {
                    *slot = Some(frame.clone());
                }
            }
        }
        found.into_iter().flatten().collect()
    }

    /// The next `message` frame whose message matches.
    pub async fn until_message(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        self.until(|f| f["type"] == "message" && matches(&f["message"]))
            .await["message"]
            .clone()
    }

    /// Reads frames for `window` and returns them (for asserting that something did NOT arrive).
    pub async fn drain_for(&mut self, window: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                    self.seen.push(value.clone());
                    frames.push(value);
                }
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) | Err(_) => return frames,
            }
        }
    }

    /// Reads until the server closes the socket; returns the close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return Closed::Code(frame.code.into())
                }
                Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return Closed::Gone
                }
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("socket still open after {WAIT:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
