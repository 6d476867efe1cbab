//! Signature shares and their optimistic combination (Shoup, §2.2 and §2.3).
//!
//! Share of server `i` on `x`: `x_i = x^{2Δs_i}`, a constant-time exponentiation with the
//! precomputed secret exponent `2Δs_i` over a public bound of bits. Combining `k` shares of the
//! set `S`: `w = Π x_i^{2λ_i}` with the integer coefficients `λ_i = Δ·Π_{j≠i} j/(j-i)`, so that
//! `w^e = x^{e'}` with `e' = 4Δ²`; then `y = w^a x^b` for `e'a + eb = 1` satisfies `y^e = x`.
//! [`PublicKey::combine`] checks that last equation once and names nobody; the proofs
//! ([`super::proof`]) are asked for only when it fails.

use crypto_bigint::modular::BoxedMontyForm;
use crypto_bigint::{BoxedUint, ConcatenatingMul, CtEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::arith::{
    self, div_exact, factorial, factorial_mod, from_be, mul, mul_small, multi_pow_vartime,
    pow_mod_u64, pow_secret, resize_secret, to_be_fixed,
};
use super::{
    MODULUS_BITS_MAX, MODULUS_BITS_MIN, MODULUS_BYTES_MAX, PUBLIC_EXPONENT, PublicKey, Signature,
};
use crate::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use crate::{CombineError, CryptoError, SERVERS_MAX, ServerId, shamir};

/// The secret key share of one server: its id, `s_i = f(i)` and the precomputed exponent
/// `2Δs_i` (`Δ = n!`). Zeroized on drop; `Debug` does not print the secret.
///
/// Encoding: `id: u16 ‖ n: u16 ‖ modulus_bits: u32 ‖ s_i` with `s_i` big-endian in
/// `ceil(modulus_bits / 8)` bytes, `s_i < 2^{modulus_bits-2}` (it is below `m < N/4`). The
/// exponent is recomputed on decoding, so it can never disagree with `s_i`.
#[derive(Clone)]
pub struct SecretKeyShare {
    id: ServerId,
    servers: u16,
    modulus_bits: u32,
    secret: BoxedUint,
    exponent: BoxedUint,
}

impl SecretKeyShare {
    /// The share of server `id` in a group of `servers`, with `s_i = secret`.
    pub(super) fn new(id: ServerId, servers: u16, modulus_bits: u32, secret: BoxedUint) -> Self {
        let exponent_bits = exponent_bits_max(modulus_bits, servers);
        let two_delta = mul_small(&factorial(servers), 2);
        let exponent = resize_secret(secret.concatenating_mul(&two_delta), exponent_bits);
        Self {
            id,
            servers,
            modulus_bits,
            secret: resize_secret(secret, modulus_bits),
            exponent,
        }
    }

    /// The server this share belongs to.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// `s_i` (for the proof of correctness).
    pub(super) fn secret(&self) -> &BoxedUint {
        &self.secret
    }

    /// The group size `n` this share was dealt for.
    pub(super) fn servers(&self) -> u16 {
        self.servers
    }

    /// This server's signature share on `message` (hashed with SHA-256), without a proof.
    /// Uses `public` for the modulus; a share of another key yields an invalid share, which
    /// combining detects.
    pub fn sign(&self, public: &PublicKey, message: &[u8]) -> SignatureShare {
        self.sign_digest(public, &super::sha256(message))
    }

    /// This server's signature share on a SHA-256 `digest` the caller computed: `x^{2Δs_i}`
    /// with `x = EMSA-PKCS1-v1_5(digest)`. Constant time in `s_i`.
    pub fn sign_digest(&self, public: &PublicKey, digest: &[u8; 32]) -> SignatureShare {
        let x = public.encoded_digest(digest);
        let value = pow_secret(
            &x,
            &self.exponent,
            exponent_bits_max(self.modulus_bits, self.servers),
        );
        SignatureShare {
            id: self.id,
            value: to_be_fixed(&value.retrieve(), public.modulus_bytes()),
        }
    }
}

/// A public bound on the bits of `2Δs_i`: `s_i < 2^{modulus_bits-2}` and `2Δ < 2^{bits(Δ)+1}`.
/// The signing loop always runs over this many bits, whatever `s_i` is.
pub(super) fn exponent_bits_max(modulus_bits: u32, servers: u16) -> u32 {
    modulus_bits - 1 + factorial(servers).bits_vartime()
}

impl std::fmt::Debug for SecretKeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeyShare")
            .field("id", &self.id)
            .field("servers", &self.servers)
            .field("modulus_bits", &self.modulus_bits)
            .field("secret", &"<secret>")
            .finish()
    }
}

impl PartialEq for SecretKeyShare {
    /// Constant time in the secrets.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.servers == other.servers
            && self.modulus_bits == other.modulus_bits
            && self.secret.bits_precision() == other.secret.bits_precision()
            && bool::from(self.secret.ct_eq(&other.secret))
    }
}

impl Eq for SecretKeyShare {}

impl Zeroize for SecretKeyShare {
    fn zeroize(&mut self) {
        self.secret.zeroize();
        self.exponent.zeroize();
    }
}

