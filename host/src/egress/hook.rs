//! The HTTP boundary: every request the guest makes passes here. The policy
//! decides where it may go, the host attaches the key, and what comes back is
//! capped and scrubbed of keys before the guest sees it.

use crate::egress::concurrency::Concurrency;
use crate::egress::pace::StripePace;
use crate::egress::policy::{Policy, Provider, Refusal, is_credential_header};
use crate::egress::routes::Route;
use crate::egress::transport::Transport;
use crate::secrets::{Credentials, Redactor};
use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use usage_sync_report::keys::ATTEMPT_HEADER;
use wasmtime_wasi_http::{ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks};

/// Requests one run may have waiting for an answer at once.
pub const MAX_IN_FLIGHT: usize = 16;

/// What the host saw of a run, for the verdict.
#[derive(Default)]
pub struct RunLog {
    /// Requests the host refused, and why.
    pub refusals: Vec<Refusal>,
    /// URLs whose response passed the size cap.
    pub oversized: Vec<String>,
    /// Writes (POSTs) to Stripe admitted: a run cut short may have recorded
    /// events. Reads (the meter, its summaries) record nothing.
    pub stripe_posts: u32,
    /// Of those, the ones that certainly never left (no connection, a
    /// certificate refused).
    pub stripe_posts_unsent: u32,
    /// Requests that passed the policy.
    pub sent: u32,
}

impl RunLog {
    /// Whether a write may have reached Stripe.
    pub fn stripe_written(&self) -> bool {
        self.stripe_posts > self.stripe_posts_unsent
    }
}

/// A request the guest made, as the host saw it.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Which provider it went to.
    pub provider: Provider,
    /// The workflow step whose route it called (`find-meter`, `query-usage`, ...).
    pub route: &'static str,
    /// The Amberflo customer of the run (empty when the run has many, or none).
    pub customer: String,
    /// 1 for a first try, then 2, 3... for its retries, as the component
    /// says in its attempt header (the component decides retries; the host
    /// never guesses).
    pub attempt: u32,
    /// The HTTP method.
    pub method: String,
    /// The URL as the guest asked for it.
    pub url: String,
    /// The status, or why there was none.
    pub result: Result<u16, String>,
    /// How long the answer took.
    pub elapsed: Duration,
}

/// Called for each request as it completes (for progress lines).
pub type Observer = Arc<dyn Fn(&Exchange) + Send + Sync>;

/// The caps the hook enforces on one run's requests: the part of the
/// sandbox's limits that only the HTTP boundary can see.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Connect, first-byte and between-bytes timeout of each request.
    pub request_timeout: Duration,
    /// Cap on each response body.
    pub max_response_bytes: u64,
    /// Cap on the requests of one run.
    pub max_requests: u32,
}

