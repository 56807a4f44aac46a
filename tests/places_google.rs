//! The Google places backends against mock HTTP servers on real local ports
//! (never the real internet): exact requests, mapped replies, and every
//! failure coming out of `places::search` in the legacy shape.

use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

use herd::config::{PlacesConfig, Provider};
use herd::places::{self, Google, GoogleLegacy, Places, Query, Status};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{any, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "test-KEY-0123456789abcdef";

const FIELD_MASK: &str = "places.id,places.displayName,places.formattedAddress,\
places.shortFormattedAddress,places.location,places.types,places.rating,\
places.userRatingCount,places.businessStatus";

const NEW_PATH: &str = "/v1/places:searchNearby";
const LEGACY_PATH: &str = "/maps/api/place/nearbysearch/json";

/// kiwi.cs.ucla.edu's spot, 10 km, at most 2 results.
const QUERY: Query = Query {
    lat: 34.06893,
    lon: -118.445127,
    radius_m: 10_000.0,
    bound: 2,
};

/// Well above every backend timeout here, so failures are the backend's own.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Kind {
    New,
    Legacy,
}

const BOTH: [Kind; 2] = [Kind::New, Kind::Legacy];

fn config(kind: Kind, url: &str) -> PlacesConfig {
    PlacesConfig {
        provider: match kind {
            Kind::New => Provider::Google,
            Kind::Legacy => Provider::GoogleLegacy,
        },
        key: Some(KEY.to_string()),
        url: Some(url.to_string()),
        timeout: Duration::from_secs(3),
        max_body: 1 << 20,
        cache_ttl: Duration::ZERO,
        cache_entries: 0,
    }
}

fn backend(kind: Kind, config: &PlacesConfig) -> Box<dyn Places> {
    match kind {
        Kind::New => Box::new(Google::new(config).unwrap()),
        Kind::Legacy => Box::new(GoogleLegacy::new(config).unwrap()),
    }
}

/// Runs QUERY through `places::search` and parses the client's JSON.
async fn search(places: &dyn Places) -> Value {
    let bytes = places::search(places, QUERY, SEARCH_TIMEOUT).await;
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains("\n\n") && !text.ends_with('\n'), "{text}");
    assert!(!text.contains(KEY), "the key leaked into the reply: {text}");
    serde_json::from_str(&text).unwrap()
}

/// `reply` is a legacy-shaped failure with `status` and a useful message;
/// returns the message.
fn assert_failure(reply: &Value, status: &str) -> String {
    assert_eq!(reply["status"], status, "{reply:#}");
    assert_eq!(reply["results"], json!([]), "{reply:#}");
    assert_eq!(reply["html_attributions"], json!([]), "{reply:#}");
    let message = reply["error_message"].as_str().expect("error_message");
    assert!(!message.trim().is_empty(), "{reply:#}");
    assert!(!message.contains(KEY), "the key leaked: {message}");
    message.to_string()
}

/// Serves every request with `response` and runs QUERY on `kind` against it.
async fn answered_with(kind: Kind, response: ResponseTemplate) -> Value {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(response)
        .mount(&server)
        .await;
    let places = backend(kind, &config(kind, &server.uri()));
    search(places.as_ref()).await
}

fn new_api_places() -> Value {
    json!({"places": [
        {
            "id": "ChIJroyce",
            "displayName": {"text": "Royce Hall", "languageCode": "en"},
            "formattedAddress": "340 Royce Dr, Los Angeles, CA 90095, USA",
            "shortFormattedAddress": "340 Royce Dr, Los Angeles",
            "location": {"latitude": 34.0729, "longitude": -118.4421},
            "types": ["university", "point_of_interest", "establishment"],
            "rating": 4.8,
            "userRatingCount": 1234,
            "businessStatus": "OPERATIONAL",
        },
        {
            "id": "ChIJpowell",
            "displayName": {"text": "Powell Library"},
            "formattedAddress": "10740 Dickson Ct, Los Angeles, CA 90095, USA",
            "location": {"latitude": 34.0716, "longitude": -118.4422},
            "types": ["library"],
        },
        {
            "id": "ChIJthird",
            "displayName": {"text": "Third"},
            "location": {"latitude": 34.07, "longitude": -118.44},
        },
    ]})
}

