//! Property test of data preparation: whatever rows arrive (any dates, NaN,
//! ±inf, negative, huge, duplicated, gappy), preparation never panics and
//! returns either a clean series or a typed error.

use chrono::{Duration, NaiveDate};
use proptest::prelude::*;
use trainyard_worker::training::data::{
    prepare_rows, prepare_series, DataError, PrepSettings, RawRow, Target,
};

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.0..5_000.0f64,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => -1e6..0.0f64,
        1 => 1e11..1e308f64,
    ]
}

fn raw_rows() -> impl Strategy<Value = Vec<RawRow>> {
    let row = (0i64..400, value(), value(), value()).prop_map(|(d, v, c, g)| RawRow {
        id: Some(d),
        date: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + Duration::days(d),
        value: v,
        co2e_kg: c,
        grid_factor: g,
        fingerprint: 0,
    });
    proptest::collection::vec(row, 0..600)
}

fn settings() -> impl Strategy<Value = PrepSettings> {
    (1usize..60, 0usize..200, 0usize..15).prop_map(|(holdout, extra, gap)| PrepSettings {
        min_days: holdout + 1 + extra,
        holdout_days: holdout,
        max_gap_days: gap,
        latest_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn series_preparation_returns_a_clean_series_or_a_typed_error(
        rows in raw_rows(), s in settings(), co2 in any::<bool>()
    ) {
        let target = if co2 { Target::Co2eKg } else { Target::Value };
        match prepare_series(&rows, target, &s) {
            Ok(p) => {
                let v = &p.series.values;
                prop_assert!(v.len() >= s.min_days);
                prop_assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
                prop_assert_eq!(p.holdout().len(), s.holdout_days);
                prop_assert_eq!(p.train().len() + p.holdout().len(), v.len());
                prop_assert_eq!(p.report.days, v.len());
                prop_assert!(p.report.rows_used + p.report.rejected.total() <= rows.len());
                prop_assert!(p.report.train.end < p.report.holdout.start);
            }
            Err(DataError::Insufficient { have, need, .. }) => {
                prop_assert!(have < need);
                prop_assert_eq!(need, s.min_days);
            }
            Err(DataError::Invalid(reason)) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn row_preparation_returns_clean_rows_or_a_typed_error(rows in raw_rows(), s in settings()) {
        match prepare_rows(&rows, &s) {
            Ok(p) => {
                prop_assert!(p.rows.iter().all(|r| r.features.iter().all(|x| x.is_finite() && *x >= 0.0)));
                prop_assert!(p.rows.windows(2).all(|w| w[0].date <= w[1].date));
                prop_assert!(p.holdout_start <= p.rows.len());
                prop_assert!(p.train().iter().all(|r| r.date < p.report.holdout.start));
                prop_assert!(p.holdout().iter().all(|r| r.date >= p.report.holdout.start));
            }
            Err(DataError::Insufficient { have, need, .. }) => prop_assert!(have < need),
            Err(DataError::Invalid(reason)) => prop_assert!(!reason.is_empty()),
        }
    }
}
