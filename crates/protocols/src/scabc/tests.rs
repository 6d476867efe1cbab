//! Secure causal atomic broadcast, end to end with real TDH2 and threshold signatures: all honest
//! servers deliver the same plaintexts in the same order, each once (also when submitted to
//! several servers); no honest server ever sends a decryption share for a position before its
//! atomic broadcast delivered the ciphertext there (checked on every message sent), nor for an
//! invalid ciphertext; invalid ciphertexts are never delivered; progress continues with `t`
//! silent servers; bad shares are blamed and decryption completes; encodings never panic.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};
use sintra_crypto::encoding::{Decode, Encode};

use super::*;
use crate::abc::tests::driver::{Net, Node};
use crate::rbc::tests::network::{self, id};
use crate::{Fault, Message as Envelope};

impl Node for Scabc {
    type Output = Delivered;
    fn handle(&mut self, party: &mut Party, from: ServerId, message: &Envelope) -> Step<Delivered> {
        self.handle_message(party, from, message)
    }
}

fn instance() -> InstanceId {
    InstanceId::root("test").unwrap().child("scabc").unwrap()
}

fn config() -> AbcConfig {
    AbcConfig {
        batch_requests_max: 8,
        batch_bytes_max: 8192,
        request_bytes_max: 512,
        pending_requests_max: 64,
        rounds_ahead_max: 2,
    }
}

/// The position named by a decryption instance id.
fn position_of(message: &Envelope) -> Option<u64> {
    let label = message.instance.label_below(&instance())?;
    abc::parse_decimal(label.strip_prefix('d')?)
}

/// A network whose check asserts causal secrecy on every message an honest server sends: a
/// share for position `p` leaves only after the sender's atomic broadcast delivered `p`, and
/// never for a ciphertext found invalid.
fn network(n: u16, seed: u64, silent: &[u16]) -> Net<Scabc> {
    let mut net = Net::new(n, seed, silent, |_| Scabc::new(instance(), config()));
    net.check = Some(Box::new(|scabc: &Scabc, sender, message| {
        let Body::Scabc(Message::Share { share, .. }) = &message.body else {
            return;
        };
        let position = position_of(message).expect("shares go to d<position>");
        assert!(
            scabc.abc().delivered_count() > position,
            "{sender} sent a share for position {position} before ordering it"
        );
        assert_eq!(share.id(), sender);
        let entry = scabc.positions.get(&position).expect("an ordered position");
        assert!(
            !matches!(
                entry.state,
                State::Skipped {
                    shares_expected: false
                }
            ),
            "{sender} shared an invalid ciphertext"
        );
    }));
    net
}

fn encrypt(net: &Net<Scabc>, plaintext: &[u8], seed: u64) -> Ciphertext {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    net.parties[0]
        .group
        .encryption
        .encrypt(&request_label(&instance()), plaintext, &mut rng)
        .unwrap()
}

fn plaintext(i: usize) -> Vec<u8> {
    format!("secret {i:03}").into_bytes()
}

/// Asserts that every honest server delivered exactly `expected`, each once, in one order with
/// increasing positions; returns that order.
fn assert_same_plaintexts(net: &Net<Scabc>, expected: &BTreeSet<Vec<u8>>) -> Vec<Delivered> {
    let honest = net.honest();
    let reference = net.outputs.get(&honest[0]).cloned().unwrap_or_default();
    for server in &honest {
        let outputs = net.outputs.get(server).cloned().unwrap_or_default();
        assert_eq!(outputs, reference, "{server} delivered another sequence");
        assert_eq!(
            net.nodes[server.slot()].undecrypted(),
            0,
            "{server} has unopened positions"
        );
    }
    assert!(reference.windows(2).all(|w| w[0].position < w[1].position));
    let delivered: BTreeSet<Vec<u8>> = reference.iter().map(|d| d.plaintext.clone()).collect();
    assert_eq!(
        delivered.len(),
        reference.len(),
        "a plaintext was delivered twice"
    );
    assert_eq!(&delivered, expected);
    reference
}

