//! Outgoing HTTP over the standard `wasi:http` imports.
//!
//! Written against the interfaces directly rather than through waki: waki 0.5's
//! `send()` fails with `StreamError::Closed` when a server has read a
//! `Content-Length` body and the host drops the stream before waki's final
//! `check-write`, a race we hit on every host. Here a closed request stream
//! only ends the write; the response, or the error the host gives, decides.

use crate::prelude::*;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, HeaderError, IncomingBody, Method, OutgoingBody,
    OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// Every request names the component and its version, so providers' logs
/// tell its traffic apart.
pub const USER_AGENT: &str = concat!("usage-sync/", env!("CARGO_PKG_VERSION"));

/// Responses larger than this are refused (the host may cap lower).
const MAX_RESPONSE: usize = 16 << 20;

/// The response headers the workflow reads: Stripe's request id (for
/// support; first, read from every answer) and the retry advice of either
/// provider (read only from an answer that is not a success). Only these
/// are taken from the host, each by name: reading every header (Stripe sends
/// a dozen or more) cost four allocations a header in the component.
pub const READ_HEADERS: [&str; 3] = ["request-id", "stripe-should-retry", "retry-after"];

/// A provider's answer.
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Those of [`READ_HEADERS`] asked for (see there) that it has, names
    /// lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of a header (`name` lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Stripe's `Request-Id`, for support tickets.
    pub fn request_id(&self) -> Option<String> {
        self.header("request-id").map(str::to_string)
    }
}

/// A request that got no complete answer.
#[derive(Debug)]
pub struct NoAnswer {
    /// What happened, for the user.
    pub message: String,
    /// False only when the request certainly never reached the provider.
    pub maybe_sent: bool,
    /// A transport fault worth another attempt (not a refusal by the host).
    pub retryable: bool,
}

impl NoAnswer {
    fn not_sent(message: impl Into<String>) -> NoAnswer {
        NoAnswer {
            message: message.into(),
            maybe_sent: false,
            retryable: false,
        }
    }
}

/// POSTs `body` with a `Content-Length` (never chunked: strict servers and
/// proxies refuse chunked POSTs).
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Reply, NoAnswer> {
    send(Method::Post, url, headers, Some(body))
}

/// GETs `url`: a read, with no body.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Reply, NoAnswer> {
    send(Method::Get, url, headers, None)
}

fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Reply, NoAnswer> {
    start(method, url, headers, body)?.wait()
}

/// A request on its way, its answer not yet taken: the host carries it on
/// while the component does something else, so two reads that do not depend
/// on each other take one round trip, not two.
pub struct Pending {
    future: FutureIncomingResponse,
}

/// GETs `url` without waiting for the answer: [`Pending::wait`] takes it.
pub fn start_get(url: &str, headers: &[(&str, &str)]) -> Result<Pending, NoAnswer> {
    start(Method::Get, url, headers, None)
}

