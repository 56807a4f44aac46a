//! Peer messages and their framing: a 4-byte big-endian length, then a kind
//! byte and the body. Pure: bytes in, messages out.
//!
//! Updates travel as the AT lines themselves, many per frame, so one write
//! carries a whole batch and every node stores the very bytes the receiving
//! server made.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::flood::Head;
use crate::store::Seq;

/// Identifies the protocol in every hello; bump on incompatible change.
pub const MAGIC: &[u8; 4] = b"herd";
pub const VERSION: u8 = 1;

const HELLO: u8 = 1;
const UPDATES: u8 = 2;
const PING: u8 = 3;
const PONG: u8 = 4;
const BYE: u8 = 5;

/// The first message each way on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node name.
    pub node: String,
    /// The sender's boot epoch.
    pub epoch: u64,
    /// How far the sender has seen the receiver's change sequence.
    pub seen: Head,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// AT lines; with them, every change up to `head` is delivered.
    Updates {
        head: Seq,
        lines: Vec<Bytes>,
    },
    Ping(u64),
    Pong(u64),
    /// The sender is closing the link, and why.
    Bye(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("not a herd peer (bad magic or version)")]
    NotHerd,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Appends one framed message to `out`.
pub fn encode(message: &Message, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    match message {
        Message::Hello(h) => {
            out.put_u8(HELLO);
            out.put_slice(MAGIC);
            out.put_u8(VERSION);
            out.put_u16(h.node.len() as u16);
            out.put_slice(h.node.as_bytes());
            out.put_u64(h.epoch);
            out.put_u64(h.seen.epoch);
            out.put_u64(h.seen.seq);
        }
        Message::Updates { head, lines } => {
            out.put_u8(UPDATES);
            out.put_u64(*head);
            out.put_u32(lines.len() as u32);
            for line in lines {
                out.put_u32(line.len() as u32);
                out.put_slice(line);
            }
        }
        Message::Ping(n) => {
            out.put_u8(PING);
            out.put_u64(*n);
        }
        Message::Pong(n) => {
            out.put_u8(PONG);
            out.put_u64(*n);
        }
        Message::Bye(reason) => {
            out.put_u8(BYE);
            out.put_slice(reason.as_bytes());
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends an updates frame straight from reports' lines, without building
/// a [`Message`] (the hot path).
pub fn encode_updates<'a>(
    head: Seq,
    lines: impl ExactSizeIterator<Item = &'a [u8]>,
    out: &mut BytesMut,
) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(UPDATES);
    out.put_u64(head);
    out.put_u32(lines.len() as u32);
    for line in lines {
        out.put_u32(line.len() as u32);
        out.put_slice(line);
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Decodes one frame body (after the length).
pub fn decode(mut body: Bytes) -> Result<Message, FrameError> {
    let need = |body: &Bytes, n: usize| {
        if body.remaining() < n {
            Err(FrameError::Malformed("truncated"))
        } else {
            Ok(())
        }
    };
    need(&body, 1)?;
    let message = match body.get_u8() {
        HELLO => {
            need(&body, 7)?;
            if &body[..4] != MAGIC || body[4] != VERSION {
                return Err(FrameError::NotHerd);
            }
            body.advance(5);
            let len = usize::from(body.get_u16());
            need(&body, len + 24)?;
            let node = String::from_utf8(body.split_to(len).to_vec())
                .map_err(|_| FrameError::Malformed("node name is not UTF-8"))?;
            Message::Hello(Hello {
                node,
                epoch: body.get_u64(),
                seen: Head {
                    epoch: body.get_u64(),
                    seq: body.get_u64(),
                },
            })
        }
        UPDATES => {
            let (head, lines) = updates_body(&body)?;
            let lines = lines.into_iter().map(|l| body.slice_ref(l)).collect();
            body.clear();
            Message::Updates { head, lines }
        }
        PING => {
            need(&body, 8)?;
            Message::Ping(body.get_u64())
        }
        PONG => {
            need(&body, 8)?;
            Message::Pong(body.get_u64())
        }
        BYE => {
            let reason = String::from_utf8_lossy(&body).into_owned();
            body.clear();
            Message::Bye(reason)
        }
        kind => return Err(FrameError::UnknownKind(kind)),
    };
    if body.has_remaining() {
        return Err(FrameError::Malformed("trailing bytes"));
    }
    Ok(message)
}

/// Whether a frame body (after the length) is an updates message.
pub fn is_updates(body: &[u8]) -> bool {
    body.first() == Some(&UPDATES)
}

/// Decodes an updates frame body (after the length) into its head and
/// lines, borrowed from the body.
pub fn decode_updates(body: &[u8]) -> Result<(Seq, Vec<&[u8]>), FrameError> {
    match body.split_first() {
        Some((&UPDATES, rest)) => updates_body(rest),
        _ => Err(FrameError::Malformed("not an updates frame")),
    }
}

/// An updates message after its kind byte.
fn updates_body(mut rest: &[u8]) -> Result<(Seq, Vec<&[u8]>), FrameError> {
    let truncated = FrameError::Malformed("truncated");
    if rest.len() < 12 {
        return Err(truncated);
    }
    let head = rest.get_u64();
    let count = rest.get_u32() as usize;
    // Each line needs at least its 4-byte length: bound the count before
    // allocating for it.
    if count > rest.len() / 4 {
        return Err(FrameError::Malformed("update count exceeds frame"));
    }
    let mut lines = Vec::with_capacity(count);
    for _ in 0..count {
        if rest.len() < 4 {
            return Err(truncated);
        }
        let len = rest.get_u32() as usize;
        if rest.len() < len {
            return Err(truncated);
        }
        let (line, after) = rest.split_at(len);
        lines.push(line);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(FrameError::Malformed("trailing bytes"));
    }
    Ok((head, lines))
}

/// Reads one message; None at a clean end of stream between frames.
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame: usize,
) -> Result<Option<Message>, FrameError> {
    Ok(read_sized(reader, max_frame).await?.map(|(m, _)| m))
}

/// [`read`], with the frame's size on the wire.
pub async fn read_sized<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame: usize,
) -> Result<Option<(Message, usize)>, FrameError> {
    let mut body = Vec::new();
    match read_body(reader, max_frame, &mut body).await? {
        Some(size) => decode(Bytes::from(body)).map(|m| Some((m, size))),
        None => Ok(None),
    }
}

/// Reads one frame's body into `body`, replacing what it held, so that a
/// link can keep one buffer for all its frames; the frame's size on the
/// wire, or None at a clean end of stream between frames.
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame: usize,
    body: &mut Vec<u8>,
) -> Result<Option<usize>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read(&mut len[..1]).await? {
        0 => return Ok(None),
        _ => reader.read_exact(&mut len[1..]).await?,
    };
    let len = u32::from_be_bytes(len) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge(len));
    }
    // Zeroes only what the buffer never held before.
    body.resize(len, 0);
    reader.read_exact(body).await?;
    Ok(Some(len + 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(m: Message) {
        let mut buf = BytesMut::new();
        encode(&m, &mut buf);
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        assert_eq!(decode(buf.freeze().slice(4..)).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello(Hello {
            node: "Clark".into(),
            epoch: 42,
            seen: Head { epoch: 7, seq: 9 },
        }));
        round_trip(Message::Updates {
            head: 12,
            lines: vec![Bytes::from_static(b"AT a"), Bytes::new()],
        });
        round_trip(Message::Ping(1));
        round_trip(Message::Pong(u64::MAX));
        round_trip(Message::Bye("shutting down".into()));
    }

    #[test]
    fn encode_updates_matches_encode() {
        let lines = vec![Bytes::from_static(b"x"), Bytes::from_static(b"yz")];
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        encode_updates(5, lines.iter().map(|l| &l[..]), &mut a);
        encode(&Message::Updates { head: 5, lines }, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_strangers_and_lies() {
        assert!(matches!(
            decode(Bytes::from_static(b"\x01http/1.1")),
            Err(FrameError::NotHerd)
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x09")),
            Err(FrameError::UnknownKind(9))
        ));
        assert!(matches!(
            decode(Bytes::from_static(
                b"\x02\0\0\0\0\0\0\0\x01\xff\xff\xff\xff"
            )),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x03\0\0\0\0\0\0\0\0\0")),
            Err(FrameError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn read_enforces_the_frame_limit() {
        let mut data: &[u8] = &[0, 0, 1, 0, 3];
        assert!(matches!(
            read(&mut data, 255).await,
            Err(FrameError::TooLarge(256))
        ));
        let mut empty: &[u8] = &[];
        assert!(read(&mut empty, 255).await.unwrap().is_none());
        let mut cut: &[u8] = &[0, 0];
        assert!(read(&mut cut, 255).await.is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Bytes::from(bytes));
        }

        /// The links' borrowed decoding gives back what was encoded, refuses
        /// a cut or padded frame, and agrees with `decode`.
        #[test]
        fn borrowed_updates_agree_with_decode(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..6),
            head in any::<u64>(),
            cut in any::<prop::sample::Index>(),
            noise in proptest::collection::vec(any::<u8>(), 1..3),
        ) {
            let lines: Vec<Bytes> = lines.into_iter().map(Bytes::from).collect();
            let mut out = BytesMut::new();
            encode(&Message::Updates { head, lines: lines.clone() }, &mut out);
            let whole = out[4..].to_vec();
            let cut = whole[..cut.index(whole.len())].to_vec();
            let padded = [whole.clone(), noise].concat();
            for (body, good) in [(whole, true), (cut, false), (padded, false)] {
                prop_assert!(is_updates(&body) || body.is_empty());
                let borrowed = decode_updates(&body).ok();
                let owned = match decode(Bytes::from(body.clone())) {
                    Ok(Message::Updates { head, lines }) => Some((head, lines)),
                    _ => None,
                };
                prop_assert_eq!(borrowed.is_some(), good);
                prop_assert_eq!(owned.is_some(), good);
                if let (Some((h1, l1)), Some((h2, l2))) = (borrowed, owned) {
                    prop_assert_eq!(h1, head);
                    prop_assert_eq!(h2, head);
                    prop_assert!(l1.iter().copied().eq(lines.iter().map(|l| &l[..])));
                    prop_assert_eq!(l2, lines.clone());
                }
            }
        }
    }
}
