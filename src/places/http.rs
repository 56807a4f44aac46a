//! HTTP plumbing shared by the Google backends: the one client they use, a
//! body reader with a hard size cap, and the one mapping of transport
//! failures to legacy statuses.
//!
//! The API key must never reach an error message or a log line: messages
//! here are built from parts that cannot hold it (never a reqwest error's
//! `Display`, which names the URL), and [`redact`] scrubs whatever a backend
//! passes on from the far side.

use std::error::Error as _;

use bytes::{Bytes, BytesMut};
use reqwest::{Client, RequestBuilder, Response};

use super::{PlacesError, Status};
use crate::config::PlacesConfig;

/// The user agent every places request carries.
const USER_AGENT: &str = concat!("herd/", env!("CARGO_PKG_VERSION"));

/// The client both Google backends use: connect and whole-request timeouts
/// from `config.timeout` (the whole request includes reading the body), no
/// redirects.
pub(super) fn client(config: &PlacesConfig) -> Result<Client, PlacesError> {
    Client::builder()
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            PlacesError::new(
                Status::UnknownError,
                format!(
                    "could not set up the places HTTP client: {}",
                    root_cause(&e)
                ),
            )
        })
}

/// The configured API key, or the error a Google backend fails with without
/// one.
pub(super) fn key(config: &PlacesConfig) -> Result<String, PlacesError> {
    match config.key.as_deref() {
        Some(key) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(PlacesError::new(
            Status::RequestDenied,
            "places.key is not set: a Google places provider needs an API key (set HERD_PLACES__KEY)",
        )),
    }
}

/// `base` (the configured override, else `default`) joined with `path`.
pub(super) fn endpoint(
    config: &PlacesConfig,
    default: &str,
    path: &str,
) -> Result<reqwest::Url, PlacesError> {
    let base = config.url.as_deref().unwrap_or(default);
    let base = base.trim_end_matches('/');
    reqwest::Url::parse(&format!("{base}{path}")).map_err(|_| {
        PlacesError::new(
            Status::UnknownError,
            format!("places.url {base:?} is not a usable base URL"),
        )
    })
}

/// Sends `request`, mapping a failure to a `PlacesError`.
pub(super) async fn send(request: RequestBuilder) -> Result<Response, PlacesError> {
    request.send().await.map_err(map_error)
}

/// Reads the whole body of `response`, failing as soon as it passes
/// `max_body` bytes (never holding more than that).
pub(super) async fn read_body(
    mut response: Response,
    max_body: usize,
) -> Result<Bytes, PlacesError> {
    let too_large = || {
        PlacesError::new(
            Status::UnknownError,
            format!("places response is larger than the {max_body}-byte limit (places.max_body)"),
        )
    };
    let announced = response.content_length();
    if announced.is_some_and(|n| n > max_body as u64) {
        return Err(too_large());
    }
    let capacity = announced.map_or(0, |n| n as usize).min(max_body);
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(map_error)? {
        if chunk.len() > max_body - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The one mapping of reqwest failures to legacy statuses. Built from the
/// error's kind, host and innermost cause, never from its URL.
pub(super) fn map_error(error: reqwest::Error) -> PlacesError {
    let host = error
        .url()
        .and_then(|url| {
            let host = url.host_str()?;
            Some(match url.port_or_known_default() {
                Some(port) => format!(" at {host}:{port}"),
                None => format!(" at {host}"),
            })
        })
        .unwrap_or_default();
    let error = error.without_url();
    let cause = root_cause(&error);
    let message = if error.is_timeout() {
        "places request timed out".to_string()
    } else if error.is_connect() {
        format!("could not connect to the places service{host}: {cause}")
    } else if error.is_builder() {
        format!("could not build the places request: {cause}")
    } else if error.is_redirect() {
        format!("the places service{host} redirected: {cause}")
    } else if error.is_body() || error.is_decode() {
        format!("reading the places response{host} failed: {cause}")
    } else {
        format!("places request{host} failed: {cause}")
    };
    PlacesError::new(Status::UnknownError, message)
}

/// The innermost cause's text (the most specific one, such as "Connection
/// refused"), falling back to the error's own text.
fn root_cause(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !inner_text.is_empty() {
            text = inner_text;
        }
        source = inner.source();
    }
    text
}

/// `error` with every occurrence of `key` replaced, so that nothing the far
/// side echoes can leak it.
pub(super) fn redact(mut error: PlacesError, key: &str) -> PlacesError {
    error.message = scrub(error.message, key);
    if error.message.trim().is_empty() {
        error.message = format!("places search failed ({})", error.status.as_str());
    }
    error
}

/// `text` with every occurrence of `key` replaced.
pub(super) fn scrub(text: String, key: &str) -> String {
    if !key.is_empty() && text.contains(key) {
        text.replace(key, "[redacted]")
    } else {
        text
    }
}

/// `text` percent-encoded for a URL query value (everything but RFC 3986
/// unreserved characters).
pub(super) fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A short, single-line excerpt of `body` for error messages.
pub(super) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Sends `request` and decodes a JSON body of at most `max_body` bytes; a
/// non-success status becomes `on_error(status, body)`.
pub(super) async fn fetch_json(
    request: RequestBuilder,
    max_body: usize,
    on_error: fn(reqwest::StatusCode, &[u8]) -> PlacesError,
) -> Result<serde_json::Value, PlacesError> {
    let response = send(request).await?;
    let status = response.status();
    if !status.is_success() {
        // The status line alone decides the failure; the body only adds
        // detail, so a body that cannot be read still gives an answer.
        let body = read_body(response, max_body).await.unwrap_or_default();
        return Err(on_error(status, &body));
    }
    let body = read_body(response, max_body).await?;
    serde_json::from_slice(&body).map_err(|e| {
        PlacesError::new(
            Status::UnknownError,
            format!("places service sent a response that is not JSON: {e}"),
        )
    })
}

/// What both Google backends hold: the shared client, the endpoint, the
/// key and the body cap.
pub(super) struct Upstream {
    pub client: Client,
    pub url: reqwest::Url,
    pub key: std::sync::Arc<str>,
    pub max_body: usize,
}

impl Upstream {
    pub fn new(
        config: &PlacesConfig,
        default_base: &str,
        path: &str,
    ) -> Result<Upstream, PlacesError> {
        let key = key(config)?;
        Ok(Upstream {
            client: client(config)?,
            url: endpoint(config, default_base, path)?,
            key: key.into(),
            max_body: config.max_body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_keep_unreserved_bytes_only() {
        assert_eq!(query_value("AIza-_.~09"), "AIza-_.~09");
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn redaction_removes_the_key_and_never_leaves_an_empty_message() {
        let e = redact(
            PlacesError::new(Status::RequestDenied, "bad key SECRET (SECRET)"),
            "SECRET",
        );
        assert_eq!(e.message, "bad key [redacted] ([redacted])");
        let e = redact(PlacesError::new(Status::UnknownError, " "), "k");
        assert!(e.message.contains("UNKNOWN_ERROR"));
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(
            excerpt(b"<html>\n  <b>oops</b>\r\n</html>"),
            "<html> <b>oops</b> </html>"
        );
        let long = excerpt(&[b'x'; 1000]);
        assert!(long.len() <= 123 && long.ends_with("..."));
    }
}
