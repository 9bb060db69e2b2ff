//! RFC 6962 / RFC 9162 Merkle tree hashing and inclusion-proof verification, as Rekor uses it:
//! leaves are `sha256(0x00 || entry)`, inner nodes `sha256(0x01 || left || right)`.
//!
//! Kept free of bundle types so it can be tested on its own against a naive recursive tree.

use sha2::{Digest, Sha256};

/// A SHA-256 Merkle tree hash.
pub(crate) type Hash = [u8; 32];

/// Why an inclusion proof does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("proof has {got} hashes, a tree of size {size} needs {expected} for leaf {index}")]
    WrongProofLength {
        index: u64,
        size: u64,
        expected: usize,
        got: usize,
    },
    #[error("computed root {computed} does not match {expected}")]
    RootMismatch { computed: String, expected: String },
}

/// Hash of a leaf holding `data`.
pub(crate) fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Hash of an inner node over two subtrees.
pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Number of hashes an inclusion proof for `index` in a tree of `size` leaves must have
/// (RFC 9162 §2.1.3.2): one per level where the path leaves the "perfect" left part of the
/// tree, plus one for each right-border level where the last subtree is complete.
fn proof_len(index: u64, size: u64) -> usize {
    let inner = (u64::BITS - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    inner + border
}

/// Recomputes the tree root from a leaf hash and its audit path (RFC 9162 §2.1.3.2).
pub(crate) fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = proof_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            index,
            size,
            expected,
            got: proof.len(),
        });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            // On the right border the sibling levels without a right neighbour are skipped.
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // With the length checked up front the walk always ends at the root; keep the invariant
    // explicit so a future change to `proof_len` cannot silently accept a short proof.
    if sn != 0 {
        return Err(MerkleError::WrongProofLength {
            index,
            size,
            expected,
            got: proof.len(),
        });
    }
    Ok(r)
}

/// Checks that `leaf` sits at `index` in the tree of `size` leaves whose root is `root`.
pub(crate) fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_proof(index, size, leaf, proof)?;
    if &computed != root {
        return Err(MerkleError::RootMismatch {
            computed: hex::encode(computed),
            expected: hex::encode(root),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1 MTH, written recursively straight from the definition.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// Largest power of two strictly smaller than `n` (n >= 2).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// RFC 6962 §2.1.1 PATH(m, D[n]).
    fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    #[test]
    fn every_index_of_small_trees_verifies() {
        for n in 1..=33usize {
            let ls = leaves(n);
            let root = mth(&ls);
            for m in 0..n {
                let p = path(m, &ls);
                assert_eq!(p.len(), proof_len(m as u64, n as u64), "n={n} m={m}");
                verify_inclusion(m as u64, n as u64, &leaf_hash(&ls[m]), &p, &root)
                    .unwrap_or_else(|e| panic!("n={n} m={m}: {e}"));
            }
        }
    }

    #[test]
    fn table_of_failures() {
        let ls = leaves(7);
        let root = mth(&ls);
        let good = path(3, &ls);
        let leaf = leaf_hash(&ls[3]);
        let mut flipped = good.clone();
        flipped[1][0] ^= 1;
        let mut short = good.clone();
        short.pop();
        let mut long = good.clone();
        long.push([0; 32]);
        let mut wrong_root = root;
        wrong_root[31] ^= 0x80;

        struct Case<'a> {
            name: &'a str,
            index: u64,
            size: u64,
            leaf: Hash,
            proof: Vec<Hash>,
            root: Hash,
            want: fn(&MerkleError) -> bool,
        }
        let cases = [
            Case {
                name: "flipped sibling",
                index: 3,
                size: 7,
                leaf,
                proof: flipped,
                root,
                want: |e| matches!(e, MerkleError::RootMismatch { .. }),
            },
            Case {
                name: "short proof",
                index: 3,
                size: 7,
                leaf,
                proof: short,
                root,
                want: |e| matches!(e, MerkleError::WrongProofLength { .. }),
            },
            Case {
                name: "long proof",
                index: 3,
                size: 7,
                leaf,
                proof: long,
                root,
                want: |e| matches!(e, MerkleError::WrongProofLength { .. }),
            },
            Case {
                name: "wrong root",
                index: 3,
                size: 7,
                leaf,
                proof: good.clone(),
                root: wrong_root,
                want: |e| matches!(e, MerkleError::RootMismatch { .. }),
            },
            Case {
                name: "wrong index",
                index: 2,
                size: 7,
                leaf,
                proof: good.clone(),
                root,
                want: |e| matches!(e, MerkleError::RootMismatch { .. }),
            },
            Case {
                name: "wrong leaf",
                index: 3,
                size: 7,
                leaf: leaf_hash(b"entry 4"),
                proof: good.clone(),
                root,
                want: |e| matches!(e, MerkleError::RootMismatch { .. }),
            },
            Case {
                name: "index past the end",
                index: 7,
                size: 7,
                leaf,
                proof: good.clone(),
                root,
                want: |e| matches!(e, MerkleError::IndexOutOfRange { .. }),
            },
            Case {
                name: "empty tree",
                index: 0,
                size: 0,
                leaf,
                proof: Vec::new(),
                root,
                want: |e| matches!(e, MerkleError::IndexOutOfRange { .. }),
            },
            Case {
                // Leaf 3 of 4 is on the right border: its path has 2 hashes, not 3.
                name: "tree size with another path shape",
                index: 3,
                size: 4,
                leaf,
                proof: good.clone(),
                root,
                want: |e| matches!(e, MerkleError::WrongProofLength { .. }),
            },
        ];
        for c in cases {
            let err =
                verify_inclusion(c.index, c.size, &c.leaf, &c.proof, &c.root).expect_err(c.name);
            assert!((c.want)(&err), "{}: unexpected {err:?}", c.name);
        }
    }

    /// A path does not pin the tree size when sizes share its shape (leaf 3 of 5..=8 all
    /// hang off the same left subtree of 4): that is why the signed checkpoint's size must be
    /// compared with the proof's.
    #[test]
    fn proof_alone_does_not_pin_tree_size() {
        let ls = leaves(7);
        let root = mth(&ls);
        let p = path(3, &ls);
        for size in 5..=8 {
            assert_eq!(
                root_from_inclusion_proof(3, size, &leaf_hash(&ls[3]), &p),
                Ok(root),
                "size {size}"
            );
        }
    }

    #[test]
    fn single_leaf_tree_root_is_the_leaf_hash() {
        let leaf = leaf_hash(b"only");
        assert_eq!(root_from_inclusion_proof(0, 1, &leaf, &[]), Ok(leaf));
    }

    /// A known vector: the root of the RFC 6962 test tree with the first two leaves
    /// (empty string and 0x00) from certificate-transparency-go's merkle tests.
    #[test]
    fn known_vector_two_leaves() {
        let l0 = leaf_hash(b"");
        let l1 = leaf_hash(&[0u8]);
        let root = node_hash(&l0, &l1);
        assert_eq!(
            hex::encode(root),
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
        );
        verify_inclusion(1, 2, &l1, &[l0], &root).expect("leaf 1 of 2");
    }
}
