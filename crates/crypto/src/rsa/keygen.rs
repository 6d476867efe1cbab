//! Key generation by the trusted dealer (Shoup, "Practical Threshold Signatures", §2.1).
//!
//! Two steps, so that tests and benchmarks can reuse one slow modulus for many groups:
//! [`generate_primes`] finds the safe primes `p = 2p'+1`, `q = 2q'+1` (the slow part, seconds);
//! [`deal`] computes `N = pq`, `m = p'q'`, `d = e⁻¹ mod m`, shares `d` with a random polynomial
//! `f` of degree `k-1` over `Z_m` (`s_i = f(i)`), picks a random square `v` (a generator of the
//! squares `Q_N` with overwhelming probability) and publishes `v_i = v^{s_i}`.
//!
//! Every secret intermediate (`p'`, `q'`, `m`, `d`, the coefficients) is zeroized after use.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::rand_core::SeedableRng;
use crypto_bigint::{BoxedUint, ConcatenatingMul, NonZero, Odd, RandomMod, Resize};
use crypto_primes::hazmat::{SetBits, SmallFactorsSieveFactory};
use crypto_primes::{Flavor, is_prime};
use rand_chacha_010::ChaCha20Rng;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::arith::{pow_secret, precision, resize_secret};
use super::{MODULUS_BITS_MAX, MODULUS_BITS_MIN, PUBLIC_EXPONENT, PublicKey, SecretKeyShare};
use crate::{CryptoError, ServerId, shamir};

/// The two safe primes of a modulus: the slow part of key generation, kept apart so that one
/// modulus can serve many groups `(k, n)` (tests, benchmarks). Zeroized on drop.
pub struct Primes {
    p: BoxedUint,
    q: BoxedUint,
    modulus_bits: u32,
}

impl Primes {
    /// The bit length of `N = pq` these primes make.
    pub fn modulus_bits(&self) -> u32 {
        self.modulus_bits
    }
}

impl std::fmt::Debug for Primes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primes")
            .field("modulus_bits", &self.modulus_bits)
            .field("p", &"<secret>")
            .field("q", &"<secret>")
            .finish()
    }
}

impl Zeroize for Primes {
    fn zeroize(&mut self) {
        self.p.zeroize();
        self.q.zeroize();
    }
}

impl Drop for Primes {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Primes {}

/// Checks a modulus size the library accepts: even, within
/// `MODULUS_BITS_MIN..=MODULUS_BITS_MAX`.
fn check_modulus_bits(modulus_bits: u32) -> Result<(), CryptoError> {
    if !(MODULUS_BITS_MIN..=MODULUS_BITS_MAX).contains(&modulus_bits)
        || !modulus_bits.is_multiple_of(2)
    {
        return Err(CryptoError::InvalidParameters(format!(
            "RSA modulus of {modulus_bits} bits: need an even size in \
             {MODULUS_BITS_MIN}..={MODULUS_BITS_MAX}"
        )));
    }
    Ok(())
}

/// Finds two distinct random safe primes of `modulus_bits / 2` bits each, with the two top bits
/// set so that `N = pq` has exactly `modulus_bits` bits. Uses all cores. `progress` receives a
/// line before each prime search and after it.
///
/// The prime search runs on a ChaCha20 generator seeded with 32 bytes of `rng` (crypto-primes
/// speaks rand_core 0.10; our APIs take 0.6).
pub fn generate_primes(
    modulus_bits: u32,
    rng: &mut (impl CryptoRngCore + ?Sized),
    progress: &mut dyn FnMut(&str),
) -> Result<Primes, CryptoError> {
    check_modulus_bits(modulus_bits)?;
    let prime_bits = modulus_bits / 2;
    let mut prime_rng = seeded_rng(rng);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut search = |which: &str| -> Result<BoxedUint, CryptoError> {
        progress(&format!(
            "searching for the {which} safe prime ({prime_bits} bits)"
        ));
        let factory =
            SmallFactorsSieveFactory::<BoxedUint>::new(Flavor::Safe, prime_bits, SetBits::TwoMsb)
                .map_err(|err| CryptoError::InvalidParameters(err.to_string()))?;
        let prime = crypto_primes::multicore::sieve_and_find(
            &mut prime_rng,
            factory,
            |_, candidate| is_prime(Flavor::Safe, candidate),
            threads,
        )
        .map_err(|err| CryptoError::InvalidParameters(err.to_string()))?
        .ok_or_else(|| CryptoError::InvalidParameters("safe prime search ran dry".into()))?;
        progress(&format!("found the {which} safe prime"));
        Ok(prime)
    };
    let p = search("first")?;
    let mut q = search("second")?;
    // Equal primes have probability about 2^-1000; searching again costs nothing to write.
    while q == p {
        q = search("second")?;
    }
    Ok(Primes {
        p: resize_secret(p, prime_bits),
        q: resize_secret(q, prime_bits),
        modulus_bits,
    })
}

/// A rand_core 0.10 generator for crypto-bigint and crypto-primes, seeded from ours.
pub(super) fn seeded_rng(rng: &mut (impl CryptoRngCore + ?Sized)) -> ChaCha20Rng {
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut());
    ChaCha20Rng::from_seed(*seed)
}

