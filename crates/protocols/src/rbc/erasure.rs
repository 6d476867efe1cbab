//! The coding layer of the erasure-coded variant (docs/protocols/rbc.md, "erasure-coded variant"):
//! Reed–Solomon fragments of a body (any `t + 1` of `n` rebuild it) and the Merkle tree that
//! commits the sender to all `n` of them.
//!
//! Layout: the body `m` becomes `d = u32 length of m ‖ m ‖ zero padding`, cut into `k = t + 1`
//! shards of one even size (the coder works on 16-bit symbols); fragments `1..=k` are the shards
//! themselves (systematic code), fragments `k+1..=n` the parity shards.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};
use sintra_crypto::ServerId;

use super::message::{Digest, Fragment};
use super::{BODY_BYTES_MAX, FRAGMENT_PURPOSE, RbcError, bound_hasher};
use crate::InstanceId;

/// Bytes of the length prefix in front of the body.
const LENGTH_PREFIX_BYTES: usize = 4;

/// Data shards `k = t + 1`: any `t + 1` fragments rebuild the body, and every READY quorum
/// guarantees `t + 1` honest echoers, whose fragments reach everybody.
pub(super) fn data_shards(faults: u16) -> usize {
    usize::from(faults) + 1
}

/// The size of each fragment for a body of `body_bytes` and `k` data shards: the padded data
/// split evenly, rounded up to an even, non-zero number of bytes.
pub(super) fn fragment_bytes(body_bytes: usize, k: usize) -> usize {
    let per_shard = (LENGTH_PREFIX_BYTES + body_bytes).div_ceil(k.max(1));
    (per_shard + (per_shard & 1)).max(2)
}

/// The largest fragment an honest sender produces for `k` data shards.
pub(super) fn fragment_bytes_max(k: usize) -> usize {
    fragment_bytes(BODY_BYTES_MAX, k)
}

/// Whether a fragment has a shape an honest sender produces for `k` data shards: even,
/// non-empty, and not above the size of a maximal body's fragment.
pub(super) fn fragment_size_ok(len: usize, k: usize) -> bool {
    len >= 2 && len.is_multiple_of(2) && len <= fragment_bytes_max(k)
}

/// Encodes `body` into `n` fragments, `k` of them data. Errors only if the coder refuses the
/// parameters, which `1 <= k <= n <= 1024` never makes it do.
pub(super) fn encode(body: &[u8], n: usize, k: usize) -> Result<Vec<Vec<u8>>, RbcError> {
    let shard = fragment_bytes(body.len(), k);
    let length = u32::try_from(body.len()).map_err(|_| RbcError::BodyTooLarge {
        len: body.len(),
        max: BODY_BYTES_MAX,
    })?;
    let mut data = Vec::with_capacity(shard * k);
    data.extend_from_slice(&length.to_be_bytes());
    data.extend_from_slice(body);
    data.resize(shard * k, 0);
    let originals: Vec<Vec<u8>> = data.chunks(shard).map(<[u8]>::to_vec).collect();
    encode_shards(originals, n, k)
}

/// Extends `k` data shards with `n - k` parity shards.
fn encode_shards(originals: Vec<Vec<u8>>, n: usize, k: usize) -> Result<Vec<Vec<u8>>, RbcError> {
    if originals.len() != k || n < k {
        return Err(RbcError::Coding("shard counts do not fit the group".into()));
    }
    if n == k {
        return Ok(originals);
    }
    let recovery = reed_solomon_simd::encode(k, n - k, &originals)
        .map_err(|error| RbcError::Coding(error.to_string()))?;
    let mut fragments = originals;
    fragments.extend(recovery);
    Ok(fragments)
}

/// What `t + 1` fragments of one root decode to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// The sender's body: the fragments are a codeword whose Merkle root is the root.
    Body(Vec<u8>),
    /// The committed fragments are not a codeword of a well-formed body: every honest server
    /// reaches this same verdict, whichever `t + 1` fragments it used.
    Invalid,
}

