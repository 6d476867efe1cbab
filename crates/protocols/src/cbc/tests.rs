//! Consistent broadcast, end to end with real threshold signatures: an honest sender makes
//! everybody deliver its body with a proof that verifies everywhere; a silent sender makes nobody
//! deliver; an equivocating sender gets at most one body delivered; invalid echo shares are
//! blamed and the broadcast completes; a server holding only a proof fetches the body; a FINAL
//! replayed into another instance fails and is blamed; no honest server is ever blamed;
//! encodings are canonical and never panic.

use std::collections::BTreeSet;

use proptest::prelude::*;
use sintra_crypto::ServerId;
use sintra_crypto::bls::SignatureShare;
use sintra_crypto::encoding::{Decode, Encode};

use super::*;
use crate::rbc::tests::network::{self, Network, id};
use crate::{Fault, FaultKind, Target};

const SIZES: [u16; 4] = [1, 4, 7, 10];

fn instance() -> InstanceId {
    InstanceId::root("test").unwrap().child("cbc").unwrap()
}

fn envelope(body: Message) -> crate::Message {
    crate::Message {
        instance: instance(),
        body: crate::Body::Cbc(body),
    }
}

fn network(n: u16, seed: u64, byzantine: &[u16]) -> Network<Cbc> {
    Network::new(n, seed, byzantine, |_| Cbc::new(instance(), id(1)))
}

fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

fn share(party: &Party, digest: &Digest) -> SignatureShare {
    party
        .keys
        .broadcast
        .sign(&signing_context(&instance()), digest)
}

#[test]
fn honest_sender_everybody_delivers_with_a_valid_proof() {
    for n in SIZES {
        for seed in 0..3 {
            let mut net = network(n, seed, &[]);
            let body = body_of(200 + seed as usize, seed as u8);
            let sent = body.clone();
            net.call(id(1), |cbc, party| cbc.broadcast(party, sent).unwrap());
            net.run();
            let delivered = net.delivered();
            assert_eq!(delivered.len(), usize::from(n), "n={n}");
            for delivery in delivered.values() {
                assert_eq!(delivery.body, body);
                assert_eq!(delivery.proof.digest, body_digest(&instance(), &body));
                for party in &mut net.parties {
                    assert!(delivery.proof.verify(party));
                }
            }
            assert!(net.faults.is_empty(), "{:?}", net.faults);
            assert!(net.nodes.iter().all(Cbc::terminated));
        }
    }
}

#[test]
fn a_silent_sender_makes_nobody_deliver() {
    for n in [4u16, 7, 10] {
        let mut net = network(n, 1, &[1]);
        net.run();
        assert!(net.delivered().is_empty());
        assert!(net.faults.is_empty());
    }
}

/// The Byzantine sender (server 1) sends SEND(m1) to servers `2..=split` and SEND(m2) to the
/// others, combines whatever shares it gets for each body, and sends every FINAL it can make to
/// everybody. At most one body may be delivered.
#[test]
fn an_equivocating_sender_gets_at_most_one_body_delivered() {
    let mut outcomes = BTreeSet::new();
    for n in [4u16, 7, 10] {
        for split in 1..=n {
            let mut net = network(n, u64::from(split), &[1]);
            let bodies = [body_of(30, 1), body_of(31, 2)];
            let digests = bodies.each_ref().map(|body| body_digest(&instance(), body));
            for to in ServerId::all(n) {
                let body = bodies[usize::from(to.get() > split)].clone();
                net.inject(id(1), Target::Server(to), envelope(Message::Send { body }));
            }
            net.run();
            let sender = net.parties[0].keys.clone();
            let mut finals = 0;
            for digest in &digests {
                let mut shares: Vec<SignatureShare> = net
                    .captured
                    .iter()
                    .filter_map(|(_, _, message)| match &message.body {
                        crate::Body::Cbc(Message::Echo { share }) => Some(*share),
                        _ => None,
                    })
                    .collect();
                shares.push(sender.broadcast.sign(&signing_context(&instance()), digest));
                let group = net.parties[0].group.clone();
                let Ok(combined) =
                    group
                        .broadcast
                        .combine(&signing_context(&instance()), digest, &shares)
                else {
                    continue;
                };
                finals += 1;
                let signature = combined.value;
                let final_message = Message::Final {
                    digest: *digest,
                    signature,
                };
                net.inject(id(1), Target::All, envelope(final_message));
            }
            assert!(finals <= 1, "two digests got a quorum of shares");
            net.run();
            let delivered = net.delivered();
            let bodies: BTreeSet<&Vec<u8>> = delivered.values().map(|d| &d.body).collect();
            assert!(
                bodies.len() <= 1,
                "n={n} split={split}: two bodies delivered"
            );
            assert_eq!(delivered.is_empty(), finals == 0);
            outcomes.insert(finals);
            net.assert_no_honest_blamed();
        }
    }
    assert_eq!(
        outcomes.len(),
        2,
        "some splits let one body through, some none"
    );
}

