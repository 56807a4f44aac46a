//! The ceiling: a line server that does nothing but answer.
//!
//! Every IAMAT gets the AT line a real node would send (its name, the
//! receive time minus the client's time to the nanosecond, the client's
//! fields byte for byte); anything else gets `? ` and the line. No table, no
//! flooding, no logging: what is left is the cost of reading lines, parsing
//! them and writing replies on this machine, the most any node could do
//! under the same load. It runs in its own process, on the same runtime a
//! node uses (tokio, one worker per core), replies to everything one read
//! brought in one write, and stops when its parent closes its stdin.

use std::io::Write;

use anyhow::{Context, Result};
use herd::request::{self, Parsed, Request};
use herd::timestamp::{write_delta, Timestamp, DELTA_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The node name in the ceiling's AT lines (the same length as the herd's).
pub const NAME: &str = "Clark";

/// Longest line, as the real node's default `limits.max_line`.
const MAX_LINE: usize = 4096;

/// A client time further ahead than this is refused, as a node's default
/// `limits.max_clock_skew` (60 s).
const MAX_SKEW_NS: i128 = 60_000_000_000;

/// Serves on an ephemeral port of 127.0.0.1, printing `listening <addr>`.
pub fn serve() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {addr}")?;
            out.flush()?;
        }
        let parent_gone = async {
            // Stdin is a pipe from the benchmark: EOF means it is done (or died).
            let mut stdin = tokio::io::stdin();
            let mut byte = [0u8; 64];
            while let Ok(n) = stdin.read(&mut byte).await {
                if n == 0 {
                    break;
                }
            }
        };
        let accept = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream));
                    }
                    Err(e) => {
                        eprintln!("ceiling: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = parent_gone => {}
            _ = accept => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Connections still open are dropped with the runtime.
    rt.shutdown_background();
    Ok(())
}

async fn connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut start = 0;
    let mut end = 0;
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = match stream.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let scan_from = end;
        end += n;
        out.clear();
        let mut from = scan_from;
        while let Some(pos) = buf[from..end].iter().position(|&b| b == b'\n') {
            let lf = from + pos;
            let mut line = &buf[start..lf];
            start = lf + 1;
            from = start;
            if line.len() > MAX_LINE {
                invalid(&mut out, &line[..MAX_LINE]);
                let _ = stream.write_all(&out).await;
                return;
            }
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            answer(&mut out, line);
        }
        if end - start > MAX_LINE {
            invalid(&mut out, &buf[start..start + MAX_LINE]);
            let _ = stream.write_all(&out).await;
            return;
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn answer(out: &mut Vec<u8>, line: &[u8]) {
    match request::parse(line) {
        Parsed::Empty => {}
        Parsed::Request(Request::IAmAt {
            client,
            location_text,
            time_text,
            time,
            ..
        }) => {
            let delta = Timestamp::now().nanos_since(time);
            if delta < -MAX_SKEW_NS {
                return invalid(out, line);
            }
            out.extend_from_slice(b"AT ");
            out.extend_from_slice(NAME.as_bytes());
            out.push(b' ');
            out.extend_from_slice(write_delta(delta, &mut [0; DELTA_MAX]));
            out.push(b' ');
            out.extend_from_slice(client);
            out.push(b' ');
            out.extend_from_slice(location_text);
            out.push(b' ');
            out.extend_from_slice(time_text);
            out.push(b'\n');
        }
        // Nothing is stored, so no client is known.
        Parsed::Request(Request::WhatsAt { .. }) | Parsed::Invalid => invalid(out, line),
    }
}

fn invalid(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_a_node() {
        let mut out = Vec::new();
        answer(
            &mut out,
            b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("AT Clark +"), "{text}");
        assert!(
            text.ends_with(" kiwi +34.068930-118.445127 1621464827.959498503\n"),
            "{text}"
        );
        let mut out = Vec::new();
        answer(&mut out, b"HELLO");
        assert_eq!(out, b"? HELLO\n");
        let mut out = Vec::new();
        answer(&mut out, b"  ");
        assert!(out.is_empty());
    }
}
