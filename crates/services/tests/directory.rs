//! The directory: an owner creates an entry at version 1 and updates it one version at a time;
//! replays, stale or skipped versions, another key's writes, forged signatures and oversize
//! fields are refused with the documented HTTP status and change nothing; lookups (absence
//! included) signed with real threshold RSA verify with the service key alone, and changing any
//! one character of the value, the signature or the position in the JSON breaks them; two
//! instances agree and snapshots restore canonically; no input panics.
//!
//! Local lookups: the state statement signed once (real threshold RSA) proves every entry and
//! every absence of a directory of any size; any changed character of a local answer, another
//! service key, neighbours that are not adjacent or do not enclose the key all fail; random
//! bytes and random keys never panic.

use std::sync::{Arc, OnceLock};

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa;
use sintra_services::directory::{
    self, Directory, DirectoryError, KEY_BYTES_MAX, PutBody, STATE_DOMAIN, SignedState,
    StateStatement, VALUE_BYTES_MAX, encode_get, encode_put, encode_put_json, put_message,
    verify_local_lookup, verify_lookup,
};
use sintra_services::{ExecutionContext, Service};

/// One group of 4 (t = 1) around a 1024-bit modulus, dealt once per test binary.
fn group() -> &'static (GroupKeys, Vec<ServerKeys>) {
    static GROUP: OnceLock<(GroupKeys, Vec<ServerKeys>)> = OnceLock::new();
    GROUP.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([13; 32]);
        let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
        let parameters = GroupParameters::new(4, None).unwrap();
        deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).unwrap()
    })
}

fn service_key() -> &'static rsa::PublicKey {
    &group().0.service
}

/// The service key of another group.
fn other_service_key() -> &'static rsa::PublicKey {
    static OTHER: OnceLock<GroupKeys> = OnceLock::new();
    &OTHER
        .get_or_init(|| {
            let mut rng = ChaCha20Rng::from_seed([99; 32]);
            let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
            deal_with_primes(
                GroupParameters::new(4, None).unwrap(),
                &primes,
                &mut rng,
                &mut |_| {},
            )
            .unwrap()
            .0
        })
        .service
}

/// Shares of servers 2 and 3 over `message`, combined.
fn threshold_sign(message: &[u8]) -> rsa::Signature {
    let (group, servers) = group();
    let shares: Vec<_> = servers[1..3]
        .iter()
        .map(|server| server.service.sign(&group.service, message))
        .collect();
    group.service.combine(message, &shares).unwrap()
}

/// The directory's state as a checkpoint signs it.
fn sign_state(directory: &Directory, round: u64, height: u64, time_ms: u64) -> SignedState {
    let tree = Arc::new(directory.state_tree());
    let statement = tree.statement(round, height, time_ms);
    let signature = threshold_sign(&statement.encode());
    SignedState::new(statement, signature.as_bytes().to_vec(), tree).unwrap()
}

/// execute → signing_message → shares of servers 2 and 3 → combine → complete.
fn serve(directory: &mut Directory, position: u64, request: &[u8]) -> Vec<u8> {
    let context = ExecutionContext {
        position,
        round: position,
        time_ms: 0,
    };
    let answer = directory.execute(&context, request);
    match directory.signing_message(request, &answer) {
        Some(message) => {
            let signature = threshold_sign(&message);
            directory.complete(request, &answer, signature.as_bytes())
        }
        None => directory.complete(request, &answer, &[]),
    }
}

fn owner(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn put(signer: &SigningKey, key: &str, value: &[u8], version: u64) -> Vec<u8> {
    let message = put_message(key, value, version).unwrap();
    encode_put(
        &[version as u8; 16],
        &directory::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            version,
            owner: signer.verifying_key().to_bytes(),
            signature: signer.sign(&message).to_bytes(),
        },
    )
    .unwrap()
}

fn get(key: &str) -> Vec<u8> {
    encode_get(&[0; 16], key).unwrap()
}

/// The status of a completed answer and, for an error, checks there is a message.
fn status(completed: &[u8]) -> u16 {
    let reply = directory::http_reply(completed.to_vec());
    assert_eq!(reply.content_type, "application/json");
    if reply.status >= 400 && reply.status != 404 {
        let json: serde_json::Value = serde_json::from_slice(completed).unwrap();
        assert!(!json["error"].as_str().unwrap().is_empty());
    }
    reply.status
}

