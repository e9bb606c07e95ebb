//! The HTTP/1.1 a cover web server speaks: reading a request head into a [`Request`] (what
//! the gateway answers depends on nothing else), and writing the answers an nginx serving
//! one static page would give, byte for byte in its header order.

use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::SecretPath;

/// Headers a request may have at most (a browser sends about 15; nginx has no lower limit
/// but its buffer size, which [`crate::Limits::max_head_bytes`] stands for).
const MAX_HEADERS: usize = 64;

/// The GUID RFC 6455 §1.3 appends to a key before hashing it.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request head is not one a web server would answer (the answer is then 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The bytes are not an HTTP/1.x request head.
    #[error("not an HTTP/1.x request: {0}")]
    Syntax(httparse::Error),
    /// The head is longer than the server reads.
    #[error("the request head is too long")]
    TooLong,
    /// An HTTP/1.1 request without a Host header (RFC 9112 §3.2).
    #[error("an HTTP/1.1 request without Host")]
    NoHost,
    /// The target is not an origin-form path.
    #[error("the request target is not a path")]
    BadTarget,
}

/// What a request asks for, as far as this server cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: Method,
    /// The path without its query.
    pub path: String,
    /// The client wants the connection kept open afterwards.
    pub keep_alive: bool,
    /// The request announces a body (the server answers, then closes rather than read it).
    pub has_body: bool,
    /// The body's length when `Content-Length` alone gives it (no `Transfer-Encoding`).
    pub content_length: Option<u64>,
    /// `If-None-Match`, if sent.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`, if sent.
    pub if_modified_since: Option<String>,
    /// The handshake's key if this is a well-formed RFC 6455 upgrade request.
    pub upgrade_key: Option<String>,
}

/// The methods told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Other,
}

/// Reads a request head from the front of `buf`: `Ok(None)` when more bytes are needed,
/// else the request and the length of its head.
pub(crate) fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(Request, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Complete(_)) => return Err(RequestError::TooLong),
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(RequestError::TooLong),
        Err(e) => return Err(RequestError::Syntax(e)),
    };
    // A complete parse fills all three.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(RequestError::BadTarget);
    };
    if !target.starts_with('/') {
        return Err(RequestError::BadTarget);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target).to_owned();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if version == 1 && header("host").is_none() {
        return Err(RequestError::NoHost);
    }
    let keep_alive = if version == 1 {
        !has_token("connection", "close")
    } else {
        has_token("connection", "keep-alive")
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let has_body =
        header("transfer-encoding").is_some() || header("content-length").is_some_and(|n| n != "0");
    let content_length = header("content-length")
        .filter(|_| header("transfer-encoding").is_none())
        .and_then(|n| n.trim().parse::<u64>().ok());
    let upgrade_key = (method == Method::Get
        && version == 1
        && has_token("upgrade", "websocket")
        && has_token("connection", "upgrade")
        && header("sec-websocket-version").as_deref() == Some("13"))
    .then(|| header("sec-websocket-key"))
    .flatten()
    .filter(|key| {
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
    });
    Ok(Some((
        Request {
            method,
            path,
            keep_alive,
            has_body,
            content_length,
            if_none_match: header("if-none-match"),
            if_modified_since: header("if-modified-since"),
            upgrade_key,
        },
        len,
    )))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// The static site a gateway poses as: one page, served as nginx serves a file.
#[derive(Clone, Debug)]
pub struct Site {
    /// The page at `/` and `/index.html`.
    pub page: Vec<u8>,
    /// When the page was last changed (`Last-Modified`, `ETag`).
    pub modified: SystemTime,
    /// The `Server` header (nginx with `server_tokens off` says just `nginx`).
    pub server: String,
}

impl Default for Site {
    fn default() -> Self {
        Self {
            page: DEFAULT_PAGE.to_vec(),
            // 2024-03-11 09:26:40 UTC: an ordinary past date.
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_710_149_200),
            server: "nginx".into(),
        }
    }
}

