//! `sync`'s rows: the workflow for every row of a mapping file, each row in
//! its own sandboxed instance of one compiled component, many at once.
//!
//! A journal records each row's outcome as it completes; the same command run
//! again skips what is done, and the deterministic identifiers make any overlap
//! harmless.

use super::journal::{Header, open_journal};
use crate::bindings::{CustomerUsage, Inputs, Meter, Source};
use crate::commands::batch::{batches_of, meters_for, no_usage, query_batch};
use crate::commands::ledger::{Bounds, LedgerState};
use crate::commands::listing::Listings;
use crate::egress::Concurrency;
use crate::interrupt::Interrupt;
use crate::mapping::{Row, key_digest};
use crate::outcome::{ExitStatus, Failure, Outputs, event_json};
use crate::progress::Progress;
use crate::sandbox::{RunConfig, Sandbox};
use crate::state::SourceKey;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};

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
#[derive(Debug, Default, Clone, Serialize)]
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
    /// Rows with usage of a period whose invoice is final: not written.
    pub unbilled: usize,
    /// Unbilled and unsubscribed units, for the metrics.
    #[serde(skip)]
    pub units: crate::metrics::Tally,
}

impl Summary {
    /// What the metrics file says of this sync.
    pub fn tally(&self) -> crate::metrics::Tally {
        crate::metrics::Tally {
            rows: vec![
                ("recorded", self.recorded),
                ("already-recorded", self.already_recorded),
                ("drift", self.drift),
                ("unbilled", self.unbilled),
                ("failed", self.failed),
                ("skipped", self.skipped),
                ("not-sent", self.not_sent),
            ],
            zero_usage: self.zero_usage,
            drift_cells: self.drift_cells,
            unbilled_units: self.units.unbilled_units,
            unsubscribed_units: self.units.unsubscribed_units,
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
    /// Rows running at once: the adaptive limit, up to its ceiling.
    pub concurrency: Arc<Concurrency>,
    /// Customers per Amberflo query; 1 runs the whole workflow per row.
    pub batch: usize,
}

/// A mapping's rows, read a part at a time: each part holds whole Stripe
/// customers (so whole ledgers), and only one part is held at once, with what
/// the state directory knows of it.
pub struct Parts<'a> {
    /// How many parts.
    pub count: usize,
    /// The rows of all parts.
    pub total: usize,
    /// Every Stripe event name among the rows: each meter is looked up before
    /// anything is written.
    pub events: Vec<String>,
    /// Part `p`'s rows, in mapping order.
    pub read: Box<dyn FnMut(usize) -> Result<Vec<Row>, Failure> + Send + 'a>,
}

/// What every part of a sync shares: the journal, the meters, the counts.
struct Run<'a> {
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    plan: &'a Settings,
    state: Arc<LedgerState>,
    meters: HashMap<String, Arc<Meter>>,
    listed: Arc<Listings>,
    journal: std::fs::File,
    done: std::collections::HashSet<u128>,
    summary: Summary,
    interrupt: Interrupt,
    stop: Arc<AtomicBool>,
    progress: Progress,
    finished: usize,
}

