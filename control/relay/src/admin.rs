//! The local admin endpoint: HTTP/1.0 on a loopback address, one request per connection,
//! answered at once from pages the caller supplies (`/health`, `/status`, `/metrics`, and in
//! gossip mode `/descriptors`). No authentication, which is why the configuration accepts
//! only loopback addresses. Serves counters and public state only: never keys or payloads.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// A non-blocking listener for the admin endpoint.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
}

impl Admin {
    /// Listens on `addr` (checked to be loopback by the configuration); `field` names the
    /// setting in the error.
    pub fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("{field}: cannot listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    /// The listener (to register with a poll).
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Answers every waiting connection with `page(path)`: `Some(body)` is a 200, `None` a
    /// 404 listing the pages. Each request gets at most 500 ms: the endpoint is local.
    pub fn serve(&self, page: &mut dyn FnMut(&str) -> Option<String>) {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = self.listener.accept() {
            streams.push(stream);
        }
        for stream in streams {
            let _ = answer(stream, page);
        }
    }
}

/// One HTTP/1.0 request on `stream`.
fn answer(
    mut stream: TcpStream,
    page: &mut dyn FnMut(&str) -> Option<String>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut request = [0u8; 1024];
    let mut len = 0;
    while len < request.len() && Instant::now() < deadline {
        let n = stream.read(&mut request[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if request[..len].windows(4).any(|w| w == b"\r\n\r\n") || request[..len].ends_with(b"\n\n")
        {
            break;
        }
    }
    let line = String::from_utf8_lossy(&request[..len]);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match page(path) {
        Some(body) => ("200 OK", body),
        None => (
            "404 Not Found",
            "try /health /status /metrics /descriptors\n".to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
