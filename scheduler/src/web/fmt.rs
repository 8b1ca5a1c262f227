//! How the pages write numbers and times: short, human, and the same
//! everywhere. Called from the templates (`{{ crate::web::fmt::secs(x) }}`).

use chrono::{DateTime, Utc};

/// A value the templates pass by reference or by value, present or not:
/// askama hands functions references, Rust code hands them values.
pub trait Maybe<T> {
    fn get(self) -> Option<T>;
}

macro_rules! maybe {
    ($($t:ty),+) => {$(
        impl Maybe<$t> for $t { fn get(self) -> Option<$t> { Some(self) } }
        impl Maybe<$t> for &$t { fn get(self) -> Option<$t> { Some(*self) } }
        impl Maybe<$t> for &&$t { fn get(self) -> Option<$t> { Some(**self) } }
        impl Maybe<$t> for Option<$t> { fn get(self) -> Option<$t> { self } }
        impl Maybe<$t> for &Option<$t> { fn get(self) -> Option<$t> { *self } }
        impl Maybe<$t> for Option<&$t> { fn get(self) -> Option<$t> { self.copied() } }
        impl Maybe<$t> for &Option<&$t> { fn get(self) -> Option<$t> { self.copied() } }
    )+};
}
maybe!(f64, i64, DateTime<Utc>);

/// `12.3 s`, `4 min 05 s`, `2 h 07 min`; `–` when unknown.
pub fn secs(value: impl Maybe<f64>) -> String {
    let Some(s) = value.get().filter(|s| s.is_finite()) else {
        return "–".to_string();
    };
    if s < 0.0 {
        return "–".to_string();
    }
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let whole = s.round() as i64;
    if whole < 3600 {
        return format!("{} min {:02} s", whole / 60, whole % 60);
    }
    if whole < 86_400 * 2 {
        return format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60);
    }
    format!("{} d {} h", whole / 86_400, (whole % 86_400) / 3600)
}

/// Minutes as a duration.
pub fn minutes(value: impl Maybe<f64>) -> String {
    secs(value.get().map(|m| m * 60.0))
}

/// The time in UTC, to the second: `2026-12-15 02:00:07`.
pub fn at(value: impl Maybe<DateTime<Utc>>) -> String {
    value
        .get()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "–".to_string())
}

/// The RFC 3339 form, for `<time datetime=…>` and titles.
pub fn iso(value: impl Maybe<DateTime<Utc>>) -> String {
    value.get().map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// How long ago, from `now`: `35 s ago`, `4 min ago`, `in 2 h`.
pub fn ago(value: impl Maybe<DateTime<Utc>>, now: impl Maybe<DateTime<Utc>>) -> String {
    let (Some(t), Some(now)) = (value.get(), now.get()) else {
        return "–".to_string();
    };
    let d = (now - t).num_milliseconds() as f64 / 1000.0;
    if d >= 0.0 {
        format!("{} ago", secs(Some(d)))
    } else {
        format!("in {}", secs(Some(-d)))
    }
}

/// A score with three decimals, `–` when unknown.
pub fn num(value: impl Maybe<f64>) -> String {
    match value.get().filter(|v| v.is_finite()) {
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
        None => "–".to_string(),
    }
}

/// An organization's name, or its id when it has none.
pub fn org_name(name: Option<&str>, id: &str) -> String {
    name.filter(|n| !n.is_empty()).unwrap_or(id).to_string()
}

/// A count that may be unknown.
pub fn opt_i64(value: impl Maybe<i64>) -> String {
    value
        .get()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "–".to_string())
}

/// A fraction as a percentage: `97.5 %`.
pub fn pct(part: impl Maybe<i64>, whole: impl Maybe<i64>) -> String {
    let (part, whole) = (part.get().unwrap_or(0), whole.get().unwrap_or(0));
    if whole <= 0 {
        return "–".to_string();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}

/// A signed change: `+0.012`, `−0.300`.
pub fn delta(value: impl Maybe<f64>) -> String {
    match value.get().filter(|v| v.is_finite()) {
        Some(v) if v >= 0.0 => format!("+{v:.3}"),
        Some(v) => format!("−{:.3}", -v),
        None => "–".to_string(),
    }
}

/// The first `n` characters of a reason, with an ellipsis when cut.
pub fn clip(value: &str, n: usize) -> String {
    let mut out: String = value.chars().take(n).collect();
    if value.chars().count() > n {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(secs(Some(4.25)), "4.2 s");
        assert_eq!(secs(Some(245.0)), "4 min 05 s");
        assert_eq!(secs(Some(7620.0)), "2 h 07 min");
        assert_eq!(secs(Some(3.0 * 86_400.0 + 7200.0)), "3 d 2 h");
        assert_eq!(secs(None::<f64>), "–");
        assert_eq!(secs(Some(f64::NAN)), "–");
        assert_eq!(minutes(Some(1.5)), "1 min 30 s");
    }

    #[test]
    fn numbers_and_shares() {
        assert_eq!(num(Some(0.81234)), "0.812");
        assert_eq!(num(Some(12.345)), "12.35");
        assert_eq!(pct(1_i64, 3_i64), "33.3 %");
        assert_eq!(pct(1_i64, 0_i64), "–");
        assert_eq!(delta(Some(-0.3)), "−0.300");
        assert_eq!(num(&Some(&1.0)), "1.000");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
