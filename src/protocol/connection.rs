//! One client connection: SSL/GSS requests declined, every incoming message
//! checked against the size limit before it is buffered, the connection
//! limit enforced at startup, and pgwire's message dispatch.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::Framed;

use super::handler::{to_pg_error, Handler, OverLimit};
use crate::error::Error;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the accept loop hands each connection.
pub struct ConnectionLimits {
    pub max_message_bytes: usize,
    pub over_limit: bool,
}

/// Serves one client until it leaves, errs fatally, or the server shuts down.
pub async fn serve_connection(
    mut tcp: TcpStream,
    handler: Arc<Handler>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let addr = tcp.peer_addr()?;
    let Some(first) = tokio::time::timeout(STARTUP_TIMEOUT, decline_encryption(&mut tcp)).await??
    else {
        return Ok(());
    };
    let io = LimitedIo::new(tcp, first, limits.max_message_bytes);
    let client = DefaultClient::new(addr, false);
    let mut socket = Framed::new(io, PgWireMessageServerCodec::new(client));
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    if limits.over_limit {
        socket.session_extensions().insert(OverLimit);
    }
    let cancel = Arc::new(DefaultCancelHandler::new(handler.connection_manager()));
    let started = tokio::time::Instant::now();
    loop {
        let awaiting_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let deadline = started + STARTUP_TIMEOUT;
        let message = tokio::select! {
            m = socket.next() => m,
            _ = tokio::time::sleep_until(deadline), if awaiting_startup => None,
            _ = shutdown.changed() => {
                let err = Error::ProtocolViolation("terminating connection due to administrator command".into());
                let mut info: pgwire::error::ErrorInfo = to_pg_error(err).into();
                info.severity = "FATAL".into();
                info.code = "57P01".into();
                let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                break;
            }
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(_)) | None => {
                if socket.get_ref().malformed {
                    let err = Error::ProtocolViolation("invalid message length".into());
                    let mut info: pgwire::error::ErrorInfo = to_pg_error(err).into();
                    info.severity = "FATAL".into();
                    let _ = socket
                        .send(PgWireBackendMessage::ErrorResponse(info.into()))
                        .await;
                } else if socket.get_ref().oversized {
                    let err = Error::MessageTooLarge(format!(
                        "message exceeds the limit of {} bytes (--max-message-bytes)",
                        limits.max_message_bytes
                    ));
                    let _ = process_error(&mut socket, to_pg_error(err), false).await;
                }
                break;
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let result = process_message(
            message,
            &mut socket,
            Arc::clone(&handler),
            Arc::clone(&handler),
            Arc::clone(&handler),
            Arc::clone(&handler),
            Arc::clone(&cancel),
        )
        .await;
        if let Err(e) = result {
            let fatal = e.is_fatal();
            process_error(&mut socket, e, extended).await?;
            if fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    let _ = socket.get_mut().inner.shutdown().await;
    Ok(())
}

/// Answers SSLRequest / GSSENCRequest with 'N' and returns the first 8
/// bytes of the real first message (`None` if the client left).
async fn decline_encryption(tcp: &mut TcpStream) -> io::Result<Option<[u8; 8]>> {
    loop {
        let mut head = [0u8; 8];
        match tcp.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
            tcp.write_all(b"N").await?;
            continue;
        }
        return Ok(Some(head));
    }
}

/// A socket that replays a prefix, then watches message boundaries on the
/// way in and refuses a message whose declared length exceeds the limit
/// before its body is read.
pub struct LimitedIo {
    inner: TcpStream,
    prefix: Vec<u8>,
    max: usize,
    /// Bytes of the current message header seen so far.
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
    /// The first message (startup or cancel) has no type byte.
    typed: bool,
    pub oversized: bool,
    /// A length field below its own size.
    pub malformed: bool,
}

impl LimitedIo {
    fn new(inner: TcpStream, prefix: [u8; 8], max: usize) -> LimitedIo {
        LimitedIo {
            inner,
            prefix: prefix.to_vec(),
            max,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            typed: false,
            oversized: false,
            malformed: false,
        }
    }

    /// Advances the framing over `bytes`; false if a message is too large.
    fn track(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let header_size = if self.typed { 5 } else { 4 };
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len == header_size {
                let l = &self.header[header_size - 4..header_size];
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                // Lengths are signed 32-bit in the protocol: a "huge" one is negative.
                if len < 4 || len > i32::MAX as usize {
                    self.malformed = true;
                    return false;
                }
                if len - 4 > self.max {
                    return false;
                }
                self.body_left = len.saturating_sub(4);
                self.header_len = 0;
                self.typed = true;
            }
        }
        true
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.oversized || this.malformed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            )));
        }
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.drain(..n);
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        let new = buf.filled()[before..].to_vec();
        if !this.track(&new) {
            this.oversized = !this.malformed;
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn framing_limit() {
        // The tracker is exercised through a real socket in tests/protocol.rs;
        // here: a startup header then a typed message over the limit.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let mut io = super::LimitedIo::new(server, [0, 0, 0, 8, 0, 3, 0, 0], 100);
            assert!(io.track(&[0, 0, 0, 8, 0, 3, 0, 0][..0]));
            assert!(io.track(&[0, 0, 0, 8, 0, 3, 0, 0]));
            assert!(io.track(&[b'Q', 0, 0, 0, 50]));
            assert!(io.track(&[0u8; 46]));
            assert!(!io.track(&[b'Q', 0, 0, 1, 0]));
            drop(client);
        });
    }
}