impl Drop for SecretKeyShare {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKeyShare {}

impl Encode for SecretKeyShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        out.extend_from_slice(&self.servers.to_be_bytes());
        out.extend_from_slice(&self.modulus_bits.to_be_bytes());
        let bytes = zeroize::Zeroizing::new(to_be_fixed(
            &self.secret,
            self.modulus_bits.div_ceil(8) as usize,
        ));
        out.extend_from_slice(&bytes);
    }
}

impl Decode for SecretKeyShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = ServerId::decode_from(reader)?;
        let servers = reader.u16()?;
        if servers == 0 || servers > SERVERS_MAX || !id.is_member_of(servers) {
            return Err(DecodeError::Invalid {
                what: "RSA key share",
                why: "server id outside the group, or group size outside 1..=1024",
            });
        }
        let modulus_bits = reader.u32()?;
        if !(MODULUS_BITS_MIN..=MODULUS_BITS_MAX).contains(&modulus_bits) {
            return Err(DecodeError::Invalid {
                what: "RSA key share",
                why: "modulus size outside 1024..=4096 bits",
            });
        }
        let bytes = reader.take(modulus_bits.div_ceil(8) as usize)?;
        // s_i < m < N/4 < 2^{modulus_bits-2}. The shift by a public amount and the zero test
        // are constant time in s_i (`from_be` would scan its bit length in variable time).
        // Every bit of the bytes is read (precision = 8 × their count), so that bits above
        // `modulus_bits` in the top byte are refused, not dropped: one share, one encoding.
        let secret = BoxedUint::from_be_slice(bytes, 8 * bytes.len() as u32)
            .ok()
            .filter(|s| s.unbounded_shr_vartime(modulus_bits - 2).is_zero().into())
            .ok_or(DecodeError::Invalid {
                what: "RSA key share",
                why: "s_i is not below 2^(modulus_bits-2)",
            })?;
        Ok(Self::new(id, servers, modulus_bits, secret))
    }
}

/// One server's signature share `x_i = x^{2Δs_i} mod N`.
///
/// Encoding: `id: u16 ‖ len: u32 ‖ x_i` (big-endian, `1 <= len <= 512`). Decoding bounds the
/// length only; [`PublicKey::check_share_range`] checks `len` is the modulus length and
/// `0 < x_i < N` against a key (every combine does).
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureShare {
    id: ServerId,
    value: Vec<u8>,
}

impl SignatureShare {
    /// The server that made this share.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// `x_i` as big-endian bytes (the modulus length for a well-formed share).
    pub fn value_be_bytes(&self) -> &[u8] {
        &self.value
    }

    /// A share from its parts (for transports that carry the fields separately, and for tests).
    pub fn from_parts(id: ServerId, value_be: Vec<u8>) -> Result<Self, CryptoError> {
        if value_be.is_empty() || value_be.len() > MODULUS_BYTES_MAX {
            return Err(DecodeError::Invalid {
                what: "RSA signature share",
                why: "length outside 1..=512 bytes",
            }
            .into());
        }
        Ok(Self {
            id,
            value: value_be,
        })
    }
}

impl std::fmt::Debug for SignatureShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureShare")
            .field("id", &self.id)
            .field("value", &hex::encode(&self.value))
            .finish()
    }
}

impl Encode for SignatureShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        put_bytes(out, &self.value);
    }
}

impl Decode for SignatureShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = ServerId::decode_from(reader)?;
        let value = reader.bytes("RSA signature share", MODULUS_BYTES_MAX)?;
        if value.is_empty() {
            return Err(DecodeError::Invalid {
                what: "RSA signature share",
                why: "empty",
            });
        }
        Ok(Self {
            id,
            value: value.to_vec(),
        })
    }
}

/// Shoup's integer Lagrange coefficients at zero, scaled by `Δ` so they are integers:
/// `λ_i = Δ·Π_{j∈S, j≠i} j/(j-i)`, as (magnitude, negative) pairs in the order of `ids`.
///
/// `Π_{j≠i} |j-i|` divides `(i-1)!(n-i)!`, which divides `n! = Δ`, so the quotient is exact.
pub(super) fn integer_lagrange_at_zero(ids: &[ServerId], servers: u16) -> Vec<(BoxedUint, bool)> {
    let delta = factorial(servers);
    ids.iter()
        .map(|i| {
            let i = u64::from(i.get());
            let others = ids.iter().map(|j| u64::from(j.get())).filter(|j| *j != i);
            let denominator = others
                .clone()
                .fold(BoxedUint::one(), |acc, j| mul_small(&acc, j.abs_diff(i)));
            let numerator = others
                .clone()
                .fold(BoxedUint::one(), |acc, j| mul_small(&acc, j));
            let negative = others.filter(|j| *j < i).count() % 2 == 1;
            // The division is exact by the lemma above; `None` would be a bug, not a fault.
            let quotient = div_exact(&delta, &denominator).unwrap_or_else(BoxedUint::one);
            (mul(&quotient, &numerator), negative)
        })
        .collect()
}

