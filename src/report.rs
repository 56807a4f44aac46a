//! The AT line: one client's location as a server recorded it.
//!
//! `AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503`
//!
//! The line is made once, by the server that received the IAMAT, and then
//! travels between servers byte for byte, so every node answers WHATSAT with
//! exactly the line the receiving server made.

use std::cmp::Ordering;
use std::ops::Range;

use crate::location::Location;
use crate::request::{fields, is_space};
use crate::timestamp::{format_delta, parse_delta, Timestamp};

/// One client's reported location, with the AT line that records it.
///
/// Kept small: a node holds one per client (a million is ordinary), so the
/// line is an exact-size box and the fields are offsets into it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    line: Box<[u8]>,
    /// The server name runs from byte 3 (after `AT `) for this many bytes.
    server_len: u8,
    client_start: u32,
    client_len: u32,
    location: Location,
    time: Timestamp,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadReport {
    #[error("not an AT line with six fields")]
    Shape,
    #[error("bad server name")]
    Server,
    #[error("bad time difference")]
    Delta,
    #[error("bad location")]
    Location,
    #[error("bad client time")]
    Time,
}

impl Report {
    /// Records an IAMAT received by `server` at `received`.
    pub fn new(
        server: &str,
        received: Timestamp,
        client: &[u8],
        location_text: &[u8],
        location: Location,
        time_text: &[u8],
        time: Timestamp,
    ) -> Report {
        let delta = format_delta(received.nanos_since(time));
        let mut line = Vec::with_capacity(
            7 + server.len() + delta.len() + client.len() + location_text.len() + time_text.len(),
        );
        line.extend_from_slice(b"AT ");
        line.extend_from_slice(server.as_bytes());
        line.push(b' ');
        line.extend_from_slice(delta.as_bytes());
        line.push(b' ');
        let client_start = line.len();
        line.extend_from_slice(client);
        line.push(b' ');
        line.extend_from_slice(location_text);
        line.push(b' ');
        line.extend_from_slice(time_text);
        Report {
            line: line.into_boxed_slice(),
            server_len: server.len() as u8,
            client_start: client_start as u32,
            client_len: client.len() as u32,
            location,
            time,
        }
    }

    /// Parses and checks an AT line made by another server (copying it).
    pub fn parse(line: impl AsRef<[u8]>) -> Result<Report, BadReport> {
        let line = line.as_ref();
        let ranges: Vec<Range<usize>> = field_ranges(line).take(7).collect();
        let [at, server, delta, client, location, time]: [Range<usize>; 6] =
            ranges.try_into().map_err(|_| BadReport::Shape)?;
        if &line[at] != b"AT" || server.start != 3 {
            return Err(BadReport::Shape);
        }
        if !crate::config::is_node_name(&line[server.clone()]) {
            return Err(BadReport::Server);
        }
        parse_delta(&line[delta]).ok_or(BadReport::Delta)?;
        let location = Location::parse(&line[location]).ok_or(BadReport::Location)?;
        let time_end = time.end;
        let time = Timestamp::parse(&line[time]).ok_or(BadReport::Time)?;
        // Lines travel exactly as their server made them: six fields and
        // five single spaces, no other white space (an LF here would split
        // a client's WHATSAT reply).
        let mut spaces = line.iter().filter(|&&b| is_space(b));
        if line.len() != time_end || spaces.clone().count() != 5 || spaces.any(|&b| b != b' ') {
            return Err(BadReport::Shape);
        }
        Ok(Report {
            line: line.into(),
            server_len: server.len() as u8,
            client_start: client.start as u32,
            client_len: client.len() as u32,
            location,
            time,
        })
    }

    /// The AT line, without a line end.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The server that received the IAMAT.
    pub fn server(&self) -> &[u8] {
        &self.line[3..3 + usize::from(self.server_len)]
    }

    /// The client ID, as the client sent it.
    pub fn client(&self) -> &[u8] {
        let start = self.client_start as usize;
        &self.line[start..start + self.client_len as usize]
    }

    pub fn location(&self) -> Location {
        self.location
    }

    /// The client's own time for this report.
    pub fn time(&self) -> Timestamp {
        self.time
    }

    /// Newest wins: the greater client time, and for equal times the
    /// greater line bytes (which begin with the server name), so every node
    /// settles on the same report whatever order reports arrive in.
    pub fn newness(&self, other: &Report) -> Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| self.line.cmp(&other.line))
    }
}

fn field_ranges(line: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let base = line.as_ptr() as usize;
    fields(line).map(move |f| {
        let start = f.as_ptr() as usize - base;
        start..start + f.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(server: &str, time: &str) -> Report {
        let received = Timestamp::parse(b"1621464828.223371889").unwrap();
        Report::new(
            server,
            received,
            b"kiwi.cs.ucla.edu",
            b"+34.068930-118.445127",
            Location::parse(b"+34.068930-118.445127").unwrap(),
            time.as_bytes(),
            Timestamp::parse(time.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn formats_the_spec_example() {
        let r = example("Clark", "1621464827.959498503");
        assert_eq!(
            r.line(),
            b"AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
        assert_eq!(r.server(), b"Clark");
        assert_eq!(r.client(), b"kiwi.cs.ucla.edu");
    }

    #[test]
    fn negative_skew_is_signed() {
        let r = example("Clark", "1621464829.000000000");
        assert!(r.line().starts_with(b"AT Clark -0.776628111 "));
    }

    #[test]
    fn parse_round_trips_what_new_makes() {
        let r = example("Bona", "1621464827.959498503");
        assert_eq!(Report::parse(r.line()), Ok(r));
    }

    #[test]
    fn parse_refuses_bad_lines() {
        for bad in [
            &b"AT Clark +0.263873386 kiwi +34-118"[..],
            b"AT Clark +0.263873386 kiwi +34-118 1 x",
            b"IAMAT Clark +0.263873386 kiwi +34-118 1",
            b"AT Cl/ark +0.263873386 kiwi +34-118 1",
            b"AT Clark 0.263873386 kiwi +34-118 1",
            b"AT Clark +0.26 kiwi +34-118 1",
            b"AT Clark +0.263873386 kiwi 34-118 1",
            b"AT Clark +0.263873386 kiwi +34-118 1.",
            b"AT  Clark +0.263873386 kiwi +34-118 1",
            b"AT Clark +0.263873386 kiwi +34-118 1\n",
            b"AT\tClark +0.263873386 kiwi +34-118 1",
            b"AT Clark +0.263873386\nkiwi +34-118 1",
            b"AT Clark +0.263873386 kiwi\x0b+34-118 1",
            b"AT Clark +00.263873386 kiwi +34-118 1",
            b"AT Clark -0.000000000 kiwi +34-118 1",
        ] {
            assert!(Report::parse(bad).is_err(), "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn newness_orders_by_time_then_bytes() {
        let old = example("Clark", "1621464827.959498503");
        let new = example("Clark", "1621464827.959498504");
        assert_eq!(new.newness(&old), Ordering::Greater);
        let bona = example("Bona", "1621464827.959498503");
        assert_eq!(old.newness(&bona), Ordering::Greater);
        assert_eq!(old.newness(&old.clone()), Ordering::Equal);
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Report::parse(bytes);
        }
    }
}
