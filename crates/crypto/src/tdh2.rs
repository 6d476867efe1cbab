//! TDH2, the labelled threshold cryptosystem of Shoup and Gennaro ("Securing threshold
//! cryptosystems against chosen ciphertext attack", EUROCRYPT 1998 / J. Cryptology 2002, §4),
//! on ristretto255, as a hybrid scheme with ChaCha20-Poly1305.
//!
//! Guarantees, for a key dealt with threshold `k = t + 1`:
//! - *Chosen-ciphertext security* (random-oracle model, CDH/DDH): nothing about a plaintext
//!   leaks until `k` servers released decryption shares for its ciphertext *under its label*,
//!   even when the adversary obtains shares for any other ciphertext or label.
//! - *Public validity*: anyone can check that a ciphertext is well formed
//!   ([`PublicKey::verify_ciphertext`]); honest servers release shares only for valid ones.
//!   The label is an input of the check, not a part of the ciphertext, so a ciphertext cannot
//!   be presented under another label (another protocol instance, another purpose).
//! - *Robustness*: each decryption share carries a proof; a bad one is attributed to its sender.
//!
//! Scheme (`g` the ristretto255 base point, `ḡ` a second generator hashed from a fixed string,
//! so nobody knows `log_g ḡ`; `h = g^x`; `h_i = g^{x_i}`):
//! - encrypt `m` under label `L`: random `r, s`; `K = KDF(h^r, u, L)`; `c = AEAD_K(m)`;
//!   `u = g^r, w = g^s, ū = ḡ^r, w̄ = ḡ^s`; `e = H(L, u, w, ū, w̄, c)`; `f = s + r·e`.
//!   Ciphertext `(c, u, ū, e, f)`.
//! - valid iff `e = H(L, u, g^f/u^e, ū, ḡ^f/ū^e, c)` (a proof of knowledge of `r`, which is
//!   what makes the scheme CCA-secure: a ciphertext cannot be mauled into another valid one).
//! - decryption share of server `i`: `u_i = u^{x_i}` with a proof that `log_u u_i = log_g h_i`.
//! - combine `k` valid shares: `h^r = Π u_i^{λ_i}`, then `K`, then open the AEAD.
//!
//! Shares are verified before they are combined (in one batch): the AEAD tag is no substitute,
//! because ChaCha20-Poly1305 is not key-committing and a colluding encryptor could make a bad
//! share open the ciphertext to a second, different plaintext.
//!
//! The AEAD uses the all-zero nonce: `K` depends on the fresh `h^r` of this one encryption, so
//! each key encrypts exactly one message and a (key, nonce) pair never repeats.
//! The design page is `docs/crypto/tdh2.md`.

use std::sync::OnceLock;

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use curve25519_dalek::Scalar;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{
    RistrettoBasepointTable, RistrettoPoint, VartimeRistrettoPrecomputation,
};
use curve25519_dalek::traits::{VartimeMultiscalarMul, VartimePrecomputedMultiscalarMul};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use crate::ristretto::{
    self, Claim, Element, KeySet, Proof, SecretShare, decode_scalar, encode_scalar, hash_to_scalar,
};
use crate::shamir::{check_share_ids, lagrange_at_zero};
use crate::{CombineError, Combined, Context, CryptoError, ServerId};

/// The longest plaintext [`PublicKey::encrypt`] accepts (4 MiB).
pub const PLAINTEXT_BYTES_MAX: usize = 4 << 20;

/// Bytes the AEAD adds to a plaintext (the Poly1305 tag).
pub const TAG_BYTES: usize = 16;

/// Bytes of an encoded [`DecryptionShare`]: `id | u_i | A | Â | z`.
pub const DECRYPTION_SHARE_BYTES: usize = 2 + 32 + 96;

/// Scheme tags, bound with the label by [`Context::bind`] or used as hash domains.
const TAG_KEY: &str = "tdh2/key";
const TAG_CIPHERTEXT_PROOF: &str = "tdh2/ciphertext-proof";
const TAG_SHARE_PROOF: &str = "tdh2/share-proof";

/// The input hashed to `ḡ`: a fixed string, so that `ḡ` is a nothing-up-my-sleeve generator
/// whose discrete logarithm to `g` nobody knows.
const SECOND_GENERATOR_SEED: &[u8] = b"sintra/v1 tdh2 second generator g-bar for ristretto255";

