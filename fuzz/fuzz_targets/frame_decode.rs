//! Peer frame bodies: arbitrary bytes never panic or allocate beyond the
//! frame, and whatever decodes encodes back to the same bytes (the one
//! exception: a goodbye reason that is not UTF-8, kept lossily).

#![no_main]

use bytes::{Bytes, BytesMut};
use herd::peer::frame::{decode, decode_updates, encode, Message};
use herd::report::Report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The links' borrowed decoding of updates agrees with `decode`.
    let borrowed = decode_updates(data).ok();
    let decoded = decode(Bytes::copy_from_slice(data));
    match (&borrowed, &decoded) {
        (Some((head, lines)), Ok(Message::Updates { head: h, lines: l })) => {
            assert_eq!(head, h);
            assert!(lines.iter().copied().eq(l.iter().map(|b| &b[..])));
        }
        (None, Ok(Message::Updates { .. })) | (Some(_), _) => {
            panic!("decode_updates and decode disagree")
        }
        _ => {}
    }
    let Ok(message) = decoded else {
        return;
    };
    let mut out = BytesMut::new();
    encode(&message, &mut out);
    let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(len, out.len() - 4);
    let lossy_bye = matches!(&message, Message::Bye(_)) && std::str::from_utf8(&data[1..]).is_err();
    if !lossy_bye {
        assert_eq!(&out[4..], data);
    }
    let again = decode(out.freeze().slice(4..)).expect("an encoded message decodes");
    assert_eq!(again, message);
    // What a link does next with updates: check each line as an AT line.
    if let Message::Updates { lines, .. } = &message {
        for line in lines {
            if let Ok(report) = Report::parse(line) {
                assert_eq!(report.line(), &line[..]);
            }
        }
    }
});