#[test]
fn owners_create_and_update_and_lookups_verify() {
    let mut directory = Directory::new();
    let alice = owner(1);
    let receipt = serve(
        &mut directory,
        0,
        &put(&alice, "alice/mail", b"alice@example.org", 1),
    );
    assert_eq!(status(&receipt), 200);
    let stated = verify_lookup(&receipt, service_key()).unwrap();
    assert_eq!(stated.position, 0);
    assert_eq!(stated.entry.as_ref().unwrap().version, 1);

    let updated = serve(
        &mut directory,
        1,
        &put(&alice, "alice/mail", b"a@example.net", 2),
    );
    assert_eq!(status(&updated), 200);

    let lookup = serve(&mut directory, 7, &get("alice/mail"));
    assert_eq!(status(&lookup), 200);
    let stated = verify_lookup(&lookup, service_key()).unwrap();
    assert_eq!(stated.key, "alice/mail");
    assert_eq!(stated.position, 7);
    let entry = stated.entry.unwrap();
    assert_eq!(entry.value, b"a@example.net");
    assert_eq!(entry.version, 2);
    assert_eq!(entry.owner, alice.verifying_key().to_bytes());

    // The JSON has the documented fields, value in lowercase hex.
    let json: serde_json::Value = serde_json::from_slice(&lookup).unwrap();
    assert_eq!(json["found"], true);
    assert_eq!(json["key"], "alice/mail");
    assert_eq!(json["value"], hex::encode(b"a@example.net"));
    assert_eq!(json["version"], 2);
    assert_eq!(json["position"], 7);
    assert_eq!(json["owner"], hex::encode(alice.verifying_key().to_bytes()));
    assert_eq!(json["signature"].as_str().unwrap().len(), 256);
}

#[test]
fn openssl_verifies_the_statement_with_the_service_key() {
    let mut directory = Directory::new();
    serve(&mut directory, 0, &put(&owner(1), "k", b"v", 1));
    let lookup = serve(&mut directory, 1, &get("k"));
    let stated = verify_lookup(&lookup, service_key()).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&lookup).unwrap();
    let signature = hex::decode(json["signature"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("statement.bin"), stated.statement()).unwrap();
    std::fs::write(dir.path().join("sig.bin"), signature).unwrap();
    std::fs::write(
        dir.path().join("service-key.pem"),
        service_key().to_public_key_pem(),
    )
    .unwrap();
    let output = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "service-key.pem",
            "-signature",
            "sig.bin",
            "statement.bin",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Verified OK"), "{stdout}");
}

#[test]
fn absence_is_a_signed_statement() {
    let mut directory = Directory::new();
    let lookup = serve(&mut directory, 3, &get("nobody"));
    assert_eq!(status(&lookup), 404);
    let stated = verify_lookup(&lookup, service_key()).unwrap();
    assert_eq!(stated.key, "nobody");
    assert_eq!(stated.position, 3);
    assert_eq!(stated.entry, None);
    let json: serde_json::Value = serde_json::from_slice(&lookup).unwrap();
    assert_eq!(json["found"], false);
    assert!(json.get("value").is_none());
}

#[test]
fn replays_stale_versions_other_owners_and_forgeries_are_refused() {
    let mut directory = Directory::new();
    let alice = owner(1);
    let mallory = owner(2);
    let first = put(&alice, "k", b"v1", 1);
    let second = put(&alice, "k", b"v2", 2);
    assert_eq!(status(&serve(&mut directory, 0, &first)), 200);
    assert_eq!(status(&serve(&mut directory, 1, &second)), 200);
    let before = directory.snapshot();

    // A replay of either put, and a put skipping a version.
    assert_eq!(status(&serve(&mut directory, 2, &first)), 409);
    assert_eq!(status(&serve(&mut directory, 3, &second)), 409);
    assert_eq!(
        status(&serve(&mut directory, 4, &put(&alice, "k", b"v4", 4))),
        409
    );
    assert_eq!(
        status(&serve(&mut directory, 4, &put(&alice, "k", b"x", u64::MAX))),
        409
    );
    // Another key, correctly signed by itself, for the right next version.
    assert_eq!(
        status(&serve(&mut directory, 5, &put(&mallory, "k", b"mine", 3))),
        403
    );
    // Alice's key with Mallory's signature; a signature over another value.
    let mut forged = put(&alice, "k", b"evil", 3);
    let signature_at = forged.len() - 64;
    forged[signature_at..].copy_from_slice(
        &mallory
            .sign(&put_message("k", b"evil", 3).unwrap())
            .to_bytes(),
    );
    assert_eq!(status(&serve(&mut directory, 6, &forged)), 403);
    let mut altered = put(&alice, "k", b"good", 3);
    let value_at = 1 + 16 + 2 + 1 + 4;
    altered[value_at] = b'f';
    assert_eq!(status(&serve(&mut directory, 7, &altered)), 403);
    // A new entry must start at version 1.
    assert_eq!(
        status(&serve(&mut directory, 8, &put(&alice, "new", b"v", 2))),
        409
    );
    assert_eq!(directory.snapshot(), before, "refusals change nothing");

    // The right next version still goes through.
    assert_eq!(
        status(&serve(&mut directory, 9, &put(&alice, "k", b"v3", 3))),
        200
    );
    assert_eq!(directory.get("k").unwrap().version, 3);
}

