//! A small blocking HTTP/1.1 client over std's sockets: one request per connection
//! (`Connection: close`), every step bounded by one deadline, every response bounded in size.
//!
//! It speaks just what a sintra gateway needs — `GET` and `POST` with a body, responses framed
//! by `Content-Length`, `Transfer-Encoding: chunked` or the end of the connection — so the
//! client needs no TLS stack, no async runtime and no HTTP crate. A gateway is reached over
//! plain TCP: its answers are signed, so the channel need not be trusted for integrity.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bytes of a response's status line and headers, at most.
pub const HEADER_BYTES_MAX: usize = 16 << 10;
/// Bytes of a response body, at most (a signed answer carrying a 60 KiB value is about
/// 125 KiB of JSON).
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No complete response before the deadline (the server may be silent or overloaded).
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The address did not resolve or no connection could be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address as given.
        addr: String,
        /// What the system said.
        reason: String,
    },
    /// The connection broke while sending or receiving.
    #[error("connection error: {0}")]
    Io(String),
    /// The bytes received are not an HTTP/1.x response.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The response is larger than [`HEADER_BYTES_MAX`] or [`BODY_BYTES_MAX`].
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// A response: its status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (`200`, `404`, ...).
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// `GET target` (path and query) from `addr` (`host:port`), all within `timeout`.
pub fn get(addr: &str, target: &str, timeout: Duration) -> Result<Response, HttpError> {
    request(addr, "GET", target, &[], timeout)
}

/// `POST target` with `body` to `addr` (`host:port`), all within `timeout`.
pub fn post(
    addr: &str,
    target: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    request(addr, "POST", target, body, timeout)
}

/// One request on a fresh connection: connect, send, read the whole response, all before
/// `timeout` has passed.
pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let deadline = Deadline::after(timeout);
    let mut stream = connect(addr, &deadline)?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut message = Vec::with_capacity(head.len() + body.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(body);
    stream
        .set_write_timeout(Some(deadline.remaining()?))
        .map_err(|error| HttpError::Io(error.to_string()))?;
    if let Err(error) = stream.write_all(&message) {
        // A server may answer before it read the whole body (`413` for an oversized one) and
        // close; its answer is then still there to read.
        return read_response(&mut stream, &deadline).map_err(|_| deadline.io_error(&error));
    }
    read_response(&mut stream, &deadline)
}

/// The instant a request must be done by.
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    /// Time left; `Timeout` once none is (a zero socket timeout would mean "none").
    fn remaining(&self) -> Result<Duration, HttpError> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout(self.timeout));
        }
        Ok(left)
    }

    fn io_error(&self, error: &io::Error) -> HttpError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout(self.timeout),
            _ => HttpError::Io(error.to_string()),
        }
    }
}

fn connect(addr: &str, deadline: &Deadline) -> Result<TcpStream, HttpError> {
    let connect_error = |reason: String| HttpError::Connect {
        addr: addr.to_owned(),
        reason,
    };
    let candidates: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|error| connect_error(error.to_string()))?
        .collect();
    let mut last = connect_error("the name resolves to no address".into());
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, deadline.remaining()?) {
            Ok(stream) => {
                // Requests are written whole; waiting to coalesce them only adds latency.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                last = HttpError::Timeout(deadline.timeout);
            }
            Err(error) => last = connect_error(error.to_string()),
        }
    }
    Err(last)
}

/// Reads into `buffer` until `done(buffer)` says the response is complete, the peer closes
/// (`Ok(false)`), or `max` bytes were read (`TooLarge`).
fn read_until(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    max: usize,
    deadline: &Deadline,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<bool, HttpError> {
    let mut chunk = [0u8; 8192];
    while !done(buffer) {
        if buffer.len() >= max {
            return Err(HttpError::TooLarge(max));
        }
        stream
            .set_read_timeout(Some(deadline.remaining()?))
            .map_err(|error| HttpError::Io(error.to_string()))?;
        let want = chunk.len().min(max - buffer.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Ok(false),
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(deadline.io_error(&error)),
        }
    }
    Ok(true)
}

fn header_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// How the body of a response is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn read_response(stream: &mut TcpStream, deadline: &Deadline) -> Result<Response, HttpError> {
    let mut buffer = Vec::new();
    let complete = read_until(
        stream,
        &mut buffer,
        HEADER_BYTES_MAX + BODY_BYTES_MAX,
        deadline,
        |bytes| header_end(bytes).is_some() || bytes.len() >= HEADER_BYTES_MAX,
    )?;
    let Some(end) = header_end(&buffer) else {
        if !complete {
            return Err(HttpError::Malformed(if buffer.is_empty() {
                "the server closed the connection without a response".into()
            } else {
                "the connection closed inside the headers".into()
            }));
        }
        return Err(HttpError::TooLarge(HEADER_BYTES_MAX));
    };
    let head = std::str::from_utf8(&buffer[..end])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8".into()))?;
    let (status, framing) = parse_head(head)?;
    let mut body = buffer.split_off(end);
    match framing {
        Framing::Length(length) => {
            if length > BODY_BYTES_MAX {
                return Err(HttpError::TooLarge(BODY_BYTES_MAX));
            }
            let complete = read_until(stream, &mut body, length, deadline, |bytes| {
                bytes.len() >= length
            })?;
            if !complete || body.len() < length {
                return Err(HttpError::Malformed(format!(
                    "the body ended after {} of {length} bytes",
                    body.len()
                )));
            }
            body.truncate(length);
        }
        Framing::UntilClose => {
            read_until(stream, &mut body, BODY_BYTES_MAX + 1, deadline, |_| false)?;
            if body.len() > BODY_BYTES_MAX {
                return Err(HttpError::TooLarge(BODY_BYTES_MAX));
            }
        }
        Framing::Chunked => {
            // Chunk framing adds a few bytes per chunk; the decoded body is bounded below.
            let max = BODY_BYTES_MAX + BODY_BYTES_MAX / 8 + 1024;
            let mut decoded = None;
            read_until(stream, &mut body, max, deadline, |bytes| {
                decoded = dechunk(bytes).ok().flatten();
                decoded.is_some()
            })?;
            body = match decoded {
                Some(decoded) => decoded,
                None => {
                    dechunk(&body)?;
                    return Err(HttpError::Malformed(
                        "the connection closed inside a chunked body".into(),
                    ));
                }
            };
            if body.len() > BODY_BYTES_MAX {
                return Err(HttpError::TooLarge(BODY_BYTES_MAX));
            }
        }
    }
    Ok(Response { status, body })
}

