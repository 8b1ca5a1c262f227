//! Security: passwords never reach logs, command output, `--help` or
//! `/health`; a job for one organization touches only that organization's
//! rows.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use trainyard_shared::ModelType;
use trainyard_tests::{
    binary, enqueue, http_get, insert_org, log_path, OwnPostgres, OwnRedis, TestEnv,
};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(240);

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    Ok(cmd.stdin(Stdio::null()).output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passwords_never_appear_in_logs_output_help_or_health() -> anyhow::Result<()> {
    let pg_secret = format!("pgS3cret{}", Uuid::new_v4().simple());
    let redis_secret = format!("rdS3cret{}", Uuid::new_v4().simple());
    let pg = OwnPostgres::start(Some(&pg_secret))?;
    let redis = OwnRedis::start(trainyard_tests::free_port(), Some(&redis_secret))?;
    let mut env = TestEnv::on(&pg.url()).await?;
    env.redis_url = redis.url();
    assert!(env.database_url.contains(&pg_secret) && env.redis_url.contains(&redis_secret));
    insert_org(&env.pool, "alpha", 200, 61).await?;
    insert_org(&env.pool, "beta", 200, 62).await?;

    let port = trainyard_tests::free_port().to_string();
    env.spawn_worker(&[
        ("PORT", port.as_str()),
        ("RUST_LOG", "debug"),
        ("TRAINYARD_LOG_FORMAT", "json"),
    ])?;
    let mut seen = String::new();

    // A whole cycle through the operator's command line, with debug logs.
    let scheduler = binary("trainyard-scheduler")?;
    let with_env = |args: &[&str]| {
        let mut c = Command::new(&scheduler);
        c.args(args)
            .env("DATABASE_URL", &env.database_url)
            .env("REDIS_URL", &env.redis_url)
            .env("TRAINYARD_QUEUE", &env.queue)
            .env("RUST_LOG", "debug");
        c
    };
    let out = run(with_env(&[
        "enqueue",
        "--all",
        "--model",
        "energy_forecast",
        "--wait",
        "--json",
        "--timeout-secs",
        "240",
    ])
    .env("TRAINYARD_LEASE_TIMEOUT_SECS", "4"))?;
    seen += &text(&out);
    assert!(out.status.success(), "enqueue failed: {}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["status"], "completed", "{summary}");
    let cycle = summary["id"].as_str().unwrap_or_default().to_string();
    for args in [
        vec!["cycles"],
        vec!["cycle", cycle.as_str()],
        vec!["--help"],
    ] {
        let out = run(&mut with_env(&args))?;
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        seen += &text(&out);
    }
    for sub in ["run", "enqueue", "migrate"] {
        seen += &text(&run(with_env(&[sub, "--help"]).arg("--help"))?);
    }
    let worker = binary("trainyard-worker")?;
    for args in [vec!["--help"], vec!["run", "--help"]] {
        let out = run(Command::new(&worker)
            .args(&args)
            .env("DATABASE_URL", &env.database_url)
            .env("REDIS_URL", &env.redis_url))?;
        seen += &text(&out);
    }

    // /health, up.
    let health = http_get(&port, "/health").await?;
    assert!(health.contains("\"postgres\":\"up\""), "{health}");
    seen += &health;

    // Wrong passwords: the errors must name the problem, not the secret.
    let wrong_pg = env
        .database_url
        .replace(&pg_secret, &format!("{pg_secret}x"));
    let wrong_redis = env
        .redis_url
        .replace(&redis_secret, &format!("{redis_secret}x"));
    for (db, rd) in [
        (&wrong_pg, &env.redis_url),
        (&env.database_url, &wrong_redis),
    ] {
        let out = run(Command::new(&scheduler)
            .args(["cycles"])
            .env("DATABASE_URL", db)
            .env("REDIS_URL", rd)
            .env("TRAINYARD_QUEUE", &env.queue))?;
        seen += &text(&out);
        let mut c = Command::new(&worker);
        c.arg("run")
            .env("DATABASE_URL", db)
            .env("REDIS_URL", rd)
            .env("TRAINYARD_QUEUE", &env.queue)
            .env("PORT", trainyard_tests::free_port().to_string())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn()?;
        let pid = child.id();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = trainyard_tests::signal(pid, nix::sys::signal::Signal::SIGKILL);
        let out = child.wait_with_output()?;
        let t = text(&out);
        assert!(!t.is_empty(), "a worker with a wrong password says why");
        seen += &t;
    }

    // The worker's own log of the whole cycle.
    let log = std::fs::read_to_string(log_path(&format!("{}-worker-0", env.db_name)))?;
    assert!(
        log.contains("training succeeded"),
        "the worker log covers the cycle"
    );
    seen += &log;

    for secret in [&pg_secret, &redis_secret] {
        assert!(!seen.contains(secret.as_str()), "a password leaked");
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET on loopback (the test needs no HTTP client).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_reads_and_writes_only_its_own_organization() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let target = insert_org(&env.pool, "target", 200, 71).await?;
    // A neighbour with ten times the values and more days: if its rows leaked
    // into the target's job, the day count and the forecast level would show it.
    let neighbour = insert_org(&env.pool, "neighbour", 300, 72).await?;
    sqlx::query("update metrics_data set value = value * 10, co2e_kg = co2e_kg * 10 where organization_id = $1")
        .bind(neighbour)
        .execute(&env.pool)
        .await?;
    let before: i64 =
        sqlx::query_scalar("select count(*) from metrics_data where organization_id = $1")
            .bind(neighbour)
            .fetch_one(&env.pool)
            .await?;
    env.spawn_worker(&[])?;
    let cycle = enqueue(&env, Some(target), None).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");

    // Every output row of the cycle belongs to the target.
    for table in [
        "ml_training_jobs",
        "ml_models",
        "ml_training_logs",
        "ml_predictions",
        "ml_anomaly_flags",
        "ml_evaluations",
    ] {
        let others: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from {table} where organization_id <> $1"
        )))
        .bind(target)
        .fetch_one(&env.pool)
        .await?;
        assert_eq!(others, 0, "{table} has rows of another organization");
    }
    // The target's jobs saw its 200 days, not the neighbour's 300.
    let days: Vec<i64> = sqlx::query_scalar(
        "select (data_report->>'days')::bigint from ml_training_logs where organization_id = $1",
    )
    .bind(target)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(days.len(), 3, "one log per model type");
    assert!(days.iter().all(|d| *d == 200), "{days:?}");
    // Forecasts are at the target's level (~1,000 kWh a day), not ten times it.
    let energy: Vec<f64> = sqlx::query_scalar(
        "select predicted_value from ml_predictions where organization_id = $1 and model_type = $2",
    )
    .bind(target)
    .bind(ModelType::EnergyForecast.to_string())
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(energy.len(), 30);
    assert!(
        energy.iter().all(|v| *v > 300.0 && *v < 3000.0),
        "{energy:?}"
    );
    // The neighbour's data is untouched.
    let after: i64 =
        sqlx::query_scalar("select count(*) from metrics_data where organization_id = $1")
            .bind(neighbour)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(before, after);
    Ok(())
}

