//! PostgreSQL connections and the embedded migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
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
    #[error("running migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects a pool. The error names the URL with its password redacted.
#[tracing::instrument(skip_all, fields(db.url = %crate::config::redact_url(url)))]
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        // sqlx's parse error may echo the URL; keep only its kind.
        let _ = e;
        DbError::BadUrl(crate::config::redact_url(url))
    })?;
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|source| DbError::Connect {
            url: crate::config::redact_url(url),
            source,
        })
}

/// Applies pending migrations. sqlx takes an advisory lock, so concurrent
/// replicas may all call this at start.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