#[test]
fn all_honest_servers_deliver_the_same_plaintexts_once_and_never_share_before_ordering() {
    for (n, seed) in [(1u16, 0u64), (4, 1), (4, 2), (7, 3)] {
        let mut net = network(n, seed, &[]);
        let mut expected = BTreeSet::new();
        for i in 0..12 {
            let ciphertext = encrypt(&net, &plaintext(i), i as u64);
            let targets: Vec<ServerId> = if i % 4 == 0 {
                ServerId::all(n).collect()
            } else {
                vec![id(1 + (i as u16 % n))]
            };
            for target in targets {
                let ciphertext = ciphertext.clone();
                net.call(target, |scabc, party| {
                    scabc.submit(party, ciphertext).unwrap()
                });
            }
            expected.insert(plaintext(i));
        }
        net.run();
        let delivered = assert_same_plaintexts(&net, &expected);
        assert!(net.faults.is_empty(), "{:?}", net.faults);
        let per = |total: u64| total as f64 / delivered.len() as f64;
        println!(
            "scabc n={n}: {} plaintexts in {} rounds, {:.1} messages and {:.0} bytes per delivered request",
            delivered.len(),
            net.nodes[0].abc().round(),
            per(net.messages),
            per(net.bytes)
        );
    }
}

#[test]
fn invalid_ciphertexts_are_ordered_but_never_shared_or_delivered() {
    let mut net = network(4, 4, &[]);
    let valid = encrypt(&net, b"valid", 1);
    let other_label = net.parties[0]
        .group
        .encryption
        .encrypt(
            &Context::new(REQUEST_PURPOSE, b"another instance"),
            b"replayed",
            &mut ChaCha20Rng::seed_from_u64(2),
        )
        .unwrap();
    // A Byzantine server's batch could carry anything; here an honest server's atomic broadcast
    // is handed the bytes directly, which puts them into the order the same way.
    let mut truncated = encrypt(&net, b"cut", 3).to_bytes();
    truncated.pop();
    let invalid = [
        other_label.to_bytes(),
        truncated,
        b"not a ciphertext".to_vec(),
    ];
    for (k, bytes) in invalid.iter().enumerate() {
        let at = id(1 + k as u16);
        let bytes = bytes.clone();
        net.call(at, |scabc, party| {
            let step = scabc.abc.submit(party, bytes).unwrap();
            let mut lifted = Step::new();
            scabc.on_ordering_step(party, step, &mut lifted);
            lifted
        });
    }
    net.call(id(4), |scabc, party| scabc.submit(party, valid).unwrap());
    net.run();
    let delivered = assert_same_plaintexts(&net, &BTreeSet::from([b"valid".to_vec()]));
    assert_eq!(
        net.nodes[0].abc().delivered_count(),
        4,
        "all four were ordered"
    );
    assert_eq!(net.nodes[0].next_position(), 4, "and passed");
    assert_eq!(delivered.len(), 1);
    assert!(net.faults.is_empty(), "{:?}", net.faults);
}

#[test]
fn progress_continues_with_t_silent_servers() {
    let mut net = network(4, 6, &[3]);
    let mut expected = BTreeSet::new();
    for i in 0..6 {
        let ciphertext = encrypt(&net, &plaintext(i), 10 + i as u64);
        // To t + 1 honest servers.
        for target in [id(1 + (i as u16 % 2)), id(4)] {
            let ciphertext = ciphertext.clone();
            net.call(target, |scabc, party| {
                scabc.submit(party, ciphertext).unwrap()
            });
        }
        expected.insert(plaintext(i));
    }
    net.run();
    assert_same_plaintexts(&net, &expected);
    net.assert_no_honest_blamed();
}

/// Server 4 is Byzantine (silent, but the test speaks for it): before anything is ordered it
/// sends, for position 0, a valid share of *another* ciphertext. Whoever combines with it finds
/// the combination fails, blames server 4, and opens with the honest shares.
#[test]
fn a_bad_share_is_blamed_and_decryption_completes() {
    let mut blamed = false;
    for seed in 0..4 {
        let mut net = network(4, 20 + seed, &[4]);
        let ciphertext = encrypt(&net, b"payload", 5);
        let decoy = encrypt(&net, b"decoy", 6);
        let id_ = instance();
        let label = request_label(&id_);
        let keys = net.parties[3].keys.clone();
        let share = keys
            .encryption
            .decryption_share(&label, &decoy, &mut ChaCha20Rng::seed_from_u64(7))
            .unwrap();
        let bad = Envelope {
            instance: instance().child("d0").unwrap(),
            body: Body::Scabc(Message::Share {
                share: Box::new(share),
                wants_reply: false,
            }),
        };
        net.inject(id(4), crate::Target::All, bad);
        for target in [id(1), id(2)] {
            let ciphertext = ciphertext.clone();
            net.call(target, |scabc, party| {
                scabc.submit(party, ciphertext).unwrap()
            });
        }
        net.run();
        assert_same_plaintexts(&net, &BTreeSet::from([b"payload".to_vec()]));
        net.assert_no_honest_blamed();
        for (_, fault) in &net.faults {
            assert_eq!(fault.kind, FaultKind::InvalidShare);
        }
        blamed |= !net.faults.is_empty();
    }
    assert!(blamed, "some run combined with the bad share");
}

