//! Just enough of the Chrome DevTools Protocol to drive headless Chromium from a test: one
//! WebSocket to the browser, isolated browser contexts (separate cookies and localStorage, like
//! two people on two machines), real mouse clicks and typing, JavaScript probes, screenshots, and
//! every uncaught page error collected so the test can fail on it. No chromedriver, no Node: the
//! browser and this file are the whole stack.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long a page may take to show what a step waits for.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where screenshots and the browser's log go (`target/e2e/`, never committed).
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&dir).expect("create target/e2e");
    dir
}

/// The Chromium to drive: `BATON_TEST_CHROMIUM`, else the usual Debian and Google paths.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BATON_TEST_CHROMIUM") {
        return PathBuf::from(path);
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .unwrap_or_else(|| {
        panic!(
            "no Chromium found: run `make e2e-deps` (apt-get install chromium) or set BATON_TEST_CHROMIUM"
        )
    })
}

struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    /// Page errors and console errors, with the session they came from.
    problems: Mutex<Vec<(String, String)>>,
    next_id: AtomicU64,
}

impl Connection {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, reply);
        self.outgoing
            .send(Message::Text(command.to_string().into()))
            .expect("the browser connection is open");
        let response = tokio::time::timeout(COMMAND_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {COMMAND_TIMEOUT:?}"))
            .unwrap_or_else(|_| panic!("{method}: the browser connection closed"));
        if let Some(error) = response.get("error") {
            panic!("{method} failed: {error}");
        }
        response["result"].clone()
    }

    fn dispatch(&self, frame: Value) {
        if let Some(id) = frame.get("id").and_then(Value::as_u64) {
            if let Some(reply) = self.pending.lock().unwrap().remove(&id) {
                let _ = reply.send(frame);
            }
            return;
        }
        let session = frame["sessionId"].as_str().unwrap_or_default().to_string();
        let params = &frame["params"];
        let problem = match frame["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                Some(format!(
                    "uncaught: {} {}",
                    details["text"].as_str().unwrap_or_default(),
                    details["exception"]["description"]
                        .as_str()
                        .unwrap_or_default()
                ))
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => Some(format!(
                "console.error: {}",
                params["args"]
                    .as_array()
                    .map(|args| args
                        .iter()
                        .map(|a| a["value"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| a["description"].as_str().map(str::to_string))
                            .unwrap_or_else(|| a.to_string()))
                        .collect::<Vec<_>>()
                        .join(" "))
                    .unwrap_or_default()
            )),
            // Browser-side errors other than failed loads (a missing favicon is not a bug):
            // refused by the content security policy, blocked mixed content, and the like.
            Some("Log.entryAdded")
                if params["entry"]["level"] == "error"
                    && params["entry"]["source"] != "network" =>
            {
                Some(format!(
                    "{}: {}",
                    params["entry"]["source"].as_str().unwrap_or_default(),
                    params["entry"]["text"].as_str().unwrap_or_default()
                ))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            self.problems.lock().unwrap().push((session, problem));
        }
    }
}

/// The browser process, killed when dropped (also when a test panics half-way).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Browser {
    connection: Arc<Connection>,
    // Field order matters: the process dies before its profile directory is removed.
    _process: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start headless Chromium with a fresh profile and connect to it.
    pub async fn launch() -> Browser {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().expect("profile directory");
        let log_path = artifacts().join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("chromium log");
        let mut process = Process(
            Command::new(&binary)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--mute-audio",
                    "--hide-scrollbars",
                    "--window-size=1280,800",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display())),
        );
        let url = devtools_url(&mut process, profile.path(), &log_path).await;
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {url}: {err}"));
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queued) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queued.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let connection = Arc::new(Connection {
            outgoing,
            pending: Mutex::new(HashMap::new()),
            problems: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let reader = connection.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    if let Ok(frame) = serde_json::from_str::<Value>(&text) {
                        reader.dispatch(frame);
                    }
                }
            }
            // Wake every waiter: their channels drop with the pending map entries.
            reader.pending.lock().unwrap().clear();
        });
        Browser {
            connection,
            _process: process,
            _profile: profile,
        }
    }

    /// A new tab in its own browser context (its own storage), with the given viewport.
    pub async fn new_page(&self, name: &str, width: u32, height: u32) -> Page {
        let connection = &self.connection;
        let context = connection
            .call(
                None,
                "Target.createBrowserContext",
                json!({ "disposeOnDetach": true }),
            )
            .await["browserContextId"]
            .clone();
        let target = connection
            .call(
                None,
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context }),
            )
            .await["targetId"]
            .clone();
        let session = connection
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        let page = Page {
            name: name.to_string(),
            session,
            connection: connection.clone(),
        };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page.call("Log.enable", json!({})).await;
        page.viewport(width, height, false).await;
        page
    }
}

