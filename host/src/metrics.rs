//! Metrics in the Prometheus text format, with the `prometheus-client` crate:
//! a textfile that `run`, `sync` and `reconcile` leave for node_exporter's
//! textfile collector (`--metrics-file`), and `serve`'s live `/metrics`.

use crate::egress::{Exchange, Observer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Labels = Vec<(String, String)>;

/// The metric whose value a failed run keeps from the file before it, so an
/// alert can fire on its staleness.
const LAST_SUCCESS: &str = "usage_sync_last_success_timestamp_seconds";

/// What one `run`, `sync` or `reconcile` did, for its textfile.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Rows by outcome (`recorded`, `already-recorded`, `drift`, `failed`, ...).
    pub rows: Vec<(&'static str, usize)>,
    /// Customers whose usage query succeeded and measured nothing: a
    /// metering outage looks like this, a failed query does not.
    pub zero_usage: usize,
    /// Intervals Stripe holds another value for.
    pub drift_cells: usize,
    /// Units of periods whose invoice is final, not written: billed nowhere.
    pub unbilled_units: f64,
    /// Units written for customers with no subscription item on the meter:
    /// billed by no invoice until one is created.
    pub unsubscribed_units: f64,
}

impl Tally {
    /// Adds one run's unbilled usage (see [`Tally::unbilled_units`]).
    pub fn add_unbilled(&mut self, outputs: &crate::outcome::Outputs) {
        for u in &outputs.unbilled {
            let units = u.quantity.parse::<f64>().unwrap_or(0.0);
            match u.written {
                false => self.unbilled_units += units,
                true => self.unsubscribed_units += units,
            }
        }
    }
}

/// Writes the textfile of a finished run at `path`, atomically (a temporary
/// file beside it, then a rename). `exit` 0 is a success: its time becomes
/// `usage_sync_last_success_timestamp_seconds`; otherwise the previous file's
/// value of it is kept. Every series carries the `step` labels (`step`:
/// `sync`, `sync-true-up`, `close-periods`, ...; `shard`: `K/N` when
/// sharded), so the files of a night's steps sit side by side in one
/// textfile directory without colliding, and a failed step shows as itself.
pub fn write_textfile(
    path: &Path,
    step: &[(&str, &str)],
    exit: u8,
    duration: Duration,
    tally: &Tally,
) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let last_success = match exit {
        0 => Some(now),
        _ => previous_success(path),
    };
    let mut registry = Registry::default();
    let labels = |more: &[(&str, &str)]| -> Labels {
        step.iter()
            .chain(more)
            .copied()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let gauge = |value: f64| {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        family.get_or_create(&labels(&[])).set(value);
        family
    };
    if let Some(at) = last_success {
        registry.register(
            LAST_SUCCESS.trim_start_matches("usage_sync_"),
            "When a run last ended with exit 0 (kept across failed runs)",
            gauge(at),
        );
    }
    registry.register(
        "last_run_timestamp",
        "When the last run ended, whatever its outcome",
        gauge(now),
    );
    registry.register(
        "last_run_exit_code",
        "The last run's exit status (README: 0 ok, 2 bad input, 3 provider, 4 sandbox, 5 drift, 130 interrupted)",
        gauge(f64::from(exit)),
    );
    registry.register(
        "last_run_duration_seconds",
        "How long the last run took",
        gauge(duration.as_secs_f64()),
    );
    let rows = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (outcome, count) in &tally.rows {
        rows.get_or_create(&labels(&[("outcome", outcome)]))
            .set(*count as f64);
    }
    registry.register("last_run_rows", "Rows of the last run, by outcome", rows);
    registry.register(
        "last_run_zero_usage_customers",
        "Customers whose query succeeded and measured no usage (failed queries are rows with outcome failed)",
        gauge(tally.zero_usage as f64),
    );
    registry.register(
        "last_run_drift_cells",
        "Intervals where Stripe holds another value than Amberflo measured",
        gauge(tally.drift_cells as f64),
    );
    registry.register(
        "last_run_unbilled_units",
        "Units measured for billing periods whose invoice is final: not written, billed by no invoice",
        gauge(tally.unbilled_units),
    );
    registry.register(
        "last_run_unsubscribed_units",
        "Units written for customers with no subscription item on the meter: no invoice bills them yet",
        gauge(tally.unsubscribed_units),
    );
    let text = prefixed(&registry)?;
    let temporary = path.with_extension("prom.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot write the metrics file {}: {e}", path.display()))
}

