//! What a client checks before it uses a gateway's directory (docs/spec/checkpoint.md,
//! "What a client checks"), sans I/O: the gateway's cosigned checkpoint and the descriptors
//! it served must be the network's, for an epoch the client's clock allows. A view failing
//! any check comes from a hostile (or broken) gateway; [`Hostile`] says which check failed,
//! in one line.
//!
//! A gateway can still withhold: it marks relays not live, and the client routes around
//! them. It cannot add, remove or replace a descriptor, or move a relay to another layer,
//! without changing a hash k stewards signed.

use pb_sphinx::Epoch;

use crate::{
    checkpoint::{Checkpoint, CheckpointError, descriptor_set_hash},
    descriptor::{Invalid, SignedDescriptor},
    network::NetworkFile,
    topology::{Topology, TopologyError},
};

/// How far before an epoch's start a client accepts its checkpoint (its clock may be
/// behind), in seconds: this, or an eighth of an epoch if that is less.
pub const EARLY: u64 = 120;
/// How long after an epoch's end a client still accepts its checkpoint (stewards sign the
/// next one a little after it starts), in seconds: this, or a quarter of an epoch if that
/// is less.
pub const LATE: u64 = 300;

/// Why a gateway's view was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Hostile {
    /// The checkpoint is not k stewards' signed checkpoint of this network.
    #[error("the gateway's checkpoint was refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint's epoch is not one the client's clock allows.
    #[error("the gateway's checkpoint is for epoch {got}, the clock allows {from} to {to}")]
    Epoch {
        /// The checkpoint's epoch.
        got: u32,
        /// The earliest allowed.
        from: u32,
        /// The latest allowed.
        to: u32,
    },
    /// A served descriptor does not parse or verify.
    #[error("the gateway served a descriptor that does not verify ({0})")]
    Descriptor(&'static str),
    /// The served descriptors are not the set the stewards admitted.
    #[error("the gateway's descriptors are not the set the stewards admitted")]
    DescriptorSet,
    /// The served descriptors give another topology than the one the stewards signed.
    #[error("the gateway's descriptors give another topology than the stewards signed")]
    Topology,
    /// No topology (a layer empty) from the served set.
    #[error("the gateway's descriptors give no topology: {0}")]
    NoTopology(TopologyError),
}

/// A verified view: the checkpoint, and the topology to route over (the admitted relays,
/// those the gateway marked not live left out).
#[derive(Debug)]
pub struct Verified {
    /// The checkpoint k stewards signed.
    pub checkpoint: Checkpoint,
    /// The topology to route over.
    pub topology: Topology,
}

/// The epochs a client's clock (`now`, Unix seconds) allows: the current one, the previous
/// one early in the current one ([`LATE`]), the next one late in it ([`EARLY`]).
pub fn allowed_epochs(network: &NetworkFile, now: u64) -> (u32, u32) {
    let length = network.epoch_seconds.max(1);
    let (late, early) = (LATE.min(length / 4), EARLY.min(length / 8));
    let epoch = |t: u64| u32::try_from(t / length).unwrap_or(u32::MAX);
    (epoch(now.saturating_sub(late)), epoch(now + early))
}

/// Checks a gateway's view: its cosigned checkpoint `note` and the descriptors it served,
/// each with whether the gateway holds its relay live, at Unix time `now`.
pub fn verify_view(
    network: &NetworkFile,
    note: &[u8],
    served: &[(bool, Vec<u8>)],
    now: u64,
) -> Result<Verified, Hostile> {
    let (checkpoint, _) = network.stewards.open(note)?;
    let (from, to) = allowed_epochs(network, now);
    if !(from..=to).contains(&checkpoint.epoch.0) {
        return Err(Hostile::Epoch {
            got: checkpoint.epoch.0,
            from,
            to,
        });
    }
    // The set first: once its hash is the one k stewards signed, every descriptor in it is
    // one they verified, signature and all, so only its fields are read here.
    if descriptor_set_hash(served.iter().map(|(_, b)| &b[..])) != checkpoint.descriptors {
        return Err(Hostile::DescriptorSet);
    }
    let mut descriptors = Vec::with_capacity(served.len());
    for (_, bytes) in served {
        let d =
            SignedDescriptor::parse_attested(bytes).map_err(|e| Hostile::Descriptor(reason(e)))?;
        descriptors.push(d);
    }
    let epoch = Epoch(checkpoint.epoch.0);
    let all = Topology::compute(
        &network.seed,
        epoch,
        descriptors.iter().map(|d| d.descriptor()),
    )
    .map_err(Hostile::NoTopology)?;
    if all.hash() != checkpoint.topology {
        return Err(Hostile::Topology);
    }
    // Routes leave out what the gateway marked not live (when it marked anything).
    let topology = if served.iter().all(|(live, _)| *live) {
        all
    } else {
        let live: std::collections::HashSet<_> = served
            .iter()
            .zip(&descriptors)
            .filter(|((live, _), _)| *live)
            .map(|(_, d)| d.descriptor().identity)
            .collect();
        Topology::compute_live(
            &network.seed,
            epoch,
            descriptors.iter().map(|d| d.descriptor()),
            |d| live.contains(&d.identity),
        )
        .map_err(Hostile::NoTopology)?
    };
    Ok(Verified {
        checkpoint,
        topology,
    })
}

fn reason(e: Invalid) -> &'static str {
    e.name()
}

#[cfg(test)]
mod tests;