/// Decodes a body from `k` fragments (keyed by server) committed under `root`, re-encodes it and
/// checks that the re-encoding has the same root — the AVID consistency check.
pub(super) fn decode(
    instance: &InstanceId,
    root: &Digest,
    fragments: &BTreeMap<ServerId, &[u8]>,
    n: usize,
    k: usize,
) -> Decoded {
    let Some(data) = reconstruct(fragments, n, k) else {
        return Decoded::Invalid;
    };
    let shard = data.len() / k.max(1);
    let originals: Vec<Vec<u8>> = data.chunks(shard.max(1)).map(<[u8]>::to_vec).collect();
    let Ok(all) = encode_shards(originals, n, k) else {
        return Decoded::Invalid;
    };
    if MerkleTree::new(instance, &all).root() != *root {
        return Decoded::Invalid;
    }
    let Some((prefix, rest)) = data.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Decoded::Invalid;
    };
    let length = u32::from_be_bytes(*prefix) as usize;
    match rest.get(..length) {
        Some(body) if length <= BODY_BYTES_MAX => Decoded::Body(body.to_vec()),
        _ => Decoded::Invalid,
    }
}

/// The `k · s` data bytes from exactly `k` fragments of equal size `s`, or `None` if they do not
/// have one valid size or the coder refuses them.
fn reconstruct(fragments: &BTreeMap<ServerId, &[u8]>, n: usize, k: usize) -> Option<Vec<u8>> {
    if fragments.len() != k {
        return None;
    }
    let shard = fragments.values().next()?.len();
    if fragments.values().any(|data| data.len() != shard) || !fragment_size_ok(shard, k) {
        return None;
    }
    let mut originals: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut recovery: Vec<(usize, &[u8])> = Vec::new();
    for (id, data) in fragments {
        let slot = id.slot();
        if slot >= n {
            return None;
        }
        if slot < k {
            originals.insert(slot, data.to_vec());
        } else {
            recovery.push((slot - k, data));
        }
    }
    if !recovery.is_empty() {
        let restored = reed_solomon_simd::decode(
            k,
            n - k,
            originals.iter().map(|(index, data)| (*index, data)),
            recovery,
        )
        .ok()?;
        originals.extend(restored);
    }
    if originals.len() != k {
        return None;
    }
    Some(originals.into_values().flatten().collect())
}

/// Fragments for every server, committed under one Merkle root: what an honest sender sends
/// (`fragments[i]` to server `i + 1`). Also lets tests and simulated adversaries commit to
/// arbitrary (e.g. inconsistent) fragments.
pub fn commit(instance: &InstanceId, fragments: Vec<Vec<u8>>) -> Vec<Fragment> {
    let tree = MerkleTree::new(instance, &fragments);
    let root = tree.root();
    fragments
        .into_iter()
        .zip(ServerId::all(u16::MAX))
        .enumerate()
        .map(|(position, (data, index))| Fragment {
            root,
            index,
            merkle_path: tree.path(position),
            data,
        })
        .collect()
}

