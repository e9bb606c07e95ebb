#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use super::*;

fn hex(h: &Hash) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 6962's MTH, straight from its definition.
fn mth(leaves: &[Vec<u8>]) -> Hash {
    match leaves.len() {
        0 => Hash::empty(),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
}

fn tree(entries: &[Vec<u8>]) -> Tree {
    let mut t = Tree::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(t.push(e), i as u64);
    }
    t
}

/// The eight leaves of the RFC 6962 reference tests (certificate-transparency's and
/// Trillian's) and the roots of their first 1 to 8.
#[test]
fn the_reference_vectors_hold() {
    let leaves: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x10],
        vec![0x20, 0x21],
        vec![0x30, 0x31],
        vec![0x40, 0x41, 0x42, 0x43],
        (0x50..=0x57).collect(),
        (0x60..=0x6f).collect(),
    ];
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let t = tree(&leaves);
    for (n, root) in roots.iter().enumerate() {
        assert_eq!(hex(&t.root(n as u64 + 1).unwrap()), *root, "size {}", n + 1);
    }
    assert_eq!(
        hex(&t.root(0).unwrap()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn roots_at_every_size_match_the_definition() {
    let e = entries(300);
    let t = tree(&e);
    for n in 0..=300 {
        assert_eq!(t.root(n as u64).unwrap(), mth(&e[..n]), "size {n}");
    }
    assert_eq!(
        t.root(301),
        Err(TlogError::OutOfRange {
            index: 301,
            size: 300
        })
    );
    // The stored subtrees are the complete ones.
    assert_eq!(t.stored(8, 0), Some(mth(&e[..256])));
    assert_eq!(t.stored(2, 5), Some(mth(&e[20..24])));
    assert_eq!(t.stored(8, 1), None);
    assert_eq!(t.stored(9, 0), None);
}

#[test]
fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
    let e = entries(70);
    let t = tree(&e);
    for size in 1..=70u64 {
        let root = t.root(size).unwrap();
        for index in 0..size {
            let leaf = leaf_hash(&e[index as usize]);
            let proof = t.inclusion_proof(index, size).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            let other = leaf_hash(b"not in the tree");
            assert!(verify_inclusion(&other, index, size, &proof, &root).is_err());
            if size > 1 {
                let wrong = (index + 1) % size;
                assert!(
                    verify_inclusion(&leaf, wrong, size, &proof, &root).is_err(),
                    "index {index} proved at {wrong} of {size}"
                );
                let mut bent = proof.clone();
                bent[0].0[0] ^= 1;
                assert!(verify_inclusion(&leaf, index, size, &bent, &root).is_err());
                assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
                let mut longer = proof.clone();
                longer.push(root);
                assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
            }
        }
        assert!(t.inclusion_proof(size, size).is_err());
    }
}

#[test]
fn every_consistency_proof_verifies_and_a_wrong_one_does_not() {
    let e = entries(70);
    let t = tree(&e);
    for new in 0..=70u64 {
        let new_root = t.root(new).unwrap();
        for old in 0..=new {
            let old_root = t.root(old).unwrap();
            let proof = t.consistency_proof(old, new).unwrap();
            verify_consistency(old, new, &proof, &old_root, &new_root)
                .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
            if old > 0 && old < new {
                let mut bent = proof.clone();
                let last = bent.len() - 1;
                bent[last].0[31] ^= 1;
                assert!(verify_consistency(old, new, &bent, &old_root, &new_root).is_err());
                let fake = leaf_hash(b"another history");
                assert!(verify_consistency(old, new, &proof, &fake, &new_root).is_err());
                assert!(verify_consistency(old, new, &proof, &old_root, &fake).is_err());
                assert!(verify_consistency(old, new, &proof[1..], &old_root, &new_root).is_err());
                if old + 1 < new {
                    assert!(
                        verify_consistency(old + 1, new, &proof, &old_root, &new_root).is_err()
                    );
                }
            }
        }
    }
    assert!(t.consistency_proof(5, 4).is_err());
    assert!(t.consistency_proof(5, 71).is_err());
}

#[test]
fn a_tree_of_leaf_hashes_is_the_tree_of_its_entries() {
    let e = entries(40);
    let mut t = Tree::new();
    for x in &e {
        t.push_leaf_hash(leaf_hash(x));
    }
    assert_eq!(t.root(40).unwrap(), tree(&e).root(40).unwrap());
}
