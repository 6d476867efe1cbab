//! Shoup threshold RSA (V. Shoup, "Practical Threshold Signatures", EUROCRYPT 2000), producing
//! ordinary RSASSA-PKCS1-v1_5 signatures with SHA-256 that openssl and every X.509 / CMS client
//! verifies with the one public key.
//!
//! Guarantees: any `k` valid shares combine into the unique signature `y` with `y^e = x`
//! (`x = EMSA-PKCS1-v1_5(SHA-256(M))`); `k - 1` shares reveal nothing about it (§3 of the paper,
//! in the random-oracle model for the proofs, under the RSA assumption); a bad share is detected
//! and, with its proof of correctness (§2.2), attributed to its sender.
//!
//! Parameters (the paper's notation): `N = pq` with safe primes `p = 2p'+1`, `q = 2q'+1`;
//! `m = p'q'`; `e = 65537` (a prime above `n`); `d = e⁻¹ mod m`; `s_i = f(i)` for a random
//! `f` of degree `k-1` over `Z_m` with `f(0) = d`; `Δ = n!`; verification keys `v`, `v_i = v^{s_i}`.
//!
//! Optimistic use: servers send shares without proofs ([`SecretKeyShare::sign`]); the combiner
//! calls [`PublicKey::combine`], which checks only the final signature. When that fails, it asks
//! for proofs ([`SecretKeyShare::prove`]) and calls [`PublicKey::combine_with_proofs`], which
//! names the culprits.
//!
//! Domain separation: the final signature must be a plain PKCS#1 signature over the caller's
//! document (stock verifiers demand it), so nothing is added to what is signed; the [`Context`]
//! is bound into the share proofs instead. Services make their documents self-describing (an
//! RFC 3161 token, a certificate).
//!
//! Big integers: crypto-bigint's boxed integers (pure Rust, constant-time, static builds); see
//! `docs/crypto/rsa.md`.

mod arith;
mod keygen;
mod pkcs1;
mod proof;
mod share;