#[test]
fn equivocating_sends_and_bad_finals_are_blamed() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[3];
    let mut cbc = Cbc::new(instance(), id(1));
    let body = body_of(20, 0);
    let digest = body_digest(&instance(), &body);
    let faults = |step: Step<CbcDelivery>| -> Vec<(u16, FaultKind)> {
        step.faults
            .iter()
            .map(|f| (f.server.get(), f.kind))
            .collect()
    };
    let send = envelope(Message::Send { body: body.clone() });
    assert_eq!(
        faults(cbc.handle_message(party, id(2), &send)),
        [(2, FaultKind::UnexpectedMessage)]
    );
    let step = cbc.handle_message(party, id(1), &send);
    assert!(step.faults.is_empty());
    assert!(matches!(
        &step.messages[..],
        [out] if out.to == Target::Server(id(1))
            && matches!(out.message.body, crate::Body::Cbc(Message::Echo { share }) if share.id() == id(4))
    ));
    assert!(cbc.handle_message(party, id(1), &send).is_empty());
    let other = envelope(Message::Send {
        body: b"other".to_vec(),
    });
    assert_eq!(
        faults(cbc.handle_message(party, id(1), &other)),
        [(1, FaultKind::Equivocation)]
    );
    // An echo at a server that is not the sender.
    let echo = envelope(Message::Echo {
        share: share(party, &digest),
    });
    assert_eq!(
        faults(cbc.handle_message(party, id(4), &echo)),
        [(4, FaultKind::UnexpectedMessage)]
    );
    // A FINAL whose signature is a share, or is on another body.
    let group = party.group.clone();
    let shares: Vec<SignatureShare> = parties_shares(&digest);
    let signature = group
        .broadcast
        .combine(&signing_context(&instance()), &digest, &shares)
        .unwrap()
        .value;
    let wrong = envelope(Message::Final {
        digest: body_digest(&instance(), b"other"),
        signature,
    });
    assert_eq!(
        faults(cbc.handle_message(party, id(1), &wrong)),
        [(1, FaultKind::InvalidProof)]
    );
    let right = envelope(Message::Final { digest, signature });
    assert_eq!(
        faults(cbc.handle_message(party, id(2), &right)),
        [(2, FaultKind::UnexpectedMessage)]
    );
    let step = cbc.handle_message(party, id(1), &right);
    assert!(step.faults.is_empty());
    assert_eq!(step.outputs.len(), 1);
    assert!(cbc.handle_message(party, id(1), &right).is_empty());
    // Requests: answered once per peer; a second one is a fault. Unsolicited bodies are faults.
    let request = envelope(Message::Request { digest });
    let step = cbc.handle_message(party, id(3), &request);
    assert!(matches!(
        &step.messages[..],
        [out] if out.to == Target::Server(id(3))
            && out.message.body == crate::Body::Cbc(Message::Body { body: body.clone() })
    ));
    assert_eq!(
        faults(cbc.handle_message(party, id(3), &request)),
        [(3, FaultKind::UnexpectedMessage)]
    );
    assert_eq!(
        faults(cbc.handle_message(party, id(2), &envelope(Message::Body { body }))),
        [(2, FaultKind::UnexpectedMessage)]
    );
}

