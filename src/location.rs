//! ISO 6709 locations as clients send them: `+34.068930-118.445127`.

/// A latitude and longitude in decimal degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

impl Location {
    /// Parses `[+-]DIGITS[.DIGITS][+-]DIGITS[.DIGITS]` with |lat| <= 90 and
    /// |lon| <= 180. Bounds are checked on the digits themselves, so
    /// `+90.0000000000000000001` is refused even though it rounds to 90.0.
    pub fn parse(text: &[u8]) -> Option<Location> {
        let split = 1 + text
            .get(1..)?
            .iter()
            .position(|&b| b == b'+' || b == b'-')?;
        let lat = degrees(&text[..split], 90)?;
        let lon = degrees(&text[split..], 180)?;
        Some(Location { lat, lon })
    }

    /// Whether [`Location::parse`] would accept `text`, without working out
    /// the numbers (what checking a peer's AT line needs).
    pub fn is_valid(text: &[u8]) -> bool {
        let Some(split) = text
            .get(1..)
            .and_then(|rest| rest.iter().position(|&b| b == b'+' || b == b'-'))
        else {
            return false;
        };
        let (lat, lon) = text.split_at(1 + split);
        signed_at_most(lat, 90) && signed_at_most(lon, 180)
    }
}

fn signed_at_most(text: &[u8], max: u32) -> bool {
    matches!(text.split_first(), Some((&(b'+' | b'-'), body)) if decimal_at_most(body, max).is_some())
}

/// One signed coordinate, at most `max` degrees in magnitude.
fn degrees(text: &[u8], max: u32) -> Option<f64> {
    let (&sign, body) = text.split_first()?;
    if sign != b'+' && sign != b'-' {
        return None;
    }
    decimal_at_most(body, max)?;
    let value: f64 = std::str::from_utf8(body).ok()?.parse().ok()?;
    Some(if sign == b'-' { -value } else { value })
}

/// Checks that `DIGITS[.DIGITS]` is a well-formed decimal no greater than
/// `max`, comparing digits rather than floating-point values. One pass
/// (every line a neighbour sends has two of these).
pub(crate) fn decimal_at_most(text: &[u8], max: u32) -> Option<()> {
    // The integer part's value, refused from a billion up (ten significant
    // digits), so it fits whatever the number of leading zeros.
    let mut whole: u64 = 0;
    let mut digits = 0;
    for &b in text {
        let d = b.wrapping_sub(b'0');
        if d >= 10 {
            break;
        }
        whole = whole * 10 + u64::from(d);
        if whole >= 1_000_000_000 {
            return None;
        }
        digits += 1;
    }
    let frac_zero = match &text[digits..] {
        _ if digits == 0 => return None,
        [] => true,
        [b'.', frac @ ..] if !frac.is_empty() => {
            let mut zero = true;
            for &b in frac {
                if !b.is_ascii_digit() {
                    return None;
                }
                zero &= b == b'0';
            }
            zero
        }
        _ => return None,
    };
    let max = u64::from(max);
    (whole < max || (whole == max && frac_zero)).then_some(())
}

/// True when a well-formed decimal is exactly zero.
pub(crate) fn decimal_is_zero(text: &[u8]) -> bool {
    text.iter().all(|&b| b == b'0' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_valid_locations() {
        let l = Location::parse(b"+34.068930-118.445127").unwrap();
        assert_eq!((l.lat, l.lon), (34.068930, -118.445127));
        let l = Location::parse(b"+34-118").unwrap();
        assert_eq!((l.lat, l.lon), (34.0, -118.0));
        assert!(Location::parse(b"-90+180").is_some());
        assert!(Location::parse(b"+90.000-180.0000").is_some());
        assert!(Location::parse(b"+00.5+000.25").is_some());
    }

    #[test]
    fn refuses_invalid_locations() {
        for bad in [
            &b""[..],
            b"+",
            b"34.0-118.0",
            b"+34.0118.0",
            b"+34.0-118.0+1",
            b"+90.0000000000000000001+0",
            b"+91+0",
            b"+0+180.1",
            b"+0-181",
            b"+.5+1",
            b"+1.+1",
            b"+1+1.",
            b"++1+1",
            b"+1e1+1",
            b"+1 +1",
            b"+1-",
            b"+0x1+1",
            b"+9999999999+1",
        ] {
            assert_eq!(Location::parse(bad), None, "{}", bad.escape_ascii());
        }
    }

    proptest! {
        #[test]
        fn is_valid_agrees_with_parse(text in "[-+0-9.e ]{0,24}") {
            prop_assert_eq!(Location::is_valid(text.as_bytes()), Location::parse(text.as_bytes()).is_some());
        }

        #[test]
        fn valid_coordinates_parse(lat in -90_000_000i64..=90_000_000, lon in -180_000_000i64..=180_000_000) {
            let sign = |v: i64| if v < 0 { '-' } else { '+' };
            let text = format!(
                "{}{}.{:06}{}{}.{:06}",
                sign(lat), lat.abs() / 1_000_000, lat.abs() % 1_000_000,
                sign(lon), lon.abs() / 1_000_000, lon.abs() % 1_000_000,
            );
            let l = Location::parse(text.as_bytes()).unwrap();
            prop_assert!((l.lat - lat as f64 / 1e6).abs() < 1e-9);
            prop_assert!((l.lon - lon as f64 / 1e6).abs() < 1e-9);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Location::parse(&bytes);
        }

        /// Against the definition: digits, optionally a dot and more
        /// digits, and a value no greater than `max` (exactly: the integer
        /// part below it, or equal with a zero fraction).
        #[test]
        fn decimal_at_most_is_exact(
            int in prop_oneof![
                "[0-9]{0,12}",
                "0{0,12}(0|1|89|90|91|179|180|181|20000|999999999|1000000000)",
            ],
            rest in "([.][0-9]{0,4})?[.x+]?",
            max in prop::sample::select(vec![0u32, 1, 90, 180, 20_000, 999_999_999]),
        ) {
            let text = int + &rest;
            let well_formed = match text.split_once('.') {
                Some((int, frac)) => !int.is_empty() && !frac.is_empty()
                    && (int.to_owned() + frac).bytes().all(|b| b.is_ascii_digit()),
                None => !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
            };
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            let at_most = well_formed && {
                let whole: u128 = int.parse().unwrap();
                whole < u128::from(max)
                    || (whole == u128::from(max) && frac.bytes().all(|b| b == b'0'))
            };
            prop_assert_eq!(decimal_at_most(text.as_bytes(), max).is_some(), at_most, "{}", text);
        }
    }
}
