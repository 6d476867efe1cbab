//! Properties of the certification authority, end to end with real threshold RSA and the stock
//! `openssl` command: the dealer's root certificate verifies itself and the notary certificate;
//! RSA and EC P-256 requests executed through the service (execute → signing message → `t + 1`
//! signature shares combined → complete) become certificates `openssl verify` accepts under the
//! root; a revoked serial is listed in a CRL `openssl crl -verify` accepts and `openssl verify
//! -crl_check` then refuses the certificate; a damaged self-signature, a name outside the
//! policy, a weak key, a wrong token and malformed bytes each get their 4xx; serials are the
//! log positions plus one, unique and increasing, and time never goes backwards; two replicas
//! given the same requests agree on every answer and snapshot; a snapshot restores to an equal
//! state; and no input bytes make execute or restore panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use der::{Decode, Encode};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa;
use sintra_services::ca::{
    self, Ca, CaAnswer, CaPolicy, NameRule, decode_answer, encode_crl, encode_issue, encode_revoke,
    http_reply,
};
use sintra_services::x509;
use sintra_services::{ExecutionContext, Service};

const REGISTRATION_TOKEN: &[u8] = b"registration token for example.test";
const ADMIN_TOKEN: &[u8] = b"admin token";
const GROUP_NAME: &str = "sintra test";
const NONCE: [u8; 16] = [9; 16];

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

/// The service key's signature on `message`: shares of servers 2 and 4 combined, verified.
fn sign(message: &[u8]) -> Vec<u8> {
    let (group, servers) = group();
    let shares: Vec<_> = [&servers[1], &servers[3]]
        .iter()
        .map(|server| server.service.sign(&group.service, message))
        .collect();
    let signature = group.service.combine(message, &shares).unwrap();
    group.service.verify(message, &signature).unwrap();
    signature.as_bytes().to_vec()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The root certificate's DER, as the dealer makes it (valid from an hour ago for ten years).
fn root_der() -> &'static [u8] {
    static ROOT: OnceLock<Vec<u8>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let spki = group().0.service.to_public_key_der();
        let start = now_s() - 3600;
        let tbs = x509::root_tbs(GROUP_NAME, &spki, start, start + 3650 * 86_400).unwrap();
        x509::assemble(&tbs, &sign(&tbs)).unwrap()
    })
}

fn notary_der() -> Vec<u8> {
    let spki = group().0.service.to_public_key_der();
    let start = now_s() - 3600;
    let tbs = x509::notary_tbs(GROUP_NAME, &spki, start, start + 3650 * 86_400).unwrap();
    x509::assemble(&tbs, &sign(&tbs)).unwrap()
}

fn policy() -> CaPolicy {
    let mut policy = CaPolicy::with_token("*.example.test", REGISTRATION_TOKEN, 90);
    policy.admin_token_sha256 = hex::encode(Sha256::digest(ADMIN_TOKEN));
    policy.names.push(NameRule {
        pattern: "approved.example.org".into(),
        registration_token_sha256: None,
        approved_keys_sha256: vec![hex::encode([0u8; 32])],
    });
    policy
}

fn new_ca() -> Ca {
    Ca::new(root_der(), policy()).unwrap()
}

/// Runs `args` through openssl; (success, stdout + stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes the root certificate as PEM into `dir`.
fn write_root(dir: &Path) -> PathBuf {
    let path = dir.join("ca-certificate.pem");
    let pem = x509::to_pem(x509::PEM_LABEL_CERTIFICATE, root_der()).unwrap();
    std::fs::write(&path, pem).unwrap();
    path
}

/// A fresh key and a DER certification request for it, made by `openssl req`.
fn make_csr(dir: &Path, tag: &str, new_key: &[&str], subject: &str, extra: &[&str]) -> Vec<u8> {
    let key = dir.join(format!("{tag}.key"));
    let csr = dir.join(format!("{tag}.csr.der"));
    let mut args = vec!["req", "-new"];
    args.extend_from_slice(new_key);
    args.extend_from_slice(&[
        "-nodes",
        "-keyout",
        path_str(&key),
        "-subj",
        subject,
        "-outform",
        "DER",
        "-out",
        path_str(&csr),
    ]);
    args.extend_from_slice(extra);
    let (ok, text) = openssl(&args);
    assert!(ok, "openssl req: {text}");
    std::fs::read(csr).unwrap()
}