fn start(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Pending, NoAnswer> {
    let (scheme, authority, path) = split_url(url)
        .ok_or_else(|| NoAnswer::not_sent(format!("`{url}` is not an http(s) URL")))?;
    let length = body.map(|b| b.len().to_string());
    let length = length.as_deref().map(|l| ("Content-Length", l));
    let fields = fields(headers.iter().chain(length.as_ref()))?;
    let request = OutgoingRequest::new(fields);
    let unset = |what: &str| NoAnswer::not_sent(format!("the host refused the request's {what}"));
    request.set_method(&method).map_err(|()| unset("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| unset("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| unset("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| unset("path"))?;
    // A GET never takes the body stream, so the host sends none (no chunking).
    let outgoing = match body {
        Some(body) => Some((request.body().map_err(|()| unset("body"))?, body)),
        None => None,
    };

    let future = outgoing_handler::handle(request, None).map_err(|code| failure(&code))?;
    if let Some((outgoing, body)) = outgoing {
        write_body(&outgoing, body);
        // A body cut short by the peer makes `finish` fail; the response says why.
        let _ = OutgoingBody::finish(outgoing, None);
    }
    Ok(Pending { future })
}

impl Pending {
    /// Waits for the answer and reads it whole.
    pub fn wait(self) -> Result<Reply, NoAnswer> {
        let future = self.future;
        // Waited for first: an answer is almost never in when it is asked
        // for, and a `get` that finds none is one more trip through the host.
        let ready = future.subscribe();
        let response = loop {
            ready.block();
            if let Some(result) = future.get() {
                break result;
            }
        };
        drop(ready);
        let response = response
            .map_err(|()| NoAnswer::not_sent("the response was already taken"))?
            .map_err(|code| failure(&code))?;
        let status = response.status();
        let fields = response.headers();
        let mut headers = Vec::new();
        // The retry advice matters only when the answer is not a success.
        let wanted = match status {
            200..=299 => &READ_HEADERS[..1],
            _ => &READ_HEADERS[..],
        };
        for &name in wanted {
            // Field names are case-insensitive (RFC 9110); so is the lookup.
            if let Some(value) = fields.get(name).into_iter().next() {
                headers.push((name.into(), String::from_utf8_lossy(&value).into_owned()));
            }
        }
        let lost_body = |(message, retryable): (String, bool)| NoAnswer {
            message: format!("HTTP {status}, then the body could not be read: {message}"),
            maybe_sent: true,
            retryable,
        };
        let incoming = response
            .consume()
            .map_err(|()| lost_body(("no body".into(), true)))?;
        let body = read_body(incoming).map_err(lost_body)?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// Writes as much of `body` as the stream takes; stops quietly when it closes.
/// In pieces of what one `blocking-write-and-flush` takes (a meter event is
/// one piece): one trip through the host, where `check-write`, `write`,
/// `flush` and a pollable took five.
fn write_body(outgoing: &OutgoingBody, body: &[u8]) {
    /// The most `blocking-write-and-flush` takes at once (WASI 0.2).
    const PIECE: usize = 4096;
    let Ok(stream) = outgoing.write() else { return };
    for piece in body.chunks(PIECE) {
        if stream.blocking_write_and_flush(piece).is_err() {
            return;
        }
    }
}

/// The body, or why not and whether trying again could help.
fn read_body(incoming: IncomingBody) -> Result<Vec<u8>, (String, bool)> {
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| ("the body stream was already taken".to_string(), false))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                // Most answers come in one chunk: kept, not copied.
                Ok(chunk) if body.is_empty() => body = chunk,
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasip2::http::types::http_error_code(&e) {
                        Some(code) => (describe(&code), !refused_by_host(&code)),
                        None => (e.to_debug_string(), true),
                    });
                }
            }
            if body.len() > MAX_RESPONSE {
                return Err((format!("the body is over {MAX_RESPONSE} bytes"), false));
            }
        }
    }
    // Read to its end: dropped, not `finish`ed for trailers no answer has
    // (a trip through the host for the future, another to drop it).
    drop(incoming);
    Ok(body)
}

/// The request's headers in one call (`from-list`), not a call per header:
/// each is a trip through the host. Only when the host refuses one are they
/// appended one by one, to name it.
fn fields<'h>(
    headers: impl Iterator<Item = &'h (&'h str, &'h str)> + Clone,
) -> Result<Fields, NoAnswer> {
    let entries: Vec<(String, Vec<u8>)> = headers
        .clone()
        .map(|(name, value)| ((*name).into(), value.as_bytes().into()))
        .collect();
    let refused = |e: HeaderError| match e {
        HeaderError::InvalidSyntax => "invalid syntax",
        HeaderError::Forbidden => "forbidden",
        HeaderError::Immutable => "immutable",
    };
    Fields::from_list(&entries).map_err(|e| {
        let one_by_one = Fields::new();
        for (name, value) in headers {
            if let Err(e) = one_by_one.append(name, value.as_bytes()) {
                return NoAnswer::not_sent(format!("header {name}: {}", refused(e)));
            }
        }
        NoAnswer::not_sent(format!("headers: {}", refused(e)))
    })
}

fn split_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        (Scheme::Http, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then_some((scheme, authority, path))
}

fn failure(code: &ErrorCode) -> NoAnswer {
    NoAnswer {
        message: describe(code),
        maybe_sent: !never_sent(code),
        retryable: !refused_by_host(code),
    }
}

