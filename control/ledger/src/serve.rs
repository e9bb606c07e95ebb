//! Serving a log's files over HTTP, as the tlog-tiles layout expects of a static web server:
//! `GET /checkpoint`, `GET /tile/…`, `GET /reputation`, `GET /proposal` (the operator's tree
//! before the witnesses cosign it), nothing else. A steward (and any
//! mirror) runs it on a thread of its own; anything it serves is checked by its readers
//! against the stewards' signatures, so it needs no authentication, only bounds: at most
//! [`MAX_CONNECTIONS`] requests in progress, each within [`TIMEOUT`].

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::tiles::{TileDir, TileError};

/// Requests served at once at most; beyond, a connection is closed unanswered.
pub const MAX_CONNECTIONS: usize = 32;
/// How long reading a request and writing its answer may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `path` is one of a log's files: `checkpoint`, `proposal`, `reputation` or under `tile/`,
/// of path segments of letters, digits, `.` and `_`, none of them `.` or `..`.
pub fn servable(path: &str) -> bool {
    let fine = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    };
    matches!(path, "checkpoint" | "proposal" | "reputation")
        || path
            .strip_prefix("tile/")
            .is_some_and(|rest| rest.split('/').all(fine))
}

/// Serves `dir` on `listener` until `stop` is set (checked every 100 ms).
pub fn serve(listener: TcpListener, dir: TileDir, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let busy = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let (dir, done) = (dir.clone(), busy.clone());
                let spawned =
                    thread::Builder::new()
                        .name("pb-ledger-http".into())
                        .spawn(move || {
                            let _ = answer(stream, &dir);
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(())
}

/// One request on `stream`.
fn answer(mut stream: TcpStream, dir: &TileDir) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let deadline = Instant::now() + TIMEOUT;
    let mut request = [0u8; 2048];
    let mut len = 0;
    while len < request.len() && Instant::now() < deadline {
        let n = stream.read(&mut request[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if request[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&request[..len]);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.strip_prefix('/').unwrap_or("");
    let (status, body, kind): (&str, Vec<u8>, &str) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            b"GET only\n".to_vec(),
            "text/plain",
        )
    } else if !servable(path) {
        ("404 Not Found", b"not a log file\n".to_vec(), "text/plain")
    } else {
        match dir.read(path) {
            Ok(bytes) if path.starts_with("tile/") => ("200 OK", bytes, "application/octet-stream"),
            Ok(bytes) => ("200 OK", bytes, "text/plain; charset=utf-8"),
            Err(TileError::NotFound(_)) => {
                ("404 Not Found", b"no such file\n".to_vec(), "text/plain")
            }
            Err(_) => (
                "500 Internal Server Error",
                b"cannot read\n".to_vec(),
                "text/plain",
            ),
        }
    };
    // Full tiles never change; the checkpoint and partial tiles' names do not either, but
    // the checkpoint's content does.
    let cache = if path.starts_with("tile/") && !path.contains(".p/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: {cache}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    if method == "GET" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::{http::HttpSource, tiles::TileSource as _};

    #[test]
    fn only_log_files_are_servable() {
        for good in [
            "checkpoint",
            "reputation",
            "tile/0/000",
            "tile/entries/x001/234.p/7",
        ] {
            assert!(servable(good), "{good}");
        }
        for bad in [
            "",
            "tile/",
            "tile/../etc/passwd",
            "tile/0/./000",
            "tile//000",
            "etc/passwd",
            "checkpoint.new",
            "tile/0/000?x",
            "tile/%2e%2e/x",
        ] {
            assert!(!servable(bad), "{bad}");
        }
    }

    #[test]
    fn files_are_served_and_nothing_else() {
        let root = std::env::temp_dir().join(format!("pb-ledger-serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = TileDir::new(root.join("log"));
        dir.write("checkpoint", b"a checkpoint\n").unwrap();
        dir.write("tile/0/000", &[7u8; 64]).unwrap();
        std::fs::write(root.join("secret"), b"not served").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            thread::spawn(move || serve(listener, dir, stop))
        };
        let source = HttpSource::new(&url).unwrap();
        assert_eq!(source.fetch("checkpoint").unwrap(), b"a checkpoint\n");
        assert_eq!(source.fetch("tile/0/000").unwrap(), vec![7u8; 64]);
        for missing in ["tile/0/001", "../secret", "tile/../../secret", "reputation"] {
            assert!(
                matches!(source.fetch(missing), Err(TileError::NotFound(_))),
                "{missing}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
