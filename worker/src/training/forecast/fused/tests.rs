//! The fused engine against stock burn `nn::Lstm` (dropout off): same
//! forward output, same gradient for every parameter, same weights after a
//! few Adam steps; and training is reproducible.

use burn::nn::loss::{MseLoss, Reduction};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;

use super::isa::Isa;
use super::{gates, FusedForecaster, NamedValues};
use crate::training::forecast::model::Forecaster;
use crate::training::forecast::{train_forecaster, LstmConfig, LstmEngine, TrainedForecaster};
use crate::training::neural;

const WINDOW: usize = 30;

fn config() -> LstmConfig {
    LstmConfig::new().with_dropout(0.0)
}

/// Five windows of a noisy wave and the value after each (batch-first).
fn batch() -> (Vec<f32>, Vec<f32>) {
    let series: Vec<f32> = (0..WINDOW + 5)
        .map(|i| 0.5 + 0.3 * (i as f32 * 0.4).sin() + 0.05 * ((i * 7919) % 13) as f32 / 13.0)
        .collect();
    crate::training::forecast::training::windows(&series, WINDOW)
}

/// Burn's loss and gradients, named as [`FusedForecaster::named`] names them.
fn burn_gradients(model: &Forecaster, x: &[f32], y: &[f32]) -> (f32, NamedValues) {
    let device = model.head.weight.val().device();
    let b = y.len();
    let input = neural::tensor3(x.to_vec(), [b, WINDOW, 1], &device);
    let target = neural::tensor2(y.to_vec(), [b, 1], &device);
    let loss = MseLoss::new().forward(model.forward(input), target, Reduction::Mean);
    let value = loss.clone().into_scalar::<f32>();
    let grads = loss.backward();
    let grad = |p: Tensor<2>| neural::to_vec(p.grad(&grads).expect("a gradient"));
    let grad1 = |p: Tensor<1>| neural::to_vec(p.grad(&grads).expect("a gradient"));
    let mut out = Vec::new();
    let names = ["input_gate", "forget_gate", "output_gate", "cell_gate"];
    for (lname, lstm) in [("lstm1", &model.lstm1), ("lstm2", &model.lstm2)] {
        for (gname, gate) in names.iter().zip(gates(lstm)) {
            let p = format!("{lname}.{gname}");
            let (i, h) = (&gate.input_transform, &gate.hidden_transform);
            out.push((format!("{p}.input_transform.weight"), grad(i.weight.val())));
            let bias = i.bias.as_ref().expect("biased").val();
            out.push((format!("{p}.input_transform.bias"), grad1(bias)));
            out.push((format!("{p}.hidden_transform.weight"), grad(h.weight.val())));
            let bias = h.bias.as_ref().expect("biased").val();
            out.push((format!("{p}.hidden_transform.bias"), grad1(bias)));
        }
    }
    out.push(("head.weight".into(), grad(model.head.weight.val())));
    let bias = model.head.bias.as_ref().expect("biased").val();
    out.push(("head.bias".into(), grad1(bias)));
    (value, out)
}

/// Element-wise `|a - b| ≤ 1e-5·|b| + floor`, the floor being 1e-5 of the
/// tensor's largest magnitude (sums in a different order cancel differently).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let floor = 1e-5 * scale + 1e-9;
    for (k, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs() + floor,
            "{what}[{k}]: fused {a} vs burn {b} (tensor scale {scale})"
        );
    }
}

fn assert_all_close(got: &NamedValues, want: &NamedValues) {
    assert_eq!(got.len(), want.len());
    for ((name, a), (wname, b)) in got.iter().zip(want) {
        assert_eq!(name, wname);
        assert_close(name, a, b);
    }
}

#[test]
fn the_fused_forward_matches_burn_nn_lstm() {
    let model = neural::seeded_init(11, |d| config().init(d)).valid();
    let fused = FusedForecaster::from_burn(&model);
    let (x, _) = batch();
    let input = neural::tensor3(
        x.clone(),
        [x.len() / WINDOW, WINDOW, 1],
        &neural::infer_device(),
    );
    let want = neural::to_vec(model.forward(input));
    assert_close("forward", &fused.predict(&x, WINDOW), &want);
}

#[test]
fn the_fused_gradients_match_burn_autodiff_for_every_parameter() {
    let model = neural::seeded_init(12, |d| config().init(d));
    let fused = FusedForecaster::from_burn(&model);
    let (x, y) = batch();
    let (want_loss, want) = burn_gradients(&model, &x, &y);
    // Both builds of the kernels: portable, and the best this CPU has (AVX2
    // with FMA on x86-64 machines that have it). Five windows and hidden
    // sizes 50/25 reach every tile shape of the FMA recurrent product.
    for isa in [Isa::portable(), Isa::detect()] {
        let (loss, got) = fused.gradients_with(isa, &x, &y, WINDOW);
        assert_close("loss", &[loss], &[want_loss]);
        assert_eq!(got.len(), 4 * 4 * 2 + 2);
        assert_all_close(&got, &want);
    }
}

