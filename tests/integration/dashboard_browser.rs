//! The dashboard in a real browser: Debian's Chromium, headless, driven by
//! chromedriver over WebDriver. It opens every page as the operator, checks
//! that each chart drew a canvas with data, watches the Now page pick up a
//! change made in the database without a reload, retries failed jobs through
//! the confirmation step and finds the audit row; as the reader it finds no
//! write form and gets 403 when posting anyway. Every request the browser
//! made stayed on 127.0.0.1. Screenshots of each page are saved under the
//! target directory (`dashboard-screenshots/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use trainyard_tests::{free_port, log_file, TestEnv};

use super::dashboard::{app, pages, seed_world, OPERATOR, READER};

const CHROMIUM: &str = "/usr/bin/chromium";

fn find(name: &str, debian: &str) -> anyhow::Result<PathBuf> {
    if std::path::Path::new(debian).exists() {
        return Ok(debian.into());
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .with_context(|| {
            format!(
                "{name} is not installed: the browser test needs Debian's chromium and \
                 chromium-driver (`apt-get install chromium chromium-driver`; deploy/local/test.sh \
                 installs them when it runs as root)"
            )
        })
}

/// A chromedriver process on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> anyhow::Result<Driver> {
    let exe = find("chromedriver", "/usr/bin/chromedriver")?;
    let port = free_port();
    let child = Command::new(exe)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&format!("chromedriver-{port}"))?)
        .spawn()
        .context("starting chromedriver")?;
    let driver = Driver { child, port };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("chromedriver did not open port {port} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(driver)
}

/// A fresh headless Chromium session with its own profile.
async fn browser(driver: &Driver, profile: &std::path::Path) -> anyhow::Result<Client> {
    let chromium = find("chromium", CHROMIUM)?;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .context("opening a Chromium session through chromedriver")
}

/// Polls `script` (returning a boolean) until true, or fails with `what`.
async fn wait_until(c: &Client, script: &str, what: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if c.execute(script, vec![]).await?.as_bool() == Some(true) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `css` on the current page; on timeout, says which page showed what.
async fn element(c: &Client, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
    match c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => Ok(e),
        Err(e) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            bail!(
                "{e}: no `{css}` on {url}; the page was: {}",
                source.chars().take(1500).collect::<String>()
            )
        }
    }
}

