//! Structured logging: human-readable by default, one JSON object per line
//! with `TRAINYARD_LOG_FORMAT=json`; filter with `RUST_LOG`.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Logs go to stderr so stdout stays free for
/// command output (`--json`). Calling it twice is harmless.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("TRAINYARD_LOG_FORMAT")
        .map(|v| v.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

/// Buckets of every `_seconds` histogram of both binaries: 1 ms to 10 min.
/// Histograms (not summaries) so replicas can be summed.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// The process's Prometheus recorder, installed on the first call, which
/// also runs `describe` (the binary's metric descriptions); later calls
/// return the same handle. `_seconds` metrics get [`SECONDS_BUCKETS`].
pub fn prometheus(describe: fn()) -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test harness's) may be installed already: the
        // handle renders what this one records only if it is global.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe();
        handle
    })
}
