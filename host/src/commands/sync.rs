//! `usage-sync sync`: the workflow for every row of a mapping file, many rows
//! at once, resumably. Here the flags and their checks; [`rows`] runs the
//! rows, [`journal`] remembers which are done.

pub(crate) mod journal;
pub(crate) mod rows;

use super::flags::{EndpointArgs, FanOutArgs, PaceArgs, SandboxArgs, WindowArgs, WorkflowArgs};
use crate::inputs;
use crate::metrics::Tally;
use crate::outcome::{Failure, exit, print_failure};
use crate::secrets::Credentials;
use crate::state::warm_start;
use clap::Args;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
#[command(
    mut_arg("start_time", |a| a.help("Window start for every row (default: the previous UTC day, fixed when the sync starts)")),
    mut_arg("end_time", |a| a.help("Window end for every row")),
)]
pub(crate) struct SyncArgs {
    /// Rows to sync: CSV with a header, or a JSON array of objects; fields customerId,
    /// stripeCustomer, and optionally meterApiName and stripeEventName.
    #[arg(long, value_name = "FILE")]
    pub(crate) mapping: PathBuf,
    /// meterApiName of rows that give none.
    #[arg(long)]
    pub(crate) meter_api_name: Option<String>,
    /// stripeEventName of rows that give none.
    #[arg(long)]
    pub(crate) stripe_event_name: Option<String>,
    #[command(flatten)]
    pub(crate) window: WindowArgs,
    #[command(flatten)]
    pub(crate) fan_out: FanOutArgs,
    /// Take only shard K of N of the mapping's rows (a stable hash of customer,
    /// meter and event name), for N machines or an Indexed Job [default:
    /// JOB_COMPLETION_INDEX of USAGE_SYNC_SHARDS, when both are set]. Each shard
    /// paces Stripe at --stripe-rate / N (and --stripe-meter-event-rate / N):
    /// Stripe's limits are per account.
    #[arg(long, value_name = "K/N")]
    pub(crate) shard: Option<String>,
    #[command(flatten)]
    pub(crate) pace: PaceArgs,
    /// Journal of row outcomes, for resuming [default: one per mapping and window
    /// in the state directory, STATE_DIR/journals/MAPPING.DIGEST.START-END.jsonl].
    #[arg(long, value_name = "FILE")]
    pub(crate) journal: Option<PathBuf>,
    /// Write metrics for node_exporter's textfile collector here, atomically
    /// (last success kept across failed runs).
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) workflow: WorkflowArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

/// Rows at once when a sync starts (the fixed default of earlier releases):
/// the adaptive limit grows from here, up to `--concurrency`.
const INITIAL_CONCURRENCY: usize = 16;

/// What `close-periods` narrows a sync to: the ledgers whose billing period
/// ended within `lookback` seconds, from that day's start to the last full hour.
pub(crate) struct Closing {
    /// How far back a period end is looked for.
    pub lookback: i64,
}

impl SyncArgs {
    /// The shard this run takes: `--shard`, else the Indexed Job's.
    fn shard(&self) -> Result<Option<crate::mapping::Shard>, String> {
        match &self.shard {
            Some(text) => crate::mapping::Shard::parse(text).map(Some),
            None => crate::mapping::Shard::from_env(),
        }
    }

    /// The shard this run takes, as `K/N`, when it is one (for the metrics).
    pub(crate) fn shard_name(&self) -> Option<String> {
        let shard = self.shard().ok().flatten()?;
        Some(format!("{}/{}", shard.index, shard.count))
    }

    /// Syncs every row; the exit status and what the metrics file says.
    pub(crate) async fn execute(self) -> (u8, Tally) {
        self.execute_closing(None).await
    }

