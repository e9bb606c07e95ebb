//! Reading a log from a web server: `http://host[:port][/prefix]`, one HTTP/1.1 GET per file
//! (`Connection: close`). Plain HTTP is enough: nothing read is believed before the
//! stewards' signatures on the checkpoint and the hashes up to its root check out, which is
//! how tlog-tiles logs are meant to be mirrored (a gateway, a CDN, a directory of files).

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use crate::tiles::{TileError, TileSource};

/// How long a connection, or a read, may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: a full entry bundle of the largest entries, and its headers.
const MAX_ANSWER: u64 = 256 * (2 + 65_535) + 16 * 1024;

/// A log at an `http://` URL.
#[derive(Clone, Debug)]
pub struct HttpSource {
    /// `host:port`, as connected to and sent in `Host`.
    authority: String,
    /// The path the log's files are under, without a trailing slash.
    prefix: String,
}

impl HttpSource {
    /// The log at `url` (`http://host[:port][/prefix]`).
    pub fn new(url: &str) -> Result<Self, TileError> {
        let bad = || TileError::Http(format!("{url}: not an http://host[:port][/path] URL"));
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(bad());
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            return Err(bad());
        };
        let prefix = prefix.trim_end_matches('/');
        if prefix.contains(['?', '#', ' ']) {
            return Err(bad());
        }
        Ok(Self {
            authority,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
        })
    }
}

impl TileSource for HttpSource {
    fn fetch(&self, relative: &str) -> Result<Vec<u8>, TileError> {
        let path = format!("{}/{relative}", self.prefix);
        let what = format!("http://{}{path}", self.authority);
        let fail = |why: String| TileError::Http(format!("{what}: {why}"));
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".into()))?;
        let mut stream =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| fail(e.to_string()))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| fail(e.to_string()))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pb-ledger\r\nConnection: close\r\n\r\n",
            self.authority
        )
        .map_err(|e| fail(e.to_string()))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER + 1)
            .read_to_end(&mut answer)
            .map_err(|e| fail(e.to_string()))?;
        if answer.len() as u64 > MAX_ANSWER {
            return Err(fail("the answer is too long".into()));
        }
        match parse_answer(&answer) {
            Ok((200, body)) => Ok(body),
            Ok((404, _)) => Err(TileError::NotFound(what)),
            Ok((status, _)) => Err(fail(format!("HTTP status {status}"))),
            Err(why) => Err(fail(why.into())),
        }
    }
}

/// An HTTP/1.x answer's status and body (by `Content-Length`, chunked, or to the end).
fn parse_answer(answer: &[u8]) -> Result<(u16, Vec<u8>), &'static str> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = core::str::from_utf8(&answer[..end]).map_err(|_| "headers not text")?;
    let body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("not an HTTP/1 answer");
    }
    let status: u16 = words
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("a malformed header");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or("a body shorter than its Content-Length")?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// A chunked body, decoded.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a truncated chunk")?;
        let size_text = core::str::from_utf8(&rest[..line_end]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("a truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use std::{io::BufRead as _, net::TcpListener, thread};

    use super::*;

    #[test]
    fn urls_are_parsed_and_odd_ones_refused() {
        let s = HttpSource::new("http://198.18.0.1:8080/log/").unwrap();
        assert_eq!(
            (s.authority.as_str(), s.prefix.as_str()),
            ("198.18.0.1:8080", "/log")
        );
        let s = HttpSource::new("http://example.test").unwrap();
        assert_eq!(
            (s.authority.as_str(), s.prefix.as_str()),
            ("example.test:80", "")
        );
        let s = HttpSource::new("http://[::1]:9/a/b").unwrap();
        assert_eq!(
            (s.authority.as_str(), s.prefix.as_str()),
            ("[::1]:9", "/a/b")
        );
        for bad in [
            "https://x/",
            "x/y",
            "http://",
            "http://a@b/",
            "http://h:port/",
            "http://h/?q",
        ] {
            assert!(HttpSource::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_read_by_length_chunked_or_to_the_end() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_answer(ok).unwrap(), (200, b"abc".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked).unwrap(), (200, b"abcde".to_vec()));
        let eof = b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\ngone";
        assert_eq!(parse_answer(eof).unwrap(), (404, b"gone".to_vec()));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc",
            b"SSH-2.0 hello\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_server_on_loopback_serves_files_and_404s() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                // The rest of the request, so that closing does not reset the connection.
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut stream = reader.into_inner();
                let answer: &[u8] = if request.starts_with("GET /log/checkpoint ") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                };
                stream.write_all(answer).unwrap();
            }
        });
        let source = HttpSource::new(&format!("http://127.0.0.1:{port}/log")).unwrap();
        assert_eq!(source.fetch("checkpoint").unwrap(), b"hello");
        assert!(matches!(
            source.fetch("tile/0/000"),
            Err(TileError::NotFound(_))
        ));
        server.join().unwrap();
    }
}