/// A server's share of the decryption key. Zeroized on drop; `Debug` shows only the id.
///
/// Encoding: `id: u16 | x_i: 32` (34 bytes).
#[derive(Debug)]
pub struct SecretKeyShare(SecretShare);

/// The encryption key and the share verification keys: threshold `k`, group size `n`, `h = g^x`
/// and `h_i = g^{x_i}`. `ḡ` is a global constant, not part of the key. Decoding checks that the
/// keys are consistent (on one polynomial of degree `k - 1`).
///
/// Encoding: `k: u16 | n: u16 | h: 32 | h_1..h_n: n × 32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(KeySet);

/// A TDH2 ciphertext. Its label is not stored: whoever checks or decrypts it says which label
/// it is expected to carry, and any other label makes it invalid.
///
/// Encoding: `u: 32 | ū: 32 | e: 32 | f: 32 | c: u32 length + bytes`, where
/// `TAG_BYTES <= |c| <= PLAINTEXT_BYTES_MAX + TAG_BYTES`.
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext {
    u: Element,
    u_bar: Element,
    e: Scalar,
    f: Scalar,
    sealed: Vec<u8>,
}

/// One server's decryption share of one ciphertext: `u_i = u^{x_i}` and its proof.
///
/// Encoding ([`DECRYPTION_SHARE_BYTES`]): `id: u16 | u_i: 32 | A: 32 | Â: 32 | z: 32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptionShare {
    id: ServerId,
    value: Element,
    proof: Proof,
}

/// `ḡ` with its tables, computed once: one for constant-time fixed-base multiplication
/// (encryption, secret scalars) and one for variable-time checks (public scalars).
struct SecondGenerator {
    table: RistrettoBasepointTable,
    precomputation: VartimeRistrettoPrecomputation,
}

fn second_generator() -> &'static SecondGenerator {
    static GENERATOR: OnceLock<SecondGenerator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        let point = RistrettoPoint::hash_from_bytes::<Sha512>(SECOND_GENERATOR_SEED);
        SecondGenerator {
            table: RistrettoBasepointTable::create(&point),
            precomputation: VartimeRistrettoPrecomputation::new([point]),
        }
    })
}

/// Deals a TDH2 key for `n` servers, any `k` of which decrypt.
/// `InvalidParameters` unless `1 <= k <= n <= SERVERS_MAX`.
pub fn deal(
    k: usize,
    n: usize,
    rng: &mut (impl CryptoRngCore + ?Sized),
) -> Result<(PublicKey, Vec<SecretKeyShare>), CryptoError> {
    let (key_set, shares) = ristretto::deal(k, n, rng)?;
    Ok((
        PublicKey(key_set),
        shares.into_iter().map(SecretKeyShare).collect(),
    ))
}

/// `K = SHA-512(L, u, h^r)[..32]`, the one-time AEAD key.
fn data_key(label: &Context, u: &Element, shared: &Element) -> [u8; 32] {
    let mut payload = [0u8; 64];
    payload[..32].copy_from_slice(u.as_bytes());
    payload[32..].copy_from_slice(shared.as_bytes());
    let mut input = label.bind(TAG_KEY, &payload);
    let mut digest: [u8; 64] = Sha512::digest(&input).into();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest[..32]);
    payload.zeroize();
    input.zeroize();
    digest.zeroize();
    key
}

/// The ciphertext's challenge `e = H(L, u, w, ū, w̄, c)`.
fn ciphertext_challenge(
    label: &Context,
    u: &Element,
    w: &Element,
    u_bar: &Element,
    w_bar: &Element,
    sealed: &[u8],
) -> Scalar {
    hash_to_scalar(
        TAG_CIPHERTEXT_PROOF,
        &[
            &label.bind(TAG_CIPHERTEXT_PROOF, b""),
            u.as_bytes(),
            w.as_bytes(),
            u_bar.as_bytes(),
            w_bar.as_bytes(),
            sealed,
        ],
    )
}

/// The domain of the share proofs for one ciphertext: its label and its challenge `e`, which
/// is a hash of the whole ciphertext, so a share is bound to exactly one (ciphertext, label).
fn share_domain(label: &Context, ciphertext: &Ciphertext) -> Vec<u8> {
    label.bind(TAG_SHARE_PROOF, ciphertext.e.as_bytes())
}