/// The hash of server `index`'s fragment as a Merkle leaf, bound to the instance.
fn leaf_hash(instance: &InstanceId, index: ServerId, data: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    let mut bound = bound_hasher(FRAGMENT_PURPOSE, instance);
    bound.update(((2 + data.len()) as u64).to_be_bytes());
    bound.update(index.get().to_be_bytes());
    bound.update(data);
    hasher.update(bound.finalize());
    hasher.finalize().into()
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The fixed leaf that pads the tree to a power of two.
fn padding_leaf() -> Digest {
    Sha256::digest([0x02]).into()
}

/// The number of siblings in a path of a tree over `n` leaves.
pub(super) fn path_len(n: usize) -> usize {
    n.max(1).next_power_of_two().trailing_zeros() as usize
}

/// Whether `fragment` is committed under its root as server `fragment.index`'s fragment in a
/// group of `n`.
pub(super) fn verify(instance: &InstanceId, fragment: &Fragment, n: usize) -> bool {
    let position = fragment.index.slot();
    if position >= n || fragment.merkle_path.len() != path_len(n) {
        return false;
    }
    let mut hash = leaf_hash(instance, fragment.index, &fragment.data);
    for (level, sibling) in fragment.merkle_path.iter().enumerate() {
        hash = if (position >> level) & 1 == 0 {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    hash == fragment.root
}

/// A Merkle tree over the fragments of servers `1..=n`, bottom level first.
struct MerkleTree {
    levels: Vec<Vec<Digest>>,
}

impl MerkleTree {
    fn new(instance: &InstanceId, fragments: &[Vec<u8>]) -> Self {
        let width = fragments.len().max(1).next_power_of_two();
        let mut leaves: Vec<Digest> = fragments
            .iter()
            .zip(ServerId::all(u16::MAX))
            .map(|(data, index)| leaf_hash(instance, index, data))
            .collect();
        leaves.resize(width, padding_leaf());
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    // Unreachable: every level has an even width above the root.
                    [single] => *single,
                    _ => padding_leaf(),
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    fn root(&self) -> Digest {
        self.levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or_else(padding_leaf)
    }

    fn path(&self, position: usize) -> Vec<Digest> {
        let depth = self.levels.len().saturating_sub(1);
        (0..depth)
            .filter_map(|level| {
                self.levels
                    .get(level)
                    .and_then(|nodes| nodes.get((position >> level) ^ 1))
                    .copied()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! The coding layer alone: any `t + 1` fragments rebuild the body, paths verify only for
    //! their own fragment, and fragments that are not a codeword decode to `Invalid` from every
    //! subset.
    use super::*;

    fn instance() -> InstanceId {
        InstanceId::root("rbc-test").unwrap()
    }

    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        // All k-subsets of 0..n for small n.
        let mut out = Vec::new();
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == k {
                out.push((0..n).filter(|i| mask >> i & 1 == 1).collect());
            }
        }
        out
    }

    fn pick<'a>(fragments: &'a [Fragment], positions: &[usize]) -> BTreeMap<ServerId, &'a [u8]> {
        positions
            .iter()
            .map(|&p| (fragments[p].index, fragments[p].data.as_slice()))
            .collect()
    }

    #[test]
    fn any_t_plus_one_fragments_rebuild_the_body() {
        for (n, t) in [(1usize, 0u16), (2, 0), (4, 1), (7, 2)] {
            let k = data_shards(t);
            for body in [
                Vec::new(),
                vec![7u8],
                (0..=255u8).cycle().take(1001).collect(),
            ] {
                let fragments = commit(&instance(), encode(&body, n, k).unwrap());
                assert_eq!(fragments.len(), n);
                for fragment in &fragments {
                    assert!(verify(&instance(), fragment, n));
                }
                for subset in subsets(n, k) {
                    let root = fragments[0].root;
                    let decoded = decode(&instance(), &root, &pick(&fragments, &subset), n, k);
                    assert_eq!(
                        decoded,
                        Decoded::Body(body.clone()),
                        "n={n} subset={subset:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn paths_bind_fragment_index_and_instance() {
        let n = 7;
        let fragments = commit(&instance(), encode(b"hello", n, 3).unwrap());
        let mut moved = fragments[2].clone();
        moved.index = ServerId::new(4).unwrap();
        assert!(!verify(&instance(), &moved, n));
        let mut changed = fragments[2].clone();
        changed.data[0] ^= 1;
        assert!(!verify(&instance(), &changed, n));
        let other = InstanceId::root("other").unwrap();
        assert!(!verify(&other, &fragments[2], n));
        let mut short = fragments[2].clone();
        short.merkle_path.pop();
        assert!(!verify(&instance(), &short, n));
    }

    #[test]
    fn a_non_codeword_is_invalid_from_every_subset() {
        let (n, k) = (7, 3);
        let mut shards = encode(b"a body long enough to spread over shards", n, k).unwrap();
        shards[5][0] ^= 0xff;
        let fragments = commit(&instance(), shards);
        let root = fragments[0].root;
        for subset in subsets(n, k) {
            let decoded = decode(&instance(), &root, &pick(&fragments, &subset), n, k);
            assert_eq!(decoded, Decoded::Invalid, "subset {subset:?}");
        }
    }
}