use crypto_bigint::BoxedUint;
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{Odd, Resize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use crate::{CryptoError, SERVERS_MAX, ServerId, shamir};

pub use keygen::{Primes, deal, generate_primes};
pub use proof::{CHALLENGE_BITS, PROOF_RESPONSE_BYTES_MAX, ShareProof, ZERO_KNOWLEDGE_SLACK_BITS};
pub use share::{SecretKeyShare, SignatureShare};

use arith::{from_be, multi_pow_vartime, precision, to_be_fixed, to_be_minimal};

/// The public exponent `e`, a prime larger than any group size (`SERVERS_MAX = 1024`).
pub const PUBLIC_EXPONENT: u32 = 65537;

/// The modulus sizes for production keys (what `sintra keygen` offers).
pub const MODULUS_BITS_ALLOWED: [u32; 2] = [2048, 3072];

/// The smallest modulus the library accepts (1024 bits: for tests only, too weak for use).
pub const MODULUS_BITS_MIN: u32 = 1024;

/// The largest modulus the library accepts.
pub const MODULUS_BITS_MAX: u32 = 4096;

/// The largest modulus, signature or share in bytes.
pub const MODULUS_BYTES_MAX: usize = (MODULUS_BITS_MAX / 8) as usize;

/// The smallest signature in bytes.
const MODULUS_BYTES_MIN: usize = (MODULUS_BITS_MIN / 8) as usize;

/// SHA-256 of a message: the digest every message-level entry point signs.
fn sha256(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

/// The public key of a group: the RSA key `(N, e)` everyone verifies with, the threshold `k`,
/// the group size `n`, and the verification keys `v`, `v_1..v_n` for the share proofs.
///
/// Encoding: `len: u32 ‖ N` (big-endian, no leading zero byte, 1024..=4096 bits, odd) ‖
/// `e: u32` (65537) ‖ `k: u16` ‖ `n: u16` ‖ `v` ‖ `v_1` … `v_n`, each verification key
/// big-endian in the modulus length and in `1..N`.
#[derive(Clone)]
pub struct PublicKey {
    modulus: BoxedUint,
    threshold: usize,
    servers: u16,
    generator: BoxedUint,
    verification_keys: Vec<BoxedUint>,
    /// Montgomery parameters of `N`, derived from `modulus`.
    params: BoxedMontyParams,
    /// `v` in Montgomery form, derived from `generator`.
    generator_form: BoxedMontyForm,
}

impl PublicKey {
    /// Builds and checks a public key from its parts (for the dealer and the decoder).
    fn from_parts(
        modulus: BoxedUint,
        threshold: usize,
        servers: u16,
        generator: BoxedUint,
        verification_keys: Vec<BoxedUint>,
    ) -> Result<Self, CryptoError> {
        let invalid = |why: &'static str| {
            CryptoError::Decode(DecodeError::Invalid {
                what: "RSA public key",
                why,
            })
        };
        shamir::check_threshold(threshold, usize::from(servers))?;
        let bits = modulus.bits_vartime();
        if !(MODULUS_BITS_MIN..=MODULUS_BITS_MAX).contains(&bits) {
            return Err(invalid("modulus size outside 1024..=4096 bits"));
        }
        if verification_keys.len() != usize::from(servers) {
            return Err(invalid("not one verification key per server"));
        }
        let modulus = modulus.resize_unchecked(precision(bits));
        let odd = Odd::new(modulus.clone())
            .into_option()
            .ok_or(invalid("even modulus"))?;
        let params = BoxedMontyParams::new_vartime(odd);
        let in_range = |x: &BoxedUint| !bool::from(x.is_zero()) && *x < modulus;
        if !in_range(&generator) || !verification_keys.iter().all(in_range) {
            return Err(invalid("verification key outside 1..N"));
        }
        let resize = |x: BoxedUint| x.resize_unchecked(precision(bits));
        let generator = resize(generator);
        let verification_keys: Vec<BoxedUint> = verification_keys.into_iter().map(resize).collect();
        let generator_form = BoxedMontyForm::new(generator.clone(), &params);
        Ok(Self {
            modulus,
            threshold,
            servers,
            generator,
            verification_keys,
            params,
            generator_form,
        })
    }

    /// The threshold `k`: shares needed to sign.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The group size `n`.
    pub fn servers(&self) -> u16 {
        self.servers
    }

    /// The bit length of the modulus `N`.
    pub fn modulus_bits(&self) -> u32 {
        self.modulus.bits_vartime()
    }

    /// The length of the modulus, and of every signature, in bytes.
    pub fn modulus_bytes(&self) -> usize {
        self.modulus_bits().div_ceil(8) as usize
    }

    /// The modulus `N` as big-endian bytes of [`Self::modulus_bytes`] length.
    pub fn modulus_be_bytes(&self) -> Vec<u8> {
        to_be_fixed(&self.modulus, self.modulus_bytes())
    }

    /// The public exponent `e`.
    pub fn public_exponent(&self) -> u32 {
        PUBLIC_EXPONENT
    }

    /// The key as X.509 `SubjectPublicKeyInfo` DER (`rsaEncryption`, `RSAPublicKey { n, e }`).
    pub fn to_public_key_der(&self) -> Vec<u8> {
        pkcs1::subject_public_key_info_der(&self.modulus_be_bytes(), PUBLIC_EXPONENT)
    }

    /// The key as a `-----BEGIN PUBLIC KEY-----` PEM block (what `openssl dgst -verify` reads).
    pub fn to_public_key_pem(&self) -> String {
        pkcs1::pem("PUBLIC KEY", &self.to_public_key_der())
    }

    /// Verifies an RSASSA-PKCS1-v1_5 / SHA-256 signature on `message`, as any RSA verifier does.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        self.verify_digest(&sha256(message), signature)
    }

    /// [`Self::verify`] for a SHA-256 `digest` the caller computed.
    pub fn verify_digest(
        &self,
        digest: &[u8; 32],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        let len = self.modulus_bytes();
        if signature.0.len() != len {
            return Err(CryptoError::InvalidSignature);
        }
        let y = from_be(&signature.0, self.modulus_bits())
            .filter(|y| *y < self.modulus)
            .ok_or(CryptoError::InvalidSignature)?;
        let y = self.to_monty(y);
        let e = BoxedUint::from(PUBLIC_EXPONENT);
        let recovered = to_be_fixed(
            &multi_pow_vartime(&self.params, &[(&y, &e)]).retrieve(),
            len,
        );
        let expected =
            pkcs1::emsa_pkcs1_v15_sha256(digest, len).ok_or(CryptoError::InvalidSignature)?;
        if bool::from(recovered.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    /// `x = EMSA-PKCS1-v1_5-SHA256(digest)` as an integer mod `N`, in Montgomery form. It is
    /// below `N` because its top byte is zero and `N` fills its top byte.
    fn encoded_digest(&self, digest: &[u8; 32]) -> BoxedMontyForm {
        // The modulus has at least 1024 bits, far more than the 62 bytes the encoding needs.
        let em = pkcs1::emsa_pkcs1_v15_sha256(digest, self.modulus_bytes()).unwrap_or_default();
        let x = from_be(&em, self.modulus_bits()).unwrap_or_else(BoxedUint::zero);
        self.to_monty(x)
    }

    /// A value below `N` in Montgomery form.
    fn to_monty(&self, x: BoxedUint) -> BoxedMontyForm {
        BoxedMontyForm::new(
            x.resize_unchecked(self.modulus.bits_precision()),
            &self.params,
        )
    }

    fn params(&self) -> &BoxedMontyParams {
        &self.params
    }

    fn modulus(&self) -> &BoxedUint {
        &self.modulus
    }

    fn generator(&self) -> &BoxedUint {
        &self.generator
    }

    fn generator_form(&self) -> &BoxedMontyForm {
        &self.generator_form
    }

    fn verification_key(&self, id: ServerId) -> Option<&BoxedUint> {
        self.verification_keys.get(id.slot())
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.modulus == other.modulus
            && self.threshold == other.threshold
            && self.servers == other.servers
            && self.generator == other.generator
            && self.verification_keys == other.verification_keys
    }
}

impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("modulus", &hex::encode(self.modulus_be_bytes()))
            .field("public_exponent", &PUBLIC_EXPONENT)
            .field("threshold", &self.threshold)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Encode for PublicKey {
    fn encode_to(&self, out: &mut Vec<u8>) {
        let len = self.modulus_bytes();
        put_bytes(out, &to_be_minimal(&self.modulus));
        out.extend_from_slice(&PUBLIC_EXPONENT.to_be_bytes());
        // threshold <= servers <= 1024, checked when the key was built.
        out.extend_from_slice(&(self.threshold as u16).to_be_bytes());
        out.extend_from_slice(&self.servers.to_be_bytes());
        out.extend_from_slice(&to_be_fixed(&self.generator, len));
        for key in &self.verification_keys {
            out.extend_from_slice(&to_be_fixed(key, len));
        }
    }
}

impl Decode for PublicKey {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let invalid = |why| DecodeError::Invalid {
            what: "RSA public key",
            why,
        };
        let modulus_bytes = reader.bytes("RSA modulus", MODULUS_BYTES_MAX)?;
        if modulus_bytes.first().is_none_or(|b| *b == 0) {
            return Err(invalid("modulus empty or with a leading zero byte"));
        }
        let modulus =
            from_be(modulus_bytes, MODULUS_BITS_MAX).ok_or(invalid("modulus above 4096 bits"))?;
        if reader.u32()? != PUBLIC_EXPONENT {
            return Err(invalid("public exponent is not 65537"));
        }
        let threshold = usize::from(reader.u16()?);
        let servers = reader.u16()?;
        if servers > SERVERS_MAX {
            return Err(invalid("more than 1024 servers"));
        }
        let len = modulus_bytes.len();
        let bits = modulus.bits_vartime();
        let read_value = |reader: &mut Reader<'_>| {
            from_be(reader.take(len)?, bits).ok_or(invalid("verification key outside 1..N"))
        };
        let generator = read_value(reader)?;
        // servers <= 1024 bounds the allocation.
        let mut verification_keys = Vec::with_capacity(usize::from(servers));
        for _ in 0..servers {
            verification_keys.push(read_value(reader)?);
        }
        Self::from_parts(modulus, threshold, servers, generator, verification_keys).map_err(|err| {
            match err {
                CryptoError::Decode(err) => err,
                _ => invalid("threshold outside 1..=n or group size outside 1..=1024"),
            }
        })
    }
}