/// Shares of servers 1..=3 of a group of 4 (the threshold) on `digest`.
fn parties_shares(digest: &Digest) -> Vec<SignatureShare> {
    network::parties(4, 0)
        .iter()
        .take(3)
        .map(|party| share(party, digest))
        .collect()
}

/// Byzantine echoers reach the sender first with invalid shares (signed on another digest, on
/// another instance, or carrying another server's id): the sender blames each and still
/// completes once enough valid shares arrive.
#[test]
fn bad_echo_shares_are_blamed_and_the_broadcast_completes() {
    for n in [4u16, 7, 10] {
        let mut net = network(n, 4, &[]);
        let t = net.parties[0].faults();
        let byzantine: Vec<u16> = (n - t + 1..=n).collect();
        net.byzantine = byzantine.iter().map(|&i| id(i)).collect();
        let body = body_of(64, 7);
        let sent = body.clone();
        net.call(id(1), |cbc, party| cbc.broadcast(party, sent).unwrap());
        // The Byzantine shares reach the sender before anything else.
        let other_instance = InstanceId::root("elsewhere").unwrap();
        let digest = body_digest(&instance(), &body);
        for (position, &b) in byzantine.iter().enumerate() {
            let keys = &net.parties[usize::from(b) - 1].keys.broadcast;
            let share = match position % 2 {
                0 => keys.sign(&signing_context(&instance()), b"another digest"),
                _ => keys.sign(&signing_context(&other_instance), &digest),
            };
            let message = envelope(Message::Echo { share });
            net.call(id(1), |cbc, party| {
                cbc.handle_message(party, id(b), &message)
            });
        }
        // A share presented by a server that did not make it.
        let stolen = envelope(Message::Echo {
            share: share(&net.parties[1], &digest),
        });
        net.call(id(1), |cbc, party| {
            cbc.handle_message(party, id(n), &stolen)
        });
        net.run();
        let delivered = net.delivered();
        assert_eq!(delivered.len(), usize::from(n - t), "n={n}");
        assert!(delivered.values().all(|d| d.body == body));
        net.assert_no_honest_blamed();
        for &b in &byzantine {
            let mut expected = vec![FaultKind::InvalidShare];
            if b == n {
                expected.push(FaultKind::UnexpectedMessage);
            }
            let mut got = net.faults_against(id(b));
            got.sort_by_key(|kind| *kind as u8);
            expected.sort_by_key(|kind| *kind as u8);
            assert_eq!(got, expected, "n={n} server {b}");
        }
    }
}

/// Server `n` misses both SEND and FINAL; it learns the proof elsewhere and fetches the body.
#[test]
fn a_server_with_only_the_proof_fetches_the_body() {
    for n in [4u16, 7, 10] {
        let mut net = network(n, 6, &[]);
        let late = id(n);
        net.lose = Some(Box::new(move |_, to, message| {
            to == late
                && matches!(
                    message.body,
                    crate::Body::Cbc(Message::Send { .. } | Message::Final { .. })
                )
        }));
        let body = body_of(500, 3);
        let sent = body.clone();
        net.call(id(1), |cbc, party| cbc.broadcast(party, sent).unwrap());
        net.run();
        assert!(net.nodes[late.slot()].delivered().is_none());
        let proof = net.nodes[0].delivered().unwrap().proof.clone();
        net.call(late, |cbc, party| cbc.fetch(party, proof));
        net.run();
        let delivered = net.delivered();
        assert_eq!(delivered.len(), usize::from(n));
        assert_eq!(delivered[&late].body, body);
        assert!(net.faults.is_empty(), "{:?}", net.faults);
    }
}