/// The hosts of the page and of every resource it loaded.
async fn hosts(c: &Client) -> anyhow::Result<Vec<String>> {
    let v = c
        .execute(
            "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name))
                 .map(u => new URL(u).host);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

fn screenshot_dir() -> anyhow::Result<PathBuf> {
    // Tests run from <target>/release/deps.
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("locating the target directory")?;
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() -> anyhow::Result<()> {
    let driver = start_driver().await?;
    let mut env = TestEnv::new().await?;
    let w = seed_world(&mut env).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let router = app(&env).await?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let here = format!("127.0.0.1:{port}");
    let url = |token: &str, path: &str| format!("http://ops:{token}@{here}{path}");
    let shots = screenshot_dir()?;
    let profiles = tempdir("trainyard-chromium")?;
    let mut seen_hosts: Vec<String> = Vec::new();

    // The operator opens every page; every chart draws a canvas with data.
    let op = browser(&driver, &profiles.join("operator")).await?;
    for (name, path) in pages(&w) {
        op.goto(&url(OPERATOR, &path)).await?;
        element(&op, "header.top").await?;
        wait_until(
            &op,
            "return document.readyState === 'complete' && \
             document.querySelectorAll('.chart').length === document.querySelectorAll('.chart[data-drawn]').length;",
            &format!("the charts of {name}"),
            Duration::from_secs(15),
        )
        .await?;
        let charts: Vec<(u64, u64, u64)> = serde_json::from_value(
            op.execute(
                "return Array.from(document.querySelectorAll('.chart')).map(e => {
                     const c = e.querySelector('canvas');
                     return [Number(e.dataset.points || 0), c ? c.width : 0, c ? c.height : 0];
                 });",
                vec![],
            )
            .await?,
        )?;
        for (points, width, height) in &charts {
            assert!(
                *points > 0 && *width > 0 && *height > 0,
                "{name}: chart {charts:?}"
            );
        }
        let png = op.screenshot().await?;
        std::fs::write(shots.join(format!("{name}.png")), png)?;
        seen_hosts.extend(hosts(&op).await?);
    }
    let counted = |c: &'static str| format!("return document.querySelectorAll('{c}').length;");
    op.goto(&url(OPERATOR, &format!("/jobs/{}", w.trained_job)))
        .await?;
    let n = op.execute(&counted(".chart canvas"), vec![]).await?;
    assert_eq!(n, json!(1), "the epoch chart");

    // Retry failed through the confirmation, then the audit row.
    op.goto(&url(OPERATOR, &format!("/cycles/{}", w.first_cycle)))
        .await?;
    op.find(Locator::Css("#retry-failed button"))
        .await?
        .click()
        .await?;
    let count = element(&op, "#confirm-count").await?.text().await?;
    assert!(count.contains('3'), "{count}");
    op.find(Locator::Css("#confirm-form input[name=reason]"))
        .await?
        .send_keys("fixed the panic")
        .await?;
    op.find(Locator::Css("#confirm-form button"))
        .await?
        .click()
        .await?;
    element(&op, "#done").await?;
    seen_hosts.extend(hosts(&op).await?);
    op.goto(&url(OPERATOR, "/audit")).await?;
    let audit = op.find(Locator::Css("#audit")).await?.text().await?;
    assert!(
        audit.contains("retry_failed") && audit.contains("fixed the panic"),
        "{audit}"
    );

    // The Now page updates by itself when a job changes in the database.
    op.goto(&url(OPERATOR, "/")).await?;
    let queued = |c: Client| async move {
        let v: Value = c
            .execute("const e = document.getElementById('queued'); return e ? e.textContent.trim() : '';", vec![])
            .await?;
        anyhow::Ok(v.as_str().unwrap_or("").to_string())
    };
    // The overview's figures are shared for up to 5 s: wait for the retry.
    let started = Instant::now();
    while queued(op.clone()).await? != "3" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the Now page never showed the 3 retried jobs queued"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sqlx::query(
        "update ml_training_jobs set status = 'running', started_at = now(), heartbeat_at = now(),
                worker = 'browser-test'
         where id = (select id from ml_training_jobs where status = 'queued' order by id limit 1)",
    )
    .execute(&env.pool)
    .await?;
    let started = Instant::now();
    loop {
        if queued(op.clone()).await? == "2" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the Now page did not refresh itself within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let running = op.find(Locator::Css("#running")).await?.text().await?;
    assert_eq!(running.trim(), "1");
    seen_hosts.extend(hosts(&op).await?);
    op.close().await?;

    // The reader: no write form anywhere, and a post anyway is a 403.
    let rd = browser(&driver, &profiles.join("reader")).await?;
    for (name, path) in pages(&w) {
        rd.goto(&url(READER, &path)).await?;
        element(&rd, "header.top").await?;
        let forms = rd.execute(&counted("form[method=post]"), vec![]).await?;
        assert_eq!(forms, json!(0), "{name}: the reader sees a write form");
        seen_hosts.extend(hosts(&rd).await?);
    }
    rd.goto(&url(READER, &format!("/jobs/{}", w.failed_job)))
        .await?;
    let status = rd
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(location.origin + arguments[0], {method: 'POST', body: 'reason=anyway',
                   headers: {'content-type': 'application/x-www-form-urlencoded'}})
               .then(r => done(r.status)).catch(e => done(String(e)));",
            vec![json!(format!("/jobs/{}/retry", w.failed_job))],
        )
        .await?;
    assert_eq!(status, json!(403), "a reader's post");
    seen_hosts.extend(hosts(&rd).await?);
    rd.close().await?;

    // Nothing left the host.
    assert!(!seen_hosts.is_empty());
    for h in &seen_hosts {
        assert_eq!(h, &here, "a request left 127.0.0.1: {h}");
    }
    let _ = std::fs::remove_dir_all(&profiles);
    Ok(())
}

fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
