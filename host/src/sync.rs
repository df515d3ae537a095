//! `usage-sync sync`: the workflow for every row of a mapping file, each row in
//! its own sandboxed instance of one compiled component, many at once.
//!
//! A journal records each row's outcome as it completes; the same command run
//! again skips what is done, and the deterministic identifiers make any overlap
//! harmless.

use crate::bindings::{Inputs, Meter, UsageQuery};
use crate::outcome::{EventJson, ExitStatus, Failure, Outputs};
use crate::sandbox::{RunConfig, Sandbox};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Mutex, Semaphore, mpsc};

/// One validated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line in a CSV file, entry number in a JSON array.
    pub line: usize,
    pub customer_id: String,
    pub stripe_customer: String,
    pub meter_api_name: String,
    pub stripe_event_name: String,
}

/// What makes a row the same row: customer, meter and event name.
type RowKey = (String, String, String);

impl Row {
    fn key(&self) -> RowKey {
        (
            self.customer_id.clone(),
            self.meter_api_name.clone(),
            self.stripe_event_name.clone(),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRow {
    customer_id: Option<String>,
    stripe_customer: Option<String>,
    meter_api_name: Option<String>,
    stripe_event_name: Option<String>,
}

/// Reads and validates the whole mapping; any bad row fails it all, by line.
pub fn read_mapping(
    path: &Path,
    default_meter: Option<&str>,
    default_event: Option<&str>,
) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the mapping {}: {e}", path.display()))?;
    let raw = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let rows: Vec<RawRow> = serde_json::from_str(&text)
            .map_err(|e| format!("the mapping {} is not valid: {e}", path.display()))?;
        rows.into_iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r))
            .collect()
    } else {
        csv_rows(&text)?
    };
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    let mut seen: HashMap<RowKey, usize> = HashMap::new();
    for (line, raw) in raw {
        let field = |name: &str, value: Option<String>, default: Option<&str>| {
            let value = value
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string));
            match value {
                None => Err(format!("line {line}: `{name}` is missing")),
                Some(v) if v.trim() != v || v.chars().any(char::is_control) => Err(format!(
                    "line {line}: `{name}` has spaces at the ends or control characters"
                )),
                Some(v) => Ok(v),
            }
        };
        let row = (|| {
            Ok::<_, String>(Row {
                line,
                customer_id: field("customerId", raw.customer_id, None)?,
                stripe_customer: field("stripeCustomer", raw.stripe_customer, None)?,
                meter_api_name: field("meterApiName", raw.meter_api_name, default_meter)?,
                stripe_event_name: field("stripeEventName", raw.stripe_event_name, default_event)?,
            })
        })();
        match row {
            Err(e) => errors.push(e),
            Ok(row) => match seen.insert(row.key(), line) {
                Some(first) => errors.push(format!(
                    "line {line}: repeats line {first} (same customerId, meterApiName and stripeEventName)"
                )),
                None => rows.push(row),
            },
        }
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push("the mapping has no rows".into());
    }
    if !errors.is_empty() {
        let shown = errors.len().min(10);
        let more = errors.len() - shown;
        let mut message = errors[..shown].join("; ");
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        return Err(format!(
            "the mapping {} has bad rows: {message}",
            path.display()
        ));
    }
    Ok(rows)
}

fn csv_rows(text: &str) -> Result<Vec<(usize, RawRow)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("the mapping's header: {e}"))?
        .clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("the mapping: {e}"))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let row: RawRow = record
            .deserialize(Some(&headers))
            .map_err(|e| format!("line {line}: {e}"))?;
        rows.push((line, row));
    }
    Ok(rows)
}

/// The journal's first line: a journal belongs to one mapping and one window.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Header {
    journal: u32,
    mapping: String,
    start_time: String,
    end_time: String,
}

/// A row's outcome, in the journal and on stdout.
fn report(row: &Row, status: &str, detail: Value) -> Value {
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

/// Opens (or starts) the journal; returns it and the rows it says are done.
/// A journal of another mapping is an error, or with `replace_foreign` started
/// afresh.
fn open_journal(
    path: &Path,
    header: &Header,
    replace_foreign: bool,
) -> Result<(std::fs::File, HashSet<RowKey>), String> {
    let mut done = HashSet::new();
    let fail = |e: std::io::Error| format!("the journal {}: {e}", path.display());
    if let Ok(text) = std::fs::read_to_string(path) {
        let mut lines = text.lines();
        if let Some(first) = lines.next() {
            let found: Header = serde_json::from_str(first)
                .map_err(|_| format!("{} is not a usage-sync journal", path.display()))?;
            if found != *header && replace_foreign {
                eprintln!(
                    "sync: the journal {} belongs to another mapping; starting it afresh",
                    path.display()
                );
                return start_journal(path, header).map(|file| (file, done));
            }
            if found != *header {
                return Err(format!(
                    "the journal {} belongs to another mapping or window; give another --journal",
                    path.display()
                ));
            }
            // A line cut short by a crash is simply not done.
            for entry in lines.filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
                if matches!(
                    entry["status"].as_str(),
                    Some("recorded" | "already-recorded")
                ) {
                    let text = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
                    done.insert((
                        text("customerId"),
                        text("meterApiName"),
                        text("stripeEventName"),
                    ));
                }
            }
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(fail)?;
            return Ok((file, done));
        }
    }
    start_journal(path, header).map(|file| (file, done))
}

