//! Anomaly detection end to end: features with time context, the candidates
//! (autoencoder, PCA), a champion chosen on detection quality, and the
//! flags with their reasons.
//!
//! ## Features
//! Each row is scored on the three seed features (`co2e_kg`, `value`,
//! `grid_factor`) and the four context features of its date
//! ([`super::context`]): weekday residuals of value and CO2e, the
//! day-over-day change and the recent level. Models stored before the
//! context existed (`Normalization::Features`) keep scoring the three
//! seed features.
//!
//! ## Threshold
//! The `anomaly_quantile` quantile of the model's scores on its fitting rows
//! of the last [`RECENT_DAYS`] days (all fitting rows when fewer than 90),
//! never below [`SCORE_FLOOR`]: a score of rounding noise is never a flag.
//!
//! ## Champion
//! Reconstruction error alone would crown a model that reconstructs
//! everything, anomalies included, and flags nothing. Instead, spikes and
//! dips of [`INJECTED_SD`] robust standard deviations are injected into
//! copies of the validation days; each candidate scores the copies with the
//! threshold from its fitting rows. The champion has the highest recall of
//! the injected days, then the fewest flags on the clean validation days,
//! then the lowest validation reconstruction RMSE. A candidate that finds
//! none of the injected days never wins against one that finds some.
//!
//! ## Flags
//! A row is flagged, with a [`FlagKind`], when a built-in detector
//! ([`super::detectors`]) fires on it (stuck, then ratio break, then level
//! shift, then spike or dip) or the champion's score exceeds its threshold (spike, dip or
//! unusual, from the direction of the day's residuals). Rows the data
//! preparation rejected (negative, missing, absurd, future-dated) are
//! flagged too, with an infinite score: they could not be scored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use trainyard_shared::ModelType;

use super::context::{self, DayContext, CONTEXT_FEATURES};
use super::detectors::{self, FlagKind};
use super::{train_autoencoder, TrainedAutoencoder};
use crate::training::artifact::{self, Artifact, Normalization, TrainingWindow};
use crate::training::challengers::pca::PcaDetector;
use crate::training::data::{self, FeatureRow, PreparedRows, Scaler};
use crate::training::metrics::{self, Metrics};
use crate::training::pipeline::{
    algorithms, from_json_bytes, header, to_json, AnomalyFlag, Candidate, SkippedCandidate,
    TrainError, TrainOutcome, TrainRequest, TrainSettings,
};
use crate::training::progress::EpochReport;

/// The smallest threshold: scores are in standardized units, and below this
/// a difference is rounding noise.
pub const SCORE_FLOOR: f64 = 1e-6;
/// The threshold is calibrated on the fitting rows of this many last days.
pub const RECENT_DAYS: i64 = 365;
/// Size of the spikes and dips injected into validation copies (robust sd
/// of the weekday residuals).
pub const INJECTED_SD: f64 = 5.0;
/// Seed features plus context features.
pub const WIDTH: usize = 3 + CONTEXT_FEATURES;

/// Each row's model input before standardization: the seed features, then
/// (with `context`) its date's context features.
fn raw_features(rows: &[FeatureRow], context: bool) -> Vec<Vec<f64>> {
    if !context {
        return rows.iter().map(|r| r.features.to_vec()).collect();
    }
    let ctx = context::row_context(rows);
    rows.iter()
        .zip(&ctx)
        .map(|(r, c)| r.features.iter().chain(&c.features()).copied().collect())
        .collect()
}

/// A fitted anomaly detector with its standardization and threshold.
#[derive(Debug, Clone)]
pub(crate) struct AnomalyModel {
    scalers: Vec<Scaler>,
    /// Whether the context features follow the seed features.
    context: bool,
    pub(crate) threshold: f64,
    kind: ModelKind,
}

#[derive(Debug, Clone)]
enum ModelKind {
    Pca(PcaDetector),
    Autoencoder(Arc<TrainedAutoencoder>),
}

