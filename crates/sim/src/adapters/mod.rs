//! One adapter per protocol: the only protocol-specific code of the simulator.
//!
//! Each file implements [`crate::Protocol`] against the protocol's public API.

pub mod aba;
pub mod abc;
pub mod cbc;
pub mod mvba;
pub mod oabc;
pub mod rbc;
pub mod scabc;

/// Random bytes of a length in `1..=max`, for bodies.
pub(crate) fn random_body(rng: &mut rand_chacha::ChaCha20Rng, max: usize) -> Vec<u8> {
    use rand::Rng;
    let len = rng.gen_range(1..=max);
    (0..len).map(|_| rng.r#gen()).collect()
}

/// `body` with one byte changed: a conflicting body of the same length.
pub(crate) fn altered(body: &[u8], rng: &mut rand_chacha::ChaCha20Rng) -> Vec<u8> {
    use rand::Rng;
    let mut out = body.to_vec();
    if out.is_empty() {
        out.push(rng.r#gen());
    } else {
        let at = rng.gen_range(0..out.len());
        out[at] ^= rng.gen_range(1..=255u8);
    }
    out
}
