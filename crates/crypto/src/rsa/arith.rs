//! Integer helpers over crypto-bigint's boxed (heap, run-time sized) integers.
//!
//! Two kinds of exponentiation live here and must not be confused:
//! - [`pow_secret`]: constant time in the exponent's value (its bound is public); for `s_i`,
//!   `2Δs_i` and the proof's nonce `r`.
//! - [`multi_pow_vartime`]: variable time; only for public bases and public exponents (combining
//!   shares, checking proofs and signatures).

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, ConcatenatingMul, Limb, NonZero, Resize};
use zeroize::Zeroize;

/// `bits` rounded up to whole limbs: the precision every integer of that size is stored with.
pub(super) fn precision(bits: u32) -> u32 {
    bits.max(1).div_ceil(Limb::BITS) * Limb::BITS
}

/// A copy of the secret `x` with precision `precision(bits)` (truncating if it does not fit);
/// the original is wiped. Resizing in place could free the old buffer without wiping it.
pub(super) fn resize_secret(mut x: BoxedUint, bits: u32) -> BoxedUint {
    let out = (&x).resize_unchecked(precision(bits));
    x.zeroize();
    out
}

/// Big-endian bytes into an integer of precision `precision(bits)`; `None` if the value has
/// more than `bits` bits (or the slice more bytes than the precision holds).
pub(super) fn from_be(bytes: &[u8], bits: u32) -> Option<BoxedUint> {
    let value = BoxedUint::from_be_slice(bytes, precision(bits)).ok()?;
    (value.bits_vartime() <= bits).then_some(value)
}

/// The integer as exactly `len` big-endian bytes. Callers guarantee `x < 256^len`; higher bytes
/// would be dropped.
pub(super) fn to_be_fixed(x: &BoxedUint, len: usize) -> Vec<u8> {
    let bytes = x.to_be_bytes();
    if bytes.len() >= len {
        bytes[bytes.len() - len..].to_vec()
    } else {
        let mut out = vec![0u8; len - bytes.len()];
        out.extend_from_slice(&bytes);
        out
    }
}

/// The integer as big-endian bytes without leading zero bytes (empty for zero).
pub(super) fn to_be_minimal(x: &BoxedUint) -> Vec<u8> {
    let bytes = x.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

/// `x · factor` as an exact integer (the precision grows as needed and is trimmed back).
pub(super) fn mul_small(x: &BoxedUint, factor: u64) -> BoxedUint {
    let product = x.concatenating_mul(&BoxedUint::from(factor));
    trim(product)
}

/// `x · y` as an exact integer.
pub(super) fn mul(x: &BoxedUint, y: &BoxedUint) -> BoxedUint {
    trim(x.concatenating_mul(y))
}

/// Drops the high zero limbs of a public value (variable time).
fn trim(x: BoxedUint) -> BoxedUint {
    let bits = x.bits_vartime();
    x.resize_unchecked(precision(bits))
}

/// `x / divisor` for a divisor known to divide `x`; `None` if it does not (or is zero).
pub(super) fn div_exact(x: &BoxedUint, divisor: &BoxedUint) -> Option<BoxedUint> {
    let divisor = NonZero::new(divisor.clone()).into_option()?;
    x.div_exact_vartime(&divisor).into_option().map(trim)
}

/// `n!`: Shoup's `Δ` for a group of `n` servers.
pub(super) fn factorial(n: u16) -> BoxedUint {
    (2..=u64::from(n)).fold(BoxedUint::one(), |acc, i| mul_small(&acc, i))
}

/// `n! mod modulus` for a small modulus.
pub(super) fn factorial_mod(n: u16, modulus: u64) -> u64 {
    (2..=u64::from(n)).fold(1u64 % modulus, |acc, i| mul_mod_u64(acc, i, modulus))
}

/// `a · b mod modulus` without overflow.
pub(super) fn mul_mod_u64(a: u64, b: u64, modulus: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(modulus)) as u64
}

/// `base^exponent mod modulus` for small public values.
pub(super) fn pow_mod_u64(base: u64, mut exponent: u64, modulus: u64) -> u64 {
    let mut result = 1u64 % modulus;
    let mut square = base % modulus;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul_mod_u64(result, square, modulus);
        }
        square = mul_mod_u64(square, square, modulus);
        exponent >>= 1;
    }
    result
}

