//! Shamir secret sharing and Lagrange interpolation at zero over any prime field (the BLS12-381
//! and ristretto255 scalar fields alike), plus the share-set checks every scheme's `combine`
//! runs first.
//!
//! Interpolation at zero for the ids `x_1..x_k`:
//! `λ_i = Π_{j≠i} x_j / (x_j − x_i) = P / (x_i · d_i)` with `P = Π_j x_j` and
//! `d_i = Π_{j≠i} (x_j − x_i)`. All `k` denominators `x_i · d_i` are inverted together with
//! Montgomery's batch inversion: one field inversion and `3k` multiplications, instead of `k`
//! (or `k²`) inversions.

use ff::{BatchInvert, PrimeField};
use rand_core::RngCore;

use crate::{CombineError, CryptoError, SERVERS_MAX, ServerId};

/// Checks the group parameters `1 <= k <= n <= SERVERS_MAX`.
pub fn check_threshold(k: usize, n: usize) -> Result<(), CryptoError> {
    if k == 0 || k > n || n > usize::from(SERVERS_MAX) {
        return Err(CryptoError::InvalidParameters(format!(
            "threshold {k} of {n} servers: need 1 <= k <= n <= {SERVERS_MAX}"
        )));
    }
    Ok(())
}

/// Splits `secret` into `n` shares, any `k` of which recover it: `shares[i - 1] = f(i)` for a
/// random polynomial `f` of degree `k - 1` with `f(0) = secret`. Returns the shares and the
/// polynomial's coefficients (constant first), which the caller must drop after use.
pub fn split<F: PrimeField>(
    secret: F,
    k: usize,
    n: usize,
    rng: &mut impl RngCore,
) -> Result<Vec<F>, CryptoError> {
    check_threshold(k, n)?;
    let mut coefficients = Vec::with_capacity(k);
    coefficients.push(secret);
    for _ in 1..k {
        coefficients.push(F::random(&mut *rng));
    }
    let shares = (1..=n as u64)
        .map(|x| evaluate(&coefficients, F::from(x)))
        .collect();
    for c in coefficients.iter_mut() {
        *c = F::ZERO;
    }
    Ok(shares)
}

fn evaluate<F: PrimeField>(coefficients: &[F], x: F) -> F {
    coefficients
        .iter()
        .rev()
        .fold(F::ZERO, |acc, c| acc * x + c)
}

/// The Lagrange coefficients at zero for the given distinct ids, in the same order.
pub fn lagrange_at_zero<F: PrimeField>(ids: &[ServerId]) -> Vec<F> {
    let xs: Vec<F> = ids.iter().map(|id| F::from(u64::from(id.get()))).collect();
    let product: F = xs.iter().product();
    let mut denominators: Vec<F> = xs
        .iter()
        .enumerate()
        .map(|(i, x_i)| {
            xs.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(*x_i, |acc, (_, x_j)| acc * (*x_j - x_i))
        })
        .collect();
    denominators.iter_mut().batch_invert();
    denominators.into_iter().map(|inv| product * inv).collect()
}

/// Checks a set of share ids before combining: at least `k`, all members of a group of `n`,
/// no two the same. Returns the error that names the culprit.
pub fn check_share_ids(ids: &[ServerId], k: usize, n: u16) -> Result<(), CombineError> {
    if ids.len() < k {
        return Err(CombineError::NotEnoughShares {
            needed: k,
            given: ids.len(),
        });
    }
    let mut seen = vec![false; usize::from(n)];
    for id in ids {
        if !id.is_member_of(n) {
            return Err(CombineError::UnknownServer(*id));
        }
        if std::mem::replace(&mut seen[id.slot()], true) {
            return Err(CombineError::DuplicateShare(*id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::Scalar;
    use rand::SeedableRng;

    fn ids(list: &[u16]) -> Vec<ServerId> {
        list.iter().map(|i| ServerId::new(*i).unwrap()).collect()
    }

    #[test]
    fn any_k_shares_interpolate_the_secret_and_k_minus_one_do_not() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let secret = Scalar::random(&mut rng);
        let shares = split(secret, 3, 7, &mut rng).unwrap();
        for subset in [[1u16, 2, 3], [7, 4, 1], [2, 5, 6]] {
            let lambdas = lagrange_at_zero::<Scalar>(&ids(&subset));
            let recovered: Scalar = subset
                .iter()
                .zip(&lambdas)
                .map(|(i, l)| shares[usize::from(*i) - 1] * l)
                .sum();
            assert_eq!(recovered, secret);
        }
        let lambdas = lagrange_at_zero::<Scalar>(&ids(&[1, 2]));
        let wrong: Scalar = shares[0] * lambdas[0] + shares[1] * lambdas[1];
        assert_ne!(wrong, secret);
    }

    #[test]
    fn share_id_checks_name_the_culprit() {
        assert_eq!(
            check_share_ids(&ids(&[1, 2, 2]), 3, 4),
            Err(CombineError::DuplicateShare(ServerId::new(2).unwrap()))
        );
        assert_eq!(
            check_share_ids(&ids(&[1, 2, 5]), 3, 4),
            Err(CombineError::UnknownServer(ServerId::new(5).unwrap()))
        );
        assert!(matches!(
            check_share_ids(&ids(&[1, 2]), 3, 4),
            Err(CombineError::NotEnoughShares {
                needed: 3,
                given: 2
            })
        ));
        assert!(check_threshold(0, 4).is_err());
        assert!(check_threshold(5, 4).is_err());
        assert!(check_threshold(3, 1025).is_err());
    }
}
