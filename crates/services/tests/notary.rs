//! The notary's tokens verify with the stock `openssl ts -verify` (with and without nonce, with
//! and without the certificate in the token, SHA-256 and SHA-512 imprints, sintra's policy
//! requested explicitly), signed by real threshold RSA; SHA-1, a foreign policy and garbage get
//! RFC 3161 rejections with the right failInfo; serials are the 1-based log positions and time
//! never goes backwards; two instances agree on answers and snapshots; no input panics.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, OctetString, UtcTime};
use der::{Decode, Encode, Sequence};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa;
use sintra_services::notary::{self, Notary, POLICY_OID, encode_request, reject_malformed};
use sintra_services::{ExecutionContext, Service};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_tsp::TspVersion;

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// One group of 4 (t = 1) around a 1024-bit modulus, dealt once per test binary.
fn group() -> &'static (GroupKeys, Vec<ServerKeys>) {
    static GROUP: OnceLock<(GroupKeys, Vec<ServerKeys>)> = OnceLock::new();
    GROUP.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([11; 32]);
        let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
        let parameters = GroupParameters::new(4, None).unwrap();
        deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).unwrap()
    })
}

/// The service key's signature over `message`: shares of servers 1 and 4 (`t + 1 = 2`),
/// combined.
fn threshold_sign(message: &[u8]) -> Vec<u8> {
    let (group, servers) = group();
    let shares: Vec<_> = [&servers[0], &servers[3]]
        .iter()
        .map(|server| server.service.sign(&group.service, message))
        .collect();
    let signature = group.service.combine(message, &shares).unwrap();
    assert!(group.service.verify(message, &signature).is_ok());
    signature.as_bytes().to_vec()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A self-signed TSA certificate for the service key (test-only: the product's certificates
/// come from the dealer), signed by the threshold shares.
fn tsa_certificate() -> &'static Vec<u8> {
    static CERTIFICATE: OnceLock<Vec<u8>> = OnceLock::new();
    CERTIFICATE.get_or_init(|| {
        let (group, _) = group();
        let algorithm = AlgorithmIdentifierOwned {
            oid: SHA256_WITH_RSA,
            parameters: Some(Any::null()),
        };
        let name = Name::from_str("CN=sintra test TSA,O=sintra").unwrap();
        let now = Duration::from_secs(now_ms() / 1000);
        let day = Duration::from_secs(86_400);
        let usage = ExtendedKeyUsage(vec![TIME_STAMPING]).to_der().unwrap();
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&[0x2a]).unwrap(),
            signature: algorithm.clone(),
            issuer: name.clone(),
            validity: Validity {
                not_before: Time::UtcTime(UtcTime::from_unix_duration(now - day).unwrap()),
                not_after: Time::UtcTime(UtcTime::from_unix_duration(now + 365 * day).unwrap()),
            },
            subject: name,
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(
                &group.service.to_public_key_der(),
            )
            .unwrap(),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![Extension {
                extn_id: EXTENDED_KEY_USAGE,
                critical: true,
                extn_value: OctetString::new(usage).unwrap(),
            }]),
        };
        let signature = threshold_sign(&tbs.to_der().unwrap());
        Certificate {
            tbs_certificate: tbs,
            signature_algorithm: algorithm,
            signature: BitString::from_bytes(&signature).unwrap(),
        }
        .to_der()
        .unwrap()
    })
}

fn notary() -> Notary {
    let notary = Notary::new(tsa_certificate()).unwrap();
    assert!(notary.certifies(&group().0.service));
    notary
}

/// Runs openssl in `dir`, returning stdout; panics with stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A directory holding `data.txt` and `tsa.pem`.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), b"sintra notarises this\n").unwrap();
    std::fs::write(dir.path().join("tsa.pem"), notary().certificate_pem()).unwrap();
    dir
}

/// execute → signing_message → threshold signature → complete, as the servers do.
fn serve(notary: &mut Notary, context: &ExecutionContext, query: &[u8]) -> Vec<u8> {
    let request = encode_request(&[9; 16], query);
    let answer = notary.execute(context, &request);
    match notary.signing_message(&request, &answer) {
        Some(message) => notary.complete(&request, &answer, &threshold_sign(&message)),
        None => notary.complete(&request, &answer, &[]),
    }
}

