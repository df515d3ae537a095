//! `reconcile --invoices`: each finalized invoice whose period lies in the
//! window, its metered line's quantity against what a run bills for the
//! period from Amberflo's usage (by hour, as a run cuts a renewal day), read
//! only. What an invoice bills is what the customer pays: a summary can match
//! while the invoice, frozen before the usage arrived, does not.
//!
//! Output: one JSON line per invoice and a summary line, or CSV; optionally an
//! HTML table.

use super::compare::{
    Format, Settings, Summary, escape, failed_line, gather, spreadsheet_safe, text_cells,
};
use crate::bindings::{InvoiceCheck, InvoiceReconciliation};
use crate::mapping::Row;
use crate::outcome::Failure;
use crate::sandbox::{RunConfig, Sandbox};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::Arc;

/// Compares every row's invoices, then prints what it found.
pub async fn reconcile(
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    rows: Vec<Row>,
    settings: &Settings,
) -> Result<Summary, Failure> {
    let (answers, config) = gather(
        sandbox,
        config,
        rows,
        settings,
        true,
        |sandbox, config, inputs, usage, meter, listed| async move {
            sandbox
                .reconcile_invoices(&config, inputs, usage, &meter, listed.as_ref())
                .await
        },
        |r: &InvoiceReconciliation| r.checks.iter().filter(|c| c.outcome != "match").count(),
    )
    .await?;
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
    let mut html_rows = String::new();
    for (row, answer) in &answers {
        summary.rows += 1;
        let checks = match answer {
            Ok(r) => &r.checks,
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
        for check in checks {
            summary.cells += 1;
            match check.outcome.as_str() {
                "match" => summary.matched += 1,
                "under" => summary.under += 1,
                _ => summary.over += 1,
            }
            html_rows.push_str(&html_row(row, check));
            match settings.format {
                Format::Json => writeln!(out, "{}", redact(&check_json(row, check).to_string()))
                    .map_err(write_error)?,
                Format::Csv => {
                    let (start, end) =
                        (check.period_start.to_string(), check.period_end.to_string());
                    let [customer, stripe_customer, meter, event] = text_cells(row);
                    csv.write_record([
                        &*customer,
                        &stripe_customer,
                        &meter,
                        &event,
                        &spreadsheet_safe(&check.invoice),
                        &check.status,
                        &start,
                        &end,
                        &check.billed,
                        &check.expected,
                        &check.carried_in,
                        &check.carried_out,
                        &check.outcome,
                    ])
                    .map_err(|e| Failure::Internal(e.to_string()))?;
                }
            }
        }
    }
    let summary_line = json!({ "summary": summary, "invoices": true }).to_string();
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
    if let Some(path) = &settings.html {
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>usage-sync: invoices</title>\
             <table><tr><th>customer<th>Stripe customer<th>invoice<th>status<th>period\
             <th>billed<th>expected<th>carried in<th>carried out<th>outcome</tr>{}</table>\n",
            redact(&html_rows)
        );
        std::fs::write(path, page)
            .map_err(|e| Failure::BadInput(format!("cannot write {}: {e}", path.display())))?;
        tracing::info!("reconcile: wrote {}", path.display());
    }
    Ok(summary)
}

const CSV_HEADER: [&str; 13] = [
    "customerId",
    "stripeCustomer",
    "meterApiName",
    "stripeEventName",
    "invoice",
    "invoiceStatus",
    "periodStart",
    "periodEnd",
    "billed",
    "expected",
    "carriedIn",
    "carriedOut",
    "status",
];

fn check_json(row: &Row, check: &InvoiceCheck) -> Value {
    let mut line = json!({
        "customerId": row.customer_id,
        "stripeCustomer": row.stripe_customer,
        "meterApiName": row.meter_api_name,
        "stripeEventName": row.stripe_event_name,
    });
    line["invoice"] = check.invoice.clone().into();
    line["invoiceStatus"] = check.status.clone().into();
    line["periodStart"] = check.period_start.into();
    line["periodEnd"] = check.period_end.into();
    line["billed"] = check.billed.clone().into();
    line["expected"] = check.expected.clone().into();
    line["carriedIn"] = check.carried_in.clone().into();
    line["carriedOut"] = check.carried_out.clone().into();
    line["status"] = check.outcome.clone().into();
    line
}

fn html_row(row: &Row, check: &InvoiceCheck) -> String {
    let cells = [
        row.customer_id.as_str(),
        &row.stripe_customer,
        &check.invoice,
        &check.status,
        &format!("{} to {}", check.period_start, check.period_end),
        &check.billed,
        &check.expected,
        &check.carried_in,
        &check.carried_out,
        &check.outcome,
    ];
    let mut out = String::from("<tr>");
    for cell in cells {
        out.push_str("<td>");
        out.push_str(&escape(cell));
    }
    out.push_str("</tr>\n");
    out
}