/// The public validity check of `ciphertext` under `label`, shared by the key holders (who have
/// no [`PublicKey`] at hand) and everyone else. Two double-base multiplications, variable time
/// (all inputs are public).
fn check_ciphertext(label: &Context, ciphertext: &Ciphertext) -> Result<(), CryptoError> {
    let minus_e = -ciphertext.e;
    // w = g^f · u^{-e}, w̄ = ḡ^f · ū^{-e}
    let w = RistrettoPoint::vartime_double_scalar_mul_basepoint(
        &minus_e,
        ciphertext.u.point(),
        &ciphertext.f,
    );
    let w_bar = second_generator()
        .precomputation
        .vartime_mixed_multiscalar_mul([ciphertext.f], [minus_e], [*ciphertext.u_bar.point()]);
    let e = ciphertext_challenge(
        label,
        &ciphertext.u,
        &Element::new(w),
        &ciphertext.u_bar,
        &Element::new(w_bar),
        &ciphertext.sealed,
    );
    if e == ciphertext.e {
        Ok(())
    } else {
        Err(CryptoError::InvalidCiphertext)
    }
}

impl PublicKey {
    /// `k`: how many shares decrypt.
    pub fn threshold(&self) -> usize {
        self.0.threshold()
    }

    /// `n`: the number of servers.
    pub fn servers(&self) -> u16 {
        self.0.servers()
    }

    /// Encrypts `plaintext` under `label`. Only servers asked to decrypt under the same label
    /// will release shares. `InvalidParameters` for a plaintext above [`PLAINTEXT_BYTES_MAX`].
    pub fn encrypt(
        &self,
        label: &Context,
        plaintext: &[u8],
        rng: &mut (impl CryptoRngCore + ?Sized),
    ) -> Result<Ciphertext, CryptoError> {
        if plaintext.len() > PLAINTEXT_BYTES_MAX {
            return Err(CryptoError::InvalidParameters(format!(
                "plaintext of {} bytes exceeds the maximum {PLAINTEXT_BYTES_MAX}",
                plaintext.len()
            )));
        }
        let g_bar_table = &second_generator().table;
        let mut r = Scalar::random(rng);
        if r == Scalar::ZERO {
            // Only a broken generator gets here; a zero r would publish the data key.
            return Err(CryptoError::InvalidParameters(
                "the random number generator produced zero".into(),
            ));
        }
        let mut s = Scalar::random(rng);
        let u = Element::new(RISTRETTO_BASEPOINT_TABLE * &r);
        let u_bar = Element::new(g_bar_table * &r);
        let shared = Element::new(self.0.public_key().point() * r);
        let mut key = data_key(label, &u, &shared);
        let sealed = ChaCha20Poly1305::new(&Key::from(key))
            .encrypt(&Nonce::default(), plaintext)
            .map_err(|_| CryptoError::InvalidParameters("plaintext too long for the AEAD".into()));
        key.zeroize();
        let sealed = sealed?;
        let w = Element::new(RISTRETTO_BASEPOINT_TABLE * &s);
        let w_bar = Element::new(g_bar_table * &s);
        let e = ciphertext_challenge(label, &u, &w, &u_bar, &w_bar, &sealed);
        let f = s + r * e;
        r.zeroize();
        s.zeroize();
        Ok(Ciphertext {
            u,
            u_bar,
            e,
            f,
            sealed,
        })
    }

    /// The public validity check: `Ok` exactly when `ciphertext` was made by someone who knows
    /// its randomness, *for this label*. `InvalidCiphertext` otherwise, including for a valid
    /// ciphertext presented under another label.
    pub fn verify_ciphertext(
        &self,
        label: &Context,
        ciphertext: &Ciphertext,
    ) -> Result<(), CryptoError> {
        check_ciphertext(label, ciphertext)
    }

    fn claim<'a>(&'a self, share: &'a DecryptionShare) -> Option<Claim<'a>> {
        Some(Claim {
            key: self.0.verification_key(share.id)?,
            value: &share.value,
            proof: &share.proof,
        })
    }