impl AnomalyModel {
    fn fit(
        algorithm: &str,
        fit: &[Vec<f64>],
        fit_dates: &[NaiveDate],
        scalers: Vec<Scaler>,
        settings: &TrainSettings,
        seed: u64,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<AnomalyModel, String> {
        let rows = standardize(&scalers, fit);
        let kind = match algorithm {
            "autoencoder" => {
                let rows32: Vec<Vec<f32>> = rows
                    .iter()
                    .map(|r| r.iter().map(|&x| x as f32).collect())
                    .collect();
                let config = settings.autoencoder.clone().with_inputs(scalers.len());
                let model = train_autoencoder(&rows32, &config, seed, on_epoch)
                    .map_err(|e| e.to_string())?;
                ModelKind::Autoencoder(Arc::new(model))
            }
            "pca" => {
                ModelKind::Pca(PcaDetector::fit(&rows, &settings.pca).map_err(|e| e.to_string())?)
            }
            other => return Err(format!("unknown anomaly algorithm `{other}`")),
        };
        let mut model = AnomalyModel {
            context: scalers.len() == WIDTH,
            scalers,
            threshold: 0.0,
            kind,
        };
        let scores = model.scores(&rows);
        let last = fit_dates.last().copied().unwrap_or(NaiveDate::MIN);
        let recent: Vec<f64> = scores
            .iter()
            .zip(fit_dates)
            .filter(|(_, d)| **d > last - Duration::days(RECENT_DAYS))
            .map(|(s, _)| *s)
            .collect();
        let calibration = if recent.len() >= 90 { recent } else { scores };
        model.threshold = threshold(calibration, settings.anomaly_quantile);
        Ok(model)
    }

    fn algorithm(&self) -> &'static str {
        match self.kind {
            ModelKind::Pca(_) => "pca",
            ModelKind::Autoencoder(_) => "autoencoder",
        }
    }

    fn standardize(&self, raw: &[Vec<f64>]) -> Vec<Vec<f64>> {
        standardize(&self.scalers, raw)
    }

    /// The detection score of standardized rows.
    fn scores(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        match &self.kind {
            ModelKind::Pca(m) => m.scores(rows),
            ModelKind::Autoencoder(_) => self
                .reconstructions(rows)
                .iter()
                .zip(rows)
                .map(|(y, r)| {
                    r.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / r.len() as f64
                })
                .collect(),
        }
    }

    /// The model's reconstruction of standardized rows.
    fn reconstructions(&self, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
        match &self.kind {
            ModelKind::Pca(m) => rows.iter().map(|r| m.reconstruct(r)).collect(),
            ModelKind::Autoencoder(m) => {
                let rows32: Vec<Vec<f32>> = rows
                    .iter()
                    .map(|r| r.iter().map(|&x| x as f32).collect())
                    .collect();
                m.reconstruct(&rows32)
                    .into_iter()
                    .map(|r| r.into_iter().map(f64::from).collect())
                    .collect()
            }
        }
    }

    /// Reconstruction metrics on the three seed features of `raw` rows (the
    /// context features are mostly noise by design: how well a model
    /// reproduces them says nothing about what normal rows look like). R²
    /// is measured against the fitting rows' mean (0 in standardized
    /// units), not the window's own mean: a 30-day window of a slowly
    /// drifting grid factor has almost no variance of its own, and the
    /// question is how much of the rows' departure from normal the model
    /// explains. Accuracy is `100 · max(0, R²)` as before.
    fn metrics(&self, raw: &[Vec<f64>]) -> Metrics {
        let rows = self.standardize(raw);
        let recon = self.reconstructions(&rows);
        let seed: Vec<&[f64]> = rows.iter().map(|r| &r[..3]).collect();
        let errors: Vec<f64> = rows
            .iter()
            .zip(&recon)
            .map(|(r, y)| (0..3).map(|f| (r[f] - y[f]).powi(2)).sum::<f64>() / 3.0)
            .collect();
        let mut m = metrics::reconstruction(&seed, &errors);
        let sse: f64 = 3.0 * errors.iter().sum::<f64>();
        let sst: f64 = seed
            .iter()
            .map(|r| r.iter().map(|x| x * x).sum::<f64>())
            .sum();
        m.r2 = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
        m.accuracy = metrics::accuracy(None, m.r2);
        m
    }