/// A server that asks for replies (it dropped shares as too early) gets each opened position's
/// share once from every server that opened it; servers still decrypting send theirs anyway.
#[test]
fn servers_that_opened_a_position_answer_a_request_for_replies_once() {
    let mut net = network(4, 30, &[]);
    let ciphertext = encrypt(&net, b"answered", 1);
    net.call(id(1), |scabc, party| {
        scabc.submit(party, ciphertext.clone()).unwrap()
    });
    net.run();
    assert_same_plaintexts(&net, &BTreeSet::from([b"answered".to_vec()]));
    let keys = net.parties[2].keys.clone();
    let share = keys
        .encryption
        .decryption_share(
            &request_label(&instance()),
            &ciphertext,
            &mut ChaCha20Rng::seed_from_u64(4),
        )
        .unwrap();
    let asking = Envelope {
        instance: instance().child("d0").unwrap(),
        body: Body::Scabc(Message::Share {
            share: Box::new(share),
            wants_reply: true,
        }),
    };
    let (scabc, party) = (&mut net.nodes[1], &mut net.parties[1]);
    let step = scabc.handle_message(party, id(3), &asking);
    assert!(step.faults.is_empty());
    assert!(matches!(
        &step.messages[..],
        [out] if out.to == crate::Target::Server(id(3))
            && matches!(&out.message.body, Body::Scabc(Message::Share { share, wants_reply: false }) if share.id() == id(2))
    ));
    assert!(
        scabc
            .handle_message(party, id(3), &asking)
            .messages
            .is_empty(),
        "once"
    );
}

/// Server 4's incoming messages are held while the others order and open several
/// ciphertexts over several rounds, then released: it catches up (atomic broadcast's catch-up
/// underneath) and delivers the same plaintexts.
#[test]
fn a_server_that_fell_behind_delivers_the_same_plaintexts() {
    let mut net = Net::new(4, 31, &[], |_| {
        Scabc::new(
            instance(),
            AbcConfig {
                rounds_ahead_max: 1,
                ..config()
            },
        )
    });
    net.hold(id(4));
    let mut expected = BTreeSet::new();
    for i in 0..3 {
        let ciphertext = encrypt(&net, &plaintext(i), 40 + i as u64);
        net.call(id(1 + i as u16), |scabc, party| {
            scabc.submit(party, ciphertext).unwrap()
        });
        expected.insert(plaintext(i));
        net.run();
    }
    assert!(net.nodes[0].abc().round() >= 3);
    net.release(id(4));
    net.run();
    assert_same_plaintexts(&net, &expected);
    assert!(net.faults.is_empty(), "{:?}", net.faults);
}

/// Server 4 is rebuilt with [`Scabc::resume`] between two bursts (every position opened): it
/// continues at the same positions and delivers the same plaintexts as the others.
#[test]
fn a_server_resumed_where_its_log_ends_continues_with_the_others() {
    let mut net = network(4, 9, &[]);
    let mut expected = BTreeSet::new();
    for i in 0..6 {
        let ciphertext = encrypt(&net, &plaintext(i), i as u64);
        net.call(id(1 + (i as u16 % 4)), |scabc, party| {
            scabc.submit(party, ciphertext).unwrap()
        });
        expected.insert(plaintext(i));
    }
    net.run();
    let old = &net.nodes[3];
    assert_eq!(old.undecrypted(), 0);
    let (round, count) = (old.abc().round(), old.abc().delivered_count());
    net.nodes[3] = Scabc::resume(instance(), config(), round, count, []);
    assert_eq!(net.nodes[3].next_position(), count);
    for i in 6..12 {
        let ciphertext = encrypt(&net, &plaintext(i), i as u64);
        net.call(id(1 + (i as u16 % 4)), |scabc, party| {
            scabc.submit(party, ciphertext).unwrap()
        });
        expected.insert(plaintext(i));
    }
    net.run();
    assert_same_plaintexts(&net, &expected);
    assert!(net.faults.is_empty(), "{:?}", net.faults);
}

fn kinds(faults: &[Fault]) -> Vec<(u16, FaultKind)> {
    faults.iter().map(|f| (f.server.get(), f.kind)).collect()
}

