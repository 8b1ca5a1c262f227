//! The monthly schedule: a cron expression (with a seconds field, UTC) and
//! the tick a scheduler that starts late must catch up.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

/// The product's schedule: the 15th of each month, 02:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 0 2 15 * *";

#[derive(Debug, thiserror::Error)]
#[error("TRAINYARD_SCHEDULE `{expr}` is not a valid cron expression (6 fields with seconds, e.g. `0 0 2 15 * *`): {message}")]
pub struct BadSchedule {
    pub expr: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Schedule(cron::Schedule);

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, BadSchedule> {
        cron::Schedule::from_str(expr)
            .map(Self)
            .map_err(|e| BadSchedule {
                expr: expr.to_string(),
                message: e.to_string(),
            })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.after(&t).next()
    }

    /// The latest tick at or before `now`, if it is no older than `max_age`.
    pub fn last_tick(&self, now: DateTime<Utc>, max_age: Duration) -> Option<DateTime<Utc>> {
        let start = now - max_age;
        let mut last = None;
        for t in self.0.after(&(start - Duration::seconds(1))) {
            if t > now {
                break;
            }
            last = Some(t);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_default_schedule_fires_on_the_fifteenth_at_two() {
        let s = Schedule::parse(DEFAULT_SCHEDULE).unwrap();
        let t = s
            .next_after(Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap())
            .unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 12, 15, 2, 0, 0).unwrap());
    }

    #[test]
    fn a_late_start_finds_the_missed_tick_within_the_catch_up_window() {
        let s = Schedule::parse(DEFAULT_SCHEDULE).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 15, 9, 30, 0).unwrap();
        assert_eq!(
            s.last_tick(now, Duration::days(3)),
            Some(Utc.with_ymd_and_hms(2026, 11, 15, 2, 0, 0).unwrap())
        );
        let later = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        assert_eq!(s.last_tick(later, Duration::days(3)), None);
    }

    #[test]
    fn a_five_field_expression_is_rejected_with_a_message_naming_the_setting() {
        let e = Schedule::parse("0 2 15 * *").unwrap_err();
        assert!(e.to_string().contains("TRAINYARD_SCHEDULE"));
    }
}
