//! Domain types shared by the scheduler and the workers: ids and model types,
//! parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a training job produces for one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    /// Daily total `co2e_kg` → next 30 days.
    EmissionsForecast,
    /// Daily total energy `value` → next 30 days.
    EnergyForecast,
    /// Rows of (`co2e_kg`, `value`, `grid_factor`) → anomaly score.
    AnomalyDetection,
}

impl ModelType {
    pub const ALL: [ModelType; 3] = [
        ModelType::EmissionsForecast,
        ModelType::EnergyForecast,
        ModelType::AnomalyDetection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::EmissionsForecast => "emissions_forecast",
            ModelType::EnergyForecast => "energy_forecast",
            ModelType::AnomalyDetection => "anomaly_detection",
        }
    }

    pub fn is_forecast(self) -> bool {
        !matches!(self, ModelType::AnomalyDetection)
    }

    /// Which of an organization's daily data this model type learns from:
    /// the one place that says so.
    pub fn reads(self) -> DataColumn {
        match self {
            ModelType::EmissionsForecast => DataColumn::Co2eKg,
            ModelType::EnergyForecast => DataColumn::EnergyValue,
            ModelType::AnomalyDetection => DataColumn::EveryRow,
        }
    }
}

/// The part of `metrics_data` a model type learns from ([`ModelType::reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataColumn {
    /// `co2e_kg` of every category.
    Co2eKg,
    /// `value` of the `energy` category only.
    EnergyValue,
    /// Whole rows: (`co2e_kg`, `value`, `grid_factor`).
    EveryRow,
}

impl DataColumn {
    /// How messages name it ("too few days with co2e_kg").
    pub fn label(self) -> &'static str {
        match self {
            DataColumn::Co2eKg => "co2e_kg",
            DataColumn::EnergyValue => "energy value",
            DataColumn::EveryRow => "any",
        }
    }

    /// Only rows of the `energy` category count.
    pub fn energy_only(self) -> bool {
        self == DataColumn::EnergyValue
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A newer model must beat the active one by more than this many accuracy
/// points, on the same holdout, to replace it (the worker's promotion rule;
/// the ops API's version comparison applies the same figure).
pub const PROMOTION_MARGIN: f64 = 2.0;

/// A model type name that is not one of [`ModelType::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown model type `{0}` (expected one of: emissions_forecast, energy_forecast, anomaly_detection)")]
pub struct UnknownModelType(pub String);

impl FromStr for ModelType {
    type Err = UnknownModelType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "emissions_forecast" => Ok(ModelType::EmissionsForecast),
            "energy_forecast" => Ok(ModelType::EnergyForecast),
            "anomaly_detection" => Ok(ModelType::AnomalyDetection),
            other => Err(UnknownModelType(other.to_string())),
        }
    }
}

impl sqlx::Type<sqlx::Postgres> for ModelType {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for ModelType {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(text.parse()?)
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for ModelType {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
    }
}

/// A value read from the database that is none of an enum's names: a
/// clear error (with the column's kind and the value), never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// A closed set of names stored as text: `as_str`, `Display`, `FromStr`
/// (with [`UnknownValue`]), and sqlx encoding/decoding as PostgreSQL text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue {
                        kind: $kind,
                        value: other.to_string(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    };
}

text_enum!(
    /// Where a training job is in its lifecycle (`ml_training_jobs.status`).
    JobStatus, "job status" {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
    }
);

impl JobStatus {
    /// Succeeded, failed or skipped: nothing will change it again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Skipped
        )
    }
}

text_enum!(
    /// Where a training cycle is (`ml_training_cycles.status`).
    CycleStatus, "cycle status" {
        Running = "running",
        Completed = "completed",
        CompletedWithFailures = "completed_with_failures",
        TimedOut = "timed_out",
    }
);

text_enum!(
    /// Why a cycle exists (`ml_training_cycles.kind`).
    CycleKind, "cycle kind" {
        /// Created by the schedule, one per month.
        Monthly = "monthly",
        /// Started by an operator.
        Adhoc = "adhoc",
    }
);

text_enum!(
    /// Where a trained model is (`ml_models.status`): `active` serves, one per
    /// organization and model type; `archived` was active once; `candidate`
    /// never was.
    ModelStatus, "model status" {
        Candidate = "candidate",
        Active = "active",
        Archived = "archived",
    }
);

text_enum!(
    /// A training algorithm, as stored in `ml_models.algorithm`,
    /// `ml_evaluations.algorithm`, `ml_training_logs.algorithm`,
    /// `ml_training_epochs.algorithm` and `ml_training_jobs.champion_algorithm`.
    /// Forecasts compete with the first seven, anomaly detection with the last
    /// two.
    Algorithm, "algorithm" {
        Lstm = "lstm",
        /// The seasonal regression plus an LSTM on its residuals.
        LstmHybrid = "lstm_hybrid",
        SeasonalRegression = "seasonal_regression",
        Mstl = "mstl",
        StlEts = "stl_ets",
        /// The trivial forecast every forecaster must beat to be promoted.
        SeasonalNaive = "seasonal_naive",
        /// The forecast that combines the best single candidates.
        Combination = "combination",
        Autoencoder = "autoencoder",
        Pca = "pca",
    }
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An organization of the platform (`organizations.id`).
    OrgId
);
uuid_id!(
    /// One training cycle (`ml_training_cycles.id`).
    CycleId
);
uuid_id!(
    /// One training job (`ml_training_jobs.id`): a cycle × org × model type.
    JobId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for s in CycleStatus::ALL {
            assert_eq!(s.as_str().parse::<CycleStatus>().unwrap(), *s);
        }
        assert_eq!(
            serde_json::to_string(&CycleStatus::CompletedWithFailures).unwrap(),
            "\"completed_with_failures\""
        );
        let terminal: Vec<_> = JobStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal.len(), 3);
    }

    #[test]
    fn an_unknown_status_is_a_clear_error_not_a_panic() {
        let e = "done".parse::<JobStatus>().unwrap_err();
        assert_eq!(e.kind, "job status");
        let shown = e.to_string();
        assert!(shown.contains("unknown job status `done`"), "{shown}");
        assert!(shown.contains("succeeded"), "{shown}");
        assert!("Running".parse::<CycleStatus>().is_err(), "names are exact");
    }

    #[test]
    fn model_types_round_trip_through_their_names() {
        for t in ModelType::ALL {
            assert_eq!(t.as_str().parse::<ModelType>().unwrap(), t);
        }
        assert!("lstm".parse::<ModelType>().is_err());
        for k in CycleKind::ALL {
            assert_eq!(k.as_str().parse::<CycleKind>().unwrap(), *k);
        }
    }

    #[test]
    fn algorithms_round_trip_and_an_unknown_one_is_a_clear_error() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), *a);
            assert_eq!(a.to_string(), a.as_str());
        }
        let e = "prophet".parse::<Algorithm>().unwrap_err();
        assert_eq!(e.kind, "algorithm");
        let shown = e.to_string();
        assert!(shown.contains("unknown algorithm `prophet`"), "{shown}");
        assert!(shown.contains("seasonal_naive"), "{shown}");
        assert!("LSTM".parse::<Algorithm>().is_err(), "names are exact");
    }

    #[test]
    fn each_model_type_names_the_data_it_learns_from() {
        assert_eq!(ModelType::EmissionsForecast.reads(), DataColumn::Co2eKg);
        assert!(ModelType::EnergyForecast.reads().energy_only());
        assert!(!ModelType::AnomalyDetection.reads().energy_only());
        assert_eq!(ModelType::EnergyForecast.reads().label(), "energy value");
    }
}
