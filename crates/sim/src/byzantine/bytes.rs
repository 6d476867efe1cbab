//! `random-bytes`: what a Byzantine server sends instead of a message, aimed at every depth of
//! the receiver's decoder — plain random bytes (rejected at the envelope), a valid envelope
//! header with a random body (rejected, or not, by the protocol's decoder), and the real
//! encoding with a few bytes flipped, cut or added (which sometimes decodes to a different,
//! well-formed message).

use rand::Rng;
use rand_chacha::ChaCha20Rng;

/// Longest random body appended (bytes).
const RANDOM_BODY_BYTES_MAX: usize = 160;

/// Bytes to send instead of `encoded` (a message whose envelope header is `header_len` bytes).
pub fn garble(encoded: &[u8], header_len: usize, rng: &mut ChaCha20Rng) -> Vec<u8> {
    match rng.gen_range(0..3) {
        0 => {
            let len = rng.gen_range(0..=RANDOM_BODY_BYTES_MAX);
            (0..len).map(|_| rng.r#gen()).collect()
        }
        1 => {
            let mut out = encoded[..header_len.min(encoded.len())].to_vec();
            let len = rng.gen_range(0..=RANDOM_BODY_BYTES_MAX);
            out.extend((0..len).map(|_| rng.r#gen::<u8>()));
            out
        }
        _ => {
            let mut out = encoded.to_vec();
            for _ in 0..rng.gen_range(1..=3) {
                match rng.gen_range(0..4) {
                    0 | 1 if !out.is_empty() => {
                        let at = rng.gen_range(0..out.len());
                        out[at] ^= 1 << rng.gen_range(0..8);
                    }
                    2 if !out.is_empty() => {
                        let keep = rng.gen_range(0..out.len());
                        out.truncate(keep);
                    }
                    _ => {
                        let at = rng.gen_range(0..=out.len());
                        out.insert(at, rng.r#gen());
                    }
                }
            }
            out
        }
    }
}
