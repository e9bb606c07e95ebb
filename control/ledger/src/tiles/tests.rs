#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pb-ledger-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("record {i} {}", "x".repeat(i % 17)).into_bytes())
        .collect()
}

fn tree(entries: &[Vec<u8>]) -> Tree {
    let mut t = Tree::new();
    for e in entries {
        t.push(e);
    }
    t
}

#[test]
fn indexes_are_written_in_groups_of_three() {
    assert_eq!(encode_index(0), "000");
    assert_eq!(encode_index(7), "007");
    assert_eq!(encode_index(999), "999");
    assert_eq!(encode_index(1000), "x001/000");
    assert_eq!(encode_index(1_234_067), "x001/x234/067");
    let tile = |level, index, width| TileId {
        level,
        index,
        width,
    };
    assert_eq!(tile(Some(0), 1_234_067, 256).path(), "tile/0/x001/x234/067");
    assert_eq!(tile(Some(3), 5, 1).path(), "tile/3/005.p/1");
    assert_eq!(tile(None, 1000, 255).path(), "tile/entries/x001/000.p/255");
}

#[test]
fn growth_publishes_the_tiles_that_changed() {
    let ids = |old, new| -> Vec<String> { new_tiles(old, new).iter().map(TileId::path).collect() };
    assert!(ids(0, 0).is_empty());
    assert_eq!(ids(0, 1), ["tile/0/000.p/1", "tile/entries/000.p/1"]);
    assert_eq!(
        ids(0, 256),
        ["tile/0/000", "tile/1/000.p/1", "tile/entries/000"]
    );
    assert_eq!(
        ids(100, 600),
        [
            "tile/0/000",
            "tile/0/001",
            "tile/0/002.p/88",
            "tile/1/000.p/2",
            "tile/entries/000",
            "tile/entries/001",
            "tile/entries/002.p/88"
        ]
    );
    // Nothing new below a new full 256: level 1 stays.
    assert_eq!(ids(600, 601), ["tile/0/002.p/89", "tile/entries/002.p/89"]);
    assert!(ids(601, 601).is_empty());
    assert_eq!(tile_for(1, 1, 70_000).path(), "tile/1/000");
    assert_eq!(tile_for(1, 260, 70_000).path(), "tile/1/001.p/17");
    assert_eq!(tile_for(0, 69_999, 70_000).path(), "tile/0/273.p/112");
}

#[test]
fn bundles_round_trip_and_malformed_ones_are_refused() {
    let e = entries(5);
    let bytes = entry_bundle(e.iter().map(Vec::as_slice)).unwrap();
    let back = parse_entry_bundle(&bytes, 5, "b").unwrap();
    assert_eq!(back, e.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert!(parse_entry_bundle(&bytes, 4, "b").is_err());
    for cut in 1..bytes.len() {
        let parsed = parse_entry_bundle(&bytes[..cut], 5, "b");
        assert!(parsed.is_err(), "cut at {cut}");
    }
    let empty: [&[u8]; 1] = [&[]];
    assert_eq!(entry_bundle(empty).unwrap(), [0, 0]);
    let long = vec![0u8; MAX_ENTRY + 1];
    assert!(matches!(
        entry_bundle([long.as_slice()]),
        Err(TileError::EntryTooLong(65536))
    ));
}

#[test]
fn a_published_log_reads_back_and_a_changed_byte_is_found() {
    let scratch = Scratch::new("roundtrip");
    let dir = TileDir::new(&scratch.0);
    let e = entries(600);
    // Published in three growths, as a steward would.
    for (old, new) in [(0, 10), (10, 300), (300, 600)] {
        dir.publish(&tree(&e[..new]), &e[..new], old as u64)
            .unwrap();
    }
    let t = tree(&e);
    let root = t.root(600).unwrap();
    let (back, read) = dir.read_log(600, &root).unwrap();
    assert_eq!(read, e);
    assert_eq!(back.root(600).unwrap(), root);
    // The partial tiles of the first growths went when their full tiles came; an older
    // size reads from the partial tiles there are, or from the full ones that replaced them.
    assert!(!scratch.0.join("tile/0/000.p").exists());
    assert!(!scratch.0.join("tile/entries/001.p").exists());
    assert!(scratch.0.join("tile/0/002.p/88").exists());
    let (_, early) = dir.read_log(300, &t.root(300).unwrap()).unwrap();
    assert_eq!(early, e[..300]);
    let (_, earliest) = dir.read_log(10, &t.root(10).unwrap()).unwrap();
    assert_eq!(earliest, e[..10]);
    // Another root, a changed entry, a changed hash tile: each refused.
    assert!(matches!(
        dir.read_log(600, &t.root(599).unwrap()),
        Err(TileError::Mismatch(_))
    ));
    let flip = |relative: &str, at: usize| {
        let path = scratch.0.join(relative);
        let mut bytes = fs::read(&path).unwrap();
        bytes[at] ^= 0x20;
        fs::write(&path, bytes).unwrap();
    };
    flip("tile/1/000.p/2", 40);
    assert!(matches!(
        dir.read_log(600, &root),
        Err(TileError::Mismatch(m)) if m.contains("tile/1/000.p/2")
    ));
    flip("tile/1/000.p/2", 40);
    dir.read_log(600, &root).unwrap();
    flip("tile/entries/002.p/88", 5);
    assert!(matches!(
        dir.read_log(600, &root),
        Err(TileError::Mismatch(_))
    ));
    fs::remove_file(scratch.0.join("tile/entries/002.p/88")).unwrap();
    assert!(matches!(
        dir.read_log(600, &root),
        Err(TileError::NotFound(_))
    ));
}
