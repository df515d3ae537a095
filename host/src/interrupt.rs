//! Being asked to stop: Ctrl-C (SIGINT) or SIGTERM, which Kubernetes and
//! systemd send. Listened for once, before any work starts, so none is missed
//! between two polls. `sync` and `serve` treat both alike: finish what is in
//! flight, start nothing new.

/// SIGINT and SIGTERM, registered as soon as it is created.
pub struct Interrupt {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Starts listening, before the first piece of work starts.
    pub fn listen() -> std::io::Result<Interrupt> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Interrupt {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
