//! Tooling beside the product: the evaluation runs (`baton eval`), the benchmark against a Python
//! service (`baton bench`) and the load and crash generators (`baton loadtest`, `baton crashtest`).
//! Nothing in the server imports from here; these drive the product from outside, through the
//! same library calls and HTTP/WebSocket endpoints a user would.

pub mod bench;
pub mod eval;
pub mod loadtest;
pub mod process;