    /// Checks one decryption share of `ciphertext` under `label` on its own: `UnknownServer`
    /// for a sender outside the group, `InvalidShare(id)` for a wrong value or proof (including
    /// a share for another ciphertext or label, or from another key). Does not re-check the
    /// ciphertext itself ([`Self::combine`] does).
    pub fn verify_share(
        &self,
        label: &Context,
        ciphertext: &Ciphertext,
        share: &DecryptionShare,
    ) -> Result<(), CryptoError> {
        let claim = self
            .claim(share)
            .ok_or(CryptoError::UnknownServer(share.id))?;
        if ristretto::verify_batch(&share_domain(label, ciphertext), &ciphertext.u, &[claim]) {
            Ok(())
        } else {
            Err(CryptoError::InvalidShare(share.id))
        }
    }

    /// Decrypts `ciphertext` under `label` from at least `k` decryption shares from distinct
    /// members.
    ///
    /// Checks the share set (`NotEnoughShares`, `DuplicateShare`, `UnknownServer`), then the
    /// ciphertext (`Crypto(InvalidCiphertext)`), then the first `k` shares in one batch; if the
    /// batch fails, shares one by one until `k` are valid, naming the invalid ones met in
    /// `faulty` (`NotEnoughValidShares` if fewer than `k` are valid). Finally opens the AEAD; if
    /// that fails the encryptor sealed garbage under a valid proof, and every honest server
    /// gets the same `Crypto(InvalidCiphertext)`.
    pub fn combine(
        &self,
        label: &Context,
        ciphertext: &Ciphertext,
        shares: &[DecryptionShare],
    ) -> Result<Combined<Vec<u8>>, CombineError> {
        let ids: Vec<ServerId> = shares.iter().map(DecryptionShare::id).collect();
        check_share_ids(&ids, self.threshold(), self.servers())?;
        check_ciphertext(label, ciphertext)?;
        let domain = share_domain(label, ciphertext);
        let (valid, faulty) = ristretto::select_valid(
            shares,
            self.threshold(),
            DecryptionShare::id,
            |batch: &[&DecryptionShare]| {
                // Membership was checked above, so every share has a verification key.
                let claims: Option<Vec<Claim<'_>>> =
                    batch.iter().map(|share| self.claim(share)).collect();
                claims
                    .is_some_and(|claims| ristretto::verify_batch(&domain, &ciphertext.u, &claims))
            },
        )?;
        let ids: Vec<ServerId> = valid.iter().map(|share| share.id).collect();
        let lambdas = lagrange_at_zero::<Scalar>(&ids);
        let shared = Element::new(RistrettoPoint::vartime_multiscalar_mul(
            lambdas,
            valid.iter().map(|share| *share.value.point()),
        ));
        let mut key = data_key(label, &ciphertext.u, &shared);
        let plaintext = ChaCha20Poly1305::new(&Key::from(key))
            .decrypt(&Nonce::default(), ciphertext.sealed.as_slice());
        key.zeroize();
        let plaintext = plaintext.map_err(|_| CryptoError::InvalidCiphertext)?;
        Ok(Combined {
            value: plaintext,
            faulty,
        })
    }
}

impl SecretKeyShare {
    /// The server holding this share.
    pub fn id(&self) -> ServerId {
        self.0.id()
    }

    /// This server's decryption share of `ciphertext` under `label`, with its proof.
    /// `InvalidCiphertext` if the ciphertext is not valid under this label: releasing a share
    /// of an invalid ciphertext would void the chosen-ciphertext security.
    pub fn decryption_share(
        &self,
        label: &Context,
        ciphertext: &Ciphertext,
        rng: &mut (impl CryptoRngCore + ?Sized),
    ) -> Result<DecryptionShare, CryptoError> {
        check_ciphertext(label, ciphertext)?;
        let value = Element::new(ciphertext.u.point() * self.0.secret());
        let proof = ristretto::prove(
            &share_domain(label, ciphertext),
            &ciphertext.u,
            self.0.verification_key(),
            &value,
            self.0.secret(),
            rng,
        );
        Ok(DecryptionShare {
            id: self.id(),
            value,
            proof,
        })
    }
}

