//! The orchestrator: one training request in, every candidate of the model
//! type trained and scored, a champion named, a forecast or anomaly flags
//! out.
//!
//! ## How windows are used (and why the champion is chosen honestly)
//!
//! The prepared data is split chronologically into
//!
//! ```text
//! |<---------------- training ---------------->|<- holdout ->|
//! |<------------ fit ------------>|<- valid. ->|
//! ```
//!
//! - Every candidate is **fitted on `fit` only** (the training days minus the
//!   last `validation_days`), with normalization computed from `fit`.
//! - The **champion** of a forecast is the `combination` candidate: the
//!   best `k` candidates on the validation days (MAE, forecasting from the
//!   history up to the start of the validation window; by default all of
//!   them), weighted by their inverse validation MAE ([`ChampionRule::Combination`]; with
//!   [`ChampionRule::Validation`], the candidate with the lowest validation
//!   MAE, ties going to the earlier candidate in the list). Picking one
//!   model on 30 days lost to the combination on the broad evaluation
//!   (`docs/train-cli.md`); for
//!   anomaly detection, the one that finds most of the spikes and dips
//!   injected into copies of the validation days (see
//!   [`detection`](super::anomaly::detection)). The holdout plays no part in
//!   the choice.
//! - Every candidate is then **scored on the holdout**, forecasting from the
//!   whole training history (fit + validation): these are the metrics
//!   reported in [`Candidate::metrics`], the numbers promotion compares. The
//!   same model (no refit) produces both scores, so what is stored is
//!   exactly what was measured, and [`rescore`] reproduces the holdout
//!   metrics from the stored artifact.
//! - The final **forecast** is the champion forecasting `horizon` days after
//!   the last data day from the whole history (holdout included); anomaly
//!   flags are the champion's scores on every prepared row against the
//!   threshold stored with it.
//!
//! The anomaly threshold is the `anomaly_quantile` quantile (default 0.99,
//! linear interpolation) of the model's scores on its own recent fitting
//! rows, with a floor: about 1 % of normal rows score above it, and clear
//! outliers far above. Built-in data-quality detectors add flags with their
//! own reasons ([`detectors`](super::anomaly::detectors)).

use std::time::Instant;

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use trainyard_shared::{DataColumn, ModelType};

use super::anomaly::detection::{self, AnomalyModel};
use super::anomaly::detectors::FlagKind;
use super::anomaly::AutoencoderConfig;
use super::artifact::{
    self, Artifact, ArtifactError, ArtifactHeader, Normalization, TrainingWindow,
};
use super::challengers::decomposition::{Decomposition, DecompositionConfig};
use super::challengers::pca::PcaConfig;
use super::challengers::seasonal_naive::SeasonalNaive;
use super::challengers::seasonal_regression::{SeasonalRegression, SeasonalRegressionConfig};
use super::challengers::ChallengerError;
use super::combination::{self, CombinationConfig, CombinationRule};
use super::data::{
    self, DataError, DataReport, PrepSettings, PreparedSeries, RawRow, Scaler, Target,
};
use super::forecast::{train_forecaster, LstmConfig, TrainedForecaster};
use super::hybrid::{self, Hybrid};
use super::intervals::{self, Band, IntervalConfig};
use super::metrics::{self, Metrics};
use super::progress::EpochReport;

/// Weekly season: the MASE denominator and the seasonal naive period.
const SEASON: usize = 7;

/// Why a training request or a rescore failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("insufficient data: {have} usable days, at least {need} required{dropped}")]
    InsufficientData {
        have: usize,
        need: usize,
        dropped: data::Dropped,
    },
    #[error("invalid data: {0}")]
    InvalidData(String),
    #[error("invalid training settings: {0}")]
    InvalidSettings(String),
    #[error("corrupt model artifact: {0}")]
    CorruptArtifact(String),
    #[error("the artifact is a {artifact} model, the request is for {request}")]
    ModelTypeMismatch {
        artifact: ModelType,
        request: ModelType,
    },
    #[error("no candidate could be trained: {0}")]
    NoCandidate(String),
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Insufficient {
                have,
                need,
                dropped,
            } => TrainError::InsufficientData {
                have,
                need,
                dropped,
            },
            DataError::Invalid(m) => TrainError::InvalidData(m),
        }
    }
}