    /// [`Self::execute`], narrowed by `closing` when given.
    pub(crate) async fn execute_closing(self, closing: Option<Closing>) -> (u8, Tally) {
        let credentials = match super::credentials(&self.endpoints) {
            Ok(c) => c,
            Err(code) => return (code, Tally::default()),
        };
        match self.prepare_and_sync(credentials.clone(), closing).await {
            Ok(mut summary) => {
                summary.partial = summary.failed > 0 || summary.not_sent > 0;
                tracing::info!(
                    "sync: {} recorded, {} already recorded, {} drift, {} unbilled, {} failed, {} skipped, {} not sent",
                    summary.recorded,
                    summary.already_recorded,
                    summary.drift,
                    summary.unbilled,
                    summary.failed,
                    summary.skipped,
                    summary.not_sent
                );
                println!("{}", serde_json::json!({ "summary": summary }));
                // A failure is retried later; drift waits for a person.
                let code = if summary.failed > 0 {
                    summary.worst
                } else if summary.not_sent > 0 {
                    exit::INTERRUPTED
                } else if summary.drift > 0 || summary.unbilled > 0 {
                    exit::DRIFT
                } else {
                    exit::OK
                };
                (code, summary.tally())
            }
            Err(failure) => (
                print_failure(&failure, Some(&credentials)),
                Tally::default(),
            ),
        }
    }

