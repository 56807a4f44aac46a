//! Google's Places API (New): `POST /v1/places:searchNearby`, answers mapped
//! to the legacy Nearby Search shape.

use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Client, StatusCode, Url};
use serde_json::{json, Map, Value};

use super::http;
use super::{Places, PlacesError, Query, Status};
use crate::config::PlacesConfig;

/// Where Google serves the API unless `places.url` says otherwise.
pub const DEFAULT_BASE: &str = "https://places.googleapis.com";

/// The path of the nearby search, under the base URL.
pub const PATH: &str = "/v1/places:searchNearby";

/// The fields asked for: exactly those the legacy shape needs.
pub const FIELD_MASK: &str = "places.id,places.displayName,places.formattedAddress,\
places.shortFormattedAddress,places.location,places.types,places.rating,\
places.userRatingCount,places.businessStatus";

/// The Places API (New) backend.
pub struct Google(http::Upstream);

impl Google {
    /// Fails (REQUEST_DENIED) without a key, or when the client cannot be
    /// built or the base URL is unusable.
    pub fn new(config: &PlacesConfig) -> Result<Self, PlacesError> {
        http::Upstream::new(config, DEFAULT_BASE, PATH).map(Google)
    }
}

impl Places for Google {
    fn nearby(&self, query: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        let client = self.0.client.clone();
        let url = self.0.url.clone();
        let key = Arc::clone(&self.0.key);
        let max_body = self.0.max_body;
        Box::pin(async move {
            search(&client, url, &key, max_body, query)
                .await
                .map_err(|e| http::redact(e, &key))
        })
    }
}

/// The request body for `query`.
pub fn request_body(query: &Query) -> Value {
    json!({
        "maxResultCount": query.bound.clamp(1, 20),
        "locationRestriction": {
            "circle": {
                "center": {"latitude": query.lat, "longitude": query.lon},
                "radius": query.radius_m,
            }
        }
    })
}

async fn search(
    client: &Client,
    url: Url,
    key: &str,
    max_body: usize,
    query: Query,
) -> Result<Value, PlacesError> {
    let mut key_value = HeaderValue::from_str(key).map_err(|_| {
        PlacesError::new(
            Status::RequestDenied,
            "places.key holds characters an HTTP header cannot carry",
        )
    })?;
    key_value.set_sensitive(true);
    let request = client
        .post(url)
        .header("X-Goog-Api-Key", key_value)
        .header("X-Goog-FieldMask", FIELD_MASK)
        .header(CONTENT_TYPE, "application/json")
        .body(request_body(&query).to_string());
    let value = http::fetch_json(request, max_body, http_error).await?;
    to_legacy(&value)
}

/// Google's error reply (`{"error": {"code", "message", "status"}}`) as a
/// legacy failure.
pub fn http_error(code: StatusCode, body: &[u8]) -> PlacesError {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").filter(|e| e.is_object()).cloned());
    let Some(error) = error else {
        let detail = http::excerpt(body);
        let mut message = format!("places service answered HTTP {code}");
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(&detail);
        }
        return PlacesError::new(Status::from_http(code.as_u16()), message);
    };
    let google_status = error.get("status").and_then(Value::as_str).unwrap_or("");
    let status = match google_status {
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => Status::RequestDenied,
        "RESOURCE_EXHAUSTED" => Status::OverQueryLimit,
        "INVALID_ARGUMENT" => Status::InvalidRequest,
        _ => Status::from_http(code.as_u16()),
    };
    let message = match error.get("message").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => m.to_string(),
        _ if !google_status.is_empty() => {
            format!("places service answered HTTP {code} ({google_status})")
        }
        _ => format!("places service answered HTTP {code}"),
    };
    PlacesError::new(status, message)
}

/// A searchNearby reply as a legacy Nearby Search response.
pub fn to_legacy(reply: &Value) -> Result<Value, PlacesError> {
    let malformed = |what: &str| {
        PlacesError::new(
            Status::UnknownError,
            format!("places service sent a malformed response: {what}"),
        )
    };
    let reply = reply
        .as_object()
        .ok_or_else(|| malformed("not an object"))?;
    let places = match reply.get("places") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(places)) => &places[..],
        Some(_) => return Err(malformed("\"places\" is not a list")),
    };
    let results: Vec<Value> = places
        .iter()
        .filter_map(Value::as_object)
        .map(place_to_legacy)
        .collect();
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    Ok(json!({
        "html_attributions": [],
        "results": results,
        "status": status,
    }))
}