impl Zeroize for SecretKeyShare {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKeyShare {}

impl DecryptionShare {
    /// Whether `other` is the same server's share with the same value: the value `u_i` of a
    /// ciphertext's share is deterministic, only the proof is randomised, so a share made
    /// again (after a restart) is this share with another valid proof.
    pub fn same_value(&self, other: &DecryptionShare) -> bool {
        self.id == other.id && self.value == other.value
    }

    /// The server that produced this share.
    pub fn id(&self) -> ServerId {
        self.id
    }
}

impl Ciphertext {
    /// Length of the sealed plaintext (plaintext plus [`TAG_BYTES`]).
    pub fn sealed_len(&self) -> usize {
        self.sealed.len()
    }
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ciphertext")
            .field("u", &self.u)
            .field("u_bar", &self.u_bar)
            .field("e", &hex::encode(self.e.as_bytes()))
            .field("f", &hex::encode(self.f.as_bytes()))
            .field("sealed_bytes", &self.sealed.len())
            .finish()
    }
}

impl Encode for SecretKeyShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
    }
}

impl Decode for SecretKeyShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        SecretShare::decode_from(reader).map(Self)
    }
}

impl Encode for PublicKey {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
    }
}

impl Decode for PublicKey {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        KeySet::decode_from(reader).map(Self)
    }
}

impl Encode for Ciphertext {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.u.encode_to(out);
        self.u_bar.encode_to(out);
        encode_scalar(&self.e, out);
        encode_scalar(&self.f, out);
        put_bytes(out, &self.sealed);
    }
}

impl Decode for Ciphertext {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let u = Element::decode_non_identity(reader, "ciphertext u")?;
        let u_bar = Element::decode_non_identity(reader, "ciphertext u-bar")?;
        let e = decode_scalar(reader, "ciphertext e")?;
        let f = decode_scalar(reader, "ciphertext f")?;
        let sealed = reader.bytes("sealed plaintext", PLAINTEXT_BYTES_MAX + TAG_BYTES)?;
        if sealed.len() < TAG_BYTES {
            return Err(DecodeError::Invalid {
                what: "sealed plaintext",
                why: "shorter than the authentication tag",
            });
        }
        Ok(Self {
            u,
            u_bar,
            e,
            f,
            sealed: sealed.to_vec(),
        })
    }
}

impl Encode for DecryptionShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        self.value.encode_to(out);
        self.proof.encode_to(out);
    }
}

impl Decode for DecryptionShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ServerId::decode_from(reader)?,
            value: Element::decode_non_identity(reader, "decryption share")?,
            proof: Proof::decode(reader)?,
        })
    }
}

crate::impl_serde_via_encoding!(SecretKeyShare, PublicKey, Ciphertext, DecryptionShare);

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// A ciphertext whose proof is valid (its maker knows `r`) but whose sealed bytes were not
    /// made under the derived key: the public check passes, servers release shares, and every
    /// combiner gets the same `InvalidCiphertext` from the AEAD.
    #[test]
    fn a_valid_proof_over_garbage_fails_at_the_aead_for_everyone() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (public, secrets) = deal(2, 4, &mut rng).unwrap();
        let label = Context::new("test", b"garbage");
        let g_bar_table = &second_generator().table;
        let r = Scalar::random(&mut rng);
        let s = Scalar::random(&mut rng);
        let u = Element::new(RISTRETTO_BASEPOINT_TABLE * &r);
        let u_bar = Element::new(g_bar_table * &r);
        let w = Element::new(RISTRETTO_BASEPOINT_TABLE * &s);
        let w_bar = Element::new(g_bar_table * &s);
        let sealed = vec![0x42u8; 40];
        let e = ciphertext_challenge(&label, &u, &w, &u_bar, &w_bar, &sealed);
        let ciphertext = Ciphertext {
            u,
            u_bar,
            e,
            f: s + r * e,
            sealed,
        };
        assert_eq!(public.verify_ciphertext(&label, &ciphertext), Ok(()));
        let shares: Vec<DecryptionShare> = secrets
            .iter()
            .map(|secret| {
                secret
                    .decryption_share(&label, &ciphertext, &mut rng)
                    .unwrap()
            })
            .collect();
        for subset in [&shares[..2], &shares[2..]] {
            assert_eq!(
                public.combine(&label, &ciphertext, subset),
                Err(CombineError::Crypto(CryptoError::InvalidCiphertext))
            );
        }
    }
}
