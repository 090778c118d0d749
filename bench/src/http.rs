//! A minimal keep-alive HTTP/1.1 client: one request at a time on one
//! connection, bodies framed by `Content-Length` both ways.
//!
//! Written by hand rather than taken from a crate: the bench needs `POST` with
//! a JSON body and the status and body of the answer, nothing more, and the
//! fewer bytes and allocations it spends per request, the less of the shared
//! CPU it takes from the hub it measures.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response head accepted.
const HEAD_LIMIT: usize = 64 * 1024;

/// One HTTP/1.1 connection, reused for request after request.
#[derive(Debug)]
pub struct HttpConn<S> {
    /// The socket (a `TcpStream`; an in-memory pipe in tests).
    stream: S,
    /// The `Host` header.
    host: String,
    /// Bytes read but not yet consumed (the start of the next response).
    buf: Vec<u8>,
    /// The request being written, kept to reuse its allocation.
    out: Vec<u8>,
}

/// An answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy), shortened for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(200).collect()
    }
}

/// What the bench needs from a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpConn<S> {
    /// Wraps a connected stream; `host` is sent as the `Host` header.
    pub fn new(stream: S, host: &str) -> Self {
        Self {
            stream,
            host: host.to_string(),
            buf: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
        }
    }

    /// `POST path` with a JSON `body`; waits for and returns the answer.
    ///
    /// # Errors
    /// The connection failed or closed, or the answer is not HTTP/1.1 framed
    /// by `Content-Length`.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response> {
        self.out.clear();
        self.out.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                self.host,
                body.len()
            )
            .as_bytes(),
        );
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<Response> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > HEAD_LIMIT {
                bail!("response head longer than {HEAD_LIMIT} bytes");
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        while self.buf.len() < head_end + head.content_length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + head.content_length].to_vec();
        self.buf.drain(..head_end + head.content_length);
        Ok(Response {
            status: head.status,
            body,
        })
    }

    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the hub closed the connection");
        }
        Ok(())
    }
}

/// Reads the status and `Content-Length` of a response head (up to and
/// including the blank line).
fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.trim().parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not supported ({status_line})");
        }
    }
    Ok(Head {
        status,
        content_length: content_length.unwrap_or(0),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_gives_status_and_length() {
        let head = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(
            parse_head(head).unwrap(),
            Head {
                status: 202,
                content_length: 12
            }
        );
        let empty = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(parse_head(empty).unwrap().content_length, 0);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn keep_alive_requests_read_back_to_back_answers() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut conn = HttpConn::new(client, "hub");
        // Both answers arrive in one read: the second must wait in the buffer.
        server
            .write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}\
                  HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 3\r\n\r\nbad",
            )
            .await
            .unwrap();
        let first = conn.post_json("/a", b"{}").await.unwrap();
        assert_eq!((first.status, first.body.as_slice()), (202, &b"{}"[..]));
        let second = conn.post_json("/b", b"{}").await.unwrap();
        assert_eq!((second.status, second.body.as_slice()), (422, &b"bad"[..]));
        let mut sent = vec![0; 4096];
        let n = server.read(&mut sent).await.unwrap();
        let sent = String::from_utf8_lossy(&sent[..n]);
        assert!(sent.starts_with("POST /a HTTP/1.1\r\nHost: hub\r\n"));
        assert!(sent.contains("Content-Length: 2\r\n\r\n{}POST /b"));
    }
}
