//! The hello exchange that turns a connection into a link.
//!
//! The dialler speaks first; the acceptor checks that the hello names one of
//! its neighbours (and, where the transport proved an identity, the same
//! one) before answering. The dialler marks the link up only when the answer
//! arrives: under TLS 1.3 a refused client learns of it only here.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::frame::{self, FrameError, Hello, Message};
use crate::flood::Hub;
use crate::transport::Conn;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no hello within {0:?}")]
    Timeout(Duration),
    #[error("closed before hello")]
    Closed,
    #[error("peer refused: {0}")]
    RefusedByPeer(String),
    #[error("expected a hello, got another message")]
    NotHello,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

async fn send(conn: &mut Conn, message: &Message) -> Result<(), FrameError> {
    let mut buf = BytesMut::new();
    frame::encode(message, &mut buf);
    conn.writer.write_all(&buf).await?;
    conn.writer.flush().await?;
    Ok(())
}

async fn receive(conn: &mut Conn, wait: Duration, max: usize) -> Result<Hello, HandshakeError> {
    match timeout(wait, frame::read(&mut conn.reader, max)).await {
        Err(_) => Err(HandshakeError::Timeout(wait)),
        Ok(Ok(Some(Message::Hello(h)))) => Ok(h),
        Ok(Ok(Some(Message::Bye(reason)))) => Err(HandshakeError::RefusedByPeer(reason)),
        Ok(Ok(Some(_))) => Err(HandshakeError::NotHello),
        Ok(Ok(None)) => Err(HandshakeError::Closed),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// The dialler's side: says hello to `peer`, returns its answer.
pub async fn dial(
    conn: &mut Conn,
    me: &str,
    peer: &str,
    hub: &Hub,
    wait: Duration,
    max_frame: usize,
) -> Result<Hello, HandshakeError> {
    let hello = Hello {
        node: me.to_string(),
        epoch: hub.epoch(),
        seen: hub.head_of(peer),
    };
    send(conn, &Message::Hello(hello)).await?;
    let answer = receive(conn, wait, max_frame).await?;
    if answer.node != peer {
        return Err(HandshakeError::Refused(format!(
            "dialled {peer} but {} answered",
            answer.node
        )));
    }
    Ok(answer)
}

/// The acceptor's side: who is calling, and is it one of `neighbours`?
pub async fn accept(
    conn: &mut Conn,
    me: &str,
    neighbours: &[String],
    hub: &Hub,
    wait: Duration,
    max_frame: usize,
) -> Result<Hello, HandshakeError> {
    let hello = receive(conn, wait, max_frame).await?;
    let refusal = if !neighbours.contains(&hello.node) {
        Some(format!("{} is not a neighbour of {me}", hello.node))
    } else {
        match &conn.identity {
            Some(proven) if *proven != hello.node => Some(format!(
                "hello says {} but the certificate is {proven}'s",
                hello.node
            )),
            _ => None,
        }
    };
    if let Some(reason) = refusal {
        let _ = send(conn, &Message::Bye(reason.clone())).await;
        return Err(HandshakeError::Refused(reason));
    }
    let answer = Hello {
        node: me.to_string(),
        epoch: hub.epoch(),
        seen: hub.head_of(&hello.node),
    };
    send(conn, &Message::Hello(answer)).await?;
    Ok(hello)
}