#[tokio::test]
async fn new_api_sends_the_exact_request_and_maps_results_cut_to_the_bound() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(NEW_PATH))
        .and(header("x-goog-api-key", KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "maxResultCount": 2,
            "locationRestriction": {"circle": {
                "center": {"latitude": 34.06893, "longitude": -118.445127},
                "radius": 10000.0,
            }},
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(new_api_places()))
        .expect(1)
        .mount(&server)
        .await;
    let places = backend(Kind::New, &config(Kind::New, &server.uri()));
    let reply = search(places.as_ref()).await;

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.url.path(), NEW_PATH);
    assert_eq!(request.url.query(), None);
    let h = |name: &str| request.headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(h("x-goog-fieldmask"), Some(FIELD_MASK));
    assert!(!FIELD_MASK.contains('*'));
    assert_eq!(h("x-goog-api-key"), Some(KEY));
    assert_eq!(h("content-type"), Some("application/json"));
    assert!(h("user-agent").unwrap().starts_with("herd/"));

    assert_eq!(reply["status"], "OK");
    assert_eq!(reply["html_attributions"], json!([]));
    assert!(reply.get("error_message").is_none());
    assert_eq!(
        reply["results"],
        json!([
            {
                "name": "Royce Hall",
                "place_id": "ChIJroyce",
                "geometry": {"location": {"lat": 34.0729, "lng": -118.4421}},
                "vicinity": "340 Royce Dr, Los Angeles",
                "types": ["university", "point_of_interest", "establishment"],
                "rating": 4.8,
                "user_ratings_total": 1234,
                "business_status": "OPERATIONAL",
            },
            {
                "name": "Powell Library",
                "place_id": "ChIJpowell",
                "geometry": {"location": {"lat": 34.0716, "lng": -118.4422}},
                "vicinity": "10740 Dickson Ct, Los Angeles, CA 90095, USA",
                "types": ["library"],
            },
        ])
    );
}

#[tokio::test]
async fn new_api_empty_reply_is_zero_results() {
    let reply = answered_with(
        Kind::New,
        ResponseTemplate::new(200).set_body_json(json!({})),
    )
    .await;
    assert_eq!(
        reply,
        json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    );
}

#[tokio::test]
async fn legacy_sends_the_exact_request_and_passes_results_cut_to_the_bound() {
    let server = MockServer::start().await;
    let legacy = json!({
        "html_attributions": ["<a>attr</a>"],
        "next_page_token": "NEXT",
        "results": [{"name": "a", "place_id": "1"}, {"name": "b"}, {"name": "c"}],
        "status": "OK",
        "info_messages": ["dropped"],
    });
    Mock::given(method("GET"))
        .and(path(LEGACY_PATH))
        .and(query_param("location", "34.06893,-118.445127"))
        .and(query_param("radius", "10000"))
        .and(query_param("key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(legacy))
        .expect(1)
        .mount(&server)
        .await;
    let places = backend(Kind::Legacy, &config(Kind::Legacy, &server.uri()));
    let reply = search(places.as_ref()).await;

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].url.query(),
        Some(format!("location=34.06893,-118.445127&radius=10000&key={KEY}").as_str())
    );
    assert!(requests[0].body.is_empty());
    assert_eq!(
        reply,
        json!({
            "html_attributions": ["<a>attr</a>"],
            "next_page_token": "NEXT",
            "results": [{"name": "a", "place_id": "1"}, {"name": "b"}],
            "status": "OK",
        })
    );
}

#[tokio::test]
async fn legacy_radius_and_coordinates_use_the_shortest_form() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "ZERO_RESULTS"})))
        .mount(&server)
        .await;
    let places = GoogleLegacy::new(&config(Kind::Legacy, &server.uri())).unwrap();
    let query = Query {
        lat: -33.5,
        lon: 151.0,
        radius_m: 1500.5,
        bound: 20,
    };
    let bytes = places::search(&places, query, SEARCH_TIMEOUT).await;
    let reply: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        reply,
        json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests[0].url.query(),
        Some(format!("location=-33.5,151&radius=1500.5&key={KEY}").as_str())
    );
}

