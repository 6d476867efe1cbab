//! `invalid-crypto`, independent of any message layout: finds the signature shares,
//! signatures and coin shares inside an encoded message by decoding every window of their
//! encoded size, and replaces one of them with a well-formed but wrong value (a signature or
//! coin share of the sender's own key on a junk statement). The result still decodes; only a
//! verification exposes it.
//!
//! Finding the points: a BLS12-381 G1 point is 48 bytes whose first byte has the compression
//! flag set and the infinity flag clear; a random 48-byte window that passes decoding (on the
//! curve, in the prime-order subgroup, canonical) is negligibly likely, so every hit is a real
//! point. A coin share is 130 bytes starting with the sender's id and decodes only if its three
//! ristretto points are canonical. Cost: about one G1 decompression per fifth byte of the
//! message, a few milliseconds for a typical vote — paid once per Byzantine message.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::bls::{ENCODED_SIGNATURE_BYTES, Signature};
use sintra_crypto::coin::{COIN_SHARE_BYTES, CoinShare};
use sintra_crypto::dealer::ServerKeys;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::{Context, ServerId};

/// The purpose of the junk statements the forged values sign.
const JUNK_PURPOSE: &str = "sintra-sim/invalid-crypto";

/// A cryptographic value found in an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A G1 point (a signature share's point or a signature) at this offset.
    BlsPoint(usize),
    /// A coin share of the sender at this offset.
    CoinShare(usize),
}

fn find(bytes: &[u8], sender: ServerId) -> Vec<Found> {
    let mut found = Vec::new();
    let id = sender.get().to_be_bytes();
    let mut i = 0;
    while i + COIN_SHARE_BYTES <= bytes.len() {
        if bytes[i..i + 2] == id && CoinShare::from_bytes(&bytes[i..i + COIN_SHARE_BYTES]).is_ok() {
            found.push(Found::CoinShare(i));
            i += COIN_SHARE_BYTES;
        } else {
            i += 1;
        }
    }
    let inside_coin_share = |at: usize| {
        found.iter().any(|f| match f {
            Found::CoinShare(start) => at < start + COIN_SHARE_BYTES && at + 48 > *start,
            Found::BlsPoint(_) => false,
        })
    };
    let mut points = Vec::new();
    let mut i = 0;
    while i + ENCODED_SIGNATURE_BYTES <= bytes.len() {
        if bytes[i] & 0xe0 == 0x80
            && !inside_coin_share(i)
            && Signature::from_bytes(&bytes[i..i + ENCODED_SIGNATURE_BYTES]).is_ok()
        {
            points.push(Found::BlsPoint(i));
            i += ENCODED_SIGNATURE_BYTES;
        } else {
            i += 1;
        }
    }
    found.extend(points);
    found
}

/// `bytes` with one signature, signature share or coin share of `keys.id` replaced by a
/// well-formed wrong one; `None` if the message carries none.
pub fn corrupt(bytes: &[u8], keys: &ServerKeys, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
    let found = find(bytes, keys.id);
    if found.is_empty() {
        return None;
    }
    let junk: [u8; 16] = rng.r#gen();
    let context = Context::new(JUNK_PURPOSE, &junk);
    let mut out = bytes.to_vec();
    match found[rng.gen_range(0..found.len())] {
        Found::BlsPoint(at) => {
            // A share's encoding is the id and the point: keep the point.
            let share = keys.agreement.sign(&context, b"junk").to_bytes();
            let point = &share[share.len() - ENCODED_SIGNATURE_BYTES..];
            out[at..at + ENCODED_SIGNATURE_BYTES].copy_from_slice(point);
        }
        Found::CoinShare(at) => {
            let share = keys.coin.share(&context, rng).to_bytes();
            out[at..at + COIN_SHARE_BYTES].copy_from_slice(&share);
        }
    }
    (out != bytes).then_some(out)
}

#[cfg(test)]
mod tests {
    use sintra_crypto::dealer::GroupParameters;
    use sintra_crypto::encoding::put_bytes;

    use super::*;
    use crate::keys::{KeySource, keys};

    #[test]
    fn finds_and_replaces_shares_signatures_and_coin_shares() {
        let dealt = keys(GroupParameters::new(4, None).unwrap(), KeySource::Cached, 0);
        let me = &dealt.servers[1];
        let context = Context::new("test", b"instance");
        let share = me.agreement.sign(&context, b"statement");
        let mut rng: ChaCha20Rng = rand::SeedableRng::seed_from_u64(1);
        let coin = me.coin.share(&context, &mut rng);
        let mut message = vec![7u8; 5];
        put_bytes(&mut message, b"some body bytes");
        share.encode_to(&mut message);
        coin.encode_to(&mut message);
        message.extend_from_slice(&[1, 2, 3]);

        let found = find(&message, me.id);
        assert_eq!(found.len(), 2, "{found:?}");
        for _ in 0..8 {
            let corrupted = corrupt(&message, me, &mut rng).expect("something to corrupt");
            assert_eq!(corrupted.len(), message.len());
            let changed: Vec<usize> = (0..message.len())
                .filter(|i| corrupted[*i] != message[*i])
                .collect();
            let first = changed[0];
            let last = changed[changed.len() - 1];
            // Exactly one of the two values changed, and it still decodes.
            let share_at = 5 + 4 + 15;
            let coin_at = share_at + 50;
            if first < coin_at {
                assert!(first >= share_at + 2 && last < coin_at);
                assert!(Signature::from_bytes(&corrupted[share_at + 2..coin_at]).is_ok());
            } else {
                assert!(last < coin_at + COIN_SHARE_BYTES);
                assert!(CoinShare::from_bytes(&corrupted[coin_at..coin_at + 130]).is_ok());
            }
        }
        assert_eq!(corrupt(b"no crypto in here at all", me, &mut rng), None);
    }
}
