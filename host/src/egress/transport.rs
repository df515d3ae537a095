//! How an admitted request travels: keep-alive connections pooled per origin
//! (so per provider: the policy gives each its own origin), shared by every
//! run made with one configuration (`sync`, `serve`), and HTTPS that trusts
//! the built-in webpki roots plus the operator's own CAs (`--ca-file`,
//! `SSL_CERT_FILE`), or only those (`--ca-file-only`).
//!
//! HTTPS goes through the proxy `HTTPS_PROXY` (or `ALL_PROXY`) names, unless
//! `NO_PROXY` exempts the host (curl's rules, as hyper-util reads them): a
//! `CONNECT` tunnel, so the proxy sees only the provider's name and TLS; the
//! keys travel inside. Plain HTTP (loopback only, for tests) never does.
//!
//! wasi-http's `default_send_request` opens a connection per request and
//! trusts only the webpki roots; this is the same sending on hyper-util's
//! pooled client with hyper-rustls, keeping its timeouts. A certificate the
//! trust refuses fails before any byte of the request is sent, and says why
//! in words.
//!
//! A connection can be opened ahead of its first request
//! ([`Transport::open_ahead`]): a run asks Stripe for its meter first and
//! Amberflo second, so Amberflo's TCP and TLS handshakes (two round trips on
//! a real network) are made while Stripe answers, and Amberflo's first
//! request finds its connection ready. Only a configured origin is opened,
//! and nothing is sent on it before a request the policy admitted.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Idle keep-alive connections kept per origin: as many as requests can be
/// in flight (`--concurrency` is at most 4,096). Fewer, and every request
/// past them found its connection closed for being one too many idle and
/// opened another: at 256 rows at once, a TLS handshake a request (measured).
/// Idle ones still close after [`IDLE_TIMEOUT`].
const MAX_IDLE_PER_ORIGIN: usize = 4096;
/// An idle connection older than this is closed (providers close theirs
/// after a minute or so; a stale one would only fail the next request).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one HTTP/2 connection carries at once before the next request
/// takes another: the fewest a server should allow (RFC 9113, 6.5.2, the
/// `SETTINGS_MAX_CONCURRENT_STREAMS` it advertises). Past a server's limit,
/// hyper-util's pool queues a request on the one connection it has per
/// origin instead of opening another, and rows wait for streams.
const STREAMS_PER_LANE: usize = 100;
/// Connections per origin over HTTP/2, at most: 4,096 rows at once (the
/// highest `--concurrency`) sending two reads each is 8,192 streams.
const MAX_LANES: usize = 82;
/// A connection opened ahead and not taken within this long is dropped
/// unused, well before the providers' idle timeouts could have closed it.
const AHEAD_FRESH: Duration = Duration::from_secs(20);

/// Which certificate authorities HTTPS trusts.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// CAs added by the operator, and the file they came from.
    pub extra: Vec<CertificateDer<'static>>,
    /// Where they came from, for messages.
    pub source: Option<PathBuf>,
    /// Only `extra`, not the built-in roots.
    pub only: bool,
}

