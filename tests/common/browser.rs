//! A real headless Chromium driven over WebDriver, for the tests of the pages.
//!
//! Each [`Browser`] starts its own `chromedriver` (Debian's `chromium-driver`) on a free port and
//! one session of Debian's `chromium` with a fresh profile directory, both removed when it is
//! dropped. The client speaks the W3C WebDriver protocol over the `reqwest` the tests already use,
//! so no browser download and no WebDriver crate are needed. The viewport is set exactly (in CSS
//! pixels) through the DevTools protocol, so a 390 px test sees a phone's 390 px.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// Where Debian installs the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long [`Browser::find`] waits for an element to appear.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The key under which WebDriver names an element.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session; the driver and the profile go when it is dropped.
pub struct Browser {
    client: reqwest::Client,
    session: String,
    base: String,
    driver: Child,
    profile: PathBuf,
}

/// An element of the page, found by [`Browser::find`].
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose viewport is `width` × `height` CSS px.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Browser> {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(tool).exists() {
                bail!("{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)");
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile =
            std::env::temp_dir().join(format!("ledger-chromium-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&profile)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut browser = Browser {
            client,
            session: String::new(),
            base: format!("http://127.0.0.1:{port}"),
            driver,
            profile,
        };
        let base = browser.base.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser.client.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not come up on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", browser.profile.display()),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {created}"))?
            .to_owned();
        browser
            .command(
                reqwest::Method::POST,
                "goog/cdp/execute",
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
                }}),
            )
            .await?;
        Ok(browser)
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "url", json!({"url": url}))
            .await?;
        Ok(())
    }

    /// The first element matching the CSS selector, waiting up to 10 s for one to appear.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element<'_>> {
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            if let Some(element) = self.find_all(css).await?.into_iter().next() {
                return Ok(element);
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("return document.body ? document.body.innerText : ''")
                    .await;
                bail!("no element matches {css:?} after {FIND_TIMEOUT:?}; the page shows {page:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every element matching the CSS selector now (perhaps none).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element<'_>>> {
        let found = self
            .command(
                reqwest::Method::POST,
                "elements",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        let found = found
            .as_array()
            .ok_or_else(|| anyhow!("elements answered {found}"))?;
        found
            .iter()
            .map(|e| {
                let id = e[ELEMENT_KEY]
                    .as_str()
                    .ok_or_else(|| anyhow!("not an element: {e}"))?;
                Ok(Element {
                    browser: self,
                    id: id.to_owned(),
                })
            })
            .collect()
    }

    /// Runs `body` as the body of a JavaScript function in the page and returns what it returns.
    pub async fn eval(&self, body: &str) -> anyhow::Result<Value> {
        self.command(
            reqwest::Method::POST,
            "execute/sync",
            json!({"script": body, "args": []}),
        )
        .await
    }

    /// Runs `body` until it returns a truthy value (returned) or `timeout` passes (an error).
    pub async fn wait_until(&self, body: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(body).await?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("return document.body ? document.body.innerText : ''")
                    .await;
                bail!("still false after {timeout:?}: {body}; the page shows {page:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a PNG of the viewport to `path` (making its directory).
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let encoded = self
            .command(reqwest::Method::GET, "screenshot", Value::Null)
            .await?;
        let encoded = encoded
            .as_str()
            .ok_or_else(|| anyhow!("screenshot answered {encoded}"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(encoded)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Ends the session; the driver and the profile go when `self` is dropped.
    pub async fn quit(self) -> anyhow::Result<()> {
        self.command(reqwest::Method::DELETE, "", Value::Null)
            .await?;
        Ok(())
    }

    /// Calls `/session/{id}/{path}` and returns its `value`.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = if path.is_empty() {
            format!("{}/session/{}", self.base, self.session)
        } else {
            format!("{}/session/{}/{path}", self.base, self.session)
        };
        let body = (!body.is_null()).then_some(body);
        self.call(method, &url, body).await
    }

    /// One WebDriver call: its `value`, or an error naming WebDriver's own error and message.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.client.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("WebDriver {method} {url}"))?;
        let status = response.status();
        let mut answer: Value = response
            .json()
            .await
            .with_context(|| format!("WebDriver {method} {url}"))?;
        if !status.is_success() {
            let error = &answer["value"];
            bail!(
                "WebDriver {method} {url}: {} {}: {}",
                status.as_u16(),
                error["error"],
                error["message"]
            );
        }
        Ok(answer["value"].take())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing the driver ends the browser it started; the profile is then free to remove.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Element<'_> {
    /// Clicks it (scrolled into view first, as a user would).
    pub async fn click(&self) -> anyhow::Result<()> {
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("element/{}/click", self.id),
                json!({}),
            )
            .await?;
        Ok(())
    }

    /// Types `text` into it.
    pub async fn type_text(&self, text: &str) -> anyhow::Result<()> {
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("element/{}/value", self.id),
                json!({"text": text}),
            )
            .await?;
        Ok(())
    }

    /// Its rendered text.
    pub async fn text(&self) -> anyhow::Result<String> {
        let text = self
            .browser
            .command(
                reqwest::Method::GET,
                &format!("element/{}/text", self.id),
                Value::Null,
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// The value of an attribute or property, e.g. `value` of an input.
    pub async fn property(&self, name: &str) -> anyhow::Result<Value> {
        self.browser
            .command(
                reqwest::Method::GET,
                &format!("element/{}/property/{name}", self.id),
                Value::Null,
            )
            .await
    }
}
