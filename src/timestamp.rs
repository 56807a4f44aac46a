//! POSIX times exact to the nanosecond.
//!
//! Client times such as `1621464827.959498503` carry more digits than an
//! `f64` can hold, so times are kept as whole seconds plus nanoseconds and
//! compared and subtracted as integers.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A point in time since the Unix epoch, never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: u64,
    nanos: u32,
}

impl Timestamp {
    pub const fn new(secs: u64, nanos: u32) -> Option<Timestamp> {
        if nanos < 1_000_000_000 {
            Some(Timestamp { secs, nanos })
        } else {
            None
        }
    }

    pub fn now() -> Timestamp {
        Timestamp::at(SystemTime::now())
    }

    /// `time` as a timestamp (the epoch for times before it).
    pub fn at(time: SystemTime) -> Timestamp {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp {
            secs: since.as_secs(),
            nanos: since.subsec_nanos(),
        }
    }

    /// Parses `DIGITS[.DIGITS]` with at most nine fraction digits: no sign,
    /// no exponent, no empty part. Seconds must fit in a `u64`.
    pub fn parse(text: &[u8]) -> Option<Timestamp> {
        let (int, frac) = match text.iter().position(|&b| b == b'.') {
            Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
            None => (text, None),
        };
        let secs = if int.len() < 20 {
            // At most 19 digits: cannot overflow a u64.
            digits(int)?
        } else {
            // Longer (leading zeros, or too big): checked.
            int.iter().try_fold(0u64, |acc, &d| {
                d.is_ascii_digit().then_some(())?;
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })?
        };
        let nanos = match frac {
            None => 0,
            Some(frac) if frac.len() > 9 => return None,
            Some(frac) => digits(frac)? as u32 * POW10[9 - frac.len()],
        };
        Some(Timestamp { secs, nanos })
    }

    pub fn secs(self) -> u64 {
        self.secs
    }

    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> i128 {
        i128::from(self.secs) * NANOS_PER_SEC + i128::from(self.nanos)
    }

    /// `self - earlier` in nanoseconds, negative when `earlier` is later.
    pub fn nanos_since(self, earlier: Timestamp) -> i128 {
        self.as_nanos() - earlier.as_nanos()
    }
}

/// Powers of ten up to a billion.
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// The value of 1 to 19 ASCII digits, or None if `text` is empty or holds
/// anything else.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    let mut ok = true;
    for &b in text {
        let d = b.wrapping_sub(b'0');
        ok &= d < 10;
        value = value.wrapping_mul(10).wrapping_add(u64::from(d));
    }
    ok.then_some(value)
}

/// Formats a signed nanosecond difference as the protocol wants it: always
/// signed, always nine fraction digits (`+0.263873386`, `-1.000000000`).
pub fn format_delta(nanos: i128) -> String {
    let mut buf = [0; DELTA_MAX];
    String::from_utf8_lossy(write_delta(nanos, &mut buf)).into_owned()
}

/// Room for any delta [`write_delta`] writes: sign, 30 digits, dot, nine.
pub const DELTA_MAX: usize = 41;

