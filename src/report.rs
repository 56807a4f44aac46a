//! The AT line: one client's location as a server recorded it.
//!
//! `AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503`
//!
//! The line is made once, by the server that received the IAMAT, and then
//! travels between servers byte for byte, so every node answers WHATSAT with
//! exactly the line the receiving server made.

use std::cmp::Ordering;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use triomphe::ThinArc;

use crate::location::Location;
use crate::timestamp::{parse_delta, write_delta, Timestamp, DELTA_MAX};

/// One client's reported location, with the AT line that records it.
///
/// A node holds one per client (a million is ordinary) and shares it with
/// every link that forwards it, so a report is one reference-counted
/// allocation: a thin pointer to the count, a small header (the client
/// time, where the fields are, and the change number its store gave it)
/// and the line itself. Cloning is a count increment. The location is parsed from the line when it is asked for
/// (only WHATSAT needs it).
#[derive(Clone)]
pub struct Report(ThinArc<Header, u8>);

/// What precedes the line in a report's allocation.
struct Header {
    meta: Meta,
    /// The change number the store holding this report gave it (0 until
    /// stored), in the low [`SEQ_BITS`] bits. Kept here rather than beside
    /// the report in the store's table, whose slots (about two per client)
    /// it would otherwise double. The high bits say which of the node's
    /// links have heard this very report from their neighbour (see
    /// [`Report::mark_heard`]).
    seq: AtomicU64,
}

/// Bits of the header's word that hold the change number: 2^56 changes
/// is over two thousand years at a million a second.
const SEQ_BITS: u32 = 56;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// How many links a report can be marked as heard from.
pub const HEARD_SLOTS: u8 = (u64::BITS - SEQ_BITS) as u8;

impl Header {
    fn new(meta: Meta, seq: u64) -> Header {
        Header {
            meta,
            seq: AtomicU64::new(seq),
        }
    }
}

/// What is kept parsed beside the line: 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    secs: u64,
    nanos: u32,
    client_start: u32,
    client_len: u32,
    /// The server name runs from byte 3 (after `AT `) for this many bytes.
    server_len: u8,
    /// Which of the node's links brought it (see [`Report::source`]); in
    /// what was padding.
    source: u16,
}

// The source tag took what was padding: a report is no bigger for it.
const _: () = assert!(std::mem::size_of::<Meta>() == 24);

impl Meta {
    /// Server names are at most 63 bytes (checked by the callers).
    fn new(time: Timestamp, server_len: usize, client_start: usize, client_len: usize) -> Meta {
        Meta {
            secs: time.secs(),
            nanos: time.subsec_nanos(),
            client_start: client_start as u32,
            client_len: client_len as u32,
            server_len: server_len as u8,
            source: 0,
        }
    }