/// Syncs the rows, a part at a time: looks up each event name's meter once,
/// queries Amberflo per batch, records each ledger in its own instance, and
/// journals every outcome.
pub async fn sync(
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    mut parts: Parts<'_>,
    plan: &Settings,
    state: Arc<LedgerState>,
) -> Result<Summary, Failure> {
    // The mapping's digest, streamed: it may be large.
    let mut digest = Sha256::new();
    std::fs::File::open(&plan.mapping)
        .and_then(|mut file| std::io::copy(&mut file, &mut digest))
        .map_err(|e| Failure::BadInput(e.to_string()))?;
    let header = Header {
        journal: 1,
        mapping: usage_sync_report::hex(&digest.finalize()),
        start_time: plan.start_time.clone(),
        end_time: plan.end_time.clone(),
    };
    let (journal, done) =
        open_journal(&plan.journal, &header, plan.journal_is_default).map_err(Failure::BadInput)?;
    // Each event name's meter, looked up once for the whole sync, before any
    // write: a missing or unusable meter stops the sync with nothing written.
    let meters = meters_for(&sandbox, &config, parts.events.iter().map(String::as_str)).await?;
    // The account's subscriptions and recent invoices, listed once for every
    // row, while the first Amberflo queries go out.
    let listed = Listings::start(sandbox.clone(), config.clone(), meters.clone(), parts.total);
    // Listen before the first row starts, and once for the whole sync, so no
    // Ctrl-C or SIGTERM kills the process mid-request or falls between two polls.
    let interrupt = Interrupt::listen()
        .map_err(|e| Failure::Internal(format!("listening for Ctrl-C and SIGTERM: {e}")))?;
    let mut run = Run {
        sandbox,
        config,
        plan,
        state,
        meters,
        listed,
        journal,
        done,
        summary: Summary::default(),
        interrupt,
        stop: Arc::new(AtomicBool::new(false)),
        progress: Progress::new("sync", parts.total),
        finished: 0,
    };
    for part in 0..parts.count {
        let rows = (parts.read)(part)?;
        run.part(rows).await?;
    }
    run.progress.done();
    run.state.prune()?;
    run.journal
        .sync_data()
        .map_err(|e| Failure::Internal(format!("writing the journal: {e}")))?;
    Ok(run.summary)
}

