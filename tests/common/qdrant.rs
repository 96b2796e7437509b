//! A real Qdrant server for the tests. No registry ships one, so it is found, in this order:
//! 1. `BATON_TEST_QDRANT_URL`: a server already running (its gRPC address, e.g.
//!    `http://127.0.0.1:6334`); the tests only create and drop their own collections in it;
//! 2. `BATON_TEST_QDRANT_BIN`, or `../shared/tools/qdrant/qdrant` beside the repository: a binary
//!    built from the official source (docs/deploy.md says how), started once per test binary on
//!    free loopback ports with scratch storage, and killed when the test process ends.
//!
//! With neither, [`qdrant_url`] says loudly that the Qdrant server tests were skipped and returns
//! `None`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::app::repo;

/// The gRPC address of a Qdrant server for this test process, or `None` (after a loud message)
/// when there is none to be had.
pub async fn qdrant_url() -> Option<String> {
    if let Ok(url) = std::env::var("BATON_TEST_QDRANT_URL") {
        return Some(url);
    }
    let Some(binary) = binary() else {
        super::app::say_loudly(
            "SKIPPED: no Qdrant server (set BATON_TEST_QDRANT_URL to a running one, or \
             BATON_TEST_QDRANT_BIN to a qdrant binary; docs/deploy.md says how to build it); \
             the Qdrant server tests did not run",
        );
        return None;
    };
    static STARTED: OnceLock<String> = OnceLock::new();
    let url = STARTED.get_or_init(|| start(binary)).clone();
    wait_until_ready(&url).await;
    Some(url)
}

fn binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("BATON_TEST_QDRANT_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "BATON_TEST_QDRANT_BIN={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let beside = repo().join("../shared/tools/qdrant/qdrant");
    beside.is_file().then_some(beside)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Start the server from a thread that lives as long as the test process: the child is asked to
/// be killed when that thread (hence the process) ends, so no server outlives the tests.
fn start(binary: PathBuf) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let storage = tempfile::Builder::new()
            .prefix("baton-qdrant-test-")
            .tempdir()
            .expect("scratch storage for qdrant");
        let grpc_port = free_port();
        let http_port = free_port();
        let mut command = Command::new(&binary);
        command
            .current_dir(storage.path())
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__GRPC_PORT", grpc_port.to_string())
            .env("QDRANT__SERVICE__HTTP_PORT", http_port.to_string())
            .env(
                "QDRANT__STORAGE__STORAGE_PATH",
                storage.path().join("storage"),
            )
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                storage.path().join("snapshots"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdout(Stdio::null())
            // BATON_TEST_QDRANT_LOG=FILE keeps the server's log.
            .stderr(match std::env::var("BATON_TEST_QDRANT_LOG") {
                Ok(path) => Stdio::from(std::fs::File::create(path).expect("the log file")),
                Err(_) => Stdio::null(),
            });
        // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("the qdrant binary starts");
        sender
            .send(format!("http://127.0.0.1:{grpc_port}"))
            .expect("the test is waiting");
        // Keeps the thread (the child's "parent") and the storage alive until the process ends;
        // reports a server that dies on its own.
        let status = child.wait();
        panic!("the Qdrant test server exited: {status:?}");
    });
    receiver.recv().expect("qdrant was started")
}

async fn wait_until_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(client) = qdrant_client::Qdrant::from_url(url)
            .skip_compatibility_check()
            .build()
        {
            if client.health_check().await.is_ok() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Qdrant server at {url} was not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server and a collection name of this test's own, dropped with the guard; `None` (after the
/// loud message) without a server.
pub async fn scratch_collection() -> Option<(String, String, CollectionGuard)> {
    let url = qdrant_url().await?;
    let collection = fresh_collection();
    let guard = CollectionGuard {
        url: url.clone(),
        collection: collection.clone(),
    };
    Some((url, collection, guard))
}

/// A collection name no other test uses.
pub fn fresh_collection() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// Drops a test's collection when the test ends (or panics).
pub struct CollectionGuard {
    pub url: String,
    pub collection: String,
}

impl Drop for CollectionGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let collection = self.collection.clone();
        // Drop cannot await; a thread with its own runtime lets this run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                if let Ok(client) = qdrant_client::Qdrant::from_url(&url)
                    .skip_compatibility_check()
                    .build()
                {
                    let _ = client.delete_collection(&collection).await;
                }
            });
        })
        .join();
    }
}