    /// The client ID within `line`, the line this header describes.
    fn client<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        let start = self.client_start as usize;
        &line[start..start + self.client_len as usize]
    }
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
    /// Records an IAMAT received by `server` at `received`. The texts are
    /// the client's fields as [`crate::request::parse`] accepted them.
    pub fn new(
        server: &str,
        received: Timestamp,
        client: &[u8],
        location_text: &[u8],
        time_text: &[u8],
        time: Timestamp,
    ) -> Report {
        let mut delta = [0; DELTA_MAX];
        let delta = write_delta(received.nanos_since(time), &mut delta);
        let parts: [&[u8]; 5] = [server.as_bytes(), delta, client, location_text, time_text];
        let len = 2 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let client_start = 3 + server.len() + 1 + delta.len() + 1;
        let meta = Meta::new(time, server.len(), client_start, client.len());
        // Assembled on the stack (a line is short), then copied once into
        // the report's own allocation.
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        buf[..2].copy_from_slice(b"AT");
        let mut at = 2;
        for part in parts {
            buf[at] = b' ';
            buf[at + 1..at + 1 + part.len()].copy_from_slice(part);
            at += 1 + part.len();
        }
        Report(ThinArc::from_header_and_slice(Header::new(meta, 0), buf))
    }

    /// Parses and checks an AT line made by another server (copying it).
    pub fn parse(line: impl AsRef<[u8]>) -> Result<Report, BadReport> {
        Ok(Report::check(line.as_ref())?.to_report())
    }

    /// Parses and checks an AT line made by another server, without
    /// copying it: a link checks a whole frame of updates before it offers
    /// any, and makes a report only of those that win.
    pub fn check(line: &[u8]) -> Result<Checked<'_>, BadReport> {
        // Lines travel exactly as their server made them: six fields and
        // five single spaces, no other white space (an LF here would split
        // a client's WHATSAT reply).
        let [at, server, delta, client, location, time] = fields(line).ok_or(BadReport::Shape)?;
        if at != b"AT" || client.is_empty() {
            return Err(BadReport::Shape);
        }
        if !crate::config::is_node_name(server) {
            return Err(BadReport::Server);
        }
        parse_delta(delta).ok_or(BadReport::Delta)?;
        if !Location::is_valid(location) {
            return Err(BadReport::Location);
        }
        let time = Timestamp::parse(time).ok_or(BadReport::Time)?;
        let client_start = client.as_ptr() as usize - line.as_ptr() as usize;
        let meta = Meta::new(time, server.len(), client_start, client.len());
        Ok(Checked { line, meta })
    }

    fn meta(&self) -> &Meta {
        &self.0.header.header.meta
    }

    /// The change number its store gave it, 0 if none has.
    pub(crate) fn seq(&self) -> u64 {
        self.0.header.header.seq.load(Relaxed) & SEQ_MASK
    }

    /// Records that the neighbour on link `slot` (below [`HEARD_SLOTS`])
    /// sent this very report, so it has it (or newer) and need not be sent
    /// it. Only a stored report is marked.
    pub(crate) fn mark_heard(&self, slot: u8) {
        debug_assert!(slot < HEARD_SLOTS);
        let bit = 1u64 << (SEQ_BITS + u32::from(slot));
        self.0.header.header.seq.fetch_or(bit, Relaxed);
    }

    /// Has the neighbour on link `slot` sent this very report?
    pub(crate) fn heard(&self, slot: u8) -> bool {
        let bit = 1u64 << (SEQ_BITS + u32::from(slot));
        self.0.header.header.seq.load(Relaxed) & bit != 0
    }

    /// The tag of the link that brought this report to the store holding
    /// it, 0 if none did (a client's). Tags are the store's node's own.
    pub(crate) fn source(&self) -> u16 {
        self.meta().source
    }

    /// This report numbered `seq` by the store that takes it from link
    /// `source`, or a copy so numbered if another store already numbered
    /// this one (a report carries one store's change number) or it is
    /// marked with another source.
    pub(crate) fn numbered(self, seq: u64, source: u16) -> Report {
        let claimed = self.meta().source == source
            && self
                .0
                .header
                .header
                .seq
                .compare_exchange(0, seq, Relaxed, Relaxed)
                .is_ok();
        if claimed {
            return self;
        }
        Checked {
            line: self.line(),
            meta: *self.meta(),
        }
        .numbered(seq, source)
    }

    /// The AT line, without a line end.
    pub fn line(&self) -> &[u8] {
        &self.0.slice
    }

    /// The server that received the IAMAT.
    pub fn server(&self) -> &[u8] {
        &self.line()[3..3 + usize::from(self.meta().server_len)]
    }

    /// The client ID, as the client sent it.
    pub fn client(&self) -> &[u8] {
        self.meta().client(self.line())
    }

    /// The client's location (the fifth field).
    pub fn location(&self) -> Location {
        let meta = self.meta();
        let after_client = (meta.client_start + meta.client_len) as usize + 1;
        let rest = &self.line()[after_client..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        // Checked when the report was made or parsed.
        Location::parse(&rest[..end]).unwrap_or(Location { lat: 0.0, lon: 0.0 })
    }

    /// The client's own time for this report.
    pub fn time(&self) -> Timestamp {
        let meta = self.meta();
        Timestamp::new(meta.secs, meta.nanos).unwrap_or_default()
    }

    /// Newest wins: the greater client time, and for equal times the
    /// greater line bytes (which begin with the server name), so every node
    /// settles on the same report whatever order reports arrive in.
    pub fn newness(&self, other: &Report) -> Ordering {
        newness((self.meta(), self.line()), (other.meta(), other.line()))
    }

    /// Whether the two are the same report, not just equal ones.
    pub fn ptr_eq(&self, other: &Report) -> bool {
        self.0.ptr() == other.0.ptr()
    }
}

