//! Client request lines: bytes in, typed requests out.
//!
//! Lines are bytes, not text. Fields are maximal runs of bytes that are not
//! protocol white space; client IDs are any such run, echoed byte for byte.

use crate::location::{decimal_at_most, decimal_is_zero, Location};
use crate::timestamp::Timestamp;

/// The protocol's white space: space, HT, LF, VT, FF and CR. Unlike
/// `u8::is_ascii_whitespace`, this includes VT (0x0B).
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// The fields of a line, in order.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| is_space(b)).filter(|f| !f.is_empty())
}

/// Largest radius a WHATSAT may ask for, in kilometres.
pub const MAX_RADIUS_KM: u32 = 50;
/// Largest number of places a WHATSAT may ask for.
pub const MAX_BOUND: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Request<'a> {
    /// `IAMAT client location time`; the texts are kept to echo them back.
    /// The location is checked, not worked out: its numbers are only needed
    /// when a WHATSAT searches around it, which reads them from the text.
    IAmAt {
        client: &'a [u8],
        location_text: &'a [u8],
        time_text: &'a [u8],
        time: Timestamp,
    },
    /// `WHATSAT client radius_km bound`.
    WhatsAt {
        client: &'a [u8],
        radius_km: f64,
        bound: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Parsed<'a> {
    /// No fields at all: the line gets no reply.
    Empty,
    Request(Request<'a>),
    /// Anything else: answered with `? ` and the line.
    Invalid,
}

/// Parses one line (without its LF).
pub fn parse(line: &[u8]) -> Parsed<'_> {
    let mut it = fields(line);
    let Some(command) = it.next() else {
        return Parsed::Empty;
    };
    let args: [&[u8]; 3] = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(a), Some(b), Some(c), None) => [a, b, c],
        _ => return Parsed::Invalid,
    };
    let request = match command {
        b"IAMAT" => iamat(args),
        b"WHATSAT" => whatsat(args),
        _ => None,
    };
    request.map_or(Parsed::Invalid, Parsed::Request)
}

fn iamat([client, location_text, time_text]: [&[u8]; 3]) -> Option<Request<'_>> {
    if !Location::is_valid(location_text) {
        return None;
    }
    Some(Request::IAmAt {
        client,
        location_text,
        time_text,
        time: Timestamp::parse(time_text)?,
    })
}

fn whatsat([client, radius, bound]: [&[u8]; 3]) -> Option<Request<'_>> {
    decimal_at_most(radius, MAX_RADIUS_KM)?;
    if decimal_is_zero(radius) {
        return None;
    }
    let radius_km: f64 = std::str::from_utf8(radius).ok()?.parse().ok()?;
    Some(Request::WhatsAt {
        client,
        radius_km,
        bound: parse_bound(bound)?,
    })
}

