//! Loads the PhantomBand XDP program (built from `ebpf/pb-xdp` and embedded here), attaches
//! it to an interface, registers AF_XDP sockets in its XSKMAP, installs the sources it
//! serves ([`XdpProgram::set_sources`]) and reads its counters.
//!
//! The attachment is a kernel `bpf_link` owned by [`XdpProgram`]: dropping it, or the
//! process exiting for any reason, detaches the program. Nothing is pinned. (On kernels older
//! than 5.9, without XDP links, aya falls back to a netlink attachment, which `Drop` removes
//! but a crashed process would leave behind.)

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
};
use pb_xdp_common::{
    ALLOWED_V4_MAP_NAME, ALLOWED_V6_MAP_NAME, BURST_NS_GLOBAL, CLIENT_PORT_GLOBAL, Counter,
    MAX_ALLOWED_SOURCES, NS_PER_TOKEN_GLOBAL, PACKET_LEN_GLOBAL, POLICY_MAP_NAME, PORT_GLOBAL,
    PROGRAM_NAME, STATS_MAP_NAME, XSK_MAP_NAME, bucket_params,
};
use std::{collections::BTreeSet, os::fd::RawFd};

use crate::sources::{SourceFilter, SourceLimits};

/// The program object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pb-xdp.o"));

use crate::IoError;

/// How the program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP: what an appliance wants; veth supports it.
    #[default]
    Native,
    /// Generic (SKB) XDP: works on any interface, slowly.
    Generic,
}

/// Sums of the program's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Indexed by [`Counter::index`].
    pub values: [u64; Counter::COUNT as usize],
}

impl XdpCounters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter.index() as usize]
    }

    /// Counter names with their values, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

/// The loaded program; attached to at most one interface.
#[derive(Debug)]
pub struct XdpProgram {
    ebpf: Ebpf,
    interface: Option<String>,
}

fn refused(interface: &str, e: impl std::fmt::Display) -> IoError {
    // Verifier logs run to many lines; the first says what failed.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("unknown error").to_owned();
    IoError::XdpRefused {
        interface: interface.to_owned(),
        detail: first,
    }
}