    fn to_artifact(&self, window: TrainingWindow) -> Artifact {
        let (config, model) = match &self.kind {
            ModelKind::Pca(m) => (
                to_json(&m.config),
                serde_json::to_vec(m).expect("the model serializes"),
            ),
            ModelKind::Autoencoder(m) => (to_json(m.config()), m.to_bytes()),
        };
        let normalization = if self.context {
            Normalization::FeaturesWithContext {
                scalers: self.scalers.clone(),
            }
        } else {
            Normalization::Features {
                scalers: self.scalers.clone().try_into().expect("three scalers"),
            }
        };
        Artifact {
            header: header(
                ModelType::AnomalyDetection,
                self.algorithm(),
                config,
                normalization,
                Some(self.threshold),
                window,
            ),
            model,
        }
    }

    pub(crate) fn load(artifact: &Artifact) -> Result<AnomalyModel, TrainError> {
        let h = &artifact.header;
        let (scalers, context) = match &h.normalization {
            Normalization::Features { scalers } => (scalers.to_vec(), false),
            Normalization::FeaturesWithContext { scalers } if scalers.len() == WIDTH => {
                (scalers.clone(), true)
            }
            _ => {
                return Err(TrainError::CorruptArtifact(
                    "an anomaly model without feature normalization".into(),
                ))
            }
        };
        let threshold = h.threshold.ok_or_else(|| {
            TrainError::CorruptArtifact("an anomaly model without a threshold".into())
        })?;
        let kind = match h.algorithm.as_str() {
            "pca" => ModelKind::Pca(from_json_bytes(&artifact.model)?),
            "autoencoder" => ModelKind::Autoencoder(Arc::new(
                TrainedAutoencoder::from_bytes(&artifact.model)
                    .map_err(|e| TrainError::CorruptArtifact(e.to_string()))?,
            )),
            other => {
                return Err(TrainError::CorruptArtifact(format!(
                    "unknown anomaly algorithm `{other}`"
                )))
            }
        };
        Ok(AnomalyModel {
            scalers,
            context,
            threshold,
            kind,
        })
    }

    /// Scores of every prepared row.
    fn score_rows(&self, rows: &[FeatureRow]) -> Vec<f64> {
        self.scores(&self.standardize(&raw_features(rows, self.context)))
    }
}

fn standardize(scalers: &[Scaler], raw: &[Vec<f64>]) -> Vec<Vec<f64>> {
    raw.iter()
        .map(|r| r.iter().zip(scalers).map(|(x, s)| s.apply(*x)).collect())
        .collect()
}

/// The `q` quantile (linear interpolation) of the finite scores, floored
/// at [`SCORE_FLOOR`].
pub(crate) fn threshold(mut xs: Vec<f64>, q: f64) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::INFINITY;
    }
    xs.sort_by(f64::total_cmp);
    let pos = q * (xs.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos.fract());
    let hi = (lo + 1).min(xs.len() - 1);
    (xs[lo] + (xs[hi] - xs[lo]) * frac).max(SCORE_FLOOR)
}

/// How a candidate did on the injected validation copies.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Detection {
    /// Injected days found / injected days.
    recall: f64,
    /// Flagged rows of the clean validation days.
    clean_flags: usize,
    /// Flagged rows of the injected copies that were injected.
    precision: Option<f64>,
}