const DEFAULT_PAGE: &[u8] = br#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Marta Lindqvist &middot; Ceramics</title>
<style>
body { font-family: Georgia, serif; max-width: 40em; margin: 3em auto; padding: 0 1em; color: #333; line-height: 1.5; }
h1 { font-weight: normal; letter-spacing: .05em; }
footer { margin-top: 4em; font-size: .85em; color: #888; }
</style>
</head>
<body>
<h1>Marta Lindqvist</h1>
<p>Hand-thrown stoneware and porcelain from a small studio by the sea. Bowls, cups and
vases, fired in a wood kiln twice a year.</p>
<h2>Exhibitions</h2>
<ul>
<li>Spring firing open studio &mdash; first weekend of May</li>
<li>Autumn market &mdash; dates to be announced</li>
</ul>
<p>For commissions and visits, write to the studio.</p>
<footer>&copy; Marta Lindqvist. All rights reserved.</footer>
</body>
</html>
"#;

/// An answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200 with the page.
    Page,
    /// 304: the client's copy is current.
    NotModified,
    /// 404 with nginx's 404 page.
    NotFound,
    /// 405 with nginx's 405 page.
    NotAllowed,
    /// 400 with nginx's 400 page (always closes).
    BadRequest,
    /// 400 with nginx's page for a plain HTTP request on its TLS port (always closes; the
    /// answer is in clear).
    PlainHttp,
}

impl Answer {
    fn status(self) -> (&'static str, &'static str) {
        match self {
            Self::Page => ("200", "OK"),
            Self::NotModified => ("304", "Not Modified"),
            Self::NotFound => ("404", "Not Found"),
            Self::NotAllowed => ("405", "Not Allowed"),
            Self::BadRequest | Self::PlainHttp => ("400", "Bad Request"),
        }
    }
}

impl Site {
    fn etag(&self) -> String {
        let secs = unix_secs(self.modified);
        format!("\"{secs:x}-{:x}\"", self.page.len())
    }

    /// Which answer `req` (a non-upgrade request, or one at the wrong path) gets.
    pub(crate) fn route(&self, req: &Request) -> Answer {
        if req.method == Method::Other {
            return Answer::NotAllowed;
        }
        if req.path != "/" && req.path != "/index.html" {
            return Answer::NotFound;
        }
        let etag_matches = req
            .if_none_match
            .as_deref()
            .is_some_and(|tags| tags == "*" || tags.split(',').any(|t| t.trim() == self.etag()));
        let date_matches = req.if_none_match.is_none()
            && req.if_modified_since.as_deref() == Some(&http_date(self.modified));
        if etag_matches || date_matches {
            Answer::NotModified
        } else {
            Answer::Page
        }
    }

    /// The bytes of `answer` (headers only if `head_only`), dated `now`.
    pub(crate) fn render(
        &self,
        answer: Answer,
        head_only: bool,
        keep_alive: bool,
        now: SystemTime,
    ) -> Vec<u8> {
        let (code, reason) = answer.status();
        let error_page;
        let (body, content_type): (&[u8], _) = match answer {
            Answer::Page => (&self.page, "text/html"),
            Answer::NotModified => (b"", ""),
            Answer::PlainHttp => {
                error_page = format!(
                    "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port\
                     </title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
                     <center>The plain HTTP request was sent to HTTPS port</center>\r\n\
                     <hr><center>{}</center>\r\n</body>\r\n</html>\r\n",
                    self.server
                );
                (error_page.as_bytes(), "text/html")
            }
            _ => {
                error_page = format!(
                    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
                     <center><h1>{code} {reason}</h1></center>\r\n<hr><center>{}</center>\r\n\
                     </body>\r\n</html>\r\n",
                    self.server
                );
                (error_page.as_bytes(), "text/html")
            }
        };
        let keep_alive = keep_alive && !matches!(answer, Answer::BadRequest | Answer::PlainHttp);
        let mut out = format!(
            "HTTP/1.1 {code} {reason}\r\nServer: {}\r\nDate: {}\r\n",
            self.server,
            http_date(now)
        );
        if answer != Answer::NotModified {
            out += &format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        let is_file = matches!(answer, Answer::Page | Answer::NotModified);
        if is_file {
            out += &format!("Last-Modified: {}\r\n", http_date(self.modified));
        }
        out += if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        };
        if is_file {
            out += &format!("ETag: {}\r\n", self.etag());
        }
        if answer == Answer::Page {
            out += "Accept-Ranges: bytes\r\n";
        }
        out += "\r\n";
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(body);
        }
        out
    }

    /// The 101 answer to an upgrade request with `key`, as nginx in front of a WebSocket
    /// backend sends it.
    pub(crate) fn switching_protocols(&self, key: &str, now: SystemTime) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nServer: {}\r\nDate: {}\r\nConnection: upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            self.server,
            http_date(now),
            accept_key(key)
        )
        .into_bytes()
    }
}

/// Whether `path` is the secret path (compared in constant time).
pub(crate) fn is_secret_path(path: &str, secret: &SecretPath) -> bool {
    use subtle::ConstantTimeEq as _;
    let (a, b) = (path.as_bytes(), secret.as_str().as_bytes());
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix_secs(t);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm), for days since 1970-01-01 (non-negative).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn dates_and_accept_keys_match_the_rfcs_examples() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn requests_are_read_as_a_web_server_reads_them() {
        let upgrade = b"GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nrest";
        let (req, len) = parse_request(upgrade, 8192).unwrap().unwrap();
        assert_eq!(len, upgrade.len() - 4);
        assert_eq!(req.path, "/chat");
        assert_eq!(req.upgrade_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(req.keep_alive);
        // A key that is not 16 bytes of base64 is no upgrade.
        let bad_key = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n";
        assert_eq!(
            parse_request(bad_key, 8192).unwrap().unwrap().0.upgrade_key,
            None
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHo", 8192), Ok(None));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n", 8192),
            Err(RequestError::NoHost)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHo", 10),
            Err(RequestError::TooLong)
        );
        assert!(matches!(
            parse_request(b"\x16\x03\x01\x02\x00", 8192),
            Err(RequestError::Syntax(_))
        ));
        let old = b"GET / HTTP/1.0\r\n\r\n";
        assert!(!parse_request(old, 8192).unwrap().unwrap().0.keep_alive);
    }

    #[test]
    fn answers_carry_nginx_headers_in_nginx_order() {
        let site = Site::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let text = String::from_utf8(site.render(Answer::NotFound, false, true, now)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nServer: nginx\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: text/html\r\nContent-Length: 146\r\nConnection: keep-alive\r\n\r\n\
             <html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
             <center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n\
             </body>\r\n</html>\r\n"
        );
        let head = site.render(Answer::Page, true, true, now);
        assert!(head.ends_with(b"Accept-Ranges: bytes\r\n\r\n"));
        let bad = String::from_utf8(site.render(Answer::BadRequest, false, true, now)).unwrap();
        assert!(bad.contains("Connection: close\r\n"));
    }
}