/// A group signature: an ordinary RSASSA-PKCS1-v1_5 / SHA-256 signature, big-endian in the
/// modulus length.
///
/// Encoding: `len: u32 ‖ bytes` with `128 <= len <= 512`.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Signature")
            .field(&hex::encode(&self.0))
            .finish()
    }
}

impl Signature {
    /// The signature bytes, exactly as openssl and RFC 8017 define them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A signature from its raw bytes (e.g. a `.sig` file). Only the length is checked here;
    /// [`PublicKey::verify`] checks the rest.
    pub fn from_raw_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if !(MODULUS_BYTES_MIN..=MODULUS_BYTES_MAX).contains(&bytes.len()) {
            return Err(CryptoError::InvalidSignature);
        }
        Ok(Self(bytes.to_vec()))
    }
}

impl Encode for Signature {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.0);
    }
}

impl Decode for Signature {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bytes = reader.bytes("RSA signature", MODULUS_BYTES_MAX)?;
        if bytes.len() < MODULUS_BYTES_MIN {
            return Err(DecodeError::Invalid {
                what: "RSA signature",
                why: "shorter than 128 bytes",
            });
        }
        Ok(Self(bytes.to_vec()))
    }
}

crate::impl_serde_via_encoding!(
    PublicKey,
    SecretKeyShare,
    SignatureShare,
    ShareProof,
    Signature
);
