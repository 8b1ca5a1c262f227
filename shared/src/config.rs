//! Settings both binaries share, read from the environment (Railway style:
//! `DATABASE_URL`, `REDIS_URL`) or flags, and shown in `--help`.

use std::time::Duration;

use clap::Args;

/// Where PostgreSQL and Redis are, and which queue to use.
#[derive(Debug, Clone, Args)]
pub struct ConnectionSettings {
    /// PostgreSQL connection URL (the source of truth).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/trainyard"
    )]
    pub database_url: String,

    /// Redis connection URL (job transport only; it may lose everything).
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Redis key prefix of the training queue; scheduler and workers must agree.
    #[arg(long, env = "TRAINYARD_QUEUE", default_value = crate::queue::DEFAULT_QUEUE)]
    pub queue: String,

    /// Seconds to wait for one Redis reply before the connection is considered broken.
    #[arg(long, env = "TRAINYARD_REDIS_TIMEOUT_SECS", default_value_t = 10)]
    pub redis_timeout_secs: u64,

    /// Maximum PostgreSQL connections of this process.
    #[arg(long, env = "TRAINYARD_DB_MAX_CONNECTIONS", default_value_t = 5)]
    pub db_max_connections: u32,
}

impl ConnectionSettings {
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_secs(self.redis_timeout_secs.max(1))
    }
}

/// Replaces the password of a URL with `***` so it can be logged.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_and_keeps_the_rest() {
        let r = redact_url("postgres://app:s3cret@db.internal:5432/trainyard");
        assert!(!r.contains("s3cret"));
        assert!(r.contains("app:***@db.internal:5432/trainyard"));
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "<unparseable url>");
    }
}
