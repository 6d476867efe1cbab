//! Properties of signed answers: for every batch size 1..=40 every leaf's path leads to the
//! root, and a changed answer, request, position, index or path byte does not; end to end, the
//! combined threshold-RSA signature of `t + 1` servers over a batch statement makes every
//! answer verify under the service key alone (also after a JSON round trip), and one flipped
//! byte anywhere in a signed answer (including its round, first, count and position, or the
//! wrong request) is rejected.

use std::sync::OnceLock;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa;
use sintra_services::answers::{
    AnswerBatch, Hash, SignedAnswer, VerifyError, leaf, root_from_path, statement,
};

/// One group of 4 (t = 1) around a 1024-bit modulus, dealt once per test binary.
fn group() -> &'static (GroupKeys, Vec<ServerKeys>) {
    static GROUP: OnceLock<(GroupKeys, Vec<ServerKeys>)> = OnceLock::new();
    GROUP.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
        let parameters = GroupParameters::new(4, None).unwrap();
        deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).unwrap()
    })
}

fn requests(count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("request {i}").into_bytes(),
                format!("answer {i}").into_bytes(),
            )
        })
        .collect()
}

fn make_batch(round: u64, first: u64, items: &[(Vec<u8>, Vec<u8>)]) -> AnswerBatch {
    let leaves = items
        .iter()
        .enumerate()
        .map(|(i, (request, answer))| leaf(first + i as u64, request, answer))
        .collect();
    AnswerBatch::new(round, first, leaves).unwrap()
}

#[test]
fn every_path_leads_to_the_root_and_nothing_else_does() {
    let first = 100;
    for count in 1..=40usize {
        let items = requests(count);
        let batch = make_batch(3, first, &items);
        let root = batch.root();
        let n = count as u64;
        assert_eq!(batch.count(), n);
        assert!(batch.path(count).is_none());
        for (i, (request, answer)) in items.iter().enumerate() {
            let index = i as u64;
            let path = batch.path(i).unwrap();
            let good = leaf(first + index, request, answer);
            assert_eq!(
                root_from_path(index, n, good, &path),
                Some(root),
                "{count}/{i}"
            );

            let wrong_answer = leaf(first + index, request, b"another answer");
            assert_ne!(root_from_path(index, n, wrong_answer, &path), Some(root));
            let wrong_position = leaf(first + index + 1, request, answer);
            assert_ne!(root_from_path(index, n, wrong_position, &path), Some(root));
            if count > 1 {
                // Another index reads the path differently or not at all. (Another count may
                // reach the same root — a promoted node looks alike in both trees — which is why
                // the signed statement binds `count`; the end-to-end test checks that.)
                let other = (index + 1) % n;
                assert_ne!(root_from_path(other, n, good, &path), Some(root));
            }
            assert_eq!(root_from_path(n, n, good, &path), None);
            for (level, _) in path.iter().enumerate() {
                for bit in [0, 7] {
                    let mut damaged = path.clone();
                    damaged[level][31 - bit] ^= 1 << bit;
                    assert_ne!(root_from_path(index, n, good, &damaged), Some(root));
                }
            }
            let mut longer = path.clone();
            longer.push(Hash::default());
            assert_eq!(root_from_path(index, n, good, &longer), None);
            if let Some((_, shorter)) = path.split_last() {
                assert_eq!(root_from_path(index, n, good, shorter), None);
            }
        }
    }
}

#[test]
fn a_single_leaf_is_its_own_root_and_batches_are_bounded() {
    let good = leaf(9, b"r", b"a");
    let batch = AnswerBatch::new(1, 9, vec![good]).unwrap();
    assert_eq!(batch.root(), good);
    assert_eq!(batch.path(0), Some(vec![]));
    assert!(AnswerBatch::new(1, 0, vec![]).is_err());
    assert!(AnswerBatch::new(1, u64::MAX, vec![good]).is_err());
}

/// Signs `batch`'s statement with servers 2 and 3 (`t + 1 = 2`) and combines.
fn sign(batch: &AnswerBatch) -> Vec<u8> {
    let (group, servers) = group();
    let message = batch.statement();
    let shares: Vec<_> = servers[1..3]
        .iter()
        .map(|server| server.service.sign(&group.service, &message))
        .collect();
    group
        .service
        .combine(&message, &shares)
        .unwrap()
        .as_bytes()
        .to_vec()
}

