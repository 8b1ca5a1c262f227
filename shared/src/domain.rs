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
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
uuid_id!(
    /// One stored model version (`ml_models.id`).
    ModelId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_round_trip_through_their_names() {
        for t in ModelType::ALL {
            assert_eq!(t.as_str().parse::<ModelType>().unwrap(), t);
        }
        assert!("lstm".parse::<ModelType>().is_err());
    }
}
