//! A property test over the whole client connection handler, not just the
//! parser: arbitrary mixes of valid requests, junk and odd bytes, cut into
//! arbitrary reads, must get exactly the replies a model predicts, in
//! order, and never a panic.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use herd::client::{self, ClientService};
use herd::config::Limits;
use herd::flood::Hub;
use herd::request::{self, Parsed, Request};

/// One line of input, without its LF.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let client = prop::sample::select(vec!["kiwi", "🦀", "a\u{1}b", "x"]);
    prop_oneof![
        (client.clone(), 0u32..1000)
            .prop_map(|(c, t)| format!("IAMAT {c} +34.1-118.2 {t}.5").into_bytes()),
        (client, 1u32..=50, 1u32..=20)
            .prop_map(|(c, r, b)| format!("WHATSAT {c} {r} {b}").into_bytes()),
        // Junk: any bytes but LF (so a line stays one line).
        prop::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..40),
        Just(b"  \t\x0b\x0c ".to_vec()),
        Just(b"AT Clark +0.000000001 kiwi +1+1 1".to_vec()),
        Just(b"IAMAT kiwi +34.1-118.2 1.5\r".to_vec()),
    ]
}

/// What the handler must answer to `lines`, one entry per reply: the exact
/// reply for `? ` lines, or the client ID an AT line (and, for WHATSAT, the
/// JSON after it) must be about.
#[derive(Debug)]
enum Expect {
    Invalid(Vec<u8>),
    At(Vec<u8>),
    AtAndJson(Vec<u8>),
}

/// `terminated`: whether the last line had its LF (only an LF-terminated
/// line loses a CR before it; an unterminated one is echoed whole).
fn model(lines: &[Vec<u8>], terminated: bool) -> Vec<Expect> {
    let mut known: HashSet<Vec<u8>> = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let has_lf = terminated || i + 1 < lines.len();
        let body = match line.strip_suffix(b"\r") {
            Some(stripped) if has_lf => stripped,
            _ => line,
        };
        match request::parse(body) {
            Parsed::Empty => {}
            Parsed::Invalid => out.push(Expect::Invalid(body.to_vec())),
            Parsed::Request(Request::IAmAt { client, .. }) => {
                known.insert(client.to_vec());
                out.push(Expect::At(client.to_vec()));
            }
            Parsed::Request(Request::WhatsAt { client, .. }) => {
                if known.contains(client) {
                    out.push(Expect::AtAndJson(client.to_vec()));
                } else {
                    out.push(Expect::Invalid(body.to_vec()));
                }
            }
        }
    }
    out
}

fn take_line<'a>(replies: &mut &'a [u8]) -> &'a [u8] {
    let end = replies
        .iter()
        .position(|&b| b == b'\n')
        .expect("a whole reply line");
    let line = &replies[..end];
    *replies = &replies[end + 1..];
    line
}

fn check(expected: &[Expect], mut replies: &[u8]) -> Result<(), TestCaseError> {
    for e in expected {
        match e {
            Expect::Invalid(line) => {
                let got = take_line(&mut replies);
                prop_assert_eq!(&got[..2], b"? ");
                prop_assert_eq!(&got[2..], &line[..]);
            }
            Expect::At(client) | Expect::AtAndJson(client) => {
                let at = take_line(&mut replies);
                let fields: Vec<&[u8]> = request::fields(at).collect();
                prop_assert_eq!(fields.len(), 6);
                prop_assert_eq!(fields[0], b"AT");
                prop_assert_eq!(fields[1], b"Test");
                prop_assert_eq!(fields[3], &client[..]);
                if matches!(e, Expect::AtAndJson(_)) {
                    let end = replies
                        .windows(2)
                        .position(|w| w == b"\n\n")
                        .expect("JSON ends");
                    let json: serde_json::Value = serde_json::from_slice(&replies[..end]).unwrap();
                    prop_assert_eq!(&json["status"], "OK");
                    replies = &replies[end + 2..];
                }
            }
        }
    }
    prop_assert!(
        replies.is_empty(),
        "extra replies: {:?}",
        replies.escape_ascii().to_string()
    );
    Ok(())
}

fn serve(input: Vec<u8>, cuts: Vec<usize>) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let svc = Arc::new(ClientService {
            node: Arc::from("Test"),
            hub: Arc::new(Hub::new(1)),
            places: Arc::new(common::EchoPlaces),
            places_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        });
        let (mut near, mut far) = tokio::io::duplex(1 << 16);
        let addr = SocketAddr::from(([127, 0, 0, 1], 5555));
        let node = tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(&mut far);
            client::serve(
                svc,
                (&mut reader, &mut writer),
                addr,
                CancellationToken::new(),
                tracing::Span::none(),
            )
            .await
        });
        let writer = async {
            let mut rest = &input[..];
            for cut in cuts {
                let n = cut.min(rest.len());
                near.write_all(&rest[..n]).await.unwrap();
                rest = &rest[n..];
            }
            near.write_all(rest).await.unwrap();
            near.shutdown().await.unwrap();
            let mut replies = Vec::new();
            near.read_to_end(&mut replies).await.unwrap();
            replies
        };
        let replies = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the handler answers and closes");
        node.await.expect("the handler does not panic");
        replies
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_line_gets_its_reply_in_order(
        lines in prop::collection::vec(line(), 0..25),
        last_lf in any::<bool>(),
        cuts in prop::collection::vec(1usize..64, 0..12),
    ) {
        let mut input = lines.join(&b'\n');
        if last_lf && !lines.is_empty() {
            input.push(b'\n');
        }
        let replies = serve(input, cuts);
        check(&model(&lines, last_lf), &replies)?;
    }

    #[test]
    fn arbitrary_bytes_never_break_the_handler(
        input in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(1usize..300, 0..8),
    ) {
        let lines: Vec<Vec<u8>> = if input.is_empty() {
            Vec::new()
        } else {
            input.strip_suffix(b"\n").unwrap_or(&input).split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
        };
        let terminated = input.last() == Some(&b'\n');
        let replies = serve(input, cuts);
        check(&model(&lines, terminated), &replies)?;
    }
}

#[test]
fn an_unterminated_last_line_keeps_its_cr() {
    let lines = vec![b"junk\r".to_vec()];
    let replies = serve(b"junk\r".to_vec(), vec![]);
    assert_eq!(replies, b"? junk\r\n");
    check(&model(&lines, false), &replies).unwrap();
}
