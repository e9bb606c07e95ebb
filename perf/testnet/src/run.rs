//! A running [`Network`]: its namespaces, files and processes, and their teardown.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use pb_testbed::{Netns, Proc, Star};

use crate::{
    network::{Mode, Network, Node, Site},
    util::{http_get, wait_for},
};

/// What a relay's last `topology <hash> nodes <n> links <k> epoch <e>` line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The topology's hash (hex).
    pub hash: String,
    /// Nodes in it.
    pub nodes: usize,
    /// This relay's links.
    pub links: usize,
    /// Its epoch.
    pub epoch: u32,
}

impl View {
    /// Reads a `topology …` line.
    pub fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["topology", hash, "nodes", n, "links", k, "epoch", e] => Some(Self {
                hash: (*hash).to_owned(),
                nodes: n.parse().ok()?,
                links: k.parse().ok()?,
                epoch: e.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// Whether two relays see the same network (their own links aside).
    fn agrees(&self, other: &Self) -> bool {
        (&self.hash, self.nodes, self.epoch) == (&other.hash, other.nodes, other.epoch)
    }
}

/// A relay's process, and whether the testnet stopped it on purpose.
#[derive(Debug, Default)]
struct Slot {
    proc: Option<Proc>,
    stopped: bool,
}

/// A network started on one machine; see the crate docs. Dropping it kills every process
/// it started, then removes the namespaces, then the scratch directory.
#[derive(Debug)]
pub struct Testnet {
    network: Network,
    dir: PathBuf,
    star: Option<Star>,
    relays: Vec<Slot>,
    others: Vec<(String, Proc)>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        // Processes first (Proc kills and reaps on drop), so that nothing holds a namespace
        // or a file; then the namespaces; then the files.
        self.others.clear();
        self.relays.clear();
        self.star = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Tells scratch directories of one process apart.
static SCRATCH: AtomicUsize = AtomicUsize::new(0);

impl Testnet {
    /// Builds the site (namespaces, if any) and writes every file; starts nothing.
    ///
    /// # Errors
    /// Namespaces without root, or a step that fails (its message says which).
    pub fn create(network: Network) -> anyhow::Result<Self> {
        let dir = network.scratch.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "pb-testnet-{}-{}",
                std::process::id(),
                SCRATCH.fetch_add(1, Ordering::Relaxed)
            ))
        });
        // From here on, whatever fails is undone by Drop.
        let mut net = Self {
            relays: (0..network.relays).map(|_| Slot::default()).collect(),
            network,
            dir,
            star: None,
            others: Vec::new(),
        };
        std::fs::create_dir_all(&net.dir)
            .with_context(|| format!("creating {}", net.dir.display()))?;
        if let Some(log_dir) = &net.network.log_dir {
            std::fs::create_dir_all(log_dir)
                .with_context(|| format!("creating {}", log_dir.display()))?;
        }
        if let Site::Netns { tag } = &net.network.site {
            pb_testbed::privileged()
                .map_err(|reason| anyhow!("network namespaces and XDP need root: {reason}"))?;
            let mut queues = vec![1; net.network.nodes()];
            queues[0] = net.network.gateway_cores;
            let star = pb_testbed::star_with_queues(tag, &queues)
                .context("building the network namespaces")?;
            for (k, node) in star.nodes.iter().enumerate() {
                ensure!(
                    node.v4 == pb_testbed::star_address(k)
                        && node.ifname == pb_testbed::star_ifname(k),
                    "the star's node {k} is not where pb-testbed said it would be"
                );
            }
            net.star = Some(star);
        }
        net.network.write_files(&net.dir)?;
        Ok(net)
    }

    /// [`Testnet::create`], then [`Testnet::start_relays`].
    ///
    /// # Errors
    /// As those.
    pub fn start(network: Network) -> anyhow::Result<Self> {
        let mut net = Self::create(network)?;
        net.start_relays()?;
        Ok(net)
    }

    /// Starts every relay not running yet.
    ///
    /// # Errors
    /// A relay cannot be started (a missing binary, say).
    pub fn start_relays(&mut self) -> anyhow::Result<()> {
        for i in 0..self.network.relays {
            if self.relays[i].proc.is_none() || self.relays[i].stopped {
                self.start_relay(i)?;
            }
        }
        Ok(())
    }

    /// (Re)starts relay `i` with its configuration file; a running one is killed first.
    ///
    /// # Errors
    /// It cannot be started.
    pub fn start_relay(&mut self, i: usize) -> anyhow::Result<()> {
        let binary = self.network.relay_binary()?;
        let mut command = self.command(Node::Relay(i), &binary);
        command.args(self.network.relay_args(&self.dir, i));
        for (key, value) in &self.network.relay_env {
            command.env(key, value);
        }
        let log = self.log_path(&format!("relay{i}"));
        let proc = Proc::start_logged(command, log.as_deref())
            .with_context(|| format!("starting {}", binary.display()))?;
        self.relays[i] = Slot {
            proc: Some(proc),
            stopped: false,
        };
        Ok(())
    }

    /// The description it runs.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The scratch directory (configuration files, identity keys).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Relay `i`'s process, once started (also after it was stopped: its output stays).
    pub fn relay(&self, i: usize) -> Option<&Proc> {
        self.relays.get(i).and_then(|s| s.proc.as_ref())
    }

    /// Every started relay's process, in order.
    pub fn relays(&self) -> impl Iterator<Item = &Proc> {
        self.relays.iter().filter_map(|s| s.proc.as_ref())
    }

    /// Whether relay `i` runs (started and not stopped or killed by the testnet).
    pub fn running(&self, i: usize) -> bool {
        self.relays
            .get(i)
            .is_some_and(|s| s.proc.is_some() && !s.stopped)
    }

    /// Kills relay `i` (SIGKILL) and reaps it; its output stays readable.
    pub fn kill(&mut self, i: usize) {
        if let Some(slot) = self.relays.get_mut(i)
            && let Some(proc) = slot.proc.as_mut()
        {
            let _ = proc.child.kill();
            let _ = proc.wait_output();
            slot.stopped = true;
        }
    }

    /// Stops relay `i` cleanly (SIGTERM) and waits for it and its last lines.
    ///
    /// # Errors
    /// It was never started, or cannot be waited for.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        let slot = self
            .relays
            .get_mut(i)
            .ok_or_else(|| anyhow!("no relay {i}"))?;
        let proc = slot
            .proc
            .as_mut()
            .ok_or_else(|| anyhow!("relay {i} was never started"))?;
        let status = proc.terminate()?;
        slot.stopped = true;
        Ok(status)
    }

    /// Sends relay `i` SIGHUP (a static relay re-reads its files).
    ///
    /// # Errors
    /// It does not run, or `kill` fails.
    pub fn reload(&self, i: usize) -> anyhow::Result<()> {
        let proc = self
            .relay(i)
            .filter(|_| self.running(i))
            .ok_or_else(|| anyhow!("relay {i} does not run"))?;
        let status = Command::new("kill")
            .args(["-HUP", &proc.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -HUP relay {i}: {status}");
        Ok(())
    }

    /// Static mode: rewrites every relay's configuration and the topology for `epoch` (a
    /// [`Testnet::reload`] makes a relay read them).
    ///
    /// # Errors
    /// Not static, or the files cannot be written.
    pub fn set_epoch(&mut self, epoch: u32) -> anyhow::Result<()> {
        let Mode::Static { epoch: current, .. } = &mut self.network.mode else {
            bail!("only a static topology has its epoch set from outside");
        };
        *current = epoch;
        self.network.write_files(&self.dir)
    }

    /// Relay `i`'s current view of the topology.
    pub fn view(&self, i: usize) -> Option<View> {
        self.relay(i)?
            .last("topology ")
            .and_then(|line| View::parse(&line))
    }

    /// Waits until every running relay reports the same topology of `nodes` nodes in an
    /// epoch at least `min_epoch`: that view.
    ///
    /// # Errors
    /// No agreement within `limit` (the message holds every view and each relay's last
    /// lines), a process exited, or the user interrupted.
    pub fn wait_for_view(
        &mut self,
        nodes: usize,
        min_epoch: u32,
        limit: Duration,
    ) -> anyhow::Result<View> {
        let mut agreed = None;
        let mut exited = None;
        let waited = wait_for("agreement on one topology", limit, || {
            exited = self.exited();
            agreed = self
                .agreement()
                .filter(|v| v.nodes == nodes && v.epoch >= min_epoch);
            exited.is_some() || agreed.is_some()
        });
        if let Some(why) = exited {
            bail!("{why} while waiting for agreement:\n{}", self.report(10));
        }
        if crate::interrupted() {
            bail!("interrupted while waiting for agreement on one topology");
        }
        match (waited, agreed) {
            (Ok(()), Some(view)) => Ok(view),
            (waited, _) => {
                let views: Vec<Option<View>> = (0..self.network.relays)
                    .filter(|&i| self.running(i))
                    .map(|i| self.view(i))
                    .collect();
                bail!(
                    "{}: {views:?}\n{}",
                    waited.err().unwrap_or_else(|| anyhow!("no agreement")),
                    self.report(5)
                )
            }
        }
    }

    /// The view every running relay reports, if they all report the same.
    pub fn agreement(&self) -> Option<View> {
        let mut views = (0..self.network.relays)
            .filter(|&i| self.running(i))
            .map(|i| self.view(i));
        let first = views.next().flatten()?;
        views
            .all(|v| v.is_some_and(|v| v.agrees(&first)))
            .then_some(first)
    }

    /// Waits until the running relays agree on a topology of all of them.
    ///
    /// # Errors
    /// As [`Testnet::wait_for_view`].
    pub fn wait_for_agreement(&mut self, limit: Duration) -> anyhow::Result<View> {
        let running = (0..self.network.relays)
            .filter(|&i| self.running(i))
            .count();
        self.wait_for_view(running, 0, limit)
    }

    /// A command that runs `program` in `node` (its namespace, or here on loopback).
    pub fn command(&self, node: Node, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.netns(node) {
            Some(ns) => ns.exec(program, std::iter::empty::<&str>()),
            None => Command::new(program),
        }
    }

    /// pb-client's arguments for this network: `--network <the network file>` (gossip mode
    /// with stewards), else `--gateway <client link> --gateway-key <hex> --network-seed <hex>`.
    pub fn client_args(&self) -> Vec<String> {
        if self.network.network_file().is_some() {
            return vec![
                "--network".into(),
                self.dir
                    .join(crate::render::NETWORK_FILE)
                    .display()
                    .to_string(),
            ];
        }
        vec![
            "--gateway".into(),
            self.network.client_link().to_string(),
            "--gateway-key".into(),
            self.network.gateway_link_key_hex(),
            "--network-seed".into(),
            self.network.network_seed_hex(),
        ]
    }

    /// A command that runs pb-client (`program`) in the client's node with
    /// [`Testnet::client_args`]; add `--listen` and the rest.
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = self.command(Node::Client, program);
        command.args(self.client_args());
        command
    }

    /// Starts `command` as a process of the testnet named `name` (its log file, if any, is
    /// `<name>.log`): its index for [`Testnet::process`].
    ///
    /// # Errors
    /// It cannot be started.
    pub fn spawn(&mut self, name: &str, command: Command) -> anyhow::Result<usize> {
        let log = self.log_path(name);
        let proc = Proc::start_logged(command, log.as_deref())
            .with_context(|| format!("starting {name}"))?;
        self.others.push((name.to_owned(), proc));
        Ok(self.others.len() - 1)
    }

    /// Spawns `command` (pb-client, as [`Testnet::client_command`] makes it) and waits until
    /// it says it is ready: its index.
    ///
    /// # Errors
    /// It cannot start, exits, or is not ready within `limit`.
    pub fn start_client(
        &mut self,
        name: &str,
        command: Command,
        limit: Duration,
    ) -> anyhow::Result<usize> {
        let k = self.spawn(name, command)?;
        self.wait_for_line(k, "pb-client: ready", limit)?;
        Ok(k)
    }

    /// Waits until process `k` printed a line starting with `prefix`.
    ///
    /// # Errors
    /// It exits first, or `limit` passes, or the user interrupted: the message holds its last
    /// lines.
    pub fn wait_for_line(&mut self, k: usize, prefix: &str, limit: Duration) -> anyhow::Result<()> {
        let (name, proc) = self
            .others
            .get_mut(k)
            .ok_or_else(|| anyhow!("no process {k}"))?;
        let mut exited = None;
        let waited = wait_for(&format!("{name}: {prefix}"), limit, || {
            if proc.last(prefix).is_some() {
                return true;
            }
            exited = proc.child.try_wait().ok().flatten();
            exited.is_some()
        });
        if let Some(status) = exited {
            let _ = proc.wait_output();
            bail!("{name} exited ({status}):\n{}", proc.tail(20));
        }
        waited.with_context(|| proc.tail(20))
    }

    /// Process `k` of those [`Testnet::spawn`] started.
    pub fn process(&self, k: usize) -> Option<&Proc> {
        self.others.get(k).map(|(_, p)| p)
    }

    /// The same, to wait for it or stop it.
    pub fn process_mut(&mut self, k: usize) -> Option<&mut Proc> {
        self.others.get_mut(k).map(|(_, p)| p)
    }

    /// The namespace of `node`, on a namespace site.
    pub fn netns(&self, node: Node) -> Option<&Netns> {
        let k = self.network.node_index(node);
        self.star
            .as_ref()
            .and_then(|s| s.nodes.get(k))
            .map(|n| &n.ns)
    }

    /// The namespace holding the bridge, on a namespace site (where loss can be injected).
    pub fn switch(&self) -> Option<&Netns> {
        self.star.as_ref().map(|s| &s.switch)
    }

    /// Runs `f` on this thread inside `node`'s namespace (or just runs it on loopback).
    ///
    /// # Errors
    /// The namespace cannot be entered.
    pub fn in_node<T>(&self, node: Node, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        match self.netns(node) {
            Some(ns) => Ok(ns.in_netns(f)?),
            None => Ok(f()),
        }
    }

    /// A TCP listener on `node`'s address and `port` (0: any).
    ///
    /// # Errors
    /// It cannot bind.
    pub fn listen(&self, node: Node, port: u16) -> anyhow::Result<TcpListener> {
        let addr = SocketAddr::from((self.network.address(node), port));
        self.in_node(node, || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr}"))
    }

    /// A TCP connection from `node` to `to`.
    ///
    /// # Errors
    /// It cannot connect.
    pub fn connect(&self, node: Node, to: SocketAddr) -> anyhow::Result<TcpStream> {
        self.in_node(node, || TcpStream::connect(to))?
            .with_context(|| format!("connecting to {to}"))
    }

    /// Starts Debian's unbound in the resolver node as a DoH resolver (RFC 8484 over HTTP/2
    /// on [`crate::DOH_PORT`], with a self-signed certificate for its address) that asks the
    /// gateway's name server for [`crate::DNS_ZONE`] as a stub zone (and
    /// [`crate::DNS_BENCH_ZONE`] at [`crate::DNS_BENCH_PORT`] of its address, for a benchmark's
    /// name server) and nothing else: its URL
    /// and the certificate's PEM file, for `pb-client --doh-resolver URL --doh-ca FILE`.
    ///
    /// The settings are what a DNS link needs from any resolver, stated here because
    /// unbound's defaults refuse them: the zone is below `test.` (a local zone unless
    /// `nodefault`), names go out whole (no QNAME minimisation), and a slow answer must not
    /// close the client's HTTP/2 connection (`discard-timeout: 0`).
    ///
    /// # Errors
    /// The network has no resolver node ([`crate::NetworkBuilder::resolver`]), unbound or
    /// openssl is missing, or unbound does not listen within 10 s.
    pub fn start_doh_resolver(&mut self) -> anyhow::Result<(String, PathBuf)> {
        ensure!(
            self.network.has_resolver() && self.network.has_dns(),
            "this network has no resolver node or no name server (NetworkBuilder::resolver, gossip mode on namespaces)"
        );
        let me = self.network.address(Node::Resolver);
        let gateway = self.network.address(Node::Relay(0));
        let dir = self.dir.join("unbound");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (key, pem) = (dir.join("doh.key"), dir.join("doh.pem"));
        crate::util::server_certificate(me.into(), &key, &pem)?;
        let range = self.network.own_range();
        let config = format!(
            r#"server:
    verbosity: 1
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    pidfile: ""
    directory: "{dir}"
    do-daemonize: no
    num-threads: 1
    interface: {me}@{port}
    https-port: {port}
    http-endpoint: "/dns-query"
    tls-service-key: "{key}"
    tls-service-pem: "{pem}"
    http-max-streams: 100
    http-nodelay: yes
    incoming-num-tcp: 100
    do-ip6: no
    access-control: {range} allow
    module-config: "iterator"
    qname-minimisation: no
    edns-buffer-size: 1232
    num-queries-per-thread: 1024
    outgoing-range: 4096
    ratelimit: 0
    ip-ratelimit: 0
    discard-timeout: 0
    harden-referral-path: no
    local-zone: "test." nodefault
stub-zone:
    name: "{zone}"
    stub-addr: {gateway}@{dns}
    stub-prime: no
stub-zone:
    name: "{bench_zone}"
    stub-addr: {gateway}@{bench_port}
    stub-prime: no
remote-control:
    control-enable: no
"#,
            dir = dir.display(),
            port = crate::network::DOH_PORT,
            key = key.display(),
            pem = pem.display(),
            zone = crate::network::DNS_ZONE,
            dns = crate::network::DNS_PORT,
            bench_zone = crate::network::DNS_BENCH_ZONE,
            bench_port = crate::network::DNS_BENCH_PORT,
        );
        let conf = dir.join("unbound.conf");
        std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let mut command = self.command(Node::Resolver, "unbound");
        command.arg("-d").arg("-c").arg(&conf);
        self.spawn("unbound", command)?;
        let at = SocketAddr::from((me, crate::network::DOH_PORT));
        wait_for("unbound to listen", Duration::from_secs(10), || {
            self.connect(Node::Client, at).is_ok()
        })?;
        Ok((format!("https://{me}/dns-query"), pem))
    }

    /// Starts NSD in `node`, authoritative for `zone` on `at` (UDP and TCP), with `records`
    /// (zone-file lines relative to the zone, e.g. `www IN A 198.18.0.9`) beside its SOA and
    /// NS; returns once it answers. Its files are under the testnet's directory (`nsd-<zone>/`).
    ///
    /// # Errors
    /// NSD is missing, or does not answer within 10 s.
    pub fn start_nsd(
        &mut self,
        node: Node,
        at: SocketAddr,
        zone: &str,
        records: &str,
    ) -> anyhow::Result<()> {
        let dir = self.dir.join(format!("nsd-{zone}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("zone"),
            format!(
                "$ORIGIN {zone}.\n$TTL 3600\n\
                 @ IN SOA ns.{zone}. hostmaster.{zone}. 2026120801 7200 3600 1209600 60\n\
                 @ IN NS ns.{zone}.\n{records}\n"
            ),
        )?;
        let conf = dir.join("nsd.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n  ip-address: {ip}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
                 zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  \
                 xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
                 logfile: \"{d}/nsd.log\"\n  server-count: 1\n  hide-version: yes\n\
                 remote-control:\n  control-enable: no\n\
                 zone:\n  name: {zone}\n  zonefile: zone\n",
                ip = at.ip(),
                port = at.port(),
                d = dir.display(),
            ),
        )?;
        let mut command = self.command(node, "nsd");
        command.arg("-d").arg("-c").arg(&conf);
        self.spawn(&format!("nsd-{zone}"), command)?;
        // NSD answers once it has loaded the zone: over TCP too, which is what is checked.
        wait_for("nsd to answer", Duration::from_secs(10), || {
            self.connect(node, at).is_ok()
        })
    }

    /// GET `path` from relay `i`'s admin endpoint: the body.
    ///
    /// # Errors
    /// The relays have no admin endpoint, or the GET fails.
    pub fn admin_get(&self, i: usize, path: &str) -> anyhow::Result<String> {
        let addr = self
            .network
            .admin_addr(i)
            .ok_or_else(|| anyhow!("the relays have no admin endpoint (Network::admin)"))?;
        http_get(self.connect(Node::Relay(i), addr)?, path)
    }

    /// The first process that exited although nobody stopped it, said in words.
    pub fn exited(&mut self) -> Option<String> {
        for (i, slot) in self.relays.iter_mut().enumerate() {
            if let (Some(proc), false) = (slot.proc.as_mut(), slot.stopped)
                && let Ok(Some(status)) = proc.child.try_wait()
            {
                return Some(format!(
                    "relay {i} ({}) exited ({status})",
                    self.network.role(i).as_str()
                ));
            }
        }
        self.others.iter_mut().find_map(|(name, proc)| {
            proc.child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| format!("{name} exited ({status})"))
        })
    }

    /// Every process's name and everything it printed (relays first).
    pub fn outputs(&self) -> Vec<(String, String)> {
        let relays = (0..self.network.relays)
            .filter_map(|i| Some((self.relay_name(i), self.relay(i)?.output())));
        relays
            .chain(self.others.iter().map(|(n, p)| (n.clone(), p.output())))
            .collect()
    }

    /// The last `lines` lines of every process, headed by its name: for failure messages.
    pub fn report(&self, lines: usize) -> String {
        let relays = (0..self.network.relays)
            .filter_map(|i| Some((self.relay_name(i), self.relay(i)?.tail(lines))));
        relays
            .chain(self.others.iter().map(|(n, p)| (n.clone(), p.tail(lines))))
            .map(|(name, tail)| format!("--- {name}:\n{tail}\n"))
            .collect()
    }

    /// `relay 3 (mix)`.
    pub fn relay_name(&self, i: usize) -> String {
        format!("relay {i} ({})", self.network.role(i).as_str())
    }

    fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.network
            .log_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.log")))
    }
}
