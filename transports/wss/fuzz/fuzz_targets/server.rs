//! Any bytes into pb-wss's connection cores: errors, 400s and closes are fine, panics are
//! not. The first byte picks the mode and how the rest is cut into reads:
//! - 0: TCP bytes into a fresh gateway connection (rustls's record and handshake parsing);
//! - 1: plaintext behind TLS into a fresh gateway connection (HTTP request heads, then,
//!   after an upgrade at the secret path, WebSocket frames);
//! - 2: the same after a valid upgrade request (WebSocket frames from the first byte);
//! - 3: plaintext into a fresh client (the gateway's response head, then frames);
//! - 4: the same after a valid `101` (frames from the first byte).
//!
//! Between reads the clock moves on, records are sent and timers run, as in a real session.
#![no_main]

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use libfuzzer_sys::fuzz_target;
use pb_transport::{RECORD_LEN, tls::TlsIdentity};
use pb_wss::{
    ALPN, ClientCore, SecretPath, ServerCore, ServerShared, WallClock, WssClientConfig,
    WssServerConfig,
};

struct Setup {
    shared: Arc<ServerShared>,
    client: WssClientConfig,
    upgrade: Vec<u8>,
    t0: Instant,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let identity = TlsIdentity::generate("www.example.org").expect("a certificate");
        let path = SecretPath::from_random([0; 16]);
        let t0 = Instant::now();
        let shared = Arc::new(ServerShared::new(
            identity.server_config(&[ALPN]).expect("a TLS config"),
            WssServerConfig::new(path.clone()),
            WallClock::new(t0, SystemTime::UNIX_EPOCH),
        ));
        let upgrade = format!(
            "GET {} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
            path.as_str()
        )
        .into_bytes();
        let client = WssClientConfig::new(identity.pin(), "www.example.org", 443, path);
        Setup {
            shared,
            client,
            upgrade,
            t0,
        }
    })
}

/// The `101` for the client key of all zeros.
const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Accept: ICX+Yqv66kxgM0FcWaLWlFLwTAI=\r\n\r\n";

const CUTS: [usize; 8] = [1, 2, 5, 17, 64, 300, 1500, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    let cut = CUTS[usize::from(head >> 5)];
    let mut now = s.t0;
    let record = [head; RECORD_LEN];
    match head % 5 {
        mode @ 0..=2 => {
            let mut server = ServerCore::new(s.shared.clone(), now).expect("a connection");
            if mode == 2 {
                server.handle_plaintext(now, &s.upgrade);
            }
            for chunk in rest.chunks(cut) {
                if mode == 0 {
                    server.handle_input(now, chunk);
                } else {
                    server.handle_plaintext(now, chunk);
                }
                server.send_record(&record, now);
                while server.poll_record().is_some() {}
                while server.poll_event().is_some() {}
                let n = server.transmit().len();
                server.advance_transmit(n);
                now += Duration::from_millis(700);
                server.handle_timeout(now);
            }
            server.close(now);
            server.handle_timeout(now + Duration::from_secs(600));
        }
        mode => {
            let mut client = ClientCore::new(&s.client, [0; 16], now).expect("a client");
            if mode == 4 {
                let _ = client.handle_plaintext(now, SWITCHING);
            }
            for chunk in rest.chunks(cut) {
                if client.handle_plaintext(now, chunk).is_err() {
                    break;
                }
                client.send_record(&record, now);
                while client.poll_record().is_some() {}
                let n = client.transmit().len();
                client.advance_transmit(n);
                now += Duration::from_millis(700);
                let _ = client.handle_timeout(now);
            }
            client.close();
        }
    }
});
