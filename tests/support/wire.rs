//! A minimal raw Postgres frontend over a blocking `TcpStream`, for tests
//! that must send what no driver would (SSLRequest by hand, garbage, huge
//! length prefixes, a disconnect in the middle of a query) or read protocol
//! messages a driver hides (ParameterStatus, BackendKeyData).
//!
//! Included with `#[path = "support/wire.rs"] mod wire;`. It frames messages
//! and nothing more: the tests decide what is right.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const PROTOCOL_3_0: i32 = 196_608;
/// Longest a test waits for a server reply before calling it a hang.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message body this frontend accepts from the server.
const MAX_BACKEND_MESSAGE: usize = 16 << 20;

/// One backend message: its type byte and body (without the length).
#[derive(Clone, Debug)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// The fields of an ErrorResponse/NoticeResponse, keyed by field byte
    /// (`C` SQLSTATE, `M` message, `S` severity, `P` position, ...).
    pub fn fields(&self) -> HashMap<u8, String> {
        let mut fields = HashMap::new();
        for field in self.body.split(|b| *b == 0) {
            if let Some((&key, value)) = field.split_first() {
                fields.insert(key, String::from_utf8_lossy(value).into_owned());
            }
        }
        fields
    }

    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        (self.tag == b'E')
            .then(|| self.fields().remove(&b'C'))
            .flatten()
    }

    /// (name, value) of a ParameterStatus message.
    pub fn parameter_status(&self) -> Option<(String, String)> {
        if self.tag != b'S' {
            return None;
        }
        let mut parts = self.body.split(|b| *b == 0);
        let name = String::from_utf8_lossy(parts.next()?).into_owned();
        let value = String::from_utf8_lossy(parts.next()?).into_owned();
        Some((name, value))
    }
}

/// A raw protocol connection.
pub struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> io::Result<RawConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConn { stream })
    }

    /// Sends SSLRequest and returns the server's one-byte answer.
    pub fn ssl_request(&mut self) -> io::Result<u8> {
        let mut packet = 8i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        self.stream.write_all(&packet)?;
        let mut answer = [0u8; 1];
        self.stream.read_exact(&mut answer)?;
        Ok(answer[0])
    }

    /// Sends a protocol 3.0 StartupMessage with the given parameters.
    pub fn send_startup(&mut self, params: &[(&str, &str)]) -> io::Result<()> {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (name, value) in params {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let len = i32::try_from(body.len() + 4).map_err(io::Error::other)?;
        let mut packet = len.to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        self.stream.write_all(&packet)
    }

    /// Connects as user `eddy` to database `eddy` and reads up to the first
    /// ReadyForQuery, returning everything the server sent on the way.
    pub fn startup(
        addr: SocketAddr,
        extra: &[(&str, &str)],
    ) -> io::Result<(RawConn, Vec<Message>)> {
        let mut conn = RawConn::connect(addr)?;
        let mut params = vec![("user", "eddy"), ("database", "eddy")];
        params.extend_from_slice(extra);
        conn.send_startup(&params)?;
        let messages = conn.read_until_ready()?;
        Ok((conn, messages))
    }

    /// Sends one framed message: type byte, length, body.
    pub fn send(&mut self, tag: u8, body: &[u8]) -> io::Result<()> {
        let len = i32::try_from(body.len() + 4).map_err(io::Error::other)?;
        let mut packet = vec![tag];
        packet.extend_from_slice(&len.to_be_bytes());
        packet.extend_from_slice(body);
        self.stream.write_all(&packet)
    }

    /// Sends bytes as they are, framed or not.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a simple Query message.
    pub fn send_query(&mut self, sql: &str) -> io::Result<()> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body)
    }

    /// Runs a simple query and returns the messages up to ReadyForQuery.
    pub fn query(&mut self, sql: &str) -> io::Result<Vec<Message>> {
        self.send_query(sql)?;
        self.read_until_ready()
    }

    /// Reads one message; `None` when the server closed the connection.
    pub fn read_message(&mut self) -> io::Result<Option<Message>> {
        let mut header = [0u8; 5];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return Ok(None),
            Err(e) => return Err(explain_timeout(e)),
        }
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let body_len = usize::try_from(len - 4)
            .ok()
            .filter(|n| *n <= MAX_BACKEND_MESSAGE)
            .ok_or_else(|| io::Error::other(format!("bad backend message length {len}")))?;
        let mut body = vec![0u8; body_len];
        self.stream.read_exact(&mut body).map_err(explain_timeout)?;
        Ok(Some(Message {
            tag: header[0],
            body,
        }))
    }

    /// Reads messages up to and including ReadyForQuery; an error if the
    /// server closes the connection first.
    pub fn read_until_ready(&mut self) -> io::Result<Vec<Message>> {
        let mut messages = Vec::new();
        loop {
            let message = self.read_message()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("server closed the connection after {messages:?}"),
                )
            })?;
            let done = message.tag == b'Z';
            messages.push(message);
            if done {
                return Ok(messages);
            }
        }
    }

    /// Reads until the server closes the connection, returning what it sent.
    pub fn read_until_closed(&mut self) -> io::Result<Vec<Message>> {
        let mut messages = Vec::new();
        while let Some(message) = self.read_message()? {
            messages.push(message);
        }
        Ok(messages)
    }

    /// Closes the socket without a Terminate message.
    pub fn abort(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A read timeout surfaces as EAGAIN on Linux; say what it means.
fn explain_timeout(err: io::Error) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no reply from the server within {READ_TIMEOUT:?}"),
        ),
        _ => err,
    }
}

fn is_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// The ParameterStatus values among `messages`, last one wins.
pub fn parameters(messages: &[Message]) -> HashMap<String, String> {
    messages
        .iter()
        .filter_map(Message::parameter_status)
        .collect()
}

/// The first ErrorResponse among `messages`.
pub fn first_error(messages: &[Message]) -> Option<&Message> {
    messages.iter().find(|m| m.tag == b'E')
}

/// The text of each DataRow's columns among `messages` (NULL as `None`).
pub fn data_rows(messages: &[Message]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| decode_data_row(&m.body))
        .collect()
}

fn decode_data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    let mut rest = body.get(2..).unwrap_or_default();
    while rest.len() >= 4 {
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        match usize::try_from(len) {
            Ok(n) if n <= rest.len() => {
                values.push(Some(String::from_utf8_lossy(&rest[..n]).into_owned()));
                rest = &rest[n..];
            }
            _ => values.push(None),
        }
    }
    values
}
