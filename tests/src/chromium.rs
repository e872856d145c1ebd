//! Headless Chromium driven over the DevTools protocol (CDP, a websocket), for the browser tests
//! (the retry dashboard, the contacts-import demo). Chromium is Debian's `chromium` package, or
//! `$CHROMIUM`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long the browser may take to start, a page to load, or [`Cdp::wait_for`] to see its
/// condition.
pub const BOUND: Duration = Duration::from_secs(60);
/// How long one DevTools call may take to be answered.
pub const ANSWER_BOUND: Duration = Duration::from_secs(90);

/// A headless Chromium and its profile directory, both gone on drop (whether the test passed or
/// not). It stays in the test's process group, so a runner that kills the group on a timeout
/// kills it too.
pub struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Chromium {
    /// Starts `$CHROMIUM`, else `chromium` from PATH; fails saying how to install it.
    pub fn start() -> Self {
        let binary = std::env::var("CHROMIUM").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "chromium".into());
        static N: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "kafka-wire-tests-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(profile.join("chromium.log")).unwrap();
        let child = Process::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--remote-debugging-port=0",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&profile);
                panic!(
                    "cannot start Chromium ({binary}: {e}). The browser tests need headless Chromium: \
                     install Debian's package (`apt-get install chromium`, as .ci/run does) or set CHROMIUM \
                     to the browser's path"
                )
            });
        Self { child, profile }
    }

    /// The browser's DevTools websocket, once it has written `DevToolsActivePort`.
    pub async fn devtools(&mut self) -> Cdp {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + BOUND;
        let (port, path) = loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break (port.trim().to_owned(), path.trim().to_owned());
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default();
                panic!("Chromium exited ({exit}) before opening its DevTools port:\n{log}");
            }
            assert!(tokio::time::Instant::now() < deadline, "Chromium wrote no {} within {BOUND:?}", file.display());
            // The browser writes the file once it listens; nothing to await but the file.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Cdp { ws, next_id: 0, events: Vec::new() }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Its renderer, GPU and zygote processes exit with it, but may still write to the
        // profile for a moment: the removal is tried again for up to a second.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A DevTools protocol connection to the browser (flat sessions for pages).
pub struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events received while waiting for answers: (session, method).
    events: Vec<(Option<String>, String)>,
}

impl Cdp {
    /// Calls `method` (in the page `session`, or on the browser) and returns its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).await.unwrap();
        loop {
            let answer = self.receive(method).await;
            if answer["id"] == json!(id) {
                if let Some(error) = answer.get("error") {
                    panic!("{method}: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// The next message; events are kept for [`Cdp::event`].
    async fn receive(&mut self, waiting_for: &str) -> Value {
        loop {
            let message = tokio::time::timeout(ANSWER_BOUND, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {waiting_for} within {ANSWER_BOUND:?}"))
                .unwrap_or_else(|| panic!("Chromium closed the DevTools connection during {waiting_for}"))
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if let Some(method) = value["method"].as_str() {
                    self.events.push((value["sessionId"].as_str().map(str::to_owned), method.to_owned()));
                }
                return value;
            }
        }
    }

    /// Waits for the event `method` of `session` (received before or after this call).
    pub async fn event(&mut self, session: &str, method: &str) {
        loop {
            if let Some(at) = self.events.iter().position(|(s, m)| s.as_deref() == Some(session) && m == method) {
                self.events.remove(at);
                return;
            }
            self.receive(method).await;
        }
    }

    /// Opens `url` in a new page and waits until it has loaded; returns the page's session.
    pub async fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let attached =
            self.call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true })).await;
        let session = attached["sessionId"].as_str().expect("a session id").to_owned();
        self.call(Some(&session), "Page.enable", json!({})).await;
        self.call(Some(&session), "Page.navigate", json!({ "url": url })).await;
        // The load of about:blank may still be reported after Page.enable: wait for that of
        // `url`.
        loop {
            self.event(&session, "Page.loadEventFired").await;
            if self.eval(&session, "location.href").await == json!(url) {
                return session;
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting it if it is a promise) and returns its value.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `probe` (a JavaScript expression) gives something truthy in the page,
    /// looking again at every change of the DOM, and returns it; after [`BOUND`] fails naming
    /// `what` and showing the page's text.
    pub async fn wait_for(&mut self, session: &str, what: &str, probe: &str) -> Value {
        self.wait_for_within(session, what, probe, BOUND).await
    }

    /// [`Cdp::wait_for`] with a bound of the caller's.
    pub async fn wait_for_within(&mut self, session: &str, what: &str, probe: &str, bound: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // One evaluation waits at most BOUND, so that Chromium answers it within
            // ANSWER_BOUND; then the probe is evaluated again until the deadline.
            let round = deadline.saturating_duration_since(tokio::time::Instant::now()).min(BOUND);
            let expression = format!(
                "new Promise((resolve) => {{
                    const probe = () => {{ try {{ return {probe}; }} catch (e) {{ return null; }} }};
                    const first = probe();
                    if (first) {{ resolve(first); return; }}
                    const observer = new MutationObserver(() => {{
                        const value = probe();
                        if (value) {{ observer.disconnect(); resolve(value); }}
                    }});
                    observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
                    setTimeout(() => {{ observer.disconnect(); resolve(null); }}, {});
                }})",
                round.as_millis()
            );
            let value = self.eval(session, &expression).await;
            if !(value.is_null() || value == json!(false)) {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self.eval(session, "document.body.innerText").await;
                panic!("{what}: not within {bound:?}. The page shows:\n{}", text.as_str().unwrap_or_default());
            }
        }
    }

    /// Sets the files of the file input `selector` (CSS) of the page, as a user choosing them
    /// would (the input's `change` event fires).
    pub async fn set_file_input(&mut self, session: &str, selector: &str, files: &[&Path]) {
        let document = self.call(Some(session), "DOM.getDocument", json!({})).await;
        let node = self
            .call(
                Some(session),
                "DOM.querySelector",
                json!({ "nodeId": document["root"]["nodeId"], "selector": selector }),
            )
            .await;
        assert_ne!(node["nodeId"], json!(0), "the page has no {selector}");
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.call(Some(session), "DOM.setFileInputFiles", json!({ "nodeId": node["nodeId"], "files": files })).await;
    }

    /// Saves a PNG screenshot of the whole page to `path` (its directory created if missing).
    pub async fn screenshot(&mut self, session: &str, path: &Path) {
        let shot = self
            .call(Some(session), "Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
