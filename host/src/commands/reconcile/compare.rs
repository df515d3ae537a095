//! `reconcile`'s comparison: for every row and interval, Amberflo's total
//! against what Stripe's meter holds, read-only and sandboxed like every run
//! (the component reads, the host attaches the keys). Amberflo is queried per
//! batch of customers as `sync` does; Stripe's summaries once per row.
//!
//! Output: one JSON line per cell and a summary line, or CSV; a short table of
//! the drifted cells on a terminal; and optionally a self-contained HTML page
//! with a chart per customer.

use crate::bindings::{Cell, CellStatus, CustomerUsage, Inputs, Listing, Meter, Reconciliation};
use crate::commands::listing::Listings;
use crate::mapping::Row;
use crate::outcome::{ExitStatus, Failure};
use crate::progress::Progress;
use crate::sandbox::{RunConfig, Sandbox};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How the cells are printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, then `{"summary": ...}`.
    Json,
    /// CSV with a header; the summary goes to stderr.
    Csv,
}

/// Everything `reconcile` needs besides the rows.
pub struct Settings {
    /// The window's start, the same for every row.
    pub start_time: String,
    /// The window's end.
    pub end_time: String,
    /// Rows read at once.
    pub concurrency: usize,
    /// Customers per Amberflo query.
    pub batch: usize,
    /// Differences up to this many units are a match.
    pub tolerance: String,
    /// stdout's format.
    pub format: Format,
    /// Where to write the HTML page, if anywhere.
    pub html: Option<PathBuf>,
}

/// What a reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Rows compared.
    pub rows: usize,
    /// Cells (row × interval) compared.
    pub cells: usize,
    /// Cells equal within the tolerance.
    pub matched: usize,
    /// Cells Stripe holds nothing for.
    pub missing: usize,
    /// Cells Stripe holds less for.
    pub under: usize,
    /// Cells Stripe holds more for.
    pub over: usize,
    /// Cells that differ but may still change at Amberflo.
    pub settling: usize,
    /// Rows that could not be compared (see their lines).
    pub failed: usize,
    /// The worst exit status among the failed rows.
    #[serde(skip)]
    pub worst: u8,
    /// Rows compared whose Amberflo totals are all zero (for the metrics).
    #[serde(skip)]
    pub zero_usage: usize,
}

impl Summary {
    /// Cells that drifted: missing, under or over.
    pub fn drifted(&self) -> usize {
        self.missing + self.under + self.over
    }

    /// What the metrics file says of this reconciliation.
    pub fn tally(&self) -> crate::metrics::Tally {
        crate::metrics::Tally {
            rows: vec![
                ("compared", self.rows - self.failed),
                ("failed", self.failed),
            ],
            zero_usage: self.zero_usage,
            drift_cells: self.drifted(),
            ..crate::metrics::Tally::default()
        }
    }
}

impl Summary {
    /// Counts a row that could not be compared.
    pub fn count_failure(&mut self, failure: &Failure) {
        self.failed += 1;
        self.worst = self.worst.max(failure.exit_code());
    }
}

/// The line of a row that could not be compared: the row and the error.
pub fn failed_line(row: &Row, failure: &Failure) -> Value {
    let mut line = json!({
        "customerId": row.customer_id,
        "stripeCustomer": row.stripe_customer,
        "meterApiName": row.meter_api_name,
        "stripeEventName": row.stripe_event_name,
        "status": "failed",
    });
    if let (Value::Object(line), Value::Object(detail)) = (&mut line, failure.to_json()) {
        line.extend(detail);
    }
    line
}

/// A row's answer.
type Answer = Result<Reconciliation, Failure>;

/// Compares every row, then prints what it found; writes nothing anywhere
/// but stdout, stderr and the HTML file.
pub async fn reconcile(
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    rows: Vec<Row>,
    settings: &Settings,
) -> Result<Summary, Failure> {
    let tolerance = settings.tolerance.clone();
    let (answers, config) = gather(
        sandbox,
        config,
        rows,
        settings,
        false,
        move |sandbox, config, inputs, usage, meter, _| {
            let tolerance = tolerance.clone();
            async move {
                sandbox
                    .reconcile(&config, inputs, usage, &meter, &tolerance)
                    .await
            }
        },
        |r: &Reconciliation| r.cells.iter().filter(|c| drifted_status(c.status)).count(),
    )
    .await?;
    let summary = print(&answers, settings, &config)?;
    if let Some(path) = &settings.html {
        std::fs::write(path, html(&answers, settings))
            .map_err(|e| Failure::BadInput(format!("cannot write {}: {e}", path.display())))?;
        tracing::info!("reconcile: wrote {}", path.display());
    }
    Ok(summary)
}