/// The hooks wasmtime-wasi-http calls for one run.
pub struct Egress {
    /// Where the guest may go, and with which key.
    pub policy: Arc<Policy>,
    /// The keys the host attaches.
    pub credentials: Arc<Credentials>,
    /// What one run's requests may use.
    pub caps: Caps,
    /// What the host saw of the run.
    pub log: Arc<Mutex<RunLog>>,
    /// Called for each request as it completes.
    pub observer: Option<Observer>,
    /// Requests of this run waiting for an answer right now.
    pub in_flight: Arc<AtomicUsize>,
    /// Paces Stripe requests across runs (`usage-sync sync`).
    pub stripe_pace: Option<Arc<StripePace>>,
    /// Told of every push-back (`usage-sync sync`).
    pub concurrency: Option<Arc<Concurrency>>,
    /// The pooled connections, shared by the runs of one configuration.
    pub transport: Transport,
    /// The Amberflo customer of the run, for its log lines (empty: many, or none).
    pub customer: String,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl Egress {
    fn refuse(&mut self, refusal: Refusal) -> SendFuture {
        // The guest sees only a failed request: the host reports the refusal.
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refusals
            .push(refusal);
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The guest may neither set credential headers nor read them in responses.
fn forbidden(name: &http::HeaderName) -> bool {
    wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name) || is_credential_header(name)
}

impl WasiHttpHooks for Egress {
    /// [`forbidden`], asked for every header the guest sets: directly, not
    /// through the default's closure, which allocated one each time.
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        forbidden(name)
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(forbidden)
    }

    fn is_supported_scheme(&mut self, scheme: &http::uri::Scheme) -> bool {
        let supported = *scheme == http::uri::Scheme::HTTP || *scheme == http::uri::Scheme::HTTPS;
        if !supported {
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .refusals
                .push(Refusal {
                    target: format!("{scheme}:"),
                    reason: "only http and https are allowed".into(),
                });
        }
        supported
    }

    /// The request's way out, step by step: admit it (policy, caps), attach
    /// its provider's key, bound its timeouts, then send it (paced), observe
    /// it, and cap and scrub what comes back.
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        // Over the cap is not transient: the run has failed (exit 4), and a
        // retry would download the cap again. wasi-http 48 hands the guest
        // that body error without its error code, so the guest cannot tell.
        if !self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .oversized
            .is_empty()
        {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let admitted = match self.admit(&request) {
            Ok(admitted) => admitted,
            Err(refusal) => return self.refuse(refusal),
        };
        // The attempt number is for the host alone: it never goes on the wire.
        request.headers_mut().remove(ATTEMPT_HEADER);
        attach_key(&mut request, admitted.provider, &self.credentials);
        let options = bounded(options, self.caps.request_timeout);
        let outbound = Outbound {
            pace: self
                .stripe_pace
                .clone()
                .filter(|_| admitted.provider == Provider::Stripe),

            observer: self.observer.clone(),
            concurrency: self.concurrency.clone(),
            redactor: Redactor::new(&self.credentials),
            max_bytes: self.caps.max_response_bytes,
            log: self.log.clone(),
            transport: self.transport.clone(),
            customer: self.customer.clone(),
        };
        Box::new(outbound.send(request, options, admitted))
    }
}

/// A request the policy and the caps let through.
struct Admitted {
    provider: Provider,
    route: &'static Route,
    attempt: u32,
    target: String,
    /// Holds its place among the requests waiting at once.
    _in_flight: InFlight,
}

impl Egress {
    /// The policy's verdict on where the request goes, then the caps on
    /// requests per run and waiting at once. Counted before any DNS lookup.
    fn admit(&self, request: &http::Request<WasiBody>) -> Result<Admitted, Refusal> {
        let (provider, route) = self
            .policy
            .check(request.method().as_str(), request.uri())?;
        let target = request.uri().to_string();
        // A guest that does not say (another component) makes first tries.
        let attempt = request
            .headers()
            .get(ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&n| n >= 1)
            .unwrap_or(1);
        let sent = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.sent += 1;
            if provider == Provider::Stripe && request.method() == http::Method::POST {
                log.stripe_posts += 1;
            }
            log.sent
        };
        if sent > self.caps.max_requests {
            let reason = format!("more than {} requests in one run", self.caps.max_requests);
            return Err(Refusal { target, reason });
        }
        let in_flight = InFlight::enter(&self.in_flight);
        if in_flight.count > MAX_IN_FLIGHT {
            let reason = format!("more than {MAX_IN_FLIGHT} requests waiting at once");
            return Err(Refusal { target, reason });
        }
        Ok(Admitted {
            provider,
            route,
            attempt,
            target,
            _in_flight: in_flight,
        })
    }
}

/// Drops any credential the guest set and attaches the provider's own key.
fn attach_key(
    request: &mut http::Request<WasiBody>,
    provider: Provider,
    credentials: &Credentials,
) {
    let headers = request.headers_mut();
    let forged: Vec<_> = headers
        .keys()
        .filter(|n| is_credential_header(n))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    headers.insert(
        provider.credential_header(),
        provider.credential(credentials),
    );
}

/// The guest's timeouts, none longer than `cap`.
fn bounded(options: Option<RequestOptions>, cap: Duration) -> RequestOptions {
    let clamp = |asked: Option<Duration>| Some(asked.map_or(cap, |d| d.min(cap)));
    RequestOptions {
        connect_timeout: clamp(options.and_then(|o| o.connect_timeout)),
        first_byte_timeout: clamp(options.and_then(|o| o.first_byte_timeout)),
        between_bytes_timeout: clamp(options.and_then(|o| o.between_bytes_timeout)),
    }
}

/// What sending an admitted request needs, moved into its future.
struct Outbound {
    pace: Option<Arc<StripePace>>,
    observer: Option<Observer>,
    concurrency: Option<Arc<Concurrency>>,
    redactor: Redactor,
    max_bytes: u64,
    log: Arc<Mutex<RunLog>>,
    transport: Transport,
    customer: String,
}

