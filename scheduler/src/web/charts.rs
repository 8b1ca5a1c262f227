//! Chart data for the pages. Interactive charts are uPlot, drawn by
//! `assets/app.js` from a `data-chart` attribute holding the JSON built here
//! (no inline script: the Content-Security-Policy forbids it); sparklines are
//! inline SVG, drawn on the server, so they show without JavaScript.

use serde::Serialize;

/// One line (or set of points) of a chart. `color` names a CSS variable of
/// `app.css` (`c1`…`c4`, `ok`, `bad`, `warn`), so dark mode recolours it.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub label: String,
    pub values: Vec<Option<f64>>,
    pub color: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dash: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub points: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub band: bool,
}

impl Series {
    pub fn line(label: impl Into<String>, values: Vec<Option<f64>>, color: &'static str) -> Self {
        Self {
            label: label.into(),
            values,
            color,
            dash: false,
            points: false,
            band: false,
        }
    }
    pub fn dashed(mut self) -> Self {
        self.dash = true;
        self
    }
    /// Points only, no line between them (flagged days).
    pub fn points(mut self) -> Self {
        self.points = true;
        self
    }
    /// An edge of an interval band: drawn as the fill between two series.
    pub fn band_edge(mut self) -> Self {
        self.band = true;
        self
    }
}

/// What `app.js` draws: x values (Unix seconds when `time`), the series,
/// and pairs of series indexes (1-based, as uPlot counts) to fill between.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub time: bool,
    pub x: Vec<f64>,
    pub series: Vec<Series>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<[usize; 2]>,
    pub ylabel: String,
}

impl Chart {
    pub fn new(time: bool, x: Vec<f64>, ylabel: impl Into<String>) -> Self {
        Self {
            time,
            x,
            series: Vec::new(),
            bands: Vec::new(),
            ylabel: ylabel.into(),
        }
    }
    pub fn with(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
    /// Fills between the two series most recently added.
    pub fn band_between_last_two(mut self) -> Self {
        let n = self.series.len();
        if n >= 2 {
            self.bands.push([n - 1, n]);
        }
        self
    }
    /// How many non-missing values the chart holds.
    pub fn points(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.values.iter().flatten().count())
            .sum()
    }
    /// The attribute value (askama escapes it for the attribute).
    pub fn attr(&self) -> String {
        serde_json::to_string(self).expect("chart data serializes")
    }
}

/// An inline SVG polyline of `values` in a 240 × 48 box (the CSS stretches
/// it), with a title for screen readers and hover. Empty input → a flat line.
pub fn sparkline(values: &[f64], title: &str) -> String {
    const W: f64 = 240.0;
    const H: f64 = 48.0;
    let max = values.iter().cloned().fold(0.0_f64, f64::max);
    let n = values.len();
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = if n > 1 {
                i as f64 * W / (n - 1) as f64
            } else {
                0.0
            };
            let y = if max > 0.0 {
                H - 2.0 - v / max * (H - 4.0)
            } else {
                H - 2.0
            };
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let line = if points.is_empty() {
        format!("0,{:.1} {W},{:.1}", H - 2.0, H - 2.0)
    } else {
        points.join(" ")
    };
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{t}\"><title>{t}</title><polyline fill=\"none\" stroke=\"currentColor\" \
         stroke-width=\"1.5\" vector-effect=\"non-scaling-stroke\" points=\"{line}\"/></svg>",
        t = escape(title)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_serializes_what_app_js_reads() {
        let c = Chart::new(false, vec![1.0, 2.0], "loss")
            .with(Series::line("train", vec![Some(0.5), Some(0.25)], "c1"))
            .with(Series::line("val", vec![None, Some(0.3)], "c2").dashed());
        assert_eq!(c.points(), 3);
        let v: serde_json::Value = serde_json::from_str(&c.attr()).unwrap();
        assert_eq!(v["series"][1]["dash"], true);
        assert!(v["series"][0].get("dash").is_none());
        assert_eq!(v["series"][1]["values"][0], serde_json::Value::Null);
    }

    #[test]
    fn sparklines_scale_to_the_box_and_escape_their_title() {
        let s = sparkline(&[0.0, 5.0, 10.0], "a<b");
        assert!(
            s.contains("points=\"0.0,46.0 120.0,24.0 240.0,2.0\""),
            "{s}"
        );
        assert!(s.contains("a&lt;b"));
        assert!(sparkline(&[], "none").contains("0,46.0 240,46.0"));
    }
}
