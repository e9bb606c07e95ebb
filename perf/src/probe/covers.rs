//! The services a gateway's listeners imitate, run for real in the testnet's web node on the
//! same ports: nginx (WSS), obfs4proxy (obfs4), NSD (the name server), ngtcp2's HTTP/3 server
//! (QUIC), and a UDP port that reads and ignores (plain UDP: a filtered port).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use pb_testnet::{
    CLIENT_LINK_PORT, DNS_PORT, DNS_ZONE, Node, OBFS4_PORT, QUIC_PORT, TCP_PORT, Testnet, WSS_PORT,
};

/// The cover services, running until dropped (their processes are the testnet's).
pub struct Covers {
    /// The obfs4proxy bridge's `cert=` argument.
    pub obfs4_cert: String,
    stop: Arc<AtomicBool>,
    silent: Option<thread::JoinHandle<()>>,
}

impl Drop for Covers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.silent.take() {
            let _ = t.join();
        }
    }
}

/// Starts every cover service in the web node of `net`, its files under `dir`.
pub fn start(net: &mut Testnet, dir: &Path) -> anyhow::Result<Covers> {
    let web = net.network().address(Node::Web);
    std::fs::create_dir_all(dir)?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    pb_testnet::server_certificate(web.into(), &key, &cert)?;
    nginx(net, dir, web, &key, &cert)?;
    nsd(net, dir, web)?;
    let obfs4_cert = obfs4proxy(net, dir, web)?;
    ngtcp2(net, dir, web, &key, &cert)?;
    let stop = Arc::new(AtomicBool::new(false));
    let socket = net
        .in_node(Node::Web, || {
            UdpSocket::bind(SocketAddr::from((web, CLIENT_LINK_PORT)))
        })?
        .context("the silent UDP port")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let flag = stop.clone();
    let silent = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !flag.load(Ordering::Relaxed) {
            let _ = socket.recv_from(&mut buf);
        }
    });
    Ok(Covers {
        obfs4_cert,
        stop,
        silent: Some(silent),
    })
}

/// nginx serving the gateway's page at `/` in one process (`master_process off`: killing it
/// leaves no worker behind), as an operator would: TLS on the WSS port with a
/// self-signed P-256 certificate, Debian's `nginx.conf` settings (its `ssl_protocols` with
/// TLS 1.3, `ssl_prefer_server_ciphers`, `gzip`), `server_tokens off`.
fn nginx(
    net: &mut Testnet,
    dir: &Path,
    web: Ipv4Addr,
    key: &Path,
    cert: &Path,
) -> anyhow::Result<()> {
    let site = pb_wss::Site::default();
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    let index = root.join("index.html");
    std::fs::write(&index, &site.page)?;
    let modified = std::fs::File::options().write(true).open(&index)?;
    modified.set_modified(site.modified)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  \
             sendfile on;\n  tcp_nopush on;\n  types_hash_max_size 2048;\n  \
             ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;\n  ssl_prefer_server_ciphers on;\n  \
             gzip on;\n  access_log off;\n  server_tokens off;\n  client_body_temp_path {dir}/body;\n  \
             proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  \
             uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
             server {{\n    listen {web}:{WSS_PORT} ssl;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    root {root};\n    index index.html;\n  }}\n}}\n",
            dir = dir.display(),
            cert = cert.display(),
            key = key.display(),
            root = root.display(),
        ),
    )?;
    let mut command = net.command(Node::Web, "nginx");
    command.arg("-c").arg(&conf).arg("-p").arg(dir);
    net.spawn("nginx", command)?;
    wait_tcp(net, SocketAddr::from((web, WSS_PORT)), "nginx")
}

