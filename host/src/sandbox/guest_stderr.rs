//! The guest's stderr, as the host prints it: whole lines, keys scrubbed, and
//! capped so a guest cannot flood the host's log.
//!
//! Writes are synchronous, like wasmtime's own stderr: no worker task per run,
//! which `sync` would pay thousands of times for a stream rarely written.

use crate::secrets::{Credentials, Redactor};
use bytes::Bytes;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept whole; longer ones are cut.
const MAX_LINE: usize = 8 << 10;

/// Bytes the guest may write per `check-write`.
const PERMIT: usize = 4096;

/// A `wasi:cli/stderr` for one run.
pub fn stream(credentials: Arc<Credentials>, cap: usize) -> GuestStderr {
    GuestStderr(Arc::new(Mutex::new(Scrubbed {
        redactor: Redactor::new(&credentials),
        line: Vec::new(),
        left: cap,
        out: Box::new(GuestLog),
    })))
}

/// The guest's lines, each a log event of the host's (target `guest`), so
/// they follow `--log-format` like every other line.
struct GuestLog;

impl Write for GuestLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        tracing::info!(target: "guest", "{}", line.trim_end_matches('\n'));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every handle the guest opens writes to the same scrubbed line buffer.
#[derive(Clone)]
pub struct GuestStderr(Arc<Mutex<Scrubbed>>);

impl GuestStderr {
    fn push(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bytes);
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestStderr {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).emit();
        Poll::Ready(Ok(()))
    }
}

struct Scrubbed {
    /// Keys are scrubbed from the stream before it is cut into lines, so a
    /// key split across writes, or straddling a cut, is still found.
    redactor: Redactor,
    /// The scrubbed line so far.
    line: Vec<u8>,
    /// Bytes the guest may still print.
    left: usize,
    /// The host's stderr (a buffer in tests).
    out: Box<dyn Write + Send>,
}

impl Scrubbed {
    fn push(&mut self, bytes: &[u8]) {
        let clean = self.redactor.push(bytes);
        self.take(&clean);
    }

    fn take(&mut self, clean: &[u8]) {
        for &byte in clean {
            self.line.push(byte);
            if byte == b'\n' || self.line.len() >= MAX_LINE {
                self.emit_line();
            }
        }
    }

    /// Everything held, at the end of the stream.
    fn emit(&mut self) {
        let rest = self.redactor.finish();
        self.take(&rest);
        self.emit_line();
    }

    fn emit_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.line);
        if text.len() <= self.left {
            self.left -= text.len();
            let _ = self.out.write_all(&text);
        } else if self.left > 0 {
            self.left = 0;
            let _ = self.out.write_all(
                b"usage-sync: the component's stderr is over its limit; the rest is dropped\n",
            );
        }
    }
}

impl Drop for Scrubbed {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;
    use proptest::prelude::*;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const KEY: &str = "sk_test_456789012";

    fn printed(writes: &[&[u8]]) -> String {
        let captured = Captured::default();
        let mut scrubbed = Scrubbed {
            redactor: Redactor::new(&Credentials {
                amberflo: Secret::new("A", "amb_key_123456789".into()).unwrap(),
                stripe: Secret::new("S", KEY.into()).unwrap(),
            }),
            line: Vec::new(),
            left: usize::MAX,
            out: Box::new(captured.clone()),
        };
        for w in writes {
            scrubbed.push(w);
        }
        scrubbed.emit();
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_key_straddling_the_line_cut_is_still_scrubbed() {
        // The key begins 5 bytes before the 8 KiB cut.
        let text = format!("{}{KEY} done\n", "x".repeat(MAX_LINE - 5));
        let out = printed(&[text.as_bytes()]);
        assert!(!out.contains(KEY), "a key crossed the cut");
        assert!(out.contains("[redacted]"));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(500),
            ..ProptestConfig::default()
        })]

        /// However the guest cuts its writes, and wherever the line cap falls,
        /// no key is printed and everything else is.
        #[test]
        fn no_key_survives_any_chunking(
            before in 0usize..(MAX_LINE + 40),
            cuts in prop::collection::vec(1usize..MAX_LINE, 0..6),
        ) {
            let text = format!("{}{KEY} tail\n", "y".repeat(before));
            let mut writes = Vec::new();
            let mut rest = text.as_bytes();
            for cut in cuts {
                let (chunk, tail) = rest.split_at(cut.min(rest.len()));
                writes.push(chunk);
                rest = tail;
            }
            writes.push(rest);
            let out = printed(&writes);
            prop_assert!(!out.contains(KEY));
            prop_assert_eq!(out.replace("[redacted]", KEY), text);
        }
    }
}