impl From<ArtifactError> for TrainError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::Corrupt(m) => TrainError::CorruptArtifact(m),
        }
    }
}

/// How the forecast champion is named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChampionRule {
    /// The combination candidate whenever one was built (at least two
    /// candidates trained), else the lowest validation MAE: selecting one
    /// model on 30 validation days is noisier than averaging several.
    #[default]
    Combination,
    /// The candidate with the lowest validation MAE, the combination among
    /// them.
    Validation,
}

/// Everything configurable about a training run. `Default` is the
/// production setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Usable days required (after cleaning and gap filling).
    pub min_days: usize,
    /// Days at the end held out for evaluation.
    pub holdout_days: usize,
    /// Days before the holdout used to choose the champion.
    pub validation_days: usize,
    /// Days forecast after the last data day.
    pub horizon: usize,
    /// Gaps up to this many days are interpolated; longer ones cut the
    /// history.
    pub max_gap_days: usize,
    pub seasonal_regression: SeasonalRegressionConfig,
    /// `mstl`: MSTL (weekly + yearly) + AutoETS.
    #[serde(default = "DecompositionConfig::mstl")]
    pub mstl: DecompositionConfig,
    /// `stl_ets`: STL (weekly) + AutoETS.
    #[serde(default = "DecompositionConfig::stl_ets")]
    pub stl_ets: DecompositionConfig,
    /// The `combination` candidate (forecasts).
    #[serde(default)]
    pub combination: CombinationConfig,
    /// How the forecast champion is named.
    #[serde(default)]
    pub champion: ChampionRule,
    /// Prediction intervals of the forecasts.
    #[serde(default)]
    pub intervals: IntervalConfig,
    pub pca: PcaConfig,
    /// The LSTM forecaster (seed architecture by default).
    pub lstm: LstmConfig,
    /// The autoencoder anomaly detector (seed architecture, its input as
    /// wide as the features; at least 2,000 optimizer steps, early stopping
    /// after 20 epochs without progress).
    pub autoencoder: AutoencoderConfig,
    /// Quantile of the fitting rows' scores used as the anomaly threshold.
    pub anomaly_quantile: f64,
    /// Algorithms not to train (e.g. `["lstm_hybrid"]` for a quick run).
    pub exclude: Vec<String>,
    /// Forecast algorithms trained and scored beside the candidates but
    /// never champion nor combination members (`["lstm"]`: the seed LSTM
    /// alone, for the evaluation's report).
    #[serde(default)]
    pub shadow: Vec<String>,
    /// Rows dated after this day are rejected as future-dated. `None`: the
    /// day after today (UTC) when the data is prepared, so a long-running
    /// worker never freezes its clock.
    #[serde(default)]
    pub latest_date: Option<NaiveDate>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            min_days: 180,
            holdout_days: 30,
            validation_days: 30,
            horizon: 30,
            max_gap_days: 7,
            seasonal_regression: SeasonalRegressionConfig::default(),
            mstl: DecompositionConfig::mstl(),
            stl_ets: DecompositionConfig::stl_ets(),
            combination: CombinationConfig::default(),
            champion: ChampionRule::default(),
            intervals: IntervalConfig::default(),
            pca: PcaConfig::default(),
            lstm: LstmConfig::default(),
            autoencoder: AutoencoderConfig::default()
                .with_min_steps(2000)
                .with_patience(20),
            anomaly_quantile: 0.99,
            exclude: Vec::new(),
            shadow: Vec::new(),
            latest_date: None,
        }
    }
}

impl TrainSettings {
    pub(crate) fn prep(&self) -> PrepSettings {
        PrepSettings {
            min_days: self.min_days,
            holdout_days: self.holdout_days,
            max_gap_days: self.max_gap_days,
            latest_date: self
                .latest_date
                .unwrap_or_else(|| chrono::Utc::now().date_naive() + Duration::days(1)),
        }
    }

    /// Days the models need to fit on after validation and holdout are cut.
    const MIN_FIT_DAYS: usize = 60;

    fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::InvalidSettings(m));
        if self.holdout_days == 0 || self.validation_days == 0 || self.horizon == 0 {
            return bad("holdout_days, validation_days and horizon must be positive".into());
        }
        if self.min_days < self.holdout_days + self.validation_days + Self::MIN_FIT_DAYS {
            return bad(format!(
                "min_days ({}) must be at least holdout_days + validation_days + {} ({})",
                self.min_days,
                Self::MIN_FIT_DAYS,
                self.holdout_days + self.validation_days + Self::MIN_FIT_DAYS
            ));
        }
        if !(0.5..1.0).contains(&self.anomaly_quantile) {
            return bad(format!(
                "anomaly_quantile must be in [0.5, 1), got {}",
                self.anomaly_quantile
            ));
        }
        Ok(())
    }

    pub(crate) fn includes(&self, algorithm: &str) -> bool {
        !self.exclude.iter().any(|e| e == algorithm)
    }
}

/// One job's worth of training.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub model_type: ModelType,
    /// The organization's rows for this model type.
    pub rows: Vec<RawRow>,
    pub settings: TrainSettings,
    /// Seeds the neural models (derive it from the job's identity so a
    /// re-run reproduces the same weights).
    pub seed: u64,
}

/// One forecast day, in the series' units, with its 80 % and 95 %
/// prediction interval (see [`intervals`]; absent when the history was too
/// short to calibrate one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    pub date: NaiveDate,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_80: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_80: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_95: Option<f64>,
}

impl ForecastPoint {
    /// Dated points from consecutive values starting on `first`, with bands
    /// when there are any.
    fn series(first: NaiveDate, values: &[f64], bands: Option<&[Band]>) -> Vec<ForecastPoint> {
        values
            .iter()
            .enumerate()
            .map(|(h, &value)| {
                let band = bands.and_then(|b| b.get(h));
                ForecastPoint {
                    date: first + Duration::days(h as i64),
                    value,
                    lower_80: band.map(|b| b.lower_80),
                    upper_80: band.map(|b| b.upper_80),
                    lower_95: band.map(|b| b.lower_95),
                    upper_95: band.map(|b| b.upper_95),
                }
            })
            .collect()
    }
}

/// The verdict on one row: the champion's score and threshold, and why it
/// was flagged (a built-in detector or the model; see
/// [`detection`](super::anomaly::detection)). A row the data preparation
/// rejected has an infinite score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyFlag {
    pub row_id: Option<i64>,
    pub date: NaiveDate,
    pub score: f64,
    pub threshold: f64,
    pub is_anomaly: bool,
    /// Why the row was flagged; `None` when it was not.
    #[serde(default)]
    pub kind: Option<FlagKind>,
}

/// One trained and scored candidate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    /// `lstm`, `seasonal_naive`, `seasonal_regression`, `autoencoder`, `pca`.
    pub algorithm: String,
    /// Holdout metrics (what is reported and compared for promotion).
    pub metrics: Metrics,
    /// Validation metrics (what the champion was chosen on).
    pub validation: Metrics,
    /// The self-describing blob ([`artifact`] module).
    #[serde(skip)]
    pub artifact: Vec<u8>,
    /// Hex sha256 of `artifact`.
    pub sha256: String,
    pub train_seconds: f64,
    /// The forecast the validation metrics score (forecasts only; for the
    /// evaluation's analysis, not stored).
    #[serde(skip)]
    pub validation_prediction: Vec<f64>,
    /// The forecast the holdout metrics score (forecasts only; not stored).
    #[serde(skip)]
    pub holdout_prediction: Vec<f64>,
}

/// A candidate that failed to train; the others still compete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedCandidate {
    pub algorithm: String,
    pub reason: String,
}

/// The result of [`train_model`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub candidates: Vec<Candidate>,
    /// Index into `candidates`.
    pub champion: usize,
    /// Champion forecast for `horizon` days after the last data day (empty
    /// for anomaly detection).
    pub forecast: Vec<ForecastPoint>,
    /// Champion flags on every prepared row (empty for forecasts).
    pub anomalies: Vec<AnomalyFlag>,
    pub data: DataReport,
    /// Days (forecasts) or rows (anomaly detection) the models were fitted on.
    pub training_samples: usize,
    pub skipped: Vec<SkippedCandidate>,
    /// Warnings for the operator (e.g. the data gives the multivariate
    /// anomaly model nothing to learn); stored with the job's data report.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl TrainOutcome {
    pub fn champion(&self) -> &Candidate {
        &self.candidates[self.champion]
    }
}