fn parse_head(head: &str) -> Result<(u16, Framing), HttpError> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!(
            "status line {:?}",
            truncate(status_line, 80)
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or_else(|| {
            HttpError::Malformed(format!("status line {:?}", truncate(status_line, 80)))
        })?;
    let mut framing = Framing::UntilClose;
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!(
                "header line {:?}",
                truncate(line, 80)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            } else {
                return Err(HttpError::Malformed(format!(
                    "unsupported transfer encoding {value:?}"
                )));
            }
        } else if name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let length = value.parse().map_err(|_| {
                HttpError::Malformed(format!("content-length {:?}", truncate(value, 40)))
            })?;
            framing = Framing::Length(length);
        }
    }
    Ok((status, framing))
}

/// The body of a complete chunked encoding; `Ok(None)` while it is incomplete.
fn dechunk(bytes: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| HttpError::Malformed("chunk size is not UTF-8".into()))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            HttpError::Malformed(format!("chunk size {:?}", truncate(size_text, 20)))
        })?;
        if size > BODY_BYTES_MAX {
            return Err(HttpError::TooLarge(BODY_BYTES_MAX));
        }
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return Ok(header_end_or_crlf(rest).then_some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        if &rest[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        rest = &rest[size + 2..];
    }
}

/// Whether the trailer section after the last chunk is complete.
fn header_end_or_crlf(rest: &[u8]) -> bool {
    rest.starts_with(b"\r\n") || header_end(rest).is_some()
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    //! The client against scripted one-shot servers on 127.0.0.1: framings, limits, silence.
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A server that reads one request head and answers `reply` (or nothing), then closes.
    fn serve_once(reply: Option<Vec<u8>>, linger: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 1024];
            while header_end(&buffer).is_none() {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                }
            }
            if let Some(reply) = reply {
                let _ = stream.write_all(&reply);
            }
            thread::sleep(linger);
        });
        addr
    }

    const SHORT: Duration = Duration::from_secs(5);
    /// How long a scripted server keeps its end open after replying (closing a socket with
    /// unread request bytes would reset the connection before the client reads the reply).
    const LINGER: Duration = Duration::from_millis(100);

    #[test]
    fn content_length_chunked_and_close_delimited_bodies_are_read() {
        let addr = serve_once(
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello and more".to_vec()),
            LINGER,
        );
        let response = get(&addr, "/x", SHORT).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"hello"[..])
        );

        let addr = serve_once(
            Some(
                b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                    .to_vec(),
            ),
            LINGER,
        );
        let response = post(&addr, "/y", b"body", SHORT).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (503, &b"abcde"[..])
        );

        let addr = serve_once(
            Some(b"HTTP/1.0 404 Not Found\r\n\r\nno such path".to_vec()),
            LINGER,
        );
        let response = get(&addr, "/z", SHORT).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (404, &b"no such path"[..])
        );
    }

    #[test]
    fn silence_is_a_timeout_and_a_refused_port_a_connect_error() {
        let addr = serve_once(None, Duration::from_secs(3));
        let started = Instant::now();
        let error = get(&addr, "/", Duration::from_millis(300)).unwrap_err();
        assert_eq!(error, HttpError::Timeout(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(3));

        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = unused.local_addr().unwrap().to_string();
        drop(unused);
        assert!(matches!(
            get(&addr, "/", SHORT).unwrap_err(),
            HttpError::Connect { .. }
        ));
        assert!(matches!(
            get("not an address", "/", SHORT).unwrap_err(),
            HttpError::Connect { .. }
        ));
    }

    #[test]
    fn garbage_truncation_and_oversized_responses_are_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(), "malformed"),
            (b"HTTP/1.1 abc OK\r\n\r\n".to_vec(), "malformed"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
                "malformed",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-le".to_vec(), "malformed"),
            (Vec::new(), "malformed"),
            (
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    BODY_BYTES_MAX + 1
                )
                .into_bytes(),
                "larger",
            ),
            (
                [
                    b"HTTP/1.1 200 OK\r\nx: ".as_slice(),
                    &[b'a'; HEADER_BYTES_MAX],
                ]
                .concat(),
                "larger",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
                "malformed",
            ),
        ];
        for (reply, expected) in cases {
            let addr = serve_once(Some(reply.clone()), LINGER);
            let error = get(&addr, "/", SHORT).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{:?}: {error}",
                String::from_utf8_lossy(&reply[..reply.len().min(60)])
            );
        }
    }
}