fn context(position: u64, time_ms: u64) -> ExecutionContext {
    ExecutionContext {
        position,
        round: position / 10,
        time_ms,
    }
}

/// Makes a query with `query_args`, has the notary answer it and returns the reply's
/// `openssl ts -reply -text` rendering after checking `openssl ts -verify` with `verify_args`.
fn stamp_and_verify(query_args: &[&str], verify_args: &[&str]) -> String {
    let dir = workspace();
    let mut args = vec!["ts", "-query", "-data", "data.txt", "-out", "q.tsq"];
    args.extend_from_slice(query_args);
    openssl(dir.path(), &args);
    let query = std::fs::read(dir.path().join("q.tsq")).unwrap();
    assert_eq!(reject_malformed(&query), None);
    let mut notary = notary();
    let reply = serve(&mut notary, &context(41, now_ms()), &query);
    assert_eq!(notary::http_reply(reply.clone()).status, 200);
    std::fs::write(dir.path().join("reply.tsr"), &reply).unwrap();
    let mut args = vec![
        "ts",
        "-verify",
        "-in",
        "reply.tsr",
        "-queryfile",
        "q.tsq",
        "-CAfile",
        "tsa.pem",
    ];
    args.extend_from_slice(verify_args);
    let verified = openssl(dir.path(), &args);
    assert!(verified.contains("Verification: OK"), "{verified}");
    // The token also verifies against the data itself.
    let mut args = vec![
        "ts",
        "-verify",
        "-in",
        "reply.tsr",
        "-data",
        "data.txt",
        "-CAfile",
        "tsa.pem",
    ];
    args.extend_from_slice(verify_args);
    assert!(openssl(dir.path(), &args).contains("Verification: OK"));
    openssl(dir.path(), &["ts", "-reply", "-in", "reply.tsr", "-text"])
}

#[test]
fn openssl_verifies_a_sha256_token_with_nonce_and_certificate() {
    let text = stamp_and_verify(&["-sha256", "-cert"], &[]);
    assert!(text.contains("Status: Granted."), "{text}");
    assert!(text.contains("Serial number: 0x2A"), "{text}");
    assert!(
        text.contains(&format!("Policy OID: {POLICY_OID}")),
        "{text}"
    );
    assert!(text.contains("Nonce: 0x"), "{text}");
}

#[test]
fn openssl_verifies_a_token_without_nonce() {
    let text = stamp_and_verify(&["-sha256", "-cert", "-no_nonce"], &[]);
    assert!(text.contains("Nonce: unspecified"), "{text}");
}

#[test]
fn openssl_verifies_a_token_without_the_certificate_given_it_apart() {
    stamp_and_verify(&["-sha256"], &["-untrusted", "tsa.pem"]);
}

#[test]
fn openssl_verifies_a_sha512_token() {
    let text = stamp_and_verify(&["-sha512", "-cert"], &[]);
    assert!(text.contains("Hash Algorithm: sha512"), "{text}");
}

#[test]
fn openssl_verifies_a_token_requesting_the_sintra_policy() {
    let text = stamp_and_verify(&["-sha384", "-cert", "-tspolicy", POLICY_OID], &[]);
    assert!(
        text.contains(&format!("Policy OID: {POLICY_OID}")),
        "{text}"
    );
}

