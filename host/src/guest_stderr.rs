//! The guest's stderr, as the host prints it: whole lines, keys scrubbed, and
//! capped so a guest cannot flood the host's log.
//!
//! Writes are synchronous, like wasmtime's own stderr: no worker task per run,
//! which `sync` would pay thousands of times for a stream rarely written.

use crate::secrets::Credentials;
use bytes::Bytes;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
        credentials,
        line: Vec::new(),
        left: cap,
    })))
}

/// Every handle the guest opens writes to the same scrubbed line buffer.
#[derive(Clone)]
pub struct GuestStderr(Arc<Mutex<Scrubbed>>);

impl GuestStderr {
    fn push(&self, bytes: &[u8]) {
        self.0.lock().unwrap().push(bytes);
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
        self.0.lock().unwrap().emit();
        Poll::Ready(Ok(()))
    }
}

struct Scrubbed {
    credentials: Arc<Credentials>,
    /// The line so far: unbuffered `eprintln!` arrives in pieces, and a key
    /// split across two writes must still be found.
    line: Vec<u8>,
    /// Bytes the guest may still print.
    left: usize,
}

impl Scrubbed {
    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.line.push(byte);
            if byte == b'\n' || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = self
            .credentials
            .redact(&String::from_utf8_lossy(&self.line));
        self.line.clear();
        let mut err = std::io::stderr().lock();
        if text.len() <= self.left {
            self.left -= text.len();
            let _ = err.write_all(text.as_bytes());
        } else if self.left > 0 {
            self.left = 0;
            let _ = err.write_all(
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