/// The registry's text with every name under `usage_sync_`.
fn prefixed(registry: &Registry) -> Result<String, String> {
    let mut text = String::new();
    encode(&mut text, registry).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.strip_prefix("# HELP ") {
            Some(rest) => format!("# HELP usage_sync_{rest}"),
            None => match line.strip_prefix("# TYPE ") {
                Some(rest) => format!("# TYPE usage_sync_{rest}"),
                None if line.starts_with('#') => line.to_string(),
                None => format!("usage_sync_{line}"),
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// `usage_sync_last_success_timestamp_seconds` in the file at `path`, if any
/// (the file this tool wrote, a few kilobytes: one past a megabyte is not it).
fn previous_success(path: &Path) -> Option<f64> {
    let bytes = crate::capped::read(path, 1 << 20, "metrics file").ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(LAST_SUCCESS)?;
        // After the labels, if any.
        let value = rest.rsplit_once('}').map_or(rest, |(_, v)| v);
        value.trim().parse().ok()
    })
}

/// `serve`'s live metrics.
pub struct ServeMetrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    in_flight: Gauge,
    requests: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

impl Default for ServeMetrics {
    fn default() -> ServeMetrics {
        let mut registry = Registry::with_prefix("usage_sync");
        let runs = Family::<Labels, Counter>::default();
        let in_flight = Gauge::default();
        let requests = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let durations =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(request_histogram);
        registry.register(
            "runs",
            "POST /run requests, by outcome (ok, invalid-input, failed, sandbox, unauthorized, busy, too-large, timeout, ...)",
            runs.clone(),
        );
        registry.register("runs_in_flight", "Runs in flight now", in_flight.clone());
        registry.register(
            "provider_requests",
            "Requests to the providers, by provider, route and status (429s and refusals included)",
            requests.clone(),
        );
        registry.register(
            "provider_retries",
            "Requests that repeated one the provider asked to retry (429, 409, 5xx, no answer), by provider and route",
            retries.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "How long the providers took to answer, by provider and route",
            durations.clone(),
        );
        ServeMetrics {
            registry,
            runs,
            in_flight,
            requests,
            retries,
            durations,
        }
    }
}

impl ServeMetrics {
    /// Counts a finished `POST /run` by outcome.
    pub fn run_ended(&self, outcome: &str) {
        self.runs
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Counts a run in flight until the guard is dropped.
    pub fn run_started(self: &Arc<Self>) -> InFlightRun {
        self.in_flight.inc();
        InFlightRun(self.clone())
    }

    /// An observer that counts every provider request.
    pub fn observer(self: &Arc<Self>) -> Observer {
        let metrics = self.clone();
        Arc::new(move |exchange: &Exchange| {
            let status = match &exchange.result {
                Ok(status) => status.to_string(),
                Err(_) => "none".into(),
            };
            let provider = exchange.provider.name().to_ascii_lowercase();
            metrics
                .requests
                .get_or_create(&vec![
                    ("provider".into(), provider.clone()),
                    ("route".into(), exchange.route.into()),
                    ("status".into(), status),
                ])
                .inc();
            if exchange.attempt > 1 {
                metrics
                    .retries
                    .get_or_create(&vec![
                        ("provider".into(), provider.clone()),
                        ("route".into(), exchange.route.into()),
                    ])
                    .inc();
            }
            metrics
                .durations
                .get_or_create(&vec![
                    ("provider".into(), provider),
                    ("route".into(), exchange.route.into()),
                ])
                .observe(exchange.elapsed.as_secs_f64());
        })
    }

    /// The text `GET /metrics` answers.
    pub fn render(&self) -> String {
        let mut text = String::new();
        match encode(&mut text, &self.registry) {
            Ok(()) => text,
            Err(e) => format!("# encoding failed: {e}\n"),
        }
    }
}

/// A run in flight, counted until dropped.
pub struct InFlightRun(Arc<ServeMetrics>);

impl Drop for InFlightRun {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let dir = std::env::temp_dir().join(format!("usage-sync-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("usage-sync.prom");
        let tally = Tally {
            rows: vec![("recorded", 3), ("failed", 0)],
            zero_usage: 1,
            drift_cells: 0,
            unbilled_units: 15.0,
            unsubscribed_units: 0.0,
        };
        write_textfile(
            &path,
            &[("step", "sync")],
            0,
            Duration::from_secs(2),
            &tally,
        )
        .unwrap();
        let first = previous_success(&path).unwrap();
        // Not a file this tool wrote, and endless: none, at once.
        assert_eq!(previous_success(Path::new("/dev/zero")), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("usage_sync_last_run_rows{step=\"sync\",outcome=\"recorded\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("usage_sync_last_run_zero_usage_customers{step=\"sync\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE usage_sync_last_success_timestamp_seconds gauge"),
            "{text}"
        );
        write_textfile(
            &path,
            &[("step", "sync")],
            3,
            Duration::from_secs(1),
            &Tally::default(),
        )
        .unwrap();
        assert_eq!(previous_success(&path), Some(first));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("usage_sync_last_run_exit_code{step=\"sync\"} 3"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