/// NSD, authoritative for the gateway's zone with the same SOA and NS.
fn nsd(net: &mut Testnet, dir: &Path, web: Ipv4Addr) -> anyhow::Result<()> {
    let zones = dir.join("nsd");
    std::fs::create_dir_all(&zones)?;
    std::fs::write(
        zones.join("zone"),
        format!(
            "$ORIGIN {DNS_ZONE}.\n$TTL 3600\n@ IN SOA ns.{DNS_ZONE}. hostmaster.{DNS_ZONE}. 2026120701 7200 3600 1209600 60\n\
             @ IN NS ns.{DNS_ZONE}.\nns IN A {web}\n"
        ),
    )?;
    let conf = dir.join("nsd.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  ip-address: {web}\n  port: {DNS_PORT}\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{z}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  \
             xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             logfile: \"{d}/nsd.log\"\n  server-count: 1\n  hide-version: yes\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: {DNS_ZONE}\n  zonefile: zone\n",
            z = zones.display(),
            d = dir.display(),
        ),
    )?;
    let mut command = net.command(Node::Web, "nsd");
    command.arg("-d").arg("-c").arg(&conf);
    net.spawn("nsd", command)?;
    // NSD answers once it has loaded the zone.
    let at = SocketAddr::from((web, DNS_PORT));
    pb_testnet::wait_for("nsd to answer", Duration::from_secs(10), || {
        net.in_node(Node::Client, || {
            let s = UdpSocket::bind("0.0.0.0:0").ok()?;
            s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
            s.send_to(&soa_query(), at).ok()?;
            let mut buf = [0u8; 512];
            s.recv(&mut buf).ok()
        })
        .ok()
        .flatten()
        .is_some()
    })
}

/// A query for the zone's SOA (id 1).
fn soa_query() -> Vec<u8> {
    let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in DNS_ZONE.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 6, 0, 1]);
    q
}

/// obfs4proxy as a managed server transport on the obfs4 port: its `cert=` argument.
fn obfs4proxy(net: &mut Testnet, dir: &Path, web: Ipv4Addr) -> anyhow::Result<String> {
    let state = dir.join("obfs4proxy");
    std::fs::create_dir_all(&state)?;
    let mut command = net.command(Node::Web, "obfs4proxy");
    command
        .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", &state)
        .env("TOR_PT_SERVER_TRANSPORTS", "obfs4")
        .env(
            "TOR_PT_SERVER_BINDADDR",
            format!("obfs4-{web}:{OBFS4_PORT}"),
        )
        .env("TOR_PT_ORPORT", format!("{web}:{TCP_PORT}"));
    let k = net.spawn("obfs4proxy", command)?;
    net.wait_for_line(k, "SMETHODS DONE", Duration::from_secs(10))?;
    let line = net
        .process(k)
        .and_then(|p| p.last("SMETHOD obfs4 "))
        .ok_or_else(|| anyhow!("obfs4proxy printed no SMETHOD line"))?;
    line.split([' ', ','])
        .find_map(|w| {
            w.strip_prefix("ARGS:cert=")
                .or_else(|| w.strip_prefix("cert="))
        })
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("obfs4proxy's SMETHOD line has no cert: {line}"))
}

/// ngtcp2's HTTP/3 server (GnuTLS) serving the same page on the QUIC port.
fn ngtcp2(
    net: &mut Testnet,
    dir: &Path,
    web: Ipv4Addr,
    key: &Path,
    cert: &Path,
) -> anyhow::Result<()> {
    let mut command = net.command(Node::Web, "gtlsserver");
    command
        .arg("-q")
        .arg("-d")
        .arg(dir.join("www"))
        .arg(web.to_string())
        .arg(QUIC_PORT.to_string())
        .arg(key)
        .arg(cert);
    net.spawn("gtlsserver", command)?;
    thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Waits until `name` accepts TCP connections at `at`.
fn wait_tcp(net: &Testnet, at: SocketAddr, name: &str) -> anyhow::Result<()> {
    pb_testnet::wait_for(
        &format!("{name} to listen"),
        Duration::from_secs(10),
        || net.connect(Node::Client, at).is_ok(),
    )
}
