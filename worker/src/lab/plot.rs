//! The training plot: history, holdout actuals, the champion's holdout
//! prediction and its forecast, as a PNG. Drawn with plotters' bitmap
//! backend and a bundled font (DejaVu Sans, licence beside it in
//! `worker/assets/fonts/`), so it needs no system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use chrono::{Duration, NaiveDate};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
/// Days of history drawn before the holdout: older data would squeeze the
/// holdout and the forecast into a sliver.
const HISTORY_DAYS: i64 = 365;

/// What to draw; points are (date, value) in the series' units.
#[derive(Debug, Clone, Default)]
pub struct PlotData {
    pub title: String,
    pub y_label: String,
    pub history: Vec<(NaiveDate, f64)>,
    pub holdout: Vec<(NaiveDate, f64)>,
    pub holdout_prediction: Vec<(NaiveDate, f64)>,
    pub forecast: Vec<(NaiveDate, f64)>,
    /// The forecast's 80 % and 95 % intervals (date, lower, upper), drawn
    /// as shaded bands.
    pub band_80: Vec<(NaiveDate, f64, f64)>,
    pub band_95: Vec<(NaiveDate, f64, f64)>,
    /// Flagged rows (anomaly detection), drawn as red dots.
    pub anomalies: Vec<(NaiveDate, f64)>,
}

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF compiled into the binary; a failure
        // here is a build defect, caught by the plot test.
        if register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            tracing::error!("the bundled font could not be registered");
        }
    });
}

/// Writes the plot to `path` (PNG, 1200×600).
pub fn write_png(path: &Path, data: &PlotData) -> anyhow::Result<()> {
    register();
    let all = || {
        data.history
            .iter()
            .chain(&data.holdout)
            .chain(&data.holdout_prediction)
            .chain(&data.forecast)
            .chain(&data.anomalies)
    };
    let last = all().map(|p| p.0).max().context("nothing to plot")?;
    let first_shown = data
        .holdout
        .first()
        .or(data.forecast.first())
        .map(|p| p.0 - Duration::days(HISTORY_DAYS))
        .unwrap_or(NaiveDate::MIN);
    let first = all()
        .map(|p| p.0)
        .filter(|d| *d >= first_shown)
        .min()
        .unwrap_or(last);
    let shown = |pts: &[(NaiveDate, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .filter(|p| p.0 >= first && p.1.is_finite())
            .map(|p| ((p.0 - first).num_days() as f64, p.1))
            .collect()
    };
    let history = shown(&data.history);
    let holdout = shown(&data.holdout);
    let prediction = shown(&data.holdout_prediction);
    let forecast = shown(&data.forecast);
    let anomalies = shown(&data.anomalies);
    let band = |b: &[(NaiveDate, f64, f64)]| -> Vec<(f64, f64, f64)> {
        b.iter()
            .filter(|p| p.0 >= first && p.1.is_finite() && p.2.is_finite())
            .map(|p| ((p.0 - first).num_days() as f64, p.1, p.2))
            .collect()
    };
    let (band_80, band_95) = (band(&data.band_80), band(&data.band_95));
    let ys = || {
        history
            .iter()
            .chain(&holdout)
            .chain(&prediction)
            .chain(&forecast)
            .chain(&anomalies)
            .map(|p| p.1)
            .chain(band_95.iter().flat_map(|b| [b.1, b.2]))
    };
    let lo = ys().fold(f64::INFINITY, f64::min);
    let hi = ys().fold(f64::NEG_INFINITY, f64::max);
    anyhow::ensure!(lo.is_finite() && hi.is_finite(), "no finite value to plot");
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-9);
    let x_max = ((last - first).num_days() as f64).max(1.0);

    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).context("drawing the background")?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&data.title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))
        .context("building the chart")?;
    let date_of = |x: &f64| (first + Duration::days(x.round() as i64)).to_string();
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&date_of)
        .y_desc(data.y_label.as_str())
        .label_style((FAMILY, 14))
        .draw()
        .context("drawing the axes")?;

    for (label, b, alpha) in [
        ("95 % interval", &band_95, 0.15),
        ("80 % interval", &band_80, 0.3),
    ] {
        if b.is_empty() {
            continue;
        }
        let outline: Vec<(f64, f64)> = b
            .iter()
            .map(|p| (p.0, p.2))
            .chain(b.iter().rev().map(|p| (p.0, p.1)))
            .collect();
        let fill = RGBColor(0, 90, 200).mix(alpha);
        chart
            .draw_series(std::iter::once(Polygon::new(outline, fill.filled())))
            .with_context(|| format!("drawing the {label}"))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], fill.filled()));
    }
    let series = [
        ("history", &history, RGBColor(90, 90, 90)),
        ("holdout (actual)", &holdout, RGBColor(0, 0, 0)),
        ("champion on holdout", &prediction, RGBColor(230, 120, 0)),
        ("forecast", &forecast, RGBColor(0, 90, 200)),
    ];
    for (label, points, color) in series {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .with_context(|| format!("drawing {label}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if !anomalies.is_empty() {
        chart
            .draw_series(
                anomalies
                    .iter()
                    .map(|p| Circle::new(*p, 4, RGBColor(220, 0, 0).filled())),
            )
            .context("drawing anomalies")?
            .label("flagged anomaly")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RGBColor(220, 0, 0).filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .context("drawing the legend")?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_writes_a_non_empty_png() {
        let d0 = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let day = |i: i64| d0 + Duration::days(i);
        let wave = |i: i64| 100.0 + 10.0 * ((i % 7) as f64);
        let data = PlotData {
            title: "test · plot".into(),
            y_label: "kWh".into(),
            history: (0..400).map(|i| (day(i), wave(i))).collect(),
            holdout: (400..430).map(|i| (day(i), wave(i))).collect(),
            holdout_prediction: (400..430).map(|i| (day(i), wave(i) + 3.0)).collect(),
            forecast: (430..460).map(|i| (day(i), wave(i))).collect(),
            band_80: (430..460)
                .map(|i| (day(i), wave(i) - 5.0, wave(i) + 5.0))
                .collect(),
            band_95: (430..460)
                .map(|i| (day(i), wave(i) - 9.0, wave(i) + 9.0))
                .collect(),
            anomalies: vec![(day(420), 170.0)],
        };
        let path = std::env::temp_dir().join(format!(
            "trainyard-plot-test-{}-{}.png",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        write_png(&path, &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(bytes.len() > 1000, "only {} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
