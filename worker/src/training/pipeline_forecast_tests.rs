//! Forecast-side tests of the pipeline: every model kind's artifact
//! reproduces its scores and forecast, and a level shift is followed.

use chrono::{Datelike, Duration, NaiveDate};
use trainyard_shared::ModelType;

use super::*;

fn rows(values: &[f64], start: NaiveDate) -> Vec<RawRow> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| RawRow {
            id: None,
            date: start + Duration::days(i as i64),
            value: v,
            co2e_kg: f64::NAN,
            grid_factor: f64::NAN,
            fingerprint: 0,
        })
        .collect()
}

/// Two and a half years of a weekly + yearly series with deterministic
/// noise.
fn seasonal(days: usize, start: NaiveDate) -> Vec<f64> {
    (0..days)
        .map(|i| {
            let d = start + Duration::days(i as i64);
            let weekly = if d.weekday().number_from_monday() >= 6 {
                0.8
            } else {
                1.05
            };
            let yearly =
                1.0 + 0.2 * (2.0 * std::f64::consts::PI * d.ordinal0() as f64 / 365.25).cos();
            let noise = ((i * 7919) % 101) as f64 / 101.0 - 0.5;
            1000.0 * weekly * yearly * (1.0 + 0.04 * noise)
        })
        .collect()
}

fn request(values: &[f64], start: NaiveDate) -> TrainRequest {
    let mut settings = TrainSettings {
        latest_date: Some(NaiveDate::from_ymd_opt(2100, 1, 1).unwrap()),
        ..TrainSettings::default()
    };
    settings.lstm.epochs = 2;
    TrainRequest {
        model_type: ModelType::EnergyForecast,
        rows: rows(values, start),
        settings,
        seed: 11,
    }
}

#[test]
fn every_forecast_artifact_round_trips_to_the_same_scores_and_forecast() {
    let start = NaiveDate::from_ymd_opt(2021, 1, 1).unwrap();
    let req = request(&seasonal(900, start), start);
    let outcome = train_model(&req, &mut |_| {}).unwrap();
    let names: Vec<&str> = outcome
        .candidates
        .iter()
        .map(|c| c.algorithm.as_str())
        .collect();
    for kind in ["mstl", "stl_ets", hybrid::NAME, COMBINATION] {
        assert!(names.contains(&kind), "{kind} missing from {names:?}");
    }
    for c in &outcome.candidates {
        assert_eq!(
            rescore(&c.artifact, &req).unwrap(),
            c.metrics,
            "{}",
            c.algorithm
        );
        assert_eq!(artifact::sha256_hex(&c.artifact), c.sha256);
    }
    let champion = outcome.champion();
    let (forecast, _) = predict(&champion.artifact, &req).unwrap();
    assert_eq!(forecast, outcome.forecast);
    // Every forecast day has nested intervals (on this unbiased series,
    // around its value).
    assert_eq!(forecast.len(), 30);
    for p in &forecast {
        let (l95, l80, u80, u95) = (
            p.lower_95.unwrap(),
            p.lower_80.unwrap(),
            p.upper_80.unwrap(),
            p.upper_95.unwrap(),
        );
        assert!(
            l95 <= l80 && l80 <= p.value && p.value <= u80 && u80 <= u95,
            "{p:?}"
        );
    }
    // A combination's artifact names its members and refuses tampering.
    let combo = outcome
        .candidates
        .iter()
        .find(|c| c.algorithm == COMBINATION)
        .unwrap();
    let header = Artifact::from_bytes(&combo.artifact).unwrap().header;
    assert_eq!(header.config["members"].as_array().unwrap().len(), 5);
    let mut bad = combo.artifact.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    assert!(matches!(
        rescore(&bad, &req),
        Err(TrainError::CorruptArtifact(_))
    ));
}

#[test]
fn after_a_level_shift_the_forecast_follows_the_new_level() {
    let start = NaiveDate::from_ymd_opt(2021, 1, 1).unwrap();
    let mut values = seasonal(900, start);
    // A lockdown: the last 75 days (validation, holdout and two weeks
    // before them) fall by 35 %.
    for v in &mut values[825..] {
        *v *= 0.65;
    }
    let mut req = request(&values, start);
    req.settings.exclude = vec!["lstm".into()];
    let outcome = train_model(&req, &mut |_| {}).unwrap();
    let champion = outcome.champion();
    let actual = &values[870..];
    let holdout = holdout_forecast(&champion.artifact, &req, false).unwrap();
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let predicted = mean(&mut holdout.iter().map(|p| p.value));
    let truth = mean(&mut actual.iter().copied());
    // The old level is 54 % above the new one; the forecast must sit within
    // 8 % of the new level.
    assert!(
        (predicted / truth - 1.0).abs() < 0.08,
        "{}: forecast mean {predicted}, actual {truth}",
        champion.algorithm
    );
}

#[test]
fn the_champion_is_the_combination_and_a_shadow_never_competes() {
    let start = NaiveDate::from_ymd_opt(2021, 1, 1).unwrap();
    let mut req = request(&seasonal(700, start), start);
    req.settings.shadow = vec!["lstm".into()];
    let outcome = train_model(&req, &mut |_| {}).unwrap();
    let names: Vec<&str> = outcome
        .candidates
        .iter()
        .map(|c| c.algorithm.as_str())
        .collect();
    assert!(names.contains(&"lstm"), "the shadow is scored: {names:?}");
    assert_eq!(outcome.champion().algorithm, COMBINATION);
    let combo = Artifact::from_bytes(&outcome.champion().artifact).unwrap();
    let members: Vec<&str> = combo.header.config["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 5);
    assert!(!members.contains(&"lstm"), "{members:?}");
    // The members are every non-shadow candidate, best on validation first.
    let mut ranked: Vec<&Candidate> = outcome
        .candidates
        .iter()
        .filter(|c| c.algorithm != "lstm" && c.algorithm != COMBINATION)
        .collect();
    ranked.sort_by(|a, b| a.validation.mae.total_cmp(&b.validation.mae));
    let best: Vec<&str> = ranked.iter().map(|c| c.algorithm.as_str()).collect();
    assert_eq!(members, best);

    // Under the validation rule a shadow cannot win even when it is best
    // on validation: with the regression as the shadow and seasonal naive
    // the only other candidate, seasonal naive is champion.
    req.settings.champion = ChampionRule::Validation;
    req.settings.shadow = vec!["seasonal_regression".into()];
    req.settings.exclude = ["lstm_hybrid", "mstl", "stl_ets", COMBINATION]
        .map(String::from)
        .to_vec();
    let outcome = train_model(&req, &mut |_| {}).unwrap();
    let mae = |name: &str| {
        outcome
            .candidates
            .iter()
            .find(|c| c.algorithm == name)
            .unwrap()
            .validation
            .mae
    };
    assert!(mae("seasonal_regression") < mae("seasonal_naive"));
    assert_eq!(outcome.champion().algorithm, "seasonal_naive");
}