#[test]
fn forwarded_equivocated_or_misaddressed_shares_are_blamed_and_a_share_made_again_is_not() {
    let mut parties = network::parties(4, 0);
    let group = parties[0].group.clone();
    let mut scabc = Scabc::new(instance(), config());
    let ciphertext = group
        .encryption
        .encrypt(
            &request_label(&instance()),
            b"x",
            &mut ChaCha20Rng::seed_from_u64(1),
        )
        .unwrap();
    let share_of = |party: &mut Party| {
        party
            .keys
            .encryption
            .decryption_share(&request_label(&instance()), &ciphertext, &mut party.rng)
            .unwrap()
    };
    let share2 = share_of(&mut parties[1]);
    let message = |position: u64, share: &DecryptionShare| Envelope {
        instance: instance().child(&format!("d{position}")).unwrap(),
        body: Body::Scabc(Message::Share {
            share: Box::new(share.clone()),
            wants_reply: false,
        }),
    };
    let party = &mut parties[0];
    // Server 3 forwarding server 2's share.
    let step = scabc.handle_message(party, id(3), &message(0, &share2));
    assert_eq!(kinds(&step.faults), [(3, FaultKind::UnexpectedMessage)]);
    // An early share is kept; a different second one is equivocation.
    assert!(
        scabc
            .handle_message(party, id(2), &message(0, &share2))
            .is_empty()
    );
    // The same share made again (after a restart): the same value with another proof, which
    // contradicts nothing.
    let again = share_of(&mut parties[1]);
    assert_ne!(again, share2);
    let party = &mut parties[0];
    assert!(
        scabc
            .handle_message(party, id(2), &message(0, &again))
            .is_empty()
    );
    // A share of another value for the same position is equivocation.
    let other = group
        .encryption
        .encrypt(
            &request_label(&instance()),
            b"y",
            &mut ChaCha20Rng::seed_from_u64(2),
        )
        .unwrap();
    let party = &mut parties[1];
    let different = party
        .keys
        .encryption
        .decryption_share(&request_label(&instance()), &other, &mut party.rng)
        .unwrap();
    let party = &mut parties[0];
    let step = scabc.handle_message(party, id(2), &message(0, &different));
    assert_eq!(kinds(&step.faults), [(2, FaultKind::Equivocation)]);
    // Messages outside d<p>, or not shares, are blamed.
    for bad in [
        Envelope {
            instance: instance().child("d01").unwrap(),
            ..message(0, &share2)
        },
        Envelope {
            instance: instance().child("d1").unwrap().child("x").unwrap(),
            ..message(0, &share2)
        },
        Envelope {
            instance: instance().child("d1").unwrap(),
            body: Body::Abc(crate::abc::Message::CatchUp { round: 0 }),
        },
    ] {
        let step = scabc.handle_message(party, id(2), &bad);
        assert_eq!(
            kinds(&step.faults),
            [(2, FaultKind::UnexpectedMessage)],
            "{bad:?}"
        );
    }
}

/// Server 4 is Byzantine: it sends a share for position 0, where an invalid ciphertext gets
/// ordered. No honest server shares an invalid ciphertext, so every honest server blames it,
/// whether the share came before or after the ordering.
#[test]
fn a_share_for_an_invalid_ciphertext_is_blamed() {
    let mut net = network(4, 8, &[4]);
    let decoy = encrypt(&net, b"decoy", 6);
    let keys = net.parties[3].keys.clone();
    let share = keys
        .encryption
        .decryption_share(
            &request_label(&instance()),
            &decoy,
            &mut ChaCha20Rng::seed_from_u64(7),
        )
        .unwrap();
    net.inject(
        id(4),
        crate::Target::All,
        Envelope {
            instance: instance().child("d0").unwrap(),
            body: Body::Scabc(Message::Share {
                share: Box::new(share),
                wants_reply: false,
            }),
        },
    );
    net.call(id(1), |scabc, party| {
        let step = scabc.abc.submit(party, b"garbage".to_vec()).unwrap();
        let mut lifted = Step::new();
        scabc.on_ordering_step(party, step, &mut lifted);
        lifted
    });
    net.run();
    assert_same_plaintexts(&net, &BTreeSet::new());
    let mut blamers: Vec<u16> = net
        .faults
        .iter()
        .map(|(observer, fault)| {
            assert_eq!(
                (fault.server, fault.kind),
                (id(4), FaultKind::UnexpectedMessage)
            );
            observer.get()
        })
        .collect();
    blamers.sort_unstable();
    assert_eq!(blamers, [1, 2, 3]);
}

