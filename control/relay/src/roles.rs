//! The services a relay's role adds to the dataplane, each on a thread of its own: a
//! gateway's client link ([`crate::client_link`]) and an exit's TCP service
//! ([`crate::exit`]), and what the pipeline cores and the gossip loop share with them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32},
    },
    thread,
};

use pb_pipeline::Handoff;
use pb_sphinx::{MailboxId, NodeKeys, SurbId};

use crate::{client_link, config::RelayConfig, exit, published::Published};

/// The role services' handles (none for a mix).
#[derive(Clone, Default)]
pub struct Roles {
    /// The gateway's replies to its clients.
    pub replies: Option<client_link::ReplyQueue>,
    /// The client link's counters.
    pub client_stats: Option<Arc<client_link::ClientLinkStats>>,
    /// The directory the gateway serves its clients.
    pub directory: Option<Arc<Published<Arc<client_link::Directory>>>>,
    /// The exit's inbox of client messages.
    pub exit: Option<exit::ExitInbox>,
    /// The exit's counters.
    pub exit_stats: Option<Arc<exit::ExitStats>>,
    /// The current epoch.
    pub epoch: Arc<AtomicU32>,
}

impl core::fmt::Debug for Roles {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Roles")
            .field("gateway", &self.replies.is_some())
            .field("exit", &self.exit.is_some())
            .finish_non_exhaustive()
    }
}

impl Roles {
    /// Hands a delivered packet to the service it is for: an exit takes client messages, a
    /// gateway passes everything else for a mailbox to its client (SURB replies and the
    /// client's loops). `false`: no role takes it.
    pub fn deliver(&self, mailbox: MailboxId, reply: Option<SurbId>, message: &[u8]) -> bool {
        match (reply, &self.replies, &self.exit) {
            (None, _, Some(exit)) if mailbox == pb_proto::message::EXIT_MAILBOX => {
                exit.push(message);
                true
            }
            (_, Some(replies), _) => {
                replies.push(mailbox, reply, message);
                true
            }
            _ => false,
        }
    }

    /// The role services' metrics (Prometheus names and values).
    pub fn metrics(&self) -> Vec<(String, u64)> {
        let mut m = Vec::new();
        if let Some(stats) = &self.client_stats {
            m.extend(stats.metrics());
        }
        if let Some(stats) = &self.exit_stats {
            m.extend(stats.metrics());
        }
        m
    }
}

/// Starts a gateway's client link or an exit's service (gossip mode), each on a thread of
/// its own that runs until `stop`.
pub fn start(
    config: &RelayConfig,
    node_keys: &NodeKeys,
    handoff: &Arc<Handoff>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Roles, Vec<thread::JoinHandle<()>>)> {
    let mut roles = Roles {
        epoch: Arc::new(AtomicU32::new(node_keys.current.epoch().0)),
        ..Roles::default()
    };
    let mut services = Vec::new();
    let Some(settings) = &config.gossip else {
        return Ok((roles, services));
    };
    if settings.client_bind.is_some() {
        let stats = Arc::new(client_link::ClientLinkStats::default());
        let replies = client_link::ReplyQueue::new(4096, stats.clone());
        let directory = Arc::new(Published::new(Arc::new(client_link::Directory::default())));
        let identity = crate::gossip_mode::read_identity(&settings.identity_file)?;
        let key = pb_link::GatewayKey::from_secret(*identity.link_secret());
        let listeners = crate::transports::listeners(settings, &key.public())?;
        tracing::info!(
            "client link: {}; link key {}",
            client_link::describe(&listeners),
            key.public()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        if let Some(line) = crate::transports::obfs4_bridge_line(settings)? {
            tracing::info!("obfs4 bridge line: {line}");
        }
        let link = client_link::ClientLink::new(
            listeners,
            identity.public().node_id(),
            key,
            replies.clone(),
            directory.clone(),
            handoff.clone(),
        )?
        .with_padding(config.mix.cover)
        .with_realtime(config.realtime);
        services.push(spawn("pb-client-link", stop, move |stop| link.run(stop))?);
        roles.replies = Some(replies);
        roles.client_stats = Some(stats);
        roles.directory = Some(directory);
    }
    if settings.role == pb_control::Role::Exit {
        let stats = Arc::new(exit::ExitStats::default());
        let inbox = exit::ExitInbox::new(4096, stats.clone());
        let policy = exit::ExitPolicy::new(
            settings.exit_allow.clone(),
            settings.exit_refuse_ports.clone(),
        );
        let service = exit::Exit::new(
            inbox.clone(),
            handoff.clone(),
            policy,
            roles.epoch.clone(),
            settings.exit_max_connections,
        )?;
        services.push(spawn("pb-exit", stop, move |stop| service.run(stop))?);
        roles.exit = Some(inbox);
        roles.exit_stats = Some(stats);
    }
    Ok((roles, services))
}

/// A role's service on a thread named `name`, running until `stop`.
fn spawn(
    name: &str,
    stop: &Arc<AtomicBool>,
    run: impl FnOnce(&AtomicBool) + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    let stop = stop.clone();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&stop))
}