/// One `places[]` entry as a legacy result.
fn place_to_legacy(place: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    if let Some(name) = place
        .get("displayName")
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str)
    {
        out.insert("name".into(), name.into());
    }
    if let Some(id) = place.get("id").and_then(Value::as_str) {
        out.insert("place_id".into(), id.into());
    }
    if let Some(location) = place.get("location") {
        let lat = location.get("latitude").and_then(Value::as_f64);
        let lng = location.get("longitude").and_then(Value::as_f64);
        if let (Some(lat), Some(lng)) = (lat, lng) {
            out.insert(
                "geometry".into(),
                json!({"location": {"lat": lat, "lng": lng}}),
            );
        }
    }
    let address = ["shortFormattedAddress", "formattedAddress"]
        .iter()
        .find_map(|field| place.get(*field).and_then(Value::as_str));
    if let Some(address) = address {
        out.insert("vicinity".into(), address.into());
    }
    if let Some(types) = place.get("types").filter(|t| t.is_array()) {
        out.insert("types".into(), types.clone());
    }
    if let Some(rating) = place.get("rating").filter(|r| r.is_number()) {
        out.insert("rating".into(), rating.clone());
    }
    if let Some(count) = place.get("userRatingCount").filter(|c| c.is_number()) {
        out.insert("user_ratings_total".into(), count.clone());
    }
    if let Some(status) = place.get("businessStatus").filter(|s| s.is_string()) {
        out.insert("business_status".into(), status.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_maps_to_the_legacy_result_shape() {
        let reply = json!({"places": [{
            "id": "abc",
            "displayName": {"text": "Royce Hall", "languageCode": "en"},
            "formattedAddress": "340 Royce Dr, Los Angeles, CA 90095, USA",
            "location": {"latitude": 34.0729, "longitude": -118.4421},
            "types": ["university", "point_of_interest"],
            "rating": 4.8,
            "userRatingCount": 1200,
            "businessStatus": "OPERATIONAL",
        }, {"id": "bare"}]});
        let v = to_legacy(&reply).unwrap();
        assert_eq!(v["status"], "OK");
        assert_eq!(v["html_attributions"], json!([]));
        assert_eq!(
            v["results"][0],
            json!({
                "name": "Royce Hall",
                "place_id": "abc",
                "geometry": {"location": {"lat": 34.0729, "lng": -118.4421}},
                "vicinity": "340 Royce Dr, Los Angeles, CA 90095, USA",
                "types": ["university", "point_of_interest"],
                "rating": 4.8,
                "user_ratings_total": 1200,
                "business_status": "OPERATIONAL",
            })
        );
        assert_eq!(v["results"][1], json!({"place_id": "bare"}));
    }

    #[test]
    fn no_places_is_zero_results_and_junk_is_unknown_error() {
        assert_eq!(to_legacy(&json!({})).unwrap()["status"], "ZERO_RESULTS");
        assert_eq!(
            to_legacy(&json!({"places": []})).unwrap()["status"],
            "ZERO_RESULTS"
        );
        let e = to_legacy(&json!([])).unwrap_err();
        assert_eq!(e.status, Status::UnknownError);
        let e = to_legacy(&json!({"places": 3})).unwrap_err();
        assert_eq!(e.status, Status::UnknownError);
    }

    #[test]
    fn google_error_statuses_map_to_legacy_ones() {
        let body = |status: &str| {
            json!({"error": {"code": 400, "message": "m", "status": status}}).to_string()
        };
        let code = StatusCode::BAD_REQUEST;
        for (google, legacy) in [
            ("PERMISSION_DENIED", Status::RequestDenied),
            ("UNAUTHENTICATED", Status::RequestDenied),
            ("RESOURCE_EXHAUSTED", Status::OverQueryLimit),
            ("INVALID_ARGUMENT", Status::InvalidRequest),
            ("FAILED_PRECONDITION", Status::InvalidRequest),
        ] {
            let e = http_error(code, body(google).as_bytes());
            assert_eq!((e.status, e.message.as_str()), (legacy, "m"), "{google}");
        }
        let e = http_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.status, Status::UnknownError);
        assert_eq!(
            e.message,
            "places service answered HTTP 502 Bad Gateway: <html>bad gateway</html>"
        );
    }
}
