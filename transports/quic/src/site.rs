//! The cover site, sans-IO: what the gateway's HTTP/3 server answers every request that is
//! not a link. It answers as nginx serving one static page would: the page at `/` (and
//! `/index.html`) for `GET` and `HEAD`, `405 Not Allowed` for other methods there, and
//! nginx's own 404 page everywhere else. The time is an argument.

/// The page served at `/` unless the operator gives another.
pub const DEFAULT_INDEX: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>Marta Lindqvist &middot; Photography</title>
<style>
body { font-family: Georgia, serif; max-width: 42rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
h1 { font-weight: normal; letter-spacing: .05em; }
nav a { margin-right: 1rem; color: #555; }
footer { margin-top: 4rem; font-size: .8rem; color: #888; }
</style>
</head>
<body>
<header>
<h1>Marta Lindqvist</h1>
<nav><a href=\"/\">Home</a><a href=\"/work/\">Work</a><a href=\"/about/\">About</a><a href=\"/contact/\">Contact</a></nav>
</header>
<main>
<p>Landscape and architecture photography from the Baltic coast. Prints are available on
request; most of the series below were shot on medium format film between 2016 and 2023.</p>
<h2>Recent series</h2>
<ul>
<li>Harbour Light &mdash; winter mornings in small fishing ports</li>
<li>Concrete Summer &mdash; post-war housing estates at midday</li>
<li>Shoreline &mdash; the same twelve kilometres of beach, once a month for a year</li>
</ul>
<p>For commissions, licensing and exhibition enquiries, see the contact page.</p>
</main>
<footer>&copy; 2024 Marta Lindqvist. All rights reserved.</footer>
</body>
</html>
";

const NOT_FOUND: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

const NOT_ALLOWED: &str = "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n\
<center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// One response: status, headers (lower-case names, `:status` first) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The fields, `:status` first.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `HEAD`).
    pub body: Vec<u8>,
}

/// What a response was, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The page.
    Page,
    /// 404.
    NotFound,
    /// 405.
    NotAllowed,
}

/// The static site: one page and its modification time.
#[derive(Debug, Clone)]
pub struct Site {
    index: Vec<u8>,
    last_modified: u64,
}

impl Site {
    /// A site whose page is `index` (HTML), last modified at `last_modified` (Unix seconds).
    pub fn new(index: Vec<u8>, last_modified: u64) -> Self {
        Self {
            index,
            last_modified,
        }
    }

    /// The answer to `method` on `path` at `now` (Unix seconds).
    pub fn respond(&self, method: &[u8], path: &[u8], now: u64) -> (Answer, Response) {
        let path = path.split(|b| *b == b'?').next().unwrap_or_default();
        if path != b"/" && path != b"/index.html" {
            return (Answer::NotFound, self.not_found(method, now));
        }
        let head = method == b"HEAD";
        if method != b"GET" && !head {
            return (Answer::NotAllowed, error_page(405, NOT_ALLOWED, now, false));
        }
        let mut headers = base_headers(200, now);
        headers.extend([
            ("content-type".into(), "text/html".into()),
            ("content-length".into(), self.index.len().to_string()),
            ("last-modified".into(), http_date(self.last_modified)),
            ("etag".into(), self.etag()),
            ("accept-ranges".into(), "bytes".into()),
        ]);
        let body = if head { Vec::new() } else { self.index.clone() };
        (
            Answer::Page,
            Response {
                status: 200,
                headers,
                body,
            },
        )
    }

    /// The 404 page (without its body for `HEAD`).
    pub fn not_found(&self, method: &[u8], now: u64) -> Response {
        error_page(404, NOT_FOUND, now, method == b"HEAD")
    }

    /// nginx's entity tag: hex modification time and hex length.
    fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.last_modified, self.index.len())
    }
}

fn base_headers(status: u16, now: u64) -> Vec<(String, String)> {
    vec![
        (":status".into(), status.to_string()),
        ("server".into(), "nginx".into()),
        ("date".into(), http_date(now)),
    ]
}

fn error_page(status: u16, page: &str, now: u64, head: bool) -> Response {
    let mut headers = base_headers(status, now);
    headers.extend([
        ("content-type".into(), "text/html".into()),
        ("content-length".into(), page.len().to_string()),
    ]);
    Response {
        status,
        headers,
        body: if head {
            Vec::new()
        } else {
            page.as_bytes().to_vec()
        },
    }
}

/// An HTTP date (RFC 9110 §5.6.7, IMF-fixdate) for `unix` seconds.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86400;
    let secs = unix % 86400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), all unsigned.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn http_dates_are_imf_fixdate() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_767_225_599), "Wed, 31 Dec 2025 23:59:59 GMT");
    }

    #[test]
    fn the_page_404_and_405_look_like_nginx() {
        let site = Site::new(DEFAULT_INDEX.as_bytes().to_vec(), 1_700_000_000);
        let (a, page) = site.respond(b"GET", b"/?utm=x", 1_800_000_000);
        assert_eq!(a, Answer::Page);
        assert_eq!(page.headers[0], (":status".into(), "200".into()));
        assert_eq!(page.body, DEFAULT_INDEX.as_bytes());
        assert_eq!(
            header(&page, "content-length"),
            Some(DEFAULT_INDEX.len().to_string().as_str())
        );
        assert_eq!(header(&page, "server"), Some("nginx"));
        let (_, head) = site.respond(b"HEAD", b"/", 1_800_000_000);
        assert!(head.body.is_empty());
        assert_eq!(header(&head, "etag"), header(&page, "etag"));
        let (a, nf) = site.respond(b"GET", b"/wp-login.php", 0);
        assert_eq!(a, Answer::NotFound);
        assert_eq!(nf.status, 404);
        assert!(String::from_utf8_lossy(&nf.body).contains("<center>nginx</center>"));
        assert_eq!(site.respond(b"POST", b"/", 0).0, Answer::NotAllowed);
        assert_eq!(site.respond(b"POST", b"/x", 0).0, Answer::NotFound);
    }
}