/// Trains every candidate of `req.model_type`, scores them, names the
/// champion (see the module docs for the windows), and produces its forecast
/// or anomaly flags.
pub fn train_model(
    req: &TrainRequest,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainOutcome, TrainError> {
    req.settings.validate()?;
    match target_of(req.model_type) {
        Some(target) => train_forecast(req, target, on_epoch),
        None => detection::train_anomaly(req, on_epoch),
    }
}

/// Scores a stored model (checksum verified) on the holdout that `req` would
/// use: the same numbers [`train_model`] reported for it when `req` is the
/// request it was trained from.
pub fn rescore(artifact_bytes: &[u8], req: &TrainRequest) -> Result<Metrics, TrainError> {
    let artifact = load_for(artifact_bytes, req)?;
    match target_of(req.model_type) {
        Some(target) => {
            let prep = data::prepare_series(&req.rows, target, &req.settings.prep())?;
            let model = ForecastModel::load(&artifact)?;
            Ok(score_holdout(&model, &prep).0)
        }
        None => {
            let prep = data::prepare_rows(&req.rows, &req.settings.prep())?;
            let model = AnomalyModel::load(&artifact)?;
            Ok(detection::rescore(&model, &prep))
        }
    }
}

/// The holdout forecast of a stored forecaster (checksum verified): the
/// predictions behind the holdout metrics [`train_model`] reported for it,
/// dated, for plots and error analysis, with their intervals (calibrated on
/// the training days only) when `with_intervals`. Anomaly detectors have
/// none.
pub fn holdout_forecast(
    artifact_bytes: &[u8],
    req: &TrainRequest,
    with_intervals: bool,
) -> Result<Vec<ForecastPoint>, TrainError> {
    let artifact = load_for(artifact_bytes, req)?;
    let Some(target) = target_of(req.model_type) else {
        return Ok(Vec::new());
    };
    let prep = data::prepare_series(&req.rows, target, &req.settings.prep())?;
    let model = ForecastModel::load(&artifact)?;
    Ok(dated_forecast(
        &model,
        prep.train(),
        prep.series.start,
        prep.holdout_days,
        with_intervals.then_some(&req.settings.intervals),
    ))
}

/// What a stored model (checksum verified) predicts on the request's data:
/// the 30-day forecast after the last data day (forecasters) or every row's
/// score and flag (anomaly detectors). The worker uses it to keep the
/// predictions of the active model when a new champion is not promoted.
pub fn predict(
    artifact_bytes: &[u8],
    req: &TrainRequest,
) -> Result<(Vec<ForecastPoint>, Vec<AnomalyFlag>), TrainError> {
    let artifact = load_for(artifact_bytes, req)?;
    match target_of(req.model_type) {
        Some(target) => {
            let prep = data::prepare_series(&req.rows, target, &req.settings.prep())?;
            let model = ForecastModel::load(&artifact)?;
            Ok((future_forecast(&model, &prep, &req.settings), Vec::new()))
        }
        None => {
            let prep = data::prepare_rows(&req.rows, &req.settings.prep())?;
            let model = AnomalyModel::load(&artifact)?;
            Ok((Vec::new(), detection::flag_rows(&model, &prep)))
        }
    }
}

/// `settings.horizon` days after the last day of the series, from the
/// whole series, with intervals.
fn future_forecast(
    model: &ForecastModel,
    prep: &data::PreparedSeries,
    settings: &TrainSettings,
) -> Vec<ForecastPoint> {
    dated_forecast(
        model,
        &prep.series.values,
        prep.series.start,
        settings.horizon,
        Some(&settings.intervals),
    )
}

/// `horizon` days after `history` (whose first day is `start`), dated, with
/// the intervals (when `config` is given) calibrated on the same history's
/// rolling forecasts.
fn dated_forecast(
    model: &ForecastModel,
    history: &[f64],
    start: NaiveDate,
    horizon: usize,
    config: Option<&IntervalConfig>,
) -> Vec<ForecastPoint> {
    let point = model.forecast(history, start, horizon);
    let bands = config.and_then(|config| {
        let calibration = intervals::calibrate(
            history,
            horizon,
            config,
            TrainSettings::MIN_FIT_DAYS,
            |h, n| model.forecast(h, start, n),
        );
        intervals::bands(&point, &calibration, config)
    });
    ForecastPoint::series(
        start + Duration::days(history.len() as i64),
        &point,
        bands.as_deref(),
    )
}

/// A stored artifact (checksum verified) that fits the request's model type.
fn load_for(artifact_bytes: &[u8], req: &TrainRequest) -> Result<Artifact, TrainError> {
    req.settings.validate()?;
    let artifact = Artifact::from_bytes(artifact_bytes)?;
    if artifact.header.model_type != req.model_type {
        return Err(TrainError::ModelTypeMismatch {
            artifact: artifact.header.model_type,
            request: req.model_type,
        });
    }
    Ok(artifact)
}

/// The series a forecast learns (`None`: anomaly detection reads whole rows).
fn target_of(model_type: ModelType) -> Option<Target> {
    match model_type.reads() {
        DataColumn::EnergyValue => Some(Target::Value),
        DataColumn::Co2eKg => Some(Target::Co2eKg),
        DataColumn::EveryRow => None,
    }
}

/// The forecast candidate that combines the best single candidates (see
/// [`combination`]); it competes after them, so a tie goes to the single
/// model.
pub const COMBINATION: &str = "combination";

/// Algorithms competing for a model type, in tie-break order. The seed's
/// LSTM competes as the hybrid's residual model; on its own (`lstm`) it
/// forecast no better than seasonal naive on the broad evaluation, so it is
/// trained only as a shadow ([`TrainSettings::shadow`]).
pub fn algorithms(model_type: ModelType) -> &'static [&'static str] {
    if model_type.is_forecast() {
        &[
            hybrid::NAME,
            "seasonal_regression",
            "mstl",
            "stl_ets",
            "seasonal_naive",
        ]
    } else {
        &["autoencoder", "pca"]
    }
}

