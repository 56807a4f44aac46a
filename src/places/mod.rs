//! What is near a location: the `Places` trait and the one reply shape all
//! backends give clients (Google's legacy Nearby Search response).

mod cache;
mod google;
mod google_legacy;
mod http;
mod offline;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

pub use cache::Cached;
pub use google::Google;
pub use google_legacy::GoogleLegacy;
pub use offline::Offline;

use crate::config::{PlacesConfig, Provider};

/// One nearby search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Query {
    pub lat: f64,
    pub lon: f64,
    /// Radius in metres, 0 < radius <= 50,000.
    pub radius_m: f64,
    /// Most results wanted, 1..=20.
    pub bound: usize,
}

/// The legacy API's failure statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    RequestDenied,
    OverQueryLimit,
    InvalidRequest,
    UnknownError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::RequestDenied => "REQUEST_DENIED",
            Status::OverQueryLimit => "OVER_QUERY_LIMIT",
            Status::InvalidRequest => "INVALID_REQUEST",
            Status::UnknownError => "UNKNOWN_ERROR",
        }
    }

    /// The status for an HTTP error code from either Google API.
    pub fn from_http(code: u16) -> Status {
        match code {
            400 | 404 | 413 | 414 => Status::InvalidRequest,
            401 | 403 => Status::RequestDenied,
            429 => Status::OverQueryLimit,
            _ => Status::UnknownError,
        }
    }
}

/// A failed search, to be shown to the client in the legacy shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", status.as_str())]
pub struct PlacesError {
    pub status: Status,
    pub message: String,
}

impl PlacesError {
    pub fn new(status: Status, message: impl Into<String>) -> PlacesError {
        PlacesError {
            status,
            message: message.into(),
        }
    }
}

/// A places backend. Answers are legacy-shaped response objects.
pub trait Places: Send + Sync + 'static {
    fn nearby(&self, query: Query) -> BoxFuture<'static, Result<Value, PlacesError>>;
}

/// The legacy-shaped reply for a failure.
pub fn error_response(error: &PlacesError) -> Value {
    json!({
        "html_attributions": [],
        "results": [],
        "status": error.status.as_str(),
        "error_message": error.message,
    })
}

/// Runs `query` on `places` within `timeout` and returns the JSON text the
/// client gets: always legacy-shaped, at most `bound` results, never failing.
pub async fn search(places: &dyn Places, query: Query, timeout: Duration) -> Vec<u8> {
    answer(places, query, timeout).await.json
}

/// A search's reply and whether it reports a failure.
pub struct Answer {
    pub json: Vec<u8>,
    pub failed: bool,
}

/// [`search`], also telling whether the reply is a failure (a status other
/// than `OK` or `ZERO_RESULTS`).
pub async fn answer(places: &dyn Places, query: Query, timeout: Duration) -> Answer {
    let answer = match tokio::time::timeout(timeout, places.nearby(query)).await {
        Ok(answer) => answer,
        Err(_) => Err(PlacesError::new(
            Status::UnknownError,
            format!("places backend did not answer within {timeout:?}"),
        )),
    };
    let mut value = match answer {
        Ok(value) if value.is_object() => value,
        Ok(_) => error_response(&PlacesError::new(
            Status::UnknownError,
            "places backend answered with something other than an object",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "places search failed");
            error_response(&e)
        }
    };
    if let Some(results) = value.get_mut("results").and_then(Value::as_array_mut) {
        results.truncate(query.bound);
    }
    let failed = !matches!(
        value.get("status").and_then(Value::as_str),
        Some("OK" | "ZERO_RESULTS")
    );
    // Pretty JSON never contains an empty line, and has no trailing LF.
    let json = serde_json::to_vec_pretty(&value).unwrap_or_else(|_| b"{}".to_vec());
    Answer { json, failed }
}

/// The backend the configuration asks for. Google backends sit behind a
/// cache, because every upstream search can cost money; offline searches
/// are cheaper than a cache lookup.
pub fn from_config(config: &PlacesConfig) -> Result<Arc<dyn Places>, PlacesError> {
    let upstream: Arc<dyn Places> = match config.provider {
        Provider::Offline => return Ok(Arc::new(Offline::bundled())),
        Provider::Google => Arc::new(Google::new(config)?),
        Provider::GoogleLegacy => Arc::new(GoogleLegacy::new(config)?),
    };
    if config.cache_ttl.is_zero() {
        return Ok(upstream);
    }
    Ok(Arc::new(Cached::new(
        upstream,
        config.cache_ttl,
        config.cache_entries,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Value, PlacesError>);

    impl Places for Fixed {
        fn nearby(&self, _: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
            let answer = self.0.clone();
            Box::pin(async move { answer })
        }
    }

    struct Never;

    impl Places for Never {
        fn nearby(&self, _: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
            Box::pin(std::future::pending())
        }
    }

    const QUERY: Query = Query {
        lat: 34.0,
        lon: -118.0,
        radius_m: 1000.0,
        bound: 2,
    };

    fn parse(bytes: Vec<u8>) -> Value {
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("\n\n") && !text.ends_with('\n'), "{text}");
        serde_json::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn results_are_cut_to_the_bound() {
        let places = Fixed(Ok(json!({
            "html_attributions": [], "status": "OK",
            "results": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        })));
        let v = parse(search(&places, QUERY, Duration::from_secs(1)).await);
        assert_eq!(v["results"].as_array().unwrap().len(), 2);
        assert_eq!(v["status"], "OK");
    }

    #[tokio::test]
    async fn failures_keep_the_legacy_shape() {
        let places = Fixed(Err(PlacesError::new(Status::OverQueryLimit, "slow down")));
        let v = parse(search(&places, QUERY, Duration::from_secs(1)).await);
        assert_eq!(v["status"], "OVER_QUERY_LIMIT");
        assert_eq!(v["error_message"], "slow down");
        assert_eq!(v["results"], json!([]));
        assert_eq!(v["html_attributions"], json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_never_answers_times_out() {
        let v = parse(search(&Never, QUERY, Duration::from_secs(3)).await);
        assert_eq!(v["status"], "UNKNOWN_ERROR");
        assert!(v["error_message"]
            .as_str()
            .unwrap()
            .contains("did not answer"));
    }

    #[test]
    fn http_codes_map_to_legacy_statuses() {
        assert_eq!(Status::from_http(403), Status::RequestDenied);
        assert_eq!(Status::from_http(429), Status::OverQueryLimit);
        assert_eq!(Status::from_http(400), Status::InvalidRequest);
        assert_eq!(Status::from_http(503), Status::UnknownError);
    }
}