/// `PKIStatusInfo`, read back.
#[derive(Sequence)]
struct StatusView {
    status: u8,
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// A `TimeStampResp` without token, read back.
#[derive(Sequence)]
struct RejectionView {
    status: StatusView,
}

/// The failInfo bit numbers of a DER rejection, after checking it is one.
fn rejection_bits(reply: &[u8]) -> Vec<usize> {
    let response = RejectionView::from_der(reply).unwrap();
    assert_eq!(response.status.status, 2, "rejection");
    assert_eq!(response.status.status_string.unwrap().len(), 1);
    let bits = response.status.fail_info.unwrap();
    bits.bits()
        .enumerate()
        .filter(|(_, set)| *set)
        .map(|(i, _)| i)
        .collect()
}

const BAD_ALG: usize = 0;
const BAD_REQUEST: usize = 2;
const BAD_DATA_FORMAT: usize = 5;
const UNACCEPTED_POLICY: usize = 15;

/// The notary's answer to a query made by openssl with `query_args`, which must be an unsigned
/// rejection; returns its DER and openssl's rendering.
fn rejected(query_args: &[&str]) -> (Vec<u8>, String) {
    let dir = workspace();
    let mut args = vec!["ts", "-query", "-data", "data.txt", "-out", "q.tsq"];
    args.extend_from_slice(query_args);
    openssl(dir.path(), &args);
    let query = std::fs::read(dir.path().join("q.tsq")).unwrap();
    let mut notary = notary();
    let request = encode_request(&[0; 16], &query);
    let answer = notary.execute(&context(0, 5), &request);
    assert_eq!(notary.signing_message(&request, &answer), None);
    assert_eq!(notary.complete(&request, &answer, &[]), answer);
    assert_eq!(notary.last_time_ms(), 0, "a rejection changes no state");
    std::fs::write(dir.path().join("reply.tsr"), &answer).unwrap();
    let text = openssl(dir.path(), &["ts", "-reply", "-in", "reply.tsr", "-text"]);
    assert!(text.contains("Status: Rejected"), "{text}");
    (answer, text)
}

#[test]
fn sha1_is_rejected_with_bad_alg() {
    let (answer, text) = rejected(&["-sha1", "-cert"]);
    assert_eq!(rejection_bits(&answer), [BAD_ALG]);
    assert!(
        text.contains("unrecognized or unsupported algorithm"),
        "{text}"
    );
}

#[test]
fn a_foreign_policy_is_rejected_with_unaccepted_policy() {
    let (answer, _) = rejected(&["-sha256", "-tspolicy", "1.2.3.4"]);
    assert_eq!(rejection_bits(&answer), [UNACCEPTED_POLICY]);
}

#[test]
fn garbage_is_rejected_with_bad_data_format_before_and_after_ordering() {
    let mut notary = notary();
    for garbage in [
        &b""[..],
        b"hello",
        &[0x30, 0x03, 0x02, 0x01, 0x01],
        &[0x30; 5000],
    ] {
        let early = reject_malformed(garbage).expect("garbage is refused at the gateway");
        assert_eq!(rejection_bits(&early), [BAD_DATA_FORMAT]);
        let request = encode_request(&[1; 16], garbage);
        let ordered = notary.execute(&context(0, 1), &request);
        assert_eq!(ordered, early);
        assert_eq!(notary.signing_message(&request, &ordered), None);
    }
    // Requests that are not the notary's: wrong tag, truncated nonce.
    for request in [&[0x11u8; 40][..], &[0x10, 1, 2], &[]] {
        let answer = notary.execute(&context(0, 1), request);
        assert_eq!(rejection_bits(&answer), [BAD_REQUEST]);
    }
    let dir = workspace();
    std::fs::write(
        dir.path().join("reply.tsr"),
        reject_malformed(b"x").unwrap(),
    )
    .unwrap();
    let text = openssl(dir.path(), &["ts", "-reply", "-in", "reply.tsr", "-text"]);
    assert!(text.contains("Status: Rejected"), "{text}");
    assert!(
        text.contains("the data submitted has the wrong format"),
        "{text}"
    );
}

/// What the tests read back from a granted answer's TSTInfo.
#[derive(Sequence)]
struct TstInfoView {
    version: TspVersion,
    policy: Any,
    message_imprint: Any,
    serial_number: u64,
    gen_time: Any,
    #[asn1(optional = "true")]
    nonce: Option<u64>,
}

fn tst_info(answer: &[u8]) -> TstInfoView {
    assert_eq!(answer[0], 0, "granted");
    TstInfoView::from_der(&answer[2..]).unwrap()
}

/// A SHA-256 query as openssl would send it, built directly so many can be made cheaply.
fn sha256_query(data: &[u8], nonce: Option<u64>) -> Vec<u8> {
    use sha2::Digest;
    #[derive(Sequence)]
    struct Query {
        version: TspVersion,
        message_imprint: x509_tsp::MessageImprint,
        #[asn1(optional = "true")]
        nonce: Option<u64>,
        cert_req: bool,
    }
    Query {
        version: TspVersion::V1,
        message_imprint: x509_tsp::MessageImprint {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1"),
                parameters: Some(Any::null()),
            },
            hashed_message: OctetString::new(sha2::Sha256::digest(data).to_vec()).unwrap(),
        },
        nonce,
        cert_req: true,
    }
    .to_der()
    .unwrap()
}

