//! A real browser for the web app's tests: headless Chromium driven over WebDriver, with
//! screenshots and page weights written to `target/web-screenshots/`, and the keyboard-only
//! sign-in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::{Server, sh};

/// chromedriver with one headless Chromium session; both stop when this is dropped.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const DESKTOP: (u32, u32) = (1280, 800);
pub const PHONE: (u32, u32) = (390, 844);

/// A Chrome DevTools command through chromedriver, for what WebDriver cannot set: the colour
/// scheme, the time zone, a permission a headless browser cannot be asked for.
#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap()))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.0.to_string()))
    }
}

impl Browser {
    /// Runs the DevTools command `cmd` with `params`.
    pub async fn cdp(&self, cmd: &str, params: Value) {
        self.page()
            .issue_cmd(Cdp(json!({"cmd": cmd, "params": params})))
            .await
            .unwrap_or_else(|error| panic!("{cmd}: {error}"));
    }

    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian packages `chromium` and `chromium-driver`)");
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless", "--no-sandbox", "--no-proxy-server", "--disable-gpu", "--window-size=1280,800"]}),
        );
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "no WebDriver session: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client: Some(client),
            driver,
        }
    }

    pub fn page(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.unwrap();
        }
    }

    pub async fn goto(&self, url: &str) {
        self.page().goto(url).await.unwrap();
    }

    pub async fn js(&self, script: &str) -> Value {
        self.page().execute(script, vec![]).await.unwrap()
    }

    pub async fn text(&self, css: &str) -> String {
        self.page()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no `{css}` on the page: {error}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .page()
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.page().find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.page()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no `{css}` to click: {error}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits (up to 60 s) until `condition`, a JavaScript expression, is true.
    pub async fn until(&self, condition: &str, what: &str) {
        let started = Instant::now();
        let script = format!("return Boolean({condition});");
        loop {
            if self.js(&script).await == json!(true) {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let body = self.js("return document.body.innerText").await;
                panic!("{what} never happened; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.page().set_window_size(width, height).await.unwrap();
    }

    /// Saves a screenshot as `target/web-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.page().screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// What every page must be: light, labelled, and usable at the current width.
    pub async fn check_page(&self, name: &str) {
        let weight = self
            .js("const entries = [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]; return entries.reduce((sum, e) => sum + (e.decodedBodySize || 0), 0);")
            .await
            .as_f64()
            .unwrap();
        assert!(
            weight > 1000.0 && weight < 100.0 * 1024.0,
            "{name} weighs {weight} bytes"
        );
        record_weight(name, weight);
        let unlabelled = self
            .js("return [...document.querySelectorAll('input, select, textarea')].filter(e => e.type !== 'hidden' && !e.hidden && e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.name || e.id);")
            .await;
        assert_eq!(unlabelled, json!([]), "controls without a label on {name}");
        let overflow = self
            .js("return document.documentElement.scrollWidth - window.innerWidth;")
            .await
            .as_f64()
            .unwrap();
        assert!(
            overflow <= 0.0,
            "{name} scrolls sideways by {overflow} px at this width"
        );
        let external = self
            .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin));")
            .await;
        assert_eq!(
            external,
            json!([]),
            "{name} loaded something from elsewhere"
        );
    }

    /// Screenshots at both widths, each checked.
    pub async fn capture(&self, name: &str) {
        for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
            self.resize(size).await;
            self.page().refresh().await.unwrap();
            self.js("window.scrollTo(0, 0); return 1;").await;
            self.check_page(&format!("{name} ({width})")).await;
            self.screenshot(&format!("{name}-{width}")).await;
        }
        self.resize(DESKTOP).await;
    }

    /// The browser's session cookie, to send requests a hostile page could make.
    pub async fn session_cookie(&self) -> String {
        let cookie = self
            .page()
            .get_named_cookie("deft_session")
            .await
            .expect("signed in");
        format!("deft_session={}", cookie.value())
    }
}

/// Appends a page's weight to `target/web-screenshots/weights.txt`, for docs/PERFORMANCE.md.
pub fn record_weight(name: &str, bytes: f64) {
    use std::io::Write as _;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("weights.txt"))
        .unwrap();
    writeln!(file, "{name}\t{bytes}").unwrap();
}

pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("web-screenshots")
}

pub fn greeter_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("greeter");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "echo '#!/bin/sh' > test.sh && echo 'test -s greeting.txt' >> test.sh && chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo
}

/// Types with the keyboard alone: WebDriver's Tab and Enter keys.
pub const TAB: &str = "\u{e004}";
pub const ENTER: &str = "\u{e007}";

pub async fn sign_in_with_password(browser: &Browser, server: &Server, name: &str, password: &str) {
    browser.goto(&format!("{}/login", server.url)).await;
    // The name field has focus; the rest is keys.
    let name_field = browser.page().find(Locator::Id("name")).await.unwrap();
    name_field
        .send_keys(&format!("{name}{TAB}{password}{ENTER}"))
        .await
        .unwrap();
    browser
        .until("location.pathname === '/tasks'", "signing in")
        .await;
}

/// Sets `name`'s password with the CLI, as an operator would.
pub fn set_password(data: &Path, name: &str, password: &str) {
    use std::io::Write as _;
    let mut passwd = Command::new(super::DEFT)
        .args(["user", "passwd", name, "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(passwd.stdin.take().unwrap(), "{password}").unwrap();
    assert!(passwd.wait().unwrap().success());
}