/// Copies of `rows` (every prepared row up to the end of validation) with
/// spikes and dips injected on some validation dates, and the injected
/// dates of each copy.
fn injected_copies(
    rows: &[FeatureRow],
    val_first: NaiveDate,
) -> Vec<(Vec<FeatureRow>, Vec<NaiveDate>)> {
    let days = context::daily(rows);
    let values: Vec<f64> = days.iter().map(|d| d.value).collect();
    let residuals: Vec<f64> = context::weekday_residuals(&days, &values)
        .into_iter()
        .zip(&days)
        .filter(|(r, d)| r.is_finite() && d.date < val_first)
        .map(|(r, _)| r)
        .collect();
    let Some(sd) = context::robust_sd(&residuals).filter(|s| *s > 0.0) else {
        return Vec::new();
    };
    let val_days: Vec<&context::Day> = days.iter().filter(|d| d.date >= val_first).collect();
    (0..2)
        .map(|copy| {
            let mut out = rows.to_vec();
            let mut dates = Vec::new();
            for (k, day) in val_days.iter().enumerate().skip(2 + 3 * copy).step_by(7) {
                let up = (k / 7 + copy) % 2 == 0 || day.value < INJECTED_SD * sd;
                let delta = if up {
                    INJECTED_SD * sd
                } else {
                    -INJECTED_SD * sd
                };
                if day.value <= 0.0 {
                    continue;
                }
                let factor = 1.0 + delta / day.value;
                for r in out.iter_mut().filter(|r| r.date == day.date) {
                    r.features[0] *= factor;
                    r.features[1] *= factor;
                }
                dates.push(day.date);
            }
            (out, dates)
        })
        .filter(|(_, dates)| !dates.is_empty())
        .collect()
}

fn detection(
    model: &AnomalyModel,
    clean: &[FeatureRow],
    copies: &[(Vec<FeatureRow>, Vec<NaiveDate>)],
    val_first: NaiveDate,
) -> Detection {
    let clean_scores = model.score_rows(clean);
    let clean_flags = clean
        .iter()
        .zip(&clean_scores)
        .filter(|(r, s)| r.date >= val_first && **s > model.threshold)
        .count();
    let (mut found, mut injected, mut flagged, mut true_flags) = (0, 0, 0, 0);
    for (rows, dates) in copies {
        let scores = model.score_rows(rows);
        let mut hit: BTreeMap<NaiveDate, bool> = dates.iter().map(|d| (*d, false)).collect();
        for (r, s) in rows.iter().zip(&scores) {
            if r.date < val_first || *s <= model.threshold {
                continue;
            }
            flagged += 1;
            if let Some(h) = hit.get_mut(&r.date) {
                *h = true;
                true_flags += 1;
            }
        }
        injected += dates.len();
        found += hit.values().filter(|h| **h).count();
    }
    Detection {
        recall: if injected > 0 {
            found as f64 / injected as f64
        } else {
            0.0
        },
        clean_flags,
        precision: (flagged > 0).then(|| true_flags as f64 / flagged as f64),
    }
}

/// The champion (see the module docs): index into the candidates.
pub(crate) fn pick_by_detection(
    detections: &[(f64, usize, f64)],
    skipped: &[SkippedCandidate],
) -> Result<usize, TrainError> {
    let key = |&(recall, clean_flags, rmse): &(f64, usize, f64)| {
        (
            -recall,
            clean_flags,
            if rmse.is_nan() { f64::INFINITY } else { rmse },
        )
    };
    let mut best: Option<usize> = None;
    for (i, d) in detections.iter().enumerate() {
        let better = match best {
            None => true,
            Some(b) => {
                let (x, y) = (key(d), key(&detections[b]));
                x.0 < y.0 || (x.0 == y.0 && (x.1 < y.1 || (x.1 == y.1 && x.2 < y.2)))
            }
        };
        if better {
            best = Some(i);
        }
    }
    best.ok_or_else(|| {
        TrainError::NoCandidate(
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.algorithm, s.reason))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Why the multivariate model may have little to learn, for the job log
/// and the CLI.
fn notes_on(fit: &[FeatureRow]) -> Vec<String> {
    let varies = |f: usize| {
        let first = fit.first().map(|r| r.features[f]).unwrap_or(0.0);
        fit.iter()
            .any(|r| (r.features[f] - first).abs() > 1e-9 * first.abs().max(1.0))
    };
    let constant: Vec<&str> = (0..3)
        .filter(|&f| !varies(f))
        .map(|f| data::FEATURE_NAMES[f])
        .collect();
    if constant.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} constant over the fitting window: the multivariate model learns only from the \
         other columns and the time context; co2e/value consistency cannot be checked",
        constant.join(" and ")
    )]
}

