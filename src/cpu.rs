//! Where CPU-bound work runs from async code: small pieces on the caller's task, larger ones on
//! tokio's blocking pool.
//!
//! The hop to the blocking pool and back costs more than some of the work sent there: measured at
//! stop 33 on a 2-core machine, a Qdrant Edge search with 52-55 µs of work took 133 µs as the
//! caller saw it (stop 34: a dense search over the demo's 250 chunks, 0.037 ms inline, 0.082 ms
//! through the pool), and a message made four such hops (dense search, keyword search, chunk
//! read, intent classification). Tokio asks that a task not run for more than 10-100 µs between two
//! `.await`s, so each caller estimates its work and runs it inline only when it is that small (see
//! [`INLINE_BUDGET_MULTIPLY_ADDS`]); anything larger, or of unknown size, still goes to the pool.
//! Either way a panic inside the work comes back as an error, not as a dead task or connection.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The most multiply-adds of plain `f32` arithmetic run inline: about 0.1 ms here. Measured at
/// stop 34 (release build, 2-core machine): the demo's intent classifier, 603 examples of 768
/// features, 488,000 multiply-adds a message, took 0.11 ms in the server's intent stage, so an
/// intents file of up to about 650 examples classifies without the pool (since stop 35 on the
/// encoder thread, beside the knowledge search); CLINC150's 15,000 go to the pool.
pub const INLINE_BUDGET_MULTIPLY_ADDS: usize = 500_000;

/// Work that panicked: the panic's message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkPanicked(pub String);

/// Run `work` here, on the caller's thread, turning a panic into [`WorkPanicked`].
pub fn run_inline<T>(work: impl FnOnce() -> T) -> Result<T, WorkPanicked> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| WorkPanicked(panic_message(&*panic)))
}

/// Run `work` on tokio's blocking pool, turning a panic (or a runtime shutting down under it)
/// into [`WorkPanicked`].
pub async fn run_on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WorkPanicked> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join_error| match join_error.try_into_panic() {
            Ok(panic) => WorkPanicked(panic_message(&*panic)),
            Err(join_error) => WorkPanicked(join_error.to_string()),
        })
}

/// Run `work` inline when `small`, on the blocking pool otherwise.
pub async fn run<T: Send + 'static>(
    small: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WorkPanicked> {
    if small {
        run_inline(work)
    } else {
        run_on_blocking_pool(work).await
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        format!("panicked: {message}")
    } else if let Some(message) = panic.downcast_ref::<String>() {
        format!("panicked: {message}")
    } else {
        "panicked".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_places_return_the_result() {
        assert_eq!(run(true, || 2 + 2).await.unwrap(), 4);
        assert_eq!(run(false, || 2 + 2).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_in_both_places() {
        for small in [true, false] {
            let error = run(small, || -> u8 { panic!("the shard is gone") })
                .await
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                "panicked: the shard is gone",
                "small: {small}"
            );
        }
        let formatted = run_inline(|| -> u8 { panic!("{} of {}", 3, 4) }).unwrap_err();
        assert_eq!(formatted.to_string(), "panicked: 3 of 4");
    }
}