/// Every row's answer, in the mapping's order: Amberflo queried per batch of
/// customers as `sync` does, then `call` per row (each in its own sandboxed
/// instance), `drifted` counting what the progress line shows. With `list`,
/// the account's subscriptions are listed once, as `sync` does, and each row
/// is given its customer's.
#[allow(clippy::too_many_arguments)]
pub async fn gather<T, F, Fut>(
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    rows: Vec<Row>,
    settings: &Settings,
    list: bool,
    call: F,
    drifted: impl Fn(&T) -> usize,
) -> Result<(Vec<(Row, Result<T, Failure>)>, Arc<RunConfig>), Failure>
where
    T: Send + 'static,
    F: Fn(Arc<Sandbox>, Arc<RunConfig>, Inputs, CustomerUsage, Arc<Meter>, Option<Listing>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<T, Failure>> + Send + 'static,
{
    let meters = crate::commands::batch::meters_of(&sandbox, &config, &rows).await?;
    let listings = match list {
        true => {
            let (sandbox, config) = (sandbox.clone(), config.clone());
            Some(Listings::start(sandbox, config, meters.clone(), rows.len()))
        }
        false => None,
    };
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let total = rows.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Row, Result<T, Failure>)>();
    for batch in crate::commands::batch::batches(rows, settings.batch) {
        let (sandbox, config, permits) = (sandbox.clone(), config.clone(), permits.clone());
        let (meters, listings) = (meters.clone(), listings.clone());
        let (start, end) = (settings.start_time.clone(), settings.end_time.clone());
        let tx = tx.clone();
        let call = call.clone();
        tokio::spawn(async move {
            let usage = {
                let _permit = permits.acquire().await;
                let rows: Vec<&Row> = batch.iter().collect();
                crate::commands::batch::query_batch(&sandbox, &config, &rows, &start, &end).await
            };
            let usage = match usage {
                Ok(usage) => usage,
                Err(failure) => {
                    for row in batch {
                        let _ = tx.send((row, Err(failure.clone())));
                    }
                    return;
                }
            };
            for row in batch {
                let (sandbox, config, permits) = (sandbox.clone(), config.clone(), permits.clone());
                let meter = meters[&row.stripe_event_name].clone();
                let usage = usage
                    .get(&row.customer_id)
                    .cloned()
                    .unwrap_or_else(|| crate::commands::batch::no_usage(&row.customer_id));
                let inputs = row.inputs(start.clone(), end.clone());
                let tx = tx.clone();
                let call = call.clone();
                let listings = listings.clone();
                tokio::spawn(async move {
                    let _permit = permits.acquire().await;
                    let listed = match listings {
                        Some(listings) => listings.of(&row.stripe_customer).await,
                        None => None,
                    };
                    let answer = call(sandbox, config, inputs, usage, meter, listed).await;
                    let _ = tx.send((row, answer));
                });
            }
        });
    }
    drop(tx);
    let mut answers = Vec::with_capacity(total);
    let mut progress = Progress::new("reconcile", total);
    let mut count = 0;
    while let Some((row, answer)) = rx.recv().await {
        if let Ok(r) = &answer {
            count += drifted(r);
        }
        answers.push((row, answer));
        progress.show(answers.len(), || format!("{count} drifted"));
    }
    progress.done();
    answers.sort_by_key(|(row, _)| row.line);
    Ok((answers, config))
}

/// The status's name in the output.
pub fn status_name(status: CellStatus) -> &'static str {
    match status {
        CellStatus::Match => "match",
        CellStatus::Missing => "missing",
        CellStatus::Under => "under",
        CellStatus::Over => "over",
        CellStatus::Settling => "settling",
    }
}

fn drifted_status(status: CellStatus) -> bool {
    matches!(
        status,
        CellStatus::Missing | CellStatus::Under | CellStatus::Over
    )
}

fn cell_line(row: &Row, cell: &Cell) -> Value {
    json!({
        "customerId": row.customer_id,
        "stripeCustomer": row.stripe_customer,
        "meterApiName": row.meter_api_name,
        "stripeEventName": row.stripe_event_name,
        "startTime": cell.window_start,
        "endTime": cell.window_end,
        "amberflo": cell.amberflo,
        "stripe": cell.stripe,
        "difference": cell.difference,
        "status": status_name(cell.status),
    })
}

const CSV_HEADER: [&str; 10] = [
    "customerId",
    "stripeCustomer",
    "meterApiName",
    "stripeEventName",
    "startTime",
    "endTime",
    "amberflo",
    "stripe",
    "difference",
    "status",
];

