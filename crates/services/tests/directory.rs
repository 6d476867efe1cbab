//! The directory: an owner creates an entry at version 1 and updates it one version at a time;
//! replays, stale or skipped versions, another key's writes, forged signatures and oversize
//! fields are refused with the documented HTTP status and change nothing; lookups (absence
//! included) signed with real threshold RSA verify with the service key alone, and changing any
//! one character of the value, the signature or the position in the JSON breaks them; two
//! instances agree and snapshots restore canonically; no input panics.

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa;
use sintra_services::directory::{
    self, Directory, DirectoryError, KEY_BYTES_MAX, PutBody, VALUE_BYTES_MAX, encode_get,
    encode_put, encode_put_json, put_message, verify_lookup,
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
            let (group, servers) = group();
            let shares: Vec<_> = servers[1..3]
                .iter()
                .map(|server| server.service.sign(&group.service, &message))
                .collect();
            let signature = group.service.combine(&message, &shares).unwrap();
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
    let mut rng = ChaCha20Rng::from_seed([99; 32]);
    let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
    let (other_group, _) = deal_with_primes(
        GroupParameters::new(4, None).unwrap(),
        &primes,
        &mut rng,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        verify_lookup(&lookup, &other_group.service),
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
    }
    assert!(!first.is_empty());
    let mut restored = Directory::new();
    restored.restore(&first.snapshot()).unwrap();
    assert_eq!(restored, first);
    assert_eq!(restored.snapshot(), first.snapshot());

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
