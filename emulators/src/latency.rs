//! A loopback TCP proxy that delays every byte by a one-way latency in each
//! direction, as a provider tens of milliseconds away would (the kernel here
//! has no `netem`). Bandwidth is not limited; order is kept.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// A running latency proxy; stops when dropped.
pub struct LatencyProxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatencyProxy {
    /// Forwards connections on a free loopback port to `upstream`, each byte
    /// delayed by `one_way` in each direction.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<LatencyProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("latency-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        let client = tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => match accepted {
                                Ok((client, _)) => client,
                                Err(_) => continue,
                            },
                        };
                        tokio::spawn(async move {
                            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                                return;
                            };
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::spawn(delayed(client_read, server_write, one_way));
                            tokio::spawn(delayed(server_read, client_write, one_way));
                        });
                    }
                })
            })?;
        Ok(LatencyProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `https://localhost:PORT`: the name the emulators' certificates are for.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let due = tokio::time::Instant::now() + delay;
                if tx.send((due, buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
