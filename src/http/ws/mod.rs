//! WebSocket sessions for customers and agents (protocol `baton.v1`, docs/protocol.md).
//!
//! Each session is a struct with `run()` (as mini-redis's connection handler): it owns its socket
//! and waits on four things: a frame from the client, an ephemeral frame from the hub (bounded: a
//! full queue closes the socket with code 4008 so a slow client cannot make the server buffer
//! without limit), a wake-up for new durable messages (read from the store after the last id
//! sent, so messages arrive in order, once, also after a reconnect), and the heartbeat (no word
//! from the client for two ping intervals closes the socket). A command's error goes back as an
//! `error` frame with a code from the one table in `http::error`.

mod agent;
mod customer;
mod session;

pub use agent::AgentSession;
pub use customer::CustomerSession;
pub use session::{CLOSE_GOING_AWAY, CLOSE_PING_TIMEOUT, CLOSE_TOO_SLOW};