impl Trust {
    /// The built-in roots plus the PEM certificates in `file` (all of them;
    /// none is an error), or only those when `only`.
    pub fn from_file(file: Option<&Path>, only: bool) -> Result<Trust, String> {
        let Some(file) = file else {
            if only {
                return Err("--ca-file-only needs --ca-file (or SSL_CERT_FILE)".into());
            }
            return Ok(Trust::default());
        };
        // A system's whole bundle is about 200 KB.
        let bytes = crate::capped::read(file, 16 << 20, "CA file")?;
        let extra = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the CA file {} is not PEM: {e}", file.display()))?;
        if extra.is_empty() {
            return Err(format!(
                "the CA file {} holds no certificate",
                file.display()
            ));
        }
        Ok(Trust {
            extra,
            source: Some(file.to_path_buf()),
            only,
        })
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        if !self.only {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.extra {
            roots.add(cert.clone()).map_err(|e| {
                let file = self.source.as_deref().unwrap_or(Path::new("the CA file"));
                format!("{}: a certificate is not a usable CA: {e}", file.display())
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Which HTTP versions HTTPS offers the server (ALPN).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/2 where the server offers it, else HTTP/1.1: one connection per
    /// origin carries up to [`STREAMS_PER_LANE`] requests at once, so one
    /// handshake, and a few past that.
    #[default]
    Negotiated,
    /// Only HTTP/1.1 (`--http1`): a connection per request in flight.
    Http1,
}

/// A request that did not get an answer: what the guest is told, and for
/// a certificate refused, why in words (the sandbox reports it).
pub struct NotSent {
    /// The guest's error code.
    pub error: Error,
    /// Set when the request certainly never left: no write can have happened.
    pub before_sending: bool,
    /// Why a certificate was refused.
    pub certificate: Option<String>,
}

/// The pooled client of one configuration.
#[derive(Clone)]
pub struct Transport {
    /// Over HTTP/2, each lane's pool keeps one connection per origin: a
    /// request takes the first lane with fewer than [`STREAMS_PER_LANE`] in
    /// flight, so a quiet run uses one connection and a busy one a few. Over
    /// HTTP/1.1 one lane, whose pool holds a connection per request at once.
    lanes: Arc<[Lane]>,
    /// How every lane connects, with the connections opened ahead.
    connect: Ahead,
}

struct Lane {
    client: Client<Ahead, WasiBody>,
    /// Requests sent on it whose answer is not yet read to the end.
    in_flight: Arc<AtomicUsize>,
    /// It has answered: its connection is open and its version known. Until
    /// then it takes one request at a time, since the pool, not knowing the
    /// connection will be HTTP/2, would open one per request waiting.
    warm: AtomicBool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the TCP connection under TLS: straight to the provider, or a
/// `CONNECT` tunnel through the proxy the environment names for it.
#[derive(Clone)]
pub struct Connect {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl tower_service::Service<http::Uri> for Connect {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: http::Uri) -> Self::Future {
        let https = destination.scheme() == Some(&http::uri::Scheme::HTTPS);
        let proxy = https
            .then(|| self.proxies.intercept(&destination))
            .flatten();
        match proxy {
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(destination).await.map_err(Into::into) })
            }
            None => {
                let mut direct = self.direct.clone();
                Box::pin(async move { direct.call(destination).await.map_err(Into::into) })
            }
        }
    }
}

/// A TLS (or, to loopback, plain) connection as the pools take it.
type Connection = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// The lanes' connector: it hands out a connection opened ahead to the
/// origin asked for, when one is ready and fresh, else opens one.
#[derive(Clone)]
pub struct Ahead {
    connect: HttpsConnector<Connect>,
    ready: Arc<Mutex<Vec<(String, Instant, Connection)>>>,
}

/// `scheme://authority`: what a connection is opened to.
fn origin_of(uri: &http::Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map_or("", |a| a.as_str())
    )
}

impl Ahead {
    /// A fresh connection opened ahead to `origin`, if there is one; stale
    /// ones are dropped on the way.
    fn take(&self, origin: &str) -> Option<Connection> {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        ready.retain(|(_, opened, _)| opened.elapsed() < AHEAD_FRESH);
        let at = ready.iter().position(|(o, _, _)| o == origin)?;
        Some(ready.swap_remove(at).2)
    }
}

impl tower_service::Service<http::Uri> for Ahead {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.connect.poll_ready(cx)
    }

    fn call(&mut self, destination: http::Uri) -> Self::Future {
        match self.take(&origin_of(&destination)) {
            Some(connection) => Box::pin(std::future::ready(Ok(connection))),
            None => Box::pin(self.connect.call(destination)),
        }
    }
}

impl Transport {
    /// A pool trusting `trust` and offering `versions`; connecting gives up
    /// after `connect_timeout`.
    pub fn new(
        trust: &Trust,
        versions: Versions,
        connect_timeout: Duration,
    ) -> Result<Transport, String> {
        let mut http = HttpConnector::new();
        // The connector must also take https:// URIs, which it hands to rustls.
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connect = Connect {
            direct: http,
            proxies: Arc::new(Matcher::from_env()),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(trust.client_config()?)
            .https_or_http();
        // Plain HTTP (loopback tests) stays HTTP/1.1: h2 only by ALPN.
        let https = match versions {
            Versions::Negotiated => https.enable_all_versions().wrap_connector(connect),
            Versions::Http1 => https.enable_http1().wrap_connector(connect),
        };
        let connect = Ahead {
            connect: https,
            ready: Arc::default(),
        };
        let lanes = match versions {
            Versions::Negotiated => MAX_LANES,
            Versions::Http1 => 1,
        };
        let lanes = (0..lanes)
            .map(|_| Lane {
                client: Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(MAX_IDLE_PER_ORIGIN)
                    .pool_idle_timeout(IDLE_TIMEOUT)
                    // A request is resent only by the workflow, under its own rules.
                    .retry_canceled_requests(false)
                    .build(connect.clone()),
                in_flight: Arc::default(),
                warm: AtomicBool::new(false),
            })
            .collect();
        Ok(Transport { lanes, connect })
    }

    /// Opens a connection to `origin` (a configured provider's base URL) in
    /// the background, for the first request to it to take. A failure is
    /// left for that request to meet and report; nothing is sent.
    pub fn open_ahead(&self, origin: &str) {
        let Ok(uri) = origin.parse::<http::Uri>() else {
            return;
        };
        let mut ahead = self.connect.clone();
        tokio::spawn(async move {
            let opening = tower_service::Service::call(&mut ahead.connect, uri.clone());
            if let Ok(connection) = opening.await {
                let mut ready = ahead.ready.lock().unwrap_or_else(PoisonError::into_inner);
                ready.push((origin_of(&uri), Instant::now(), connection));
            }
        });
    }

    /// The first open lane with room for another stream, else the next lane
    /// if no other is opening, else the least busy open one; counted as busy
    /// until the answer is read to the end or dropped.
    fn lane(&self) -> (&Lane, Busy) {
        let load = |lane: &Lane| lane.in_flight.load(Ordering::Relaxed);
        let warm = |lane: &Lane| lane.warm.load(Ordering::Relaxed);
        let mut chosen = None;
        for lane in self.lanes.iter() {
            if !warm(lane) {
                // Lanes open in order: this is the next connection.
                chosen = (load(lane) == 0).then_some(lane);
                break;
            }
            if load(lane) < STREAMS_PER_LANE {
                chosen = Some(lane);
                break;
            }
        }
        let lane = chosen.unwrap_or_else(|| {
            let open = self.lanes.iter().filter(|lane| warm(lane));
            open.min_by_key(|lane| load(lane)).unwrap_or(&self.lanes[0])
        });
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        (lane, Busy(lane.in_flight.clone()))
    }

    /// Sends `request` over a pooled connection: its timeouts from `options`.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: RequestOptions,
    ) -> Result<http::Response<WasiBody>, NotSent> {
        let first_byte = options
            .first_byte_timeout
            .unwrap_or(Duration::from_secs(600));
        let between = options
            .between_bytes_timeout
            .unwrap_or(Duration::from_secs(600))
            .max(Duration::from_nanos(1));
        let host = request.uri().host().unwrap_or_default().to_string();
        let (lane, busy) = self.lane();
        let response = match tokio::time::timeout(first_byte, lane.client.request(request)).await {
            Err(_) => {
                return Err(NotSent {
                    error: Error::ConnectionReadTimeout,
                    before_sending: false,
                    certificate: None,
                });
            }
            Ok(Err(e)) => return Err(not_sent(&e, &host)),
            Ok(Ok(response)) => response,
        };
        lane.warm.store(true, Ordering::Relaxed);
        let mut timeout = tokio::time::interval(between);
        timeout.reset();
        Ok(response.map(|incoming| {
            BetweenBytes {
                incoming,
                timeout,
                _busy: busy,
            }
            .boxed_unsync()
        }))
    }
}

/// What a failed request means for the guest, and whether it never left.
fn not_sent(error: &hyper_util::client::legacy::Error, host: &str) -> NotSent {
    if let Some(tls) = rustls_error(error) {
        return match tls {
            rustls::Error::InvalidCertificate(why) => NotSent {
                error: Error::TlsCertificateError,
                before_sending: true,
                certificate: Some(format!(
                    "the TLS certificate of {host} was refused: {}",
                    certificate_reason(why)
                )),
            },
            _ => NotSent {
                error: Error::TlsProtocolError,
                before_sending: true,
                certificate: None,
            },
        };
    }
    let connecting = error.is_connect();
    NotSent {
        error: match connecting {
            true => Error::ConnectionRefused,
            false => Error::HttpProtocolError,
        },
        before_sending: connecting,
        certificate: None,
    }
}

/// The TLS error under `error`, however deep: hyper-rustls wraps
/// tokio-rustls's `io::Error`, which wraps rustls's, and an `io::Error`'s
/// `source()` skips the error it wraps.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(tls) = rustls_error(inner)
    {
        return Some(tls);
    }
    error.source().and_then(rustls_error)
}

