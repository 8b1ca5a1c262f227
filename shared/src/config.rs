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

    /// Seconds to wait for one Redis reply before the connection is considered broken (1–3600).
    #[arg(long, env = "TRAINYARD_REDIS_TIMEOUT_SECS", default_value_t = 10,
          value_parser = bounded::<u64>("TRAINYARD_REDIS_TIMEOUT_SECS", 1, 3600))]
    pub redis_timeout_secs: u64,

    /// Maximum PostgreSQL connections of this process (1–1000).
    #[arg(long, env = "TRAINYARD_DB_MAX_CONNECTIONS", default_value_t = 5,
          value_parser = bounded::<u32>("TRAINYARD_DB_MAX_CONNECTIONS", 1, 1000))]
    pub db_max_connections: u32,
}

/// Jobs kept in Redis at most, for both binaries. The upper bound keeps
/// apalis' Lua scripts, which unpack whole lists, well below Lua's limit of
/// about 8,000 values.
pub const MAX_QUEUE_WINDOW: i64 = 5000;

/// The fewest days of data a model type may be configured to need: the
/// pipeline holds out 30 days, validates on 30 and fits on at least 60.
pub const MIN_DAYS_FLOOR: i64 = 120;

/// The most days of data a model type may be configured to need (100 years).
pub const MIN_DAYS_CEILING: i64 = 36_500;

/// A clap value parser that accepts a number within `min..=max` and
/// otherwise says which setting is wrong and what it allows. NaN and
/// infinities are outside every range.
pub fn bounded<T>(
    setting: &'static str,
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    move |raw: &str| {
        let out_of_range = || format!("{setting} must be a number from {min} to {max}");
        let value: T = raw.trim().parse().map_err(|_| out_of_range())?;
        // Written so that NaN (unordered) fails too.
        if value >= min && value <= max {
            Ok(value)
        } else {
            Err(out_of_range())
        }
    }
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
    fn a_bounded_setting_names_itself_and_its_range_when_out_of_range() {
        let hours = bounded::<f64>("TRAINYARD_CYCLE_DEADLINE_HOURS", 0.01, 8760.0);
        assert_eq!(hours("24"), Ok(24.0));
        for bad in ["inf", "-inf", "NaN", "1e300", "-1", "0", "soon", ""] {
            let e = hours(bad).unwrap_err();
            assert!(
                e.contains("TRAINYARD_CYCLE_DEADLINE_HOURS") && e.contains("0.01 to 8760"),
                "{bad}: {e}"
            );
        }
        let attempts = bounded::<i32>("TRAINYARD_MAX_ATTEMPTS", 1, 100);
        assert_eq!(attempts(" 3 "), Ok(3));
        assert!(attempts("0").is_err() && attempts("101").is_err() && attempts("2.5").is_err());
    }

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