#[test]
fn serials_are_positions_and_time_never_goes_backwards() {
    let mut notary = notary();
    let start_ms = 1_800_000_000_000u64;
    let mut last_serial = 0;
    let mut last_time = String::new();
    for position in 0..1000u64 {
        // The agreed time wanders: forward, then back by up to 3 s.
        let time_ms = start_ms + position * 7 - (position % 5) * 600;
        let query = sha256_query(&position.to_be_bytes(), Some(position));
        let answer = notary.execute(
            &context(position, time_ms),
            &encode_request(&[0; 16], &query),
        );
        let info = tst_info(&answer);
        assert_eq!(info.version, TspVersion::V1);
        assert_eq!(info.serial_number, position + 1);
        assert!(info.serial_number > last_serial);
        last_serial = info.serial_number;
        let time = String::from_utf8(info.gen_time.value().to_vec()).unwrap();
        // `YYYYMMDDHHMMSS[.fff]Z` sorts as text once the fraction is padded.
        let padded = pad_time(&time);
        assert!(padded >= last_time, "{padded} < {last_time}");
        last_time = padded;
        assert_eq!(info.nonce, Some(position));
    }
    assert!(notary.last_time_ms() >= start_ms + 999 * 7 - 4 * 600);
    // A round whose time is 0 (no batch carried one) keeps the last time.
    let before = notary.last_time_ms();
    let answer = notary.execute(
        &context(1000, 0),
        &encode_request(&[0; 16], &sha256_query(b"late", None)),
    );
    assert_eq!(tst_info(&answer).serial_number, 1001);
    assert!(tst_info(&answer).nonce.is_none());
    assert_eq!(notary.last_time_ms(), before);
}

fn pad_time(time: &str) -> String {
    let body = time.trim_end_matches('Z');
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    format!("{seconds}.{fraction:0<3}")
}

#[test]
fn gen_time_has_milliseconds_and_is_the_agreed_time() {
    let mut notary = notary();
    // 2027-01-15T08:00:00.250Z
    let answer = notary.execute(
        &context(3, 1_800_000_000_250),
        &encode_request(&[0; 16], &sha256_query(b"x", None)),
    );
    assert_eq!(tst_info(&answer).gen_time.value(), b"20270115080000.25Z");
}

#[test]
fn two_instances_agree_on_answers_signing_messages_and_snapshots() {
    let mut first = notary();
    let mut second = notary();
    for position in 0..50u64 {
        let request = if position % 7 == 3 {
            encode_request(&[2; 16], b"not der")
        } else {
            encode_request(&[3; 16], &sha256_query(&[position as u8], Some(position)))
        };
        let context = context(position, 1_700_000_000_000 + position * 13 % 97);
        let a = first.execute(&context, &request);
        let b = second.execute(&context, &request);
        assert_eq!(a, b);
        assert_eq!(
            first.signing_message(&request, &a),
            second.signing_message(&request, &b)
        );
        assert_eq!(
            first.complete(&request, &a, &[7; 128]),
            second.complete(&request, &b, &[7; 128])
        );
        assert_eq!(first.snapshot(), second.snapshot());
    }
    let mut restored = Notary::new(tsa_certificate()).unwrap();
    restored.restore(&first.snapshot()).unwrap();
    assert_eq!(restored, first);
    assert!(restored.restore(b"sintra/notary/v1").is_err());
    assert!(
        restored
            .restore(&[b"sintra/notary/v1".as_slice(), &u64::MAX.to_be_bytes()].concat())
            .is_err()
    );
    assert_eq!(restored, first, "a refused snapshot changes nothing");
}