    /// The checks, the rows, the window, the journal and the sandbox; then
    /// the rows, synced.
    async fn prepare_and_sync(
        &self,
        credentials: Arc<Credentials>,
        closing: Option<Closing>,
    ) -> Result<rows::Summary, Failure> {
        if self.workflow.dry_run || self.workflow.reconcile {
            return Err(Failure::BadInput(
                "--dry-run and --reconcile are for `run`".into(),
            ));
        }
        self.pace.check()?;
        self.fan_out.check()?;
        let shard = self.shard().map_err(Failure::BadInput)?;
        // Stripe's limits are per account: the shards share the rates.
        let shares = shard.map_or(1.0, |s| s.count as f64);
        let state = super::ledger::LedgerState::open(
            self.workflow.state_dir.clone(),
            self.workflow.move_customers,
        )?;
        // One window for every row, even when the sync runs past midnight.
        let (start_time, end_time, closing_now) = match &closing {
            None => {
                let (start, end) = self
                    .window
                    .bounds(inputs::previous_utc_day, "the previous full UTC day")?;
                (start, end, None)
            }
            Some(closing) => {
                if self.window.start_time.is_some() || self.window.end_time.is_some() {
                    return Err(Failure::BadInput(
                        "close-periods picks its own window (from --lookback); give no --start-time or --end-time".into(),
                    ));
                }
                if self.workflow.true_up {
                    return Err(Failure::BadInput(
                        "close-periods records the last piece of a period; --true-up is for `sync`"
                            .into(),
                    ));
                }
                let end = super::ledger::now().div_euclid(3600) * 3600;
                let from = end - closing.lookback;
                let closing_now: HashSet<(String, String)> =
                    state.ending_within(from, end)?.into_iter().collect();
                (
                    (from.div_euclid(86_400) * 86_400).to_string(),
                    end.to_string(),
                    Some((from, closing_now)),
                )
            }
        };
        // A shard holds only its own rows; close-periods only the ledgers
        // whose period ended.
        let keep = |row: &crate::mapping::Row| {
            shard.is_none_or(|s| s.holds(row))
                && closing_now.as_ref().is_none_or(|(_, ledgers)| {
                    ledgers.contains(&(row.stripe_customer.clone(), row.stripe_event_name.clone()))
                })
        };
        // The whole mapping checked once, streamed: its rows, its event names,
        // and every move, before anything is sent.
        let (mut total, mut events) = (0usize, BTreeSet::new());
        state.check_moves(|each| {
            crate::mapping::read_mapping_kept(
                &self.mapping,
                self.meter_api_name.as_deref(),
                self.stripe_event_name.as_deref(),
                |row| {
                    if keep(row) {
                        total += 1;
                        if !events.contains(&row.stripe_event_name) {
                            events.insert(row.stripe_event_name.clone());
                        }
                        each(row);
                    }
                    false
                },
            )
            .map(drop)
            .map_err(Failure::BadInput)
        })?;
        if let Some((from, _)) = &closing_now {
            tracing::info!("close-periods: {total} row(s) whose billing period ended since {from}");
        }
        // Then synced a part at a time, each part whole Stripe customers.
        let count = total.div_ceil(rows_per_part()).max(1) as u64;
        let part_of = move |row: &crate::mapping::Row| {
            let digest = crate::mapping::digest(&[&row.stripe_customer]);
            u64::from_be_bytes(digest[..8].try_into().unwrap_or_default()) % count
        };
        let parts = rows::Parts {
            count: count as usize,
            total,
            events: events.into_iter().collect(),
            read: Box::new(move |part| {
                crate::mapping::read_mapping_part(
                    &self.mapping,
                    self.meter_api_name.as_deref(),
                    self.stripe_event_name.as_deref(),
                    |row| keep(row) && part_of(row) == part as u64,
                )
                .map_err(Failure::BadInput)
            }),
        };
        let concurrency = self.fan_out.concurrency;
        let batch = crate::commands::batch::fitting(
            self.fan_out.amberflo_batch,
            &start_time,
            &end_time,
            match self.workflow.settings.interval {
                usage_sync_report::Interval::Hour => 3600,
                _ => 86_400,
            },
        );
        let (sandbox, config) = super::prepare(
            &self.endpoints,
            &self.sandbox,
            || {
                let mut options = self.workflow.options()?;
                // A window ending at the last full hour: one event per day's
                // part, cut where the period ended.
                if closing.is_some() && options.interval == crate::bindings::Interval::Day {
                    options.interval = crate::bindings::Interval::Window;
                }
                Ok(options)
            },
            credentials,
            // An instance for every row at once, and one for every batched query.
            Some(concurrency + rows::query_places(concurrency, batch)),
            crate::WORKFLOW_COMPONENT,
        )?;
        // Rows at once start from what the last sync against this Stripe
        // learned (else the default) and adapt up to the ceiling: grow while
        // latency holds, halve on a push-back.
        let stripe_url = config.endpoints.stripe_url.clone();
        let learned = warm_start::read(state.dir(), &stripe_url, super::ledger::now());
        let limit = Arc::new(crate::egress::Concurrency::new(
            warm_start::initial(learned, INITIAL_CONCURRENCY, concurrency),
            concurrency,
        ));
        let pace = self
            .pace
            .pace(config.credentials.stripe_mode(), shares, "sync");
        let config = config.paced(Arc::new(pace)).adapting(limit.clone());
        // One journal per window by default, so the same command runs every night
        // and a rerun of any night resumes that night.
        // A true-up compares with what Amberflo says today: its journal resumes
        // the same day's run, and tomorrow's checks every row again.
        let true_up_day = match (self.workflow.true_up, &closing) {
            (true, _) => {
                let (_, today) = inputs::previous_utc_day().map_err(Failure::Internal)?;
                format!("true-up.{today}.")
            }
            (false, Some(_)) => "close-periods.".into(),
            (false, None) => String::new(),
        };
        let journal = match &self.journal {
            Some(journal) => journal.clone(),
            None => {
                let part = shard.map_or(String::new(), |s| {
                    format!("shard-{}-of-{}.", s.index, s.count)
                });
                let name = format!(
                    "{}.{true_up_day}{part}{}-{}.jsonl",
                    journal_stem(&self.mapping),
                    file_safe(&start_time),
                    file_safe(&end_time)
                );
                let path = state.journal(&name).map_err(Failure::BadInput)?;
                if let Some(shard) = shard {
                    let prefix = format!("{}.{true_up_day}shard-", journal_stem(&self.mapping));
                    let tail =
                        format!(".{}-{}.jsonl", file_safe(&start_time), file_safe(&end_time));
                    agree_on_shards(&path, &prefix, &tail, shard, || {
                        crate::mapping::read_mapping(
                            &self.mapping,
                            self.meter_api_name.as_deref(),
                            self.stripe_event_name.as_deref(),
                        )
                        .unwrap_or_default()
                    })?;
                }
                path
            }
        };
        let plan = rows::Settings {
            mapping: self.mapping.clone(),
            journal,
            journal_is_default: self.journal.is_none(),
            start_time,
            end_time,
            concurrency: limit.clone(),
            batch,
        };
        let from = match learned {
            Some(l) => format!(
                " (half of the {} the last sync against this Stripe ended with)",
                l.settled
            ),
            None => String::new(),
        };
        tracing::info!(
            "sync: {} rows in {} part(s), {} at once at first{from}, adapting up to {}",
            parts.total,
            parts.count,
            limit.limit(),
            concurrency
        );
        let state = Arc::new(state);
        let summary = rows::sync(Arc::new(sandbox), config, parts, &plan, state.clone()).await;
        tracing::info!(
            "sync: at most {} rows at once (now {})",
            limit.peak(),
            limit.limit()
        );
        // For the next sync's start; what it failed to keep costs only speed.
        if limit.judged()
            && let Err(e) = warm_start::remember(
                state.dir(),
                &stripe_url,
                limit.limit(),
                super::ledger::now(),
            )
        {
            tracing::warn!("sync: the limit learned is not kept for the next sync: {e}");
        }
        summary
    }
}

