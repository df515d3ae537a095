//! The HTTP plumbing both emulators share: a loopback server on its own thread
//! that records every request and answers through a plain function.

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// A request as it arrived on the wire.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// When it arrived (its body read): for the order of requests across
    /// the two providers.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8), for assertions.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How long to hold the answer back.
    pub delay: Duration,
    /// Close the connection instead of answering.
    pub reset: bool,
    /// Answer 200 with a body that never ends.
    pub endless: bool,
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec_pretty(body).expect("JSON values serialize"),
            delay: Duration::ZERO,
            reset: false,
            endless: false,
        }
    }

    /// A hostile provider: the request's headers and body, echoed back in the
    /// body and as `x-echo-*` response headers.
    pub fn echo(request: &Recorded) -> Reply {
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.as_str().into()))
            .collect();
        let mut reply = Reply::json(
            200,
            &serde_json::json!({ "headers": headers, "body": request.body_text() }),
        );
        for (name, value) in &request.headers {
            reply
                .headers
                .push((format!("x-echo-{name}"), value.clone()));
        }
        reply
    }

    /// Applies the faults that act after a request was handled.
    pub fn after(mut self, fault: Option<Fault>) -> Reply {
        match fault {
            Some(Fault::Delay(delay)) => self.delay = delay,
            Some(Fault::RecordThenReset) => self.reset = true,
            _ => {}
        }
        self
    }

    /// The answer for the faults that replace handling altogether.
    pub fn hostile(fault: Option<Fault>, request: &Recorded) -> Option<Reply> {
        match fault {
            Some(Fault::Echo) => Some(Reply::echo(request)),
            Some(Fault::EndlessBody) => {
                let mut reply = Reply::json(200, &serde_json::Value::Null);
                reply.endless = true;
                Some(reply)
            }
            _ => None,
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A fault an emulator injects into one request, or into all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and the provider's error body for it, before
    /// anything is recorded.
    Status(u16),
    /// Answer 429, with a `Retry-After` if given.
    TooManyRequests {
        /// The `Retry-After` header, in seconds.
        retry_after: Option<u64>,
    },
    /// Answer 200 with a body that is not JSON.
    MalformedJson,
    /// Handle the request as usual, then hold the answer back this long.
    Delay(Duration),
    /// Handle the request as usual (an event is recorded), then answer with
    /// this status instead; Stripe stores that answer under the idempotency key.
    RecordThenStatus(u16),
    /// Handle the request as usual (an event is recorded), then answer 503
    /// with this `Retry-After`, in seconds.
    RecordThenRetryAfter(u64),
    /// Handle the request as usual, then close the connection without answering.
    RecordThenReset,
    /// Handle the request as usual (an event is recorded), then answer 200
    /// with another event's identifier: a confused or hostile provider.
    RecordThenOtherEvent,
    /// A hostile provider: echo the request, credentials included (see [`Reply::echo`]).
    Echo,
    /// A hostile provider: answer 200 with a body that never ends.
    EndlessBody,
}

/// Requests one HTTP/2 connection carries at once.
pub const MAX_STREAMS: u32 = 100;

/// Which fault, if any, the next request gets: queued ones first, one each.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    queue: VecDeque<Fault>,
    always: Option<Fault>,
}

impl Faults {
    pub fn next(&mut self) -> Option<Fault> {
        self.queue.pop_front().or(self.always)
    }

    pub fn set(&mut self, always: Option<Fault>) {
        self.always = always;
    }

    pub fn push(&mut self, faults: impl IntoIterator<Item = Fault>) {
        self.queue.extend(faults);
    }
}

pub(crate) type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// Requests answered at once, and the cap past which the provider pushes
/// back (Stripe's concurrency limiter answers 429 before anything is done).
#[derive(Default)]
pub(crate) struct Gate {
    in_flight: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
    /// The cap, and the answer past it.
    cap: Mutex<Option<(usize, Arc<Handler>)>>,
}

