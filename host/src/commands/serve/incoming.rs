//! `serve`'s incoming handler: one request answered by the component's
//! `wasi:http/incoming-handler` in a fresh instance, and the host's own JSON
//! answer when the sandbox's verdict overrules the guest's.

use crate::bindings::WorkflowError;
use crate::outcome::{ExitStatus, Failure};
use crate::sandbox::verdict::classify;
use crate::sandbox::{RunConfig, RunState, Sandbox, take_log};
use crate::secrets::Credentials;
use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use usage_sync_report::{Delivery, keys};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Marks a `serve` answer the host made because the run failed in the
/// sandbox (its exit status), not the component's own answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostFailure(pub(crate) u8);

/// Answers one HTTP request with the component's `wasi:http/incoming-handler`,
/// in a fresh instance under the same policy, keys and limits as a run. The
/// guest's environment holds the two provider URLs, never a key, and says
/// that the host checked the caller's token (which the guest never sees:
/// the `Authorization` header is removed).
pub(crate) async fn answer(
    sandbox: &Sandbox,
    proxy: &ProxyPre<RunState>,
    config: &RunConfig,
    request: hyper::Request<Bytes>,
) -> Response<HyperOutgoingBody> {
    match handle(sandbox, proxy.clone(), config, request).await {
        Ok(response) => response,
        Err(failure) => {
            let mut response = failure_response(&failure, &config.credentials);
            // For the host's metrics; extensions never go on the wire.
            response
                .extensions_mut()
                .insert(HostFailure(failure.exit_code()));
            response
        }
    }
}

async fn handle(
    sandbox: &Sandbox,
    proxy: ProxyPre<RunState>,
    config: &RunConfig,
    request: hyper::Request<Bytes>,
) -> Result<Response<HyperOutgoingBody>, Failure> {
    let env = [
        ("AMBERFLO_BASE_URL", config.endpoints.amberflo_url.as_str()),
        ("STRIPE_BASE_URL", config.endpoints.stripe_url.as_str()),
        (keys::SERVE_AUTH_ENV, keys::SERVE_AUTH_BY_HOST),
    ];
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(http::header::AUTHORIZATION);
    let body = Full::new(body).map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
    let request = hyper::Request::from_parts(parts, body);
    let (mut store, log) = sandbox.store(config, &env, "");
    let internal = |e: wasmtime::Error| Failure::Internal(format!("{e:#}"));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(internal)?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(internal)?;
    let limits = config.limits;
    let task = tokio::spawn(async move {
        let run = async {
            let instance = proxy.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        };
        let result = tokio::time::timeout(limits.deadline, run).await;
        (result, store.data().memory_exceeded())
    });
    // The guest writes its whole answer before `handle` returns: take it in
    // while the guest runs, then let the sandbox's verdict overrule it.
    let answer = async {
        match receiver.await {
            Ok(Ok(response)) => {
                let (parts, body) = response.into_parts();
                match body.collect().await {
                    Ok(body) => Ok(Some((parts, body.to_bytes()))),
                    Err(code) => Err(format!("{code:?}")),
                }
            }
            Ok(Err(code)) => Err(format!("{code:?}")),
            Err(_) => Ok(None),
        }
    };
    let (answer, finished) = tokio::join!(answer, task);
    let (result, memory_exceeded) =
        finished.map_err(|e| Failure::Internal(format!("the run's task failed: {e}")))?;
    let seen = take_log(&log);
    let result = result.map(|r| r.map(Ok::<(), WorkflowError>));
    let delivery = match seen.stripe_written() {
        true => Delivery::Unknown,
        false => Delivery::NotSent,
    };
    classify(result, memory_exceeded, seen, &limits)?;
    match answer {
        Ok(Some((mut parts, body))) => {
            // Scrubbing may change the length; hyper sets it from the body.
            let body = config.credentials.redact(&String::from_utf8_lossy(&body));
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, full(Bytes::from(body))))
        }
        Ok(None) => Err(Failure::Sandbox(
            "the component returned without answering the request".into(),
            delivery,
        )),
        Err(e) => Err(Failure::Sandbox(
            format!("the component's answer broke off: {e}"),
            delivery,
        )),
    }
}

/// The HTTP answer `usage-sync serve` gives for a failure of the host's own.
fn failure_response(failure: &Failure, credentials: &Credentials) -> Response<HyperOutgoingBody> {
    json_response(
        failure.http_status(),
        Bytes::from(credentials.redact(&failure.render())),
    )
}

pub(super) fn full(body: Bytes) -> HyperOutgoingBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: u16, body: Bytes) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
