//! PostgreSQL connections and the embedded migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use std::str::FromStr;

/// Errors reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL could not be parsed; fix `DATABASE_URL`.
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    /// PostgreSQL did not answer or refused the connection.
    #[error("could not connect to PostgreSQL at {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// PostgreSQL accepted no connection in time (a firewall dropping packets,
    /// an overloaded server).
    #[error("PostgreSQL at {url} did not answer within {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("running migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long the first connection may take before start-up gives up.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects a pool. One connection is opened directly first, so an
/// unreachable or misconfigured server is reported at once with its real
/// cause ("Connection refused", "password authentication failed"), not as
/// a pool timeout ten seconds later. The error names the URL with its
/// password redacted.
#[tracing::instrument(skip_all, fields(db.url = %crate::config::redact_url(url)))]
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url)
        // sqlx's parse error may echo the URL: keep only its kind.
        .map_err(|_| DbError::BadUrl(crate::config::redact_url(url)))?
        // The server's NOTICEs (e.g. `relation "_sqlx_migrations" already
        // exists, skipping` on every start) are noise in an operator's
        // terminal; warnings and errors still arrive.
        .options([("client_min_messages", "warning")]);
    let connect_error = |source| DbError::Connect {
        url: crate::config::redact_url(url),
        source,
    };
    let first = tokio::time::timeout(FIRST_CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| DbError::ConnectTimeout {
            url: crate::config::redact_url(url),
            secs: FIRST_CONNECT_TIMEOUT.as_secs(),
        })?
        .map_err(connect_error)?;
    let _ = first.close().await;
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(FIRST_CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(connect_error)
}

/// Applies pending migrations. sqlx takes an advisory lock, so concurrent
/// replicas may all call this at start.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
