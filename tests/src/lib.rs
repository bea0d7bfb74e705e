//! End-to-end tests of posledger across crates; the tests live in `tests/tests/`, the
//! fixtures in `tests/fixtures/`.

use std::io::{Read, Write};
use std::net::SocketAddr;

/// One HTTP/1.1 request on its own connection (`Connection: close`), with a bearer key: the
/// status and the body (chunked bodies are not decoded). An error when the connection broke
/// before a whole answer came.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let broken = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no whole answer");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(broken)?;
    let status = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(broken)?;
    Ok((status, raw[split + 4..].to_vec()))
}