pub(crate) fn train_anomaly(
    req: &TrainRequest,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainOutcome, TrainError> {
    let settings = &req.settings;
    let prep = data::prepare_rows(&req.rows, &settings.prep())?;
    let train = prep.train();
    let val_first = prep.report.train.end - Duration::days(settings.validation_days as i64 - 1);
    let fit_len = train.partition_point(|r| r.date < val_first);
    let (fit, validation) = train.split_at(fit_len);
    if fit.len() < 8 {
        return Err(TrainError::InsufficientData {
            have: fit.len(),
            need: 8,
            dropped: data::Dropped::default(),
        });
    }
    let raw = raw_features(&prep.rows, true);
    let fit_raw = &raw[..fit_len];
    let fit_dates: Vec<NaiveDate> = fit.iter().map(|r| r.date).collect();
    let scalers: Vec<Scaler> = (0..WIDTH)
        .map(|f| Scaler::fit(fit_raw.iter().map(move |r| r[f])))
        .collect();
    let window = TrainingWindow {
        start: fit[0].date,
        end: val_first - Duration::days(1),
        samples: fit.len(),
    };
    let copies = injected_copies(train, val_first);
    let mut notes = notes_on(fit);

    let mut candidates = Vec::new();
    let mut models = Vec::new();
    let mut skipped = Vec::new();
    let mut detections = Vec::new();
    for &algorithm in algorithms(req.model_type) {
        if !settings.includes(algorithm) {
            continue;
        }
        let t0 = Instant::now();
        let fitted = AnomalyModel::fit(
            algorithm,
            fit_raw,
            &fit_dates,
            scalers.clone(),
            settings,
            req.seed,
            on_epoch,
        );
        let model = match fitted {
            Ok(m) => m,
            Err(reason) => {
                tracing::warn!(algorithm, %reason, "candidate skipped");
                skipped.push(SkippedCandidate {
                    algorithm: algorithm.into(),
                    reason,
                });
                continue;
            }
        };
        let train_seconds = t0.elapsed().as_secs_f64();
        // Without validation rows (sparse data), the choice falls back to
        // the in-sample fit.
        let val_raw = if validation.is_empty() {
            fit_raw
        } else {
            &raw[fit_len..prep.holdout_start]
        };
        let mut validation_metrics = model.metrics(val_raw);
        let found = detection(&model, train, &copies, val_first);
        validation_metrics.recall = (!copies.is_empty()).then_some(found.recall);
        validation_metrics.precision = found.precision;
        let metrics = model.metrics(&raw[prep.holdout_start..]);
        let bytes = model.to_artifact(window).to_bytes();
        detections.push((found.recall, found.clean_flags, validation_metrics.rmse));
        candidates.push(Candidate {
            algorithm: algorithm.into(),
            metrics,
            validation: validation_metrics,
            sha256: artifact::sha256_hex(&bytes),
            artifact: bytes,
            train_seconds,
            validation_prediction: Vec::new(),
            holdout_prediction: Vec::new(),
        });
        models.push(model);
    }
    let champion = pick_by_detection(&detections, &skipped)?;
    if !copies.is_empty() && detections[champion].0 == 0.0 {
        notes.push(format!(
            "no candidate found the spikes and dips injected into the validation days; \
             {} flags only what the built-in data-quality detectors see",
            candidates[champion].algorithm
        ));
    }
    for note in &notes {
        tracing::warn!(note, "anomaly detection");
    }
    let anomalies = flag_rows(&models[champion], &prep);
    Ok(TrainOutcome {
        candidates,
        champion,
        forecast: Vec::new(),
        anomalies,
        data: prep.report.clone(),
        training_samples: fit.len(),
        skipped,
        notes,
    })
}

/// Every prepared row's score and flag, and a flag for every rejected row.
pub(crate) fn flag_rows(model: &AnomalyModel, prep: &PreparedRows) -> Vec<AnomalyFlag> {
    let scores = model.score_rows(&prep.rows);
    let days = context::daily(&prep.rows);
    let day_ctx = context::context(&days);
    let stuck = detectors::stuck_days(&days);
    let shift = detectors::level_shift_days(&day_ctx);
    let outlier = detectors::seasonal_outliers(&day_ctx);
    let by_date: BTreeMap<NaiveDate, (bool, bool, Option<FlagKind>, DayContext)> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.date, (stuck[i], shift[i], outlier[i], day_ctx[i])))
        .collect();
    let ratio = detectors::ratio_breaks(&prep.rows);
    let mut flags: Vec<AnomalyFlag> = prep
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let (stuck, shift, outlier, ctx) = by_date[&row.date];
            let score = scores[i];
            // A stuck meter breaks the ratio too: the cause comes first.
            let kind = if stuck {
                Some(FlagKind::Stuck)
            } else if ratio[i] {
                Some(FlagKind::RatioBreak)
            } else if shift {
                Some(FlagKind::LevelShift)
            } else if outlier.is_some() {
                outlier
            } else if score > model.threshold {
                Some(FlagKind::of_model_flag(&ctx))
            } else {
                None
            };
            AnomalyFlag {
                row_id: row.id,
                date: row.date,
                score,
                threshold: model.threshold,
                is_anomaly: kind.is_some(),
                kind,
            }
        })
        .collect();
    flags.extend(prep.rejected_rows.iter().map(|r| AnomalyFlag {
        row_id: r.id,
        date: r.date,
        score: f64::INFINITY,
        threshold: model.threshold,
        is_anomaly: true,
        kind: Some(FlagKind::of_rejection(r.reason)),
    }));
    flags.sort_by(|a, b| a.date.cmp(&b.date).then(a.row_id.cmp(&b.row_id)));
    flags
}