/// Like [`refused`], with the error's sources appended (aya puts the errno in a source).
fn refused_by(interface: &str, e: &(dyn std::error::Error + 'static)) -> IoError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    refused(interface, text)
}

impl XdpProgram {
    /// Loads the program into the kernel (verifier included) for PhantomBand datagrams to
    /// `port` with UDP payloads of exactly `packet_len` bytes. Does not attach it.
    pub fn load(port: u16, packet_len: u16) -> Result<Self, IoError> {
        Self::load_with(port, packet_len, &SourceLimits::default())
    }

    /// As [`load`](Self::load), with the per-source limits of a gateway: the client-link
    /// port (0: none) and the token bucket's rate and burst.
    pub fn load_with(port: u16, packet_len: u16, limits: &SourceLimits) -> Result<Self, IoError> {
        let (ns_per_token, burst_ns) = bucket_params(limits.rate, limits.burst);
        let client_port = limits.client_port.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .override_global(PORT_GLOBAL, &port, true)
            .override_global(PACKET_LEN_GLOBAL, &packet_len, true)
            .override_global(CLIENT_PORT_GLOBAL, &client_port, true)
            .override_global(NS_PER_TOKEN_GLOBAL, &ns_per_token, true)
            .override_global(BURST_NS_GLOBAL, &burst_ns, true)
            .load(OBJECT)
            .map_err(|e| refused_by("-", &e))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| refused("-", "program missing from the object"))?
            .try_into()
            .map_err(|e| refused("-", e))?;
        program.load().map_err(|e| refused_by("-", &e))?;
        Ok(Self {
            ebpf,
            interface: None,
        })
    }

    /// Attaches the loaded program to `interface` (in the calling thread's network namespace).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), IoError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| refused(interface, "program missing from the object"))?
            .try_into()
            .map_err(|e| refused(interface, e))?;
        let mode = match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        match program.attach(interface, mode) {
            Ok(_) => {
                self.interface = Some(interface.to_owned());
                Ok(())
            }
            Err(ProgramError::UnknownInterface { .. }) => {
                Err(IoError::NoSuchInterface(interface.to_owned()))
            }
            Err(e) if errno(&e) == Some(libc::EBUSY) || errno(&e) == Some(libc::EEXIST) => {
                Err(IoError::XdpBusy(interface.to_owned()))
            }
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) && mode == XdpMode::Driver => {
                Err(refused(
                    interface,
                    "the driver has no native XDP (use xdp_mode = \"generic\" to run without it)",
                ))
            }
            Err(e) => Err(refused_by(interface, &e)),
        }
    }

    /// Loads and attaches in one step.
    pub fn attach_new(
        interface: &str,
        mode: AttachMode,
        port: u16,
        packet_len: u16,
    ) -> Result<Self, IoError> {
        let mut program = Self::load(port, packet_len)?;
        program.attach(interface, mode)?;
        Ok(program)
    }

    /// Loads with `limits` and attaches in one step.
    pub fn attach_with(
        interface: &str,
        mode: AttachMode,
        port: u16,
        packet_len: u16,
        limits: &SourceLimits,
    ) -> Result<Self, IoError> {
        let mut program = Self::load_with(port, packet_len, limits)?;
        program.attach(interface, mode)?;
        Ok(program)
    }

    /// Installs the sources PhantomBand datagrams are served from: `filter`'s addresses
    /// become the allowed maps' whole content (new ones added first, stale ones removed
    /// after, so a source in both the old and the new set is never refused in between), then
    /// its policy for every other source takes effect. Addresses past
    /// [`MAX_ALLOWED_SOURCES`] per family are refused.
    pub fn set_sources(&mut self, filter: &SourceFilter) -> Result<(), IoError> {
        let (v4, v6) = filter.split();
        if v4.len() > MAX_ALLOWED_SOURCES as usize || v6.len() > MAX_ALLOWED_SOURCES as usize {
            return Err(refused(
                "-",
                format!(
                    "{} IPv4 and {} IPv6 sources; the maps hold {MAX_ALLOWED_SOURCES} each",
                    v4.len(),
                    v6.len()
                ),
            ));
        }
        self.sync_allowed::<4>(ALLOWED_V4_MAP_NAME, &v4)?;
        self.sync_allowed::<16>(ALLOWED_V6_MAP_NAME, &v6)?;
        let map = self
            .ebpf
            .map_mut(POLICY_MAP_NAME)
            .ok_or_else(|| refused("-", "policy map missing"))?;
        let mut policy = Array::<_, u32>::try_from(map).map_err(|e| refused("-", e))?;
        policy
            .set(0, filter.policy.as_u32(), 0)
            .map_err(|e| refused("-", e))
    }

    /// Makes the hash map `name` hold exactly `want` (values unused).
    fn sync_allowed<const N: usize>(
        &mut self,
        name: &str,
        want: &BTreeSet<[u8; N]>,
    ) -> Result<(), IoError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| refused("-", format!("{name} missing")))?;
        let mut allowed = HashMap::<_, [u8; N], u8>::try_from(map).map_err(|e| refused("-", e))?;
        for key in want {
            allowed.insert(key, 1, 0).map_err(|e| refused("-", e))?;
        }
        // Keys are collected first: removing while iterating would restart the walk.
        let stale: Vec<[u8; N]> = allowed
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(k))
            .collect();
        for key in stale {
            allowed.remove(&key).map_err(|e| refused("-", e))?;
        }
        Ok(())
    }

    /// The interface the program is attached to, if any.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// Steers right-size PhantomBand datagrams arriving on `queue` to the AF_XDP socket `fd`.
    pub fn register(&mut self, queue: u32, fd: RawFd) -> Result<(), IoError> {
        let map = self
            .ebpf
            .map_mut(XSK_MAP_NAME)
            .ok_or_else(|| refused("-", "XSKMAP missing"))?;
        let mut xsks = XskMap::try_from(map).map_err(|e| refused("-", e))?;
        xsks.set(queue, fd, 0).map_err(|e| IoError::AfXdp {
            interface: self.interface.clone().unwrap_or_default(),
            queue,
            detail: format!("registering the socket in the XSKMAP: {e}"),
        })
    }

    /// Stops steering `queue` to any socket (its datagrams are then dropped as no-socket).
    pub fn unregister(&mut self, queue: u32) -> Result<(), IoError> {
        let map = self
            .ebpf
            .map_mut(XSK_MAP_NAME)
            .ok_or_else(|| refused("-", "XSKMAP missing"))?;
        let mut xsks = XskMap::try_from(map).map_err(|e| refused("-", e))?;
        xsks.unset(queue).map_err(|e| refused("-", e))
    }

    /// The counters summed over all CPUs.
    pub fn counters(&self) -> Result<XdpCounters, IoError> {
        let map = self
            .ebpf
            .map(STATS_MAP_NAME)
            .ok_or_else(|| refused("-", "stats map missing"))?;
        let stats = PerCpuArray::<_, u64>::try_from(map).map_err(|e| refused("-", e))?;
        let mut out = XdpCounters::default();
        for counter in Counter::ALL {
            let per_cpu = stats
                .get(&counter.index(), 0)
                .map_err(|e| refused("-", e))?;
            out.values[counter.index() as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and returns its XDP action
    /// (`XDP_ABORTED` 0, `XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3, `XDP_REDIRECT` 4).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, IoError> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| refused("-", "program missing from the object"))?
            .try_into()
            .map_err(|e| refused("-", e))?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let result = program.test_run(opts).map_err(|e| refused_by("-", &e))?;
        Ok(result.return_value)
    }
}

/// The OS error number inside an aya program error, if any.
fn errno(e: &ProgramError) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        source = err.source();
    }
    None
}
