//! `sync`'s rows: the workflow for every row of a mapping file, each row in
//! its own sandboxed instance of one compiled component, many at once.
//!
//! A journal records each row's outcome as it completes; the same command run
//! again skips what is done, and the deterministic identifiers make any overlap
//! harmless.

use super::journal::{Header, open_journal};
use crate::bindings::Meter;
use crate::commands::batch::{batches, meters_of, query_batch};
use crate::interrupt::Interrupt;
use crate::mapping::Row;
use crate::outcome::{EventJson, ExitStatus, Failure, Outputs};
use crate::progress::Progress;
use crate::sandbox::{RunConfig, Sandbox};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Mutex, Semaphore, mpsc};

/// A row's outcome, in the journal and on stdout.
fn row_line(row: &Row, status: &str, detail: Value) -> Value {
    let mut line = json!({
        "line": row.line,
        "customerId": row.customer_id,
        "stripeCustomer": row.stripe_customer,
        "meterApiName": row.meter_api_name,
        "stripeEventName": row.stripe_event_name,
        "status": status,
    });
    if let (Value::Object(line), Value::Object(detail)) = (&mut line, detail) {
        line.extend(detail);
    }
    line
}

/// How a sync ended.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Rows whose events were recorded now.
    pub recorded: usize,
    /// Rows Stripe already held in full.
    pub already_recorded: usize,
    /// Rows where Stripe held another value for some interval (nothing
    /// written for it; the row's other intervals were synced).
    pub drift: usize,
    /// Rows that failed (see their lines).
    pub failed: usize,
    /// Done by an earlier run, per the journal.
    pub skipped: usize,
    /// Not started because of Ctrl-C or SIGTERM.
    pub not_sent: usize,
    /// Some row failed or was not sent: the sync is partial, and a rerun
    /// (which the journal resumes) finishes it.
    pub partial: bool,
    /// The worst exit status among the failed rows.
    #[serde(skip)]
    pub worst: u8,
    /// Rows whose query succeeded and measured nothing (for the metrics).
    #[serde(skip)]
    pub zero_usage: usize,
    /// Intervals Stripe held another value for (for the metrics).
    #[serde(skip)]
    pub drift_cells: usize,
}

impl Summary {
    /// What the metrics file says of this sync.
    pub fn tally(&self) -> crate::metrics::Tally {
        crate::metrics::Tally {
            rows: vec![
                ("recorded", self.recorded),
                ("already-recorded", self.already_recorded),
                ("drift", self.drift),
                ("failed", self.failed),
                ("skipped", self.skipped),
                ("not-sent", self.not_sent),
            ],
            zero_usage: self.zero_usage,
            drift_cells: self.drift_cells,
        }
    }

    /// The counts a progress line shows.
    fn counts(&self) -> String {
        format!(
            "{} recorded, {} already recorded, {} failed, {} skipped",
            self.recorded, self.already_recorded, self.failed, self.skipped
        )
    }
}

/// Everything `sync` needs besides the rows.
pub struct Settings {
    /// The mapping file.
    pub mapping: PathBuf,
    /// The journal file.
    pub journal: PathBuf,
    /// The journal is the default one of this window (not `--journal`): one
    /// left by another mapping is started afresh, since reruns are harmless.
    pub journal_is_default: bool,
    /// The window's start, the same for every row.
    pub start_time: String,
    /// The window's end.
    pub end_time: String,
    /// Rows running at once.
    pub concurrency: usize,
    /// Customers per Amberflo query; 1 runs the whole workflow per row.
    pub batch: usize,
}