#[tokio::test]
async fn legacy_failure_statuses_pass_through_as_the_reply() {
    for status in [
        "REQUEST_DENIED",
        "OVER_QUERY_LIMIT",
        "INVALID_REQUEST",
        "UNKNOWN_ERROR",
    ] {
        let body = json!({
            "html_attributions": [], "results": [], "status": status,
            "error_message": format!("google says {status}"),
        });
        let reply =
            answered_with(Kind::Legacy, ResponseTemplate::new(200).set_body_json(body)).await;
        assert_eq!(
            assert_failure(&reply, status),
            format!("google says {status}")
        );
    }
    // Without Google's message, one is supplied.
    let reply = answered_with(
        Kind::Legacy,
        ResponseTemplate::new(200).set_body_json(json!({"status": "OVER_QUERY_LIMIT"})),
    )
    .await;
    assert_failure(&reply, "OVER_QUERY_LIMIT");
}

#[tokio::test]
async fn legacy_replies_without_a_status_or_not_objects_are_unknown_error() {
    for body in [json!({"results": []}), json!([1, 2]), json!({"status": 7})] {
        let reply =
            answered_with(Kind::Legacy, ResponseTemplate::new(200).set_body_json(body)).await;
        assert_failure(&reply, "UNKNOWN_ERROR");
    }
}

#[tokio::test]
async fn http_403_with_a_google_error_body_is_request_denied() {
    let body = json!({"error": {
        "code": 403,
        "message": "Requests from this API key are blocked.",
        "status": "PERMISSION_DENIED",
    }});
    let reply = answered_with(Kind::New, ResponseTemplate::new(403).set_body_json(&body)).await;
    assert_eq!(
        assert_failure(&reply, "REQUEST_DENIED"),
        "Requests from this API key are blocked."
    );
    let legacy =
        json!({"error_message": "The provided API key is invalid.", "status": "REQUEST_DENIED"});
    let reply = answered_with(
        Kind::Legacy,
        ResponseTemplate::new(403).set_body_json(legacy),
    )
    .await;
    assert_eq!(
        assert_failure(&reply, "REQUEST_DENIED"),
        "The provided API key is invalid."
    );
}

#[tokio::test]
async fn google_error_statuses_win_over_the_http_code() {
    for (google, legacy) in [
        ("RESOURCE_EXHAUSTED", "OVER_QUERY_LIMIT"),
        ("INVALID_ARGUMENT", "INVALID_REQUEST"),
        ("UNAUTHENTICATED", "REQUEST_DENIED"),
    ] {
        let body = json!({"error": {"code": 400, "message": "m", "status": google}});
        let reply = answered_with(Kind::New, ResponseTemplate::new(400).set_body_json(body)).await;
        assert_eq!(assert_failure(&reply, legacy), "m");
    }
}

#[tokio::test]
async fn http_429_is_over_query_limit() {
    for kind in BOTH {
        let reply = answered_with(kind, ResponseTemplate::new(429)).await;
        let message = assert_failure(&reply, "OVER_QUERY_LIMIT");
        assert!(message.contains("429"), "{kind:?}: {message}");
    }
}

#[tokio::test]
async fn http_500_with_a_non_json_body_is_unknown_error() {
    for kind in BOTH {
        let response = ResponseTemplate::new(500).set_body_raw(
            "<html><body>Internal\nServer Error</body></html>",
            "text/html",
        );
        let reply = answered_with(kind, response).await;
        let message = assert_failure(&reply, "UNKNOWN_ERROR");
        assert!(
            message.contains("500") && !message.contains('\n'),
            "{kind:?}: {message}"
        );
    }
}