impl Gate {
    /// At most `cap` requests at once; past it, `busy`'s answer.
    pub fn set(&self, cap: Option<(usize, Arc<Handler>)>) {
        *self.cap.lock().unwrap_or_else(|p| p.into_inner()) = cap;
    }

    /// The most requests answered at once so far (refused ones included).
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests refused for being past the cap.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a request in; the busy answer when it is past the cap.
    fn enter(self: &Arc<Self>, request: &Recorded) -> (InFlight, Option<Reply>) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        let busy = match &*self.cap.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((cap, busy)) if now > *cap => {
                self.refused.fetch_add(1, SeqCst);
                Some(busy(request))
            }
            _ => None,
        };
        (InFlight(self.clone()), busy)
    }
}

/// One request being answered.
struct InFlight(Arc<Gate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running server; stops when dropped.
pub(crate) struct Server {
    addr: SocketAddr,
    https: bool,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    gate: Arc<Gate>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// HTTPS with `tls`, or plain HTTP without.
    pub fn start_with(
        handler: Arc<Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Server> {
        let https = tls.is_some();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let (stop, stopped) = oneshot::channel();
        let log = requests.clone();
        let gate = Arc::new(Gate::default());
        let counted = gate.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("emulator-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(
                    listener, handler, log, stopped, tls, accepted, counted,
                ))
            })?;
        Ok(Server {
            addr,
            https,
            connections,
            requests,
            gate,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` (the name its
    /// certificate is for).
    pub fn url(&self) -> String {
        match self.https {
            true => format!("https://localhost:{}", self.addr.port()),
            false => format!("http://{}", self.addr),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (over HTTPS, handshakes completed).
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests at once, and the cap on them.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Recorded>>>,
    mut stopped: oneshot::Receiver<()>,
    tls: Option<Arc<rustls::ServerConfig>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<Gate>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let listener = tokio::net::TcpListener::from_std(listener).expect("inside a runtime");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        // As the providers' front ends do. With Nagle's algorithm on, an
        // HTTP/2 response written while the server's SETTINGS frame was not
        // yet acknowledged waited for the peer's delayed ACK: 40 ms added to
        // the first answer of every connection over a latency proxy.
        let _ = stream.set_nodelay(true);
        let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
        let (accepted, gate) = (accepted.clone(), gate.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (handler, log, gate) = (handler.clone(), log.clone(), gate.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map_err(std::io::Error::other)?
                        .to_bytes()
                        .to_vec();
                    let recorded = Recorded {
                        at: std::time::Instant::now(),
                        version: format!("{:?}", parts.version),
                        method: parts.method.to_string(),
                        target: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into(),
                                )
                            })
                            .collect(),
                        body,
                    };
                    log.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(recorded.clone());
                    let (_in_flight, busy) = gate.enter(&recorded);
                    let reply = match busy {
                        Some(busy) => busy,
                        None => handler(&recorded),
                    };
                    tokio::time::sleep(reply.delay).await;
                    if reply.reset {
                        // An error from the service makes hyper drop the connection unanswered.
                        return Err(std::io::Error::other("injected reset"));
                    }
                    let mut response = hyper::Response::builder().status(reply.status);
                    for (name, value) in &reply.headers {
                        response = response.header(name.as_str(), value.as_str());
                    }
                    let body = if reply.endless {
                        Either::Right(Endless)
                    } else {
                        Either::Left(Full::new(Bytes::from(reply.body)))
                    };
                    Ok::<_, std::io::Error>(response.body(body).expect("valid status and headers"))
                }
            });
            match tls {
                // A handshake the client refuses ends here: nothing is read.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        let _ = match h2 {
                            true => {
                                http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                    // The fewest streams a server should allow
                                    // at once (RFC 9113, 6.5.2); hyper's 200
                                    // would be kinder than some servers.
                                    .max_concurrent_streams(MAX_STREAMS)
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            false => {
                                http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                        };
                    }
                }
                None => {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

/// A body that never ends.
struct Endless;

static CHUNK: [u8; 64 << 10] = [b'x'; 64 << 10];

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}