/// Writes what [`format_delta`] returns into `buf`, without allocating,
/// and returns the written part.
pub fn write_delta(nanos: i128, buf: &mut [u8; DELTA_MAX]) -> &[u8] {
    let abs = nanos.unsigned_abs();
    let per = NANOS_PER_SEC as u128;
    let (mut whole, mut frac) = (abs / per, abs % per);
    let mut at = DELTA_MAX;
    for _ in 0..9 {
        at -= 1;
        buf[at] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    at -= 1;
    buf[at] = b'.';
    loop {
        at -= 1;
        buf[at] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    at -= 1;
    buf[at] = if nanos < 0 { b'-' } else { b'+' };
    &buf[at..]
}

/// Parses what [`format_delta`] writes; used to validate peers' AT lines.
pub fn parse_delta(text: &[u8]) -> Option<i128> {
    let (&sign, rest) = text.split_first()?;
    let negative = match sign {
        b'+' => false,
        b'-' => true,
        _ => return None,
    };
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (int, frac) = (&rest[..dot], &rest[dot + 1..]);
    if int.is_empty() || int.len() > 20 || frac.len() != 9 {
        return None;
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    // Only the one form format_delta writes: no leading zeros, no -0.
    if int.len() > 1 && int[0] == b'0' {
        return None;
    }
    // Whole seconds: at most 20 digits, which fit a u128 (not always a
    // u64); the nine fraction digits fit a u32.
    let whole = int
        .iter()
        .fold(0u128, |acc, &d| acc * 10 + u128::from(d - b'0'));
    let nanos = frac
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    let value = whole as i128 * NANOS_PER_SEC + i128::from(nanos);
    if negative && value == 0 {
        return None;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_whole_and_fractional_seconds() {
        assert_eq!(Timestamp::parse(b"12"), Timestamp::new(12, 0));
        assert_eq!(
            Timestamp::parse(b"1621464827.959498503"),
            Timestamp::new(1621464827, 959498503)
        );
        assert_eq!(Timestamp::parse(b"1.5"), Timestamp::new(1, 500_000_000));
        assert_eq!(Timestamp::parse(b"007.000000001"), Timestamp::new(7, 1));
    }

    #[test]
    fn refuses_malformed_times() {
        for bad in [
            &b""[..],
            b".5",
            b"5.",
            b"+5",
            b"-5",
            b"1e9",
            b"1.0000000001",
            b"1.2.3",
            b"12a",
            b" 12",
            b"18446744073709551616",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{}", bad.escape_ascii());
        }
        assert!(Timestamp::parse(b"18446744073709551615.999999999").is_some());
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the point: f64 cannot hold these
    fn nanosecond_order_where_f64_cannot_tell() {
        let a = Timestamp::parse(b"1621464827.959498503").unwrap();
        let b = Timestamp::parse(b"1621464827.959498504").unwrap();
        assert_eq!(1621464827.959498503f64, 1621464827.959498504f64);
        assert!(a < b);
        assert_eq!(b.nanos_since(a), 1);
        assert_eq!(format_delta(a.nanos_since(b)), "-0.000000001");
    }

    #[test]
    fn formats_the_example_delta() {
        let client = Timestamp::parse(b"1621464827.959498503").unwrap();
        let server = Timestamp::parse(b"1621464828.223371889").unwrap();
        assert_eq!(format_delta(server.nanos_since(client)), "+0.263873386");
        assert_eq!(format_delta(0), "+0.000000000");
        assert_eq!(format_delta(-1_500_000_000), "-1.500000000");
    }

    #[test]
    fn seconds_must_fit_and_be_digits() {
        assert_eq!(
            Timestamp::parse(b"18446744073709551615.999999999"),
            Timestamp::new(u64::MAX, 999_999_999)
        );
        assert_eq!(Timestamp::parse(b"18446744073709551616"), None);
        assert_eq!(Timestamp::parse(b"99999999999999999999"), None);
        assert_eq!(
            Timestamp::parse(b"00000000000000000000000001.5"),
            Timestamp::new(1, 500_000_000)
        );
        assert_eq!(
            Timestamp::parse(b"0000000000000000000000"),
            Timestamp::new(0, 0)
        );
        for bad in [
            &b""[..],
            b".5",
            b"5.",
            b"1a",
            b"1.0000000001",
            b"0000000000000000000000x",
            b"1.-5",
            b"+1",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{}", bad.escape_ascii());
        }
    }

    proptest! {
        #[test]
        fn parse_round_trips(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let text = format!("{secs}.{nanos:09}");
            let t = Timestamp::parse(text.as_bytes()).unwrap();
            prop_assert_eq!((t.secs(), t.subsec_nanos()), (secs, nanos));
        }

        #[test]
        fn order_matches_integer_nanos(a in any::<(u64, u32)>(), b in any::<(u64, u32)>()) {
            let a = Timestamp::new(a.0, a.1 % 1_000_000_000).unwrap();
            let b = Timestamp::new(b.0, b.1 % 1_000_000_000).unwrap();
            prop_assert_eq!(a.cmp(&b), a.as_nanos().cmp(&b.as_nanos()));
        }

        #[test]
        fn delta_round_trips(n in any::<i64>()) {
            let n = i128::from(n);
            prop_assert_eq!(parse_delta(format_delta(n).as_bytes()), Some(n));
        }

        /// The widest deltas two timestamps can have, written as the
        /// standard formatter would.
        #[test]
        fn delta_matches_the_standard_formatter(a in any::<(u64, u32)>(), b in any::<(u64, u32)>()) {
            let a = Timestamp::new(a.0, a.1 % 1_000_000_000).unwrap();
            let b = Timestamp::new(b.0, b.1 % 1_000_000_000).unwrap();
            let n = a.nanos_since(b);
            let sign = if n < 0 { '-' } else { '+' };
            let abs = n.unsigned_abs();
            let expected = format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000);
            prop_assert_eq!(format_delta(n), expected.clone());
            prop_assert_eq!(parse_delta(expected.as_bytes()), Some(n));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Timestamp::parse(&bytes);
            let _ = parse_delta(&bytes);
        }
    }
}