#[test]
fn a_single_server_skips_invalid_ciphertexts_in_order() {
    let mut net = network(1, 0, &[]);
    net.call(id(1), |scabc, party| {
        let step = scabc.abc.submit(party, b"garbage".to_vec()).unwrap();
        let mut lifted = Step::new();
        scabc.on_ordering_step(party, step, &mut lifted);
        lifted
    });
    net.run();
    assert_eq!(net.nodes[0].next_position(), 1);
    let ciphertext = encrypt(&net, b"ok", 3);
    let ciphertext_digest: [u8; 32] = Sha256::digest(ciphertext.to_bytes()).into();
    net.call(id(1), |scabc, party| {
        scabc.submit(party, ciphertext).unwrap()
    });
    net.run();
    assert_eq!(
        net.outputs[&id(1)],
        [Delivered {
            position: 1,
            plaintext: b"ok".to_vec(),
            ciphertext_digest,
        }]
    );
}

#[test]
fn submit_refuses_invalid_ciphertexts_and_pushes_back() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[0];
    let mut scabc = Scabc::new(
        instance(),
        AbcConfig {
            pending_requests_max: 2,
            ..config()
        },
    );
    let key = party.group.encryption.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let wrong = key
        .encrypt(&Context::new(REQUEST_PURPOSE, b"elsewhere"), b"x", &mut rng)
        .unwrap();
    assert_eq!(
        scabc.submit(party, wrong).err(),
        Some(ScabcError::InvalidCiphertext)
    );
    for i in 0..2 {
        let ciphertext = key
            .encrypt(&request_label(&instance()), &plaintext(i), &mut rng)
            .unwrap();
        assert!(scabc.submit(party, ciphertext).is_ok());
    }
    let third = key
        .encrypt(&request_label(&instance()), b"3", &mut rng)
        .unwrap();
    assert_eq!(
        scabc.submit(party, third).err(),
        Some(ScabcError::Abc(AbcError::QueueFull { max: 2 }))
    );
    let large = key
        .encrypt(&request_label(&instance()), &[0; 600], &mut rng)
        .unwrap();
    assert!(matches!(
        scabc.submit(party, large).err(),
        Some(ScabcError::Abc(AbcError::TooLarge { .. }))
    ));
}

fn sample() -> Message {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[0];
    let ciphertext = party
        .group
        .encryption
        .encrypt(
            &request_label(&instance()),
            b"s",
            &mut ChaCha20Rng::seed_from_u64(1),
        )
        .unwrap();
    let share = party
        .keys
        .encryption
        .decryption_share(&request_label(&instance()), &ciphertext, &mut party.rng)
        .unwrap();
    Message::Share {
        share: Box::new(share),
        wants_reply: true,
    }
}

#[test]
fn encodings_roundtrip() {
    let message = sample();
    let bytes = message.to_bytes();
    assert_eq!(bytes.len(), 2 + sintra_crypto::tdh2::DECRYPTION_SHARE_BYTES);
    assert_eq!(Message::from_bytes(&bytes), Ok(message.clone()));
    let envelope = Envelope {
        instance: instance().child("d3").unwrap(),
        body: Body::Scabc(message),
    };
    assert_eq!(Envelope::from_bytes(&envelope.to_bytes()), Ok(envelope));
    for cut in 0..bytes.len() {
        assert!(Message::from_bytes(&bytes[..cut]).is_err());
    }
    let mut flag = bytes.clone();
    flag[1] = 2;
    assert!(Message::from_bytes(&flag).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_and_mutated_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), position in any::<usize>(), byte in any::<u8>()) {
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
        let mut mutated = sample().to_bytes();
        let position = position % mutated.len();
        mutated[position] = byte;
        if let Ok(message) = Message::from_bytes(&mutated) {
            prop_assert_eq!(message.to_bytes(), mutated);
        }
    }
}

/// The simulator's self-check bug: with `DecryptBeforeOrdering` switched on, shares leave before
/// ordering, and the check of this file's driver sees it.
#[cfg(feature = "mutations")]
#[test]
fn the_decrypt_before_ordering_mutation_is_caught_by_the_check() {
    use std::cell::Cell;
    use std::rc::Rc;

    use crate::mutation::{Mutation, with_active};

    let early = Rc::new(Cell::new(0));
    let counter = early.clone();
    let mut net = Net::new(4, 50, &[], |_| Scabc::new(instance(), config()));
    net.check = Some(Box::new(move |scabc: &Scabc, _, message| {
        if let Some(position) = position_of(message)
            && scabc.abc().delivered_count() <= position
        {
            counter.set(counter.get() + 1);
        }
    }));
    let ciphertext = encrypt(&net, b"leaked", 1);
    with_active(&[Mutation::DecryptBeforeOrdering], || {
        net.call(id(1), |scabc, party| {
            scabc.submit(party, ciphertext).unwrap()
        });
        net.run();
    });
    assert!(early.get() > 0, "a share left before ordering");
}