fn newness((a, a_line): (&Meta, &[u8]), (b, b_line): (&Meta, &[u8])) -> Ordering {
    (a.secs, a.nanos)
        .cmp(&(b.secs, b.nanos))
        .then_with(|| a_line.cmp(b_line))
}

/// An AT line that [`Report::check`] accepted, still in the buffer it
/// arrived in.
#[derive(Clone, Copy, Debug)]
pub struct Checked<'a> {
    line: &'a [u8],
    meta: Meta,
}

impl Checked<'_> {
    pub fn client(&self) -> &[u8] {
        self.meta.client(self.line)
    }

    /// [`Report::newness`], against a stored report.
    pub fn newness(&self, other: &Report) -> Ordering {
        newness((&self.meta, self.line), (other.meta(), other.line()))
    }

    /// The report, in its own allocation.
    pub fn to_report(&self) -> Report {
        self.numbered(0, 0)
    }

    /// The report, in its own allocation, numbered `seq` by its store,
    /// which took it from link `source`.
    pub(crate) fn numbered(self, seq: u64, source: u16) -> Report {
        let meta = Meta {
            source,
            ..self.meta
        };
        Report(ThinArc::from_header_and_slice(
            Header::new(meta, seq),
            self.line,
        ))
    }
}

impl PartialEq for Report {
    fn eq(&self, other: &Report) -> bool {
        self.line() == other.line()
    }
}

impl Eq for Report {}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Report({})", self.line().escape_ascii())
    }
}