/// Prints every cell (and every failed row) on stdout, the drifted cells as
/// a table on a terminal, and the summary.
fn print(
    answers: &[(Row, Answer)],
    settings: &Settings,
    config: &RunConfig,
) -> Result<Summary, Failure> {
    let redact = |text: &str| config.credentials.redact(text);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let write_error = |e: std::io::Error| Failure::Internal(format!("writing stdout: {e}"));
    let mut csv = csv::Writer::from_writer(Vec::new());
    if settings.format == Format::Csv {
        csv.write_record(CSV_HEADER)
            .map_err(|e| Failure::Internal(e.to_string()))?;
    }
    let mut summary = Summary::default();
    let mut table = Vec::new();
    for (row, answer) in answers {
        summary.rows += 1;
        let reconciliation = match answer {
            Ok(r) => r,
            Err(failure) => {
                summary.count_failure(failure);
                let line = redact(&failed_line(row, failure).to_string());
                match settings.format {
                    Format::Json => writeln!(out, "{line}").map_err(write_error)?,
                    Format::Csv => tracing::info!("reconcile: {line}"),
                }
                continue;
            }
        };
        summary.zero_usage += usize::from(
            reconciliation
                .cells
                .iter()
                .all(|c| c.amberflo.parse::<f64>().is_ok_and(|v| v == 0.0)),
        );
        for cell in &reconciliation.cells {
            summary.cells += 1;
            match cell.status {
                CellStatus::Match => summary.matched += 1,
                CellStatus::Missing => summary.missing += 1,
                CellStatus::Under => summary.under += 1,
                CellStatus::Over => summary.over += 1,
                CellStatus::Settling => summary.settling += 1,
            }
            if drifted_status(cell.status) {
                table.push((row, cell));
            }
            match settings.format {
                Format::Json => writeln!(out, "{}", redact(&cell_line(row, cell).to_string()))
                    .map_err(write_error)?,
                Format::Csv => {
                    let start = cell.window_start.to_string();
                    let end = cell.window_end.to_string();
                    let [customer, stripe_customer, meter, event] = text_cells(row);
                    csv.write_record([
                        &*customer,
                        &stripe_customer,
                        &meter,
                        &event,
                        &start,
                        &end,
                        &cell.amberflo,
                        &cell.stripe,
                        &cell.difference,
                        status_name(cell.status),
                    ])
                    .map_err(|e| Failure::Internal(e.to_string()))?;
                }
            }
        }
    }
    let summary_line = json!({ "summary": summary }).to_string();
    match settings.format {
        Format::Json => writeln!(out, "{summary_line}").map_err(write_error)?,
        Format::Csv => {
            let bytes = csv
                .into_inner()
                .map_err(|e| Failure::Internal(e.to_string()))?;
            out.write_all(redact(&String::from_utf8_lossy(&bytes)).as_bytes())
                .map_err(write_error)?;
            tracing::info!("reconcile: {summary_line}");
        }
    }
    if std::io::stderr().is_terminal() && !table.is_empty() {
        // A table for the person at the terminal, not a log line.
        eprintln!("{}", drift_table(&table));
    }
    Ok(summary)
}

/// The drifted cells, for a person: at most 20 lines.
fn drift_table(cells: &[(&Row, &Cell)]) -> String {
    let mut text = format!(
        "{:<24} {:<20} {:>14} {:>14} {:>14}  status\n",
        "customer", "day (UTC)", "amberflo", "stripe", "difference"
    );
    for (row, cell) in cells.iter().take(20) {
        text.push_str(&format!(
            "{:<24} {:<20} {:>14} {:>14} {:>14}  {}\n",
            row.customer_id,
            day(cell.window_start),
            cell.amberflo,
            cell.stripe,
            cell.difference,
            status_name(cell.status)
        ));
    }
    if cells.len() > 20 {
        text.push_str(&format!(
            "... and {} more drifted cells\n",
            cells.len() - 20
        ));
    }
    text
}

/// `2026-11-25` (or `2026-11-25 13:00` for an hour), UTC.
fn day(unix: i64) -> String {
    let (y, m, d, secs) = usage_sync_report::civil(unix);
    match secs {
        0 => format!("{y:04}-{m:02}-{d:02}"),
        s => format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s % 3600 / 60),
    }
}