#[tokio::test]
async fn malformed_json_on_200_is_unknown_error() {
    for kind in BOTH {
        let response =
            ResponseTemplate::new(200).set_body_raw(r#"{"places": [ {"#, "application/json");
        let reply = answered_with(kind, response).await;
        let message = assert_failure(&reply, "UNKNOWN_ERROR");
        assert!(message.contains("not JSON"), "{kind:?}: {message}");
    }
}

#[tokio::test]
async fn a_body_over_max_body_is_unknown_error_at_once() {
    let big = vec![b' '; 10 << 20];
    for kind in BOTH {
        let response = ResponseTemplate::new(200).set_body_raw(big.clone(), "application/json");
        let start = Instant::now();
        let reply = answered_with(kind, response).await;
        let message = assert_failure(&reply, "UNKNOWN_ERROR");
        assert!(message.contains("max_body"), "{kind:?}: {message}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{kind:?}: {:?}",
            start.elapsed()
        );
    }
}

/// A hand-written server that streams an endless chunked body (no length
/// announced): the reader must stop soon after the cap, not at the end.
#[tokio::test]
async fn a_streamed_body_is_cut_off_soon_after_max_body() {
    for kind in BOTH {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            let mut chunk = b"10000\r\n".to_vec();
            chunk.extend(std::iter::repeat_n(b' ', 0x10000));
            chunk.extend_from_slice(b"\r\n");
            let mut sent = 0usize;
            while sent < 256 << 20 {
                if socket.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += 0x10000;
            }
            sent
        });
        let places = backend(kind, &config(kind, &url));
        let start = Instant::now();
        let reply = search(places.as_ref()).await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{kind:?}: {:?}",
            start.elapsed()
        );
        let message = assert_failure(&reply, "UNKNOWN_ERROR");
        assert!(message.contains("max_body"), "{kind:?}: {message}");
        drop(places);
        let sent = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client kept reading")
            .unwrap();
        // 1 MiB cap; allow for socket buffers on both ends.
        assert!(sent < 64 << 20, "{kind:?}: server sent {sent} bytes");
    }
}

#[tokio::test]
async fn a_reply_slower_than_the_timeout_is_unknown_error() {
    for kind in BOTH {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"status": "OK", "results": []}))
                    .set_delay(Duration::from_secs(3)),
            )
            .mount(&server)
            .await;
        let mut config = config(kind, &server.uri());
        config.timeout = Duration::from_millis(300);
        let places = backend(kind, &config);
        let start = Instant::now();
        let reply = search(places.as_ref()).await;
        let elapsed = start.elapsed();
        let message = assert_failure(&reply, "UNKNOWN_ERROR");
        assert!(message.contains("timed out"), "{kind:?}: {message}");
        assert!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(2000),
            "{kind:?}: {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_unknown_error() {
    for kind in BOTH {
        let port = {
            let listener = StdListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut config = config(kind, &format!("http://127.0.0.1:{port}"));
        config.timeout = Duration::from_millis(300);
        let places = backend(kind, &config);
        let reply = search(places.as_ref()).await;
        let message = assert_failure(&reply, "UNKNOWN_ERROR");
        assert!(
            message.contains("could not connect") && message.contains(&port.to_string()),
            "{kind:?}: {message}"
        );
    }
}

#[tokio::test]
async fn a_key_echoed_back_by_the_server_is_redacted() {
    let body = json!({"error": {"code": 400, "message": format!("API key {KEY} not valid."), "status": "INVALID_ARGUMENT"}});
    let reply = answered_with(Kind::New, ResponseTemplate::new(400).set_body_json(body)).await;
    let message = assert_failure(&reply, "INVALID_REQUEST");
    assert!(
        message.starts_with("API key ") && message.ends_with(" not valid."),
        "{message}"
    );

    let legacy = json!({"status": "REQUEST_DENIED", "error_message": format!("key={KEY}")});
    let reply = answered_with(
        Kind::Legacy,
        ResponseTemplate::new(200).set_body_json(legacy),
    )
    .await;
    assert_failure(&reply, "REQUEST_DENIED");

    let reply = answered_with(
        Kind::Legacy,
        ResponseTemplate::new(502).set_body_string(format!("bad gateway for {KEY}")),
    )
    .await;
    assert_failure(&reply, "UNKNOWN_ERROR");
}

#[test]
fn a_missing_key_is_request_denied() {
    for kind in BOTH {
        for key in [None, Some(String::new())] {
            let mut config = config(kind, "http://127.0.0.1:9");
            config.key = key;
            let error = match kind {
                Kind::New => Google::new(&config).err(),
                Kind::Legacy => GoogleLegacy::new(&config).err(),
            }
            .expect("a backend without a key");
            assert_eq!(error.status, Status::RequestDenied);
            assert!(
                error.message.contains("HERD_PLACES__KEY"),
                "{}",
                error.message
            );
        }
    }
}

#[test]
fn default_bases_are_googles() {
    // Without a url override both still build (no request is made here).
    for kind in BOTH {
        let mut config = config(kind, "");
        config.url = None;
        let _ = backend(kind, &config);
    }
}