#[test]
fn oversize_and_malformed_requests_are_refused() {
    let mut directory = Directory::new();
    let alice = owner(1);
    let long_key = "k".repeat(KEY_BYTES_MAX + 1);
    let long_value = vec![0u8; VALUE_BYTES_MAX + 1];
    assert!(matches!(
        put_message(&long_key, b"v", 1),
        Err(DirectoryError::TooLong { .. })
    ));
    assert!(matches!(
        put_message("k", &long_value, 1),
        Err(DirectoryError::TooLong { .. })
    ));
    assert!(encode_get(&[0; 16], &long_key).is_err());
    assert!(encode_get(&[0; 16], "").is_err());
    // The longest key and value are accepted.
    let max_key = "m".repeat(KEY_BYTES_MAX);
    let max_value = vec![7u8; VALUE_BYTES_MAX];
    assert_eq!(
        status(&serve(
            &mut directory,
            0,
            &put(&alice, &max_key, &max_value, 1)
        )),
        200
    );

    // Hand-made requests past the bounds, whatever the signature.
    let mut oversize = vec![0x30];
    oversize.extend_from_slice(&[0; 16]);
    oversize.extend_from_slice(&1u16.to_be_bytes());
    oversize.push(b'k');
    oversize.extend_from_slice(&((VALUE_BYTES_MAX + 1) as u32).to_be_bytes());
    oversize.extend_from_slice(&long_value);
    oversize.extend_from_slice(&[0; 8 + 32 + 64]);
    assert_eq!(status(&serve(&mut directory, 1, &oversize)), 413);
    let mut long_key_get = vec![0x31];
    long_key_get.extend_from_slice(&[0; 16]);
    long_key_get.extend_from_slice(&((KEY_BYTES_MAX + 1) as u16).to_be_bytes());
    long_key_get.extend_from_slice(long_key.as_bytes());
    assert_eq!(status(&serve(&mut directory, 2, &long_key_get)), 413);

    let mut not_utf8 = vec![0x31];
    not_utf8.extend_from_slice(&[0; 16]);
    not_utf8.extend_from_slice(&2u16.to_be_bytes());
    not_utf8.extend_from_slice(&[0xff, 0xfe]);
    for request in [
        &not_utf8[..],
        &[0x32; 30],
        &[0x31, 1, 2],
        &[],
        &[get("k"), vec![0]].concat(),
    ] {
        assert_eq!(status(&serve(&mut directory, 3, request)), 400);
    }
    assert_eq!(directory.len(), 1);
}

#[test]
fn a_full_directory_refuses_new_entries() {
    let mut directory = Directory::with_limits(1, 10);
    let alice = owner(1);
    assert_eq!(
        status(&serve(&mut directory, 0, &put(&alice, "a", b"1", 1))),
        200
    );
    assert_eq!(
        status(&serve(&mut directory, 1, &put(&alice, "b", b"1", 1))),
        507
    );
    assert_eq!(
        status(&serve(
            &mut directory,
            2,
            &put(&alice, "a", b"1234567890", 2)
        )),
        507
    );
    assert_eq!(
        status(&serve(
            &mut directory,
            3,
            &put(&alice, "a", b"123456789", 2)
        )),
        200
    );
}