/// A whole number 1..=20, leading zeros allowed, no sign.
fn parse_bound(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = &text[text.iter().position(|&b| b != b'0').unwrap_or(text.len())..];
    if significant.len() > 2 {
        return None;
    }
    let n = significant
        .iter()
        .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
    (1..=MAX_BOUND).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iamat_client(line: &[u8]) -> Option<Vec<u8>> {
        match parse(line) {
            Parsed::Request(Request::IAmAt { client, .. }) => Some(client.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn white_space_is_exactly_the_six_bytes() {
        let spaces: Vec<u8> = (0..=255u8).filter(|&b| is_space(b)).collect();
        assert_eq!(spaces, vec![b'\t', b'\n', 0x0B, 0x0C, b'\r', b' ']);
    }

    #[test]
    fn parses_the_spec_examples() {
        let Parsed::Request(Request::IAmAt {
            client,
            location_text,
            time_text,
            time,
            ..
        }) = parse(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503")
        else {
            panic!("not an IAMAT");
        };
        assert_eq!(client, b"kiwi.cs.ucla.edu");
        assert_eq!(location_text, b"+34.068930-118.445127");
        assert_eq!(time_text, b"1621464827.959498503");
        assert_eq!(time, Timestamp::new(1621464827, 959498503).unwrap());
        assert_eq!(
            parse(b"WHATSAT kiwi.cs.ucla.edu 10 5"),
            Parsed::Request(Request::WhatsAt {
                client: b"kiwi.cs.ucla.edu",
                radius_km: 10.0,
                bound: 5
            })
        );
    }

    #[test]
    fn fields_split_on_every_protocol_space() {
        let line = b"\x0b\x0c IAMAT\tk\x0b+1+1\x0c1\r";
        assert_eq!(iamat_client(line), Some(b"k".to_vec()));
    }

    #[test]
    fn client_ids_are_any_non_space_bytes() {
        assert_eq!(
            iamat_client("IAMAT 🦀é\u{1} +1+1 1".as_bytes()),
            Some("🦀é\u{1}".as_bytes().to_vec())
        );
        assert_eq!(
            iamat_client(b"IAMAT \xff\xfe\x80 +1+1 1"),
            Some(b"\xff\xfe\x80".to_vec())
        );
    }

    #[test]
    fn empty_lines_get_no_reply() {
        for line in [&b""[..], b"   ", b"\t\x0b\x0c\r"] {
            assert_eq!(parse(line), Parsed::Empty);
        }
    }

    #[test]
    fn every_invalid_form_is_refused() {
        for bad in [
            &b"iamat k +1+1 1"[..],
            b"IAMAT k +1+1",
            b"IAMAT k +1+1 1 extra",
            b"IAMAT k 1+1 1",
            b"IAMAT k +91+1 1",
            b"IAMAT k +1+1 -1",
            b"IAMAT k +1+1 1.0000000001",
            b"AT Clark +0.1 k +1+1 1",
            b"WHATSAT k 0 5",
            b"WHATSAT k 0.000 5",
            b"WHATSAT k 50.0001 5",
            b"WHATSAT k 51 5",
            b"WHATSAT k -1 5",
            b"WHATSAT k 10 0",
            b"WHATSAT k 10 21",
            b"WHATSAT k 10 5.0",
            b"WHATSAT k 10 +5",
            b"WHATSAT k 1e1 5",
            b"WHATSAT k 10",
            b"whatsat k 10 5",
            b"HELLO",
        ] {
            assert_eq!(parse(bad), Parsed::Invalid, "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn radius_and_bound_limits_are_inclusive() {
        assert!(matches!(parse(b"WHATSAT k 50 20"), Parsed::Request(_)));
        assert!(matches!(parse(b"WHATSAT k 50.000 020"), Parsed::Request(_)));
        assert!(matches!(parse(b"WHATSAT k 0.001 1"), Parsed::Request(_)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn valid_iamat_round_trips(
            client in proptest::collection::vec(any::<u8>().prop_filter("not space", |b| !is_space(*b)), 1..30),
            secs in any::<u32>(),
            nanos in 0u32..1_000_000_000,
            sep in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'\t'), Just(0x0Bu8), Just(0x0Cu8), Just(b'\r')], 1..4),
        ) {
            let time = format!("{secs}.{nanos:09}");
            let mut line = b"IAMAT".to_vec();
            for field in [&client[..], b"+12.5-7", time.as_bytes()] {
                line.extend_from_slice(&sep);
                line.extend_from_slice(field);
            }
            let Parsed::Request(Request::IAmAt { client: c, location_text, time_text, time: t, .. }) = parse(&line) else {
                return Err(TestCaseError::fail("not parsed"));
            };
            prop_assert_eq!(c, &client[..]);
            prop_assert_eq!(location_text, b"+12.5-7");
            prop_assert_eq!(time_text, time.as_bytes());
            prop_assert_eq!((t.secs(), t.subsec_nanos()), (u64::from(secs), nanos));
        }

        #[test]
        fn valid_whatsat_round_trips(radius in 1u32..=50_000, bound in 1usize..=20) {
            let line = format!("WHATSAT c {}.{:03} {bound}", radius / 1000, radius % 1000);
            let Parsed::Request(Request::WhatsAt { radius_km, bound: b, .. }) = parse(line.as_bytes()) else {
                return Err(TestCaseError::fail("not parsed"));
            };
            prop_assert!((radius_km - f64::from(radius) / 1000.0).abs() < 1e-9);
            prop_assert_eq!(b, bound);
        }
    }
}
