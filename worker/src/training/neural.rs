//! What the burn models share: the error type, the CPU device, seeding, the
//! one-thread execution the worker relies on, and tensor conversions.

use burn::prelude::*;

/// Errors of the neural models.
#[derive(Debug, thiserror::Error)]
pub enum NeuralError {
    /// Too little data to form one training window.
    #[error("too few values to train: have {have}, need at least {need}")]
    TooShort { have: usize, need: usize },
    /// Training diverged (loss became NaN or infinite).
    #[error("training diverged: loss is {0}")]
    Diverged(f64),
    /// Rows do not have the model's width.
    #[error("wrong input shape: {0}")]
    Shape(String),
    /// The held-out loss stayed near what predicting the mean gives: the
    /// model learned nothing usable.
    #[error("did not converge: held-out loss {loss:.4} vs {baseline:.4} for the column means")]
    DidNotConverge { loss: f64, baseline: f64 },
    /// Stored model bytes could not be read back.
    #[error("cannot decode stored model: {0}")]
    Decode(String),
}

/// The CPU device (burn-flex), with autodiff for training.
pub fn train_device(seed: u64) -> Device {
    let device = Device::flex().autodiff();
    // Seeding is global per process: seed right before each model is built.
    device.seed(seed);
    device
}

/// Serializes seeding and weight initialization: burn's RNG is one per
/// process, so two models built at once on different threads would draw from
/// each other's stream.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds a model on the training device from `seed`, reproducibly even
/// while other threads train: seeds and draws every parameter (burn
/// initializes parameters lazily, on first use) under a process-wide lock.
pub fn seeded_init<M: Module>(seed: u64, init: impl FnOnce(&Device) -> M) -> M {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = train_device(seed);
    let model = init(&device);
    model.visit(&mut Materialize);
    model
}

/// Forces lazy parameters to initialize, in module order.
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Every float parameter's values, in module order (for comparing weights;
/// stored records also carry parameter ids, which differ between runs).
#[cfg(test)]
pub fn parameter_values<M: Module>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.push(to_vec(param.val()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// The CPU device without autodiff, for inference.
pub fn infer_device() -> Device {
    Device::flex()
}

/// Sizes the compute thread pool burn-flex uses, once per process (later
/// calls are no-ops). The worker trains one model per core; at these model
/// sizes extra threads per model only add synchronization, so 1 is the
/// default. Call it before the first model is trained.
pub fn limit_threads(threads: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build_global();
    });
}

pub fn tensor3(values: Vec<f32>, shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn tensor2(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_to_vec::<f32>()
        .expect("float tensors hold f32 on the flex backend")
}

/// Stores a config (JSON) and burn record bytes in one buffer:
/// `u32 little-endian config length | config json | record bytes`.
pub fn pack(config_json: &str, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + config_json.len() + record.len());
    out.extend_from_slice(&(config_json.len() as u32).to_le_bytes());
    out.extend_from_slice(config_json.as_bytes());
    out.extend_from_slice(record);
    out
}

pub fn unpack(bytes: &[u8]) -> Result<(&str, &[u8]), NeuralError> {
    if bytes.len() < 4 {
        return Err(NeuralError::Decode("model bytes are truncated".into()));
    }
    let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let rest = &bytes[4..];
    if rest.len() < n {
        return Err(NeuralError::Decode("model config is truncated".into()));
    }
    let config = std::str::from_utf8(&rest[..n])
        .map_err(|e| NeuralError::Decode(format!("model config is not UTF-8: {e}")))?;
    Ok((config, &rest[n..]))
}

/// The next value of a splitmix64 stream: the one generator behind every
/// seeded choice of the training code (shuffles, dropout masks, benchmark
/// data), independent of any crate's RNG so stored seeds keep meaning the
/// same thing.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from a splitmix64 stream (53 random bits).
pub fn unit_f64(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// A seeded Fisher-Yates shuffle on a splitmix64 stream.
pub fn shuffle(indices: &mut [usize], state: &mut u64) {
    for i in (1..indices.len()).rev() {
        let j = (splitmix64(state) % (i as u64 + 1)) as usize;
        indices.swap(i, j);
    }
}