/// Syncs `rows`: looks up each event name's meter once, queries Amberflo per batch, records each row in its own instance, and journals every outcome.
pub async fn sync(
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    rows: Vec<Row>,
    plan: &Settings,
) -> Result<Summary, Failure> {
    let mapping = std::fs::read(&plan.mapping).map_err(|e| Failure::BadInput(e.to_string()))?;
    let header = Header {
        journal: 1,
        mapping: usage_sync_report::hex(&Sha256::digest(&mapping)),
        start_time: plan.start_time.clone(),
        end_time: plan.end_time.clone(),
    };
    let (mut journal, done) =
        open_journal(&plan.journal, &header, plan.journal_is_default).map_err(Failure::BadInput)?;
    // Each event name's meter, looked up once for the whole sync, before any
    // write: a missing or unusable meter stops the sync with nothing written.
    let meters = meters_of(&sandbox, &config, &rows).await?;
    let mut summary = Summary::default();
    let stdout = std::io::stdout();
    let emit = |journal: &mut std::fs::File, line: &Value| -> Result<(), Failure> {
        let text = config.credentials.redact(&line.to_string());
        // Written at once, synced at the end: a row lost by a power cut is only
        // run again, and its identifier makes that harmless.
        writeln!(journal, "{text}")
            .map_err(|e| Failure::Internal(format!("writing the journal: {e}")))?;
        let _ = writeln!(stdout.lock(), "{text}");
        Ok(())
    };

    let total = rows.len();
    let (todo, skipped): (Vec<Row>, Vec<Row>) =
        rows.into_iter().partition(|r| !done.contains(&r.key()));
    for row in &skipped {
        summary.skipped += 1;
        let _ = writeln!(
            stdout.lock(),
            "{}",
            row_line(row, "skipped", json!({ "reason": "done per the journal" }))
        );
    }

    // Listen before the first row starts, and once for the whole sync, so no
    // Ctrl-C or SIGTERM kills the process mid-request or falls between two polls.
    let mut interrupt = Interrupt::listen()
        .map_err(|e| Failure::Internal(format!("listening for Ctrl-C and SIGTERM: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    // Stripe allows one call at a time per customer and meter.
    let mut locks: HashMap<(String, String), Arc<Mutex<()>>> = HashMap::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        sandbox,
        config: config.clone(),
        permits: Semaphore::new(plan.concurrency.max(1)),
        stop: stop.clone(),
        tx,
        start_time: plan.start_time.clone(),
        end_time: plan.end_time.clone(),
    });
    for batch in batches(todo, plan.batch) {
        let batch: Vec<Job> = batch
            .into_iter()
            .map(|row| {
                let lock = locks
                    .entry((row.stripe_customer.clone(), row.stripe_event_name.clone()))
                    .or_default()
                    .clone();
                let meter = meters[&row.stripe_event_name].clone();
                Job { row, lock, meter }
            })
            .collect();
        let shared = shared.clone();
        if plan.batch <= 1 {
            tokio::spawn(async move {
                for job in batch {
                    shared.row(job, None).await;
                }
            });
        } else {
            tokio::spawn(async move { shared.batch(batch).await });
        }
    }
    drop(shared);

    let mut finished = summary.skipped;
    let mut progress = Progress::new("sync", total);
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = interrupt.recv(), if !stop.load(Ordering::SeqCst) => {
                stop.store(true, Ordering::SeqCst);
                tracing::info!("sync: interrupted; rows in flight finish, the rest are not sent");
                continue;
            }
        };
        let Some((row, result)) = next else { break };
        finished += 1;
        let line = match result {
            None => {
                summary.not_sent += 1;
                row_line(&row, "not-sent", json!({ "reason": "interrupted" }))
            }
            Some(Ok(outputs)) => outcome_line(&row, &outputs, &mut summary),
            Some(Err(failure)) => {
                summary.failed += 1;
                summary.worst = summary.worst.max(failure.exit_code());
                row_line(&row, "failed", failure.to_json())
            }
        };
        emit(&mut journal, &line)?;
        progress.show(finished, || summary.counts());
    }
    progress.done();
    journal
        .sync_data()
        .map_err(|e| Failure::Internal(format!("writing the journal: {e}")))?;
    Ok(summary)
}

/// One row to sync, with what it shares with others: Stripe's one call at a
/// time per customer and meter, and the meter.
struct Job {
    row: Row,
    lock: Arc<Mutex<()>>,
    meter: Arc<Meter>,
}

/// What every row's task needs.
struct Shared {
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    permits: Semaphore,
    stop: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<(Row, Option<Result<Outputs, Failure>>)>,
    start_time: String,
    end_time: String,
}

impl Shared {
    /// One Amberflo query for the batch's customers, then each row's step 2 in
    /// its own instance. A failed query fails its rows: nothing was sent.
    async fn batch(self: Arc<Self>, rows: Vec<Job>) {
        let usage = {
            let _permit = self.permits.acquire().await;
            if self.stop.load(Ordering::SeqCst) {
                for job in rows {
                    let _ = self.tx.send((job.row, None));
                }
                return;
            }
            let batch: Vec<&Row> = rows.iter().map(|job| &job.row).collect();
            query_batch(
                &self.sandbox,
                &self.config,
                &batch,
                &self.start_time,
                &self.end_time,
            )
            .await
        };
        let usage = match usage {
            Ok(usage) => usage,
            Err(failure) => {
                for job in rows {
                    let _ = self.tx.send((job.row, Some(Err(failure.clone()))));
                }
                return;
            }
        };
        for job in rows {
            let this = self.clone();
            let usage = usage.get(&job.row.customer_id).cloned();
            tokio::spawn(async move { this.row(job, usage).await });
        }
    }

    /// One row in its own instance: the whole workflow, or step 2 with `usage`.
    async fn row(&self, job: Job, usage: Option<String>) {
        let Job { row, lock, meter } = job;
        let _permit = self.permits.acquire().await;
        let _one_at_a_time = lock.lock().await;
        if self.stop.load(Ordering::SeqCst) {
            let _ = self.tx.send((row, None));
            return;
        }
        let inputs = row.inputs(self.start_time.clone(), self.end_time.clone());
        let result = match usage {
            Some(usage) => {
                self.sandbox
                    .record_usage(&self.config, inputs, usage, &meter)
                    .await
            }
            None => {
                self.sandbox
                    .run_with_meter(&self.config, inputs, &meter)
                    .await
            }
        };
        let _ = self.tx.send((row, Some(result)));
    }
}

fn outcome_line(row: &Row, outputs: &Outputs, summary: &mut Summary) -> Value {
    summary.zero_usage += usize::from(outputs.measured_total == "0");
    summary.drift_cells += outputs.drifted().count();
    let already = !outputs.events.is_empty() && outputs.events.iter().all(|e| e.already_recorded);
    let status = if outputs.drifted().next().is_some() {
        summary.drift += 1;
        "drift"
    } else if already {
        summary.already_recorded += 1;
        "already-recorded"
    } else {
        summary.recorded += 1;
        "recorded"
    };
    let events: Vec<EventJson> = outputs.events.iter().map(EventJson::from).collect();
    row_line(row, status, json!({ "events": events }))
}