/// A certificate's fault, in words.
fn certificate_reason(why: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match why {
        C::UnknownIssuer => "it is not signed by a certificate authority this host trusts (add the authority with --ca-file)".into(),
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is for another host name".into()
        }
        C::Revoked => "it has been revoked".into(),
        C::BadSignature => "its signature is not valid".into(),
        other => format!("it is not acceptable ({other})"),
    }
}

/// A request counted on its lane until dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The response body, failing the read when no byte arrives for too long.
struct BetweenBytes {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
    /// Its stream is busy until the body is read or dropped.
    _busy: Busy,
}

impl Body for BetweenBytes {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(match e.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.timeout.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(versions: Versions) -> Transport {
        Transport::new(&Trust::default(), versions, Duration::from_secs(1)).unwrap()
    }

    /// Takes a lane as `send` does, and says which; the busy count stays.
    fn take(t: &Transport, held: &mut Vec<Busy>) -> usize {
        let (lane, busy) = t.lane();
        held.push(busy);
        let index = t.lanes.iter().position(|l| std::ptr::eq(l, lane));
        index.unwrap()
    }

    #[test]
    fn a_connection_carries_a_hundred_requests_then_the_next_opens_alone() {
        let t = transport(Versions::Negotiated);
        let mut held = Vec::new();
        // Until the first answer, everything waits on the first connection.
        assert!((0..5).all(|_| take(&t, &mut held) == 0));
        t.lanes[0].warm.store(true, Ordering::Relaxed);
        assert!((5..STREAMS_PER_LANE).all(|_| take(&t, &mut held) == 0));
        // Full: the next lane opens with one request, and while it opens the
        // others go to the least busy open lane rather than open a third.
        assert_eq!(take(&t, &mut held), 1);
        assert_eq!(take(&t, &mut held), 0);
        assert_eq!(take(&t, &mut held), 0);
        t.lanes[1].warm.store(true, Ordering::Relaxed);
        assert_eq!(take(&t, &mut held), 1);
        // Requests done free their places on their lane (the first three
        // held are the first lane's: 102 there, then 99).
        held.drain(..3);
        assert_eq!(take(&t, &mut held), 0);
        assert_eq!(
            t.lanes[0].in_flight.load(Ordering::Relaxed),
            STREAMS_PER_LANE
        );
        assert_eq!(t.lanes[1].in_flight.load(Ordering::Relaxed), 2);
        drop(held);
        assert!(
            t.lanes
                .iter()
                .all(|l| l.in_flight.load(Ordering::Relaxed) == 0)
        );
    }

    #[test]
    fn http1_has_one_lane_whose_pool_holds_a_connection_per_request() {
        let t = transport(Versions::Http1);
        let mut held = Vec::new();
        t.lanes[0].warm.store(true, Ordering::Relaxed);
        assert!((0..300).all(|_| take(&t, &mut held) == 0));
    }
}