#[test]
fn a_certificate_without_time_stamping_usage_is_refused() {
    assert!(Notary::new(b"not a certificate").is_err());
    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
    let (other, _) = deal_with_primes(
        GroupParameters::new(4, None).unwrap(),
        &primes,
        &mut rng,
        &mut |_| {},
    )
    .unwrap();
    assert!(!notary().certifies(&other.service));
    let mut certificate = Certificate::from_der(tsa_certificate()).unwrap();
    certificate.tbs_certificate.extensions = None;
    assert_eq!(
        Notary::new(&certificate.to_der().unwrap()),
        Err(notary::NotaryError::NotTimeStamping)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), tag in 0x0fu8..0x12) {
        let mut notary = notary();
        let mut request = vec![tag];
        request.extend_from_slice(&bytes);
        let answer = notary.execute(&context(1, 2), &request);
        prop_assert!(!answer.is_empty());
        let _ = notary.signing_message(&request, &bytes);
        let _ = notary.complete(&request, &bytes, &bytes);
        let _ = reject_malformed(&bytes);
        let _ = notary.restore(&bytes);
        // A DER-ish prefix exercises the decoder further than random bytes.
        let mut der = vec![0x30, bytes.len().min(127) as u8];
        der.extend_from_slice(&bytes);
        let _ = notary.execute(&context(2, 3), &encode_request(&[0; 16], &der));
    }
}

/// A client's own query (`notary::encode_query`) is one openssl accepts too, and the client's
/// check of the reply (`notary::verify_reply`, the service key alone) accepts the genuine
/// reply and refuses it for another document, another nonce, or after any one byte of the
/// signed token content or of the signature changed.
#[test]
fn a_client_query_and_its_reply_verify_with_the_service_key_and_with_openssl() {
    let dir = workspace();
    let document = std::fs::read(dir.path().join("data.txt")).unwrap();
    let digest: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &document,
    ))
    .into();
    let query = notary::encode_query(&digest, 0x0123_4567_89ab_cdef, true);
    let mut notary = notary();
    let request = encode_request(&[5; 16], &query);
    let answer = notary.execute(&context(41, now_ms()), &request);
    let message = notary.signing_message(&request, &answer).expect("granted");
    let reply = notary.complete(&request, &answer, &threshold_sign(&message));
    let key = &group().0.service;
    let (serial, time) = notary::verify_reply(&reply, &digest, 0x0123_4567_89ab_cdef, key)
        .expect("the genuine reply verifies");
    assert_eq!(serial, 42);
    assert!(time.ends_with('Z'), "{time}");
    assert_eq!(
        notary::granted_serial_and_time(&reply),
        Some((serial, time))
    );
    std::fs::write(dir.path().join("q.tsq"), &query).unwrap();
    std::fs::write(dir.path().join("r.tsr"), &reply).unwrap();
    let text = openssl(
        dir.path(),
        &[
            "ts",
            "-verify",
            "-in",
            "r.tsr",
            "-queryfile",
            "q.tsq",
            "-CAfile",
            "tsa.pem",
        ],
    );
    assert!(text.contains("Verification: OK"), "{text}");
    let mut other = digest;
    other[0] ^= 1;
    assert!(notary::verify_reply(&reply, &other, 0x0123_4567_89ab_cdef, key).is_err());
    assert!(notary::verify_reply(&reply, &digest, 7, key).is_err());
    // What the signature covers: the TSTInfo (answer = [0x00][certReq][TSTInfo]), and the
    // signature itself (the reply's last bytes). CMS leaves other fields unsigned (e.g. the
    // certificate set), so only these are meant to be tamper-evident.
    let tst_info = &answer[2..];
    let tst_at = reply
        .windows(tst_info.len())
        .position(|window| window == tst_info)
        .expect("the reply carries the TSTInfo");
    let signature_at = reply.len() - key.modulus_bytes();
    for at in (tst_at..tst_at + tst_info.len()).chain(signature_at..reply.len()) {
        let mut altered = reply.clone();
        altered[at] ^= 0x01;
        assert!(
            notary::verify_reply(&altered, &digest, 0x0123_4567_89ab_cdef, key).is_err(),
            "byte {at} changed and the reply still verified"
        );
    }
}
