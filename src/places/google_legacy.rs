//! Google's legacy Places API: `GET /maps/api/place/nearbysearch/json`,
//! whose answers already have the shape clients get.

use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::{Client, StatusCode, Url};
use serde_json::{Map, Value};

use super::http;
use super::{Places, PlacesError, Query, Status};
use crate::config::PlacesConfig;

/// Where Google serves the API unless `places.url` says otherwise.
pub const DEFAULT_BASE: &str = "https://maps.googleapis.com";

/// The path of the nearby search, under the base URL.
pub const PATH: &str = "/maps/api/place/nearbysearch/json";

/// The legacy Places API backend.
pub struct GoogleLegacy(http::Upstream);

impl GoogleLegacy {
    /// Fails (REQUEST_DENIED) without a key, or when the client cannot be
    /// built or the base URL is unusable.
    pub fn new(config: &PlacesConfig) -> Result<Self, PlacesError> {
        http::Upstream::new(config, DEFAULT_BASE, PATH).map(GoogleLegacy)
    }
}

impl Places for GoogleLegacy {
    fn nearby(&self, query: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        let client = self.0.client.clone();
        let url = request_url(&self.0.url, &query, &self.0.key);
        let key = Arc::clone(&self.0.key);
        let max_body = self.0.max_body;
        Box::pin(async move {
            search(&client, url, &key, max_body, query.bound)
                .await
                .map_err(|e| http::redact(e, &key))
        })
    }
}

/// `endpoint?location=LAT,LNG&radius=METRES&key=KEY`, numbers in Rust's
/// shortest round-trip form (10 km is `10000`) and the comma left as is.
pub fn request_url(endpoint: &Url, query: &Query, key: &str) -> Url {
    let mut url = endpoint.clone();
    url.set_query(Some(&format!(
        "location={},{}&radius={}&key={}",
        query.lat,
        query.lon,
        query.radius_m,
        http::query_value(key)
    )));
    url
}

async fn search(
    client: &Client,
    url: Url,
    key: &str,
    max_body: usize,
    bound: usize,
) -> Result<Value, PlacesError> {
    let value = http::fetch_json(client.get(url), max_body, http_error).await?;
    pass_through(value, bound, key)
}

/// A non-2xx reply as a legacy failure, with the body's `error_message`
/// when it has one.
pub fn http_error(code: StatusCode, body: &[u8]) -> PlacesError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error_message")?.as_str().map(str::to_string))
        .filter(|m| !m.trim().is_empty());
    let message = message.unwrap_or_else(|| {
        let detail = http::excerpt(body);
        if detail.is_empty() {
            format!("places service answered HTTP {code}")
        } else {
            format!("places service answered HTTP {code}: {detail}")
        }
    });
    PlacesError::new(Status::from_http(code.as_u16()), message)
}

/// The legacy reply, checked and kept to the fields clients get (at most
/// `bound` results). Failure statuses pass through as the reply they are,
/// with an `error_message` added when Google gave none (and `key` scrubbed
/// from the one it gave).
pub fn pass_through(reply: Value, bound: usize, key: &str) -> Result<Value, PlacesError> {
    let malformed = |what: &str| {
        PlacesError::new(
            Status::UnknownError,
            format!("places service sent a malformed response: {what}"),
        )
    };
    let Value::Object(mut reply) = reply else {
        return Err(malformed("not an object"));
    };
    let status = match reply.remove("status") {
        Some(Value::String(status)) if !status.is_empty() => status,
        _ => return Err(malformed("no \"status\"")),
    };
    let list = |value: Option<Value>| match value {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let mut results = list(reply.remove("results"));
    results.truncate(bound);
    let mut out = Map::new();
    out.insert(
        "html_attributions".into(),
        Value::Array(list(reply.remove("html_attributions"))),
    );
    out.insert("results".into(), Value::Array(results));
    if let Some(token @ Value::String(_)) = reply.remove("next_page_token") {
        out.insert("next_page_token".into(), token);
    }
    let message = match reply.remove("error_message") {
        Some(Value::String(m)) if !m.trim().is_empty() => Some(http::scrub(m, key)),
        _ if !matches!(status.as_str(), "OK" | "ZERO_RESULTS") => {
            Some(format!("places service answered {status}"))
        }
        _ => None,
    };
    if let Some(message) = message {
        out.insert("error_message".into(), message.into());
    }
    out.insert("status".into(), status.into());
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_url_uses_shortest_numbers_and_a_literal_comma() {
        let endpoint = Url::parse("http://127.0.0.1:9/maps/api/place/nearbysearch/json").unwrap();
        let query = Query {
            lat: 34.06893,
            lon: -118.445127,
            radius_m: 10_000.0,
            bound: 5,
        };
        assert_eq!(
            request_url(&endpoint, &query, "k&y").as_str(),
            "http://127.0.0.1:9/maps/api/place/nearbysearch/json\
             ?location=34.06893,-118.445127&radius=10000&key=k%26y"
        );
    }

    #[test]
    fn replies_pass_through_with_only_the_legacy_fields() {
        let v = pass_through(
            json!({
                "html_attributions": [], "status": "OK", "next_page_token": "t",
                "results": [{"name": "a"}, {"name": "b"}], "debug": 1,
            }),
            1,
            "k",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"html_attributions": [], "status": "OK", "next_page_token": "t",
                   "results": [{"name": "a"}]})
        );
        let v = pass_through(json!({"status": "OVER_QUERY_LIMIT"}), 5, "k").unwrap();
        assert_eq!(v["status"], "OVER_QUERY_LIMIT");
        assert_eq!(v["results"], json!([]));
        assert!(!v["error_message"].as_str().unwrap().is_empty());
        let v = pass_through(
            json!({"status": "REQUEST_DENIED", "error_message": "bad key k3y"}),
            5,
            "k3y",
        )
        .unwrap();
        assert_eq!(v["error_message"], "bad key [redacted]");
        for junk in [json!([]), json!({"results": []}), json!({"status": 3})] {
            let e = pass_through(junk, 5, "k").unwrap_err();
            assert_eq!(e.status, Status::UnknownError);
        }
    }
}