/// Holdout reconstruction metrics of a stored model.
pub(crate) fn rescore(model: &AnomalyModel, prep: &PreparedRows) -> Metrics {
    let raw = raw_features(&prep.rows, model.context);
    model.metrics(&raw[prep.holdout_start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{train_model, RawRow};

    /// A year of a weekly pattern with small deterministic noise; CO2e is
    /// value × factor, the factor drifts slowly.
    fn seasonal_rows(days: usize) -> Vec<RawRow> {
        let d0 = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let mut state = 5u64;
        (0..days)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 6.0;
                let value = 200.0 + [0.0, 8.0, 12.0, 10.0, 9.0, -45.0, -50.0][i % 7] + noise;
                let factor = 0.4 + 0.05 * (i as f64 / 60.0).sin();
                RawRow {
                    id: Some(i as i64 + 1),
                    date: d0 + Duration::days(i as i64),
                    value,
                    co2e_kg: value * factor,
                    grid_factor: factor,
                    fingerprint: 0,
                }
            })
            .collect()
    }

    fn request(rows: Vec<RawRow>) -> TrainRequest {
        TrainRequest {
            model_type: ModelType::AnomalyDetection,
            rows,
            settings: TrainSettings {
                latest_date: NaiveDate::from_ymd_opt(2030, 1, 1),
                ..TrainSettings::default()
            },
            seed: 3,
        }
    }

    fn kinds_on(flags: &[AnomalyFlag], id: i64) -> Vec<Option<FlagKind>> {
        flags
            .iter()
            .filter(|f| f.row_id == Some(id))
            .map(|f| f.kind)
            .collect()
    }

    #[test]
    fn a_clean_seasonal_series_flags_at_most_one_percent_of_its_rows() {
        let outcome = train_model(&request(seasonal_rows(400)), &mut |_| {}).unwrap();
        let first = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let scored: Vec<&AnomalyFlag> = outcome
            .anomalies
            .iter()
            .filter(|f| f.date >= first)
            .collect();
        let n = scored.len();
        let kinds: Vec<(NaiveDate, Option<FlagKind>)> = scored
            .iter()
            .filter(|f| f.is_anomaly)
            .map(|f| (f.date, f.kind))
            .collect();
        let flagged = kinds.len();
        assert!(
            flagged * 100 <= n,
            "{flagged} of {n} rows flagged: {kinds:?}"
        );
    }

    #[test]
    fn injected_problems_are_flagged_with_their_reasons() {
        let mut rows = seasonal_rows(400);
        // A negative reading, a broken CO2e column, a stuck meter, a spike
        // and a level shift, far enough apart not to mask each other.
        rows[120].value = -5.0;
        rows[160].co2e_kg *= 1.3;
        for i in 201..205 {
            rows[i].value = rows[200].value;
            rows[i].co2e_kg = rows[200].co2e_kg;
        }
        rows[250].value *= 1.4;
        rows[250].co2e_kg *= 1.4;
        for r in &mut rows[300..305] {
            r.value *= 0.85;
            r.co2e_kg *= 0.85;
        }
        let outcome = train_model(&request(rows), &mut |_| {}).unwrap();
        let a = &outcome.anomalies;
        assert_eq!(kinds_on(a, 121), [Some(FlagKind::Negative)]);
        assert_eq!(kinds_on(a, 161), [Some(FlagKind::RatioBreak)]);
        for id in 202..=205 {
            assert_eq!(kinds_on(a, id), [Some(FlagKind::Stuck)], "row {id}");
        }
        assert_eq!(kinds_on(a, 251), [Some(FlagKind::Spike)]);
        let shifted = (301..=305)
            .filter(|id| kinds_on(a, *id) == [Some(FlagKind::LevelShift)])
            .count();
        assert!(
            shifted >= 2,
            "{:?}",
            (301..=305).map(|id| kinds_on(a, id)).collect::<Vec<_>>()
        );
        let negative = a.iter().find(|f| f.row_id == Some(121)).unwrap();
        assert!(negative.score.is_infinite() && negative.is_anomaly);
    }

    #[test]
    fn only_value_varying_warns_that_the_model_has_little_to_learn() {
        let rows: Vec<RawRow> = seasonal_rows(300)
            .into_iter()
            .map(|r| RawRow {
                co2e_kg: 1.0,
                grid_factor: 1.0,
                ..r
            })
            .collect();
        let outcome = train_model(&request(rows), &mut |_| {}).unwrap();
        assert!(
            outcome
                .notes
                .iter()
                .any(|n| n.contains("co2e_kg and grid_factor constant")),
            "{:?}",
            outcome.notes
        );
        // The flags still see the value: a clear spike is found.
        let mut rows: Vec<RawRow> = seasonal_rows(300)
            .into_iter()
            .map(|r| RawRow {
                co2e_kg: 1.0,
                grid_factor: 1.0,
                ..r
            })
            .collect();
        rows[250].value *= 1.5;
        let outcome = train_model(&request(rows), &mut |_| {}).unwrap();
        assert!(kinds_on(&outcome.anomalies, 251)[0].is_some());
    }

    #[test]
    fn the_threshold_never_falls_below_the_floor() {
        assert_eq!(threshold(vec![1e-30, 2e-30, 4.2e-30], 0.99), SCORE_FLOOR);
        assert_eq!(threshold(vec![1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(threshold(vec![f64::NAN], 0.5), f64::INFINITY);
    }

    #[test]
    fn a_candidate_that_finds_no_injected_anomaly_never_wins() {
        // The first reconstructs validation perfectly and finds nothing.
        let detections = [(0.0, 0, 0.0), (0.75, 1, 0.4)];
        assert_eq!(pick_by_detection(&detections, &[]).unwrap(), 1);
        // Equal recall: fewer flags on clean days, then lower RMSE.
        let detections = [(0.5, 3, 0.1), (0.5, 1, 0.4), (0.5, 1, 0.3)];
        assert_eq!(pick_by_detection(&detections, &[]).unwrap(), 2);
        assert!(pick_by_detection(&[], &[]).is_err());
    }
}
