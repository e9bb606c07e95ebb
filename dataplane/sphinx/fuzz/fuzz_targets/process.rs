//! Any bytes, processed by a relay (as a whole buffer and in a batch with a valid packet):
//! must return a result, never panic or read out of bounds. The seed corpus holds valid
//! packets for relay 1 of the spec's vector, so mutations get past the MAC check's inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_sphinx::{
    DropReason, Epoch, EpochKey, MemoryReplayFilter, NodeKeys, process, process_batch,
};

fuzz_target!(|data: &[u8]| {
    let keys = NodeKeys {
        current: EpochKey::from_secret(Epoch(1000), [1; 32]),
        previous: Some(EpochKey::from_secret(Epoch(999), [9; 32])),
        format: None,
    };
    let mut filter = MemoryReplayFilter::default();
    let mut single = data.to_vec();
    let one = process(&mut single, &keys, &mut filter);

    let mut a = data.to_vec();
    let mut b = data.to_vec();
    let mut refs: Vec<&mut [u8]> = vec![&mut a, &mut b];
    let mut results = [Err(DropReason::WrongLength); 2];
    process_batch(
        &mut refs,
        &keys,
        &mut MemoryReplayFilter::default(),
        &mut results,
    );
    assert_eq!(results[0], one, "batch and single disagree");
    if one.is_ok() {
        assert_eq!(a, single, "batch and single wrote different packets");
        assert_eq!(
            results[1],
            Err(DropReason::Replay),
            "the copy in the batch is a replay"
        );
    }
});