#[test]
fn fused_adam_steps_match_burn_adam_steps() {
    let mut model = neural::seeded_init(13, |d| config().init(d));
    let mut fused = FusedForecaster::from_burn(&model);
    let (x, y) = batch();
    let mut optim = AdamConfig::new().with_epsilon(1e-7).init();
    let mut adam = super::Adam::new(fused.params.len(), 1e-7);
    let mut ws = super::Workspace::new(&fused.layout, WINDOW, y.len());
    let xt = super::time_major(&x, WINDOW, y.len());
    let mut grads = vec![0.0; fused.params.len()];
    let device = model.head.weight.val().device();
    for _ in 0..3 {
        let input = neural::tensor3(x.clone(), [y.len(), WINDOW, 1], &device);
        let target = neural::tensor2(y.clone(), [y.len(), 1], &device);
        let loss = MseLoss::new().forward(model.forward(input), target, Reduction::Mean);
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, g);
        fused.loss_and_grads(&mut ws, &xt, &y, WINDOW, false, &mut grads);
        adam.step(1e-3, &mut fused.params, &grads);
    }
    let want = FusedForecaster::from_burn(&model.valid());
    // Adam moves every weight by about the learning rate per step whatever
    // the gradient's size, so compare the moves against that scale.
    for ((name, a), (_, b)) in fused
        .named(&fused.params)
        .iter()
        .zip(want.named(&want.params))
    {
        for (k, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!((p - q).abs() <= 3e-5, "{name}[{k}]: fused {p} vs burn {q}");
        }
    }
}

fn tiny() -> (Vec<f32>, LstmConfig) {
    let series: Vec<f32> = (0..90)
        .map(|i| 0.5 + 0.3 * (i as f32 * 0.5).sin() + 0.002 * i as f32)
        .collect();
    let config = LstmConfig::new()
        .with_hidden1(12)
        .with_hidden2(6)
        .with_window(10)
        .with_epochs(4);
    (series, config)
}

#[test]
fn the_fused_engine_is_the_default_and_old_configs_still_load() {
    assert_eq!(LstmConfig::new().engine(), LstmEngine::Fused);
    let mut json = serde_json::to_value(LstmConfig::new()).expect("serializes");
    json.as_object_mut().expect("an object").remove("engine");
    let old: LstmConfig = serde_json::from_value(json).expect("a config without `engine` loads");
    assert_eq!(old.engine(), LstmEngine::Fused);
}

#[test]
fn training_twice_with_the_same_seed_gives_identical_weights() {
    let (series, config) = tiny();
    let a = train_forecaster(&series, &config, 5, &mut |_| {}).expect("trains");
    let b = train_forecaster(&series, &config, 5, &mut |_| {}).expect("trains");
    let c = train_forecaster(&series, &config, 6, &mut |_| {}).expect("trains");
    let bits = |m: &TrainedForecaster| -> Vec<u32> {
        neural::parameter_values(m.model())
            .concat()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(bits(&a), bits(&c));
}

#[test]
fn a_saved_and_loaded_fused_model_forecasts_identically() {
    let (series, config) = tiny();
    let trained = train_forecaster(&series, &config, 8, &mut |_| {}).expect("trains");
    let loaded = TrainedForecaster::from_bytes(&trained.to_bytes()).expect("loads");
    assert_eq!(loaded.config(), trained.config());
    assert_eq!(
        neural::parameter_values(loaded.model()),
        neural::parameter_values(trained.model())
    );
    let want = trained.forecast(&series, 14);
    assert!(want.iter().all(|v| v.is_finite()));
    assert_eq!(loaded.forecast(&series, 14), want);
}

#[test]
fn the_fused_and_burn_engines_learn_the_same_series_about_as_well() {
    let (series, config) = tiny();
    // Dropout off: the burn engine's dropout draws from burn's process-wide
    // RNG, which tests running in parallel share.
    let config = config.with_epochs(25).with_dropout(0.0);
    let mut losses = Vec::new();
    for engine in [LstmEngine::Fused, LstmEngine::Burn] {
        let mut last = f64::NAN;
        let c = config.clone().with_engine(Some(engine));
        train_forecaster(&series, &c, 3, &mut |r| last = r.train_loss).expect("trains");
        losses.push(last);
    }
    // Same start, same batches; only summation order differs over 25 epochs.
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        (losses[0] - losses[1]).abs() <= 0.1 * losses[0].max(losses[1]),
        "{losses:?}"
    );
}

/// The forecaster learns a noisy sine: the training loss falls below a
/// tenth of the series' variance (a model that predicts the mean scores
/// 1.0 on this normalized scale), and the one-step forecasts of the next
/// days track the sine.
#[test]
fn the_lstm_learns_a_noisy_sine() {
    let mut state = 3u64;
    let series: Vec<f32> = (0..300)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
            (2.0 * std::f32::consts::PI * i as f32 / 14.0).sin() + noise
        })
        .collect();
    let variance = {
        let m = series.iter().sum::<f32>() / series.len() as f32;
        series.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / series.len() as f32
    };
    let config = LstmConfig::new().with_epochs(40);
    let mut losses = Vec::new();
    let model = train_forecaster(&series[..270], &config, 5, &mut |e| {
        losses.push(e.train_loss)
    })
    .expect("trains");
    let last = *losses.last().expect("epochs ran");
    assert!(
        last < 0.1 * f64::from(variance),
        "final loss {last}, variance {variance}, losses {losses:?}"
    );
    assert!(last < losses[0] / 3.0, "loss fell: {losses:?}");
    let forecast = model.forecast(&series[..270], 7);
    for (k, p) in forecast.iter().enumerate() {
        let truth = (2.0 * std::f32::consts::PI * (270 + k) as f32 / 14.0).sin();
        assert!((p - truth).abs() < 0.35, "day {k}: {p} vs {truth}");
    }
}