/// A fetching server asks everybody; a Byzantine server answers with a wrong body (blamed),
/// and the server that saw the SEND but not the FINAL delivers at once from its own copy.
#[test]
fn fetch_blames_wrong_answers_and_uses_a_known_body() {
    let mut net = network(4, 2, &[2]);
    // Servers 3 and 4 miss the FINAL; server 4 also misses the SEND.
    net.lose = Some(Box::new(|_, to, message| match &message.body {
        crate::Body::Cbc(Message::Final { .. }) => to.get() >= 3,
        crate::Body::Cbc(Message::Send { .. }) => to == id(4),
        _ => false,
    }));
    let body = body_of(90, 1);
    let sent = body.clone();
    net.call(id(1), |cbc, party| cbc.broadcast(party, sent).unwrap());
    // Byzantine server 2 echoes honestly so the sender can finish.
    let digest = body_digest(&instance(), &body);
    let echo = envelope(Message::Echo {
        share: share(&net.parties[1], &digest),
    });
    net.inject(id(2), Target::Server(id(1)), echo);
    net.run();
    let proof = net.nodes[0].delivered().unwrap().proof.clone();
    // Server 3 saw the SEND: the fetch delivers without a message.
    net.call(id(3), |cbc, party| cbc.fetch(party, proof.clone()));
    assert_eq!(net.nodes[2].delivered().unwrap().body, body);
    // Server 4 did not: the Byzantine answer comes first and is blamed.
    net.call(id(4), |cbc, party| cbc.fetch(party, proof.clone()));
    let wrong = envelope(Message::Body {
        body: b"wrong".to_vec(),
    });
    net.call(id(4), |cbc, party| cbc.handle_message(party, id(2), &wrong));
    net.run();
    assert_eq!(net.nodes[3].delivered().unwrap().body, body);
    assert_eq!(net.faults_against(id(2)), vec![FaultKind::WrongBody]);
    net.assert_no_honest_blamed();
    // A proof for another instance, or a forged one, is ignored by fetch.
    let mut fresh = Cbc::new(instance(), id(1));
    let mut forged = proof.clone();
    forged.digest[0] ^= 1;
    assert!(fresh.fetch(&mut net.parties[3], forged).is_empty());
    let mut moved = proof;
    moved.instance = InstanceId::root("elsewhere").unwrap();
    assert!(fresh.fetch(&mut net.parties[3], moved).is_empty());
}

/// The signature binds the instance: a FINAL (or a proof) from one instance is worthless in
/// another, and the replay is blamed on whoever sent it.
#[test]
fn a_final_replayed_into_another_instance_fails() {
    let mut net = network(4, 9, &[]);
    let body = body_of(16, 5);
    let sent = body.clone();
    net.call(id(1), |cbc, party| cbc.broadcast(party, sent).unwrap());
    net.run();
    let proof = net.nodes[0].delivered().unwrap().proof.clone();
    let other = InstanceId::root("test").unwrap().child("cbc2").unwrap();
    let mut replay = Cbc::new(other.clone(), id(1));
    let message = crate::Message {
        instance: other.clone(),
        body: crate::Body::Cbc(Message::Final {
            digest: body_digest(&other, &body),
            signature: proof.signature,
        }),
    };
    let step = replay.handle_message(&mut net.parties[1], id(1), &message);
    assert_eq!(
        step.faults,
        vec![Fault {
            server: id(1),
            instance: other.clone(),
            kind: FaultKind::InvalidProof
        }]
    );
    assert!(replay.delivered().is_none());
    let moved = CbcProof {
        instance: other,
        digest: body_digest(replay.instance(), &body),
        signature: proof.signature,
    };
    assert!(!moved.verify(&mut net.parties[1]));
    // The envelope of one instance handed to another instance is rejected outright.
    let mut elsewhere = Cbc::new(InstanceId::root("elsewhere").unwrap(), id(1));
    let envelope = envelope(Message::Final {
        digest: proof.digest,
        signature: proof.signature,
    });
    let step = elsewhere.handle_message(&mut net.parties[1], id(1), &envelope);
    assert_eq!(step.faults[0].kind, FaultKind::UnexpectedMessage);
    let rbc_message = crate::Message {
        instance: instance(),
        body: crate::Body::Rbc(crate::rbc::Message::Ready { digest: [0; 32] }),
    };
    let step = net.nodes[1].handle_message(&mut net.parties[1], id(3), &rbc_message);
    assert_eq!(step.faults[0].kind, FaultKind::UnexpectedMessage);
}

