//! `serve`'s front door and server: the component's `POST /run` over HTTP,
//! each request in its own sandboxed instance under the same policy, keys and
//! limits as `run`.
//!
//! A front door stands before the sandbox: the caller's token (checked in
//! constant time; no token configured, no server), a cap on runs at once
//! (503 with `Retry-After` above it), a cap on the body, and deadlines on
//! reading the headers and the body (a slow client cannot hold a connection).
//! `GET /healthz` and `GET /metrics` (Prometheus) stand outside the token.
//! [`run`] serves until the shutdown future it is given resolves, then stops
//! accepting and lets runs in flight finish within the grace period (the CLI
//! passes SIGTERM and Ctrl-C; a test may pass anything).

use crate::metrics::ServeMetrics;
use crate::outcome::Failure;
use crate::sandbox::{RunConfig, RunState, Sandbox};
use crate::secrets::ServeToken;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The front door's limits.
#[derive(Clone, Copy, Debug)]
pub struct Door {
    /// Runs at once.
    pub max_runs: usize,
    /// Cap on a request body.
    pub max_body_bytes: usize,
    /// Time to send the headers, and then the body.
    pub read_timeout: Duration,
    /// After shutdown is asked for, how long runs in flight may take.
    pub grace_period: Duration,
}

/// What every connection shares: the sandbox and its configuration, behind
/// the front door.
pub struct App {
    sandbox: Sandbox,
    /// The component's `wasi:http/incoming-handler`, found once.
    proxy: ProxyPre<RunState>,
    config: RunConfig,
    token: ServeToken,
    door: Door,
    runs: Arc<Semaphore>,
    metrics: Arc<ServeMetrics>,
}

impl App {
    /// Runs in `sandbox` under `config`, for callers presenting `token`,
    /// within `door`'s limits; every provider request counted in `metrics`.
    /// Refused, before anything listens, when the component has no HTTP
    /// entry point.
    pub fn new(
        sandbox: Sandbox,
        config: RunConfig,
        token: ServeToken,
        door: Door,
        metrics: Arc<ServeMetrics>,
    ) -> Result<App, Failure> {
        let proxy = sandbox.proxy().ok_or_else(|| {
            Failure::BadInput(
                "the component does not export wasi:http/incoming-handler, which serve calls (a build without the default `http-handler` feature?)".into(),
            )
        })?;
        Ok(App {
            sandbox,
            proxy,
            config: config.observed(metrics.observer()),
            token,
            runs: Arc::new(Semaphore::new(door.max_runs)),
            door,
            metrics,
        })
    }
}

/// Serves connections from `listener` until `shutdown` resolves; then stops
/// accepting, asks every connection to close after its current request, and
/// waits up to the grace period. Returns how many were still open then.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(connection(client, app.clone(), stopped.clone()));
                }
                Err(e) => tracing::info!("usage-sync: accepting a connection: {e}"),
            },
        }
    }
    drop(listener);
    tracing::info!(
        "usage-sync: stopping: no new connections; waiting up to {} s for runs in flight",
        app.door.grace_period.as_secs_f64()
    );
    let _ = stop.send(true);
    let drained = tokio::time::timeout(app.door.grace_period, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => 0,
        Err(_) => {
            let open = connections.len();
            connections.shutdown().await;
            open
        }
    }
}

/// One connection: HTTP/1.1 with a deadline on each request's headers; told
/// to finish its current request and close when the server stops.
async fn connection(
    client: tokio::net::TcpStream,
    app: Arc<App>,
    mut stopped: watch::Receiver<bool>,
) {
    let read_timeout = app.door.read_timeout;
    let service = hyper::service::service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&app, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let connection = builder.serve_connection(TokioIo::new(client), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        // The guard wait_for returns must not live across an await.
        _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// `GET /healthz` and `GET /metrics` (no token: they carry no data), then
/// the front door and the sandbox; every answer counted by outcome.
async fn answer(app: &App, request: Request<Incoming>) -> Response<HyperOutgoingBody> {
    if request.method() == http::Method::GET {
        match request.uri().path() {
            "/healthz" => {
                return plain(
                    StatusCode::OK,
                    "application/json",
                    "{\"status\":\"ok\"}\n".into(),
                );
            }
            "/metrics" => {
                return plain(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    app.metrics.render(),
                );
            }
            _ => {}
        }
    }
    let response = guarded(app, request).await;
    let host_failure = response
        .extensions()
        .get::<super::incoming::HostFailure>()
        .map(|f| f.0);
    let outcome = match response.status().as_u16() {
        _ if host_failure == Some(crate::outcome::exit::SANDBOX) => "sandbox",
        200 => "ok",
        400 => "invalid-input",
        401 => "unauthorized",
        404 | 405 => "not-found",
        408 => "timeout",
        413 => "too-large",
        503 => "busy",
        502 => "failed",
        _ => "error",
    };
    app.metrics.run_ended(outcome);
    response
}

fn plain(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(super::incoming::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// The front door, then the sandbox: token, cap on runs, body.
async fn guarded(app: &App, request: Request<Incoming>) -> Response<HyperOutgoingBody> {
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !app.token.admits(authorization) {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "POST /run needs the header `Authorization: Bearer <token>` with the configured token; nothing was run",
        );
    }
    let Ok(_run) = app.runs.clone().try_acquire_owned() else {
        let mut busy = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            &format!(
                "{} runs are in flight, the most this server takes at once; nothing was run: retry later",
                app.door.max_runs
            ),
        );
        busy.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        return busy;
    };
    let (parts, body) = request.into_parts();
    let too_large = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            &format!(
                "the request body is over {} bytes; nothing was run",
                app.door.max_body_bytes
            ),
        )
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.door.max_body_bytes as u64) {
        return too_large();
    }
    let read = Limited::new(body, app.door.max_body_bytes).collect();
    let body = match tokio::time::timeout(app.door.read_timeout, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                &format!("the request body could not be read: {e}; nothing was run"),
            );
        }
        Err(_) => {
            return refusal(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                &format!(
                    "the request body did not arrive within {} s; nothing was run",
                    app.door.read_timeout.as_secs_f64()
                ),
            );
        }
    };
    let _in_flight = app.metrics.run_started();
    let request = Request::from_parts(parts, body);
    super::incoming::answer(&app.sandbox, &app.proxy, &app.config, request).await
}

/// An answer of the front door: `{"error": {"kind", "message"}}`.
fn refusal(status: StatusCode, kind: &str, message: &str) -> Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "error": { "kind": kind, "message": message } });
    let body = serde_json::to_string_pretty(&body).unwrap_or_default();
    plain(status, "application/json", body)
}
