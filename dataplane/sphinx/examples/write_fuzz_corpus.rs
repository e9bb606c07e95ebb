//! Writes the fuzz seed corpus of `dataplane/sphinx/fuzz`: valid packets of both formats
//! for relay 1 (one to three hops each), each also one byte short, under `DIR/process`, and
//! serialized SURBs under `DIR/surb`.
//!
//! ```sh
//! cargo run -p pb-sphinx --example write_fuzz_corpus -- dataplane/sphinx/fuzz/corpus
//! ```
//!
//! A tool, not a test: it asserts nothing, so it must not count as a passed test.

use std::path::PathBuf;

use pb_sphinx::{
    DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, PACKET_LEN, SurbId,
    create_packet_with, create_surb_with,
};

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write_fuzz_corpus DIR");
        std::process::exit(2);
    };
    if let Err(e) = write(&dir) {
        eprintln!("write_fuzz_corpus: {e}");
        std::process::exit(1);
    }
}

fn write(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir.join("process"))?;
    std::fs::create_dir_all(dir.join("surb"))?;
    let epoch = Epoch(1000);
    let hops: Vec<Hop> = (1..=3u8)
        .map(|i| Hop {
            node: NodeId([i; 16]),
            public_key: EpochKey::from_secret(epoch, [i; 32]).public_key(),
            delay: DelayMs(7),
        })
        .collect();
    let mut written = 0;
    for (format, n) in Format::ALL
        .into_iter()
        .flat_map(|f| (1..=3).map(move |n| (f, n)))
    {
        // v1 keeps its original file names.
        let v = match format {
            Format::V1 => "",
            Format::V2 => "v2-",
        };
        let mut packet = [0u8; PACKET_LEN];
        create_packet_with(
            format,
            &mut packet,
            epoch,
            &hops[..n],
            MailboxId([0xab; 16]),
            b"corpus",
            &[n as u8; 32],
        )?;
        std::fs::write(
            dir.join("process").join(format!("valid-{v}{n}-hops")),
            packet,
        )?;
        std::fs::write(
            dir.join("process").join(format!("short-{v}{n}")),
            &packet[..PACKET_LEN - 1],
        )?;
        let (surb, _) = create_surb_with(
            format,
            epoch,
            &hops[..n],
            MailboxId([0xcd; 16]),
            SurbId([n as u8; 16]),
            &[0x80 + n as u8; 32],
        )?;
        std::fs::write(
            dir.join("surb").join(format!("surb-{v}{n}-hops")),
            surb.to_bytes(),
        )?;
        written += 3;
    }
    println!("wrote {written} files under {}", dir.display());
    Ok(())
}