fn rsa_csr(dir: &Path, tag: &str, subject: &str, extra: &[&str]) -> Vec<u8> {
    make_csr(dir, tag, &["-newkey", "rsa:2048"], subject, extra)
}

fn context(position: u64, time_ms: u64) -> ExecutionContext {
    ExecutionContext {
        position,
        round: position / 4,
        time_ms,
    }
}

/// Executes `request` and completes its answer with the service key as a node would.
fn run(ca: &mut Ca, context: &ExecutionContext, request: &[u8]) -> Vec<u8> {
    let answer = ca.execute(context, request);
    match ca.signing_message(request, &answer) {
        Some(message) => ca.complete(request, &answer, &sign(&message)),
        None => ca.complete(request, &answer, &[]),
    }
}

fn issue(csr: &[u8], token: &[u8]) -> Vec<u8> {
    encode_issue(&NONCE, token, csr).unwrap()
}

/// Asserts a completed answer is a refusal with `status`; returns its reason.
fn refused(completed: &[u8], status: u16) -> String {
    let reply = http_reply(completed);
    let body = String::from_utf8(reply.body).unwrap();
    assert_eq!(reply.status, status, "{body}");
    assert_eq!(reply.content_type, "text/plain; charset=utf-8");
    body
}

/// Writes a completed PEM answer (asserting HTTP 200) and returns its path.
fn write_pem(dir: &Path, name: &str, completed: &[u8]) -> PathBuf {
    let reply = http_reply(completed);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type, "application/x-pem-file");
    let path = dir.join(name);
    std::fs::write(&path, reply.body).unwrap();
    path
}

fn time_ms() -> u64 {
    now_s() * 1000 + 123
}

#[test]
fn the_root_verifies_itself_and_the_notary_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_root(dir.path());
    let notary = dir.path().join("tsa-certificate.pem");
    std::fs::write(
        &notary,
        x509::to_pem(x509::PEM_LABEL_CERTIFICATE, &notary_der()).unwrap(),
    )
    .unwrap();

    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", path_str(&root)]);
    assert!(ok, "{text}");
    assert!(text.contains("CN = sintra test root CA"), "{text}");
    assert!(
        text.contains("X509v3 Basic Constraints: critical"),
        "{text}"
    );
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");

    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", path_str(&notary)]);
    assert!(ok, "{text}");
    assert!(text.contains("CN = sintra test notary"), "{text}");
    assert!(
        text.contains("X509v3 Extended Key Usage: critical"),
        "{text}"
    );
    assert!(text.contains("Time Stamping"), "{text}");
    assert!(
        text.contains("Digital Signature, Non Repudiation"),
        "{text}"
    );
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");

    let (ok, text) = openssl(&["verify", "-CAfile", path_str(&root), path_str(&root)]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        path_str(&root),
        "-purpose",
        "timestampsign",
        path_str(&notary),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
}