/// Chromium writes the port and path of its DevTools socket into the profile once it listens.
async fn devtools_url(process: &mut Process, profile: &Path, log_path: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!(
                "Chromium exited with {status} before listening; its log ({}):\n{}",
                log_path.display(),
                std::fs::read_to_string(log_path).unwrap_or_default()
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            panic!(
                "Chromium did not open its DevTools port within 30 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Page {
    pub name: String,
    session: String,
    connection: Arc<Connection>,
}

impl Page {
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.connection
            .call(Some(&self.session), method, params)
            .await
    }

    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_until(
            &format!("{url} loads"),
            "document.readyState === 'complete'",
        )
        .await;
    }

    pub async fn reload(&self) {
        self.call("Page.reload", json!({})).await;
        // The old document may still answer "complete" for a moment: wait for a fresh one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.wait_until("the page reloads", "document.readyState === 'complete'")
            .await;
    }

    /// The value of a JavaScript expression (promises awaited), or the exception it threw.
    pub async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("exception")
                .to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    pub async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|err| panic!("[{}] {expression}: {err}", self.name))
    }

    /// Polls `expression` until it is truthy and returns its value. On timeout: a screenshot
    /// `failed-<page>.png` and the page's text, then a panic naming `what`.
    pub async fn wait_until(&self, what: &str, expression: &str) -> Value {
        let started = Instant::now();
        loop {
            let last = match self.try_eval(expression).await {
                Ok(value) if truthy(&value) => return value,
                Ok(value) => value,
                Err(err) => Value::String(err),
            };
            if started.elapsed() > WAIT {
                let shot = self.screenshot(&format!("failed-{}", self.name)).await;
                let text = self.try_eval(TEXT_OF_PAGE).await.unwrap_or(Value::Null);
                panic!(
                    "[{}] waited {WAIT:?} for: {what}\n  probe: {expression}\n  last value: {last}\n  screenshot: {}\n  page text: {}",
                    self.name,
                    shot.display(),
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A real mouse click in the middle of the element `element` (a JS expression) evaluates to,
    /// once it is visible. Clicking something covered or off-screen does not do what the test
    /// expects, so the test notices.
    pub async fn click(&self, what: &str, element: &str) {
        let probe = format!(
            "(() => {{ const el = {element}; if (!el) return null; el.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = el.getBoundingClientRect(); if (r.width === 0 || r.height === 0 || el.disabled) return null; \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        );
        let point = self
            .wait_until(&format!("{what} to be clickable"), &probe)
            .await;
        let (x, y) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseMoved", "x": x, "y": y }),
        )
        .await;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types into the focused element, as an input method would (fires `input` events).
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    pub async fn press_enter(&self) {
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({ "type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13 });
            if kind == "keyDown" {
                event["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", event).await;
        }
    }

    /// A PNG of the viewport in `target/e2e/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let bytes = base64_decode(shot["data"].as_str().expect("screenshot data"));
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// Uncaught exceptions, `console.error` calls and browser errors (security policy...) seen
    /// on this page so far.
    pub fn problems(&self) -> Vec<String> {
        self.connection
            .problems
            .lock()
            .unwrap()
            .iter()
            .filter(|(session, _)| session == &self.session)
            .map(|(_, problem)| problem.clone())
            .collect()
    }
}

/// The visible text of the page and of the chat widget's shadow root, for failure messages.
const TEXT_OF_PAGE: &str = "(() => { const w = document.getElementById('baton-widget'); \
    return (document.body ? document.body.innerText : '') + (w && w.shadowRoot ? '\\n[widget] ' + w.shadowRoot.textContent : ''); })()";

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    }
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut bits = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            bits |= value(*c) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_strings() {
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
        assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
        assert_eq!(base64_decode("aGk="), b"hi");
        assert_eq!(base64_decode(""), b"");
        assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn truthiness_follows_javascript() {
        assert!(!truthy(&json!(null)));
        assert!(!truthy(&json!(false)));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!("x")));
        assert!(truthy(&json!([])));
        assert!(truthy(&json!(2)));
    }
}
