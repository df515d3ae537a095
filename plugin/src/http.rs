//! Outgoing HTTP through `wasi:http`, via waki.

use waki::{Client, ErrorCode};

/// A provider's answer.
pub struct Reply {
    pub status: u16,
    /// Stripe's `Request-Id`, for support tickets.
    pub request_id: Option<String>,
    pub body: Vec<u8>,
}

/// A request that got no complete answer.
pub struct Failure {
    pub message: String,
    /// False only when the request certainly never reached the provider.
    pub maybe_sent: bool,
}

/// POSTs `body` with a `Content-Length`: waki would otherwise stream it chunked,
/// which strict servers and proxies refuse.
pub fn post(url: &str, headers: &[(&'static str, &str)], body: Vec<u8>) -> Result<Reply, Failure> {
    let response = Client::new()
        .post(url)
        .headers(headers.iter().map(|&(k, v)| (k, v.to_string())))
        .header("Content-Length", body.len().to_string())
        .body(body)
        .send()
        .map_err(|err| match err.downcast_ref::<ErrorCode>() {
            Some(code) => Failure {
                message: describe(code),
                maybe_sent: !never_sent(code),
            },
            // waki could not hand over the body: the host refused the request
            // or the connection closed before it was complete.
            None => Failure {
                message: err.to_string(),
                maybe_sent: false,
            },
        })?;
    let status = response.status_code();
    let request_id = response
        .header("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.body().map_err(|err| Failure {
        message: format!("HTTP {status}, then the body could not be read: {err}"),
        maybe_sent: true,
    })?;
    Ok(Reply {
        status,
        request_id,
        body,
    })
}

fn never_sent(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTimeout
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsProtocolError
            | ErrorCode::HttpRequestDenied
            | ErrorCode::HttpRequestUriInvalid
    )
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            "no response in time".into()
        }
        ErrorCode::ConnectionTerminated => "the connection was closed before a response".into(),
        ErrorCode::HttpRequestDenied => "the host refused the request".into(),
        ErrorCode::HttpResponseBodySize(_) => "the response body is over the host's limit".into(),
        other => format!("{other:?}"),
    }
}

/// The start of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}