#[test]
fn rsa_and_ec_requests_become_certificates_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_root(dir.path());
    let mut ca = new_ca();

    let rsa_request = rsa_csr(
        dir.path(),
        "rsa",
        "/CN=www.example.test",
        &[
            "-addext",
            "subjectAltName=DNS:api.example.test,DNS:www.example.test",
        ],
    );
    let completed = run(
        &mut ca,
        &context(41, time_ms()),
        &issue(&rsa_request, REGISTRATION_TOKEN),
    );
    let rsa_cert = write_pem(dir.path(), "rsa.pem", &completed);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        path_str(&root),
        "-purpose",
        "sslserver",
        path_str(&rsa_cert),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", path_str(&rsa_cert)]);
    assert!(ok, "{text}");
    assert!(text.contains("Serial Number: 42 (0x2a)"), "{text}");
    assert!(text.contains("Subject: CN = www.example.test"), "{text}");
    assert!(
        text.contains("DNS:www.example.test, DNS:api.example.test"),
        "{text}"
    );
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        text.contains("Issuer: O = sintra test, CN = sintra test root CA"),
        "{text}"
    );

    let ec_request = make_csr(
        dir.path(),
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=ec.example.test",
        &[],
    );
    let completed = run(
        &mut ca,
        &context(50, time_ms()),
        &issue(&ec_request, REGISTRATION_TOKEN),
    );
    let ec_cert = write_pem(dir.path(), "ec.pem", &completed);
    let (ok, text) = openssl(&["verify", "-CAfile", path_str(&root), path_str(&ec_cert)]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", path_str(&ec_cert)]);
    assert!(ok, "{text}");
    assert!(text.contains("Serial Number: 51 (0x33)"), "{text}");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    assert!(text.contains("DNS:ec.example.test"), "{text}");

    // A P-384 key signed with SHA-384, sent as PEM and converted as the gateway does.
    let p384_request = make_csr(
        dir.path(),
        "p384",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-sha384",
        ],
        "/CN=p384.example.test",
        &[],
    );
    let pem = x509::to_pem(x509::PEM_LABEL_CSR, &p384_request).unwrap();
    assert_eq!(x509::csr_to_der(pem.as_bytes()).unwrap(), p384_request);
    assert_eq!(x509::csr_to_der(&p384_request).unwrap(), p384_request);
    let completed = run(
        &mut ca,
        &context(60, time_ms()),
        &issue(
            &x509::csr_to_der(pem.as_bytes()).unwrap(),
            REGISTRATION_TOKEN,
        ),
    );
    let p384_cert = write_pem(dir.path(), "p384.pem", &completed);
    let (ok, text) = openssl(&["verify", "-CAfile", path_str(&root), path_str(&p384_cert)]);
    assert!(ok && text.contains(": OK"), "{text}");
    assert_eq!(ca.issued_count(), 3);
}

