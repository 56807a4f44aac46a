//! Client lines and AT lines: arbitrary bytes never panic, and whatever
//! parses keeps the protocol's promises.
//!
//! - A request's echoed fields are the line's own fields, byte for byte.
//! - IAMAT's numbers are in range, and the AT line a node makes of it is one
//!   its peers accept, giving back the same report.
//! - An AT line that parses is the line as given, with the fields it names,
//!   separated by single spaces, and the node that made it would have made
//!   the same line.

#![no_main]

use bytes::Bytes;
use herd::location::Location;
use herd::report::Report;
use herd::request::{self, fields, is_space, Parsed, Request};
use herd::timestamp::{format_delta, parse_delta, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_request(data);
    check_report(data);
});

/// `part` is `whole`'s `n`th field itself (the same bytes, not a copy).
fn is_field(whole: &[u8], n: usize, part: &[u8]) -> bool {
    fields(whole)
        .nth(n)
        .is_some_and(|f| f.as_ptr_range() == part.as_ptr_range())
}

fn check_request(line: &[u8]) {
    let count = fields(line).count();
    match request::parse(line) {
        Parsed::Empty => assert!(line.iter().all(|&b| is_space(b))),
        Parsed::Invalid => assert!(count > 0),
        Parsed::Request(Request::IAmAt {
            client,
            location_text,
            location,
            time_text,
            time,
        }) => {
            assert_eq!(count, 4);
            assert_eq!(fields(line).next(), Some(&b"IAMAT"[..]));
            assert!(is_field(line, 1, client));
            assert!(is_field(line, 2, location_text));
            assert!(is_field(line, 3, time_text));
            assert!(location.lat.is_finite() && location.lat.abs() <= 90.0);
            assert!(location.lon.is_finite() && location.lon.abs() <= 180.0);
            assert_eq!(Location::parse(location_text), Some(location));
            assert_eq!(Timestamp::parse(time_text), Some(time));
            // The AT line a node makes travels to its peers, who must accept
            // it as the same report, whatever the skew.
            for received in [
                Timestamp::new(1_621_464_828, 223_371_889).unwrap(),
                time,
                Timestamp::new(0, 0).unwrap(),
                Timestamp::new(u64::MAX, 999_999_999).unwrap(),
            ] {
                let report = Report::new(
                    "Clark",
                    received,
                    client,
                    location_text,
                    time_text,
                    time,
                );
                assert_eq!(report.client(), client);
                assert_eq!(report.time(), time);
                assert_eq!(report.location(), location);
                let parsed = Report::parse(report.line());
                assert_eq!(parsed.as_ref(), Ok(&report), "{:?}", report.line());
            }
        }
        Parsed::Request(Request::WhatsAt {
            client,
            radius_km,
            bound,
        }) => {
            assert_eq!(count, 4);
            assert_eq!(fields(line).next(), Some(&b"WHATSAT"[..]));
            assert!(is_field(line, 1, client));
            assert!(radius_km.is_finite() && radius_km > 0.0 && radius_km <= 50.0);
            assert!((1..=20).contains(&bound));
        }
    }
}

fn check_report(line: &[u8]) {
    let Ok(report) = Report::parse(Bytes::copy_from_slice(line)) else {
        return;
    };
    assert_eq!(report.line(), line);
    // Nodes separate fields with single spaces; a peer's line that does not
    // is not a line any node made, and one with an LF splits the WHATSAT
    // reply it is echoed in.
    assert!(
        line.iter().all(|&b| !is_space(b) || b == b' '),
        "AT line with separators other than spaces accepted: {:?}",
        line.escape_ascii().to_string()
    );
    let parts: Vec<&[u8]> = fields(line).collect();
    assert_eq!(parts.len(), 6);
    assert_eq!(parts[0], b"AT");
    assert_eq!(report.server(), parts[1]);
    assert_eq!(report.client(), parts[3]);
    assert_eq!(Location::parse(parts[4]), Some(report.location()));
    assert_eq!(Timestamp::parse(parts[5]), Some(report.time()));
    // The receiving node's clock was the client's time plus the delta; from
    // it, that node makes this very line (when the delta is written the way
    // nodes write it).
    let delta = parse_delta(parts[2]).expect("a parsed report has a delta");
    let received = report.time().as_nanos() + delta;
    let Some(received) = timestamp(received) else {
        return;
    };
    let server = std::str::from_utf8(report.server()).expect("node names are ASCII");
    let again = Report::new(
        server,
        received,
        report.client(),
        parts[4],
        parts[5],
        report.time(),
    );
    if format_delta(delta).as_bytes() == parts[2] {
        assert_eq!(again, report);
    } else {
        // A peer wrote the delta with extra zeros or as -0: the same
        // report, in the canonical form, which parses back to itself.
        assert_eq!(again.time(), report.time());
        assert_eq!(again.client(), report.client());
        assert_eq!(again.location(), report.location());
        assert_eq!(Report::parse(again.line()), Ok(again));
    }
}

fn timestamp(nanos: i128) -> Option<Timestamp> {
    if nanos < 0 {
        return None;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Timestamp::new(secs, (nanos % 1_000_000_000) as u32)
}