/// The six fields of a line, if it has exactly five spaces and no other
/// white space (other than ' ', that is exactly the bytes 9..=13: TAB, LF,
/// VT, FF, CR). Every line a neighbour sends passes through here, so it is
/// one pass, sixteen bytes at a time: the comparisons in [`scan16`] have no
/// branches, and compile to a few vector instructions.
fn fields(line: &[u8]) -> Option<[&[u8]; 6]> {
    let mut at = [0; 5];
    let mut found = 0;
    let blocks = line.chunks_exact(16);
    let mut last = [b'x'; 16];
    last[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    let whole = blocks.map(|b| {
        let mut block = [0; 16];
        block.copy_from_slice(b);
        block
    });
    for (n, block) in whole.chain([last]).enumerate() {
        let (mut spaces, other) = scan16(&block);
        if other {
            return None;
        }
        while spaces != 0 {
            *at.get_mut(found)? = n * 16 + spaces.trailing_zeros() as usize;
            found += 1;
            spaces &= spaces - 1;
        }
    }
    let [s1, s2, s3, s4, s5] = (found == 5).then_some(at)?;
    Some([
        &line[..s1],
        &line[s1 + 1..s2],
        &line[s2 + 1..s3],
        &line[s3 + 1..s4],
        &line[s4 + 1..s5],
        &line[s5 + 1..],
    ])
}

/// A bit for each space in `block`, and whether it holds other white space.
#[inline(always)]
fn scan16(block: &[u8; 16]) -> (u32, bool) {
    let mut spaces = 0u32;
    let mut other = false;
    for (i, &b) in block.iter().enumerate() {
        spaces |= u32::from(b == b' ') << i;
        other |= b.wrapping_sub(9) < 5;
    }
    (spaces, other)
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
        assert_eq!(
            r.location(),
            Location::parse(b"+34.068930-118.445127").unwrap()
        );
        assert_eq!(r.time(), Timestamp::new(1621464827, 959498503).unwrap());
    }

    #[test]
    fn other_white_space_is_bytes_9_to_13() {
        use crate::request::is_space;
        for b in 0..=255u8 {
            assert_eq!(is_space(b) && b != b' ', (9..=13).contains(&b), "{b}");
        }
    }

    #[test]
    fn parse_finds_the_fields() {
        let line = b"AT Bona-2 -1.000000001 k+j +1.5-2.25 7.5";
        let r = Report::parse(&line[..]).unwrap();
        assert_eq!(r.line(), line);
        assert_eq!(r.server(), b"Bona-2");
        assert_eq!(r.client(), b"k+j");
        assert_eq!(
            r.location(),
            Location {
                lat: 1.5,
                lon: -2.25
            }
        );
        assert_eq!(r.time(), Timestamp::new(7, 500_000_000).unwrap());
    }

    #[test]
    fn long_lines_are_made_whole() {
        let client = "c".repeat(1000);
        let r = Report::new(
            "Clark",
            Timestamp::new(10, 0).unwrap(),
            client.as_bytes(),
            b"+1+1",
            b"9",
            Timestamp::new(9, 0).unwrap(),
        );
        assert_eq!(r.client(), client.as_bytes());
        assert_eq!(Report::parse(r.line()), Ok(r));
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
            b"AT Clark +0.263873386  +34-118 1",
            b"AT Clark +0.263873386 kiwi +34-118 1 ",
            b"AT Clark +0.263873386 kiwi +34-118",
            b"",
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

    /// A field, or (now and then) a run of spaces or other white space.
    fn field(valid: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            8 => valid.prop_map(|s| s),
            1 => "[ \t\n\x0b\x0c\rA.+-]{0,3}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Report::parse(bytes);
        }

        /// The one-pass split against the plain definition: split at every
        /// space, six fields, no other white space anywhere.
        #[test]
        fn fields_are_split_at_exactly_five_spaces(
            at in field("AT"),
            server in field("[A-Za-z][A-Za-z0-9-]{0,6}"),
            delta in field("[-+][0-9]{1,3}[.][0-9]{9}"),
            client in field("[a-z.+ ]{0,40}"),
            location in field("[-+][0-9]{1,3}([.][0-9]{1,6})?[-+][0-9]{1,3}([.][0-9]{1,6})?"),
            time in field("[0-9]{1,12}([.][0-9]{1,10})?"),
            seps in proptest::collection::vec(
                prop::sample::select(vec![" ", " ", " ", " ", " ", "", "  ", "\t", " \n"]),
                5,
            ),
            tail in prop::sample::select(vec!["", "", "", " ", "\r", " x"]),
        ) {
            let mut line = at;
            for (sep, part) in seps.iter().zip([server, delta, client, location, time]) {
                line.push_str(sep);
                line.push_str(&part);
            }
            line.push_str(tail);
            let split: Vec<&[u8]> = line.as_bytes().split(|&b| b == b' ').collect();
            let other_space = line.bytes().any(|b| (9..=13).contains(&b));
            let expected = (split.len() == 6 && !other_space).then_some(split);
            let found = fields(line.as_bytes()).map(|f| f.to_vec());
            prop_assert_eq!(&found, &expected, "{:?}", line);
            // A line that passes is stored whole, its client where it was.
            if let Ok(checked) = Report::check(line.as_bytes()) {
                let r = checked.to_report();
                prop_assert_eq!(r.line(), line.as_bytes());
                prop_assert_eq!(r.client(), expected.unwrap()[3]);
            }
        }
    }
}