#[test]
fn a_revoked_serial_is_listed_in_a_crl_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_root(dir.path());
    let mut ca = new_ca();
    let request = rsa_csr(dir.path(), "revoked", "/CN=gone.example.test", &[]);
    let cert = write_pem(
        dir.path(),
        "cert.pem",
        &run(
            &mut ca,
            &context(6, time_ms()),
            &issue(&request, REGISTRATION_TOKEN),
        ),
    );

    // An empty CRL first: current as of position 10.
    let empty = write_pem(
        dir.path(),
        "empty.pem",
        &run(&mut ca, &context(9, time_ms()), &encode_crl(&NONCE)),
    );
    let (ok, text) = openssl(&[
        "crl",
        "-noout",
        "-text",
        "-in",
        path_str(&empty),
        "-CAfile",
        path_str(&root),
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(text.contains("No Revoked Certificates"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                10"),
        "{text}"
    );

    let revoke = encode_revoke(&NONCE, ADMIN_TOKEN, 7, 1).unwrap();
    let completed = run(&mut ca, &context(12, time_ms()), &revoke);
    let reply = http_reply(&completed);
    assert_eq!(reply.status, 200);
    assert!(
        String::from_utf8(reply.body)
            .unwrap()
            .contains("revoked serial 7 (keyCompromise)")
    );

    let crl = write_pem(
        dir.path(),
        "crl.pem",
        &run(&mut ca, &context(20, time_ms()), &encode_crl(&NONCE)),
    );
    let (ok, text) = openssl(&[
        "crl",
        "-noout",
        "-text",
        "-in",
        path_str(&crl),
        "-CAfile",
        path_str(&root),
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(text.contains("Serial Number: 07"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                21"),
        "{text}"
    );
    assert!(
        text.contains("Issuer: O = sintra test, CN = sintra test root CA"),
        "{text}"
    );

    let (ok, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        path_str(&root),
        "-CRLfile",
        path_str(&crl),
        path_str(&cert),
    ]);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        path_str(&root),
        "-CRLfile",
        path_str(&empty),
        path_str(&cert),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
}

#[test]
fn refusals_get_their_status_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = new_ca();
    let good = rsa_csr(dir.path(), "good", "/CN=www.example.test", &[]);
    let at = context(3, time_ms());

    // The last byte of the DER is the signature's last byte.
    let mut damaged = good.clone();
    *damaged.last_mut().unwrap() ^= 0x01;
    let reason = refused(
        &run(&mut ca, &at, &issue(&damaged, REGISTRATION_TOKEN)),
        400,
    );
    assert!(
        reason.contains("self-signature does not verify"),
        "{reason}"
    );

    let outside = rsa_csr(dir.path(), "outside", "/CN=www.example.org", &[]);
    let reason = refused(
        &run(&mut ca, &at, &issue(&outside, REGISTRATION_TOKEN)),
        403,
    );
    assert!(reason.contains("outside the CA's policy"), "{reason}");
    let san_outside = rsa_csr(
        dir.path(),
        "san",
        "/CN=www.example.test",
        &["-addext", "subjectAltName=DNS:www.example.org"],
    );
    let reason = refused(
        &run(&mut ca, &at, &issue(&san_outside, REGISTRATION_TOKEN)),
        403,
    );
    assert!(reason.contains("www.example.org"), "{reason}");
    let bare = rsa_csr(dir.path(), "bare", "/CN=example.test", &[]);
    refused(&run(&mut ca, &at, &issue(&bare, REGISTRATION_TOKEN)), 403);
    let wildcard = rsa_csr(dir.path(), "wild", "/CN=*.example.test", &[]);
    refused(
        &run(&mut ca, &at, &issue(&wildcard, REGISTRATION_TOKEN)),
        403,
    );
    let organization = rsa_csr(dir.path(), "org", "/O=Bank/CN=www.example.test", &[]);
    refused(
        &run(&mut ca, &at, &issue(&organization, REGISTRATION_TOKEN)),
        403,
    );
    // The approval list names another key.
    let unapproved = rsa_csr(dir.path(), "unapproved", "/CN=approved.example.org", &[]);
    refused(&run(&mut ca, &at, &issue(&unapproved, b"")), 403);

    let weak = make_csr(
        dir.path(),
        "weak",
        &["-newkey", "rsa:1024"],
        "/CN=weak.example.test",
        &[],
    );
    let reason = refused(&run(&mut ca, &at, &issue(&weak, REGISTRATION_TOKEN)), 403);
    assert!(reason.contains("1024 bits"), "{reason}");

    let reason = refused(&run(&mut ca, &at, &issue(&good, b"wrong token")), 403);
    assert!(
        reason.contains("not authorized for www.example.test"),
        "{reason}"
    );

    for malformed in [
        vec![],
        vec![ca::TAG_ISSUE],
        vec![0x2f; 17],
        issue(&good, REGISTRATION_TOKEN)[..40].to_vec(),
        [issue(&good, REGISTRATION_TOKEN), vec![0]].concat(),
        issue(b"not a certification request", REGISTRATION_TOKEN),
        [encode_crl(&NONCE), vec![1]].concat(),
    ] {
        refused(&run(&mut ca, &at, &malformed), 400);
    }
    // BER (a length in more bytes than DER allows) is refused, not re-encoded.
    assert_eq!(good[..2], [0x30, 0x82]);
    let mut ber = vec![0x30, 0x83, 0x00];
    ber.extend_from_slice(&good[2..]);
    let reason = refused(&run(&mut ca, &at, &issue(&ber, REGISTRATION_TOKEN)), 400);
    assert!(!reason.is_empty());

    // Revocations: admin token, known serial, once.
    let revoke = |serial, token: &[u8]| encode_revoke(&NONCE, token, serial, 4).unwrap();
    refused(&run(&mut ca, &at, &revoke(4, REGISTRATION_TOKEN)), 403);
    refused(&run(&mut ca, &at, &revoke(4, ADMIN_TOKEN)), 404);
    assert!(encode_revoke(&NONCE, ADMIN_TOKEN, 4, 6).is_err());
    let mut hold = revoke(4, ADMIN_TOKEN);
    *hold.last_mut().unwrap() = 6;
    refused(&run(&mut ca, &at, &hold), 400);

    // Nothing above was issued; no agreed time yet is a 503.
    assert_eq!(ca.issued_count(), 0);
    let reason = refused(
        &run(&mut ca, &context(3, 0), &issue(&good, REGISTRATION_TOKEN)),
        503,
    );
    assert!(reason.contains("no agreed time"), "{reason}");
    let completed = run(&mut ca, &at, &issue(&good, REGISTRATION_TOKEN));
    assert_eq!(http_reply(&completed).status, 200);
    assert_eq!(
        http_reply(&run(&mut ca, &at, &revoke(4, ADMIN_TOKEN))).status,
        200
    );
    refused(&run(&mut ca, &at, &revoke(4, ADMIN_TOKEN)), 409);
    // The same position cannot issue its serial twice.
    refused(&run(&mut ca, &at, &issue(&good, REGISTRATION_TOKEN)), 409);
}

/// The serial, notBefore and notAfter of a PEM certificate.
fn serial_and_validity(completed: &[u8]) -> (Vec<u8>, u64, u64) {
    let der = x509::pem_to_der(completed, &[x509::PEM_LABEL_CERTIFICATE]).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let validity = cert.tbs_certificate.validity;
    (
        cert.tbs_certificate.serial_number.as_bytes().to_vec(),
        validity.not_before.to_unix_duration().as_secs(),
        validity.not_after.to_unix_duration().as_secs(),
    )
}

#[test]
fn serials_follow_the_log_and_time_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = new_ca();
    let request = issue(
        &rsa_csr(dir.path(), "serial", "/CN=s.example.test", &[]),
        REGISTRATION_TOKEN,
    );
    let base_ms = 1_800_000_000_000;
    let mut previous = Vec::new();
    let mut serials = Vec::new();
    // Positions increase; times go back and forth.
    for (position, time) in [
        (0, base_ms),
        (7, base_ms - 50_000),
        (8, 0),
        (300, base_ms + 9_000),
    ] {
        let completed = run(&mut ca, &context(position, time), &request);
        let (serial, not_before, not_after) = serial_and_validity(&completed);
        let expected_time = if position == 300 {
            base_ms + 9_000
        } else {
            base_ms
        };
        assert_eq!(not_before, expected_time / 1000, "position {position}");
        assert_eq!(not_after, not_before + 90 * 86_400);
        let number = serial
            .iter()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
        assert_eq!(number, position + 1);
        assert!(previous.is_empty() || number > *serials.last().unwrap());
        previous = serial;
        serials.push(number);
    }
    assert_eq!(serials, vec![1, 8, 9, 301]);

    // Time past 2049 is written as GeneralizedTime and still parses back.
    let completed = run(&mut ca, &context(400, 2_600_000_000_000), &request);
    let (_, not_before, _) = serial_and_validity(&completed);
    assert_eq!(not_before, 2_600_000_000);
}

/// A sequence of requests of every kind, with their contexts.
fn workload(dir: &Path) -> Vec<(ExecutionContext, Vec<u8>)> {
    let rsa_request = rsa_csr(dir, "w1", "/CN=a.example.test", &[]);
    let ec_request = make_csr(
        dir,
        "w2",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=b.example.test",
        &[],
    );
    let t = 1_800_000_000_000;
    vec![
        (context(0, t), issue(&rsa_request, REGISTRATION_TOKEN)),
        (context(1, t + 10), issue(&ec_request, REGISTRATION_TOKEN)),
        (context(2, t + 5), issue(&ec_request, b"wrong")),
        (
            context(3, t + 20),
            encode_revoke(&NONCE, ADMIN_TOKEN, 2, 5).unwrap(),
        ),
        (context(4, t + 30), encode_crl(&NONCE)),
        (context(5, t + 40), vec![0xff, 1, 2]),
        (context(6, t + 50), issue(&rsa_request, REGISTRATION_TOKEN)),
    ]
}

#[test]
fn replicas_agree_and_snapshots_restore() {
    let dir = tempfile::tempdir().unwrap();
    let requests = workload(dir.path());
    let mut first = new_ca();
    let mut second = new_ca();
    let mut answers = Vec::new();
    for (index, (context, request)) in requests.iter().enumerate() {
        let a = first.execute(context, request);
        let b = second.execute(context, request);
        assert_eq!(a, b, "request {index}");
        assert_eq!(first.snapshot(), second.snapshot(), "request {index}");
        answers.push(a);
    }
    assert!(matches!(
        decode_answer(&answers[0]),
        Some(CaAnswer::Certificate(_))
    ));
    assert!(matches!(
        decode_answer(&answers[2]),
        Some(CaAnswer::Refused(_))
    ));
    assert!(matches!(
        decode_answer(&answers[3]),
        Some(CaAnswer::Done(_))
    ));
    assert!(matches!(decode_answer(&answers[4]), Some(CaAnswer::Crl(_))));
    // The CRL's signing message is what the answer carries, and completes identically.
    let (crl_request, revoke_request) = (&requests[4].1, &requests[3].1);
    let message = first.signing_message(crl_request, &answers[4]).unwrap();
    assert_eq!(
        second.signing_message(crl_request, &answers[4]).unwrap(),
        message
    );
    let signature = sign(&message);
    assert_eq!(
        first.complete(crl_request, &answers[4], &signature),
        second.complete(crl_request, &answers[4], &signature)
    );
    assert_eq!(first.signing_message(revoke_request, &answers[3]), None);

    // Restore: a replica that restores the snapshot taken after request 3 and executes the
    // rest reaches the same state and answers.
    let mut replay = new_ca();
    for (context, request) in &requests[..4] {
        replay.execute(context, request);
    }
    let snapshot = replay.snapshot();
    let mut restored = new_ca();
    restored.restore(&snapshot).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    for (index, (context, request)) in requests.iter().enumerate().skip(4) {
        assert_eq!(
            restored.execute(context, request),
            answers[index],
            "request {index}"
        );
    }
    assert_eq!(restored.snapshot(), first.snapshot());

    // A damaged snapshot leaves the state unchanged.
    let before = restored.snapshot();
    let mut damaged = first.snapshot();
    damaged.push(0);
    assert!(restored.restore(&damaged).is_err());
    let mut unsorted = snapshot.clone();
    // Swap the first two issued serials (1 and 2): no longer increasing.
    let start = b"sintra/ca/v1".len() + 16;
    unsorted[start..start + 16].rotate_left(8);
    assert!(restored.restore(&unsorted).is_err());
    assert_eq!(restored.snapshot(), before);
    assert_eq!(
        new_ca().snapshot(),
        Ca::new(root_der(), policy()).unwrap().snapshot()
    );
}

#[test]
fn policies_are_checked_and_round_trip_through_toml() {
    let good = policy();
    let text = good.to_toml().unwrap();
    assert_eq!(CaPolicy::from_toml(&text).unwrap(), good);
    let example = r#"
validity_days = 30
admin_token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[keys]
rsa_bits_min = 3072
ec_curves = ["P-384"]

[[names]]
pattern = "*.internal.test"
registration_token_sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
"#;
    let parsed = CaPolicy::from_toml(example).unwrap();
    assert_eq!(parsed.keys.rsa_bits_min, 3072);
    assert_eq!(parsed.certificates_max, 100_000);
    for (from, to) in [
        ("validity_days = 30", "validity_days = 0"),
        ("rsa_bits_min = 3072", "rsa_bits_min = 1024"),
        ("\"P-384\"", "\"P-521\""),
        ("*.internal.test", "*.*.test"),
        (
            "\"1111111111111111111111111111111111111111111111111111111111111111\"",
            "\"11\"",
        ),
        ("validity_days = 30", "validity_days = 30\nextra = 1"),
    ] {
        let bad = example.replace(from, to);
        assert_ne!(bad, example);
        assert!(CaPolicy::from_toml(&bad).is_err(), "{to}");
    }
    let no_authority = example.replace(
        "registration_token_sha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"",
        "",
    );
    assert!(CaPolicy::from_toml(&no_authority).is_err());
    assert!(Ca::new(b"not a certificate", good.clone()).is_err());
    assert_eq!(ca::reason_code("keyCompromise"), Some(1));
    assert_eq!(ca::reason_code("9"), Some(9));
    assert_eq!(ca::reason_code("certificateHold"), None);

    // A certificate cap is enforced.
    let dir = tempfile::tempdir().unwrap();
    let mut capped = good;
    capped.certificates_max = 1;
    let mut ca = Ca::new(root_der(), capped).unwrap();
    let request = issue(
        &rsa_csr(dir.path(), "cap", "/CN=c.example.test", &[]),
        REGISTRATION_TOKEN,
    );
    assert_eq!(
        http_reply(&run(&mut ca, &context(0, time_ms()), &request)).status,
        200
    );
    let reason = refused(&run(&mut ca, &context(1, time_ms()), &request), 403);
    assert!(reason.contains("maximum of 1 certificates"), "{reason}");
    // Encoding refuses over-long fields.
    assert!(encode_issue(&NONCE, &[0; ca::TOKEN_BYTES_MAX + 1], b"").is_err());
    assert!(encode_issue(&NONCE, b"", &vec![0; ca::CSR_BYTES_MAX + 1]).is_err());
}

/// The approval list: a key whose SPKI digest is listed needs no token.
#[test]
fn an_approved_key_needs_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let csr = rsa_csr(dir.path(), "approved", "/CN=approved.example.org", &[]);
    let request = x509_cert::request::CertReq::from_der(&csr).unwrap();
    let spki = request.info.public_key.to_der().unwrap();
    let mut policy = policy();
    policy.names[1].approved_keys_sha256 = vec![hex::encode(Sha256::digest(&spki))];
    let mut ca = Ca::new(root_der(), policy).unwrap();
    let root = write_root(dir.path());
    let cert = write_pem(
        dir.path(),
        "approved.pem",
        &run(&mut ca, &context(0, time_ms()), &issue(&csr, b"")),
    );
    let (ok, text) = openssl(&["verify", "-CAfile", path_str(&root), path_str(&cert)]);
    assert!(ok && text.contains(": OK"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), position in any::<u64>(), time in any::<u64>()) {
        let mut ca = new_ca();
        let answer = ca.execute(&context(position, time), &bytes);
        prop_assert!(decode_answer(&answer).is_some());
        let _ = ca.signing_message(&bytes, &answer);
        let _ = http_reply(&ca.complete(&bytes, &answer, &bytes));
        let _ = ca.restore(&bytes);
        let mut snapshot = b"sintra/ca/v1".to_vec();
        snapshot.extend_from_slice(&bytes);
        let _ = ca.restore(&snapshot);
        let _ = x509::csr_to_der(&bytes);
        let _ = ca::decode_request(&bytes);
    }

    #[test]
    fn damaged_issue_requests_never_panic(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let request = valid_issue_request();
        let mut damaged = request.to_vec();
        let at = index.index(damaged.len());
        damaged[at] = byte;
        let mut ca = new_ca();
        let answer = ca.execute(&context(5, 1_800_000_000_000), &damaged);
        prop_assert!(decode_answer(&answer).is_some());
    }
}

fn valid_issue_request() -> &'static [u8] {
    static REQUEST: OnceLock<Vec<u8>> = OnceLock::new();
    REQUEST.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let csr = make_csr(
            dir.path(),
            "fuzz",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "/CN=f.example.test",
            &["-addext", "subjectAltName=DNS:g.example.test"],
        );
        issue(&csr, REGISTRATION_TOKEN)
    })
}
