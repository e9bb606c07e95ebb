//! A ledger's entries as a verifier reads them from anyone's server: an entry bundle of any
//! bytes, each entry opened as a signed measurement record. Neither may panic, and a record
//! that opens must read back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_ledger::{
    record::{Measurement, SignedMeasurement},
    tiles::parse_entry_bundle,
};

fuzz_target!(|data: &[u8]| {
    if let Some((&width, bundle)) = data.split_first()
        && let Ok(entries) = parse_entry_bundle(bundle, u64::from(width), "fuzz")
    {
        for entry in entries {
            if let Ok(record) = SignedMeasurement::open(entry) {
                let text = record.measurement().text();
                assert_eq!(Measurement::parse(&text).as_ref(), Ok(record.measurement()));
            }
        }
    }
    if let Ok(record) = SignedMeasurement::open(data) {
        assert!(data.starts_with(record.measurement().text().as_bytes()));
    }
});