#[test]
fn signed_answers_verify_under_the_service_key_and_any_change_is_caught() {
    let (group, _) = group();
    let key = &group.service;
    let items = requests(5);
    let batch = make_batch(7, 40, &items);
    assert_eq!(
        batch.statement(),
        statement(7, 40, 5, &batch.root()),
        "the batch signs the documented statement"
    );
    let signature = sign(&batch);

    for (i, (request, answer)) in items.iter().enumerate() {
        let signed = batch
            .signed_answer(i, answer.clone(), signature.clone())
            .unwrap();
        assert_eq!(signed.verify(key, request), Ok(()));

        let json = serde_json::to_string(&signed).unwrap();
        let parsed: SignedAnswer = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, signed);
        assert_eq!(parsed.verify(key, request), Ok(()));

        // Another request (e.g. a neighbour's) does not verify with this answer.
        let other = &items[(i + 1) % items.len()].0;
        assert!(signed.verify(key, other).is_err());

        // One flipped bit anywhere: answer, path, signature.
        for byte in 0..signed.answer.len() {
            let mut damaged = signed.clone();
            damaged.answer[byte] ^= 0x01;
            assert!(damaged.verify(key, request).is_err());
        }
        for level in 0..signed.path.len() {
            for byte in [0, 13, 31] {
                let mut damaged = signed.clone();
                damaged.path[level][byte] ^= 0x80;
                assert!(damaged.verify(key, request).is_err());
            }
        }
        for byte in (0..signed.signature.len()).step_by(7) {
            let mut damaged = signed.clone();
            damaged.signature[byte] ^= 0x04;
            assert_eq!(damaged.verify(key, request), Err(VerifyError::BadSignature));
        }
        // The integers: round, first, count, position.
        let mut damaged = signed.clone();
        damaged.round += 1;
        assert_eq!(damaged.verify(key, request), Err(VerifyError::BadSignature));
        let mut damaged = signed.clone();
        damaged.first = damaged.first.wrapping_sub(1);
        damaged.position = damaged.position.wrapping_sub(1);
        assert!(damaged.verify(key, request).is_err());
        let mut damaged = signed.clone();
        damaged.count += 1;
        assert!(damaged.verify(key, request).is_err());
        let mut damaged = signed.clone();
        damaged.position = 40 + (damaged.position - 40 + 1) % 5;
        assert!(damaged.verify(key, request).is_err());
        let mut damaged = signed.clone();
        damaged.position = 45;
        assert!(matches!(
            damaged.verify(key, request),
            Err(VerifyError::PositionOutOfRange { .. })
        ));
        let mut damaged = signed.clone();
        damaged.count = 0;
        assert_eq!(damaged.verify(key, request), Err(VerifyError::BadCount(0)));
    }

    // A signature over another batch's statement does not transfer.
    let other = make_batch(8, 40, &items);
    let moved = other
        .signed_answer(0, items[0].1.clone(), signature.clone())
        .unwrap();
    assert_eq!(
        moved.verify(key, &items[0].0),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn malformed_json_is_refused() {
    let good =
        r#"{"round":1,"first":0,"count":1,"position":0,"answer":"00","path":[],"signature":"ab"}"#;
    assert!(serde_json::from_str::<SignedAnswer>(good).is_ok());
    let bad_hex = good.replace(r#""answer":"00""#, r#""answer":"0g""#);
    assert!(serde_json::from_str::<SignedAnswer>(&bad_hex).is_err());
    let short_hash = good.replace(r#""path":[]"#, r#""path":["00"]"#);
    assert!(serde_json::from_str::<SignedAnswer>(&short_hash).is_err());
    let long_path = format!(
        r#"{{"round":1,"first":0,"count":1,"position":0,"answer":"","path":[{}],"signature":""}}"#,
        vec![format!("\"{}\"", "00".repeat(32)); 65].join(",")
    );
    assert!(serde_json::from_str::<SignedAnswer>(&long_path).is_err());
    let unknown = good.replace(r#""round":1"#, r#""round":1,"extra":2"#);
    assert!(serde_json::from_str::<SignedAnswer>(&unknown).is_err());
}