impl Run<'_> {
    /// A row's outcome: to the journal (written at once, synced at the end: a
    /// row lost by a power cut is only run again, and its identifier makes
    /// that harmless) and to stdout. One `write` a line, newline included:
    /// `writeln!` on a file makes two, and a kill between them tears the line.
    fn emit(&mut self, line: &Value) -> Result<(), Failure> {
        let mut text = self.config.credentials.redact(&line.to_string());
        text.push('\n');
        self.journal
            .write_all(text.as_bytes())
            .map_err(|e| Failure::Internal(format!("writing the journal: {e}")))?;
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        Ok(())
    }

    /// One part's rows: its state read, its ledgers run, its state saved.
    async fn part(&mut self, rows: Vec<Row>) -> Result<(), Failure> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.stop.load(Ordering::SeqCst) {
            for row in &rows {
                self.summary.not_sent += 1;
                self.finished += 1;
                self.emit(&row_line(
                    row,
                    "not-sent",
                    json!({ "reason": "interrupted" }),
                ))?;
            }
            return Ok(());
        }
        let state = self.state.clone();
        state.load(&rows)?;
        // Every source's place, before anything is sent: a source mapped to
        // another Stripe customer than it was billed to stops the sync here.
        let bounds = state.place(&rows)?;
        // A ledger is synced whole: skipped only when the journal has every
        // one of its rows as done.
        let open: std::collections::HashSet<(&str, &str)> = rows
            .iter()
            .filter(|r| !self.done.contains(&key_digest(r)))
            .map(|r| (r.stripe_customer.as_str(), r.stripe_event_name.as_str()))
            .collect();
        let todo_mask: Vec<bool> = rows
            .iter()
            .map(|r| open.contains(&(r.stripe_customer.as_str(), r.stripe_event_name.as_str())))
            .collect();
        drop(open);
        let mut todo: Vec<(Row, Bounds)> = Vec::with_capacity(rows.len());
        let mut skipped: Vec<Row> = Vec::new();
        for ((row, bounds), todo_row) in rows.into_iter().zip(bounds).zip(todo_mask) {
            match todo_row {
                true => todo.push((row, bounds)),
                false => skipped.push(row),
            }
        }
        // One ledger's rows next to each other (in mapping order): grouping
        // stays linear in the rows, whatever their number.
        todo.sort_unstable_by(|(a, _), (b, _)| {
            (
                a.stripe_customer.as_str(),
                a.stripe_event_name.as_str(),
                a.line,
            )
                .cmp(&(
                    b.stripe_customer.as_str(),
                    b.stripe_event_name.as_str(),
                    b.line,
                ))
        });
        for row in &skipped {
            self.summary.skipped += 1;
            self.finished += 1;
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                row_line(row, "skipped", json!({ "reason": "done per the journal" }))
            );
        }
        drop(skipped);

        let plan = self.plan;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            sandbox: self.sandbox.clone(),
            config: self.config.clone(),
            permits: plan.concurrency.clone(),
            batches: Arc::new(Semaphore::new(
                query_places(plan.concurrency.ceiling(), plan.batch).max(1),
            )),
            stop: self.stop.clone(),
            tx,
            start_time: plan.start_time.clone(),
            end_time: plan.end_time.clone(),
            state: state.clone(),
            listed: self.listed.clone(),
        });
        // Rows sharing a Stripe customer and event are one ledger. A ledger of
        // one plain source goes the batched way; any other runs on its own.
        let mut ledgers: Vec<Vec<(Row, Bounds)>> = Vec::new();
        for (row, bounds) in todo {
            match ledgers.last_mut() {
                Some(ledger)
                    if ledger[0].0.stripe_customer == row.stripe_customer
                        && ledger[0].0.stripe_event_name == row.stripe_event_name =>
                {
                    ledger.push((row, bounds))
                }
                _ => ledgers.push(vec![(row, bounds)]),
            }
        }
        let mut plain = Vec::new();
        for sources in ledgers {
            let first = &sources[0].0;
            let departed = state.departed(
                &first.stripe_customer,
                &first.stripe_event_name,
                sources.iter().map(|(r, _)| r),
            );
            let meter = self.meters[&first.stripe_event_name].clone();
            // Stripe allows one call at a time per customer and meter: one job
            // per ledger, and its lock.
            let job = Job {
                sources,
                departed,
                lock: Arc::default(),
                meter,
            };
            if job.is_plain() {
                plain.push(job);
            } else {
                let shared = shared.clone();
                tokio::spawn(async move { shared.ledger(job).await });
            }
        }
        plain.sort_unstable_by_key(|j: &Job| j.sources[0].0.line);
        for batch in batches_of(plain, plan.batch, |j| &j.sources[0].0) {
            let shared = shared.clone();
            if plan.batch <= 1 {
                tokio::spawn(async move {
                    for job in batch {
                        shared.row(job, None, None).await;
                    }
                });
            } else {
                tokio::spawn(async move { shared.batch(batch).await });
            }
        }
        drop(shared);

        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = self.interrupt.recv(), if !self.stop.load(Ordering::SeqCst) => {
                    self.stop.store(true, Ordering::SeqCst);
                    tracing::info!("sync: interrupted; rows in flight finish, the rest are not sent");
                    continue;
                }
            };
            let Some((rows, result)) = next else { break };
            for row in &rows {
                self.finished += 1;
                let line = match &result {
                    None => {
                        self.summary.not_sent += 1;
                        row_line(row, "not-sent", json!({ "reason": "interrupted" }))
                    }
                    Some(Ok(outputs)) => outcome_line(row, outputs, &mut self.summary),
                    Some(Err(failure)) => {
                        self.summary.failed += 1;
                        self.summary.worst = self.summary.worst.max(failure.exit_code());
                        row_line(row, "failed", failure.to_json())
                    }
                };
                self.emit(&line)?;
            }
            let summary = &self.summary;
            self.progress.show(self.finished, || summary.counts());
        }
        state.save()
    }
}

/// Batched Amberflo queries at once, with their answers waiting for their
/// rows: enough answers ahead to keep every row slot busy, no more. A query
/// takes an instance of its own, beside the rows' (`--amberflo-batch 1`
/// makes none).
pub(crate) fn query_places(ceiling: usize, batch: usize) -> usize {
    match batch {
        0 | 1 => 0,
        batch => ceiling / batch + 2,
    }
}

/// `row` as a source of its ledger, with its usage from the batch query and
/// the instants it is billed from and until here (Unix seconds).
fn source(row: &Row, usage: CustomerUsage, from: Option<i64>, until: Option<i64>) -> Source {
    Source {
        customer_id: row.customer_id.clone(),
        meter_api_name: row.meter_api_name.clone(),
        usage_result: usage.usage_result,
        points: usage.points,
        billed_from: from,
        billed_until: until,
    }
}

/// One ledger to sync (a Stripe customer and meter): its rows with their
/// bounds, the sources that have moved away from it, and what it shares with
/// other ledgers: Stripe's one call at a time per customer and meter, and the
/// meter.
struct Job {
    sources: Vec<(Row, Bounds)>,
    departed: Vec<(SourceKey, i64)>,
    lock: Arc<Mutex<()>>,
    meter: Arc<Meter>,
}