/// Refuses shard `shard` of a window whose journals show shards of another
/// count ran for the same mapping: with `0/2` done, a `2/3` would leave rows
/// no shard covers. The journals beside `journal` named `PREFIX K-of-M TAIL`
/// say which ran; the error names the rows none of them covered (`all_rows`
/// reads the whole mapping, only then).
fn agree_on_shards(
    journal: &std::path::Path,
    prefix: &str,
    tail: &str,
    shard: crate::mapping::Shard,
    all_rows: impl FnOnce() -> Vec<crate::mapping::Row>,
) -> Result<(), Failure> {
    let Some(dir) = journal.parent() else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut others: Vec<(u64, u64)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let middle = name.strip_prefix(prefix)?.strip_suffix(tail)?.to_string();
            let (k, m) = middle.split_once("-of-")?;
            Some((k.parse().ok()?, m.parse().ok()?))
        })
        .filter(|&(_, m)| m != shard.count)
        .collect();
    others.sort_unstable();
    let Some(&(_, count)) = others.first() else {
        return Ok(());
    };
    let ran: Vec<crate::mapping::Shard> = others
        .iter()
        .filter(|&&(_, m)| m == count)
        .map(|&(index, count)| crate::mapping::Shard { index, count })
        .collect();
    let uncovered: Vec<usize> = all_rows()
        .iter()
        .filter(|row| !ran.iter().any(|s| s.holds(row)))
        .map(|row| row.line)
        .collect();
    let lines: Vec<String> = uncovered.iter().take(10).map(|l| l.to_string()).collect();
    let gap = match uncovered.len() {
        0 => "they cover every row".to_string(),
        n => format!(
            "{n} row(s) no shard has covered yet (line {}{})",
            lines.join(", "),
            match n > lines.len() {
                true => format!(" and {} more", n - lines.len()),
                false => String::new(),
            }
        ),
    };
    let names: Vec<String> = ran
        .iter()
        .map(|s| format!("{}/{}", s.index, s.count))
        .collect();
    Err(Failure::BadInput(format!(
        "--shard {}/{}: this window of this mapping was sharded {count} ways (shard {} ran), and shards of different counts leave rows that no shard covers; {gap}. Run the remaining shards of {count} (--shard K/{count}), or remove those journals to reshard the window",
        shard.index,
        shard.count,
        names.join(", "),
    )))
}

/// Rows held at once: a bigger mapping is synced in parts of about this many
/// rows, each part whole Stripe customers (`USAGE_SYNC_ROWS_PER_PART`).
fn rows_per_part() -> usize {
    std::env::var("USAGE_SYNC_ROWS_PER_PART")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROWS_PER_PART)
}

/// About 100 MiB of rows, ledgers and their state on a second night (measured:
/// `cargo bench --bench sync -- memory`).
const ROWS_PER_PART: usize = 50_000;

/// The default journal's name for a mapping: its file name and a digest of
/// its full path, so two mappings named alike in two folders keep apart.
fn journal_stem(mapping: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let full = std::path::absolute(mapping).unwrap_or_else(|_| mapping.to_path_buf());
    let digest = Sha256::digest(full.as_os_str().as_encoded_bytes());
    let name = mapping.file_name().map_or_else(
        || "mapping".into(),
        |n| {
            n.to_string_lossy()
                .chars()
                .map(|c| match c.is_ascii_alphanumeric() || "._-".contains(c) {
                    true => c,
                    false => '_',
                })
                .collect::<String>()
        },
    );
    format!("{name}.{}", usage_sync_report::hex(&digest[..6]))
}

/// A window bound as part of a file name.
fn file_safe(time: &str) -> String {
    time.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