fn start_journal(path: &Path, header: &Header) -> Result<std::fs::File, String> {
    let fail = |e: std::io::Error| format!("the journal {}: {e}", path.display());
    let mut file = std::fs::File::create(path).map_err(fail)?;
    writeln!(
        file,
        "{}",
        serde_json::to_string(header).expect("serializes")
    )
    .map_err(fail)?;
    Ok(file)
}

/// How a sync ended.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub recorded: usize,
    pub already_recorded: usize,
    /// Rows where Stripe held another value for some interval (nothing
    /// written for it; the row's other intervals were synced).
    pub drift: usize,
    pub failed: usize,
    /// Done by an earlier run, per the journal.
    pub skipped: usize,
    /// Not started because of Ctrl-C.
    pub not_sent: usize,
    /// The worst exit status among the failed rows.
    #[serde(skip)]
    pub worst: u8,
}

/// Everything `sync` needs besides the rows.
pub struct Plan {
    pub mapping: PathBuf,
    pub journal: PathBuf,
    /// The journal is the default one of this window (not `--journal`): one
    /// left by another mapping is started afresh, since reruns are harmless.
    pub journal_is_default: bool,
    pub start_time: String,
    pub end_time: String,
    pub concurrency: usize,
    /// Customers per Amberflo query; 1 runs the whole workflow per row.
    pub batch: usize,
}