impl Job {
    /// One source, billed here whole: the batched way serves it.
    fn is_plain(&self) -> bool {
        matches!(self.sources.as_slice(), [(_, b)] if b.from.is_none()) && self.departed.is_empty()
    }

    fn rows(&self) -> Vec<Row> {
        self.sources.iter().map(|(r, _)| r.clone()).collect()
    }
}

/// A ledger's answer: its rows, then the outputs (none: interrupted).
type Answer = (Vec<Row>, Option<Result<Outputs, Failure>>);

/// What every row's task needs.
struct Shared {
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    /// Rows (and a several-source ledger's queries) at once: adapts to how
    /// the providers answer. Batched queries are bounded by `batches` instead.
    permits: Arc<Concurrency>,
    /// Batches whose answer is held until all their rows have started:
    /// without a bound, every batch would query Amberflo before the first row
    /// ran and hold every customer's answer at once (7 KB a row, measured).
    batches: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Answer>,
    start_time: String,
    end_time: String,
    state: Arc<LedgerState>,
    /// The sync's listing of the account's subscriptions.
    listed: Arc<Listings>,
}

impl Shared {
    /// One Amberflo query for the batch's customers, then each ledger's step 2
    /// in its own instance. A failed query fails its rows: nothing was sent.
    /// The query waits for a batch's place, not behind the rows for a row's:
    /// queued behind the rows, the next batch's answer came only once they
    /// had all started, and the row slots idled while it was fetched.
    async fn batch(self: Arc<Self>, jobs: Vec<Job>) {
        // The places are never closed; were they, the rows would be answered
        // as not run, as on a stop, rather than never answered.
        let place = self
            .batches
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(Arc::new);
        let usage = {
            if self.stop.load(Ordering::SeqCst) || place.is_none() {
                for job in jobs {
                    let _ = self.tx.send((job.rows(), None));
                }
                return;
            }
            let batch: Vec<&Row> = jobs.iter().map(|job| &job.sources[0].0).collect();
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
                for job in jobs {
                    let _ = self.tx.send((job.rows(), Some(Err(failure.clone()))));
                }
                return;
            }
        };
        // The batch's place is freed once all its rows have started.
        for job in jobs {
            let this = self.clone();
            // Two rows of one customer (to two ledgers) share its answer.
            let usage = usage.get(&job.sources[0].0.customer_id).cloned();
            let place = place.clone();
            tokio::spawn(async move { this.row(job, usage, place).await });
        }
    }

    /// A ledger of several sources (or moved ones): one Amberflo query per
    /// Amberflo meter among them, then step 2 with every source.
    async fn ledger(self: Arc<Self>, job: Job) {
        let (customer, event) = (
            job.sources[0].0.stripe_customer.clone(),
            job.sources[0].0.stripe_event_name.clone(),
        );
        let departed: Vec<Row> = job
            .departed
            .iter()
            .map(|(key, _)| Row {
                line: 0,
                customer_id: key.customer_id.clone(),
                stripe_customer: customer.clone(),
                meter_api_name: key.meter_api_name.clone(),
                stripe_event_name: event.clone(),
            })
            .collect();
        let usage = {
            let _permit = self.permits.acquire().await;
            if self.stop.load(Ordering::SeqCst) {
                let _ = self.tx.send((job.rows(), None));
                return;
            }
            let all: Vec<&Row> = job
                .sources
                .iter()
                .map(|(r, _)| r)
                .chain(&departed)
                .collect();
            let mut usage: HashMap<(String, String), CustomerUsage> = HashMap::new();
            let mut meters: Vec<&str> = all.iter().map(|r| r.meter_api_name.as_str()).collect();
            meters.sort_unstable();
            meters.dedup();
            let mut failed = None;
            for meter in meters {
                let rows: Vec<&Row> = all
                    .iter()
                    .copied()
                    .filter(|r| r.meter_api_name == meter)
                    .collect();
                match query_batch(
                    &self.sandbox,
                    &self.config,
                    &rows,
                    &self.start_time,
                    &self.end_time,
                )
                .await
                {
                    Ok(answers) => usage.extend(
                        answers
                            .into_iter()
                            .map(|(customer, u)| ((customer, meter.to_string()), u)),
                    ),
                    Err(failure) => {
                        failed = Some(failure);
                        break;
                    }
                }
            }
            match failed {
                Some(failure) => {
                    let _ = self.tx.send((job.rows(), Some(Err(failure))));
                    return;
                }
                None => usage,
            }
        };
        let usage_of = |r: &Row| {
            usage
                .get(&(r.customer_id.clone(), r.meter_api_name.clone()))
                .cloned()
                .unwrap_or_else(|| no_usage(&r.customer_id))
        };
        let mut sources: Vec<Source> = job
            .sources
            .iter()
            .map(|(r, b)| {
                source(
                    r,
                    usage_of(r),
                    b.from.as_ref().map(|(_, until)| *until),
                    None,
                )
            })
            .collect();
        sources.extend(
            departed
                .iter()
                .zip(&job.departed)
                .map(|(r, (_, until))| source(r, usage_of(r), None, Some(*until))),
        );
        self.record(job, Some(sources), None).await;
    }

    /// One plain ledger in its own instance: the whole workflow, or step 2
    /// with `usage`.
    async fn row(
        &self,
        job: Job,
        usage: Option<CustomerUsage>,
        place: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        match usage {
            Some(usage) => {
                let source = source(&job.sources[0].0, usage, None, None);
                self.record(job, Some(vec![source]), place).await
            }
            None => self.record(job, None, place).await,
        }
    }

    /// The inputs of a ledger: its Stripe customer and event, its first source.
    fn inputs(&self, row: &Row) -> Inputs {
        row.inputs(self.start_time.clone(), self.end_time.clone())
    }

    /// Step 2 for a ledger with its sources' usage (`None`: the whole
    /// workflow, for a plain ledger with no batched query), one call at a time
    /// per customer and meter; then its writes and sources are remembered.
    async fn record(
        &self,
        job: Job,
        sources: Option<Vec<Source>>,
        place: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        let _permit = self.permits.acquire().await;
        // Started: the next batch may fetch its answer.
        drop(place);
        let lock = Arc::clone(&job.lock);
        let _one_at_a_time = lock.lock().await;
        let row = &job.sources[0].0;
        // The listing may still be read: a row starts once it is, and an
        // interrupt while it waits stops it like a row not yet started.
        let listed = self.listed.of(&row.stripe_customer).await;
        let listed = listed.as_ref();
        if self.stop.load(Ordering::SeqCst) {
            let _ = self.tx.send((job.rows(), None));
            return;
        }
        let recent = self.state.marks(&row.stripe_customer, Some(&job.meter.id));
        let inputs = self.inputs(row);
        let (config, meter) = (&self.config, &job.meter);
        let result = self
            .sandbox
            .record_usage(config, inputs, sources, Some(meter), &recent, listed)
            .await;
        let result = result.and_then(|outputs| {
            self.state
                .record(&job.sources, &job.meter.id, &outputs, outputs.window_end)?;
            Ok(outputs)
        });
        let _ = self.tx.send((job.rows(), Some(result)));
    }
}

fn outcome_line(row: &Row, outputs: &Outputs, summary: &mut Summary) -> Value {
    summary.zero_usage += usize::from(outputs.measured_total == "0");
    summary.drift_cells += outputs.drifted().count();
    let already = !outputs.events.is_empty() && outputs.events.iter().all(|e| e.already_recorded);
    summary.units.add_unbilled(outputs);
    let status = if outputs.drifted().next().is_some() {
        summary.drift += 1;
        "drift"
    } else if outputs.closed().next().is_some() {
        summary.unbilled += 1;
        "unbilled"
    } else if already {
        summary.already_recorded += 1;
        "already-recorded"
    } else {
        summary.recorded += 1;
        "recorded"
    };
    let events: Vec<_> = outputs.events.iter().map(event_json).collect();
    match outputs.sources.len() > 1 {
        // The ledger's sources, when several feed it.
        true => row_line(
            row,
            status,
            json!({ "sources": outputs.sources, "events": events }),
        ),
        false => row_line(row, status, json!({ "events": events })),
    }
}
