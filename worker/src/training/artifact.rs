//! The model artifact: one self-describing, checksummed blob per trained
//! candidate, stored in `ml_model_storage` and written by the CLI.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! b"TRAINYRD"            8 bytes magic
//! format_version         u32
//! header_len             u32
//! header                 JSON (ArtifactHeader), header_len bytes
//! model_len              u64
//! model                  model_len bytes (burn record bytes for neural
//!                        models, JSON state for classical ones)
//! sha256                 32 bytes, over everything before it
//! ```
//!
//! Loading checks the magic, the version, the lengths and the checksum;
//! any mismatch is [`ArtifactError::Corrupt`]. Every float that prediction
//! depends on is stored as a decimal string that parses back to the same
//! bits (see [`exact_f64`]), so a loaded model predicts exactly what the
//! trained one did.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trainyard_shared::ModelType;

use super::data::Scaler;

/// Bumped whenever the layout or the header changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"TRAINYRD";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes are not an intact artifact of a supported version.
    #[error("corrupt model artifact: {0}")]
    Corrupt(String),
}

/// How inputs were standardized before the model saw them (fitted on the
/// model's training data only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalization {
    /// The model works in original units.
    None,
    /// One daily series.
    Series { scaler: Scaler },
    /// The three anomaly features, in `data::FEATURE_NAMES` order.
    Features { scalers: [Scaler; 3] },
    /// The three anomaly features, then the time-context features of
    /// `anomaly::context`, in that order.
    FeaturesWithContext { scalers: Vec<Scaler> },
}

/// The data a model was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingWindow {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Days (forecasts) or rows (anomaly detection) used for fitting.
    pub samples: usize,
}

/// Everything about a model except its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactHeader {
    pub format_version: u32,
    pub model_type: ModelType,
    pub algorithm: String,
    /// Hyperparameters, as the algorithm's config serializes them.
    pub config: serde_json::Value,
    pub normalization: Normalization,
    /// Anomaly score above which a row is flagged (anomaly detectors only).
    #[serde(with = "exact_f64_opt")]
    pub threshold: Option<f64>,
    pub window: TrainingWindow,
    /// Version of the crate that wrote it.
    pub created_by: String,
}

/// A decoded artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub header: ArtifactHeader,
    pub model: Vec<u8>,
}

impl Artifact {
    /// Serializes with the trailing checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("the header serializes");
        let mut out = Vec::with_capacity(56 + header.len() + self.model.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.header.format_version.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(self.model.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.model);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses and verifies a blob written by [`Artifact::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        let corrupt = |m: &str| ArtifactError::Corrupt(m.to_string());
        if bytes.len() < MAGIC.len() + 4 + 4 + 8 + 32 {
            return Err(corrupt("too short"));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt("not a trainyard model artifact (bad magic)"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("sha256 checksum mismatch"));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(ArtifactError::Corrupt(format!(
                "format version {version} is not supported (this build reads {FORMAT_VERSION})"
            )));
        }
        let header_len = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        let header_end = 16usize
            .checked_add(header_len)
            .filter(|e| *e + 8 <= body.len())
            .ok_or_else(|| corrupt("header length out of range"))?;
        let header: ArtifactHeader = serde_json::from_slice(&body[16..header_end])
            .map_err(|e| ArtifactError::Corrupt(format!("bad header: {e}")))?;
        let model_len = u64::from_le_bytes(
            body[header_end..header_end + 8]
                .try_into()
                .expect("8 bytes"),
        ) as usize;
        if header_end + 8 + model_len != body.len() {
            return Err(corrupt("model length does not match the blob"));
        }
        if header.format_version != version {
            return Err(corrupt("header and framing disagree on the format version"));
        }
        Ok(Artifact {
            header,
            model: body[header_end + 8..].to_vec(),
        })
    }
}

/// Hex sha256 of a whole blob (what `sha256sum` prints for the file).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serde helper: an `f64` as a decimal string that round-trips bit for bit
/// (`serde_json`'s default float parser may be off by one ulp).
pub mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&x.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// [`exact_f64`] for a vector.
pub mod exact_f64_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(xs: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(xs.iter().map(|x| x.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// [`exact_f64`] for an optional value.
pub mod exact_f64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(x) => s.serialize_some(&x.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Artifact {
        Artifact {
            header: ArtifactHeader {
                format_version: FORMAT_VERSION,
                model_type: ModelType::AnomalyDetection,
                algorithm: "pca".into(),
                config: serde_json::json!({"components": 2}),
                normalization: Normalization::Features {
                    scalers: [
                        Scaler {
                            mean: 0.1 + 0.2,
                            std: 1.0 / 3.0,
                        },
                        Scaler {
                            mean: 1e-300,
                            std: 7.0,
                        },
                        Scaler {
                            mean: 123456.789012345,
                            std: f64::MIN_POSITIVE,
                        },
                    ],
                },
                threshold: Some(2.0f64.sqrt()),
                window: TrainingWindow {
                    start: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
                    end: NaiveDate::from_ymd_opt(2025, 12, 31).unwrap(),
                    samples: 365,
                },
                created_by: "test".into(),
            },
            model: (0..=255u8).collect(),
        }
    }

    #[test]
    fn an_artifact_round_trips_bit_for_bit() {
        let a = sample();
        let bytes = a.to_bytes();
        let b = Artifact::from_bytes(&bytes).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.to_bytes(), bytes);
    }

    #[test]
    fn any_flipped_byte_fails_the_checksum() {
        let bytes = sample().to_bytes();
        for i in [0, 9, 20, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(Artifact::from_bytes(&bad), Err(ArtifactError::Corrupt(_))),
                "flip at {i} went unnoticed"
            );
        }
        assert!(Artifact::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Artifact::from_bytes(b"short").is_err());
    }

    #[test]
    fn sha256_hex_is_the_standard_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
