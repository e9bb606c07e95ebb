//! A ledger's entries as a verifier reads them from anyone's server: an entry bundle of any
//! bytes, each entry opened as a signed measurement record, and a reputation table (what a
//! gateway hands a client). None may panic; a record or a table that parses must read back
//! to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_ledger::{
    record::{Measurement, SignedMeasurement},
    reputation::Table,
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
    if let Some(table) = core::str::from_utf8(data).ok().and_then(Table::parse) {
        assert_eq!(table.text().as_bytes(), data);
    }
});