/// `base^exponent` in constant time with respect to the exponent's value. `exponent_bits_max` is
/// a public bound on the exponent (the loop always runs over that many bits).
pub(super) fn pow_secret(
    base: &BoxedMontyForm,
    exponent: &BoxedUint,
    exponent_bits_max: u32,
) -> BoxedMontyForm {
    base.pow_bounded_exp(exponent, exponent_bits_max)
}

/// Bits processed per step of [`multi_pow_vartime`] (tables of `2^4` powers per base).
const WINDOW_BITS: u32 = 4;

/// `Π base_i^{exponent_i}` by interleaved fixed windows: the squarings are shared among all
/// bases, which makes combining `k` shares cost little more than one exponentiation with the
/// longest exponent. Variable time: public bases and exponents only.
pub(super) fn multi_pow_vartime(
    params: &BoxedMontyParams,
    terms: &[(&BoxedMontyForm, &BoxedUint)],
) -> BoxedMontyForm {
    let one = BoxedMontyForm::one(params);
    let bits_max = terms
        .iter()
        .map(|(_, exponent)| exponent.bits_vartime())
        .max()
        .unwrap_or(0);
    if bits_max == 0 {
        return one;
    }
    // tables[t][w] = base_t^w for w < 2^WINDOW_BITS.
    let tables: Vec<Vec<BoxedMontyForm>> = terms
        .iter()
        .map(|(base, _)| {
            let mut table = Vec::with_capacity(1 << WINDOW_BITS);
            table.push(one.clone());
            table.push((*base).clone());
            for w in 2..(1usize << WINDOW_BITS) {
                let next = table[w - 1].mul(base);
                table.push(next);
            }
            table
        })
        .collect();
    let windows = bits_max.div_ceil(WINDOW_BITS);
    let mut acc = one;
    for window in (0..windows).rev() {
        for _ in 0..WINDOW_BITS {
            acc = acc.square();
        }
        for ((_, exponent), table) in terms.iter().zip(&tables) {
            let digit = window_digit(exponent, window * WINDOW_BITS);
            if digit != 0 {
                acc = acc.mul(&table[digit]);
            }
        }
    }
    acc
}

/// The `WINDOW_BITS` bits of `exponent` starting at bit `low` (always `< 2^WINDOW_BITS`).
fn window_digit(exponent: &BoxedUint, low: u32) -> usize {
    (0..WINDOW_BITS).rev().fold(0usize, |digit, offset| {
        (digit << 1) | usize::from(exponent.bit_vartime(low + offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_bigint::Odd;

    fn int(value: u64) -> BoxedUint {
        BoxedUint::from(value)
    }

    #[test]
    fn multi_pow_matches_separate_powers() {
        let modulus = Odd::new(BoxedUint::from(1_000_000_007u64)).unwrap();
        let params = BoxedMontyParams::new_vartime(modulus);
        let a = BoxedMontyForm::new(int(12345), &params);
        let b = BoxedMontyForm::new(int(67890), &params);
        let (ea, eb) = (int(0x1234_5678_9abc), int(77));
        let combined = multi_pow_vartime(&params, &[(&a, &ea), (&b, &eb)]);
        let separate = a.pow(&ea).mul(&b.pow(&eb));
        assert_eq!(combined.retrieve(), separate.retrieve());
        let zero = int(0);
        assert_eq!(
            multi_pow_vartime(&params, &[(&a, &zero)]).retrieve(),
            BoxedUint::one()
        );
    }

    #[test]
    fn factorials_and_exact_division() {
        assert_eq!(factorial(5), int(120));
        assert_eq!(factorial(0), int(1));
        assert_eq!(
            factorial_mod(20, 65537),
            (2..=20u64).product::<u64>() % 65537
        );
        let big = factorial(30);
        assert_eq!(div_exact(&big, &factorial(28)), Some(int(870)));
        assert_eq!(div_exact(&int(10), &int(3)), None);
        assert_eq!(pow_mod_u64(3, 65535, 65537) * 3 % 65537, 1);
    }

    #[test]
    fn byte_conversions_are_fixed_and_minimal() {
        let x = int(0x0102);
        assert_eq!(to_be_fixed(&x, 4), vec![0, 0, 1, 2]);
        assert_eq!(to_be_minimal(&x), vec![1, 2]);
        assert_eq!(to_be_minimal(&int(0)), Vec::<u8>::new());
        assert_eq!(from_be(&[1, 2], 9), Some(x.clone().resize_unchecked(64)));
        assert_eq!(from_be(&[2, 2], 9), None);
    }
}