#[test]
fn misuse_is_an_error() {
    let mut parties = network::parties(4, 0);
    let mut cbc = Cbc::new(instance(), id(1));
    assert_eq!(
        cbc.broadcast(&mut parties[1], vec![1]).unwrap_err(),
        CbcError::NotSender
    );
    assert_eq!(
        cbc.broadcast(&mut parties[0], vec![0; BODY_BYTES_MAX + 1])
            .unwrap_err(),
        CbcError::BodyTooLarge {
            len: BODY_BYTES_MAX + 1,
            max: BODY_BYTES_MAX
        }
    );
    assert!(cbc.broadcast(&mut parties[0], vec![1]).is_ok());
    assert_eq!(
        cbc.broadcast(&mut parties[0], vec![1]).unwrap_err(),
        CbcError::AlreadyBroadcast
    );
    assert_eq!((cbc.sender(), cbc.instance()), (id(1), &instance()));
}

fn samples() -> Vec<Message> {
    let digest = body_digest(&instance(), b"x");
    let shares = parties_shares(&digest);
    let signature = network::keys(4)
        .0
        .broadcast
        .combine(&signing_context(&instance()), &digest, &shares)
        .unwrap()
        .value;
    vec![
        Message::Send { body: vec![] },
        Message::Send {
            body: body_of(40, 2),
        },
        Message::Echo { share: shares[0] },
        Message::Final { digest, signature },
        Message::Request { digest },
        Message::Body { body: vec![5; 7] },
    ]
}

#[test]
fn encodings_roundtrip() {
    for message in samples() {
        let bytes = message.to_bytes();
        assert_eq!(Message::from_bytes(&bytes), Ok(message.clone()));
        let envelope = envelope(message);
        assert_eq!(
            crate::Message::from_bytes(&envelope.to_bytes()),
            Ok(envelope)
        );
        assert!(Message::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        for cut in 0..bytes.len() {
            assert!(Message::from_bytes(&bytes[..cut]).is_err());
        }
    }
    let Message::Final { signature, .. } = samples().remove(3) else {
        unreachable!()
    };
    let proof = CbcProof {
        instance: instance(),
        digest: body_digest(&instance(), b"x"),
        signature,
    };
    assert_eq!(CbcProof::from_bytes(&proof.to_bytes()), Ok(proof.clone()));
    let mut parties = network::parties(4, 0);
    assert!(proof.verify(&mut parties[0]));
    let mut huge = vec![0u8];
    huge.extend_from_slice(&u32::try_from(BODY_BYTES_MAX + 1).unwrap().to_be_bytes());
    assert!(Message::from_bytes(&huge).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_and_decode_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes.clone());
        }
        if let Ok(proof) = CbcProof::from_bytes(&bytes) {
            prop_assert_eq!(proof.to_bytes(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(which in 0usize..6, position in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = samples()[which].to_bytes();
        let position = position % bytes.len();
        bytes[position] = byte;
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
    }
}

/// FINAL names the body by digest only; when it overtakes the SEND, the server keeps the
/// verified proof and delivers when the SEND arrives, without echoing (the signature exists).
#[test]
fn a_final_that_overtakes_its_send_delivers_when_the_body_arrives() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[2];
    let mut cbc = Cbc::new(instance(), id(1));
    let body = body_of(24, 3);
    let digest = body_digest(&instance(), &body);
    let signature = party
        .group
        .clone()
        .broadcast
        .combine(
            &signing_context(&instance()),
            &digest,
            &parties_shares(&digest),
        )
        .unwrap()
        .value;
    let final_message = envelope(Message::Final { digest, signature });
    assert!(cbc.handle_message(party, id(1), &final_message).is_empty());
    assert!(cbc.delivered().is_none());
    // A second, different FINAL from the sender is a fault; the first proof stays.
    let other = envelope(Message::Final {
        digest: body_digest(&instance(), b"other"),
        signature,
    });
    let step = cbc.handle_message(party, id(1), &other);
    assert_eq!(step.faults[0].kind, FaultKind::UnexpectedMessage);
    // The SEND brings the body.
    let step = cbc.handle_message(party, id(1), &envelope(Message::Send { body }));
    assert!(step.faults.is_empty());
    assert!(
        step.messages.is_empty(),
        "no echo once the signature exists"
    );
    assert_eq!(step.outputs.len(), 1);
    assert_eq!(step.outputs[0].proof.digest, digest);
    assert_eq!(cbc.delivered().unwrap().body, body_of(24, 3));
}