pub async fn sync(
    sandbox: Arc<Sandbox>,
    config: RunConfig,
    rows: Vec<Row>,
    plan: &Plan,
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
    let mut meters: HashMap<String, Arc<Meter>> = HashMap::new();
    for row in &rows {
        if !meters.contains_key(&row.stripe_event_name) {
            let meter = sandbox.find_meter(&config, &row.stripe_event_name).await?;
            meters.insert(row.stripe_event_name.clone(), Arc::new(meter));
        }
    }
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
            report(row, "skipped", json!({ "reason": "done per the journal" }))
        );
    }

    // Listen before the first row starts, and once for the whole sync, so no
    // Ctrl-C kills the process mid-request or falls between two polls.
    let mut interrupt =
        Interrupt::listen().map_err(|e| Failure::Internal(format!("listening for Ctrl-C: {e}")))?;
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
    let mut progress = Progress::new(total);
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = interrupt.recv(), if !stop.load(Ordering::SeqCst) => {
                stop.store(true, Ordering::SeqCst);
                eprintln!("sync: interrupted; rows in flight finish, the rest are not sent");
                continue;
            }
        };
        let Some((row, result)) = next else { break };
        finished += 1;
        let line = match result {
            None => {
                summary.not_sent += 1;
                report(&row, "not-sent", json!({ "reason": "interrupted" }))
            }
            Some(Ok(outputs)) => outcome_line(&row, &outputs, &mut summary),
            Some(Err(failure)) => {
                summary.failed += 1;
                summary.worst = summary.worst.max(failure.exit_code());
                report(&row, "failed", failure.to_json())
            }
        };
        emit(&mut journal, &line)?;
        progress.show(finished, &summary);
    }
    progress.done();
    journal
        .sync_data()
        .map_err(|e| Failure::Internal(format!("writing the journal: {e}")))?;
    Ok(summary)
}

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line
/// every two seconds otherwise (logs, CI).
struct Progress {
    total: usize,
    terminal: bool,
    started: std::time::Instant,
    shown: Option<std::time::Instant>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            total,
            terminal: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            shown: None,
        }
    }

    fn show(&mut self, finished: usize, summary: &Summary) {
        let every = if self.terminal { 0.1 } else { 2.0 };
        let due = self
            .shown
            .is_none_or(|t| t.elapsed().as_secs_f64() >= every);
        if !due && finished != self.total {
            return;
        }
        self.shown = Some(std::time::Instant::now());
        let counts = format!(
            "{} recorded, {} already recorded, {} failed, {} skipped",
            summary.recorded, summary.already_recorded, summary.failed, summary.skipped
        );
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = (finished * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
            let rate = finished as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r\x1b[2Ksync [{}{}] {finished}/{} rows, {rate:.0}/s ({counts})",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                self.total
            );
        } else {
            eprintln!("sync: {finished}/{} rows ({counts})", self.total);
        }
    }

    fn done(&self) {
        if self.terminal && self.shown.is_some() {
            eprintln!();
        }
    }
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
            let mut customer_ids: Vec<String> = Vec::new();
            for Job { row, .. } in &rows {
                if !customer_ids.contains(&row.customer_id) {
                    customer_ids.push(row.customer_id.clone());
                }
            }
            let query = UsageQuery {
                customer_ids,
                meter_api_name: rows[0].row.meter_api_name.clone(),
                start_time: Some(self.start_time.clone()),
                end_time: Some(self.end_time.clone()),
            };
            self.sandbox.query_usage(&self.config, query).await
        };
        let usage: HashMap<String, String> = match usage {
            Ok(usage) => usage
                .into_iter()
                .map(|u| (u.customer_id, u.usage_result))
                .collect(),
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
        let inputs = Inputs {
            customer_id: row.customer_id.clone(),
            meter_api_name: row.meter_api_name.clone(),
            stripe_customer: row.stripe_customer.clone(),
            stripe_event_name: row.stripe_event_name.clone(),
            usage_quantity: None,
            start_time: Some(self.start_time.clone()),
            end_time: Some(self.end_time.clone()),
        };
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

/// Rows cut into batches of at most `size` customers of one meter, in order.
fn batches(rows: Vec<Row>, size: usize) -> Vec<Vec<Row>> {
    if size <= 1 {
        return rows.into_iter().map(|row| vec![row]).collect();
    }
    let mut by_meter: Vec<(String, Vec<Vec<Row>>, HashSet<String>)> = Vec::new();
    for row in rows {
        let at = match by_meter.iter().position(|(m, ..)| *m == row.meter_api_name) {
            Some(at) => at,
            None => {
                by_meter.push((row.meter_api_name.clone(), vec![Vec::new()], HashSet::new()));
                by_meter.len() - 1
            }
        };
        let (_, batches, customers) = &mut by_meter[at];
        if !customers.contains(&row.customer_id) && customers.len() == size {
            batches.push(Vec::new());
            customers.clear();
        }
        customers.insert(row.customer_id.clone());
        batches.last_mut().expect("never empty").push(row);
    }
    by_meter.into_iter().flat_map(|(_, b, _)| b).collect()
}

/// Ctrl-C, registered as soon as it is created.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn listen() -> std::io::Result<Interrupt> {
        Ok(Interrupt {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn outcome_line(row: &Row, outputs: &Outputs, summary: &mut Summary) -> Value {
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
    report(row, status, json!({ "events": events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("usage-sync-mapping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_csv_and_json_with_defaults() {
        let csv = mapping(
            "a.csv",
            "customerId,stripeCustomer,meterApiName\nacme,cus_1,calls\nglobex, cus_2 ,\n",
        );
        let rows = read_mapping(&csv, Some("default-meter"), Some("api_calls")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[1].stripe_customer, "cus_2");
        assert_eq!(rows[1].meter_api_name, "default-meter");
        assert_eq!(rows[1].stripe_event_name, "api_calls");
        let json = mapping(
            "a.json",
            r#"[{"customerId":"acme","stripeCustomer":"cus_1","meterApiName":"m","stripeEventName":"e"}]"#,
        );
        assert_eq!(read_mapping(&json, None, None).unwrap()[0].line, 1);
    }

    #[test]
    fn bad_rows_are_reported_by_line() {
        let csv = mapping(
            "bad.csv",
            "customerId,stripeCustomer\nacme,cus_1\n,cus_2\nacme,cus_3\n",
        );
        let err = read_mapping(&csv, Some("m"), Some("e")).unwrap_err();
        assert!(err.contains("line 3: `customerId` is missing"), "{err}");
        assert!(err.contains("line 4: repeats line 2"), "{err}");
        let csv = mapping("nomet.csv", "customerId,stripeCustomer\nacme,cus_1\n");
        let err = read_mapping(&csv, None, Some("e")).unwrap_err();
        assert!(err.contains("line 2: `meterApiName` is missing"), "{err}");
        let csv = mapping("typo.csv", "customerID,stripeCustomer\nacme,cus_1\n");
        assert!(
            read_mapping(&csv, Some("m"), Some("e"))
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