/// Text safe inside HTML.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained page: per row, a chart of Amberflo (bars) against Stripe
/// (dots) per interval, drifted intervals marked red, and a table of them.
/// No script, no external asset.
fn html(answers: &[(Row, Answer)], settings: &Settings) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>usage-sync reconcile</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
         section{margin-bottom:2.5em}h2{font-size:16px;margin:0 0 .3em}\
         .bar{fill:#9bb7d4}.drift{fill:#d9534f}.settling{fill:#f0ad4e}.dot{fill:#222}\
         table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}\
         .legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}\
         </style></head><body>\n",
    );
    page.push_str(&format!(
        "<h1>Amberflo against Stripe, {} to {}</h1>\n<p class=\"legend\">\
         <span style=\"background:#9bb7d4\"></span>Amberflo, matching\
         <span style=\"background:#d9534f\"></span>Amberflo, drifted\
         <span style=\"background:#f0ad4e\"></span>Amberflo, still settling\
         <span style=\"background:#222;border-radius:5px\"></span>Stripe</p>\n",
        escape(&settings.start_time),
        escape(&settings.end_time)
    ));
    for (row, answer) in answers {
        page.push_str(&format!(
            "<section data-customer=\"{}\"><h2>{} → {} ({} → {})</h2>\n",
            escape(&row.customer_id),
            escape(&row.customer_id),
            escape(&row.stripe_customer),
            escape(&row.meter_api_name),
            escape(&row.stripe_event_name)
        ));
        match answer {
            Err(failure) => page.push_str(&format!(
                "<p class=\"failed\">Not compared: {}</p>\n",
                escape(&failure.message())
            )),
            Ok(r) => page.push_str(&chart(&r.cells)),
        }
        page.push_str("</section>\n");
    }
    page.push_str("</body></html>\n");
    page
}

fn chart(cells: &[Cell]) -> String {
    let value = |text: &str| text.parse::<f64>().unwrap_or(0.0);
    let top = cells
        .iter()
        .flat_map(|c| [value(&c.amberflo), value(&c.stripe)])
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (width, height, step) = ((cells.len().max(1) * 14 + 20) as f64, 120.0, 14.0);
    let y = |v: f64| height - 10.0 - (v / top) * (height - 20.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\">\n"
    );
    for (i, cell) in cells.iter().enumerate() {
        let x = 10.0 + i as f64 * step;
        let a = value(&cell.amberflo);
        let class = match cell.status {
            s if drifted_status(s) => "bar drift",
            CellStatus::Settling => "bar settling",
            _ => "bar",
        };
        svg.push_str(&format!(
            "<rect class=\"{class}\" data-start=\"{}\" data-status=\"{}\" x=\"{x}\" y=\"{:.1}\" width=\"10\" height=\"{:.1}\"><title>{}: Amberflo {}, Stripe {}</title></rect>\n",
            cell.window_start,
            status_name(cell.status),
            y(a),
            (height - 10.0 - y(a)).max(0.0),
            day(cell.window_start),
            escape(&cell.amberflo),
            escape(&cell.stripe),
        ));
        svg.push_str(&format!(
            "<circle class=\"dot\" cx=\"{}\" cy=\"{:.1}\" r=\"2.5\"/>\n",
            x + 5.0,
            y(value(&cell.stripe))
        ));
    }
    svg.push_str("</svg>\n");
    let drifted: Vec<&Cell> = cells.iter().filter(|c| drifted_status(c.status)).collect();
    if !drifted.is_empty() {
        svg.push_str("<table><tr><th>day</th><th>Amberflo</th><th>Stripe</th><th>difference</th><th>status</th></tr>\n");
        for c in drifted {
            svg.push_str(&format!(
                "<tr class=\"drifted\" data-start=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                c.window_start,
                day(c.window_start),
                escape(&c.amberflo),
                escape(&c.stripe),
                escape(&c.difference),
                status_name(c.status)
            ));
        }
        svg.push_str("</table>\n");
    }
    svg
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, a tab or
/// a carriage return first) gets a leading `'`, as OWASP's "CSV Injection"
/// advises; only text from outside (the mapping's ids and names), never the
/// numbers reconcile computes, whose minus sign is a sign.
pub(super) fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    match text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        true => format!("'{text}").into(),
        false => text.into(),
    }
}

/// A row's ids and names, safe for a spreadsheet.
pub(super) fn text_cells(row: &Row) -> [std::borrow::Cow<'_, str>; 4] {
    [
        &row.customer_id,
        &row.stripe_customer,
        &row.meter_api_name,
        &row.stripe_event_name,
    ]
    .map(|t| spreadsheet_safe(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_printed_in_utc() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_764_028_800), "2025-11-25");
        assert_eq!(day(1_764_028_800 + 13 * 3600), "2025-11-25 13:00");
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_quoted() {
        for (text, safe) in [
            (
                "=HYPERLINK(\"http://x.invalid\")",
                "'=HYPERLINK(\"http://x.invalid\")",
            ),
            ("+1", "'+1"),
            ("-cmd", "'-cmd"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("acme", "acme"),
            ("cus_1", "cus_1"),
        ] {
            assert_eq!(spreadsheet_safe(text), safe);
        }
    }
}
