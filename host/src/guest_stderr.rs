//! The guest's stderr, as the host prints it: whole lines, keys scrubbed, and
//! capped so a guest cannot flood the host's log.

use crate::secrets::Credentials;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::AsyncStdoutStream;

/// Longest line kept whole; longer ones are cut.
const MAX_LINE: usize = 8 << 10;

/// A `wasi:cli/stderr` for one run.
pub fn stream(credentials: Arc<Credentials>, cap: usize) -> AsyncStdoutStream {
    AsyncStdoutStream::new(
        4096,
        Scrubbed {
            credentials,
            line: Vec::new(),
            left: cap,
        },
    )
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

impl AsyncWrite for Scrubbed {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        for &byte in buf {
            this.line.push(byte);
            if byte == b'\n' || this.line.len() >= MAX_LINE {
                this.emit();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Scrubbed {
    fn drop(&mut self) {
        self.emit();
    }
}
