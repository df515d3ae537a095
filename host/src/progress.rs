//! Progress of many rows (`sync`, `reconcile`) on stderr.

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line
/// every two seconds otherwise (logs, CI).
pub struct Progress {
    label: &'static str,
    total: usize,
    terminal: bool,
    started: std::time::Instant,
    shown: Option<std::time::Instant>,
}

impl Progress {
    /// Progress of `total` rows of the command `label`.
    pub fn new(label: &'static str, total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            label,
            total,
            terminal: std::io::stderr().is_terminal() && crate::logging::human(),
            started: std::time::Instant::now(),
            shown: None,
        }
    }

    /// Shows `finished` rows done, with `counts` ("3 recorded, ..."), made
    /// only when a line is due.
    pub fn show(&mut self, finished: usize, counts: impl FnOnce() -> String) {
        let every = if self.terminal { 0.1 } else { 2.0 };
        let due = self
            .shown
            .is_none_or(|t| t.elapsed().as_secs_f64() >= every);
        if !due && finished != self.total {
            return;
        }
        self.shown = Some(std::time::Instant::now());
        let counts = counts();
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = (finished * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
            let rate = finished as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r\x1b[2K{} [{}{}] {finished}/{} rows, {rate:.0}/s ({counts})",
                self.label,
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                self.total
            );
        } else {
            tracing::info!(
                rows_done = finished,
                rows = self.total,
                "{}: {finished}/{} rows ({counts})",
                self.label,
                self.total
            );
        }
    }

    /// Ends the bar's line on a terminal.
    pub fn done(&self) {
        if self.terminal && self.shown.is_some() {
            eprintln!();
        }
    }
}