/// One raw HTTP/1.1 request on loopback with extra header lines; the whole
/// response.
async fn http_raw(port: &str, request_head: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    loop {
        match tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await {
            Ok(mut s) => {
                s.write_all(request_head.as_bytes()).await?;
                let mut buf = String::new();
                s.read_to_string(&mut buf).await?;
                return Ok(buf);
            }
            Err(e) if started.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_api_tokens_never_appear_in_logs_answers_or_help() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "alpha", 200, 63).await?;
    let reader = format!("rdT0ken{}", Uuid::new_v4().simple());
    let operator = format!("opT0ken{}", Uuid::new_v4().simple());
    let port = trainyard_tests::free_port().to_string();
    let scheduler = binary("trainyard-scheduler")?;
    let with_env = |c: &mut Command| {
        c.env("DATABASE_URL", &env.database_url)
            .env("REDIS_URL", &env.redis_url)
            .env("TRAINYARD_QUEUE", &env.queue)
            .env("TRAINYARD_READER_TOKEN", &reader)
            .env("TRAINYARD_OPERATOR_TOKEN", &operator)
            .env("PORT", &port)
            .env("RUST_LOG", "debug")
            .env("TRAINYARD_LOG_FORMAT", "json");
    };
    let log = log_path(&format!("{}-serve", env.db_name));
    let mut cmd = Command::new(&scheduler);
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?);
    with_env(&mut cmd);
    let mut child = cmd.spawn()?;

    let mut seen = String::new();
    let head = |method: &str, path: &str, auth: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let enqueue = format!(r#"{{"org_id":"{org}","model_type":"energy_forecast","reason":"r"}}"#);
    for (method, path, auth, body, expect) in [
        (
            "GET",
            "/api/v1/overview",
            bearer(&reader),
            String::new(),
            "200 OK",
        ),
        (
            "GET",
            "/api/v1/overview",
            bearer(&format!("{reader}x")),
            String::new(),
            "401",
        ),
        (
            "POST",
            "/api/v1/jobs",
            bearer(&reader),
            enqueue.clone(),
            "403",
        ),
        (
            "POST",
            "/api/v1/jobs",
            bearer(&operator),
            enqueue.clone(),
            "201",
        ),
        (
            "POST",
            "/api/v1/jobs",
            bearer(&operator),
            enqueue.clone(),
            "409",
        ),
        (
            "GET",
            "/api/v1/audit",
            bearer(&operator),
            String::new(),
            "200 OK",
        ),
    ] {
        let answer = http_raw(&port, &head(method, path, &auth, &body)).await?;
        assert!(
            answer.lines().next().unwrap_or("").contains(expect),
            "{method} {path}: {answer}"
        );
        seen += &answer;
    }
    let _ = trainyard_tests::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    seen += &std::fs::read_to_string(&log)?;
    seen += &std::fs::read_to_string(log.with_extension("err"))?;
    for args in [
        vec!["serve", "--help"],
        vec!["run", "--help"],
        vec!["--help"],
    ] {
        let mut c = Command::new(&scheduler);
        c.args(&args);
        with_env(&mut c);
        seen += &text(&run(&mut c)?);
    }
    let audit: Vec<String> = sqlx::query_scalar("select row_to_json(a)::text from ops_audit a")
        .fetch_all(&env.pool)
        .await?;
    assert!(audit.len() >= 3, "{audit:?}");
    seen += &audit.join("\n");
    assert!(
        seen.contains("ops API listening"),
        "the server logged: {seen}"
    );
    for secret in [&reader, &operator] {
        assert!(!seen.contains(secret.as_str()), "a token leaked");
    }
    Ok(())
}
