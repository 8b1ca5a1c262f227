//! The monthly schedule: a cron expression (with a seconds field, UTC) and
//! the tick a scheduler that starts late must catch up.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

/// The product's schedule: the 15th of each month, 02:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 0 2 15 * *";

/// A schedule whose first tick is further away than this is refused as a
/// mistake (the default fires within a month).
pub const MAX_FIRST_TICK_YEARS: i64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("TRAINYARD_SCHEDULE `{expr}` is not a usable schedule (cron with seconds, UTC, at most one tick a month, e.g. `0 0 2 15 * *`): {message}")]
pub struct BadSchedule {
    pub expr: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Schedule(Box<cron::Schedule>);

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, BadSchedule> {
        cron::Schedule::from_str(expr)
            .map(|s| Self(Box::new(s)))
            .map_err(|e| BadSchedule {
                expr: expr.to_string(),
                message: e.to_string(),
            })
    }

    /// Parses a schedule for monthly cycles and refuses one that cannot
    /// drive them: see [`Schedule::check_monthly`]. This is what the
    /// command line accepts.
    pub fn parse_monthly(expr: &str) -> Result<Self, BadSchedule> {
        let schedule = Self::parse(expr)?;
        schedule
            .check_monthly(Utc::now())
            .map_err(|message| BadSchedule {
                expr: expr.to_string(),
                message,
            })?;
        Ok(schedule)
    }

    /// Cycles are keyed by month (`2026-12`), so a second tick in the same
    /// month would find its cycle already created and do nothing, and a
    /// schedule that never fires (`0 0 2 31 2 *`) would leave the daemon
    /// idle forever. Both are refused: at most one tick per calendar month,
    /// and a first tick within [`MAX_FIRST_TICK_YEARS`] years of `from`.
    pub fn check_monthly(&self, from: DateTime<Utc>) -> Result<(), String> {
        let mut ticks = self.0.after(&from);
        let Some(first) = ticks.next() else {
            return Err("it never fires".to_string());
        };
        if first > from + Duration::days(365 * MAX_FIRST_TICK_YEARS) {
            return Err(format!(
                "its first tick is {first}, more than {MAX_FIRST_TICK_YEARS} years away"
            ));
        }
        // Any schedule firing twice in some month does so within two years
        // (every month occurs twice), and at most 24 ticks fit in two years
        // of a valid schedule.
        let mut previous = first;
        for tick in ticks.take(24) {
            if tick.format("%Y-%m").to_string() == previous.format("%Y-%m").to_string() {
                return Err(format!(
                    "it fires more than once a month ({previous} and {tick}), but cycles are \
                     keyed by month, so every tick after the first in a month would do nothing; \
                     use at most one tick a month, e.g. `{DEFAULT_SCHEDULE}`"
                ));
            }
            previous = tick;
        }
        Ok(())
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

    #[test]
    fn a_schedule_firing_more_than_once_a_month_or_never_is_refused() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        for ok in [
            DEFAULT_SCHEDULE,
            "0 0 2 1 * *",
            "0 30 4 28 * *",
            "0 0 0 1 1 *",
            "0 0 2 31 * *",
        ] {
            let s = Schedule::parse(ok).unwrap();
            assert_eq!(s.check_monthly(now), Ok(()), "{ok}");
        }
        for (frequent, why) in [
            ("0 0 2 1,15 * *", "more than once a month"),
            ("0 * * * * *", "more than once a month"),
            ("0 0 2 * * MON", "more than once a month"),
            ("0 0 2 30,31 * *", "more than once a month"),
            ("0 0 2 31 2 *", "never fires"),
            ("0 0 2 15 * * 2020", "never fires"),
        ] {
            let e = Schedule::parse(frequent)
                .unwrap()
                .check_monthly(now)
                .unwrap_err();
            assert!(e.contains(why), "{frequent}: {e}");
        }
        let e = Schedule::parse_monthly("0 0 2 31 2 *").unwrap_err();
        assert!(e.to_string().contains("TRAINYARD_SCHEDULE"), "{e}");
    }
}
