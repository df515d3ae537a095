//! The workflow's options as `usage-sync run` fills them in when a flag is
//! left out (the component's `POST /run` applies the same, from
//! `usage_sync_report::defaults`).

use crate::bindings::{Interval, Options};

/// The defaults of `run`'s workflow flags.
pub fn default_options() -> Options {
    Options {
        max_retries: usage_sync_report::defaults::MAX_RETRIES,
        retry_budget_ms: usage_sync_report::defaults::RETRY_BUDGET_MS,
        rounding: None,
        reconcile: false,
        dry_run: false,
        interval: Interval::Day,
        scale: None,
        true_up: false,
        allow_decrease: false,
        settle_hours: usage_sync_report::defaults::SETTLE_HOURS,
        // This host reads and strips it (egress::hook).
        attempt_header: true,
        carry_late_usage: false,
    }
}