fn train_forecast(
    req: &TrainRequest,
    target: Target,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainOutcome, TrainError> {
    let settings = &req.settings;
    let prep = data::prepare_series(&req.rows, target, &settings.prep())?;
    let start = prep.series.start;
    let train = prep.train();
    let fit_len = train.len() - settings.validation_days;
    let fit = &train[..fit_len];
    let validation = &train[fit_len..];
    let window = TrainingWindow {
        start,
        end: prep.series.date_at(fit_len - 1),
        samples: fit_len,
    };
    let val_scale = metrics::naive_scale(fit, SEASON);

    let mut candidates = Vec::new();
    let mut models = Vec::new();
    let mut skipped = Vec::new();
    let shadows = settings
        .shadow
        .iter()
        .map(String::as_str)
        .filter(|a| !algorithms(req.model_type).contains(a));
    for algorithm in algorithms(req.model_type).iter().copied().chain(shadows) {
        if !settings.includes(algorithm) {
            continue;
        }
        let t0 = Instant::now();
        let model = match ForecastModel::fit(algorithm, fit, start, settings, req.seed, on_epoch) {
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
        let val_pred = model.forecast(fit, start, validation.len());
        let validation_metrics = metrics::forecast(validation, &val_pred, val_scale);
        let (metrics, holdout_prediction) = score_holdout(&model, &prep);
        let bytes = model.to_artifact(req.model_type, window).to_bytes();
        candidates.push(Candidate {
            algorithm: algorithm.into(),
            metrics,
            validation: validation_metrics,
            sha256: artifact::sha256_hex(&bytes),
            artifact: bytes,
            train_seconds,
            validation_prediction: val_pred,
            holdout_prediction,
        });
        models.push(model);
    }
    let competes = |c: &Candidate| !settings.shadow.contains(&c.algorithm);
    if settings.includes(COMBINATION) {
        let maes: Vec<f64> = candidates
            .iter()
            .map(|c| {
                if competes(c) {
                    c.validation.mae
                } else {
                    f64::NAN
                }
            })
            .collect();
        let members = combination::select(&maes, &settings.combination);
        if !members.is_empty() {
            let t0 = Instant::now();
            let model = ForecastModel::Combination {
                rule: settings.combination.rule,
                members: members
                    .iter()
                    .map(|&(i, w)| (models[i].clone(), w))
                    .collect(),
            };
            let val_pred = model.forecast(fit, start, validation.len());
            let validation_metrics = metrics::forecast(validation, &val_pred, val_scale);
            let (metrics, holdout_prediction) = score_holdout(&model, &prep);
            let bytes = model.to_artifact(req.model_type, window).to_bytes();
            candidates.push(Candidate {
                algorithm: COMBINATION.into(),
                metrics,
                validation: validation_metrics,
                sha256: artifact::sha256_hex(&bytes),
                artifact: bytes,
                train_seconds: t0.elapsed().as_secs_f64(),
                validation_prediction: val_pred,
                holdout_prediction,
            });
            models.push(model);
        }
    }
    let champion = match settings.champion {
        ChampionRule::Combination => candidates.iter().position(|c| c.algorithm == COMBINATION),
        ChampionRule::Validation => None,
    };
    let champion = match champion {
        Some(i) => i,
        None => pick_champion(
            &candidates,
            |c| {
                if competes(c) {
                    c.validation.mae
                } else {
                    f64::NAN
                }
            },
            &skipped,
        )?,
    };
    let forecast = future_forecast(&models[champion], &prep, settings);
    Ok(TrainOutcome {
        candidates,
        champion,
        forecast,
        anomalies: Vec::new(),
        data: prep.report.clone(),
        training_samples: fit_len,
        skipped,
        notes: Vec::new(),
    })
}

#[cfg(test)]
#[path = "pipeline_forecast_tests.rs"]
mod forecast_tests;

/// The holdout metrics and the forecast they score.
fn score_holdout(model: &ForecastModel, prep: &PreparedSeries) -> (Metrics, Vec<f64>) {
    let train = prep.train();
    let pred = model.forecast(train, prep.series.start, prep.holdout_days);
    let metrics = metrics::forecast(prep.holdout(), &pred, metrics::naive_scale(train, SEASON));
    (metrics, pred)
}

fn pick_champion(
    candidates: &[Candidate],
    loss: impl Fn(&Candidate) -> f64,
    skipped: &[SkippedCandidate],
) -> Result<usize, TrainError> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        // A NaN loss never wins.
        let l = loss(c);
        let l = if l.is_nan() { f64::INFINITY } else { l };
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i).ok_or_else(|| {
        TrainError::NoCandidate(
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.algorithm, s.reason))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// A fitted forecaster of any algorithm. Forecasts are in the series' units
/// and never negative (every target is a non-negative quantity).
#[derive(Debug, Clone)]
enum ForecastModel {
    SeasonalNaive(SeasonalNaive),
    SeasonalRegression(SeasonalRegression),
    /// `mstl` or `stl_ets`: refitted on the history at every forecast.
    Decomposition(Decomposition),
    /// A fixed combination of fitted members with their weights.
    Combination {
        rule: CombinationRule,
        members: Vec<(ForecastModel, f64)>,
    },
    /// The seasonal regression plus an LSTM on its residuals.
    Hybrid(Hybrid),
    /// The LSTM works on standardized values (scaler fitted on the fit window).
    Lstm {
        model: std::sync::Arc<TrainedForecaster>,
        scaler: Scaler,
    },
}

impl ForecastModel {
    fn fit(
        algorithm: &str,
        fit: &[f64],
        start: NaiveDate,
        settings: &TrainSettings,
        seed: u64,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<ForecastModel, String> {
        match algorithm {
            "lstm" => {
                let scaler = Scaler::fit(fit.iter().copied());
                let normed: Vec<f32> = fit.iter().map(|&x| scaler.apply(x) as f32).collect();
                let model = train_forecaster(&normed, &settings.lstm, seed, on_epoch)
                    .map_err(|e| e.to_string())?;
                Ok(ForecastModel::Lstm {
                    model: std::sync::Arc::new(model),
                    scaler,
                })
            }
            hybrid::NAME => Hybrid::fit(
                fit,
                start,
                &settings.seasonal_regression,
                &settings.lstm,
                seed,
                on_epoch,
            )
            .map(ForecastModel::Hybrid),
            "seasonal_naive" => Ok(ForecastModel::SeasonalNaive(SeasonalNaive::default())),
            "mstl" | "stl_ets" => {
                let config = if algorithm == "mstl" {
                    settings.mstl
                } else {
                    settings.stl_ets
                };
                let model = Decomposition::new(config);
                // The model has no weights: a failure shows when it forecasts.
                model
                    .forecast(fit, settings.validation_days)
                    .map_err(|e| e.to_string())?;
                Ok(ForecastModel::Decomposition(model))
            }
            "seasonal_regression" => {
                SeasonalRegression::fit(fit, start, &settings.seasonal_regression)
                    .map(ForecastModel::SeasonalRegression)
                    .map_err(|e: ChallengerError| e.to_string())
            }
            other => Err(format!("unknown forecast algorithm `{other}`")),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            ForecastModel::SeasonalNaive(_) => "seasonal_naive",
            ForecastModel::SeasonalRegression(_) => "seasonal_regression",
            ForecastModel::Decomposition(m) if m.config.yearly => "mstl",
            ForecastModel::Decomposition(_) => "stl_ets",
            ForecastModel::Combination { .. } => COMBINATION,
            ForecastModel::Hybrid(_) => hybrid::NAME,
            ForecastModel::Lstm { .. } => "lstm",
        }
    }

    fn forecast(&self, history: &[f64], start: NaiveDate, horizon: usize) -> Vec<f64> {
        let raw = match self {
            ForecastModel::SeasonalNaive(m) => m.forecast(history, horizon),
            ForecastModel::SeasonalRegression(m) => m.forecast(history, start, horizon),
            ForecastModel::Hybrid(m) => m.forecast(history, start, horizon),
            ForecastModel::Decomposition(m) => m.forecast(history, horizon).unwrap_or_else(|e| {
                // Only a degenerate history (constant, too short) fails here,
                // after the same model forecast the fitting window; repeating
                // the last week is the safe answer.
                tracing::warn!(error = %e, "decomposition failed, seasonal naive used");
                SeasonalNaive::default().forecast(history, horizon)
            }),
            ForecastModel::Combination { rule, members } => {
                let forecasts: Vec<Vec<f64>> = members
                    .iter()
                    .map(|(m, _)| m.forecast(history, start, horizon))
                    .collect();
                let weights: Vec<f64> = members.iter().map(|(_, w)| *w).collect();
                combination::combine(*rule, &forecasts, &weights)
            }
            ForecastModel::Lstm { model, scaler } => {
                let normed: Vec<f32> = history.iter().map(|&x| scaler.apply(x) as f32).collect();
                model
                    .forecast(&normed, horizon)
                    .into_iter()
                    .map(|z| scaler.invert(f64::from(z)))
                    .collect()
            }
        };
        raw.into_iter()
            .map(|x| if x.is_finite() { x.max(0.0) } else { 0.0 })
            .collect()
    }

    fn to_artifact(&self, model_type: ModelType, window: TrainingWindow) -> Artifact {
        let (config, normalization, model) = match self {
            ForecastModel::SeasonalNaive(m) => (to_json(m), Normalization::None, Vec::new()),
            ForecastModel::Decomposition(m) => {
                (to_json(&m.config), Normalization::None, Vec::new())
            }
            ForecastModel::Combination { rule, members } => (
                to_json(&CombinationHeader {
                    rule: *rule,
                    members: members.iter().map(|(m, _)| m.algorithm().into()).collect(),
                    weights: members.iter().map(|(_, w)| *w).collect(),
                }),
                Normalization::None,
                combination::pack(
                    &members
                        .iter()
                        .map(|(m, _)| m.to_artifact(model_type, window).to_bytes())
                        .collect::<Vec<_>>(),
                ),
            ),
            ForecastModel::SeasonalRegression(m) => (
                to_json(&m.config),
                Normalization::None,
                serde_json::to_vec(m).expect("the model serializes"),
            ),
            ForecastModel::Hybrid(m) => (
                to_json(m.lstm.config()),
                Normalization::Series { scaler: m.scaler },
                combination::pack(&[
                    serde_json::to_vec(&m.base).expect("the model serializes"),
                    m.lstm.to_bytes(),
                ]),
            ),
            ForecastModel::Lstm { model, scaler } => (
                to_json(model.config()),
                Normalization::Series { scaler: *scaler },
                model.to_bytes(),
            ),
        };
        Artifact {
            header: header(
                model_type,
                self.algorithm(),
                config,
                normalization,
                None,
                window,
            ),
            model,
        }
    }

    fn load(artifact: &Artifact) -> Result<ForecastModel, TrainError> {
        let h = &artifact.header;
        match h.algorithm.as_str() {
            "seasonal_naive" => Ok(ForecastModel::SeasonalNaive(from_json_value(&h.config)?)),
            "mstl" | "stl_ets" => Ok(ForecastModel::Decomposition(Decomposition::new(
                from_json_value(&h.config)?,
            ))),
            COMBINATION => {
                let head: CombinationHeader = from_json_value(&h.config)?;
                let blobs = combination::unpack(&artifact.model)
                    .map_err(|e| TrainError::CorruptArtifact(format!("combination: {e}")))?;
                if blobs.len() != head.weights.len() || blobs.len() != head.members.len() {
                    return Err(TrainError::CorruptArtifact(
                        "combination: members and weights disagree".into(),
                    ));
                }
                let mut members = Vec::with_capacity(blobs.len());
                for (blob, w) in blobs.iter().zip(&head.weights) {
                    let member = Artifact::from_bytes(blob)?;
                    if member.header.algorithm == COMBINATION {
                        return Err(TrainError::CorruptArtifact(
                            "combination: a member is itself a combination".into(),
                        ));
                    }
                    members.push((ForecastModel::load(&member)?, *w));
                }
                Ok(ForecastModel::Combination {
                    rule: head.rule,
                    members,
                })
            }
            "seasonal_regression" => Ok(ForecastModel::SeasonalRegression(from_json_bytes(
                &artifact.model,
            )?)),
            hybrid::NAME => {
                let Normalization::Series { scaler } = h.normalization else {
                    return Err(TrainError::CorruptArtifact(
                        "a hybrid model without residual normalization".into(),
                    ));
                };
                let parts = combination::unpack(&artifact.model)
                    .map_err(|e| TrainError::CorruptArtifact(format!("{}: {e}", hybrid::NAME)))?;
                let [base, lstm] = parts.as_slice() else {
                    return Err(TrainError::CorruptArtifact(format!(
                        "{}: {} parts, not the regression and the LSTM",
                        hybrid::NAME,
                        parts.len()
                    )));
                };
                let lstm = TrainedForecaster::from_bytes(lstm)
                    .map_err(|e| TrainError::CorruptArtifact(e.to_string()))?;
                Ok(ForecastModel::Hybrid(Hybrid {
                    base: from_json_bytes(base)?,
                    lstm: std::sync::Arc::new(lstm),
                    scaler,
                }))
            }
            "lstm" => {
                let Normalization::Series { scaler } = h.normalization else {
                    return Err(TrainError::CorruptArtifact(
                        "an LSTM model without series normalization".into(),
                    ));
                };
                let model = TrainedForecaster::from_bytes(&artifact.model)
                    .map_err(|e| TrainError::CorruptArtifact(e.to_string()))?;
                Ok(ForecastModel::Lstm {
                    model: std::sync::Arc::new(model),
                    scaler,
                })
            }
            other => Err(TrainError::CorruptArtifact(format!(
                "unknown forecast algorithm `{other}`"
            ))),
        }
    }
}

/// The header config of a combination artifact (the members' own
/// artifacts are its model bytes, in the same order).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CombinationHeader {
    rule: CombinationRule,
    members: Vec<String>,
    #[serde(with = "crate::training::artifact::exact_f64_vec")]
    weights: Vec<f64>,
}

pub(crate) fn header(
    model_type: ModelType,
    algorithm: &str,
    config: serde_json::Value,
    normalization: Normalization,
    threshold: Option<f64>,
    window: TrainingWindow,
) -> ArtifactHeader {
    ArtifactHeader {
        format_version: artifact::FORMAT_VERSION,
        model_type,
        algorithm: algorithm.into(),
        config,
        normalization,
        threshold,
        window,
        created_by: concat!("trainyard-worker ", env!("CARGO_PKG_VERSION")).into(),
    }
}

pub(crate) fn to_json<T: Serialize>(x: &T) -> serde_json::Value {
    serde_json::to_value(x).expect("configs serialize")
}

fn from_json_value<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, TrainError> {
    T::deserialize(v).map_err(|e| TrainError::CorruptArtifact(format!("bad config: {e}")))
}

pub(crate) fn from_json_bytes<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, TrainError> {
    serde_json::from_slice(b).map_err(|e| TrainError::CorruptArtifact(format!("bad model: {e}")))
}