/// The JSON with the character at byte `at` replaced by `with`.
fn replaced(json: &[u8], at: usize, with: u8) -> Vec<u8> {
    let mut out = json.to_vec();
    out[at] = with;
    out
}

/// The byte range of a field's value text in the JSON (a string's contents or a number).
fn field_range(json: &[u8], field: &str) -> std::ops::Range<usize> {
    let text = std::str::from_utf8(json).unwrap();
    let marker = format!("\"{field}\":");
    let start = text.find(&marker).unwrap() + marker.len();
    let rest = &text[start..];
    if let Some(stripped) = rest.strip_prefix('"') {
        let len = stripped.find('"').unwrap();
        start + 1..start + 1 + len
    } else {
        let len = rest.find([',', '}']).unwrap();
        start..start + len
    }
}

#[test]
fn changing_any_character_of_value_signature_or_position_breaks_a_lookup() {
    let mut directory = Directory::new();
    let alice = owner(1);
    serve(&mut directory, 0, &put(&alice, "k", b"the value", 1));
    let lookup = serve(&mut directory, 12345, &get("k"));
    assert!(verify_lookup(&lookup, service_key()).is_ok());
    let absent = serve(&mut directory, 777, &get("nothing here"));
    assert!(verify_lookup(&absent, service_key()).is_ok());

    let mut checked = 0;
    for (json, fields) in [
        (
            &lookup,
            &["value", "signature", "position", "version", "owner", "key"][..],
        ),
        (&absent, &["signature", "position", "key"][..]),
    ] {
        for field in fields {
            for at in field_range(json, field) {
                let original = json[at];
                // Another character of the same kind, so the JSON still parses.
                let others: &[u8] = if original.is_ascii_digit() {
                    b"0123456789"
                } else {
                    b"0123456789abcdefABCDEF"
                };
                for &with in others.iter().filter(|&&c| c != original) {
                    let damaged = replaced(json, at, with);
                    assert!(
                        verify_lookup(&damaged, service_key()).is_err(),
                        "{field} byte {at} {} -> {}",
                        original as char,
                        with as char
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 5000);
    // Flipping found, dropping or adding a field.
    let text = String::from_utf8(lookup.clone()).unwrap();
    assert!(verify_lookup(text.replace("true", "false").as_bytes(), service_key()).is_err());
    let absent_text = String::from_utf8(absent.clone()).unwrap();
    assert!(
        verify_lookup(
            absent_text.replace("false", "true").as_bytes(),
            service_key()
        )
        .is_err()
    );
    let extra = text.replacen('{', "{\"extra\":1,", 1);
    assert!(verify_lookup(extra.as_bytes(), service_key()).is_err());
    // Another service key.
    assert_eq!(
        verify_lookup(&lookup, other_service_key()),
        Err(DirectoryError::ServiceSignature)
    );
}

#[test]
fn the_gateway_builds_puts_from_the_json_body() {
    let alice = owner(4);
    let signature = alice.sign(&put_message("name", b"\x00\x01", 1).unwrap());
    let body = PutBody {
        value: "0001".into(),
        version: 1,
        owner: hex::encode(alice.verifying_key().to_bytes()),
        signature: hex::encode(signature.to_bytes()),
    };
    let json = serde_json::to_vec(&body).unwrap();
    let request = encode_put_json(&[5; 16], "name", &json).unwrap();
    let mut directory = Directory::new();
    assert_eq!(status(&serve(&mut directory, 0, &request)), 200);
    assert_eq!(directory.get("name").unwrap().value, b"\x00\x01");

    let upper = PutBody {
        value: "00AB".into(),
        ..body.clone()
    };
    assert!(encode_put_json(&[5; 16], "name", &serde_json::to_vec(&upper).unwrap()).is_err());
    assert!(encode_put_json(&[5; 16], "name", b"{\"value\":\"00\"}").is_err());
    assert!(encode_put_json(&[5; 16], "", &json).is_err());
}

#[test]
fn two_instances_agree_and_snapshots_restore() {
    let mut first = Directory::new();
    let mut second = Directory::new();
    let keys = ["a", "b", "c", "d"];
    for position in 0..40u64 {
        let signer = owner(position as u8 % 3);
        let key = keys[position as usize % keys.len()];
        let request = match position % 4 {
            0 | 1 => put(&signer, key, &position.to_be_bytes(), position / 8 + 1),
            2 => get(key),
            _ => vec![position as u8; 5],
        };
        let context = ExecutionContext {
            position,
            round: 0,
            time_ms: 0,
        };
        let a = first.execute(&context, &request);
        let b = second.execute(&context, &request);
        assert_eq!(a, b);
        assert_eq!(
            first.signing_message(&request, &a),
            second.signing_message(&request, &b)
        );
        assert_eq!(first.snapshot(), second.snapshot());
        assert_eq!(first.state_tree(), second.state_tree());
    }
    assert!(!first.is_empty());
    let mut restored = Directory::new();
    restored.restore(&first.snapshot()).unwrap();
    assert_eq!(restored, first);
    assert_eq!(restored.snapshot(), first.snapshot());
    assert_eq!(restored.state_tree().root(), first.state_tree().root());

    // A snapshot over the bounds, truncated, or with trailing bytes is refused.
    let mut small = Directory::with_limits(1, 1 << 20);
    assert!(small.restore(&first.snapshot()).is_err());
    assert!(small.is_empty());
    let snapshot = first.snapshot();
    assert!(restored.restore(&snapshot[..snapshot.len() - 1]).is_err());
    assert!(
        restored
            .restore(&[snapshot.clone(), vec![0]].concat())
            .is_err()
    );
    assert_eq!(restored, first);
}

// ---------------------------------------------------------------------------------------------
// Local lookups.

/// A directory with `count` entries under the keys `k00`, `k02`, `k04`, ... (odd numbers are
/// free for absent keys), values and owners varying.
fn directory_of(count: usize) -> Directory {
    let mut directory = Directory::new();
    for index in 0..count {
        let key = format!("k{:02}", 2 * index);
        let value = format!("value {index}").repeat(index % 3 + 1);
        let signer = owner(index as u8 % 4);
        let receipt = serve(
            &mut directory,
            index as u64,
            &put(&signer, &key, value.as_bytes(), 1),
        );
        assert_eq!(status(&receipt), 200);
    }
    assert_eq!(directory.len(), count);
    directory
}

#[test]
fn local_lookups_prove_every_entry_and_every_absence() {
    for count in [0usize, 1, 2, 3, 5, 8, 13] {
        let directory = directory_of(count);
        let signed = sign_state(
            &directory,
            39,
            count as u64,
            1_700_000_000_000 + count as u64,
        );
        let statement = *signed.statement();
        assert_eq!(statement.count, count as u64);
        for index in 0..=2 * count + 1 {
            let key = format!("k{index:02}");
            let reply = signed.http_reply(&key);
            let json = &reply.body;
            let verified = verify_local_lookup(json, service_key())
                .unwrap_or_else(|error| panic!("{count} entries, {key}: {error}"));
            assert_eq!(verified.key, key);
            assert_eq!(verified.state, statement);
            assert_eq!(verified.entry.as_ref(), directory.get(&key), "{key}");
            let expected = if index % 2 == 0 && index < 2 * count {
                200
            } else {
                404
            };
            assert_eq!(reply.status, expected);
            // An ordered lookup answer is not a local one, and the other way round.
            assert!(verify_lookup(json, service_key()).is_err());
        }
        // Keys below and above every entry.
        let highest = "\u{10ffff}".repeat(64);
        for key in ["a", "k", "k000", "z", highest.as_str()] {
            let verified = verify_local_lookup(&signed.lookup(key).unwrap(), service_key())
                .unwrap_or_else(|error| panic!("{count} entries, {key:?}: {error}"));
            assert_eq!((verified.key.as_str(), verified.entry), (key, None));
        }
        assert!(signed.lookup("").is_err());
        assert_eq!(signed.http_reply("").status, 400);
        assert!(signed.lookup(&"x".repeat(KEY_BYTES_MAX + 1)).is_err());
    }
    // The longest key and value still fit the bound a verifier reads.
    let mut directory = Directory::new();
    let key = "m".repeat(KEY_BYTES_MAX);
    serve(
        &mut directory,
        0,
        &put(&owner(1), &key, &vec![0xee; VALUE_BYTES_MAX], 1),
    );
    let signed = sign_state(&directory, 3, 1, 0);
    let verified = verify_local_lookup(&signed.lookup(&key).unwrap(), service_key()).unwrap();
    assert_eq!(verified.entry.unwrap().value.len(), VALUE_BYTES_MAX);
}

#[test]
fn the_state_statement_is_canonical_and_openssl_verifies_it() {
    let directory = directory_of(5);
    let signed = sign_state(&directory, 7, 5, 1234);
    let statement = *signed.statement();
    let encoded = statement.encode();
    assert!(encoded.starts_with(STATE_DOMAIN));
    assert_eq!(encoded.len(), STATE_DOMAIN.len() + 1 + 32 + 32);
    assert_eq!(StateStatement::decode(&encoded), Ok(statement));
    assert!(StateStatement::decode(&encoded[1..]).is_err());
    assert!(StateStatement::decode(&[encoded.as_slice(), &[0]].concat()).is_err());
    // The empty directory's root is 32 zero bytes.
    assert_eq!(Directory::new().state_tree().root(), [0; 32]);
    // A tree and a statement that do not match are refused.
    let other = StateStatement {
        count: 4,
        ..statement
    };
    assert!(
        SignedState::new(
            other,
            signed.signature().to_vec(),
            Arc::new(directory.state_tree())
        )
        .is_err()
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("statement.bin"), &encoded).unwrap();
    std::fs::write(dir.path().join("sig.bin"), signed.signature()).unwrap();
    std::fs::write(
        dir.path().join("service-key.pem"),
        service_key().to_public_key_pem(),
    )
    .unwrap();
    let output = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "service-key.pem",
            "-signature",
            "sig.bin",
            "statement.bin",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Verified OK"), "{stdout}");
}

/// Replaces each character of `json` in turn by others (of its kind, and structural ones) and
/// returns how many changed answers were checked; `check` sees every changed answer's
/// verification with the index of the changed byte.
fn every_changed_character(
    json: &[u8],
    mut check: impl FnMut(usize, Result<directory::LocalLookup, DirectoryError>),
) -> usize {
    let mut checked = 0;
    for at in 0..json.len() {
        let original = json[at];
        let others: &[u8] = if original.is_ascii_hexdigit() {
            b"0123456789abcdefA"
        } else {
            b"x\"{}:, 0"
        };
        for &with in others.iter().filter(|&&c| c != original) {
            let changed = replaced(json, at, with);
            check(at, verify_local_lookup(&changed, service_key()));
            checked += 1;
        }
    }
    checked
}

#[test]
fn any_changed_character_of_a_local_answer_fails() {
    let directory = directory_of(6);
    let signed = sign_state(&directory, 23, 6, 1_700_000_000_123);
    let found = signed.lookup("k04").unwrap();
    let absent = signed.lookup("k05").unwrap();
    let first = signed.lookup("a").unwrap();
    let last = signed.lookup("z").unwrap();
    let mut checked = every_changed_character(&found, |at, verified| {
        assert!(verified.is_err(), "byte {at} changed and still verified");
    });
    // The key of an absence proof is not signed: changed to another key between the same
    // neighbours, it is a valid proof that *that* key is absent (a true statement, about
    // another key; clients check the key they asked for). Nothing else verifies.
    for (json, key, below, above) in [
        (&absent, "k05", "k04", "k06"),
        (&first, "a", "", "k00"),
        (&last, "z", "k10", "\u{10ffff}"),
    ] {
        let key_range = field_range(json, "key");
        checked += every_changed_character(json, |at, verified| {
            if let Ok(lookup) = verified {
                assert!(
                    key_range.contains(&at),
                    "{key}: byte {at} changed and verified"
                );
                assert_ne!(lookup.key, key);
                assert!(lookup.key.as_str() > below && lookup.key.as_str() < above);
                assert_eq!(lookup.entry, None);
            }
        });
    }
    assert!(checked > 20_000, "{checked}");

    // Another service key.
    assert_eq!(
        verify_local_lookup(&found, other_service_key()),
        Err(DirectoryError::ServiceSignature)
    );
}

/// `json` with `edit` applied to its value.
fn edited(json: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(json).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn absence_proofs_need_adjacent_neighbours_around_the_key() {
    let directory = directory_of(6);
    let signed = sign_state(&directory, 23, 6, 0);
    let answer = |key: &str| -> serde_json::Value {
        serde_json::from_slice(&signed.lookup(key).unwrap()).unwrap()
    };
    let around_3 = answer("k03"); // k02 | k04
    let around_5 = answer("k05"); // k04 | k06
    let json = signed.lookup("k03").unwrap();
    assert!(verify_local_lookup(&json, service_key()).is_ok());

    // Hiding the existing k04: "absent" between k02 and k06 (indices 1 and 3).
    let hidden = edited(&json, |value| {
        value["key"] = "k04".into();
        value["right"] = around_5["right"].clone();
    });
    assert!(verify_local_lookup(&hidden, service_key()).is_err());
    // Hiding k04 with k04 itself as a neighbour: the key is not strictly between.
    let hidden = edited(&json, |value| value["key"] = "k04".into());
    assert!(verify_local_lookup(&hidden, service_key()).is_err());
    let hidden = edited(around_5.to_string().as_bytes(), |value| {
        value["key"] = "k04".into();
    });
    assert!(verify_local_lookup(&hidden, service_key()).is_err());
    // A neighbour dropped: the key would be first (or last), which it is not.
    for side in ["left", "right"] {
        let dropped = edited(&json, |value| {
            value.as_object_mut().unwrap().remove(side);
        });
        assert!(
            verify_local_lookup(&dropped, service_key()).is_err(),
            "{side}"
        );
    }
    // Found with a neighbour too; neighbours swapped; indices moved with the same paths.
    let found = signed.lookup("k02").unwrap();
    let mixed = edited(&found, |value| value["left"] = around_3["left"].clone());
    assert!(verify_local_lookup(&mixed, service_key()).is_err());
    let swapped = edited(&json, |value| {
        let left = value["left"].clone();
        value["left"] = value["right"].clone();
        value["right"] = left;
    });
    assert!(verify_local_lookup(&swapped, service_key()).is_err());
    let moved = edited(&json, |value| {
        value["left"]["index"] = 0.into();
        value["right"]["index"] = 1.into();
    });
    assert!(verify_local_lookup(&moved, service_key()).is_err());
    // An entry's path under an older state's statement and signature.
    let older = sign_state(&directory_of(5), 19, 5, 0);
    let older_state: serde_json::Value =
        serde_json::from_slice(&older.lookup("k02").unwrap()).unwrap();
    let spliced = edited(&found, |value| {
        value["state"] = older_state["state"].clone()
    });
    assert!(verify_local_lookup(&spliced, service_key()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn local_lookups_of_any_key_verify_and_random_bytes_never_panic(
        key in ".{0,80}",
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        at in any::<usize>(),
        with in any::<u8>(),
    ) {
        static SIGNED: OnceLock<(Directory, SignedState)> = OnceLock::new();
        let (directory, signed) = SIGNED.get_or_init(|| {
            let directory = directory_of(9);
            let signed = sign_state(&directory, 11, 9, 5);
            (directory, signed)
        });
        prop_assert!(verify_local_lookup(&bytes, service_key()).is_err());
        match signed.lookup(&key) {
            Ok(json) => {
                let verified = verify_local_lookup(&json, service_key()).unwrap();
                prop_assert_eq!(&verified.key, &key);
                prop_assert_eq!(verified.entry.as_ref(), directory.get(&key));
                // One byte changed anywhere, to anything: an error or a statement about
                // another key's absence, never a panic.
                let at = at % json.len();
                if json[at] != with {
                    let changed = replaced(&json, at, with);
                    if let Ok(other) = verify_local_lookup(&changed, service_key()) {
                        prop_assert!(other.entry.is_none() && other.key != key);
                    }
                }
            }
            Err(_) => prop_assert!(key.is_empty() || key.len() > KEY_BYTES_MAX),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), tag in 0x2fu8..0x33) {
        let mut directory = Directory::new();
        let mut request = vec![tag];
        request.extend_from_slice(&bytes);
        let context = ExecutionContext::default();
        let answer = directory.execute(&context, &request);
        prop_assert!(!answer.is_empty());
        let completed = directory.complete(&request, &answer, &bytes);
        let _ = directory::http_reply(completed);
        let _ = directory.signing_message(&request, &bytes);
        let _ = directory.complete(&request, &bytes, &bytes);
        let _ = directory.restore(&bytes);
        let _ = verify_lookup(&bytes, service_key());
        let _ = encode_put_json(&[0; 16], "k", &bytes);
    }
}
