//! `usage-sync serve`: the component's `POST /run` over HTTP. Here the flags,
//! their checks and the listening; [`door`] is the front door before the
//! sandbox, [`incoming`] hands a request to the component.

pub(crate) mod door;
pub(crate) mod incoming;

use super::flags::{EndpointArgs, MAX_CONCURRENCY, MAX_REQUEST_TIMEOUT, SandboxArgs, seconds};
use crate::outcome::{Failure, exit, print_failure};
use crate::secrets::ServeToken;
use clap::Args;
use door::{App, Door};
use std::sync::Arc;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub(crate) listen: std::net::SocketAddr,
    /// Runs at once; a request above the cap gets 503 with Retry-After.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub(crate) max_runs: usize,
    /// Cap on a request body, bytes (an inputs object is a few hundred).
    #[arg(long, default_value_t = 64 << 10, value_name = "BYTES")]
    pub(crate) max_body_bytes: usize,
    /// Time a client has to send a request's headers, and then its body, seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) read_timeout: f64,
    /// After SIGTERM or Ctrl-C, how long runs in flight may take to finish, seconds
    /// (under Kubernetes' default terminationGracePeriodSeconds of 30).
    #[arg(long, default_value_t = 25.0, value_name = "SECS")]
    pub(crate) grace_period: f64,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

/// The largest request body `serve` may be told to take.
const MAX_BODY_BYTES: usize = 16 << 20;

impl ServeArgs {
    /// The front door's limits, checked.
    fn door(&self) -> Result<Door, Failure> {
        if !(1..=MAX_CONCURRENCY).contains(&self.max_runs) {
            return Err(Failure::BadInput(format!(
                "--max-runs must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        if !(1..=MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(Failure::BadInput(format!(
                "--max-body-bytes must be between 1 and {MAX_BODY_BYTES}"
            )));
        }
        Ok(Door {
            max_runs: self.max_runs,
            max_body_bytes: self.max_body_bytes,
            read_timeout: seconds("read-timeout", self.read_timeout, MAX_REQUEST_TIMEOUT)?,
            grace_period: seconds("grace-period", self.grace_period, MAX_REQUEST_TIMEOUT)?,
        })
    }

    /// Checks the configuration, listens, serves until SIGTERM or Ctrl-C;
    /// the exit status says how it ended.
    pub(crate) async fn execute(self) -> u8 {
        let credentials = match super::credentials(&self.endpoints) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let prepared = (|| {
            let token = ServeToken::from_env().map_err(Failure::BadInput)?;
            let door = self.door()?;
            // The request body carries the options; these are unused.
            let (sandbox, config) = super::prepare(
                &self.endpoints,
                &self.sandbox,
                || Ok(crate::options::default_options()),
                credentials.clone(),
                Some(door.max_runs),
                // The one command that calls the HTTP entry point.
                crate::DEFAULT_COMPONENT,
            )?;
            let metrics = Arc::new(crate::metrics::ServeMetrics::default());
            App::new(sandbox, config, token, door, metrics)
        })();
        let app = match prepared {
            Ok(app) => app,
            Err(failure) => return print_failure(&failure, Some(&credentials)),
        };
        // Listen for signals before accepting anything, so none is missed.
        let mut interrupt = match crate::interrupt::Interrupt::listen() {
            Ok(i) => i,
            Err(e) => {
                let failure = Failure::Internal(format!("listening for SIGTERM and Ctrl-C: {e}"));
                return print_failure(&failure, Some(&credentials));
            }
        };
        let listener = match tokio::net::TcpListener::bind(self.listen).await {
            Ok(l) => l,
            Err(e) => {
                let failure = Failure::BadInput(format!("cannot listen on {}: {e}", self.listen));
                return print_failure(&failure, Some(&credentials));
            }
        };
        let address = listener.local_addr().unwrap_or(self.listen);
        tracing::info!(
            "usage-sync: serving POST /run on http://{address}/ to callers with the token (SIGTERM or Ctrl-C stops)"
        );
        let unfinished = door::run(
            listener,
            Arc::new(app),
            async move { interrupt.recv().await },
        )
        .await;
        match unfinished {
            0 => {
                tracing::info!("usage-sync: stopped; every run in flight finished");
                exit::OK
            }
            n => {
                tracing::info!(
                    "usage-sync: stopped; {n} connection(s) still open after the grace period were closed"
                );
                exit::INTERRUPTED
            }
        }
    }
}