/// Deals a `k`-of-`n` threshold RSA key on the modulus made by `primes`: the public key and the
/// `n` secret key shares (`shares[i - 1]` belongs to server `i`). Needs `1 <= k <= n <= 1024`.
pub fn deal(
    primes: &Primes,
    k: usize,
    n: usize,
    rng: &mut (impl CryptoRngCore + ?Sized),
) -> Result<(PublicKey, Vec<SecretKeyShare>), CryptoError> {
    shamir::check_threshold(k, n)?;
    let servers =
        u16::try_from(n).map_err(|_| CryptoError::InvalidParameters(format!("{n} servers")))?;
    let modulus_bits = primes.modulus_bits;
    let bits = precision(modulus_bits);
    let mut rng = seeded_rng(rng);

    let modulus = primes.p.concatenating_mul(&primes.q).resize_unchecked(bits);
    // p' = (p-1)/2 and q' = (q-1)/2: shifting out the low bit of an odd number does both.
    let p_prime = Zeroizing::new(resize_secret(
        primes.p.unbounded_shr_vartime(1),
        modulus_bits,
    ));
    let q_prime = Zeroizing::new(resize_secret(
        primes.q.unbounded_shr_vartime(1),
        modulus_bits,
    ));
    let m = Zeroizing::new(resize_secret(
        p_prime.concatenating_mul(&*q_prime),
        modulus_bits,
    ));
    let m_odd = Odd::new(BoxedUint::clone(&m))
        .into_option()
        .ok_or_else(|| CryptoError::InvalidParameters("p'q' is even".into()))?;
    let m_nonzero = Zeroizing::new(
        NonZero::new(BoxedUint::clone(&m))
            .into_option()
            .ok_or_else(|| CryptoError::InvalidParameters("p'q' is zero".into()))?,
    );

    // d = e^-1 mod m exists because e is a prime that divides neither p' nor q' (both are
    // primes far larger than e).
    let e = BoxedUint::from(PUBLIC_EXPONENT).resize_unchecked(bits);
    let d = Zeroizing::new(
        e.invert_odd_mod(&m_odd)
            .into_option()
            .ok_or_else(|| CryptoError::InvalidParameters("e divides p'q'".into()))?,
    );

    // f(X) = d + a_1 X + ... + a_{k-1} X^{k-1} over Z_m, evaluated in Montgomery form mod m.
    // The values we own are wiped; crypto-bigint's Montgomery parameters and arithmetic
    // temporaries are not (the library does not wipe on drop), a limit of the dealer process.
    let params_m = BoxedMontyParams::new(m_odd);
    let mut coefficients: Vec<BoxedMontyForm> = Vec::with_capacity(k);
    coefficients.push(BoxedMontyForm::new(BoxedUint::clone(&d), &params_m));
    for _ in 1..k {
        let a = Zeroizing::new(BoxedUint::random_mod_vartime(&mut rng, &m_nonzero));
        coefficients.push(BoxedMontyForm::new(BoxedUint::clone(&a), &params_m));
    }
    let secrets: Vec<Zeroizing<BoxedUint>> = (1..=u32::from(servers))
        .map(|i| {
            let x = BoxedMontyForm::new(BoxedUint::from(i).resize_unchecked(bits), &params_m);
            let value = coefficients
                .iter()
                .rev()
                .fold(BoxedMontyForm::zero(&params_m), |acc, c| acc.mul(&x).add(c));
            Zeroizing::new(value.retrieve())
        })
        .collect();
    coefficients.iter_mut().for_each(Zeroize::zeroize);

    // v = u^2 for a random u: a random square, which generates Q_N except with probability
    // about 1/p' + 1/q'.
    let modulus_odd = Odd::new(modulus.clone())
        .into_option()
        .ok_or_else(|| CryptoError::InvalidParameters("N is even".into()))?;
    let params = BoxedMontyParams::new_vartime(modulus_odd);
    let modulus_nonzero = NonZero::new(modulus.clone())
        .into_option()
        .ok_or_else(|| CryptoError::InvalidParameters("N is zero".into()))?;
    let u = loop {
        let candidate = BoxedUint::random_mod_vartime(&mut rng, &modulus_nonzero);
        let form = BoxedMontyForm::new(candidate, &params);
        if form.invert_vartime().is_some().into() {
            break form;
        }
    };
    let generator = u.square();
    let verification_keys: Vec<BoxedUint> = secrets
        .iter()
        .map(|s| pow_secret(&generator, s, modulus_bits).retrieve())
        .collect();

    let public =
        PublicKey::from_parts(modulus, k, servers, generator.retrieve(), verification_keys)?;
    let shares = secrets
        .iter()
        .zip(ServerId::all(servers))
        .map(|(s, id)| SecretKeyShare::new(id, servers, modulus_bits, BoxedUint::clone(s)))
        .collect();
    Ok((public, shares))
}