impl Outbound {
    /// Waits for the pace, sends, reports the exchange, and hands the guest a
    /// response whose headers and body are scrubbed of keys and capped.
    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: RequestOptions,
        admitted: Admitted,
    ) -> wasmtime_wasi_http::Result<(
        http::Response<WasiBody>,
        Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    )> {
        // A place among the requests at once first, so the pace's slots go
        // to requests that can leave.
        let concurrency = self.concurrency.clone();
        let place = match &concurrency {
            Some(concurrency) => Some(concurrency.request().await),
            None => None,
        };
        let pace = self.pace.as_ref().map(|pace| pace.of(admitted.route));
        if let Some(pace) = pace {
            pace.acquire().await;
        }
        let method = request.method().to_string();
        let post_to_stripe =
            admitted.provider == Provider::Stripe && request.method() == http::Method::POST;
        let started = Instant::now();
        let sent = match self.transport.send(request, options).await {
            Ok(response) => Ok(response),
            Err(not_sent) => {
                let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
                if not_sent.before_sending && post_to_stripe {
                    log.stripe_posts_unsent += 1;
                }
                if let Some(reason) = not_sent.certificate {
                    log.refusals.push(Refusal {
                        target: admitted.target.clone(),
                        reason,
                    });
                }
                Err(not_sent.error)
            }
        };
        if let (Some(pace), Ok(response)) = (pace, &sent)
            && response.status() == http::StatusCode::TOO_MANY_REQUESTS
        {
            pace.back_off(Instant::now());
        }
        if let Some(place) = &place
            && pushed_back(&sent)
        {
            place.pushed_back();
        }
        if let Some(observe) = &self.observer {
            observe(&Exchange {
                provider: admitted.provider,
                route: admitted.route.step,
                customer: self.customer.clone(),
                attempt: admitted.attempt,
                method,
                url: admitted.target.clone(),
                result: sent
                    .as_ref()
                    .map(|response| response.status().as_u16())
                    .map_err(|e| e.to_string()),
                elapsed: started.elapsed(),
            });
        }
        let mut response = sent?;
        for value in response.headers_mut().values_mut() {
            if self.redactor.contains_key(value.as_bytes()) {
                *value = HeaderValue::from_static("[redacted]");
            }
        }
        let Outbound {
            redactor,
            max_bytes,
            log,
            ..
        } = self;
        let response = response.map(|body| {
            Inbound {
                inner: body.boxed_unsync(),
                left: max_bytes,
                url: admitted.target,
                log,
                redactor,
                done: false,
            }
            .boxed_unsync()
        });
        // The pool drives the connection; nothing is left for the guest to await.
        let io = async { Ok(()) };
        Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
    }
}

/// Counts a request as waiting until dropped.
struct InFlight {
    counter: Arc<AtomicUsize>,
    count: usize,
}

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        InFlight {
            counter: counter.clone(),
            count,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body on its way to the guest: capped in size, scrubbed of keys.
struct Inbound {
    inner: WasiBody,
    left: u64,
    url: String,
    log: Arc<Mutex<RunLog>>,
    redactor: Redactor,
    done: bool,
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    let tail = self.redactor.finish();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            };
            match self.left.checked_sub(data.len() as u64) {
                Some(left) => self.left = left,
                None => {
                    let url = self.url.clone();
                    self.log
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .oversized
                        .push(url);
                    self.done = true;
                    return Poll::Ready(Some(Err(
                        wasmtime_wasi_http::Error::HttpResponseBodySize(None),
                    )));
                }
            }
            let clean = self.redactor.push(&data);
            if !clean.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(clean)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Redaction changes lengths: promise nothing.
        SizeHint::default()
    }
}

/// The provider asked for less at once: too many requests, unavailable, or
/// no answer in time.
fn pushed_back<T>(sent: &Result<http::Response<T>, wasmtime_wasi_http::Error>) -> bool {
    use wasmtime_wasi_http::Error as E;
    match sent {
        Ok(response) => matches!(
            response.status(),
            http::StatusCode::TOO_MANY_REQUESTS | http::StatusCode::SERVICE_UNAVAILABLE
        ),
        Err(error) => matches!(
            error,
            E::ConnectionTimeout
                | E::ConnectionReadTimeout
                | E::ConnectionWriteTimeout
                | E::HttpResponseTimeout
        ),
    }
}