impl PublicKey {
    /// Checks a share against this key: its length is the modulus length and `0 < x_i < N`.
    /// A share that fails is its sender's fault ([`CryptoError::InvalidShare`]).
    pub fn check_share_range(&self, share: &SignatureShare) -> Result<(), CryptoError> {
        self.share_value(share).map(|_| ())
    }

    /// `x_i` in Montgomery form, after [`Self::check_share_range`]'s checks.
    pub(super) fn share_value(
        &self,
        share: &SignatureShare,
    ) -> Result<BoxedMontyForm, CryptoError> {
        let invalid = CryptoError::InvalidShare(share.id);
        if share.value.len() != self.modulus_bytes() {
            return Err(invalid);
        }
        let value = from_be(&share.value, self.modulus_bits()).ok_or(invalid.clone())?;
        if bool::from(value.is_zero()) || value >= *self.modulus() {
            return Err(invalid);
        }
        Ok(self.to_monty(value))
    }

    /// Combines `k` signature shares on `message` into the group's signature, optimistically:
    /// no proof is checked, only the result (`y^e = x`). Uses the first `k` shares.
    ///
    /// Errors: `NotEnoughShares`, `DuplicateShare`, `UnknownServer` name the misuse;
    /// `Crypto(InvalidShare(id))` names a share that is out of range or not invertible;
    /// `Crypto(InvalidSignature)` means some share is wrong and nobody can tell which without
    /// proofs: ask the senders for proofs and call [`Self::combine_with_proofs`].
    pub fn combine(
        &self,
        message: &[u8],
        shares: &[SignatureShare],
    ) -> Result<Signature, CombineError> {
        self.combine_digest(&super::sha256(message), shares)
    }

    /// [`Self::combine`] for a SHA-256 `digest` the caller computed.
    pub fn combine_digest(
        &self,
        digest: &[u8; 32],
        shares: &[SignatureShare],
    ) -> Result<Signature, CombineError> {
        let ids: Vec<ServerId> = shares.iter().map(|share| share.id).collect();
        shamir::check_share_ids(&ids, self.threshold(), self.servers())?;
        let chosen = shares.get(..self.threshold()).unwrap_or(shares);
        let values = chosen
            .iter()
            .map(|share| self.share_value(share).map(|value| (share.id, value)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.combine_values(digest, &values)?)
    }

    /// Combines exactly `k` range-checked shares and checks `y^e = x`.
    pub(super) fn combine_values(
        &self,
        digest: &[u8; 32],
        shares: &[(ServerId, BoxedMontyForm)],
    ) -> Result<Signature, CryptoError> {
        let ids: Vec<ServerId> = shares.iter().map(|(id, _)| *id).collect();
        let lambdas = integer_lagrange_at_zero(&ids, self.servers());

        // w = Π x_i^{2λ_i}; a negative λ_i raises the inverse of x_i instead.
        let mut bases = Vec::with_capacity(shares.len());
        let mut exponents = Vec::with_capacity(shares.len());
        for ((id, value), (magnitude, negative)) in shares.iter().zip(&lambdas) {
            let base = if *negative {
                Option::from(value.invert_vartime()).ok_or(CryptoError::InvalidShare(*id))?
            } else {
                value.clone()
            };
            bases.push(base);
            exponents.push(mul_small(magnitude, 2));
        }
        let terms: Vec<_> = bases.iter().zip(&exponents).collect();
        let w = multi_pow_vartime(self.params(), &terms);

        // e' = 4Δ² and e are coprime (e is a prime above n). a = e'^-1 mod e > 0, and
        // b = -(e'a - 1)/e < 0, so y = w^a · (x^-1)^{(e'a - 1)/e}.
        let e = u64::from(PUBLIC_EXPONENT);
        let delta_mod_e = factorial_mod(self.servers(), e);
        let e_prime_mod_e =
            arith::mul_mod_u64(4, arith::mul_mod_u64(delta_mod_e, delta_mod_e, e), e);
        let a = pow_mod_u64(e_prime_mod_e, e - 2, e);
        let delta = factorial(self.servers());
        let e_prime = mul_small(&mul(&delta, &delta), 4);
        let e_prime_a = mul_small(&e_prime, a);
        // e'a ≡ 1 (mod e), so e'a - 1 is a multiple of e; e'a >= 4 so the subtraction is safe.
        let e_prime_a_minus_one = e_prime_a.wrapping_sub(BoxedUint::one());
        let b_magnitude = div_exact(&e_prime_a_minus_one, &BoxedUint::from(e))
            .ok_or(CryptoError::InvalidSignature)?;
        let x = self.encoded_digest(digest);
        let x_inverse = Option::from(x.invert_vartime()).ok_or(CryptoError::InvalidSignature)?;
        let a = BoxedUint::from(a);
        let y = multi_pow_vartime(self.params(), &[(&w, &a), (&x_inverse, &b_magnitude)]);

        let signature = Signature(to_be_fixed(&y.retrieve(), self.modulus_bytes()));
        self.verify_digest(digest, &signature)?;
        Ok(signature)
    }
}