/// The host's own refusals: the same request would be refused again.
fn refused_by_host(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::HttpRequestDenied
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpResponseBodySize(_)
            | ErrorCode::TlsCertificateError
    )
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

/// What went wrong, in words, or as `wasi:http` names the error. Not the
/// bindings' `Debug`: its text (every variant's Rust name, escaped payloads)
/// cost the component about 5 KB.
fn describe(code: &ErrorCode) -> String {
    let name = match code {
        ErrorCode::ConnectionRefused => "connection refused",
        ErrorCode::ConnectionTimeout => "connection timed out",
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => "no response in time",
        ErrorCode::ConnectionTerminated => "the connection was closed before a response",
        ErrorCode::HttpRequestDenied => "the host refused the request",
        ErrorCode::HttpResponseBodySize(_) => "the response body is over the host's limit",
        ErrorCode::DnsTimeout => "DNS timeout",
        ErrorCode::DnsError(e) => {
            return with_detail("DNS error", e.rcode.as_deref());
        }
        ErrorCode::DestinationNotFound => "destination not found",
        ErrorCode::DestinationUnavailable => "destination unavailable",
        ErrorCode::DestinationIpProhibited => "destination IP prohibited",
        ErrorCode::DestinationIpUnroutable => "destination IP unroutable",
        ErrorCode::ConnectionWriteTimeout => "connection write timeout",
        ErrorCode::ConnectionLimitReached => "connection limit reached",
        ErrorCode::TlsProtocolError => "TLS protocol error",
        ErrorCode::TlsCertificateError => "TLS certificate error",
        ErrorCode::TlsAlertReceived(alert) => {
            return with_detail("TLS alert received", alert.alert_message.as_deref());
        }
        ErrorCode::HttpRequestLengthRequired => "HTTP request length required",
        ErrorCode::HttpRequestBodySize(_) => "HTTP request body size",
        ErrorCode::HttpRequestMethodInvalid => "HTTP request method invalid",
        ErrorCode::HttpRequestUriInvalid => "HTTP request URI invalid",
        ErrorCode::HttpRequestUriTooLong => "HTTP request URI too long",
        ErrorCode::HttpRequestHeaderSectionSize(_) => "HTTP request header section size",
        ErrorCode::HttpRequestHeaderSize(_) => "HTTP request header size",
        ErrorCode::HttpRequestTrailerSectionSize(_) => "HTTP request trailer section size",
        ErrorCode::HttpRequestTrailerSize(_) => "HTTP request trailer size",
        ErrorCode::HttpResponseIncomplete => "HTTP response incomplete",
        ErrorCode::HttpResponseHeaderSectionSize(_) => "HTTP response header section size",
        ErrorCode::HttpResponseHeaderSize(_) => "HTTP response header size",
        ErrorCode::HttpResponseTrailerSectionSize(_) => "HTTP response trailer section size",
        ErrorCode::HttpResponseTrailerSize(_) => "HTTP response trailer size",
        ErrorCode::HttpResponseTransferCoding(_) => "HTTP response transfer coding",
        ErrorCode::HttpResponseContentCoding(_) => "HTTP response content coding",
        ErrorCode::HttpUpgradeFailed => "HTTP upgrade failed",
        ErrorCode::HttpProtocolError => "HTTP protocol error",
        ErrorCode::LoopDetected => "loop detected",
        ErrorCode::ConfigurationError => "configuration error",
        ErrorCode::InternalError(message) => {
            return with_detail("internal error", message.as_deref());
        }
    };
    name.into()
}

fn with_detail(name: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{name}: {detail}"),
        None => name.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let (s, a, p) = split_url("https://api.stripe.com/v1/billing/meter_events").unwrap();
        assert!(matches!(s, Scheme::Https));
        assert_eq!((a, p), ("api.stripe.com", "/v1/billing/meter_events"));
        let (s, a, p) = split_url("http://127.0.0.1:9").unwrap();
        assert!(matches!(s, Scheme::Http));
        assert_eq!((a, p), ("127.0.0.1:9", "/"));
        assert!(split_url("ftp://x/").is_none());
        assert!(split_url("https:///x").is_none());
    }
}
